"""Fixtures: a fresh database per test (SQLite, or PostgreSQL when TEST_DATABASE_URL is set), the Slack
sandbox, and the real app served over loopback HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox

PG_URL = os.environ.get("TEST_DATABASE_URL")


def _fresh_postgres(base_url: str) -> tuple[str, str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres(base_url: str, name: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    if PG_URL:
        url, name = _fresh_postgres(PG_URL)
        yield url
        _drop_postgres(PG_URL, name)
    else:
        yield f"sqlite:///{tmp_path / 'bot.db'}"


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
