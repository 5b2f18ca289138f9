"""Benchmark: thread replies stored per second, each delivered twice, on SQLite and on PostgreSQL.

    python bench/ingest.py [--replies 2000] [--senders 8] [--chunks 4] [--database-url postgresql+psycopg://...]
                           [--sqlite-only] [--profile PREFIX]

2,000 signed thread-reply events go to `incident-bot serve` from 8 concurrent senders; each is delivered
twice, the second time as Slack's retry (same event_id, X-Slack-Retry-Num: 1) a little later and from
another sender. It prints how long until every reply was stored, events/s, and checks that exactly 2,000
events were stored. The baseline, measured in the same run: the same 4,000 deliveries to a bare Bolt app
that only acks (bench/bare_app.py) on the same server settings, a quarter at a time (--chunks) alternating with
serve, so that the machine's other work falls on both.

PostgreSQL: --database-url or TEST_DATABASE_URL names a server to create a scratch database on; without
either, a throwaway server is started with scripts/pg, and PostgreSQL is skipped (with a message) when its
binaries are missing. --profile runs serve under py-spy, prints its top frames at the end and keeps the collapsed
stacks in PREFIX-sqlite.txt / PREFIX-postgresql.txt (the 50 warm-up deliveries are a few % of its samples).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import (
    ChildSandbox,
    ScratchDatabase,
    Server,
    Signer,
    gunicorn_argv,
    postgres,
    serve_argv,
)

CHANNEL = "C0INCIDENTS"
SECRET = "bench-ingest-secret"
USERS = ("U0SENA", "U0LEMUN", "U0GITCO")


def deliveries(signer: Signer, thread_ts: str, replies: int, seed: int = 7) -> list[tuple[bytes, dict[str, str]]]:
    """Every reply once, and its retry placed up to 200 deliveries later (Slack retries after a timeout)."""
    rng = random.Random(seed)
    base = float(thread_ts)
    slots: list[tuple[float, bytes, dict[str, str]]] = []
    for i in range(replies):
        ts = f"{base + (i + 1) / 1000:.6f}"
        args = {"channel": CHANNEL, "thread_ts": thread_ts, "ts": ts, "user": USERS[i % len(USERS)],
                "text": f"답글 {i}: p95 {800 + i % 97}ms", "event_id": f"EvI{i:08d}"}
        slots.append((i, *signer.reply(**args)))
        slots.append((i + rng.uniform(1, 200), *signer.reply(**args, retry=1)))
    slots.sort(key=lambda slot: slot[0])
    return [(body, headers) for _, body, headers in slots]


def send_all(url: str, jobs: list[tuple[bytes, dict[str, str]]], senders: int) -> float:
    """Seconds to get all of them acked by SENDERS concurrent clients."""
    local = threading.local()
    failures: list[str] = []

    def send(job: tuple[bytes, dict[str, str]]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body, headers = job
        response = session.post(url, data=body, headers=headers, timeout=30)
        if response.status_code != 200:
            failures.append(f"{response.status_code} {response.text[:100]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=senders) as pool:
        list(pool.map(send, jobs))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} deliveries refused, e.g. {failures[0]}")
    return elapsed


def count_events(database_url: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, func, select

    from storage.models import TimelineEvent

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(func.count(), func.count(func.distinct(TimelineEvent.slack_ts)))
                .where(TimelineEvent.kind == "message")
            ).one()
            return int(rows[0]), int(rows[1])
    finally:
        engine.dispose()


def first_thread(database_url: str, timeout: float = 30.0) -> str:
    from sqlalchemy import create_engine, select

    from storage.models import Incident

    engine = create_engine(database_url)
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with engine.connect() as connection:
                ts = connection.scalar(select(Incident.announcement_ts).where(Incident.announcement_ts.is_not(None)))
            if ts:
                return str(ts)
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise RuntimeError("the incident's announcement was never posted")


def run(database: ScratchDatabase, replies: int, senders: int, chunks: int,
        profile: str | None = None) -> dict[str, float]:
    sandbox = ChildSandbox()
    env = {"SLACK_API_URL": sandbox.api_url, "SLACK_BOT_TOKEN": sandbox.bot_token, "SLACK_SIGNING_SECRET": SECRET,
           "LISTENER_THREADS": "16", "LOG_LEVEL": "INFO", **sandbox.env}
    signer = Signer(SECRET)
    try:
        bare = Server(gunicorn_argv(threads=16), env, ready_path="/")
        serve = Server(serve_argv(), {**env, "DATABASE_URL": database.url}, profile=profile)
        try:
            body, headers = signer.command("open 수집 벤치마크 sev:high", channel=CHANNEL)
            assert requests.post(f"{serve.url}/slack/events", data=body, headers=headers, timeout=10).ok
            thread_ts = first_thread(database.url)
            jobs = deliveries(signer, thread_ts, replies)
            warm = deliveries(signer, f"{float(thread_ts) - 100:.6f}", 50, seed=1)  # not the incident's thread
            send_all(f"{bare.url}/slack/events", warm, senders)
            send_all(f"{serve.url}/slack/events", warm, senders)

            # The same deliveries in the same order to both, a chunk at a time and alternating, so that what else
            # the machine does falls on both alike.
            bare_s = acked_s = 0.0
            size = -(-len(jobs) // chunks)
            for start in range(0, len(jobs), size):
                bare_s += send_all(f"{bare.url}/slack/events", jobs[start:start + size], senders)
                acked_s += send_all(f"{serve.url}/slack/events", jobs[start:start + size], senders)
            started = time.perf_counter()
            stored, distinct = count_events(database.url)
            while stored < replies and time.perf_counter() - started < 300:
                time.sleep(0.05)
                stored, distinct = count_events(database.url)
            stored_s = acked_s + time.perf_counter() - started  # an ack follows the commit: nothing left to wait for
            time.sleep(1.0)  # anything late would be a duplicate
            stored, distinct = count_events(database.url)
        finally:
            bare.stop()
            serve.stop()
    finally:
        sandbox.stop()
    return {"bare_s": bare_s, "acked_s": acked_s, "stored_s": stored_s, "stored": stored, "distinct": distinct}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replies", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=4, help="alternate bare and serve this many times")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL"),
                        help="PostgreSQL server for the scratch database (default: TEST_DATABASE_URL, or scripts/pg)")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--profile", metavar="PREFIX", help="sample serve with py-spy into PREFIX-<database>.txt")
    args = parser.parse_args()

    print(f"ingest: {args.replies} thread replies, each delivered twice (the retry with the same event_id and "
          f"X-Slack-Retry-Num: 1), {args.senders} concurrent senders, through `incident-bot serve`")
    print(f"{'database':<11} {'acked in s':>10} {'stored in s':>11} {'events/s':>9} {'stored':>7} "
          f"{'bare app s':>10} {'serve/bare':>10}")
    ok = True
    targets: list[tuple[str, str | None]] = [("SQLite", None)]
    with postgres(None if args.sqlite_only else args.database_url) as pg_url:
        if args.sqlite_only:
            print("PostgreSQL skipped: --sqlite-only")
        elif pg_url is not None:
            targets.append(("PostgreSQL", pg_url))
        for _, server_url in targets:
            database = ScratchDatabase(server_url)
            try:
                profile = f"{args.profile}-{database.kind.lower()}.txt" if args.profile else None
                r = run(database, args.replies, args.senders, args.chunks, profile)
            finally:
                database.drop()
            exact = r["stored"] == args.replies and r["distinct"] == args.replies
            ok = ok and exact
            print(f"{database.kind:<11} {r['acked_s']:>10.2f} {r['stored_s']:>11.2f} "
                  f"{args.replies / r['stored_s']:>9.0f} {r['stored']:>7} {r['bare_s']:>10.2f} "
                  f"{r['stored_s'] / r['bare_s']:>9.2f}×" + ("" if exact else "  WRONG COUNT"))
    print(f"exactly {args.replies} events stored on each database" if ok else "event count WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
