"""Benchmark: the CPU an `/incident open` cannot do without, against what the app spends, in the same run.

    python bench/open_floor.py [--opens 300] [--rate 20] [--rounds 2] [--postgres | --database-url URL]
                               [--plain-http]

Three WSGI apps answer the same kind of signed opens in this process, in turn each round, called as
bench/open_cpu.py calls the app (16 threads at a steady rate, the Slack sandbox in a process of its own answering
chat.postMessage after 300 ms):
- bare: bench/bare_app.py, the Bolt app that only acks (no database, no post);
- floor: bench/floor_app.py, a Bolt app that does only the work an open must do, straight through the
  libraries, on the app's own Slack client, database engine and renderer (see there);
- app: the app as `incident-bot serve` builds it (bench/open_cpu.py's start_app).
It prints each one's CPU per open (the process's, background work included) and what the app spends above the
floor.

Why: issue 18's last target is serve's CPU per open under 10 ms. This measures how much of what the app spends
is the work itself done with Bolt, SQLAlchemy, Jinja2 and slack_sdk, and how much is the app's own. The HTTP
server's share is the same for every app and is not in these figures: `bench/ack.py --floor` measures the floor
behind gunicorn beside bare and serve, in the issue's own figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
from floor_app import FloorApp  # noqa: E402
from open_cpu import batch, start_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opens", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="opens per second")
    parser.add_argument("--rounds", type=int, default=2)
    add_database_arguments(parser)
    add_slack_arguments(parser)
    args = parser.parse_args()
    return with_database_server(args, lambda server_url: run(args, server_url))


def run(args: argparse.Namespace, server_url: str | None) -> int:
    sandbox = ChildSandbox({"chat.postMessage": POST_LATENCY}, tls=not args.plain_http)
    scratch = ScratchDatabase(server_url)
    runtime = start_app(sandbox, scratch)  # also migrates the database the floor writes to
    import bare_app  # its environment (the sandbox's URL and token) is set by start_app

    floor = FloorApp(runtime.ctx, runtime.bolt.client, SECRET)
    signer = Signer(SECRET)
    apps = {"bare": (bare_app.app, False), "floor": (floor.wsgi, True), "app": (runtime.wsgi, True)}
    spent: dict[str, list[float]] = {name: [] for name in apps}
    try:
        for name, (wsgi, posts) in apps.items():
            batch(wsgi, sandbox, opens(signer, 20, f"warm-{name}"), args.rate, posts=posts)
        for round_ in range(args.rounds):
            for name, (wsgi, posts) in apps.items():
                jobs = opens(signer, args.opens, f"{name}-{round_}")  # signed before the clock starts
                started = time.process_time()
                batch(wsgi, sandbox, jobs, args.rate, posts=posts)
                spent[name].append((time.process_time() - started) / args.opens * 1000)
        announced = floor.announced()
    finally:
        floor.stop()
        runtime.stop()
        sandbox.stop()
        scratch.drop()
    expected = args.opens * args.rounds + 20
    if announced != expected:
        print(f"the floor stored and announced {announced} incidents, not {expected}", file=sys.stderr)
        return 1
    print(f"CPU per /incident open, ms ({args.opens} opens a round at {args.rate:g}/s, database {scratch.kind}, "
          "background work included):")
    for name, figures in spent.items():
        print(f"  {name:6s} " + "  ".join(f"{figure:6.2f}" for figure in figures))
    above = [app - floor for app, floor in zip(spent["app"], spent["floor"], strict=True)]
    print("  app above the floor: " + "  ".join(f"{ms:+.2f} ms ({ms / floor:+.0%})"
                                               for ms, floor in zip(above, spent["floor"], strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
