"""Alembic, driven from code: migrations ship as package data and run from any working directory."""

from __future__ import annotations

import fcntl
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ADVISORY_LOCK = 72431


@contextmanager
def one_migrator(connection: Connection) -> Iterator[None]:
    """Instances starting together take turns to migrate: the second finds the first's work done. On PostgreSQL
    an advisory lock; on a SQLite file, a lock on a file beside it (without it, two serves starting together on
    one file both ran a migration's CREATE TABLE, and one of them failed to start)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK})
            connection.commit()
        return
    database = connection.engine.url.database or ""
    if connection.dialect.name != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        yield  # in memory, or a URI: no path to put the lock beside
        return
    # Never the database file itself: closing any descriptor of it would drop this process's SQLite locks.
    try:
        lock = open(f"{database}.migrate-lock", "a")  # noqa: SIM115 — closed below, which releases the lock
    except OSError:
        yield  # a directory no one can write to: no other process can migrate either
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process dies
        yield


def _scripts_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def alembic_config(engine: Engine) -> Config:
    config = _scripts_config()
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    if revision == "head" and at_head(engine):
        return  # Alembic would run env.py and load every migration to find nothing to do (each test's start-up)
    command.upgrade(alembic_config(engine), revision)


def at_head(engine: Engine) -> bool:
    """Whether the database's revisions are exactly the migrations' heads: one read of alembic_version."""
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads()) == set(_heads())


@functools.cache
def _heads() -> tuple[str, ...]:
    """Read from the migrations' files once a process: they ship with the code."""
    return tuple(ScriptDirectory.from_config(_scripts_config()).get_heads())


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)
