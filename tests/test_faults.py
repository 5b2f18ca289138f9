"""Faults: Slack answering 429, 500 or too slowly, and the database locked or gone.

What must hold every time: what was stored stays stored, the person is told what failed, a later retry
completes the post, and nothing reaches Slack twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.engine import make_url

from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Base, Incident, Report
from tests.helpers import events, open_incident

CHANNEL = "C0INCIDENTS"
SLOW = 2.0  # seconds the sandbox sits on a response in the timeout tests
CLIENT_TIMEOUT = 1  # the WebClient's timeout there (10 s in production), so the tests stay quick


def short_timeout(bot: LocalBot) -> None:
    """Test-only: the bot's WebClient (shared by Bolt and the messenger) gives up after CLIENT_TIMEOUT."""
    bot.ctx.messenger.client.timeout = CLIENT_TIMEOUT


def announcements(slack: SlackSandbox) -> list[dict[str, Any]]:
    return [m for m in slack.messages(CHANNEL) if "[INCIDENT]" in m.get("text", "")]


def completed_files(slack: SlackSandbox) -> list[dict[str, Any]]:
    return [f for f in slack.files() if f["completed"]]


def the_incident(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident)).one()


def expire_announce_lease(bot: LocalBot) -> None:
    """The lease keeps a second poster off for a while; let it run out, as time would."""
    with bot.ctx.db.session() as session:
        session.execute(update(Incident).values(announce_claimed_until=None))


def told(slack: SlackSandbox) -> list[str]:
    """What the person who typed the command was told afterwards through the response_url."""
    return [r.get("text", "") for r in slack.responses()]


# ---- Slack faults while opening -------------------------------------------------------------------------------


def test_open_rides_out_a_rate_limit(bot: LocalBot) -> None:
    bot.slack.rate_limit("chat.postMessage", retry_after=1, times=1)
    response = bot.driver.command("/incident", "open 레이트 리밋 중 공지")
    assert response.status_code == 200 and "INCIDENT-" in response.json()["text"]
    bot.settle()
    attempts = bot.slack.calls("chat.postMessage")
    assert [a.status for a in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 0.9  # Retry-After was honoured
    [posted] = announcements(bot.slack)
    assert the_incident(bot).announcement_ts == posted["ts"]
    assert told(bot.slack) == []  # nothing failed, so nothing to report


def test_open_rides_out_two_server_errors(bot: LocalBot) -> None:
    bot.slack.fail("chat.postMessage", status=500, times=2)
    bot.driver.command("/incident", "open 500 두 번")
    bot.settle()
    assert [a.status for a in bot.slack.calls("chat.postMessage")] == [500, 500, 200]
    assert len(announcements(bot.slack)) == 1 and told(bot.slack) == []


def test_open_rate_limited_past_the_retries_is_reported_and_swept_once(bot: LocalBot) -> None:
    bot.slack.rate_limit("chat.postMessage", retry_after=1, times=3)
    response = bot.driver.command("/incident", "open 계속 레이트 리밋")
    assert response.status_code == 200
    bot.settle()
    assert announcements(bot.slack) == []
    incident = the_incident(bot)
    assert incident.announcement_ts is None and "ratelimited" in (incident.announcement_error or "")
    [message] = told(bot.slack)
    assert incident.public_id in message and "ratelimited" in message and "공지 게시에 실패" in message
    assert [e.data.get("action") for e in events(bot, "system")] == ["opened"]  # the incident is whole

    bot.runtime.sweep()  # inside the lease: leaves it alone
    assert announcements(bot.slack) == []
    expire_announce_lease(bot)
    bot.runtime.sweep()
    bot.runtime.sweep()
    [posted] = announcements(bot.slack)
    assert the_incident(bot).announcement_ts == posted["ts"]


@pytest.mark.serial  # times the ack
def test_open_whose_post_timed_out_but_landed_is_not_posted_again(bot: LocalBot) -> None:
    short_timeout(bot)
    bot.slack.slow_once("chat.postMessage", SLOW)  # Slack posts it, but answers after the client gave up
    started = time.monotonic()
    response = bot.driver.command("/incident", "open 느린 공지")
    assert response.status_code == 200 and time.monotonic() - started < 1.0  # the ack didn't wait for Slack
    bot.settle()
    [posted] = announcements(bot.slack)
    incident = the_incident(bot)
    assert incident.announcement_ts == posted["ts"]  # found it instead of assuming it failed
    assert told(bot.slack) == []
    expire_announce_lease(bot)
    bot.runtime.sweep()
    assert len(announcements(bot.slack)) == 1


def test_open_whose_connection_dropped_is_reported_and_swept_once(bot: LocalBot) -> None:
    bot.slack.disconnect("chat.postMessage", times=3)  # dropped before Slack did anything, past the retries
    bot.driver.command("/incident", "open 연결 끊김")
    bot.settle()
    assert announcements(bot.slack) == []
    [message] = told(bot.slack)
    assert "connection_error" in message
    expire_announce_lease(bot)
    bot.runtime.sweep()
    bot.runtime.sweep()
    assert len(announcements(bot.slack)) == 1


# ---- Slack faults while logging replies ---------------------------------------------------------------------


def say_in_thread(bot: LocalBot, thread_ts: str, user: str, text: str) -> dict[str, Any]:
    message, response = bot.driver.say(CHANNEL, user, text, thread_ts=thread_ts)
    assert response.status_code == 200
    return message


def redeliver(bot: LocalBot, message: dict[str, Any], thread_ts: str, event_id: str, retry: int) -> None:
    event = {"type": "message", "channel": CHANNEL, "user": message["user"], "text": message["text"],
             "ts": message["ts"], "thread_ts": thread_ts, "channel_type": "channel"}
    assert bot.driver.event(event, retry_num=retry, event_id=event_id).status_code == 200


def test_reply_is_kept_when_the_name_lookup_fails(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "이름 조회 실패")
    bot.slack.fail("users.info", status=500, times=3)  # the first lookup fails past the client's retries
    message = say_in_thread(bot, thread_ts, "U0LEMUN", "p95 850ms 확인")
    bot.settle()
    [event] = events(bot, "message")
    assert event.text == "p95 850ms 확인" and event.author_id == "U0LEMUN" and event.slack_ts == message["ts"]
    assert event.author_name is None  # unknown rather than lost; the report falls back to the ID
    redeliver(bot, message, thread_ts, "Ev0NAMEFAIL", 1)
    bot.settle()
    assert len(events(bot, "message")) == 1

    # Slack is back: the failure was not remembered as "no name".
    say_in_thread(bot, thread_ts, "U0LEMUN", "롤백 진행")
    bot.settle()
    names = {e.text: e.author_name for e in events(bot, "message")}
    assert names["롤백 진행"] == "Lemun"


def test_reply_name_lookup_rides_out_a_rate_limit(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "이름 조회 레이트 리밋")
    bot.slack.rate_limit("users.info", retry_after=1, times=1)
    say_in_thread(bot, thread_ts, "U0GITCO", "캐너리 트래픽 0%")
    bot.settle()
    [event] = events(bot, "message")
    assert event.author_name == "Gitco"
    assert [c.status for c in bot.slack.calls("users.info")] == [429, 200]


@pytest.mark.serial  # times the ack
def test_reply_is_acked_at_once_and_kept_when_the_name_lookup_times_out(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "이름 조회 타임아웃")
    short_timeout(bot)
    bot.slack.slow_once("users.info", SLOW)
    started = time.monotonic()
    message = say_in_thread(bot, thread_ts, "U0SENA", "에러율 2.3%")
    assert time.monotonic() - started < 0.5  # events are acked before the listener calls Slack
    bot.settle()
    [event] = events(bot, "message")
    assert event.slack_ts == message["ts"] and event.text == "에러율 2.3%"
    redeliver(bot, message, thread_ts, "Ev0NAMESLOW", 1)
    redeliver(bot, message, thread_ts, "Ev0NAMESLOW", 2)
    bot.settle()
    assert len(events(bot, "message")) == 1


# ---- Slack faults while uploading the report ----------------------------------------------------------------


def reports(bot: LocalBot) -> list[Report]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(Report).order_by(Report.id)).all())


def file_messages(slack: SlackSandbox, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in slack.thread(CHANNEL, thread_ts) if m.get("files")]


def test_report_upload_failing_is_reported_and_a_rerun_posts_it_once(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot, "보고서 업로드 실패")
    bot.slack.fail("files.getUploadURLExternal", status=500, times=3)
    response = bot.driver.command("/postmortem", "report")
    assert response.status_code == 200 and response.json()["response_type"] == "ephemeral"
    bot.settle()
    assert completed_files(bot.slack) == [] and file_messages(bot.slack, thread_ts) == []
    [message] = told(bot.slack)
    assert f"{public_id}-postmortem.md" in message and "/postmortem report" in message
    [failed] = reports(bot)
    assert failed.posted_at is None and failed.error  # the request is on record, with why it failed

    bot.driver.command("/postmortem", "report")
    bot.settle()
    [uploaded] = completed_files(bot.slack)
    assert uploaded["filename"] == f"{public_id}-postmortem.md" and uploaded["thread_ts"] == thread_ts
    assert len(file_messages(bot.slack, thread_ts)) == 1
    assert [r.posted_at is not None for r in reports(bot)] == [False, True]


def test_report_upload_rides_out_a_rate_limited_completion(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "완료 단계 레이트 리밋")
    bot.slack.rate_limit("files.completeUploadExternal", retry_after=1, times=1)
    bot.driver.command("/postmortem", "report")
    bot.settle()
    assert len(completed_files(bot.slack)) == 1 and len(file_messages(bot.slack, thread_ts)) == 1
    assert told(bot.slack) == []
    assert [r.posted_at is not None for r in reports(bot)] == [True]


def test_report_upload_whose_completion_timed_out_but_landed_counts_as_posted(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "완료 단계 타임아웃")
    short_timeout(bot)
    bot.slack.slow_once("files.completeUploadExternal", SLOW)
    bot.driver.command("/postmortem", "report")
    bot.settle()
    [uploaded] = completed_files(bot.slack)
    assert len(file_messages(bot.slack, thread_ts)) == 1
    assert told(bot.slack) == []  # not told it failed when it didn't
    [report] = reports(bot)
    assert report.posted_at is not None and report.file_id == uploaded["id"]


def test_report_bytes_upload_failing_is_reported_and_a_rerun_posts_it_once(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot, "파일 전송 실패")
    bot.slack.fail("upload", status=500, times=1)  # slack_sdk doesn't retry the upload itself
    bot.driver.command("/postmortem", "report")
    bot.settle()
    assert completed_files(bot.slack) == []
    [message] = told(bot.slack)
    assert f"{public_id}-postmortem.md" in message
    bot.driver.command("/postmortem", "report")
    bot.settle()
    assert len(completed_files(bot.slack)) == 1 and len(file_messages(bot.slack, thread_ts)) == 1


# ---- the database locked or gone ----------------------------------------------------------------------------


def row_counts(url: str) -> dict[str, int]:
    """Counted on a connection of our own, beside the bot's."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {t.name: int(connection.scalar(select(func.count()).select_from(t)) or 0)
                    for t in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def healthz(bot: LocalBot) -> requests.Response:
    return requests.get(f"{bot.base_url}/healthz", timeout=30)


@contextlib.contextmanager
def sqlite_locked(url: str) -> Iterator[None]:
    """Another process's write transaction holding the whole database."""
    connection = sqlite3.connect(make_url(url).database or "", isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def check_database_outage(bot: LocalBot, outage: Any, counts_url: str) -> None:
    """While the database is out: a command is told so in time, /healthz is 503, an event is refused for
    Slack to redeliver, and nothing is written. Afterwards everything works and nothing was half-done."""
    public_id, thread_ts = open_incident(bot, "기존 사건")
    before = row_counts(counts_url)
    posts_before = len(bot.slack.calls("chat.postMessage"))
    with outage():
        started = time.monotonic()
        response = bot.driver.command("/incident", "open DB 장애 중 새 사건")
        assert time.monotonic() - started < 3.0  # inside Slack's ack window
        assert response.status_code == 200
        answer = response.json()
        assert answer["response_type"] == "ephemeral" and "데이터베이스에 연결할 수 없어" in answer["text"]
        down = healthz(bot)
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable" and "down" in down.json()["database"]
        message, reply = bot.driver.say(CHANNEL, "U0LEMUN", "DB 장애 중 답글", thread_ts=thread_ts)
        assert reply.status_code == 503  # Slack delivers it again later instead of it being lost
        bot.settle()
    assert row_counts(counts_url) == before  # nothing half-written
    assert len(bot.slack.calls("chat.postMessage")) == posts_before
    assert healthz(bot).json() == {"status": "ok", "database": "ok"}

    # Slack's redelivery of the refused event is stored, once.
    redeliver(bot, message, thread_ts, "Ev0DBDOWN", 1)
    redeliver(bot, message, thread_ts, "Ev0DBDOWN", 2)
    bot.settle()
    assert [e.text for e in events(bot, "message")] == ["DB 장애 중 답글"]
    # The failed open used no sequence number.
    response = bot.driver.command("/incident", "open DB 복구 후 새 사건")
    assert public_id.endswith("-001") and f"{public_id[:-4]}-002" in response.json()["text"]
    bot.settle()
    assert len(announcements(bot.slack)) == 2


@pytest.mark.serial  # times the answer against the busy timeout
def test_sqlite_locked_past_the_busy_timeout(slack: SlackSandbox, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    with LocalBot(slack=slack, database_url=url) as bot:
        check_database_outage(bot, lambda: sqlite_locked(url), url)


@pytest.mark.serial  # a 0.5 s lock against the 2 s busy timeout
def test_sqlite_locked_briefly_just_waits(slack: SlackSandbox, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    with LocalBot(slack=slack, database_url=url) as bot:
        holder = sqlite3.connect(str(tmp_path / "bot.db"), isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        releaser = threading.Timer(0.5, holder.execute, args=("ROLLBACK",))
        releaser.start()
        response = bot.driver.command("/incident", "open 잠깐 잠긴 DB")
        releaser.join()
        holder.close()
        assert "INCIDENT-" in response.json()["text"] and "-001" in response.json()["text"]
        bot.settle()
        assert len(announcements(bot.slack)) == 1


class TcpProxy:
    """A loopback TCP relay in front of PostgreSQL that can be cut (server gone) and restored, or made to
    hang (accepts connections and never answers, like a database proxy whose instance is unreachable)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.hanging = False
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.hanging:
                with self._lock:
                    self._conns.append(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone doesn't
        self._listener.close()
        self._drop_connections()

    def _drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    @contextlib.contextmanager
    def hang(self) -> Iterator[None]:
        self.hanging = True
        self._drop_connections()
        try:
            yield
        finally:
            self.hanging = False
            self._drop_connections()


@pytest.mark.serial  # times the answer
@pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="needs PostgreSQL (TEST_DATABASE_URL)")
@pytest.mark.parametrize("mode", ["refused", "hanging"])
def test_postgresql_unreachable(slack: SlackSandbox, database_url: str, mode: str) -> None:
    direct = make_url(database_url)
    proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
    proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with LocalBot(slack=slack, database_url=proxied) as bot:
            check_database_outage(bot, proxy.outage if mode == "refused" else proxy.hang, database_url)
    finally:
        proxy.cut()


def test_a_database_failure_seen_anywhere_refuses_the_next_event_at_once(slack: SlackSandbox, tmp_path: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Events don't each pay for a ping: a good one is trusted for a while, but not after a failure elsewhere."""
    from handlers.guards import DatabaseHealth

    monkeypatch.setattr(DatabaseHealth, "FRESH", 600.0)
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    with LocalBot(slack=slack, database_url=url) as bot:
        _, thread_ts = open_incident(bot, "건강 상태 캐시")
        say_in_thread(bot, thread_ts, "U0SENA", "첫 답글")  # pings once; trusted from now on
        bot.settle()
        with sqlite_locked(url):
            answer = bot.driver.command("/incident", "open 잠긴 동안").json()["text"]
            assert "데이터베이스에 연결할 수 없어" in answer  # this failure is what the guard hears about
            _, refused = bot.driver.say(CHANNEL, "U0LEMUN", "잠긴 동안 답글", thread_ts=thread_ts)
            assert refused.status_code == 503
        bot.settle()
        assert [e.text for e in events(bot, "message")] == ["첫 답글"]
