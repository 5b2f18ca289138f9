"""Engine and session factory. SQLite gets WAL, foreign keys and write-locking transactions, and notices its
file being deleted, replaced or made read-only under the running process."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite writer waits for the lock. Under Slack's 3-second ack window, so a command facing a
# database that stays locked still answers "database unavailable" in time instead of never answering.
SQLITE_BUSY_TIMEOUT = 2.0
READ_ONLY_OPTION = "incident_bot_read_only"
SINGLE_STATEMENT_OPTION = "incident_bot_single_statement"
LONE_READ_OPTION = "incident_bot_lone_read"
# A commit that crosses SQLite's default 1,000-page threshold checkpoints the WAL itself: that stalled one
# `/incident open` in a hundred by 15 ms. The runtime checkpoints in the background every second instead;
# this higher threshold only bounds the WAL when nothing does (a CLI command, a test).
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
PG_CONNECT_TIMEOUT = 2
# A PostgreSQL connection unused for this long is pinged before it is handed out (_ping_when_idle).
PING_IDLE_AFTER = 1.0
_IDLE_SINCE = "incident_bot_idle_since"
# Changes nothing but needs write access: a read-only database (a read-only SQLite file, a PostgreSQL standby or
# read-only transaction) refuses it. alembic_version exists wherever migrations ran; a file replaced by an empty
# database fails here too.
WRITE_PROBE = "UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"
# SQLite errors after which a connection is no use: the file went read-only or away. Its connection may have
# opened the file read-only and would stay so after the file is writable again, so the pool is invalidated.
SQLITE_OUTAGE_ERRORS = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")
_FILE_IDENTITY = "incident_bot_file_identity"
_OPENED_READ_ONLY = "incident_bot_opened_read_only"


def make_engine(url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout, "check_same_thread": False}, **kwargs)
        path = engine.url.database or ""
        file = SqliteFile(path) if path and path != ":memory:" and not path.startswith("file:") else None
        _configure_sqlite(engine, busy_timeout, file)
        if file is not None:
            _watch_sqlite_file(engine, file)
        return engine
    # A database proxy that accepts and never answers would otherwise hang a request past Slack's ack window
    # (libpq waits forever by default); 2 s is libpq's smallest connect_timeout. A URL may set its own.
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": PG_CONNECT_TIMEOUT}
    engine = create_engine(url, pool_size=10, max_overflow=20, connect_args=connect_args, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, for connections that sat unused in the pool for PING_IDLE_AFTER or more: pool_pre_ping's
    round trip on every checkout was a tenth of a reply's work. A connection in steady use is proven by its
    last statement; one that fails anyway (the server restarted under load) fails that request, which answers
    "database unavailable" or 503 (Slack delivers the event again), and the disconnect invalidates the pool, so
    the next checkouts get fresh connections. This is SQLAlchemy's documented pessimistic disconnect handling,
    with events."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)  # none for a connection just opened
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError("the connection failed its ping after sitting idle") from error


def _configure_sqlite(engine: Engine, busy_timeout: float, file: SqliteFile | None) -> None:
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
        options = connection.get_execution_options()
        if options.get(LONE_READ_OPTION, False):
            return  # Database.lone_read(): the connection is in autocommit, its one SELECT its own snapshot
        if options.get(READ_ONLY_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        if file is not None and not file.writable():
            # Connections opened before (or reusing a descriptor SQLite kept from them) would go on writing into
            # the WAL of a read-only database file, which could never be checkpointed. One access() per write.
            raise _file_outage("database file is read-only")
        if connection.get_execution_options().get(SINGLE_STATEMENT_OPTION, False):
            return  # Database.statement(): its statement takes the gate itself, below
        if not gate.acquire(timeout=busy_timeout):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        _gates_held[connection] = gate
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _open_gate(connection)
            raise

    event.listen(engine, "commit", _open_gate)
    event.listen(engine, "rollback", _open_gate)  # also after a statement that failed


def _gate_single_statements(statement_engine: Engine, busy_timeout: float) -> None:
    """Database.statement(): the connection is in autocommit, so its one statement is its own transaction, done when
    the cursor's execute returns. The gate is held for that step of SQLite alone, with SQLAlchemy's own work
    before and after it outside: under a burst of replies, every GIL hand-over inside the gate held up all the
    other writers. Listened for on the statement engine alone (an OptionEngine keeps its own listeners): on the
    engine, these two ran for every statement of every transaction."""
    gate = _writer_gate(statement_engine.url.database or "")

    @event.listens_for(statement_engine, "before_cursor_execute")
    def _gate_statement(connection: Any, *_args: Any) -> None:
        if not gate.acquire(timeout=busy_timeout):
            raise OperationalError("INSERT", None, sqlite3.OperationalError("database is locked"))
        _gates_held[connection] = gate

    @event.listens_for(statement_engine, "after_cursor_execute")
    def _statement_done(connection: Any, *_args: Any) -> None:
        _open_gate(connection)


_gates: dict[str, threading.Lock] = {}
_gates_lock = threading.Lock()
# Which Connection holds a gate. Kept off connection.info: that belongs to the DB-API connection, which an
# invalidated Connection no longer has by the time its rollback releases the gate.
_gates_held: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def _writer_gate(database: str) -> threading.Lock:
    """One per SQLite file in this process. Writers wait their turn here instead of in SQLite's busy handler,
    which polls with growing sleeps: under a burst of writers an unlucky one starved past the busy timeout and
    its event was lost. Other processes are still kept out by SQLite's own lock."""
    with _gates_lock:
        return _gates.setdefault(database, threading.Lock())


def _open_gate(connection: Any) -> None:
    gate = _gates_held.pop(connection, None)
    if gate is not None:
        gate.release()


class SqliteFile:
    """The SQLite file as this process's connections opened it.

    A file deleted or replaced under a running process keeps its open connections writing into the unlinked
    inode, where every write is lost; and a connection opened while the file was read-only stays read-only
    after the file is writable again. Both are seen here with stat() and access(), never a query.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.identity: tuple[int, int] | None = None  # (device, inode) at the latest connect

    def current_identity(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def writable(self) -> bool:
        """Whether SQLite could open the database and its WAL for writing, as it tries at connect. Asked with
        access(), never open(): closing any descriptor of the file would drop this process's POSIX locks on
        it, which SQLite's connections rely on."""
        for name in (self.path, f"{self.path}-wal", f"{self.path}-shm"):
            if not os.access(name, os.W_OK) and (name == self.path or os.path.lexists(name)):
                return False
        return True

    def check(self) -> None:
        """Raises OperationalError when the file is gone, replaced since the latest connect, or read-only."""
        identity = self.current_identity()
        if identity is None:
            raise _file_outage("database file is missing")
        if identity != self.identity:
            raise _file_outage("database file was replaced")
        if not self.writable():
            raise _file_outage("database file is read-only")

    def connect_uri(self) -> str:
        """Once the file exists, connect only to it: a deleted file must be an outage, not a new empty database."""
        return f"{Path(self.path).as_uri()}?mode=rw"


def _file_outage(reason: str) -> OperationalError:
    return OperationalError(None, None, sqlite3.OperationalError(reason))


_sqlite_files: weakref.WeakKeyDictionary[Engine, SqliteFile] = weakref.WeakKeyDictionary()


def _watch_sqlite_file(engine: Engine, file: SqliteFile) -> None:
    _sqlite_files[engine] = file

    @event.listens_for(engine, "do_connect")
    def _open_existing_only(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        # The first connect creates the file (the migrations at start); after that it must already exist.
        if file.identity is not None:
            cargs[:] = [file.connect_uri()]
            cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _remember_file(_dbapi_connection: Any, record: Any) -> None:
        file.identity = record.info[_FILE_IDENTITY] = file.current_identity()
        record.info[_OPENED_READ_ONLY] = not file.writable()

    @event.listens_for(engine, "checkout")
    def _same_file(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # DisconnectionError makes the pool discard this connection and open a fresh one (SQLAlchemy's
        # documented pessimistic disconnect handling).
        if file.current_identity() != record.info.get(_FILE_IDENTITY):
            raise DisconnectionError("the SQLite file was deleted or replaced since this connection opened it")
        if record.info.get(_OPENED_READ_ONLY) and file.writable():
            raise DisconnectionError("the SQLite file is writable again; this connection opened it read-only")

    @event.listens_for(engine, "commit")
    def _commit_into_the_same_file(connection: Any) -> None:
        # A transaction that began before the file was deleted would commit into the unlinked inode: lost.
        if file.current_identity() != connection.info.get(_FILE_IDENTITY):
            raise _file_outage("database file was deleted or replaced during the transaction")

    @event.listens_for(engine, "handle_error")
    def _outage_invalidates_pool(context: ExceptionContext) -> None:
        if getattr(context.original_exception, "sqlite_errorname", "").startswith(SQLITE_OUTAGE_ERRORS):
            context.is_disconnect = True  # with invalidate_pool_on_disconnect (the default): the whole pool


def sqlite_file(engine: Engine) -> SqliteFile | None:
    return _sqlite_files.get(engine)


class CoreWork:
    """A unit of work of Core statements on one Connection: Database.work(). It offers what the domain functions
    of a hot path use of a Session (`execute`, `info`, things to do once committed) and nothing of the ORM."""

    __slots__ = ("connection", "info", "on_commit")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.info: dict[Any, Any] = {}
        self.on_commit: list[Callable[[], object]] = []

    def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return self.connection.execute(statement, parameters)


# What a domain function on the open path takes as its caller's unit of work: a Session, or Core work.
Work: TypeAlias = Session | CoreWork


class Database:
    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )
        # A lone statement is its own transaction. On PostgreSQL BEGIN and COMMIT would be two more round trips; on
        # SQLite (whose connections are always in autocommit, see _on_connect) they would lengthen the time the
        # writer gate is held. The checks at commit still run: a file deleted meanwhile still answers an error.
        self._statement_engine = self.engine.execution_options(
            **({SINGLE_STATEMENT_OPTION: True} if self.dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"})
        )
        if self.dialect == "sqlite":
            _gate_single_statements(self._statement_engine, engine_kwargs.get("busy_timeout", SQLITE_BUSY_TIMEOUT))
        self._lone_read_engine = self.engine.execution_options(
            **({LONE_READ_OPTION: True} if self.dialect == "sqlite" else {"isolation_level": "AUTOCOMMIT"})
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
    def work(self) -> Iterator[CoreWork]:
        """session()'s twin for a unit of work whose statements are all Core: committed when the block ends (then
        its `on_commit` run, in order), rolled back whole when it raises. Around the Core statements `/incident open`'s
        ack waits for, an ORM Session's own bookkeeping cost 0.77 M instructions an open, about 8% (README
        "Performance", round 11)."""
        with self.engine.begin() as connection:
            work = CoreWork(connection)
            yield work
        for then in work.on_commit:
            then()

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A unit of work of ONE Core statement, atomic by itself, for a hot path's single write: a Connection, not
        a Session, whose bookkeeping was a third of that write's CPU. Two statements that must agree take
        session()."""
        with self._statement_engine.begin() as connection:
            yield connection

    @contextmanager
    def lone_read(self) -> Iterator[Connection]:
        """ONE Core SELECT, outside any transaction (its own snapshot): on PostgreSQL one round trip, not three
        (BEGIN, the read, COMMIT); on SQLite no BEGIN, and never the write lock. Reads that must agree take read()."""
        with self._lone_read_engine.connect() as connection:
            yield connection

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
        except sqlite3.Error:
            connection.invalidate()  # raw DB-API errors skip handle_error; a read-only file fails every checkpoint
            raise
        finally:
            connection.close()

    def check_files(self) -> None:
        """The cheap part of check_writable(), no query: on SQLite, whether the file is still the one the pool
        opened and can be opened for writing. Nothing to check on PostgreSQL."""
        file = sqlite_file(self.engine)
        if file is not None:
            file.check()

    def check_writable(self) -> None:
        """Raises SQLAlchemyError unless this process can write right now: a write that changes nothing, rolled
        back, on a connection from the pool the requests use (a checkout also replaces connections to a file
        that was deleted, replaced or read-only). SELECT 1 is not enough: it works on a read-only or deleted
        SQLite file."""
        try:
            with self.engine.connect() as connection, connection.begin() as transaction:
                connection.execute(text(WRITE_PROBE))
                transaction.rollback()
        except SQLAlchemyError as error:
            try:
                self.check_files()
            except OperationalError as reason:
                raise reason from error  # "database file is missing" says more than "unable to open database file"
            raise
        # After the probe, whose checkout reconnects to a file restored in place of the old one.
        self.check_files()

    def describe_outage(self, error: SQLAlchemyError) -> str:
        """A short reason for /healthz. SQLite's messages name no host or user, so they are shown; other
        drivers' may, so only the error's type is."""
        original = getattr(error, "orig", None)
        if self.dialect == "sqlite" and isinstance(original, sqlite3.Error):
            return f"{type(error).__name__}: {original}"
        return type(error).__name__

    def dispose(self) -> None:
        self.engine.dispose()
