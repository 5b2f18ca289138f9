"""Alembic migrations: clean on an empty database, on one holding data at an older revision, both ways,
and in agreement with the models. On SQLite and, with TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, inspect, select
from sqlalchemy.orm import Session

from storage import migrate
from storage.db import make_engine
from storage.models import Base, Incident, IncidentSequence, TimelineEvent

OPENED = datetime(2025, 10, 22, 5, 15, tzinfo=UTC)
BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "incident-bot"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def revisions(engine: Engine) -> list[str]:
    """Every revision from the first to head, in order; a single line of history."""
    script = ScriptDirectory.from_config(migrate.alembic_config(engine))
    assert len(script.get_heads()) == 1, "migrations have branched: merge them"
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


def current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                                "compare_server_default": False})
        return list(compare_metadata(context, Base.metadata))


def at(engine: Engine, value: datetime) -> datetime:
    """What the driver wants for a DateTime column: SQLite keeps naive UTC, PostgreSQL aware instants."""
    return value.replace(tzinfo=None) if engine.dialect.name == "sqlite" else value


def test_every_revision_applies_to_an_empty_database_and_reverts(engine: Engine) -> None:
    order = revisions(engine)
    assert order[0] == "0001"
    assert not migrate.at_head(engine)  # an empty database: no alembic_version yet
    for revision in order:
        migrate.upgrade(engine, revision)
        assert current(engine) == revision
        # upgrade() skips Alembic only at head: at any older revision it still migrates.
        assert migrate.at_head(engine) == (revision == order[-1])
    assert user_tables(engine) == set(Base.metadata.tables)
    migrate.upgrade(engine)  # at head already: a no-op, as at every restart
    assert current(engine) == order[-1]

    for previous in reversed(order[:-1]):
        migrate.downgrade(engine, previous)
        assert current(engine) == previous
    migrate.downgrade(engine, "base")
    assert user_tables(engine) == set() and not migrate.at_head(engine)
    migrate.upgrade(engine)
    assert user_tables(engine) == set(Base.metadata.tables) and schema_diff(engine) == []


def test_data_written_at_the_first_revision_survives_upgrades_and_downgrades(engine: Engine) -> None:
    order = revisions(engine)
    migrate.upgrade(engine, "0001")
    old = MetaData()
    incidents = Table("incidents", old, autoload_with=engine)
    events = Table("timeline_events", old, autoload_with=engine)
    sequences = Table("incident_sequences", old, autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(sequences.insert().values(day="20251022", last=1))
        incident_id = connection.execute(incidents.insert().values(
            public_id="INCIDENT-20251022-001", day="20251022", seq=1, title="추천 API p95 급증", severity="high",
            status="investigating", service="ion-api", channel_id="C0INCIDENTS", announcement_ts="1761110100.000100",
            opened_by="U0SENA", opened_at=at(engine, OPENED), meeting_at=at(engine, OPENED),
            detected_at=at(engine, OPENED), created_at=at(engine, OPENED), updated_at=at(engine, OPENED),
        )).inserted_primary_key[0]
        connection.execute(events.insert().values(
            incident_id=incident_id, kind="message", occurred_at=at(engine, OPENED), author_id="U0LEMUN",
            author_name="Lemun", text="p95 850ms | 확인", slack_channel="C0INCIDENTS", slack_ts="1761110200.000200",
            highlighted=False, data=None, created_at=at(engine, OPENED),
        ))

    def still_there() -> None:
        with Session(engine) as session:
            # The columns of revision 0001 only (through the models' types): later revisions add to the table.
            incident = session.execute(
                select(Incident.id, Incident.public_id, Incident.title, Incident.opened_at)).one()
            assert incident.public_id == "INCIDENT-20251022-001" and incident.title == "추천 API p95 급증"
            assert incident.opened_at == OPENED and incident.opened_at.tzinfo is not None
            [event] = session.execute(select(TimelineEvent.incident_id, TimelineEvent.text)).all()
            assert event.incident_id == incident.id and event.text == "p95 850ms | 확인"
            assert session.get_one(IncidentSequence, "20251022").last == 1

    for revision in order[1:]:  # each step with the row already in place
        migrate.upgrade(engine, revision)
        still_there()
    assert schema_diff(engine) == []
    migrate.downgrade(engine, "0001")
    with engine.connect() as connection:
        assert connection.execute(select(incidents.c.public_id)).scalar_one() == "INCIDENT-20251022-001"
    migrate.upgrade(engine)
    still_there()


def test_upgrade_from_the_revision_before_head(engine: Engine) -> None:
    order = revisions(engine)
    if len(order) < 2:
        pytest.skip("only one revision")
    migrate.upgrade(engine, order[-2])
    assert current(engine) == order[-2]
    migrate.upgrade(engine)
    assert current(engine) == order[-1] and schema_diff(engine) == []


def test_models_and_the_head_migration_agree(engine: Engine) -> None:
    """`alembic check`: autogenerate would find nothing to write."""
    migrate.upgrade(engine)
    assert schema_diff(engine) == []


def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    """Cloud Run starts several instances at once; each runs the migrations (serve does, then listens). On SQLite,
    two processes on one file: a restart that overlaps the old process, or the tests' two serves."""
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url}
    processes = [subprocess.Popen([str(BIN), "migrate"], env=env, cwd="/", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0] * 4, results
    engine = make_engine(database_url)
    try:
        assert current(engine) == revisions(engine)[-1] and schema_diff(engine) == []
    finally:
        engine.dispose()


def test_a_migration_waits_for_the_one_under_way(database_url: str) -> None:
    """The second of two instances starting together finds the first's lock held and migrates after it, from
    the revision the first left: on SQLite two processes both ran a migration's CREATE TABLE and one failed."""
    holder, waiter = make_engine(database_url), make_engine(database_url)
    done = threading.Event()
    upgrade = threading.Thread(target=lambda: (migrate.upgrade(waiter), done.set()), daemon=True)
    try:
        with holder.connect() as connection, migrate.one_migrator(connection):
            upgrade.start()
            assert not done.wait(1.0)
            assert user_tables(holder) == set()  # nothing ran while the lock was held
        upgrade.join(60)
        assert done.is_set() and current(holder) == revisions(holder)[-1] and schema_diff(holder) == []
    finally:
        holder.dispose()
        waiter.dispose()
