"""Shared by the benchmarks: a Slack sandbox in a child process, servers as subprocesses, Slack's signing."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import multiprocessing as mp
import os
import secrets
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
sys.path.insert(0, str(REPO))

from sandbox.slack import SlackSandbox  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sandbox_main(conn: Connection, latency: dict[str, float]) -> None:
    with SlackSandbox() as slack:
        for method, seconds in latency.items():
            slack.set_latency(method, seconds)
        conn.send((slack.api_url, slack.bot_token))
        while True:
            command, arg = conn.recv()
            if command == "count":
                conn.send(len(slack.calls(arg)))
            elif command == "messages":
                conn.send(len(slack.messages(arg)))
            else:
                conn.send(None)
                return


class ChildSandbox:
    """The Slack sandbox in its own process, so its work doesn't share the client's interpreter."""

    def __init__(self, latency: dict[str, float] | None = None) -> None:
        self._conn, child = mp.Pipe()
        self._process = mp.get_context("fork").Process(target=_sandbox_main, args=(child, latency or {}),
                                                       daemon=True)
        self._process.start()
        self.api_url, self.bot_token = self._conn.recv()

    def ask(self, command: str, arg: str = "") -> Any:
        self._conn.send((command, arg))
        return self._conn.recv()

    def stop(self) -> None:
        self.ask("stop")
        self._process.join(timeout=10)


class Server:
    """A server subprocess (`incident-bot serve`, or gunicorn on the bare app) on a free port ("{port}" in argv)."""

    def __init__(self, argv: list[str], env: dict[str, str], *, ready_path: str = "/healthz") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        self.log = open(os.devnull, "w")  # noqa: SIM115 — closed in stop()
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.process = subprocess.Popen(argv, env={**keep, **env, "PORT": str(self.port)}, cwd=str(REPO),
                                        stdout=self.log, stderr=self.log)
        self._wait(ready_path)

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

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def gunicorn_argv(threads: int = 16) -> list[str]:
    """The worker settings `incident-bot serve` gives gunicorn (app.py cmd_serve), for the bare app."""
    return [str(VENV_BIN / "gunicorn"), "--chdir", str(REPO / "bench"),
            "--worker-class", "handlers.server.BufferedWSGIWorker",
            "--workers", "1", "--threads", str(threads), "--timeout", "60", "--graceful-timeout", "20",
            "--no-control-socket", "--log-level", "warning", "--bind", "127.0.0.1:{port}",
            "bare_app:app"]


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
        import tempfile
        import uuid

        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server_url = server_url
        if server_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="incident-bot-bench-")
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
        if self._tmp is not None:
            self._tmp.cleanup()
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(self._server_url or "", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
        admin.dispose()
