"""storage.sql, the one upsert and the one row lease, on SQLite and (with TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from storage import migrate
from storage.db import Database
from storage.models import ChannelVisibility, Incident, IncidentSequence, SeenRequest
from storage.sql import claim_lease, renew_lease, upsert

NOW = datetime(2025, 10, 22, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=1)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def incident_id(db: Database) -> int:
    with db.session() as session:
        incident = Incident(public_id="INCIDENT-20251022-001", day="20251022", seq=1, title="t", severity="SEV2",
                            channel_id="C1", opened_by="U1", opened_at=NOW, meeting_at=NOW)
        session.add(incident)
        session.flush()
        return incident.id


def lease_of(db: Database, incident_id: int) -> datetime | None:
    with db.read() as session:
        return session.scalar(select(Incident.announce_claimed_until).where(Incident.id == incident_id))


def test_upsert_inserts_then_updates(db: Database) -> None:
    def bump() -> int:
        with db.session() as session:
            statement = upsert(session, IncidentSequence, {"day": "20251022", "last": 1}, index_elements=["day"],
                               set_={"last": IncidentSequence.last + 1})
            return int(session.execute(statement.returning(IncidentSequence.last)).scalar_one())

    assert [bump(), bump(), bump()] == [1, 2, 3]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(IncidentSequence)) == 1


def test_upsert_update_takes_the_incoming_row_and_honours_its_condition(db: Database) -> None:
    def record(is_private: bool, at: datetime) -> bool:
        with db.session() as session:
            statement = upsert(
                session, ChannelVisibility, {"channel_id": "C1", "is_private": is_private, "checked_at": at},
                index_elements=["channel_id"],
                set_=lambda new: {"is_private": new.is_private, "checked_at": new.checked_at},
                where=lambda new: ChannelVisibility.checked_at < new.checked_at,  # the later answer wins
            )
            return session.execute(statement.returning(ChannelVisibility.channel_id)).first() is not None

    def stored() -> tuple[bool, datetime]:
        with db.read() as session:
            row = session.execute(select(ChannelVisibility.is_private, ChannelVisibility.checked_at)).one()
            return row.is_private, row.checked_at

    assert record(False, NOW)
    assert record(True, NOW + timedelta(seconds=1))
    assert stored() == (True, NOW + timedelta(seconds=1))
    # An older answer is refused by the condition: RETURNING names no row and nothing changes.
    assert not record(False, NOW)
    assert stored() == (True, NOW + timedelta(seconds=1))


def test_upsert_without_set_does_nothing_and_returns_nothing_on_conflict(db: Database) -> None:
    def first(kind: str) -> int | None:
        with db.session() as session:
            statement = upsert(session, SeenRequest, {"trigger_id": "T1", "kind": kind, "received_at": NOW},
                               index_elements=["trigger_id"])
            return session.execute(statement.returning(SeenRequest.id)).scalar()

    assert first("command") is not None
    assert first("block_actions") is None
    with db.read() as session:
        assert session.execute(select(SeenRequest.kind)).scalars().all() == ["command"]


def test_upsert_refuses_a_condition_without_an_update(db: Database) -> None:
    with db.session() as session, pytest.raises(ValueError):
        upsert(session, SeenRequest, {"trigger_id": "T1", "kind": "command", "received_at": NOW},
               index_elements=["trigger_id"], where=SeenRequest.kind == "command")


def test_concurrent_claims_have_exactly_one_winner(db: Database, incident_id: int) -> None:
    claimers = 8
    start = threading.Barrier(claimers)
    results: list[bool] = []
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            start.wait()
            with db.session() as session:
                won = claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                                  now=NOW, until=NOW + LEASE)
            results.append(won)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=claim) for _ in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(results) == [False] * (claimers - 1) + [True]
    assert lease_of(db, incident_id) == NOW + LEASE


def test_a_held_lease_is_refused_until_it_expires(db: Database, incident_id: int) -> None:
    def claim(now: datetime) -> bool:
        with db.session() as session:
            return claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                               now=now, until=now + LEASE)

    assert claim(NOW)
    assert not claim(NOW + LEASE - timedelta(seconds=1))
    assert lease_of(db, incident_id) == NOW + LEASE
    assert claim(NOW + LEASE + timedelta(seconds=1))
    assert lease_of(db, incident_id) == NOW + 2 * LEASE + timedelta(seconds=1)


def test_a_claim_only_takes_rows_its_conditions_match(db: Database, incident_id: int) -> None:
    with db.session() as session:
        assert not claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                               Incident.announcement_ts.is_not(None), now=NOW, until=NOW + LEASE)
    assert lease_of(db, incident_id) is None


def test_a_claim_on_a_seen_lease_fails_when_someone_claimed_in_between(db: Database, incident_id: int) -> None:
    seen = lease_of(db, incident_id)  # None: nobody has claimed it yet
    with db.session() as session:  # another worker claims and its lease runs out
        assert claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                           now=NOW, until=NOW + LEASE)
    later = NOW + 2 * LEASE
    with db.session() as session:
        assert not claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                               now=later, until=later + LEASE, seen=seen)
        assert claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                           now=later, until=later + LEASE, seen=NOW + LEASE)
    assert lease_of(db, incident_id) == later + LEASE


def test_only_the_holder_renews_a_lease(db: Database, incident_id: int) -> None:
    with db.session() as session:
        assert claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                           now=NOW, until=NOW + LEASE)
        assert renew_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                           held=NOW + LEASE, until=NOW + 2 * LEASE)
        assert not renew_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                               held=NOW + LEASE, until=NOW + 3 * LEASE)
    assert lease_of(db, incident_id) == NOW + 2 * LEASE


def test_core_work_commits_then_runs_what_waits_for_the_commit_and_a_failure_stores_and_runs_nothing(
        db: Database) -> None:
    # Database.work(), the open's unit of work without the ORM: after_commit behaves as with a Session.
    from bot.jobs import after_commit
    from bot.replays import first_delivery

    ran: list[str] = []
    with db.work() as work:
        assert first_delivery(work, NOW, "T1", "incident open", "U1")
        after_commit(work, lambda: ran.append(str(seen(db))))
        after_commit(work, lambda: ran.append("second"))
        assert ran == []  # nothing before the commit
    assert ran == ["['T1']", "second"]
    with pytest.raises(RuntimeError), db.work() as work:
        assert first_delivery(work, NOW, "T2", "incident open", "U1")
        after_commit(work, lambda: ran.append("rolled back"))
        raise RuntimeError("the open failed")
    assert seen(db) == ["T1"] and ran == ["['T1']", "second"]


def seen(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(SeenRequest.trigger_id).order_by(SeenRequest.trigger_id)))
