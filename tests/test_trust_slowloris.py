"""Issue 11 item 12, slow-loris: unsigned clients that trickle a request never starve signed requests or /healthz,
and the server cuts each of them off within seconds. Against a real `incident-bot serve` on loopback."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from handlers.server import BODY_SECONDS, HEADER_SECONDS, MAX_BODY_BYTES, BufferedWSGI
from sandbox.slack import SlackSandbox
from tests.test_serve import Served

SLOW_BODIES = 32  # the sixteen froze a server with 16 threads; twice that here
SLOW_HEADERS = 16
CUT_OFF_WITHIN = 10.0  # seconds from connecting until the server closes a slow connection
ANSWER_WITHIN = 2.0  # seconds for a signed command or /healthz while the slow connections are open
GIVE_UP_AFTER = 20.0  # the test's own bound on how long it drives the slow connections


@pytest.fixture
def served(slack: SlackSandbox, database_url: str) -> Iterator[Served]:
    env = {"SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_SIGNING_SECRET": "signing-slowloris", "DATABASE_URL": database_url}
    server = Served(env, slack, env["SLACK_SIGNING_SECRET"])
    server.wait_ready()
    yield server
    if server.process.poll() is None:
        server.stop()


@dataclass
class SlowClient:
    """One connection that sends `first`, then one byte of `drip` a second (or nothing once `drip` runs out)."""

    sock: socket.socket
    drip: bytes
    opened: float
    closed: float | None = None
    received: bytes = b""

    def close_seen(self) -> None:
        if self.closed is None:
            self.closed = time.monotonic()
        self.sock.close()


def open_slow(port: int, first: bytes, drip: bytes) -> SlowClient:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(first)
    sock.setblocking(False)
    return SlowClient(sock=sock, drip=drip, opened=time.monotonic())


def drive(clients: list[SlowClient], stop: threading.Event) -> None:
    """Drips bytes and records when the server closes each connection, until all are closed or time is up."""
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    end = time.monotonic() + GIVE_UP_AFTER
    next_drip = time.monotonic() + 1.0
    try:
        while selector.get_map() and time.monotonic() < end and not stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                client = key.data
                try:
                    data = client.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                client.received += data
                if not data:
                    selector.unregister(client.sock)
                    client.close_seen()
            if time.monotonic() >= next_drip:
                next_drip += 1.0
                for client in [key.data for key in selector.get_map().values()]:
                    if not client.drip:
                        continue
                    try:
                        client.sock.send(client.drip[:1])
                        client.drip = client.drip[1:]
                    except OSError:
                        selector.unregister(client.sock)
                        client.close_seen()
    finally:
        for key in list(selector.get_map().values()):
            key.data.sock.close()
        selector.close()


def timed(call: Any) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.serial  # paces its rounds against the server's 5 s deadlines and times the answers
def test_slow_unsigned_clients_never_starve_signed_requests_and_are_cut_off(served: Served) -> None:
    port = served.port
    body_head = (f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nx").encode()
    clients = [open_slow(port, body_head, drip=b"x" * 60 if i % 2 else b"") for i in range(SLOW_BODIES)]
    # Slow headers: a partial request line then silence, or a header trickled a byte a second.
    header_drip = b"X-Slow: " + b"a" * 60
    clients += [open_slow(port, b"POST /slack/events HTT" if i % 2 else
                          f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode(),
                          drip=b"" if i % 2 else header_drip) for i in range(SLOW_HEADERS)]
    stop = threading.Event()
    driver = threading.Thread(target=drive, args=(clients, stop), name="slow-clients")
    driver.start()
    try:
        served.driver.timeout = 5
        # Several rounds while the slow connections are open: the first right away, the last past the deadlines
        # at which a thread-per-connection server would free and then refill its pool.
        for pause in (0.5, 1.5, 2.5):
            time.sleep(pause)
            assert any(c.closed is None for c in clients)
            answer, took = timed(lambda: served.driver.command("/incident", "help"))
            assert answer.status_code == 200, answer.text
            assert took < ANSWER_WITHIN, f"/incident help took {took:.2f}s"
            health, took = timed(lambda: requests.get(f"{served.url}/healthz", timeout=5))
            assert health.status_code == 200 and health.json()["database"] == "ok"
            assert took < ANSWER_WITHIN, f"/healthz took {took:.2f}s"
        driver.join(timeout=GIVE_UP_AFTER + 5)
    finally:
        stop.set()
        driver.join(timeout=10)

    held = sorted(round(c.closed - c.opened, 1) if c.closed else float("inf") for c in clients)
    assert held[-1] < CUT_OFF_WITHIN, f"seconds each slow connection was held: {held}"
    # Not before the deadlines either: a slow client is cut off for being slow, not at random.
    assert held[0] >= min(HEADER_SECONDS, BODY_SECONDS) - 0.5, held
    for client in clients[:SLOW_BODIES]:
        assert client.received.startswith(b"HTTP/1.1 408"), client.received[:80]
    for client in clients[SLOW_BODIES:]:
        assert client.received == b"", client.received[:80]  # cut off without an answer

    answer = served.driver.command("/incident", "help")
    assert answer.status_code == 200
    served.stop()
    assert served.process.returncode == 0


@pytest.mark.slow
@pytest.mark.serial  # times the cut-off
def test_a_slow_body_gets_408_and_a_whole_body_arriving_in_time_is_served(served: Served) -> None:
    """The deadline is on the whole body, not on each read: a steady trickle is cut off at the deadline too, and a
    body that comes in pieces within it reaches the app."""
    body, headers = signed_help(served)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n{head}"
               "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request + body[:10])
        time.sleep(1.0)  # in pieces, well within the deadline
        sock.sendall(body[10:])
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]

    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(request)
        started = time.monotonic()
        answer = b""
        for byte in body:  # a byte every 0.2 s: never idle for long, but far too slow in all
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if answer or time.monotonic() - started > CUT_OFF_WITHIN:
                break
        sock.settimeout(5)
        answer += _read_all(sock)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_SECONDS - 0.5 <= took < BODY_SECONDS + 2, took


def signed_help(served: Served) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a signed `/incident help`, as the driver would post them."""
    captured: list[tuple[bytes, dict[str, str]]] = []
    post_raw = served.driver.post_raw
    served.driver.post_raw = lambda body, headers: captured.append((body, headers))  # type: ignore[assignment]
    try:
        served.driver.command("/incident", "help")
    finally:
        served.driver.post_raw = post_raw  # type: ignore[method-assign]
    return captured[0]


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


SCOPE = {"type": "http", "method": "POST", "path": "/slack/events", "query_string": b"", "http_version": "1.1",
         "scheme": "http", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 50000),
         "headers": [(b"content-type", b"application/x-www-form-urlencoded"), (b"transfer-encoding", b"chunked")]}


def run_bridge(app: Any, chunks: list[bytes]) -> list[Any]:
    """Serves one request whose body comes in `chunks` through BufferedWSGI; returns what was sent, in order."""
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a real server's send yields to the loop too
        sent.append((message["type"], message.get("status") or message.get("body")))

    bridge = BufferedWSGI(app, threads=1)
    try:
        asyncio.run(bridge(SCOPE, receive, send))
    finally:
        bridge.pool.shutdown()
    assert not messages, "the body was not read to its end"
    return sent


def test_the_wsgi_close_runs_only_after_the_whole_response_is_sent() -> None:
    """handlers/guards.py starts background work from close(): it must come after the ack is written."""
    order: list[Any] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"ok"

        def close(self) -> None:
            order.append("closed")

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        order.append((environ["CONTENT_LENGTH"], environ["wsgi.input"].read(), "HTTP_TRANSFER_ENCODING" in environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    sent = run_bridge(app, [b"text=", b"help"])
    order[1:1] = sent
    # The chunked body reaches the app whole, with its length; then the response; then close().
    assert order == [("9", b"text=help", False), ("http.response.start", 200), ("http.response.body", b"ok"),
                     "closed"]


def test_a_body_over_one_mebibyte_is_refused_without_reaching_the_app() -> None:
    called: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return [b""]

    sent = run_bridge(app, [b"x" * (MAX_BODY_BYTES // 2), b"x" * (MAX_BODY_BYTES // 2), b"x", b"tail"])
    assert sent[0] == ("http.response.start", 413)
    assert not called
