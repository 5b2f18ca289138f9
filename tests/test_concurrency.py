"""Several instances of the bot on one database (Cloud Run scales out), hit at the same time.

Runs on SQLite and, with TEST_DATABASE_URL set, on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Incident, TimelineEvent

CHANNEL = "C0INCIDENTS"
# One user opening dozens of incidents at once is what the rate limits refuse; here it is load, so they are off.
NO_OPEN_LIMITS = {"RATE_LIMIT_OPEN_PER_USER": "0", "RATE_LIMIT_OPEN_PER_CHANNEL": "0"}
ENV = {"INCIDENT_TIMEZONE": "Asia/Seoul", "SCHEDULER_ENABLED": "false", **NO_OPEN_LIMITS}
DAY_1 = datetime(2025, 10, 22, 5, 0, tzinfo=UTC)  # 14:00 KST
DAY_2 = datetime(2025, 10, 23, 5, 0, tzinfo=UTC)


@pytest.fixture
def instances(slack: SlackSandbox, database_url: str) -> Iterator[Callable[..., LocalBot]]:
    """Starts bot instances that share one database and one Slack workspace."""
    with ExitStack() as stack:

        def start(clock: ManualClock | None = None) -> LocalBot:
            return stack.enter_context(LocalBot(ENV, clock=clock, slack=slack, database_url=database_url))

        yield start


def run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Runs every job at once, released by a barrier so they really overlap."""
    barrier = threading.Barrier(len(jobs))

    def released(job: Callable[[], Any]) -> Any:
        barrier.wait(timeout=30)
        return job()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(released, jobs))


def all_incidents(bot: LocalBot) -> list[Incident]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)).all())


@pytest.mark.serial  # dozens of writers at once, against the SQLite busy timeout
def test_forty_concurrent_opens_on_three_instances_and_two_days(instances: Callable[..., LocalBot],
                                                                 slack: SlackSandbox) -> None:
    # Two instances on day 1 race for the same sequence; a third opens on day 2 at the same time.
    a, c = instances(ManualClock(DAY_1)), instances(ManualClock(DAY_1))
    b = instances(ManualClock(DAY_2))
    for bot in (a, b, c):  # connections and caches warm, as on a running instance
        assert bot.driver.command("/incident", "help").status_code == 200
    plan = [(a, n) for n in range(14)] + [(c, n) for n in range(14, 27)] + [(b, n) for n in range(27, 40)]
    responses = run_together([lambda bot=bot, n=n: bot.driver.command("/incident", f"open 동시 {n}")
                              for bot, n in plan])
    assert [r.status_code for r in responses] == [200] * 40
    for bot in (a, b, c):
        bot.settle()

    incidents = all_incidents(a)
    assert len(incidents) == 40
    by_day = Counter(i.day for i in incidents)
    assert by_day == {"20251022": 27, "20251023": 13}
    for day, count in by_day.items():
        seqs = sorted(i.seq for i in incidents if i.day == day)
        assert seqs == list(range(1, count + 1))  # distinct and consecutive: no gaps, no repeats
    for incident in incidents:
        assert incident.public_id == f"INCIDENT-{incident.day}-{incident.seq:03d}"
    # Each ack named the ID it got, and each incident was announced exactly once.
    acked = sorted(r.json()["text"].split("`")[1] for r in responses)
    assert acked == sorted(i.public_id for i in incidents)
    posted = [m for m in slack.messages(CHANNEL) if "[INCIDENT]" in m.get("text", "")]
    assert len(posted) == 40
    assert sorted(i.announcement_ts for i in incidents) == sorted(m["ts"] for m in posted)


@pytest.mark.serial  # dozens of writers at once, against the SQLite busy timeout
def test_concurrent_replies_and_their_retries_give_one_event_each(instances: Callable[..., LocalBot],
                                                                   slack: SlackSandbox) -> None:
    a, b = instances(), instances()
    a.driver.command("/incident", "open 동시 답글")
    a.settle()
    [incident] = all_incidents(a)
    thread_ts = incident.announcement_ts
    assert thread_ts

    users = ["U0SENA", "U0LEMUN", "U0GITCO"]
    messages = [slack.add_message(CHANNEL, users[n % 3], f"답글 {n}", thread_ts=thread_ts) for n in range(120)]

    def deliveries(n: int, message: dict[str, Any]) -> list[Callable[[], int]]:
        event = {"type": "message", "channel": CHANNEL, "user": message["user"], "text": message["text"],
                 "ts": message["ts"], "thread_ts": thread_ts, "event_ts": message["ts"], "channel_type": "channel"}
        event_id = f"Ev0CONC{n:04d}"
        # The original to one instance; Slack's retries (it thought the first was lost) to either.
        return [
            lambda: a.driver.event(event, event_id=event_id).status_code,
            lambda: b.driver.event(event, event_id=event_id, retry_num=1).status_code,
            lambda: (a if n % 2 else b).driver.event(event, event_id=event_id, retry_num=2).status_code,
        ]

    jobs = [job for n, message in enumerate(messages) for job in deliveries(n, message)]
    random.Random(7).shuffle(jobs)  # a retry may even arrive before its original
    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda job: job(), jobs))
    assert statuses == [200] * len(jobs)
    a.settle()
    b.settle()

    with a.ctx.db.session() as session:
        rows = session.execute(
            select(TimelineEvent.slack_ts, TimelineEvent.author_id, TimelineEvent.text)
            .where(TimelineEvent.kind == "message")
        ).all()
    assert len(rows) == 120
    assert sorted(r.slack_ts for r in rows) == sorted(m["ts"] for m in messages)
    expected = {m["ts"]: (m["user"], m["text"]) for m in messages}
    assert {r.slack_ts: (r.author_id, r.text) for r in rows} == expected


@pytest.mark.slow
def test_concurrent_opens_on_separate_server_processes(slack: SlackSandbox, database_url: str) -> None:
    """Cloud Run instances are separate processes: three `incident-bot serve` on one PostgreSQL. Two of them
    count days in UTC+14 and one in UTC−11, so their local dates always differ and two days' sequences race."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several server processes share a database only on PostgreSQL")
    from tests.test_serve import Served

    secret = "concurrency-secret"
    env = {"SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": secret,
           "DATABASE_URL": database_url, "SCHEDULER_ENABLED": "false", "LOG_LEVEL": "WARNING", **NO_OPEN_LIMITS}
    zones = ["Pacific/Kiritimati", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
    servers = [Served({**env, "INCIDENT_TIMEZONE": zone}, slack, secret) for zone in zones]
    try:
        for served in servers:
            assert served.wait_ready().status_code == 200
            assert served.driver.command("/incident", "help").status_code == 200
        responses = run_together([lambda s=servers[n % 3], n=n: s.driver.command("/incident", f"open 프로세스 {n}")
                                  for n in range(30)])
        assert [r.status_code for r in responses] == [200] * 30
        acked = sorted(r.json()["text"].split("`")[1] for r in responses)
        from sqlalchemy import create_engine

        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(Incident.public_id, Incident.day, Incident.seq)).all()
        finally:
            engine.dispose()
    finally:
        for served in servers:
            served.stop()
    assert sorted(r.public_id for r in rows) == acked and len(rows) == 30
    by_day = Counter(r.day for r in rows)
    assert len(by_day) == 2 and sum(by_day.values()) == 30
    for day, count in by_day.items():
        assert sorted(r.seq for r in rows if r.day == day) == list(range(1, count + 1))
