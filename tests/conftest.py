"""Fixtures: a fresh database per test (SQLite, or PostgreSQL when TEST_DATABASE_URL is set), the Slack
sandbox, and the real app served over loopback HTTP.

Also how scripts/test splits the suite (options below): tests marked `serial` run in a pass of their own with
nothing beside them, and the PostgreSQL run can leave out the tests that never touch the database under test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage import migrate
from storage.db import Database

PG_URL = os.environ.get("TEST_DATABASE_URL")

# Whole modules that run in the serial pass (the rest mark single tests with @pytest.mark.serial). The database
# fault tests stop the shared PostgreSQL server or make it read-only for everyone, and hold recovery deadlines.
SERIAL_MODULES = {"test_trust_dbfaults.py"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("incident-bot")
    group.addoption("--serial", choices=("include", "exclude", "only"), default="include",
                    help="the tests marked serial: run them with the rest (default), leave them out, or run only them")
    group.addoption("--database-tests-only", action="store_true",
                    help="leave out the tests that use no `database_url`: they would only repeat the SQLite run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
    serial = config.getoption("serial")
    database_only = config.getoption("database_tests_only")

    def wanted(item: pytest.Item) -> bool:
        if serial != "include" and (item.get_closest_marker("serial") is not None) != (serial == "only"):
            return False
        return not database_only or "database_url" in getattr(item, "fixturenames", ())

    kept = [item for item in items if wanted(item)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if not wanted(item)])
        items[:] = kept


# ---- databases ------------------------------------------------------------------------------------------------


def _admin(base_url: str, statement: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def _fresh_postgres(base_url: str, template: str | None = None) -> tuple[str, str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(base_url, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres(base_url: str, name: str) -> None:
    _admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    database = Database(url)
    try:
        migrate.upgrade(database.engine)
    finally:
        database.dispose()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database migrated to head once per test process: its SQLite file's path, or its PostgreSQL name.

    Copying it is several times cheaper than migrating each test's database (most of a short test's setup)."""
    if PG_URL:
        url, name = _fresh_postgres(PG_URL)
        _migrate(url)  # disposed afterwards: CREATE DATABASE … TEMPLATE needs the template without connections
        yield name
        _drop_postgres(PG_URL, name)
    else:
        path = tmp_path_factory.mktemp("template") / "bot.db"
        _migrate(f"sqlite:///{path}")
        # The last connection's close checkpointed the WAL into the file, so the file alone is the whole database.
        assert not Path(f"{path}-wal").exists()
        yield str(path)


@pytest.fixture
def database_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database, except for a test that runs the in-process `bot`: the app would migrate its database
    at start anyway, so it gets a copy of one migrated already, and its start-up finds it at head. A test that
    checks migrating itself (the migrations, `serve`, `report`) never takes `bot`, so it starts from empty."""
    template = request.getfixturevalue("migrated_template") if "bot" in request.fixturenames else None
    if PG_URL:
        url, name = _fresh_postgres(PG_URL, template)
        yield url
        _drop_postgres(PG_URL, name)
    else:
        path = tmp_path / "bot.db"
        if template:
            shutil.copyfile(template, path)
        yield f"sqlite:///{path}"


@pytest.fixture
def slack() -> Iterator[SlackSandbox]:
    with SlackSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def bot_env() -> dict[str, str]:
    """Override per test module/test to change settings."""
    return {}


@pytest.fixture
def bot(slack: SlackSandbox, database_url: str, bot_env: dict[str, str]) -> Iterator[LocalBot]:
    local = LocalBot(bot_env, slack=slack, database_url=database_url)
    local.start()
    try:
        yield local
    finally:
        local.stop()
