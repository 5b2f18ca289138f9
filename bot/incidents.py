"""Opening incidents, finding them, and keeping their announcement in Slack."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot import durations, timeline
from bot.context import Context
from bot.parsing import OpenRequest, UsageError
from bot.ports import MessengerError
from storage.models import Incident, IncidentSequence, RoleAssignment

log = logging.getLogger(__name__)

ANNOUNCE_LEASE = timedelta(seconds=60)
ANNOUNCE_RETRY_AFTER = timedelta(seconds=30)
MILESTONES = ("deployed", "started", "detected", "rollback", "recovered", "resolved")


def next_sequence(session: Session, day: str) -> int:
    """One atomic upsert: concurrent opens on the same day each get their own number, on SQLite and PostgreSQL."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(IncidentSequence)
        .values(day=day, last=1)
        .on_conflict_do_update(index_elements=["day"], set_={"last": IncidentSequence.last + 1})
        .returning(IncidentSequence.last)
    )
    return int(session.execute(statement).scalar_one())


def open_incident(
    ctx: Context, request: OpenRequest, *, channel_id: str, user_id: str, user_name: str | None = None
) -> Incident:
    now = ctx.clock.now()
    day = now.astimezone(ctx.settings.timezone).strftime("%Y%m%d")
    service = request.service or ctx.settings.cloud_run_service
    with ctx.db.session() as session:
        seq = next_sequence(session, day)
        incident = Incident(
            public_id=f"INCIDENT-{day}-{seq:03d}",
            day=day,
            seq=seq,
            title=request.title,
            severity=request.severity,
            status="investigating",
            service=service,
            channel_id=channel_id,
            opened_by=user_id,
            opened_at=now,
            meeting_at=now + ctx.settings.postmortem_meeting_after,
            # The guide's announcement reads "실패 감지" at open: opening is the moment a person saw it.
            detected_at=now,
        )
        session.add(incident)
        session.flush()
        timeline.add_system_event(
            session, incident, actor=user_id, actor_name=user_name, at=now, action="opened",
            data={"title": request.title, "severity": request.severity, "service": service},
        )
        ctx.fire("on_open", session, incident)
    log.info("incident opened", extra={"json_fields": {"incident_id": incident.public_id}})
    return incident


def announcement_context(ctx: Context, session: Session, incident: Incident) -> dict[str, Any]:
    roles = session.execute(
        select(RoleAssignment.role, RoleAssignment.user_id).where(RoleAssignment.incident_id == incident.id)
    ).all()
    return {
        "incident": incident,
        "fmt": ctx.formatter(),
        "roles": {role: user for role, user in roles},
        "role_order": ctx.settings.roles,
        "durations": durations.compute(incident),
        "spans_days": ctx.formatter().spans_days(
            [incident.deployed_at, incident.started_at, incident.detected_at, incident.rollback_at,
             incident.recovered_at, incident.opened_at, incident.meeting_at, incident.resolved_at,
             incident.cancelled_at]
        ),
    }


def render_announcement(ctx: Context, session: Session, incident: Incident) -> Any:
    return ctx.renderer.message("announcement", ctx.locale, **announcement_context(ctx, session, incident))


def claim_announcement(ctx: Context, incident_id: int) -> bool:
    """Takes the lease on posting; False when it is posted already or someone else is posting it."""
    now = ctx.clock.now()
    with ctx.db.session() as session:
        result = session.execute(
            update(Incident)
            .where(
                Incident.id == incident_id,
                Incident.announcement_ts.is_(None),
                or_(Incident.announce_claimed_until.is_(None), Incident.announce_claimed_until < now),
            )
            .values(announce_claimed_until=now + ANNOUNCE_LEASE)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def post_announcement(ctx: Context, incident_id: int) -> str | None:
    """Posts the announcement once. Returns the thread ts, or None when another worker has the lease.

    Raises MessengerError when Slack refuses it after the client's retries; the incident stays stored and
    the retry sweep posts it later.
    """
    if not claim_announcement(ctx, incident_id):
        with ctx.db.read() as session:
            return session.get_one(Incident, incident_id).announcement_ts
    # Rendering only reads: on SQLite a write session here would hold the write lock that opens wait for.
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        message = render_announcement(ctx, session, incident)
        channel = incident.channel_id
    try:
        ts = ctx.messenger.post_message(channel, message.text, blocks=message.blocks)
    except MessengerError as error:
        with ctx.db.session() as session:
            session.execute(
                update(Incident)
                .where(Incident.id == incident_id)
                .values(announcement_error=str(error), announce_claimed_until=ctx.clock.now() + ANNOUNCE_RETRY_AFTER)
            )
        raise
    with ctx.db.session() as session:
        session.execute(
            update(Incident)
            .where(Incident.id == incident_id)
            .values(announcement_ts=ts, announcement_error=None, announce_claimed_until=None)
        )
    return ts


def retry_pending_announcements(ctx: Context) -> int:
    """The sweep behind "a later retry completes the post": announcements that failed or were interrupted."""
    now = ctx.clock.now()
    with ctx.db.read() as session:
        pending = session.scalars(
            select(Incident.id).where(
                Incident.announcement_ts.is_(None),
                or_(Incident.announce_claimed_until.is_(None), Incident.announce_claimed_until < now),
            )
        ).all()
    posted = 0
    for incident_id in pending:
        try:
            if post_announcement(ctx, incident_id):
                posted += 1
                ctx.fire("on_announced", incident_id)
        except MessengerError as error:
            log.warning("announcement retry failed: %s", error.kind)
    return posted


def refresh_announcement(ctx: Context, incident_id: int) -> None:
    """Keeps the announcement current (status, severity, roles, milestones) with chat.update."""
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        if incident.announcement_ts is None:
            return
        message = render_announcement(ctx, session, incident)
        channel, ts = incident.channel_id, incident.announcement_ts
    ctx.messenger.update_message(channel, ts, message.text, blocks=message.blocks)


@dataclass(frozen=True)
class Choice:
    """Several active incidents in one channel: the user must name one."""

    incidents: list[tuple[str, str]]


def find_by_public_id(session: Session, public_id: str) -> Incident | None:
    return session.scalars(select(Incident).where(Incident.public_id == public_id.upper())).first()


def find_by_thread(session: Session, channel: str, thread_ts: str) -> Incident | None:
    return session.scalars(
        select(Incident).where(Incident.channel_id == channel, Incident.announcement_ts == thread_ts)
    ).first()


def resolve_target(session: Session, channel: str, public_id: str | None) -> Incident:
    """The named incident, or the channel's single active one, or else its latest. Raises UsageError otherwise.

    Callers whose command only makes sense while the incident is open check `incident.is_open` themselves.
    """
    if public_id:
        incident = find_by_public_id(session, public_id)
        if incident is None:
            raise UsageError("unknown_incident", "", incident_id=public_id)
        return incident
    query = select(Incident).where(Incident.channel_id == channel, Incident.status.not_in(("resolved", "cancelled")))
    candidates = session.scalars(query.order_by(Incident.opened_at.desc()).limit(20)).all()
    if not candidates:
        latest = session.scalars(
            select(Incident).where(Incident.channel_id == channel).order_by(Incident.opened_at.desc()).limit(1)
        ).first()
        if latest is not None:
            return latest
    if not candidates:
        raise UsageError("no_incident", "")
    if len(candidates) > 1:
        raise UsageError("choose_incident", "", choices=[(i.public_id, i.title) for i in candidates])
    return candidates[0]


def milestone_times(incident: Incident) -> dict[str, datetime | None]:
    return {name: getattr(incident, f"{name}_at") for name in MILESTONES}
