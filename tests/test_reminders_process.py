"""Reminders across real `incident-bot serve` processes: killed before the due time, and two at once.

Each process is gunicorn (master + worker) started in its own session, so SIGKILL to its process group is a
real crash: no shutdown hook runs. The Slack sandbox runs in the test process; the database is a SQLite file,
or a fresh PostgreSQL database when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from sandbox.driver import SlackDriver
from sandbox.harness import SIGNING_SECRET
from sandbox.slack import SlackSandbox
from storage.db import Database
from storage.models import Incident, Reminder

pytestmark = pytest.mark.slow

CHANNEL = "C0INCIDENTS"
LATE = "⏰ *늦게 도착한 알림*"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Serve:
    """One `incident-bot serve` process (gunicorn master and its worker) on a free port."""

    def __init__(self, slack: SlackSandbox, database_url: str, workdir: Path, name: str, **env: str) -> None:
        self.port = _free_port()
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.workdir = workdir
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "INCIDENT_", "SCHEDULER_"))},
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.driver = SlackDriver(f"http://127.0.0.1:{self.port}/slack/events", SIGNING_SECRET, slack,
                                  team_id=slack.team_id)

    def start(self) -> Serve:
        return self.launch().wait_healthy()

    def launch(self) -> Serve:
        log = self.log_path.open("ab")
        # Its own session: the process group holds the master and the worker, and nothing else.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=self.workdir, env=self.env, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        return self

    def wait_healthy(self) -> Serve:
        wait_until(self._healthy, 30, f"{self.name} to answer /healthz\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}\n{self.log()}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """A crash: SIGKILL to master and worker at once, no shutdown hook."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """A graceful stop, as Cloud Run does it: SIGTERM to the master."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stopped_cleanly(self) -> bool:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=15) == 0
        except subprocess.TimeoutExpired:
            self.kill()
            return False


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def rca_rows(db: Database) -> list[Reminder]:
    with db.session() as session:
        return list(session.scalars(select(Reminder).where(Reminder.kind == "rca_kickoff")
                                    .order_by(Reminder.id)).all())


def open_incident(slack: SlackSandbox, db: Database, serve: Serve, title: str) -> str:
    """Opens an incident through `serve`; returns its thread ts once the announcement is posted."""
    response = serve.driver.command("/incident", f"open {title}")
    assert response.status_code == 200, response.text

    def posted() -> str | None:
        with db.session() as session:
            return session.scalar(select(Incident.announcement_ts).where(Incident.title == title))

    wait_until(posted, 15, f"the announcement of {title!r}\n{serve.log()}")
    thread_ts = posted()
    assert thread_ts is not None
    return thread_ts


def test_killed_before_the_due_time_and_restarted_after_delivers_once(
    slack: SlackSandbox, database_url: str, db: Database, tmp_path: Path, serves: list[Serve]
) -> None:
    first = Serve(slack, database_url, tmp_path, "first", RCA_REMINDER_AFTER="3s")
    serves.append(first)
    first.start()
    thread_ts = open_incident(slack, db, first, "재시작 테스트")
    [rca] = rca_rows(db)
    assert rca.sent_at is None
    first.kill()  # before the 3 s are up
    wait_until(lambda: time.time() > rca.due_at.timestamp() + 1, 10, "the due time to pass")
    assert slack.thread(CHANNEL, thread_ts) == []  # nobody was up to post it

    # The outage lasted long enough to count as late: stand the due time 10 minutes back, as if the process
    # had stayed down that long, instead of sleeping through it.
    with db.session() as session:
        session.execute(update(Reminder).where(Reminder.id == rca.id)
                        .values(due_at=rca.due_at - timedelta(minutes=10)))

    second = Serve(slack, database_url, tmp_path, "second", RCA_REMINDER_AFTER="3s")
    serves.append(second)
    second.start()
    wait_until(lambda: rca_rows(db)[0].sent_at is not None, 20, f"the late reminder\n{second.log()}")
    time.sleep(1)  # the start sweep and the runtime's sweep thread both had their chance by now
    texts = [m["text"] for m in slack.thread(CHANNEL, thread_ts)]
    assert len(texts) == 1, texts
    assert texts[0].startswith(LATE) and "근본 원인 분석 (RCA)" in texts[0]
    [rca] = rca_rows(db)
    assert rca.late is True and rca.attempts == 0 and rca.message_ts == slack.thread(CHANNEL, thread_ts)[0]["ts"]
    second.terminate()
    assert second.stopped_cleanly(), second.log()


def test_two_serve_processes_on_one_database_deliver_each_reminder_once(
    slack: SlackSandbox, database_url: str, db: Database, tmp_path: Path, serves: list[Serve]
) -> None:
    def start_pair(round_: int) -> list[Serve]:
        pair = [Serve(slack, database_url, tmp_path, f"{name}{round_}", RCA_REMINDER_AFTER="3s") for name in "ab"]
        serves.extend(pair)
        for serve in pair:
            serve.launch()  # together: both run migrations and rebuild their timers at the same moment
        return [serve.wait_healthy() for serve in pair]

    def all_sent() -> bool:
        return all(r.sent_at is not None for r in rca_rows(db))

    # Both running: each opens an incident; each process's timers are its own, the reminders table is shared.
    pair = start_pair(1)
    threads = [open_incident(slack, db, pair[i], f"복제본 테스트 {i}") for i in range(2)]
    wait_until(all_sent, 20, f"two reminders\n{pair[0].log()}\n{pair[1].log()}")

    # Both crash before the next two are due, and come back together after: both start sweeps go for the same
    # rows at once (the timers rebuilt from the reminders table hold only what still lies ahead).
    threads += [open_incident(slack, db, pair[i], f"복제본 테스트 {i + 2}") for i in range(2)]
    for serve in pair:
        serve.kill()
    assert [r.sent_at is None for r in rca_rows(db)] == [False, False, True, True]
    due = max(r.due_at for r in rca_rows(db))
    wait_until(lambda: time.time() > due.timestamp() + 0.5, 10, "the due times to pass")
    pair = start_pair(2)
    wait_until(all_sent, 20, f"four reminders\n{pair[0].log()}\n{pair[1].log()}")
    time.sleep(1)  # let the losing side finish whatever it attempted

    for thread_ts in threads:
        texts = [m["text"] for m in slack.thread(CHANNEL, thread_ts)]
        assert len(texts) == 1, texts
        assert "근본 원인 분석 (RCA)" in texts[0]
    assert len(rca_rows(db)) == 4 and all(r.attempts == 0 for r in rca_rows(db))
    for serve in pair:
        serve.terminate()
    for serve in pair:
        assert serve.stopped_cleanly(), serve.log()
