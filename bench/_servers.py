"""Shared by the benchmarks: the servers they start, a Slack sandbox in a child process, Slack's signing.

Everything here runs from the interpreter that runs the benchmark (`sys.executable`), and nothing it starts
outlives the benchmark: each server runs in a process group of its own, stopped whole on a normal exit, on
SIGTERM or SIGINT (the handlers below), and by bench/_reaper.py when the benchmark is killed outright.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import hashlib
import hmac
import itertools
import json
import math
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import requests

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(REPO))

from sandbox.slack import SlackSandbox  # noqa: E402
from sandbox.tls import LoopbackCA  # noqa: E402

# ---- nothing outlives the benchmark ---------------------------------------------------------------------------

_cleanups: dict[int, Callable[[], None]] = {}
_cleanup_ids = itertools.count()
_main_pid = os.getpid()


def on_exit(stop: Callable[[], None]) -> int:
    """Runs `stop` when the benchmark ends, however it ends short of SIGKILL; newest first. Returns a token for
    `done`, to be given once `stop` has run in the ordinary course."""
    token = next(_cleanup_ids)
    _cleanups[token] = stop
    return token


def done(token: int) -> None:
    _cleanups.pop(token, None)


def _run_cleanups() -> None:
    if os.getpid() != _main_pid:
        return  # a forked helper inherits the list; the benchmark's own process does the stopping
    for token in sorted(_cleanups, reverse=True):
        stop = _cleanups.pop(token, None)
        if stop is not None:
            try:
                stop()
            except Exception as error:  # keep stopping the rest
                print(f"bench: cleanup failed: {error!r}", file=sys.stderr)


def _on_signal(signum: int, _frame: Any) -> None:
    # Not an exception: threads sleeping until their request is due would keep the interpreter alive for minutes.
    _run_cleanups()
    os._exit(128 + signum)


atexit.register(_run_cleanups)
if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


class _Reaper:
    """bench/_reaper.py, told what to stop should this process die without running its cleanups."""

    _instance: _Reaper | None = None

    def __init__(self) -> None:
        self.process = subprocess.Popen([PYTHON, str(REPO / "bench" / "_reaper.py")], stdin=subprocess.PIPE,
                                        start_new_session=True, bufsize=0)

    @classmethod
    def tell(cls, line: str) -> None:
        if os.getpid() != _main_pid:
            return
        if cls._instance is None:
            cls._instance = _Reaper()
        stdin = cls._instance.process.stdin
        assert stdin is not None
        stdin.write(f"{line}\n".encode())

    @classmethod
    def fileno(cls) -> int | None:
        stdin = cls._instance.process.stdin if cls._instance is not None else None
        return stdin.fileno() if stdin is not None else None


def in_forked_child() -> None:
    """First thing in a helper forked from the benchmark: it dies with the benchmark (Linux: the parent-death
    signal), leaves Ctrl-C and SIGTERM handling to the benchmark, and holds no end of the reaper's pipe (or the
    reaper would never see the benchmark go)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _cleanups.clear()
    fd = _Reaper.fileno()
    if fd is not None:
        os.close(fd)
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != _main_pid:  # the benchmark died before the signal was armed
            os._exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A helper (a sandbox) forked into its own process, so its work doesn't share the benchmark's interpreter.
    `target(conn, *args)` sends one hello, then answers what `ask` sends until it gets "stop"."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.conn, child = mp.Pipe()
        self.process = mp.get_context("fork").Process(target=_child_main, args=(target, child, *args), daemon=True)
        self.process.start()
        _Reaper.tell(f"pid {self.process.pid}")
        self._token = on_exit(self._terminate)
        self.hello = self.conn.recv()

    def ask(self, command: Any) -> Any:
        self.conn.send(command)
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=10)
        self._terminate()

    def _terminate(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        _Reaper.tell(f"forget pid {self.process.pid}")
        done(self._token)


def _child_main(target: Callable[..., None], *args: Any) -> None:
    in_forked_child()
    target(*args)


def _sandbox_main(conn: Connection, latency: dict[str, float], ca: LoopbackCA | None) -> None:
    with SlackSandbox(tls=ca.server_context() if ca is not None else None) as slack:
        for method, seconds in latency.items():
            slack.set_latency(method, seconds)
        conn.send((slack.api_url, slack.bot_token))
        while True:
            message = conn.recv()
            command, arg = message if isinstance(message, tuple) else (message, "")
            if command == "count":
                conn.send(len(slack.calls(arg)))
            elif command == "messages":
                conn.send(len(slack.messages(arg)))
            else:
                conn.send(None)
                return


class ChildSandbox:
    """The Slack sandbox in its own process; over HTTPS unless `tls` is off, as production only reaches Slack over
    TLS. `env` is what the app needs to trust it: SSL_CERT_FILE, the system's roots and the sandbox's CA."""

    def __init__(self, latency: dict[str, float] | None = None, *, tls: bool = True) -> None:
        ca = LoopbackCA() if tls else None
        self._child = Child(_sandbox_main, latency or {}, ca)
        self.api_url, self.bot_token = self._child.hello
        self.env: dict[str, str] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if ca is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="incident-bot-bench-tls-")
            self.env["SSL_CERT_FILE"] = str(ca.write_bundle(Path(self._tmp.name) / "trust.pem"))

    def ask(self, command: str, arg: str = "") -> Any:
        return self._child.ask((command, arg))

    def stop(self) -> None:
        self._child.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def add_slack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plain-http", action="store_true",
                        help="the Slack sandbox over plain HTTP (rounds before 8 were measured so); default HTTPS")


def serve_argv() -> list[str]:
    """`incident-bot serve` exactly as its console script runs it (app:main), from this interpreter."""
    return [PYTHON, "-c", "import sys, app; sys.exit(app.main(['serve']))"]


def gunicorn_argv(threads: int = 16, module: str = "bare_app:app") -> list[str]:
    """A bench app (the bare one unless told) under the worker settings `incident-bot serve` gives gunicorn (app.py
    cmd_serve)."""
    return [PYTHON, "-m", "gunicorn", "--chdir", str(REPO / "bench"), "--pythonpath", str(REPO),
            "--worker-class", "handlers.server.BufferedWSGIWorker", "--asgi-loop", "uvloop",
            "--workers", "1", "--threads", str(threads), "--timeout", "60", "--graceful-timeout", "20",
            "--no-control-socket", "--log-level", "warning", "--bind", "127.0.0.1:{port}",
            module]


class Server:
    """A server (`incident-bot serve`, or gunicorn on the bare app) on a free port ("{port}" in argv), in a
    process group of its own that is stopped whole."""

    def __init__(self, argv: list[str], env: dict[str, str], *, ready_path: str = "/healthz",
                 profile: str | None = None) -> None:
        self.profile = profile
        if profile is not None:
            argv = [*_py_spy(profile), *argv]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keep = {k: v for k, v in os.environ.items()
                if k in ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")}
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 — closed in stop(); shown if it fails
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.process = subprocess.Popen(argv, env={**keep, **env, "PORT": str(self.port)}, cwd=str(REPO),
                                        stdout=self.log, stderr=self.log, start_new_session=True)
        self.pgid = self.process.pid
        _Reaper.tell(f"group {self.pgid}")
        self._token = on_exit(self.stop)
        try:
            self._wait(ready_path)
        except BaseException:
            self.log.seek(0)
            sys.stderr.write(self.log.read()[-4000:].decode(errors="replace"))
            self.stop()
            raise

    def _wait(self, path: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                requests.get(self.url + path, timeout=5)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def server_pids(self) -> list[int]:
        """The server's processes (gunicorn's master and its worker), without py-spy when it profiles them."""
        return [pid for pid in group_pids(self.pgid) if self.profile is None or pid != self.pgid]

    def stop(self) -> None:
        if self.process.returncode is None:
            if self.profile is not None:
                for pid in self.server_pids():  # py-spy writes its file once the server has exited
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            else:
                _killpg(self.pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _killpg(self.pgid, signal.SIGKILL)
                self.process.wait()
        _killpg(self.pgid, signal.SIGKILL)  # anything of the group that outlived its leader
        _Reaper.tell(f"forget group {self.pgid}")
        done(self._token)
        self.log.close()
        if self.profile is not None and Path(self.profile).exists():
            print_profile(self.profile)
            self.profile = None


def _killpg(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# ---- what a server costs --------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(server: Server) -> float | None:
    """User+system CPU of the server's processes so far (Linux /proc); None elsewhere."""
    try:
        total = 0.0
        for pid in server.server_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
        return total
    except (OSError, ValueError):
        return None


def settle(server: Server, *, quiet_ms: float = 20.0, window: float = 1.0, timeout: float = 120.0) -> float | None:
    """Waits until the server's background work has drained (under `quiet_ms` of CPU in a `window` of seconds,
    about what its timers cost idle); returns its CPU seconds then."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(server)
    while last is not None and time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(server)
        if now is None or (now - last) * 1000 < quiet_ms:
            return now
        last = now
    return last


def _py_spy(output: str) -> list[str]:
    """py-spy, sampling a server it starts (its worker included) into `output` (collapsed stacks). A profiling
    tool, not a dependency: `pip install py-spy` beside the interpreter to use it. It runs the server rather than
    attaching to it: attaching is refused in some containers."""
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return [spy, "record", "--subprocesses", "--gil", "--rate", "200", "--function", "--format", "raw",
            "--output", output, "--"]


def print_profile(path: str, top: int = 25) -> None:
    """The frames that hold the most samples of a py-spy raw file: on their own (self) and with what they call
    (inclusive); threads waiting idle are not sampled."""
    stacks = Counter[str]()
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stacks[stack] += int(count)
    total = sum(stacks.values()) or 1
    own, inclusive = Counter[str](), Counter[str]()
    for stack, count in stacks.items():
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"profile {path}: {total} samples at 200/s holding the GIL (Python code running)")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"  top {title}:")
        for frame, count in counter.most_common(top):
            print(f"    {count / total:6.1%}  {frame}")


class Signer:
    """Signs bodies exactly as Slack does (v0, HMAC-SHA256 over `v0:<ts>:<body>`)."""

    def __init__(self, secret: str, team_id: str = "T0SANDBOX") -> None:
        self.secret = secret.encode()
        self.team_id = team_id

    def headers(self, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        ts = str(int(time.time()))
        digest = hmac.new(self.secret, b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
                **(extra or {})}

    def command(self, text: str, *, channel: str, user: str = "U0SENA",
                response_url: str = "http://127.0.0.1:9/none") -> tuple[bytes, dict[str, str]]:
        body = urlencode({"token": "x", "team_id": self.team_id, "channel_id": channel, "channel_name": "incidents",
                          "user_id": user, "user_name": user.lower(), "command": "/incident", "text": text,
                          "response_url": response_url, "api_app_id": "A0SANDBOX",
                          # Unique, as Slack's are: the app answers a repeated trigger_id without running it again.
                          "trigger_id": f"{int(time.time())}.{secrets.token_hex(8)}"}).encode()
        return body, self.headers(body, "application/x-www-form-urlencoded")

    def reply(self, *, channel: str, thread_ts: str, ts: str, user: str, text: str, event_id: str,
              retry: int | None = None) -> tuple[bytes, dict[str, str]]:
        event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "thread_ts": thread_ts,
                 "event_ts": ts, "channel_type": "channel"}
        envelope = {"token": "x", "team_id": self.team_id, "api_app_id": "A0SANDBOX", "event": event,
                    "type": "event_callback", "event_id": event_id, "event_time": int(time.time()),
                    "authorizations": [{"team_id": self.team_id, "user_id": "U0BOT", "is_bot": True,
                                        "is_enterprise_install": False}]}
        body = json.dumps(envelope, separators=(",", ":")).encode()
        extra = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
        return body, self.headers(body, "application/json", extra)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


class ScratchDatabase:
    """A fresh database for one run: a SQLite file in a temporary directory, or a new database on the
    PostgreSQL server named by a URL (dropped afterwards)."""

    def __init__(self, server_url: str | None) -> None:
        import uuid

        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server_url = server_url
        self._token = on_exit(self.drop)
        if server_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="incident-bot-bench-")
            _Reaper.tell(f"dir {self._tmp.name}")
            self.url = f"sqlite:///{self._tmp.name}/bench.db"
            self.kind = "SQLite"
            return
        self._name = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self._name}"'))
        admin.dispose()
        self.url = make_url(server_url).set(database=self._name).render_as_string(hide_password=False)
        self.kind = "PostgreSQL"

    def drop(self) -> None:
        done(self._token)
        if self._tmp is not None:
            self._tmp.cleanup()
            _Reaper.tell(f"forget dir {self._tmp.name}")
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(self._server_url or "", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
        admin.dispose()


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """--database-url or --postgres, as every bench that takes either spells them."""
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--database-url", default=None,
                          help="a PostgreSQL server to create a scratch database on; default: a fresh SQLite file")
    database.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL (scripts/pg)")


def with_database_server(args: argparse.Namespace, run: Callable[[str | None], int]) -> int:
    """`run` given the server the arguments ask for (None: SQLite); for --postgres a throwaway one, stopped after.
    2 when it cannot be started."""
    with postgres(None) if args.postgres else nullcontext(args.database_url) as server_url:
        if args.postgres and server_url is None:
            return 2
        return run(server_url)


@contextmanager
def postgres(url: str | None) -> Iterator[str | None]:
    """A PostgreSQL server URL: the one given, or else a throwaway one from scripts/pg, stopped at the end (and
    by the reaper should the benchmark be killed); None when scripts/pg cannot start one."""
    if url:
        yield url
        return
    result = subprocess.run([str(REPO / "scripts" / "pg"), "start"], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"PostgreSQL skipped: scripts/pg could not start a server ({result.stderr.strip().splitlines()[-1:]})")
        yield None
        return
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    directory = exports["PG_TEST_DIR"].strip("'\"")
    _Reaper.tell(f"pg {directory}")

    def stop() -> None:
        subprocess.run([str(REPO / "scripts" / "pg"), "stop", directory], capture_output=True, text=True)
        _Reaper.tell(f"forget pg {directory}")
        done(token)

    token = on_exit(stop)
    try:
        yield exports["TEST_DATABASE_URL"].strip("'\"")
    finally:
        stop()
