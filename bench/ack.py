"""Benchmark: how fast Slack gets its ack, against a bare Bolt app on the same server, in the same run.

    python bench/ack.py [--requests 200] [--rates 5,20] [--rounds 2] [--kinds open,reply] [--floor]
                        [--postgres | --database-url URL] [--profile FILE]

Both apps run under gunicorn with the worker settings `incident-bot serve` uses (1 BufferedWSGIWorker, 16
threads, 16 listener threads). Signed `/incident open` commands and thread-reply events are sent at a steady
rate, as Slack sends them: a request is sent when it is due whether or not earlier ones were answered, and
its latency counts from then, so queueing anywhere shows. The Slack sandbox (its own process) answers
chat.postMessage after 300 ms. The real app stores each incident and reply and posts each announcement after
the ack; the bare app (bench/bare_app.py) only acks. Rounds alternate bare/serve so machine noise falls on
both. Also printed: each app's CPU per request, background work included (its processes' CPU from before a
batch until its background work has drained after it; idle, serve's timers cost about 1 ms a second).

--postgres starts a throwaway PostgreSQL with scripts/pg; --database-url names a server to create a scratch
database on; the default is a fresh SQLite file. --profile runs serve under py-spy (its CPU figures then leave
py-spy's own out) and prints the top frames at the end; --kinds open profiles the opens alone.
--floor also runs bench/floor_app.py under the same gunicorn settings, in turn with the other two, for the opens:
an open that does only the work an open must do, with the same libraries, so that serve's CPU per open can be
set beside what the work itself costs behind the same server.
Target: serve's p99 within 1.5× of the bare app's; the exit status says whether it and the counts held.
Also judged, on a line of its own for each rate: serve's CPU per open against issue 18's 10 ms, and with
--floor, serve's CPU per open as a multiple of the floor's in the same run (the part of an open's cost that is
the app's own, which means the same on any machine).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (
    ChildSandbox,
    ScratchDatabase,
    Server,
    Signer,
    add_database_arguments,
    add_slack_arguments,
    gunicorn_argv,
    percentile,
    serve_argv,
    settle,
    with_database_server,
)

CHANNEL = "C0INCIDENTS"
SECRET = "bench-signing-secret"
POST_LATENCY = 0.300
TARGET = 1.5
OPEN_CPU_TARGET_MS = 10.0
_ts = itertools.count(1)


def measure(url: str, jobs: list[tuple[bytes, dict[str, str]]], rate: float) -> list[float]:
    """Sends the jobs at a steady RATE per second, whether or not earlier ones are answered (as Slack does), and
    returns ms per request counted from when it was due, so time spent queued anywhere is counted."""
    local = threading.local()

    def send(due: float, job: tuple[bytes, dict[str, str]]) -> float:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body, headers = job
        response = session.post(url, data=body, headers=headers, timeout=10)
        elapsed = (time.perf_counter() - due) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        return elapsed

    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(send, start + i / rate, job) for i, job in enumerate(jobs)]
        return [f.result() for f in futures]


def opens(signer: Signer, n: int, tag: str) -> list[tuple[bytes, dict[str, str]]]:
    return [signer.command(f"open 벤치마크 {tag} {i} sev:high", channel=CHANNEL, user=f"U0USER{i % 7}")
            for i in range(n)]


def replies(signer: Signer, n: int, thread_ts: str) -> list[tuple[bytes, dict[str, str]]]:
    base = float(thread_ts)
    jobs = []
    for i in range(n):
        k = next(_ts)
        user = ("U0SENA", "U0LEMUN", "U0GITCO")[i % 3]
        jobs.append(signer.reply(channel=CHANNEL, thread_ts=thread_ts, ts=f"{base + k / 1000:.6f}", user=user,
                                 text=f"답글 {k}", event_id=f"EvB{k:08d}"))
    return jobs


def wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError("timed out waiting")


def posted(sandbox: ChildSandbox, count: int, timeout: float = 600) -> float:
    """Waits until Slack has `count` announcements."""
    return wait_for(lambda: sandbox.ask("count", "chat.postMessage") >= count, timeout)


def announcement_ts(database_url: str, timeout: float = 30.0) -> str:
    """The thread the replies go to: the first incident's announcement, once it is posted."""
    from sqlalchemy import create_engine, select

    from storage.models import Incident

    engine = create_engine(database_url)
    found: list[str] = []

    def posted() -> bool:
        with engine.connect() as connection:
            ts = connection.scalar(select(Incident.announcement_ts).where(Incident.announcement_ts.is_not(None))
                                   .order_by(Incident.id).limit(1))
        if ts:
            found.append(ts)
        return bool(ts)

    try:
        wait_for(posted, timeout)
    finally:
        engine.dispose()
    return found[0]


def stored(database_url: str) -> tuple[int, int, int]:
    """Serve's incidents (not the floor's), the reply events, and the floor's incidents with their announcement's ts
    (so that a floor which failed to store it cannot pass for a cheaper one)."""
    import floor_app
    from sqlalchemy import create_engine, func, select

    from storage.models import Incident, TimelineEvent

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return (int(connection.scalar(select(func.count()).select_from(Incident)
                                          .where(Incident.service.is_distinct_from(floor_app.SERVICE))) or 0),
                    int(connection.scalar(select(func.count()).select_from(TimelineEvent)
                                          .where(TimelineEvent.kind == "message")) or 0),
                    floor_app.announced_in(connection))
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="per kind, app, round and rate")
    parser.add_argument("--rates", default="5,20", help="requests per second, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", default="open,reply", help="open, reply or both")
    add_database_arguments(parser)
    add_slack_arguments(parser)
    parser.add_argument("--profile", metavar="FILE", help="sample serve with py-spy; collapsed stacks into FILE")
    parser.add_argument("--floor", action="store_true", help="also the floor app (bench/floor_app.py), for opens")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    kinds = [kind for kind in ("open", "reply") if kind in args.kinds.split(",")]

    return with_database_server(args, lambda server_url: run(args, rates, kinds, server_url))


def run(args: argparse.Namespace, rates: list[float], kinds: list[str], server_url: str | None) -> int:
    sandbox = ChildSandbox({"chat.postMessage": POST_LATENCY}, tls=not args.plain_http)
    scratch = ScratchDatabase(server_url)
    env = {"SLACK_API_URL": sandbox.api_url, "SLACK_BOT_TOKEN": sandbox.bot_token, "SLACK_SIGNING_SECRET": SECRET,
           "LISTENER_THREADS": "16", "LOG_LEVEL": "INFO",
           # The bench's opens come from a few users in one channel. Limits high enough never to refuse, not off, so
           # the limiter's query still runs on every open as it does in production.
           "RATE_LIMIT_OPEN_PER_USER": "100000", "RATE_LIMIT_OPEN_PER_CHANNEL": "100000",
           "RATE_LIMIT_POST_PER_USER": "100000", "RATE_LIMIT_POST_PER_CHANNEL": "100000", **sandbox.env}
    signer = Signer(SECRET)
    results: dict[tuple[float, str, str], list[float]] = {}
    cpu: dict[tuple[float, str, str], float] = {}
    sent = {"open": 20, "reply": 20, "floor": 0}
    try:
        bare = Server(gunicorn_argv(threads=16), env, ready_path="/")
        serve = Server(serve_argv(), {**env, "DATABASE_URL": scratch.url}, profile=args.profile)
        servers = {"bare": bare, "serve": serve}
        try:
            # Warm up both: imports, auth.test, connections, the first incident's thread for the replies.
            for server in (bare, serve):
                measure(f"{server.url}/slack/events", opens(signer, 20, "warm"), 20)
            thread_ts = announcement_ts(scratch.url)
            for server in (bare, serve):
                measure(f"{server.url}/slack/events", replies(signer, 20, thread_ts), 20)
            if args.floor:  # once serve has migrated the database and its first thread is known
                servers["floor"] = Server(gunicorn_argv(threads=16, module="floor_app:app"),
                                          {**env, "DATABASE_URL": scratch.url}, ready_path="/")
                warm_posts = sandbox.ask("count", "chat.postMessage") + 20
                measure(f"{servers['floor'].url}/slack/events", opens(signer, 20, "warm"), 20)
                posted(sandbox, warm_posts)
                sent["floor"] = 20
            expected_posts = sandbox.ask("count", "chat.postMessage")
            for rate in rates:
                for round_ in range(args.rounds):
                    for name, server in servers.items():
                        url = f"{server.url}/slack/events"
                        for kind in kinds:
                            if name == "floor" and kind != "open":
                                continue
                            jobs = (opens(signer, args.requests, f"{rate:g}/{round_}") if kind == "open"
                                    else replies(signer, args.requests, thread_ts))
                            before = settle(server)
                            results.setdefault((rate, name, kind), []).extend(measure(url, jobs, rate))
                            if name == "serve":
                                sent[kind] += args.requests
                            elif name == "floor":
                                sent["floor"] += args.requests
                            if name != "bare" and kind == "open":
                                expected_posts += args.requests
                                posted(sandbox, expected_posts)
                            # Background work included: the announcement, the reminders, the answer kept for
                            # replays, names; until the process is back to its idle timers.
                            after = settle(server)
                            if before is not None and after is not None:
                                cpu[(rate, name, kind)] = cpu.get((rate, name, kind), 0.0) + after - before
            incidents, events, floor_announced = stored(scratch.url)
        finally:
            for server in servers.values():
                server.stop()
    finally:
        sandbox.stop()
        scratch.drop()

    print(f"ack latency in ms, {args.rounds}×{args.requests} signed requests per kind, app and rate, sent at a "
          f"steady rate; chat.postMessage takes {POST_LATENCY * 1000:.0f} ms; database {scratch.kind}")
    print(f"{'rate/s':>6} {'request':<15} {'app':<6} {'p50':>6} {'p99':>7} {'max':>7}  {'p99 serve/bare':<21}"
          f" CPU ms/request")
    ok = True
    for rate in rates:
        for kind in kinds:
            label = "/incident open" if kind == "open" else "thread reply"
            for name in ("bare", "floor", "serve"):
                if (rate, name, kind) not in results:
                    continue
                values = results[(rate, name, kind)]
                line = (f"{rate:>6g} {label:<15} {name:<6} {percentile(values, 50):>6.1f} "
                        f"{percentile(values, 99):>7.1f} {max(values):>7.1f}  ")
                verdict = ""
                if name == "serve":
                    ratio = percentile(values, 99) / percentile(results[(rate, "bare", kind)], 99)
                    ok = ok and ratio <= TARGET
                    verdict = f"{ratio:.2f}× {'within' if ratio <= TARGET else 'OVER'} {TARGET}×"
                per_request = cpu_ms_per_request(results, cpu, (rate, name, kind))
                line += f"{verdict:<21}"
                if per_request is not None:
                    line += f" {per_request:.1f}"
                print(line)
    if "open" in kinds:
        for line in open_cpu_verdicts(rates, results, cpu):
            print(line)
    exact = incidents == sent["open"] and events == sent["reply"] and floor_announced == sent["floor"]
    print(f"serve stored {incidents} incidents and {events} reply events (sent {sent['open']} and {sent['reply']}"
          f"{'' if exact else ': WRONG COUNT'}); all {expected_posts} announcements were posted")
    if args.floor:
        print(f"the floor stored {floor_announced} incidents with their announcement (sent {sent['floor']})")
    print("target met" if ok else "target NOT met")
    return 0 if ok and exact else 1


Key = tuple[float, str, str]  # (rate, app, kind)


def cpu_ms_per_request(results: dict[Key, list[float]], cpu: dict[Key, float], key: Key) -> float | None:
    """The app's CPU over a batch, in ms per request of it; None where it could not be read."""
    total = cpu.get(key)
    return None if total is None else total / len(results[key]) * 1000


def open_cpu_verdicts(rates: list[float], results: dict[Key, list[float]], cpu: dict[Key, float]) -> list[str]:
    """Serve's CPU per open against the absolute target and, when the floor ran, against the floor."""
    lines = []
    for rate in rates:
        serve = cpu_ms_per_request(results, cpu, (rate, "serve", "open"))
        floor = cpu_ms_per_request(results, cpu, (rate, "floor", "open"))
        if serve is None:
            continue
        met = "met" if serve <= OPEN_CPU_TARGET_MS else "NOT met"
        line = f"{rate:g}/s: serve CPU per open {serve:.1f} ms, target {OPEN_CPU_TARGET_MS:g} ms {met}"
        if floor is not None:
            line += (f"; the floor {floor:.1f} ms ({'under' if floor <= OPEN_CPU_TARGET_MS else 'over'} the target"
                     f" itself), serve ×{serve / floor:.2f} of it")
        lines.append(line)
    return lines


if __name__ == "__main__":
    sys.exit(main())
