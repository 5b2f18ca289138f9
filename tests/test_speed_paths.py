"""The hot paths, statement by statement (issue "Speed"): a reply in a known thread is one INSERT, Slack's retry of
it the same INSERT absorbed by its conflict clause, and `/incident open` acks after a fixed list of statements.
And the reply path's cache of homes (bot/homes.py): what it keeps, what it forgets, and why a second replica
never loses a reply because of it. On SQLite and, with TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import delete, event, select

from bot import homes
from bot.homes import HomeCache, TtlLru
from handlers.guards import DatabaseHealth
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Incident, TimelineEvent
from tests.helpers import count, events, open_incident

CHANNEL = "C0INCIDENTS"


@dataclass
class Statements:
    """What the app sent to the database: (thread, SQL, whether the connection was in autocommit)."""

    seen: list[tuple[str, str, bool]] = field(default_factory=list)

    def on_requests(self) -> list[str]:
        """The statements of the requests themselves (what the ack waits for), not of the work after them."""
        return [sql for thread, sql, _ in self.seen if not thread.startswith("incident-bot-work")]

    def in_background(self) -> list[str]:
        return [sql for thread, sql, _ in self.seen if thread.startswith("incident-bot-work")]


def shape(sql: str) -> str:
    """`INSERT timeline_events`, `SELECT rate_hits`, `BEGIN`: enough to tell the statements apart."""
    words = sql.replace("\n", " ").split()
    verb = words[0].upper()
    if verb == "BEGIN":
        return "BEGIN"
    table = words[words.index("INTO") + 1] if "INTO" in words else words[words.index("FROM") + 1] \
        if "FROM" in words else words[1]
    return f"{verb} {table}"


@contextmanager
def statements(bot: LocalBot) -> Iterator[Statements]:
    """Counts statements from here on; waits for the app's work after the acks before it stops counting."""
    counted = Statements()

    def before(connection: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        autocommit = bool(getattr(connection.connection.dbapi_connection, "autocommit", False))  # psycopg's
        counted.seen.append((threading.current_thread().name, sql, autocommit))

    engine = bot.ctx.db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield counted
        bot.settle()
    finally:
        event.remove(engine, "before_cursor_execute", before)


@pytest.fixture
def quiet_health(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write probe proves the database for 10 minutes: no probe falls inside a count."""
    monkeypatch.setattr(DatabaseHealth, "FRESH", 600.0)


def reply(bot: LocalBot, thread_ts: str, text: str, user: str = "U0LEMUN") -> dict[str, Any]:
    assert bot.driver is not None
    message, response = bot.driver.say(CHANNEL, user, text, thread_ts=thread_ts)
    assert response.status_code == 200, response.text
    return message


def redeliver(bot: LocalBot, message: dict[str, Any], thread_ts: str, event_id: str) -> None:
    """Slack's retry of a message event: the same event_id, X-Slack-Retry-Num set."""
    assert bot.driver is not None
    event_body = {"type": "message", "channel": CHANNEL, "user": message["user"], "text": message["text"],
                  "ts": message["ts"], "thread_ts": thread_ts, "event_ts": message["ts"], "channel_type": "channel"}
    response = bot.driver.event(event_body, retry_num=1, event_id=event_id)
    assert response.status_code == 200, response.text


# ---- the reply path -------------------------------------------------------------------------------------------


def test_a_reply_in_a_known_thread_is_one_insert_and_its_retry_the_same(bot: LocalBot, quiet_health: None) -> None:
    _, thread_ts = open_incident(bot)
    reply(bot, thread_ts, "첫 답글: 이 스레드를 찾고, 이름을 알아 둡니다")  # finds the home, learns Lemun's name
    bot.settle()
    with statements(bot) as counted:
        message = reply(bot, thread_ts, "두 번째 답글")
    assert [shape(sql) for sql in counted.on_requests()] == ["INSERT timeline_events"]
    assert counted.in_background() == []  # the name was known: no lookup, no UPDATE after the ack

    with statements(bot) as counted:
        redeliver(bot, message, thread_ts, event_id="Ev0SPEEDRETRY1")
    assert [shape(sql) for sql in counted.on_requests()] == ["INSERT timeline_events"]
    assert counted.in_background() == []
    assert [(e.text, e.author_name) for e in events(bot, "message")] == [
        ("첫 답글: 이 스레드를 찾고, 이름을 알아 둡니다", "Lemun"), ("두 번째 답글", "Lemun")]
    assert len(bot.slack.calls("users.info")) == 1


def test_a_reply_in_an_unknown_thread_is_one_read_and_no_write(bot: LocalBot, quiet_health: None) -> None:
    open_incident(bot)
    assert bot.driver is not None
    top = bot.slack.add_message(CHANNEL, "U0SENA", "사건과 무관한 글")
    reply(bot, thread_ts=top["ts"], text="무관한 스레드의 답글")  # warms the connection and the health probe
    with statements(bot) as counted:
        reply(bot, thread_ts=top["ts"], text="또 하나")
    assert [shape(sql) for sql in counted.on_requests() if shape(sql) != "BEGIN"] == ["SELECT incidents"]
    assert count(bot, TimelineEvent) == 1  # the incident's own "opened" event, nothing else


# ---- the open path --------------------------------------------------------------------------------------------


OPEN_ACK = {
    # The replay guard and the rate limits in one transaction, then the open in another.
    "sqlite": ["BEGIN", "INSERT seen_requests", "SELECT rate_hits", "INSERT rate_hits", "INSERT rate_hits",
               "BEGIN", "INSERT incident_sequences", "INSERT incidents", "INSERT reminders", "INSERT reminders",
               "INSERT reminders", "INSERT reminders", "INSERT timeline_events"],
    # PostgreSQL's BEGIN is no statement of its own here; the per-budget advisory locks are one SELECT.
    "postgresql": ["INSERT seen_requests", "SELECT pg_advisory_xact_lock(%(pg_advisory_xact_lock_2)s::BIGINT)",
                   "SELECT rate_hits", "INSERT rate_hits", "INSERT incident_sequences", "INSERT incidents",
                   "INSERT reminders", "INSERT timeline_events"],
}


def test_the_open_ack_waits_for_a_fixed_list_of_statements(bot: LocalBot, quiet_health: None) -> None:
    open_incident(bot, "워밍업 sev:low")  # connections, caches, the day's sequence row
    assert bot.driver is not None
    with statements(bot) as counted:
        response = bot.driver.command("/incident", "open 결제 API 오류 sev:high")
        assert response.status_code == 200 and "INCIDENT-" in response.json()["text"]
    dialect = bot.ctx.db.dialect
    assert [shape(sql) for sql in counted.on_requests()] == OPEN_ACK[dialect], counted.on_requests()
    if dialect == "postgresql":
        # The day's number is taken in a statement committed by itself: the row is locked for that statement only.
        [sequence] = [autocommit for _, sql, autocommit in counted.seen if "incident_sequences" in sql]
        assert sequence is True
        assert all(not autocommit for _, sql, autocommit in counted.seen if "INSERT INTO incidents" in sql)


# ---- the cache of homes, and replicas -------------------------------------------------------------------------


@pytest.fixture
def replicas(slack: SlackSandbox, database_url: str) -> Iterator[Callable[[], LocalBot]]:
    """Bot instances on one database and one workspace, as Cloud Run scales out."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(LocalBot({"SCHEDULER_ENABLED": "false"}, slack=slack,
                                                   database_url=database_url))


def test_a_thread_replied_in_before_its_incident_exists_is_found_once_it_does(
        replicas: Callable[[], LocalBot]) -> None:
    """No "no incident here" is remembered: the first reply after another replica announces is never lost."""
    a, b = replicas(), replicas()
    _, thread_ts = open_incident(a)
    with a.ctx.db.session() as session:  # as in the moment before the announcement's ts was on record
        incident = session.scalars(select(Incident)).one()
        incident.announcement_ts = None
    early = reply(b, thread_ts, "공지가 기록되기 전의 답글")
    assert count(b, TimelineEvent) == 1 and len(homes.cache(b.ctx)) == 0
    with a.ctx.db.session() as session:
        session.scalars(select(Incident)).one().announcement_ts = thread_ts
    reply(b, thread_ts, "공지가 기록된 뒤의 첫 답글")
    assert [e.text for e in events(a, "message")] == ["공지가 기록된 뒤의 첫 답글"]
    assert len(homes.cache(b.ctx)) == 1
    redeliver(b, early, thread_ts, event_id="Ev0SPEEDEARLY1")  # Slack's retry of the early one now finds it too
    assert len(events(a, "message")) == 2


def test_an_incident_deleted_elsewhere_is_forgotten_not_written_to(replicas: Callable[[], LocalBot]) -> None:
    """A remembered home whose incident another replica deleted fails the insert's foreign key; the reply path
    forgets it and reads again, and the event is acked without being stored anywhere."""
    a, b = replicas(), replicas()
    _, thread_ts = open_incident(a)
    reply(b, thread_ts, "기억되는 답글")
    assert len(homes.cache(b.ctx)) == 1
    with a.ctx.db.session() as session:
        session.execute(delete(Incident))
    reply(b, thread_ts, "삭제된 사건의 스레드")  # 200, not 503: Slack must not deliver it again forever
    assert len(homes.cache(b.ctx)) == 0
    assert count(a, TimelineEvent) == 0


def test_closing_or_reopening_an_incident_forgets_its_home_on_this_replica(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    reply(bot, thread_ts, "기억되는 답글")
    cache = homes.cache(bot.ctx)
    assert len(cache) == 1
    assert bot.driver is not None
    answer = bot.driver.command("/incident", "status resolved").json()["text"]
    bot.settle()
    assert len(cache) == 0, answer
    reply(bot, thread_ts, "해결 뒤의 답글")  # still its home: read again, and remembered again
    assert len(cache) == 1
    answer = bot.driver.command("/incident", "status investigating").json()["text"]
    bot.settle()
    assert len(cache) == 0, answer
    assert [e.text for e in events(bot, "message")] == ["기억되는 답글", "해결 뒤의 답글"]


def test_opening_an_incident_forgets_the_homes_of_its_channel(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    reply(bot, thread_ts, "기억되는 답글")
    assert len(homes.cache(bot.ctx)) == 1
    open_incident(bot, "같은 채널의 두 번째 사건")
    assert len(homes.cache(bot.ctx)) == 0


# ---- the cache itself -----------------------------------------------------------------------------------------


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    lru: TtlLru[str, int] = TtlLru(max_entries=2, ttl=60)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)
    assert len(lru) == 2


def test_a_cached_home_lives_at_most_its_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = HomeCache(ttl=30)
    cache.put((CHANNEL, "1.0"), 7, cache.generation)
    now[0] += 29.9
    assert cache.get((CHANNEL, "1.0")) == 7
    now[0] += 0.2
    assert cache.get((CHANNEL, "1.0")) is None


def test_a_read_that_raced_with_a_forget_is_not_remembered() -> None:
    cache = HomeCache()
    begun = cache.generation  # a reply's read begins …
    cache.forget(incident_id=7)  # … the incident closes meanwhile …
    cache.put((CHANNEL, "1.0"), 7, begun)  # … and what the read saw is not kept
    assert cache.get((CHANNEL, "1.0")) is None
    cache.put((CHANNEL, "1.0"), 7, cache.generation)
    assert cache.get((CHANNEL, "1.0")) == 7
    cache.forget(channel=CHANNEL)
    assert cache.get((CHANNEL, "1.0")) is None
