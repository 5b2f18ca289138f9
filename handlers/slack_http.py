"""slack_sdk's WebClient on kept-alive connections.

slack_sdk's synchronous client opens a new connection for every call (urllib sends `Connection: close`), so each
call to Slack paid a TCP connect and a TLS handshake: about 2.5 ms of CPU and two round trips (README
"Performance"). This client sends its calls to the API's own host over a small pool of HTTP/1.1 connections
instead. Everything else (retry handlers, response parsing, errors) stays slack_sdk's, through the one method it
sends with. Errors keep urllib's shape, which the retry handlers in handlers/messenger.py rely on: a failure to
connect or send is a URLError (Slack never had the request), a failure after sending is raised as it is (it may
have been carried out).
"""

from __future__ import annotations

import http.client
import io
import select
import threading
import time
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request

from slack_sdk import WebClient

# Idle connections are dropped before a server would drop them, so a call seldom meets one closed under it.
IDLE_SECONDS = 30.0
POOL_SIZE = 16  # as many as listener threads; more would only sit idle


class KeepAliveWebClient(WebClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool = ConnectionPool(self.base_url, context=self.ssl)

    def close(self) -> None:
        self._pool.close()

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        if self.proxy is not None or not self._pool.serves(url):
            return super()._perform_urllib_http_request_internal(url, req)
        return self._pool.send(url, req, timeout=self.timeout)


class ConnectionPool:
    """Connections to one origin, each used by one call at a time; the most recently used first."""

    def __init__(self, base_url: str, *, context: Any) -> None:
        self._origin = _origin(base_url)
        self._scheme, self._host, self._port = self._origin
        if self._scheme not in ("http", "https"):
            raise ValueError(f"not an HTTP URL: {base_url}")
        self._context = context
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()

    def serves(self, url: str) -> bool:
        return _origin(url) == self._origin

    def send(self, url: str, req: Request, *, timeout: float) -> dict[str, Any]:
        conn = self._take()
        conn.timeout = timeout  # per call, as urllib takes it: the client's may have changed
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        headers = {name.title(): value for name, value in req.header_items()}
        try:
            try:
                conn.request(req.get_method(), req.selector, req.data, headers)
            except OSError as error:  # as urllib: not sent, so it can be sent again
                raise URLError(error) from error
            response = conn.getresponse()
            body = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        if not 200 <= response.status < 300:  # as urllib's HTTPErrorProcessor: slack_sdk reads it from the error
            raise HTTPError(url, response.status, response.reason, response.headers, io.BytesIO(body))
        if response.headers.get_content_type() == "application/gzip":
            return {"status": response.status, "headers": response.headers, "body": body}
        charset = response.headers.get_content_charset() or "utf-8"
        return {"status": response.status, "headers": response.headers, "body": body.decode(charset)}

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _since in idle:
            conn.close()

    def _take(self) -> http.client.HTTPConnection:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            if now - since < IDLE_SECONDS and not _closed_by_server(conn):
                return conn
            conn.close()
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, context=self._context)
        return http.client.HTTPConnection(self._host, self._port)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < POOL_SIZE:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.hostname or "", parts.port


def _closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed by the server (or is out of step): unusable.
    poll, not select: select refuses descriptors above 1024, and a busy process has them."""
    sock = conn.sock
    if sock is None:
        return True
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
