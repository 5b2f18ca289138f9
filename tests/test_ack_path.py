"""What stands between Slack's request and its ack: background work waits until the response is written, and SQLite
checkpoints happen off the request path (the scheduler's timers never touch the database: tests/test_scheduler.py)."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from bot import jobs
from bot.jobs import BackgroundJobs
from sandbox.driver import SlackDriver
from sandbox.harness import SIGNING_SECRET, LocalBot
from storage.db import Database
from storage.models import Incident, TimelineEvent
from tests.helpers import count, events, open_incident


class _Capturing(SlackDriver):
    """Signs requests like Slack but hands them back instead of sending them, to call the WSGI app directly."""

    def post_raw(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        self.captured = (body, headers)
        return requests.Response()


def _wsgi_call(bot: LocalBot, build: Callable[[SlackDriver], Any]) -> tuple[list[str], bytes, Any]:
    """Calls the app's WSGI entry as a server would, but stops before close(): the response is not yet written."""
    driver = _Capturing(bot.url, SIGNING_SECRET, bot.slack, team_id=bot.slack.team_id)
    build(driver)
    body, headers = driver.captured
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/slack/events", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": headers["Content-Type"], "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        if name.lower() != "content-type":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    statuses: list[str] = []
    result = bot.runtime.wsgi(environ, lambda status, _headers, _exc=None: statuses.append(status))
    return statuses, b"".join(result), result


def _eventually(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_announcement_is_posted_only_after_the_ack_is_written(bot: LocalBot) -> None:
    statuses, payload, result = _wsgi_call(bot, lambda d: d.command("/incident", "open 결제 API 오류 sev:high"))
    assert statuses == ["200 OK"] and "INCIDENT-" in payload.decode()
    assert count(bot, Incident) == 1  # stored before the ack
    time.sleep(0.5)
    assert bot.slack.calls("chat.postMessage") == []  # held: the server has not written the response yet
    result.close()
    _eventually(lambda: bot.slack.calls("chat.postMessage"))


def test_a_thread_reply_is_stored_before_its_ack_and_named_after_it(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    before = count(bot, TimelineEvent)
    statuses, _, result = _wsgi_call(bot, lambda d: d.say("C0INCIDENTS", "U0LEMUN", "롤백 시작합니다",
                                                          thread_ts=thread_ts))
    assert statuses == ["200 OK"]
    assert count(bot, TimelineEvent) == before + 1  # committed before the 200 existed
    time.sleep(0.5)
    assert bot.slack.calls("users.info") == []  # the name lookup is held until the response is written
    result.close()
    _eventually(lambda: [e.author_name for e in events(bot, "message")] == ["Lemun"])


def test_held_jobs_start_anyway_when_the_response_is_never_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "HOLD_AT_MOST_SECONDS", 0.3)
    background = BackgroundJobs(workers=2)
    never = threading.Event()
    started: list[float] = []
    begin = time.monotonic()
    with background.held_until(never):
        held = background.submit(lambda: started.append(time.monotonic() - begin))
    free = background.submit(lambda: "not held")  # submitted outside the block: runs at once
    assert free.result(timeout=1) == "not held" and not started
    held.result(timeout=2)
    assert started[0] >= 0.3
    background.shutdown()


def test_sqlite_commits_leave_checkpointing_to_the_background(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'bot.db'}")
    try:
        with db.session() as session:
            session.execute(text("CREATE TABLE filler (body TEXT)"))
        main_file = tmp_path / "bot.db"
        size_before = os.path.getsize(main_file)
        for _ in range(5):  # about 1,300 pages: past SQLite's default 1,000-page automatic checkpoint
            with db.session() as session:
                session.execute(text("INSERT INTO filler VALUES (:body)"), [{"body": "x" * 4000}] * 250)
        assert os.path.getsize(main_file) == size_before  # no commit checkpointed on its own
        db.checkpoint()
        assert os.path.getsize(main_file) > size_before + 4_000_000
    finally:
        db.dispose()
