"""The loopback HTTP server under the JSON fakes (sandbox/gcp.py, sandbox/github.py): stdlib, threaded, keep-alive.

A fake gives one function that turns a request into an answer; this module reads the request, writes the answer
with an exact Content-Length (keep-alive needs it), and can drop the connection unanswered, as a lost response.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (status, body, extra headers), or None: the request was carried out and its answer is lost (the connection closes).
Answer = tuple[int, bytes, Mapping[str, str]] | None
Responder = Callable[[str, str, bytes, Message], Answer]


@dataclass(frozen=True)
class RecordedRequest:
    """A request as a fake saw it, for the tests to look at; `status` is what it answered (0: no answer)."""

    method: str
    path: str
    query: str
    body: Any
    status: int
    time: float = 0.0  # epoch seconds, where the fake keeps them


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so every response carries an exact Content-Length
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        answer = self.server.respond(method, self.path, raw, self.headers)
        if answer is None:
            self.close_connection = True
            return
        status, body, headers = answer
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout tests)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    respond: Responder


class JsonServer:
    """Serves `respond` on host:port (0: any free port) from a daemon thread until `close()`."""

    def __init__(self, respond: Responder, *, host: str = "127.0.0.1", port: int = 0, name: str) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.respond = respond
        # close() waits for the serve loop's next poll: the default 0.5 s added that to every test's teardown.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
