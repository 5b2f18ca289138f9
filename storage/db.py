"""Engine and session factory. SQLite gets WAL, foreign keys and write-locking transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite writer waits for the lock. Under Slack's 3-second ack window, so a command facing a
# database that stays locked still answers "database unavailable" in time instead of never answering.
SQLITE_BUSY_TIMEOUT = 2.0
READ_ONLY_OPTION = "incident_bot_read_only"
# A commit that crosses SQLite's default 1,000-page threshold checkpoints the WAL itself: that stalled one
# `/incident open` in a hundred by 15 ms. The runtime checkpoints in the background every second instead;
# this higher threshold only bounds the WAL when nothing does (a CLI command, a test).
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
PG_CONNECT_TIMEOUT = 2


def make_engine(url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout, "check_same_thread": False}, **kwargs)
        _configure_sqlite(engine, busy_timeout)
        return engine
    # A database proxy that accepts and never answers would otherwise hang a request past Slack's ack window
    # (libpq waits forever by default); 2 s is libpq's smallest connect_timeout. A URL may set its own.
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": PG_CONNECT_TIMEOUT}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args,
                         **kwargs)


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself (below); pysqlite's implicit BEGIN would be DEFERRED.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    gate = _writer_gate(engine.url.database or "")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
        # fails at once with "database is locked" under concurrency instead of waiting its turn.
        # Read-only work (a long report render) stays DEFERRED so it never blocks writers under WAL.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        if read_only:
            connection.exec_driver_sql("BEGIN")
            return
        if not gate.acquire(timeout=busy_timeout):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        connection.info[_GATE_HELD] = gate
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _open_gate(connection)
            raise

    event.listen(engine, "commit", _open_gate)
    event.listen(engine, "rollback", _open_gate)


_GATE_HELD = "incident_bot_writer_gate"
_gates: dict[str, threading.Lock] = {}
_gates_lock = threading.Lock()


def _writer_gate(database: str) -> threading.Lock:
    """One per SQLite file in this process. Writers wait their turn here instead of in SQLite's busy handler,
    which polls with growing sleeps: under a burst of writers an unlucky one starved past the busy timeout and
    its event was lost. Other processes are still kept out by SQLite's own lock."""
    with _gates_lock:
        return _gates.setdefault(database, threading.Lock())


def _open_gate(connection: Any) -> None:
    gate = connection.info.pop(_GATE_HELD, None)
    if gate is not None:
        gate.release()


class Database:
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back whole when it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work: on SQLite it takes no write lock, so long reads never stall writers."""
        with self._read_sessions() as session, session.begin():
            yield session

    def checkpoint(self) -> None:
        """Copies committed SQLite WAL pages into the database file, off the request path (PASSIVE: it never
        waits for or blocks a writer). Nothing to do on PostgreSQL."""
        if self.dialect != "sqlite":
            return
        # The raw connection is in autocommit mode: a checkpoint cannot run inside a transaction.
        connection = self.engine.raw_connection()
        try:
            connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
