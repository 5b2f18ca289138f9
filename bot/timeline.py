"""The incident's timeline: thread replies, system changes, pins and milestones."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Table, insert, select, update
from sqlalchemy.orm import Session

from storage.db import Work
from storage.models import Incident, TimelineEvent
from storage.sql import dialect_name, upsert


def add_system_event(
    session: Session, incident: Incident, *, actor: str | None, at: datetime, action: str,
    data: dict[str, Any] | None = None, text: str = "", actor_name: str | None = None,
) -> TimelineEvent:
    """A change made through the bot (who, what, old → new); templates turn `action`+`data` into words."""
    event = TimelineEvent(**_system_row(incident.id, actor, at, action, data, text, actor_name))
    session.add(event)
    return event


def insert_system_event(
    session: Work, incident_id: int, *, actor: str | None, at: datetime, action: str,
    data: dict[str, Any] | None = None, text: str = "", actor_name: str | None = None,
) -> None:
    """add_system_event in one Core INSERT, written at once, for a hot path that needs no TimelineEvent back."""
    session.execute(_system_insert(), _system_row(incident_id, actor, at, action, data, text, actor_name))


def _system_row(incident_id: int, actor: str | None, at: datetime, action: str, data: dict[str, Any] | None,
                text: str, actor_name: str | None) -> dict[str, Any]:
    return {"incident_id": incident_id, "kind": "system", "occurred_at": at, "author_id": actor,
            "author_name": actor_name, "text": text, "data": {"action": action, **(data or {})}}


@functools.cache
def _system_insert() -> Any:
    return insert(cast(Table, TimelineEvent.__table__))


def record_message(
    session: Session | Connection, incident: Incident | int, *, channel: str, ts: str, user: str | None,
    author_name: str | None, text: str, at: datetime, kind: str = "message", highlighted: bool = False,
) -> bool:
    """Stores one Slack message once, with one statement. The unique constraint, not memory, makes a Slack retry a
    no-op. The reply path gives the incident's id and a Core connection (Database.statement)."""
    row = {"incident_id": incident if isinstance(incident, int) else incident.id, "kind": kind, "occurred_at": at,
           "author_id": user, "author_name": author_name, "text": text, "slack_channel": channel, "slack_ts": ts,
           "highlighted": highlighted, "created_at": at}
    # rowcount is exact for DO NOTHING on both drivers (1 or 0). Without RETURNING, SQLite's autocommit statement
    # is finished, lock released, when execute returns (Database.statement).
    result = cast(CursorResult[Any], session.execute(_message_insert(dialect_name(session)), row))
    return result.rowcount == 1


@functools.cache
def _message_insert(dialect: str) -> Any:
    """Built once per dialect, a Core statement run with the row as parameters: building it per reply and the
    ORM's bulk-insert bookkeeping were a third of a reply's CPU (bench/ingest.py's profile)."""
    table = cast(Table, TimelineEvent.__table__)
    # SQLAlchemy keeps an INSERT's rowcount only when asked to (preserve_rowcount).
    return upsert(dialect, table, None, index_elements=["incident_id", "slack_channel", "slack_ts"]
                  ).execution_options(preserve_rowcount=True)


def edit_message(session: Session, *, channel: str, ts: str, text: str, at: datetime) -> int:
    # Session.execute is typed as Result; an UPDATE without RETURNING gives a CursorResult, which has rowcount.
    result = cast(CursorResult[Any], session.execute(
        update(TimelineEvent)
        .where(TimelineEvent.slack_channel == channel, TimelineEvent.slack_ts == ts)
        .values(text=text, edited_at=at)
    ))
    return int(result.rowcount)


def delete_message(session: Session, *, channel: str, ts: str, at: datetime) -> int:
    result = cast(CursorResult[Any], session.execute(
        update(TimelineEvent)
        .where(
            TimelineEvent.slack_channel == channel, TimelineEvent.slack_ts == ts, TimelineEvent.deleted_at.is_(None)
        )
        .values(deleted_at=at)
    ))
    return int(result.rowcount)


def find_message_event(session: Session, incident_id: int, channel: str, ts: str) -> TimelineEvent | None:
    return session.scalars(
        select(TimelineEvent).where(
            TimelineEvent.incident_id == incident_id,
            TimelineEvent.slack_channel == channel,
            TimelineEvent.slack_ts == ts,
        )
    ).first()


TIMELINE_COLUMNS = (
    TimelineEvent.id,
    TimelineEvent.kind,
    TimelineEvent.occurred_at,
    TimelineEvent.author_id,
    TimelineEvent.author_name,
    TimelineEvent.text,
    TimelineEvent.highlighted,
    TimelineEvent.data,
    TimelineEvent.edited_at,
)


def timeline_rows_query(incident_id: int) -> Any:
    """Columns only, in time order, without deleted events: the report streams these instead of ORM objects."""
    return (
        select(*TIMELINE_COLUMNS)
        .where(TimelineEvent.incident_id == incident_id, TimelineEvent.deleted_at.is_(None))
        .order_by(TimelineEvent.occurred_at, TimelineEvent.id)
    )
