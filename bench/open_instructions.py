"""Profile: the instructions one `/incident open` costs inside the app, counted by valgrind's callgrind.

    python bench/open_instructions.py [--opens 40] [--rate 2] [--database-url postgresql+psycopg://... | --postgres]
                                      [--floor]

The same work as bench/open_cpu.py (the app built as `incident-bot serve` builds it, its WSGI callable called with
signed opens, the Slack sandbox in a process of its own answering chat.postMessage after 300 ms), run under
`valgrind --tool=callgrind` with counting switched on (callgrind_control) only from just before the measured opens
until their announcements are posted and the process is quiet. It prints the instructions per open, background
work included. With --floor it counts bench/floor_app.py's opens instead, in the same setting: the instructions the
open's work itself takes, to set beside the app's without the noise of CPU time.

Why: CPU time on these shared VMs moved by ±15% between runs minutes apart, so a change worth a few percent could
not be seen in it. The count of instructions is the same within about 1.5% from run to run. It leaves out what the
kernel does (system calls, thread switches) and says nothing of stalls, so the CPU figure that counts is still
bench/ack.py's; this one tells whether a change made the app do less. Compare two trees by running it in each
(a `git worktree` of the other commit), one after the other or side by side. Under valgrind everything runs about
50 times slower: 40 opens at 2 a second take about a minute. Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
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

_INSIDE = "INCIDENT_BOT_UNDER_CALLGRIND"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opens", type=int, default=40)
    parser.add_argument("--rate", type=float, default=2.0, help="opens per second (valgrind runs ~50× slower)")
    parser.add_argument("--floor", action="store_true", help="count the floor app's opens (bench/floor_app.py)")
    add_database_arguments(parser)
    add_slack_arguments(parser)
    args = parser.parse_args()
    if os.environ.get(_INSIDE):
        return measure(args.opens, args.rate, args.database_url, tls=not args.plain_http, floor=args.floor)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    return with_database_server(args, lambda server_url: run_under_callgrind(args, server_url))


def run_under_callgrind(args: argparse.Namespace, server_url: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="callgrind-") as scratch:
        out = Path(scratch) / "callgrind.out"
        argv = [sys.argv[0], "--opens", str(args.opens), "--rate", str(args.rate)]
        if server_url is not None:
            argv += ["--database-url", server_url]
        if args.plain_http:
            argv.append("--plain-http")
        if args.floor:
            argv.append("--floor")
        completed = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}.%p",
             sys.executable, *argv],
            env={**os.environ, _INSIDE: "1"}, capture_output=True, text=True, check=False,
        )
        dumps = sorted(Path(scratch).glob("callgrind.out.*.1"))
        if completed.returncode != 0 or not dumps:
            print(completed.stderr[-3000:], file=sys.stderr)
            return completed.returncode or 1
        total = next(int(line.split()[1]) for line in dumps[0].read_text().splitlines() if line.startswith("totals:"))
    kind = "SQLite" if server_url is None else "PostgreSQL"
    which = " (the floor)" if args.floor else ""
    print(f"instructions per /incident open{which}: {total / args.opens / 1e6:.2f} M ({args.opens} opens at "
          f"{args.rate:g}/s under callgrind, database {kind}, background work included)")
    return 0


def measure(count: int, rate: float, server_url: str | None, *, tls: bool, floor: bool) -> int:
    """Runs inside valgrind: the app as bench/open_cpu.py builds it (or the floor on it), counting only around the
    measured opens."""
    sandbox = ChildSandbox({"chat.postMessage": POST_LATENCY}, tls=tls)
    scratch = ScratchDatabase(server_url)
    runtime = start_app(sandbox, scratch)
    floor_app = FloorApp(runtime.ctx, runtime.bolt.client, SECRET) if floor else None
    wsgi = runtime.wsgi if floor_app is None else floor_app.wsgi
    signer = Signer(SECRET)
    pid = str(os.getpid())
    try:
        batch(wsgi, sandbox, opens(signer, 5, "warm"), rate)
        measured = opens(signer, count, "measured")
        for step in (["-z"], ["-i", "on"]):
            subprocess.run(["callgrind_control", *step, pid], check=True, capture_output=True)
        batch(wsgi, sandbox, measured, rate)
        for step in (["-i", "off"], ["-d"]):
            subprocess.run(["callgrind_control", *step, pid], check=True, capture_output=True)
    finally:
        if floor_app is not None:
            floor_app.stop()
        runtime.stop()
        sandbox.stop()
        scratch.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
