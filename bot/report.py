"""The post-mortem document: one query per section, whatever the size of the incident (no N+1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot import checklist, durations, timeline
from bot.context import Context
from storage.models import ActionItem, ChecklistItem, ImpactValue, Incident, Note, RoleAssignment, TimelineEvent, Why

PRIORITY_ORDER = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}


def report_filename(public_id: str, locale: str, default_locale: str) -> str:
    return f"{public_id}-postmortem.md" if locale == default_locale else f"{public_id}-postmortem.{locale}.md"


def _stream_timeline(session: Session, incident_id: int) -> Iterator[Any]:
    # Column rows in batches: 50,000 events never exist as ORM objects at once.
    result = session.execute(timeline.timeline_rows_query(incident_id).execution_options(yield_per=2000))
    yield from result


def _names(session: Session, incident_id: int) -> dict[str, str]:
    """Display names people had on this incident's timeline, for ids shown elsewhere (owners, roles)."""
    rows = session.execute(
        select(TimelineEvent.author_id, TimelineEvent.author_name)
        .where(TimelineEvent.incident_id == incident_id, TimelineEvent.author_name.is_not(None))
        .distinct()
    ).all()
    return {author_id: name for author_id, name in rows if author_id}


def build_context(ctx: Context, session: Session, incident: Incident, locale: str) -> dict[str, Any]:
    fmt = ctx.formatter(locale)
    actions = sorted(
        session.scalars(select(ActionItem).where(ActionItem.incident_id == incident.id)).all(),
        key=lambda a: (PRIORITY_ORDER.get(a.priority, 9), a.id),
    )
    notes = session.scalars(
        select(Note).where(Note.incident_id == incident.id).order_by(Note.kind, Note.position, Note.id)
    ).all()
    checked = session.scalars(
        select(ChecklistItem.key).where(ChecklistItem.incident_id == incident.id, ChecklistItem.checked.is_(True))
    ).all()
    has_checklist = incident.checklist_ts is not None or bool(checked)
    first_event, last_event = session.execute(
        select(func.min(TimelineEvent.occurred_at), func.max(TimelineEvent.occurred_at)).where(
            TimelineEvent.incident_id == incident.id
        )
    ).one()
    milestone_values = [
        first_event, last_event, incident.deployed_at, incident.started_at, incident.detected_at,
        incident.rollback_at, incident.recovered_at, incident.resolved_at, incident.opened_at,
    ]
    return {
        "incident": incident,
        "fmt": fmt,
        "durations": durations.compute(incident),
        "spans_days": fmt.spans_days([*milestone_values, ctx.clock.now() if incident.is_open else None]),
        "roles": dict(session.execute(  # type: ignore[arg-type]
            select(RoleAssignment.role, RoleAssignment.user_id).where(RoleAssignment.incident_id == incident.id)
        ).all()),
        "role_order": ctx.settings.roles,
        "names": _names(session, incident.id),
        "impact": {
            row.field: row for row in session.scalars(select(ImpactValue).where(ImpactValue.incident_id == incident.id))
        },
        "whys": session.scalars(select(Why).where(Why.incident_id == incident.id).order_by(Why.position)).all(),
        "actions": actions,
        "lessons": [n for n in notes if n.kind == "lesson"],
        "prevention": [n for n in notes if n.kind == "prevent"],
        "checklist": checklist.build(checked, locale) if has_checklist else [],
        "timeline": _stream_timeline(session, incident.id),
    }


def render_report(ctx: Context, incident_id: int, locale: str) -> str:
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        return ctx.renderer.document("report", locale, **build_context(ctx, session, incident, locale))
