"""Stops what a benchmark started when the benchmark itself is killed outright (SIGKILL), which no handler sees.

bench/_servers.py starts this once per benchmark, in a session of its own, and writes to its stdin what must not
outlive the benchmark: `group <pgid>` (a server's process group), `pid <pid>` (a forked helper), `pg <dir>` (a
throwaway PostgreSQL from scripts/pg), `dir <path>` (a scratch directory), and `forget <line>` once the benchmark
stopped or removed it itself. End of input means
the benchmark is gone, however it ended: whatever is still listed is stopped (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_SECONDS = 10.0
PG = Path(__file__).resolve().parent.parent / "scripts" / "pg"


def _signal(kind: str, target: int, signum: int) -> bool:
    """Sends `signum`; False when nothing is left to receive it."""
    try:
        (os.killpg if kind == "group" else os.kill)(target, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the benchmark's to handle; this cleans up after it
    listed: dict[str, None] = {}
    for raw in sys.stdin.buffer:
        line = raw.decode().strip()
        if line.startswith("forget "):
            listed.pop(line.removeprefix("forget "), None)
        elif line:
            listed[line] = None
    processes = [(kind, int(value)) for kind, _, value in (line.partition(" ") for line in listed)
                 if kind in ("group", "pid")]
    alive = [(kind, target) for kind, target in processes if _signal(kind, target, signal.SIGTERM)]
    deadline = time.monotonic() + GRACE_SECONDS
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [(kind, target) for kind, target in alive if _signal(kind, target, 0)]
    for kind, target in alive:
        _signal(kind, target, signal.SIGKILL)
    for line in listed:
        if line.startswith("pg "):
            subprocess.run([str(PG), "stop", line.removeprefix("pg ")], capture_output=True, check=False)
        elif line.startswith("dir "):
            shutil.rmtree(line.removeprefix("dir "), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
