"""APScheduler through its public API only, as an in-memory timer: the `reminders` table is the only persistent
truth, the timers are rebuilt from it at start and follow it as reminders are created, moved and cancelled, and no
table exists outside Alembic's."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Engine, inspect, select, text

from bot import reminders
from bot.clock import ManualClock
from bot.scheduler import ReminderScheduler
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage import migrate
from storage.db import Database, make_engine
from storage.models import Base, Reminder
from tests.helpers import open_incident

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "C0INCIDENTS"
OLD_JOB_TABLES = {"scheduler_jobs", "apscheduler_jobs"}
# Private APScheduler access: the old code overrode these two, and any `scheduler._x` or `job._x` reaches inside.
PRIVATE_ACCESS = re.compile(r"\b_get_jobs\b|\b_process_jobs\b|\bsched\w*\._\w|\bjob\._\w")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def pending(bot: LocalBot) -> dict[int, datetime]:
    """What the table says is still to be posted: reminder id → due time."""
    with bot.ctx.db.read() as session:
        rows = session.execute(
            select(Reminder.id, Reminder.due_at).where(Reminder.sent_at.is_(None), Reminder.cancelled_at.is_(None))
        ).all()
    return {reminder_id: due_at for reminder_id, due_at in rows}


def _rows(bot: LocalBot, kind: str) -> list[Reminder]:
    with bot.ctx.db.read() as session:
        return list(session.scalars(select(Reminder).where(Reminder.kind == kind).order_by(Reminder.id)).all())


def timers(bot: LocalBot) -> dict[int, datetime]:
    sched = reminders.scheduler(bot.ctx)
    assert sched is not None, "the scheduler should be running"
    return sched.reminder_jobs()


def user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


@pytest.fixture
def ahead_bot(slack: SlackSandbox, database_url: str) -> Iterator[LocalBot]:
    """Scheduler on, with a clock set a day ahead of real time: every reminder's timer lies in the real future, so
    none fires during the test and the jobs can be compared with the table."""
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    bot = LocalBot({"SCHEDULER_ENABLED": "true"}, slack=slack, database_url=database_url,
                   clock=ManualClock(start)).start()
    try:
        yield bot
    finally:
        bot.stop()


def test_no_private_apscheduler_attribute_is_used() -> None:
    sources = [ROOT / "app.py", *sorted((ROOT / "bot").rglob("*.py")), *sorted((ROOT / "handlers").rglob("*.py"))]
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in sources
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if PRIVATE_ACCESS.search(line) or "apscheduler.jobstores.sqlalchemy" in line]
    assert found == []


def test_after_a_restart_the_timers_are_rebuilt_from_the_table_and_deliver_once(
    slack: SlackSandbox, database_url: str
) -> None:
    # Real time: the RCA kickoff falls due seconds after the second process starts, long before its next sweep
    # (15 s), so only a rebuilt timer can post it on time.
    env = {"SCHEDULER_ENABLED": "true", "RCA_REMINDER_AFTER": "8s"}
    first = LocalBot(env, slack=slack, database_url=database_url).start()
    try:
        _, thread_ts = open_incident(first)
    finally:
        first.stop()
    second = LocalBot(env, slack=slack, database_url=database_url).start()
    try:
        ahead = pending(second)
        near = {reminder_id: due_at for reminder_id, due_at in ahead.items()
                if due_at <= datetime.now(UTC) + reminders.TIMER_HORIZON}
        assert len(ahead) == 4 and len(near) == 1  # the RCA kickoff; the meeting's are hours away
        assert timers(second) == near
        wait_until(lambda: _rows(second, "rca_kickoff")[0].sent_at is not None, 12, "the RCA kickoff")
        [rca] = _rows(second, "rca_kickoff")
        assert rca.sent_at is not None and rca.sent_at - rca.due_at < timedelta(seconds=3) and not rca.late
        wait_until(lambda: rca.id not in timers(second), 2, "the run timer to be dropped")
        time.sleep(0.5)  # anything that might post a second time has had its chance
        [message] = slack.thread(CHANNEL, thread_ts)
        assert "근본 원인 분석 (RCA)" in message["text"]
        # Nothing but Alembic's tables, though two schedulers ran on this database.
        assert user_tables(second.ctx.db.engine) == set(Base.metadata.tables)
    finally:
        second.stop()


def sweep_pass(bot: LocalBot) -> None:
    """What the scheduler's sweep does every SWEEP_SECONDS besides delivering: timers for what comes due soon."""
    sched = reminders.scheduler(bot.ctx)
    assert sched is not None
    reminders.rebuild_jobs(bot.ctx, sched)


def test_a_timer_is_set_once_its_reminder_comes_within_the_horizon(ahead_bot: LocalBot) -> None:
    clock = ahead_bot.ctx.clock
    assert isinstance(clock, ManualClock)
    open_incident(ahead_bot)
    assert len(pending(ahead_bot)) == 4 and timers(ahead_bot) == {}  # half an hour away and more: no timer yet
    [rca] = _rows(ahead_bot, "rca_kickoff")
    clock.set(rca.due_at - reminders.TIMER_HORIZON - timedelta(seconds=1))
    sweep_pass(ahead_bot)
    assert timers(ahead_bot) == {}
    clock.advance(timedelta(seconds=2))
    sweep_pass(ahead_bot)
    assert timers(ahead_bot) == {rca.id: rca.due_at}


def test_a_moved_meeting_moves_its_timers(ahead_bot: LocalBot) -> None:
    clock = ahead_bot.ctx.clock
    assert isinstance(clock, ManualClock)
    open_incident(ahead_bot)
    [rca] = _rows(ahead_bot, "rca_kickoff")
    clock.set(rca.due_at - timedelta(seconds=15))
    sweep_pass(ahead_bot)
    assert timers(ahead_bot) == {rca.id: rca.due_at}
    # Moved to within the horizon: the meeting's start gets its timer at once (the pre-meeting reminder's time has
    # passed, so it is skipped; the report nudge is an hour away).
    soon = rca.due_at
    response = ahead_bot.driver.command("/incident", f"meeting {soon:%H:%M}")
    assert response.status_code == 200, response.text
    ahead_bot.settle()
    [start] = _rows(ahead_bot, "meeting_start")
    assert start.due_at == soon
    assert timers(ahead_bot) == {rca.id: rca.due_at, start.id: soon}
    # Moved hours away: its timer goes, the RCA kickoff's stays.
    later = soon.replace(hour=13, minute=30)
    response = ahead_bot.driver.command("/incident", f"meeting {later:%H:%M}")
    assert response.status_code == 200, response.text
    ahead_bot.settle()
    assert timers(ahead_bot) == {rca.id: rca.due_at}
    sched = reminders.scheduler(ahead_bot.ctx)
    assert sched is not None and sched.next_wake(start.id) is None


def test_a_cancelled_incident_leaves_no_timer(ahead_bot: LocalBot) -> None:
    clock = ahead_bot.ctx.clock
    assert isinstance(clock, ManualClock)
    open_incident(ahead_bot)
    [rca] = _rows(ahead_bot, "rca_kickoff")
    clock.set(rca.due_at - timedelta(seconds=15))
    sweep_pass(ahead_bot)
    assert list(timers(ahead_bot)) == [rca.id]
    response = ahead_bot.driver.command("/incident", "status cancelled")
    assert response.status_code == 200, response.text
    ahead_bot.settle()
    assert pending(ahead_bot) == {}
    assert timers(ahead_bot) == {}


@pytest.mark.serial  # times the timer
def test_timers_never_wait_for_a_database_writer(database_url: str) -> None:
    """Moved from test_ack_path (the scheduler's polling reads took no write lock): now it reads nothing at all."""
    db = Database(database_url)
    with db.session() as session:
        session.execute(text("CREATE TABLE probe (x INTEGER)"))
    woken = threading.Event()
    sched = ReminderScheduler(wake=lambda _id: woken.set(), sweep=lambda: None, sweep_seconds=3600)
    writing, done = threading.Event(), threading.Event()

    def long_write() -> None:
        with db.session() as session:
            session.execute(text("INSERT INTO probe VALUES (1)"))
            writing.set()
            done.wait(10)

    writer = threading.Thread(target=long_write)
    writer.start()
    try:
        assert writing.wait(5)
        started = time.monotonic()
        sched.start()
        sched.schedule(1, datetime.now(UTC))
        # On SQLite a database job store waited out the 2 s busy timeout here; the timer fires while the writer waits.
        assert woken.wait(1.0) and time.monotonic() - started < 1.0
    finally:
        done.set()
        writer.join()
        sched.shutdown()
        db.dispose()


def test_migrations_drop_the_old_job_table(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine, "0003")
        # What revision 0003's scheduler left behind: APScheduler's job table, created outside Alembic, with a job.
        old = SQLAlchemyJobStore(engine=engine, tablename="scheduler_jobs").jobs_t
        old.create(engine)
        with engine.begin() as connection:
            connection.execute(old.insert().values(id="reminder:1", next_run_time=1.0, job_state=b"x"))
        assert "scheduler_jobs" in user_tables(engine)
        migrate.upgrade(engine)
        assert user_tables(engine) & OLD_JOB_TABLES == set()
        assert user_tables(engine) == set(Base.metadata.tables)
        migrate.downgrade(engine, "0003")  # recreates nothing
        assert user_tables(engine) & OLD_JOB_TABLES == set()
    finally:
        engine.dispose()
