"""Issue 11 item 2: database faults are visible, and the app recovers by itself once the database does.

A write that fails gets a non-2xx so that Slack delivers the event again, /healthz answers 503 saying what is
down, and when the database is back a redelivery is stored within seconds, without restarting the app:
a SQLite file made read-only, deleted, or replaced under the running process, and a PostgreSQL server stopped
and started again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from sandbox.driver import SlackDriver
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage import migrate
from storage.db import Database
from storage.models import Incident, TimelineEvent
from tests.helpers import open_incident
from tests.test_serve import Served as ServeProcess

CHANNEL = "C0INCIDENTS"
RECOVERY_SECONDS = 5.0  # "within seconds": the deadline for everything to work again once the database does

sqlite_only = pytest.mark.skipif(bool(os.environ.get("TEST_DATABASE_URL")), reason="SQLite file faults")
postgres_only = pytest.mark.skipif(
    not (os.environ.get("TEST_DATABASE_URL") and os.environ.get("PG_TEST_DIR")),
    reason="needs the throwaway PostgreSQL of scripts/pg (TEST_DATABASE_URL and PG_TEST_DIR)",
)


@dataclass
class RunningApp:
    """What the checks need of a running app: the served LocalBot, or a real `incident-bot serve` process."""

    driver: SlackDriver
    base_url: str
    settle: Callable[[], None] = lambda: None

    @classmethod
    def of(cls, bot: LocalBot) -> RunningApp:
        assert bot.driver is not None
        return cls(bot.driver, bot.base_url, bot.settle)

    def healthz(self) -> requests.Response:
        return requests.get(f"{self.base_url}/healthz", timeout=30)


def wait_for(predicate: Callable[[], bool], timeout: float = RECOVERY_SECONDS) -> float:
    """Seconds it took for `predicate` to hold; fails past `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s")


def stored_replies(url: str) -> list[str]:
    """What the database really holds, read on a connection of our own beside the bot's."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(
                select(TimelineEvent.text).where(TimelineEvent.kind == "message").order_by(TimelineEvent.id)))
    finally:
        engine.dispose()


def reply_event(message: dict[str, Any], thread_ts: str) -> dict[str, Any]:
    return {"type": "message", "channel": CHANNEL, "user": message["user"], "text": message["text"],
            "ts": message["ts"], "thread_ts": thread_ts, "channel_type": "channel"}


def announcement_ts(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(Incident.announcement_ts).order_by(Incident.id).limit(1))
    finally:
        engine.dispose()


def incident_titles(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(select(Incident.title).order_by(Incident.id)))
    finally:
        engine.dispose()


def open_concurrently(app: RunningApp, count: int, title: str) -> list[requests.Response]:
    """People keep typing during an outage: concurrent commands make the pool open connections then."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda n: app.driver.command("/incident", f"open {title} {n}", user=f"U0TYPER{n}"),
                             range(count)))


def check_outage_then_recovery(app: RunningApp, url: str, thread_ts: str, outage: Callable[[], Any],
                               restore: Callable[[], None], down_because: str) -> None:
    """During the outage a reply is refused (Slack will deliver it again), a command is told nothing was saved,
    and /healthz says why; after `restore`, /healthz is 200, Slack's redelivery is stored, and so is everything
    after it, within RECOVERY_SECONDS and without a restart."""
    replies_before, incidents_before = stored_replies(url), incident_titles(url)
    outage()
    message, refused = app.driver.say(CHANNEL, "U0LEMUN", "DB 장애 중 답글", thread_ts=thread_ts)
    assert refused.status_code >= 500, refused.text
    down = app.healthz()
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable" and down.json()["database"].startswith("down: ")
    assert down_because in down.json()["database"]
    for answer in open_concurrently(app, 6, "장애 중 사건"):
        assert answer.status_code == 200 and "데이터베이스에 연결할 수 없어" in answer.json()["text"]
    again, refused_again = app.driver.say(CHANNEL, "U0SENA", "장애 중 두 번째 답글", thread_ts=thread_ts)
    assert refused_again.status_code >= 500  # not a one-off: refused for as long as the database is out
    app.settle()

    restore()
    # Slack redelivers with a growing backoff; here every 50 ms, and the first 2xx must have stored it.
    retry = iter(range(1, 10_000))
    wait_for(lambda: app.driver.event(reply_event(message, thread_ts), retry_num=next(retry),
                                      event_id="Ev0DBFAULT1").status_code == 200)
    assert app.driver.event(reply_event(again, thread_ts), retry_num=1, event_id="Ev0DBFAULT2").status_code == 200
    # No connection opened during the outage is left to fail later: as many writes as the pool can hold.
    for answer in open_concurrently(app, 6, "복구 후 사건"):
        assert answer.status_code == 200 and "INCIDENT-" in answer.json()["text"], answer.text
    later = [f"복구 후 답글 {n}" for n in range(12)]
    for line in later:
        assert app.driver.say(CHANNEL, "U0GITCO", line, thread_ts=thread_ts)[1].status_code == 200
    app.settle()
    assert app.healthz().json() == {"status": "ok", "database": "ok"}
    expected = [*replies_before, "DB 장애 중 답글", "장애 중 두 번째 답글", *later]
    wait_for(lambda: stored_replies(url) == expected)
    assert stored_replies(url) == expected
    assert sorted(incident_titles(url)) == sorted([*incidents_before, *(f"복구 후 사건 {n}" for n in range(6))])


# ---- SQLite ---------------------------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def first_reply(bot: LocalBot) -> str:
    """An incident with one stored reply, so the pool holds connections opened before the fault."""
    _, thread_ts = open_incident(bot, "DB 파일 장애")
    _, response = bot.driver.say(CHANNEL, "U0GITCO", "장애 전 답글", thread_ts=thread_ts)
    assert response.status_code == 200
    bot.settle()
    return thread_ts


@contextlib.contextmanager
def read_only_files(path: Path, *, wal: bool = True) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """Makes the database (and its WAL) read-only the way an operator would: `chattr +i` as root (root ignores
    file modes), file modes otherwise. The -shm index is left alone: SQLite maps it into memory, and an
    immutable mapped file kills the process with SIGBUS on the next write, which no application can handle."""
    files = [path, path.with_name(path.name + "-wal")] if wal else [path]
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: no way to make a file read-only for root")

        def lock() -> None:
            for file in files:
                done = subprocess.run(["chattr", "+i", str(file)], capture_output=True, text=True)
                if done.returncode != 0:
                    pytest.skip(f"chattr +i {file}: {done.stderr.strip()}")

        def unlock() -> None:
            for file in files:
                subprocess.run(["chattr", "-i", str(file)], capture_output=True)
    else:
        def lock() -> None:
            for file in files:
                file.chmod(0o444)

        def unlock() -> None:
            for file in files:
                with contextlib.suppress(FileNotFoundError):
                    file.chmod(0o644)
    try:
        yield lock, unlock
    finally:
        unlock()  # never leave an immutable file behind for tmp_path's cleanup


@sqlite_only
@pytest.mark.parametrize("wal", [True, False], ids=["database-and-wal", "database-only"])
def test_sqlite_made_read_only_refuses_replies_and_recovers_without_restart(bot: LocalBot, database_url: str,
                                                                           wal: bool) -> None:
    """Database only: connections opened before would go on writing into the WAL, which then can never be
    checkpointed; the app treats it as read-only, like the connections it opens now."""
    thread_ts = first_reply(bot)
    with read_only_files(sqlite_path(database_url), wal=wal) as (lock, unlock):
        check_outage_then_recovery(RunningApp.of(bot), database_url, thread_ts, lock, unlock, "read-only")


def backup(source: Path, target: Path) -> None:
    """A consistent copy of the live database (SQLite's online backup), as an operator would keep one."""
    with contextlib.closing(sqlite3.connect(source)) as live, contextlib.closing(sqlite3.connect(target)) as copy:
        live.backup(copy)


def remove_database(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(name).unlink()


@sqlite_only
def test_sqlite_connections_opened_while_read_only_are_replaced_once_it_is_writable(bot: LocalBot,
                                                                                    database_url: str) -> None:
    """SQLite opens a file it cannot write read-only, and such a connection stays read-only for good: this was
    "nothing stored for 17 s and more, until a restart". Here the pool holds no connection from before the
    outage (as after a restart or a recycled pool), so every connection it has was opened read-only."""
    thread_ts = first_reply(bot)
    with read_only_files(sqlite_path(database_url)) as (lock, unlock):
        lock()
        bot.ctx.db.engine.dispose()
        message, refused = bot.driver.say(CHANNEL, "U0LEMUN", "읽기 전용 중 답글", thread_ts=thread_ts)
        assert refused.status_code >= 500
        assert RunningApp.of(bot).healthz().status_code == 503  # reads work: these connections opened read-only
        with bot.ctx.db.read() as session:
            assert session.scalar(select(func.count()).select_from(TimelineEvent)) > 0
        unlock()
    # At once: Slack's first redelivery after the file is writable again is stored.
    assert bot.driver.event(reply_event(message, thread_ts), retry_num=1, event_id="Ev0READONLY").status_code == 200
    for n in range(12):  # more writes than the pool has connections
        assert bot.driver.say(CHANNEL, "U0GITCO", f"복구 후 {n}", thread_ts=thread_ts)[1].status_code == 200
    bot.settle()
    assert stored_replies(database_url) == ["장애 전 답글", "읽기 전용 중 답글", *(f"복구 후 {n}" for n in range(12))]


@sqlite_only
def test_sqlite_file_deleted_refuses_replies_until_it_is_restored(bot: LocalBot, database_url: str,
                                                                  tmp_path: Path) -> None:
    """Deleted: writes must not go on into the unlinked file, where they would be lost, and no new empty
    database appears in its place. Recovery is the operator putting a database back; the app then uses it
    on its own."""
    thread_ts = first_reply(bot)
    path = sqlite_path(database_url)
    saved = tmp_path / "backup.db"
    backup(path, saved)

    def restore() -> None:
        assert not path.exists(), "the app created a new database in place of the deleted one"
        os.replace(saved, path)

    check_outage_then_recovery(RunningApp.of(bot), database_url, thread_ts, lambda: remove_database(path), restore,
                               "database file is missing")


@sqlite_only
def test_sqlite_file_replaced_under_the_app_gets_the_writes(bot: LocalBot, database_url: str,
                                                             tmp_path: Path) -> None:
    """A file moved into place (a restore) while the app runs: the next write lands in it, not in the old
    inode that no one can read any more."""
    thread_ts = first_reply(bot)
    path = sqlite_path(database_url)
    saved = tmp_path / "backup.db"
    backup(path, saved)
    os.replace(saved, path)
    for name in (path.name + "-wal", path.name + "-shm"):
        path.with_name(name).unlink(missing_ok=True)  # they belonged to the replaced file
    _, response = bot.driver.say(CHANNEL, "U0LEMUN", "교체 후 답글", thread_ts=thread_ts)
    assert response.status_code == 200
    bot.settle()
    assert stored_replies(database_url) == ["장애 전 답글", "교체 후 답글"]
    assert RunningApp.of(bot).healthz().json() == {"status": "ok", "database": "ok"}


@sqlite_only
def test_sqlite_file_replaced_by_an_empty_database_is_down_not_migrated(bot: LocalBot, database_url: str) -> None:
    """A new empty file has no tables. Migrations run only at start: the app says the database is down rather
    than carry on with an empty history, until an operator restores the data or restarts it on purpose."""
    thread_ts = first_reply(bot)
    path = sqlite_path(database_url)
    remove_database(path)
    sqlite3.connect(path).close()
    _, refused = bot.driver.say(CHANNEL, "U0LEMUN", "빈 DB에 답글", thread_ts=thread_ts)
    assert refused.status_code >= 500
    down = RunningApp.of(bot).healthz()
    assert down.status_code == 503 and "no such table" in down.json()["database"]


@sqlite_only
def test_a_transaction_under_way_when_the_file_is_deleted_does_not_commit_into_it(tmp_path: Path) -> None:
    """The window a checkout cannot see: a write that began before the file was deleted fails at commit instead
    of "succeeding" into the unlinked file."""
    database = Database(f"sqlite:///{tmp_path / 'bot.db'}")
    migrate.upgrade(database.engine)
    try:
        with (pytest.raises(OperationalError, match="deleted or replaced during the transaction"),
              database.session() as session):
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
            remove_database(tmp_path / "bot.db")
        assert not (tmp_path / "bot.db").exists()
    finally:
        database.dispose()


@sqlite_only
def test_a_connection_invalidated_mid_transaction_releases_the_writer_gate(tmp_path: Path) -> None:
    """An I/O error on the file counts as a lost connection, and SQLAlchemy then invalidates it in the middle
    of its transaction. The writer gate it held must still open, or every later write waits and fails."""
    database = Database(f"sqlite:///{tmp_path / 'bot.db'}")
    migrate.upgrade(database.engine)

    @event.listens_for(database.engine, "handle_error")
    def as_if_the_file_failed(context: Any) -> None:
        context.is_disconnect = True

    try:
        with pytest.raises(OperationalError), database.session() as session:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
            session.execute(text("SELECT * FROM no_such_table"))
        started = time.monotonic()
        with database.session() as session:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
        assert time.monotonic() - started < 1.0  # did not wait out the busy timeout on a gate left shut
    finally:
        database.dispose()


@pytest.mark.slow
@sqlite_only
@pytest.mark.parametrize("fault", ["read-only", "deleted"])
def test_served_sqlite_fault_is_refused_and_recovered_without_restart(slack: SlackSandbox, database_url: str,
                                                                      tmp_path: Path, fault: str) -> None:
    """The issue's own run: `incident-bot serve` (gunicorn, migrations in the master) and its files made
    immutable or deleted mid-run."""
    secret = "signing-" + secrets.token_hex(16)
    served = ServeProcess({"SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token,
                           "SLACK_SIGNING_SECRET": secret, "DATABASE_URL": database_url}, slack, secret)
    try:
        assert served.wait_ready().status_code == 200
        app = RunningApp(served.driver, served.url)
        assert app.driver.command("/incident", "open serve DB 장애").status_code == 200
        wait_for(lambda: len(slack.messages(CHANNEL)) == 1)
        thread_ts = slack.messages(CHANNEL)[0]["ts"]
        # Slack has the announcement a moment before the app has recorded its ts; a reply in between would be
        # for a thread the app does not know yet (people reply seconds later, a test at once).
        wait_for(lambda: announcement_ts(database_url) == thread_ts)
        assert app.driver.say(CHANNEL, "U0GITCO", "장애 전 답글", thread_ts=thread_ts)[1].status_code == 200
        wait_for(lambda: stored_replies(database_url) == ["장애 전 답글"])
        path = sqlite_path(database_url)
        if fault == "read-only":
            with read_only_files(path) as (lock, unlock):
                check_outage_then_recovery(app, database_url, thread_ts, lock, unlock, "read-only")
        else:
            saved = tmp_path / "backup.db"
            backup(path, saved)
            check_outage_then_recovery(app, database_url, thread_ts, lambda: remove_database(path),
                                       lambda: os.replace(saved, path), "database file is missing")
    finally:
        served.stop()
        print(served.stderr[-20_000:], file=sys.stderr)  # the server's own log, shown by pytest on a failure
    assert served.process.returncode == 0, served.stderr


# ---- PostgreSQL -----------------------------------------------------------------------------------------------


def pg_ctl(*args: str) -> None:
    """Controls the throwaway server of scripts/pg, which runs as `postgres` when the tests run as root."""
    command = [f"{os.environ.get('PG_BIN', '/usr/lib/postgresql/15/bin')}/pg_ctl",
               "-D", f"{os.environ['PG_TEST_DIR']}/data", *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, cwd="/", capture_output=True, timeout=90)


@postgres_only
def test_postgresql_stopped_and_started_again(bot: LocalBot, database_url: str) -> None:
    port = make_url(database_url).port
    log = f"{os.environ['PG_TEST_DIR']}/server.log"
    thread_ts = first_reply(bot)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        pg_ctl("-m", "fast", "-w", "stop")
        stopped = True

    def start() -> None:
        nonlocal stopped
        pg_ctl("-l", log, "-o", f"-p {port}", "-w", "-t", "60", "start")
        stopped = False

    try:
        check_outage_then_recovery(RunningApp.of(bot), database_url, thread_ts, stop, start, "down: OperationalError")
    finally:
        if stopped:
            start()  # the rest of the suite shares this server


def set_read_only(url: str, read_only: bool) -> None:
    """The whole server refuses writes, as a primary demoted to a standby does: SELECT 1 still works."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if read_only else 'off'}"))
            connection.execute(text("SELECT pg_reload_conf()"))

        def applied() -> bool:
            with engine.connect() as connection:
                return connection.scalar(text("SHOW default_transaction_read_only")) == ("on" if read_only else "off")

        wait_for(applied)
    finally:
        engine.dispose()


@postgres_only
def test_postgresql_gone_read_only_is_down_until_it_takes_writes_again(bot: LocalBot, database_url: str) -> None:
    thread_ts = first_reply(bot)
    try:
        check_outage_then_recovery(RunningApp.of(bot), database_url, thread_ts,
                                   lambda: set_read_only(database_url, True),
                                   lambda: set_read_only(database_url, False), "down: InternalError")
    finally:
        set_read_only(database_url, False)  # the rest of the suite shares this server
