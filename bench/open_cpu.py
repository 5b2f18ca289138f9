"""Profile: the CPU one `/incident open` costs inside the app, and where it goes, without the HTTP server.

    python bench/open_cpu.py [--opens 300] [--rate 20] [--database-url postgresql+psycopg://... | --postgres]
                             [--breakdown]

The app is built as `incident-bot serve` builds it (app.build_runtime, the scheduler started, app.tune_for_acks),
against the Slack sandbox in a process of its own with chat.postMessage at 300 ms, and its WSGI callable is
called directly by 16 threads at a steady rate with the signed requests bench/ack.py sends. It prints the
process's CPU (time.process_time) from before the batch until its background work has drained (every
announcement posted, then the CPU quiet), over the number of opens. The HTTP server's share is bench/ack.py's to
measure; this is the app's share alone, so that a change to it shows without the server's noise.

--breakdown also prints, per open, the thread CPU time spent inside the functions of the open path (each wraps
what it calls, so the lines overlap). It measures by wrapping them, which costs a little CPU itself; the total
without --breakdown is the figure to compare. A profiling aid, not a target: bench/ack.py's serve CPU per request
is the issue's figure.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _servers import (  # noqa: E402
    ChildSandbox,
    ScratchDatabase,
    Signer,
    add_database_arguments,
    add_slack_arguments,
    with_database_server,
)
from ack import POST_LATENCY, SECRET, opens  # noqa: E402

# (module, attribute) of the open path's functions, request side then background.
BREAKDOWN = [
    ("slack_bolt.app.app", "App.dispatch"),
    ("handlers.replays", "claim"), ("bot.replays", "first_delivery"), ("bot.ratelimit", "take"),
    ("bot.incidents", "open_incident"), ("bot.incidents", "next_sequence"),
    ("bot.incidents", "post_announcement"), ("bot.incidents", "_still_held"), ("bot.incidents", "_claimed"),
    ("bot.incidents", "_announcement_post"), ("handlers.messenger", "SlackMessenger.post_message"),
    ("bot.access", "announced_in"), ("bot.reminders", "_sync_jobs"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opens", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="opens per second")
    add_database_arguments(parser)
    add_slack_arguments(parser)
    parser.add_argument("--breakdown", action="store_true", help="thread CPU per function of the open path")
    args = parser.parse_args()
    return with_database_server(args, lambda server_url: run(args, server_url))


def start_app(sandbox: ChildSandbox, scratch: ScratchDatabase) -> Any:
    """The app as `incident-bot serve` builds it, against the sandbox and the scratch database: its Runtime."""
    os.environ.update({
        "SLACK_API_URL": sandbox.api_url, "SLACK_BOT_TOKEN": sandbox.bot_token, "SLACK_SIGNING_SECRET": SECRET,
        "LISTENER_THREADS": "16", "LOG_LEVEL": "INFO", "DATABASE_URL": scratch.url,
        # As bench/ack.py: never refusing, but still counted on every open.
        "RATE_LIMIT_OPEN_PER_USER": "100000", "RATE_LIMIT_OPEN_PER_CHANNEL": "100000",
        "RATE_LIMIT_POST_PER_USER": "100000", "RATE_LIMIT_POST_PER_CHANNEL": "100000", **sandbox.env,
    })
    import app
    from bot.logsetup import configure_logging
    from bot.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, secrets=settings.secrets())
    runtime = app.build_runtime(settings)
    runtime.start()
    app.tune_for_acks()
    return runtime


def run(args: argparse.Namespace, server_url: str | None) -> int:
    sandbox = ChildSandbox({"chat.postMessage": POST_LATENCY}, tls=not args.plain_http)
    scratch = ScratchDatabase(server_url)
    runtime = start_app(sandbox, scratch)
    signer = Signer(SECRET)
    try:
        batch(runtime.wsgi, sandbox, opens(signer, 20, "warm"), args.rate)
        measured = opens(signer, args.opens, "measured")  # signed before the clock starts: the bench's own work
        spent = _wrap_breakdown() if args.breakdown else None
        started = time.process_time()
        batch(runtime.wsgi, sandbox, measured, args.rate)
        per_open = (time.process_time() - started) / args.opens * 1000
    finally:
        runtime.stop()
        sandbox.stop()
        scratch.drop()
    print(f"in-process CPU per /incident open: {per_open:.2f} ms ({args.opens} opens at {args.rate:g}/s, "
          f"database {scratch.kind}, background work included)")
    if spent is not None:
        seconds, calls = spent
        for name, total in sorted(seconds.items(), key=lambda item: -item[1]):
            print(f"{total / args.opens * 1000:8.3f} ms  {calls[name] / args.opens:4.1f} calls  {name}")
    return 0


def batch(wsgi: Callable[..., Any], sandbox: ChildSandbox, jobs: list[tuple[bytes, dict[str, str]]],
          rate: float, *, posts: bool = True) -> None:
    """Sends the opens at `rate` per second, then waits until their announcements are posted (an app that `posts`)
    and the process's CPU is quiet (under 10 ms in half a second: the scheduler's idle timers)."""
    count = len(jobs)
    posted_before = sandbox.ask("count", "chat.postMessage")
    with ThreadPoolExecutor(16) as pool:
        start = time.monotonic()
        futures = []
        for n, job in enumerate(jobs):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(_call, wsgi, job))
        for future in futures:
            future.result()
    while posts and sandbox.ask("count", "chat.postMessage") < posted_before + count:
        time.sleep(0.05)
    last = time.process_time()
    while True:
        time.sleep(0.5)
        now = time.process_time()
        if now - last < 0.01:
            return
        last = now


def _call(wsgi: Callable[..., Any], job: tuple[bytes, dict[str, str]]) -> None:
    body, headers = job
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "QUERY_STRING": "", "SERVER_NAME": "bench",
        "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": headers["Content-Type"],
    }
    environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()})
    status: list[str] = []
    result = wsgi(environ, lambda line, _headers, _exc=None: status.append(line))
    b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()  # as a server does once the response is written: the background work waits for it
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"open answered {status}")


def _wrap_breakdown() -> tuple[dict[str, float], Counter[str]]:
    seconds: dict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    inside = threading.local()
    for module_name, attribute in BREAKDOWN:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _timed(getattr(owner, name), f"{module_name}.{attribute}", seconds, calls, inside))
    return seconds, calls


def _timed(function: Callable[..., Any], name: str, seconds: dict[str, float], calls: Counter[str],
           inside: threading.local) -> Callable[..., Any]:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        active: set[str] = inside.__dict__.setdefault("names", set())
        if name in active:  # recursion: counted once, by the outer call
            return function(*args, **kwargs)
        active.add(name)
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.thread_time() - started
            calls[name] += 1
            active.discard(name)

    return timed


if __name__ == "__main__":
    sys.exit(main())
