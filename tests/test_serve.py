"""`incident-bot serve` as Cloud Run runs it: a real gunicorn process, configured only by the environment."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import requests
from sqlalchemy import create_engine, func, select, text

from sandbox.driver import SlackDriver
from sandbox.slack import SlackSandbox
from storage.models import Incident, TimelineEvent

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin" / "incident-bot"
CHANNEL = "C0INCIDENTS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """The parent's environment minus every setting, so only what a test passes reaches the process."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    return {k: v for k, v in os.environ.items() if k in keep}


class Served:
    def __init__(self, env: dict[str, str], slack: SlackSandbox, secret: str) -> None:
        self.port = free_port()
        self.env = {**base_env(), **env, "PORT": str(self.port)}
        # Files, not pipes: nothing reads a pipe until stop(), and once its 64 KiB filled (an outage logs a
        # traceback per refused request) every log write blocked the server, which then answered nothing.
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the process; closed in stop()
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 -- likewise
        self.process = subprocess.Popen([str(BIN), "serve"], env=self.env, cwd="/", stdout=self._out,
                                        stderr=self._err)
        self.url = f"http://127.0.0.1:{self.port}"
        self.driver = SlackDriver(f"{self.url}/slack/events", secret, slack, team_id=slack.team_id)
        self.stderr = ""
        self.stdout = ""

    def wait_ready(self, timeout: float = 30.0) -> requests.Response:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                self.stop()
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.stderr}")
            try:
                return requests.get(f"{self.url}/healthz", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("serve did not start listening")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM, as Cloud Run sends it
        self.process.wait(timeout=60)
        if not self._err.closed:  # a second stop() keeps what the first one read
            self.stdout, self.stderr = _read_all(self._out), _read_all(self._err)


def _read_all(file: IO[bytes]) -> str:
    with file:
        file.seek(0)
        return file.read().decode("utf-8", errors="replace")


@pytest.fixture
def serve(slack: SlackSandbox, database_url: str) -> Iterator[Any]:
    started: list[Served] = []

    def start(**extra: str) -> Served:
        secret = "signing-" + secrets.token_hex(16)
        env = {"SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": secret,
               "DATABASE_URL": database_url, **extra}
        served = Served(env, slack, secret)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.stop()


@pytest.fixture
def slack() -> Iterator[SlackSandbox]:
    # A token of the real shape and length, unique to this run, so a leak of it is unmistakable.
    with SlackSandbox(bot_token=f"xoxb-{secrets.randbelow(10**12)}-{secrets.token_hex(12)}") as sandbox:
        yield sandbox


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    records = []
    for line in lines:
        record = json.loads(line)  # raises on any line that isn't one JSON object
        assert isinstance(record, dict), line
        assert record.get("severity") and isinstance(record.get("message"), str), line
        records.append(record)
    return records


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_serve_migrates_answers_slack_and_logs_json_without_secrets(serve: Any, slack: SlackSandbox,
                                                                     database_url: str) -> None:
    # DEBUG makes Bolt and slack_sdk log requests and responses: the strictest test of redaction.
    served = serve(LOG_LEVEL="DEBUG")
    health = served.wait_ready()
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok"}

    signatures: list[str] = []
    post_raw = served.driver.post_raw

    def recording(body: bytes, headers: dict[str, str]) -> requests.Response:
        signatures.append(headers["X-Slack-Signature"])
        return post_raw(body, headers)

    served.driver.post_raw = recording  # type: ignore[method-assign]
    response = served.driver.command("/incident", "open serve 경로 점검 sev:high service:ion-api")
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["response_type"] == "ephemeral" and "INCIDENT-" in ack["text"]
    wait_for(lambda: len(slack.messages(CHANNEL)) == 1)
    [announcement] = slack.messages(CHANNEL)
    assert "serve 경로 점검" in announcement["text"]

    message, reply = served.driver.say(CHANNEL, "U0LEMUN", "p95 확인", thread_ts=announcement["ts"])
    assert reply.status_code == 200
    engine = create_engine(database_url)
    try:
        def reply_stored() -> bool:
            with engine.connect() as connection:
                return bool(connection.scalar(
                    select(func.count()).select_from(TimelineEvent).where(TimelineEvent.slack_ts == message["ts"])
                ))

        wait_for(reply_stored)
        with engine.connect() as connection:
            public_id = connection.scalar(select(Incident.public_id))
            revision = connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()
    assert public_id and public_id in ack["text"]
    from storage.migrate import MIGRATIONS_DIR  # the head the process must have migrated to
    heads = sorted(p.name.split("_", 1)[0] for p in (MIGRATIONS_DIR / "versions").glob("[0-9]*.py"))
    assert revision == heads[-1]

    served.stop()
    assert served.process.returncode == 0
    records = json_lines(served.stderr)
    messages = [r["message"] for r in records]
    assert any("Listening at" in m for m in messages)  # gunicorn's own lines come through as JSON too
    assert any(m.startswith("Running upgrade") for m in messages)  # migrations ran at start
    assert any(r.get("incident_id") == public_id for r in records)  # incident IDs are fields
    for leaked in (slack.bot_token, served.env["SLACK_SIGNING_SECRET"], *signatures):
        assert leaked not in served.stderr
    assert "xoxb-" not in served.stderr
    assert served.stdout == ""


def test_healthz_turns_503_when_the_database_is_locked_and_recovers(serve: Any, database_url: str,
                                                                    tmp_path: Path) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the locked-database case is SQLite's; PostgreSQL outages are in test_faults.py")
    import sqlite3

    served = serve()
    assert served.wait_ready().status_code == 200
    locker = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        down = requests.get(f"{served.url}/healthz", timeout=30)
        assert time.monotonic() - started < 5  # answers, slowly, instead of hanging the health check
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable" and down.json()["database"].startswith("down")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200
    served.stop()
    json_lines(served.stderr)


def test_serve_refuses_an_oversized_chunked_body(serve: Any) -> None:
    served = serve()
    served.wait_ready()

    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b"x" * 65536  # 1.06 MiB in all, with no Content-Length

    response = requests.post(f"{served.url}/slack/events", data=chunks(), timeout=30,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    served.stop()
    json_lines(served.stderr)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLACK_SIGNING_SECRET": None}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": None}, "SLACK_BOT_TOKEN"),
        ({"RCA_REMINDER_AFTER": "soon"}, "RCA_REMINDER_AFTER"),
        ({"INCIDENT_LOCALE": "fr"}, "INCIDENT_LOCALE"),
        ({"INCIDENT_TIMEZONE": "Mars/Olympus"}, "INCIDENT_TIMEZONE"),
        ({"DATABASE_URL": "mysql://db/incidents"}, "DATABASE_URL"),
    ],
)
def test_bad_setting_stops_serve_with_one_line_naming_it(slack: SlackSandbox, tmp_path: Path,
                                                         env: dict[str, str | None], variable: str) -> None:
    full: dict[str, str | None] = {
        "SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "s3cret-value",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}", "PORT": str(free_port()), **env,
    }
    result = subprocess.run([str(BIN), "serve"], env={**base_env(), **{k: v for k, v in full.items() if v}},
                            cwd="/", capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "s3cret-value" not in result.stderr and slack.bot_token not in result.stderr
    assert not (tmp_path / "bot.db").exists()  # it stopped before touching anything


def test_serve_runs_from_python_app_py_too(slack: SlackSandbox, tmp_path: Path) -> None:
    """`python app.py ...` is the contract's other spelling; a bad setting behaves the same there."""
    result = subprocess.run([sys.executable, str(REPO / "app.py"), "serve"],
                            env={**base_env(), "SLACK_BOT_TOKEN": slack.bot_token}, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "SLACK_SIGNING_SECRET" in result.stderr


def test_serve_runs_its_worker_on_uvloop_and_still_answers(serve: Any) -> None:
    """The worker's event loop is libuv's (app.py cmd_serve), not a silent fallback to asyncio's when the package
    is missing: seen from outside, in the shared objects the worker process has mapped."""
    served = serve()
    assert served.wait_ready().status_code == 200
    master = served.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children  # one worker (cmd_serve)
    mapped = Path(f"/proc/{children[0]}/maps").read_text()
    assert "/uvloop/loop." in mapped
    assert served.driver.command("/incident", "help").status_code == 200
    served.stop()
    assert "uvloop not available" not in served.stderr
