"""The gunicorn worker behind `incident-bot serve`: slow clients cost a socket, never a thread.

gunicorn's gthread worker reads a request's headers and body on a pool thread with blocking reads and no
deadline, so a few connections that announce a body and trickle it hold every thread (issue 11, item 12).
Here gunicorn's asyncio worker reads the request on its event loop, and a WSGI app gets a pool thread only once
its whole request (at most 1 MiB) is in memory. Headers must be complete within HEADER_SECONDS of the connection
opening, a body within BODY_SECONDS of its headers; a client that misses either is cut off (408 for a body).

Use it as gunicorn's worker class with a plain WSGI app: `--worker-class handlers.server.BufferedWSGIWorker`.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.workers import gasgi

from handlers.guards import MAX_BODY_BYTES

HEADER_SECONDS = 5.0
BODY_SECONDS = 5.0

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
WSGIApp = Callable[..., Iterable[bytes]]


class _HeaderDeadlineProtocol(ASGIProtocol):
    """gunicorn times out the headers of a kept-alive connection's next request (its keep-alive timer, which
    incoming bytes do not reset), but not of a new connection's first one: this arms the same timer for it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._callback_parser is not None:  # HTTP/1 (TLS-negotiated HTTP/2 and h2c are off here)
            # gunicorn cancels this handle as soon as the request's headers are parsed, and closes the
            # connection if it fires first.
            self._keepalive_handle = self.worker.loop.call_later(HEADER_SECONDS, self._keepalive_timeout)


class BufferedWSGIWorker(gasgi.ASGIWorker):
    """gunicorn's asyncio worker serving a WSGI app through BufferedWSGI, on `threads` pool threads."""

    asgi: Any  # set by the base class to the loaded WSGI app, then wrapped in BufferedWSGI here

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        pass  # the base class warns that `threads` is unused; here it sizes the WSGI pool

    def init_process(self) -> None:
        # The asyncio worker builds each connection's protocol from this module-level name; only this worker
        # runs in this process.
        gasgi.ASGIProtocol = _HeaderDeadlineProtocol
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.asgi = BufferedWSGI(self.asgi, threads=self.cfg.threads)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class BufferedWSGI:
    """An ASGI app that reads the whole body under a deadline, then runs a WSGI app on a pool thread.

    The WSGI response is sent in full before its close() is called, as a WSGI server does: handlers/guards.py
    starts background work from close(), after the ack is out.
    """

    def __init__(self, app: WSGIApp, *, threads: int, body_seconds: float = BODY_SECONDS,
                 max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.body_seconds = body_seconds
        self.max_body = max_body
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served
        try:
            body = await self._read_body(receive)
        except TimeoutError:
            await _plain(send, 408, b"request body too slow")
            return
        except _BodyTooLarge:
            await _plain(send, 413, b"body over 1 MiB")
            return
        except _ClientGone:
            return
        status, headers, chunks, result = await asyncio.get_running_loop().run_in_executor(
            self.pool, self._run, _environ(scope, body)
        )
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"".join(chunks)})
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    async def _read_body(self, receive: Receive) -> bytes:
        """The body, read to its end even past the limit, so the client sees the 413 rather than a reset."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_seconds
        body = bytearray()
        too_large = False
        while True:
            # Checked here on every chunk: Python 3.11's wait_for can swallow its own timeout when a chunk
            # arrives at the same moment, and a client dripping a byte a second would then never be cut off.
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(receive(), remaining)
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            if not too_large:
                body += chunk
                too_large = len(body) > self.max_body
            if not message.get("more_body", False):
                break
        if too_large:
            raise _BodyTooLarge
        return bytes(body)

    def _run(self, environ: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], list[bytes], Iterable[bytes]]:
        """Runs the WSGI app on a pool thread and collects its (small) response."""
        started: list[tuple[str, list[tuple[str, str]]]] = []
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [(status, headers)]
            return chunks.append

        result = self.app(environ, start_response)
        try:
            chunks.extend(result)
        except BaseException:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise
        if not started:
            raise RuntimeError("the WSGI app returned without calling start_response")
        status, headers = started[0]
        encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return int(status.split(" ", 1)[0]), encoded, chunks, result


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: the WSGI app is built in gunicorn's load() and stopped by its worker_exit hook."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _plain(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": text})


def _environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """A PEP 3333 environ for a request whose body is read in full: it always has a Content-Length."""
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 0),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": (scope.get("client") or ("", 0))[0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            continue  # the body is no longer chunked, and its length is set below
        key = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    environ["CONTENT_LENGTH"] = str(len(body))
    return environ
