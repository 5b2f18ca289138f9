"""The incident's timeline: thread replies, system changes, pins and milestones."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from storage.models import Incident, TimelineEvent
from storage.sql import upsert


def add_system_event(
    session: Session, incident: Incident, *, actor: str | None, at: datetime, action: str,
    data: dict[str, Any] | None = None, text: str = "", actor_name: str | None = None,
) -> TimelineEvent:
    """A change made through the bot (who, what, old → new); templates turn `action`+`data` into words."""
    event = TimelineEvent(
        incident_id=incident.id, kind="system", occurred_at=at, author_id=actor, author_name=actor_name, text=text,
        data={"action": action, **(data or {})},
    )
    session.add(event)
    return event


def record_message(
    session: Session, incident: Incident, *, channel: str, ts: str, user: str | None, author_name: str | None,
    text: str, at: datetime, kind: str = "message", highlighted: bool = False,
) -> bool:
    """Stores one Slack message once. The unique constraint, not memory, makes a Slack retry a no-op."""
    statement = upsert(
        session, TimelineEvent,
        {"incident_id": incident.id, "kind": kind, "occurred_at": at, "author_id": user, "author_name": author_name,
         "text": text, "slack_channel": channel, "slack_ts": ts, "highlighted": highlighted, "created_at": at},
        index_elements=["incident_id", "slack_channel", "slack_ts"],
    )
    return session.execute(statement.returning(TimelineEvent.id)).first() is not None


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
