"""Opening incidents, finding them, and keeping their announcement in Slack.

Opening and finding work in the caller's unit of work (the handler opens it). Posting the announcement is a job:
it opens its own short units of work around the Slack call, never one across it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, insert, or_, select, union_all, update
from sqlalchemy.orm import Session, make_transient_to_detached

from bot import access, channels, durations, leases, timeline
from bot.access import Asker
from bot.context import Context
from bot.jobs import after_commit
from bot.parsing import OpenRequest, UsageError
from bot.ports import MessengerError
from bot.render import RenderedMessage
from storage.db import Work
from storage.models import Incident, IncidentSequence, RoleAssignment
from storage.sql import claim_lease, renew_lease, upsert

log = logging.getLogger(__name__)

ANNOUNCE_RETRY_AFTER = timedelta(seconds=30)  # after Slack refused the post outright
ANNOUNCEMENT_EVENT = "incident_announcement"  # the message metadata that marks an incident's announcement
MILESTONES = ("deployed", "started", "detected", "rollback", "recovered", "resolved")


def next_sequence(ctx: Context, session: Work, day: str) -> int:
    """The day's next number, with one atomic upsert: concurrent opens on the same day each get their own.

    On PostgreSQL it is taken in a statement of its own, committed at once: inside the open's transaction the
    day's row stayed locked until that commit, and concurrent opens queued behind it (README "Performance"). A
    number whose open then fails is skipped, as a database sequence's would be. SQLite's writers take turns
    anyway, so there it is taken in the open's transaction.
    """
    row = {"day": day, "last": 1}
    if ctx.db.dialect == "postgresql":
        with ctx.db.statement() as connection:
            return int(connection.execute(_next_in(ctx.db.dialect), row).scalar_one())
    return int(session.execute(_next_in(ctx.db.dialect), row).scalar_one())


@functools.cache
def _next_in(dialect: str) -> Any:
    """Built once per dialect (the day's row comes as parameters): building it cost the ack."""
    table = cast(Table, IncidentSequence.__table__)
    return upsert(dialect, table, None, index_elements=["day"], set_={"last": table.c.last + 1}).returning(table.c.last)


def open_incident(
    ctx: Context, session: Work, request: OpenRequest, *, channel_id: str, user_id: str,
    user_name: str | None = None, announcing: bool = False,
) -> Incident:
    """With `announcing`, the caller posts the announcement next, in a job of this process: its lease is taken in
    the incident's own INSERT (pass the incident to post_announcement as `opened`), so the post claims nothing.
    Should the job never run (the process died), the sweep posts it once the lease has lapsed. In a Session the
    Incident joins it as loaded; in Core work (Database.work) it is returned detached, every column set."""
    now = ctx.clock.now()
    day = now.astimezone(ctx.settings.timezone).strftime("%Y%m%d")
    service = request.service or ctx.settings.cloud_run_service
    seq = next_sequence(ctx, session, day)
    row = {
        "public_id": f"INCIDENT-{day}-{seq:03d}",
        "day": day,
        "seq": seq,
        "title": request.title,
        "severity": request.severity,
        "status": "investigating",
        "service": service,
        "channel_id": channel_id,
        # Channel mode: `channel_id` becomes the incident's own channel once it is made (bot/channels.py).
        "mode": ctx.settings.channel_mode,
        "origin_channel_id": channel_id if ctx.settings.channel_mode == channels.CHANNEL else None,
        "opened_by": user_id,
        "opened_at": now,
        "meeting_at": now + ctx.settings.postmortem_meeting_after,
        # The guide's announcement reads "실패 감지" at open: opening is the moment a person saw it.
        "detected_at": now,
        "announce_claimed_until": now + announce_lease(ctx) if announcing else None,
    }
    # The row and its first event by Core INSERTs: the ORM's unit of work for the two was a sixth of an open's CPU
    # (bench/open_cpu.py, profiled with yappi). The Incident is built from what was written and what the database
    # filled in, and joins the session as loaded: reading all its columns back through the ORM's loader cost twice
    # the INSERT.
    filled_in = session.execute(_incident_insert(), row).one()
    incident = Incident(**{**_EVERY_COLUMN, **row, **dict(zip(_FILLED_IN, filled_in, strict=True))})
    make_transient_to_detached(incident)  # every column is set, so none is left expired to load later
    if isinstance(session, Session):
        session.add(incident)
    timeline.insert_system_event(
        session, incident.id, actor=user_id, actor_name=user_name, at=now, action="opened",
        data={"title": request.title, "severity": request.severity, "service": service},
    )
    ctx.hooks.on_open.fire(session, incident)
    public_id = incident.public_id
    after_commit(session, lambda: log.info("incident opened", extra={"json_fields": {"incident_id": public_id}}))
    return incident


@functools.cache
def _incident_insert() -> Any:
    """Built once, the row as parameters."""
    table = cast(Table, Incident.__table__)
    return insert(table).returning(*(table.c[key] for key in _FILLED_IN))


# Every column empty, for what an open leaves unset; and the columns the database may fill in (the id, and any with
# a default), read back from the INSERT, so a column given a default later is never shown as empty.
_EVERY_COLUMN = dict.fromkeys(attribute.key for attribute in Incident.__mapper__.column_attrs)
_FILLED_IN = tuple(column.key for column in cast(Table, Incident.__table__).c
                   if column.primary_key or column.default is not None or column.server_default is not None)


def announcement_context(ctx: Context, session: Session, incident: Incident) -> dict[str, Any]:
    return _shown(ctx, incident, session.execute(_roles_of(), {"incident": incident.id}).all())


def _shown(ctx: Context, incident: Incident, roles: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """What the announcement shows: the incident and its roles ((role, user) pairs)."""
    fmt = ctx.formatter()
    return {
        "incident": incident,
        "fmt": fmt,
        "roles": dict(roles),
        "role_order": ctx.settings.roles,
        "durations": durations.compute(incident),
        "spans_days": fmt.spans_days(
            [incident.deployed_at, incident.started_at, incident.detected_at, incident.rollback_at,
             incident.recovered_at, incident.opened_at, incident.meeting_at, incident.resolved_at,
             incident.cancelled_at]
        ),
    }


@functools.cache
def _roles_of() -> Any:
    table = cast(Table, RoleAssignment.__table__)
    return select(table.c.role, table.c.user_id).where(table.c.incident_id == bindparam("incident"))


def render_announcement(ctx: Context, session: Session, incident: Incident) -> Any:
    return ctx.renderer.message("announcement", ctx.locale, **announcement_context(ctx, session, incident))


def announcement_metadata(public_id: str) -> dict[str, Any]:
    """Slack message metadata naming the incident: how a retry recognises an announcement that already landed."""
    return {"event_type": ANNOUNCEMENT_EVENT, "event_payload": {"incident_id": public_id}}


def announce_lease(ctx: Context) -> timedelta:
    """Outlasts one attempt at its worst (the post and the search for it, each with all the client's retries),
    so it follows the client's settings; the holder also renews it while Slack is being asked."""
    return 2 * ctx.messenger.call_budget


@dataclass(frozen=True)
class Opened:
    """An incident as the open that took its announcement's lease committed it, with the roles that open assigned:
    the announcement job shows them as they are, without reading them back."""

    incident: Incident
    roles: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Claim:
    until: datetime
    retried: bool  # an earlier claim may have posted it: look in the channel before posting


def claim_announcement(ctx: Context, session: Session, incident: Incident) -> Claim | None:
    """Takes the lease on posting; None when it is posted already or someone else is posting it."""
    now = ctx.clock.now()
    incident_id, held_until = incident.id, incident.announce_claimed_until
    if incident.announcement_ts is not None or (held_until is not None and held_until >= now):
        return None
    until = now + announce_lease(ctx)
    # Compare-and-set on the lease we saw, so that we also learn whether anyone claimed it before us.
    if not claim_lease(session, Incident.announce_claimed_until, Incident.id == incident_id,
                       Incident.announcement_ts.is_(None), now=now, until=until, seen=held_until):
        return None
    return Claim(until, retried=held_until is not None)


def _claim_unclaimed(ctx: Context, session: Session, incident_id: int) -> tuple[Incident, Claim] | None:
    """The usual case, a lease nobody has taken yet, in one UPDATE that also reads the incident back (rather than
    a read, then the UPDATE): claim_announcement's compare-and-set with the lease seen empty. None when the lease
    is or was held, or the announcement is on record; claim_announcement then decides."""
    table = cast(Table, Incident.__table__)
    until = ctx.clock.now() + announce_lease(ctx)
    claimed = (update(table)
               .where(table.c.id == incident_id, table.c.announcement_ts.is_(None),
                      table.c.announce_claimed_until.is_(None))
               .values(announce_claimed_until=until).returning(*table.c))
    incident = session.scalars(select(Incident).from_statement(claimed)).first()
    return None if incident is None else (incident, Claim(until, retried=False))


def _holding(ctx: Context, incident_id: int, claim: Claim) -> AbstractContextManager[None]:
    """Renews the lease while Slack is being asked: however slow Slack is, no second poster gets in."""
    def lost() -> None:
        log.warning("announcement lease lost", extra={"json_fields": {"incident_id": incident_id}})

    return leases.holding_row(ctx, announce_lease(ctx), Incident.announce_claimed_until, Incident.id == incident_id,
                              Incident.announcement_ts.is_(None), held=claim.until, on_lost=lost)


@dataclass(frozen=True)
class _AnnouncementPost:
    mode: str
    channel: str
    message: RenderedMessage
    metadata: dict[str, Any]
    since: float
    shown_version: datetime  # the updated_at of the incident as shown: a later change makes the post stale


def _announcement_post(ctx: Context, incident: Incident, context: dict[str, Any]) -> _AnnouncementPost:
    return _AnnouncementPost(incident.mode, incident.channel_id,
                             ctx.renderer.message("announcement", ctx.locale, **context),
                             announcement_metadata(incident.public_id), incident.opened_at.timestamp(),
                             incident.updated_at)


def _still_held(ctx: Context, opened: Opened) -> tuple[Claim, Incident, dict[str, Any]] | None:
    """The lease the open took for this job (open_incident's `announcing`), and what the announcement shows: the
    incident and its roles as the open committed them, read from nowhere. Nobody takes a lease before it lapses, so
    it is still held unless the job starts late; such a job renews it first, by a compare-and-set on the value the
    open wrote, so the sweep cannot find it lapsed while this posts. A change committed since the open is caught
    after the post (post_announcement's compare on updated_at). None when the lease was lost (taken over after it
    lapsed, or posted): post_announcement then claims as anyone would."""
    incident = opened.incident
    held_until = incident.announce_claimed_until
    if held_until is None:
        return None
    lease = announce_lease(ctx)
    now = ctx.clock.now()
    if held_until - now < lease / 2:
        until = now + lease
        with ctx.db.session() as session:
            if not renew_lease(session, Incident.announce_claimed_until, Incident.id == incident.id,
                               Incident.announcement_ts.is_(None), held=held_until, until=until):
                return None
        held_until = until
    return Claim(held_until, retried=False), incident, _shown(ctx, incident, opened.roles)


def _claimed(ctx: Context, incident_id: int) -> tuple[Claim, Incident, dict[str, Any]] | None:
    """The lease, and what the announcement shows, read in the lease's one transaction. Rendered after its commit
    (the objects outlive it, and their relationships raise rather than load): on SQLite the write lock that opens
    wait for is held for the statements only."""
    with ctx.db.session() as session:
        fresh = _claim_unclaimed(ctx, session, incident_id)
        if fresh is not None:
            return fresh[1], fresh[0], announcement_context(ctx, session, fresh[0])
        incident = session.get(Incident, incident_id)
        claim = None if incident is None else claim_announcement(ctx, session, incident)
        if incident is None or claim is None:
            return None
        return claim, incident, announcement_context(ctx, session, incident)


def _reread_post(ctx: Context, incident_id: int) -> _AnnouncementPost:
    # Only reads: on SQLite a write session here would hold the write lock that opens wait for.
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        context = announcement_context(ctx, session, incident)
    return _announcement_post(ctx, incident, context)


def post_announcement(ctx: Context, incident_id: int, *, opened: Opened | None = None) -> str | None:
    """Posts the announcement once. Returns its ts when this call put it on record, and only then fires
    `on_announced` (the one place it fires, so one announcement is announced once whoever posts it); None when
    it is on record already or another worker holds the lease.

    Raises MessengerError when it could not be posted; with `outcome_unknown` set, Slack may have posted it all
    the same. The incident stays stored and the retry sweep finishes the job, and whenever an earlier attempt
    may have posted it, looks in the channel for it (by its metadata) before posting. `opened`: the incident as
    an open that took the lease for this call committed it (open_incident's `announcing`).
    """
    held = _still_held(ctx, opened) if opened is not None else None
    claimed = held or _claimed(ctx, incident_id)
    if claimed is None:
        return None
    claim, incident, context = claimed
    link_ts: str | None = None
    not_invited: list[tuple[str, str]] = []
    try:
        with _holding(ctx, incident_id, claim):
            if incident.mode == channels.CHANNEL:
                # The incident's own channel first (made once, under this lease); the announcement goes there.
                not_invited = channels.prepare(ctx, incident_id)
                post = _reread_post(ctx, incident_id)
            else:
                post = _announcement_post(ctx, incident, context)
            channel, message, metadata = post.channel, post.message, post.metadata
            ts = ctx.messenger.find_posted(channel, metadata, since=post.since) if claim.retried else None
            if ts is None:
                ts = ctx.messenger.post_message(channel, message.text, blocks=message.blocks, metadata=metadata)
            if post.mode == channels.CHANNEL:  # the link line exists in channel mode only: no read without it
                link_ts = channels.post_link(ctx, incident_id, look_first=claim.retried)
    except MessengerError as error:
        # A post that may still land is given the time Slack needs to finish it before anyone looks.
        wait = ctx.messenger.call_budget if error.outcome_unknown else ANNOUNCE_RETRY_AFTER
        with ctx.db.session() as session:
            session.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.announcement_ts.is_(None))
                .values(announcement_error=str(error), announce_claimed_until=ctx.clock.now() + wait)
            )
        raise
    # On record and the lease released in one statement, committed by itself, if the incident is still as shown.
    # A change committed before this found no announcement to refresh, so it is refreshed now (lifecycle's queue:
    # one update at a time per incident); one committed after refreshes it itself.
    values = {"incident": incident_id, "posted_ts": ts, "posted_link_ts": link_ts, "shown": post.shown_version}
    with ctx.db.statement() as connection:
        stale = cast(CursorResult[Any], connection.execute(_on_record(as_shown=True), values)).rowcount == 0
    if stale:
        with ctx.db.statement() as connection:
            connection.execute(_on_record(as_shown=False), values)
    channels.report_failed_invites(ctx, incident_id, not_invited)
    # The post is on record: a reaction's failure must not read as a failed announcement to the caller.
    reactions = (*([lambda: ctx.hooks.on_announced_stale.fire(incident_id)] if stale else []),
                 lambda: ctx.hooks.on_announced.fire(incident_id),
                 # Called, not hooked: here the channel is known without reading the incident again.
                 lambda: access.announced_in(ctx, channel))
    for react in reactions:
        try:
            react()
        except Exception:
            log.exception("a reaction to the announcement failed",
                          extra={"json_fields": {"incident_db_id": incident_id}})
    return ts


@functools.cache
def _on_record(*, as_shown: bool) -> Any:
    """post_announcement's last statement, built once; `as_shown`: only while the row's updated_at is still the
    one the announcement showed."""
    table = cast(Table, Incident.__table__)
    unchanged = table.c.updated_at == bindparam("shown", type_=table.c.updated_at.type)
    return (update(table).where(table.c.id == bindparam("incident"), *([unchanged] if as_shown else []))
            .values(announcement_ts=bindparam("posted_ts", type_=table.c.announcement_ts.type),
                    announcement_error=None, announce_claimed_until=None,
                    link_ts=bindparam("posted_link_ts", type_=table.c.link_ts.type)))


def retry_pending_announcements(ctx: Context) -> int:
    """The sweep behind "a later retry completes the post": announcements that failed, were interrupted or
    whose outcome is unknown."""
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
        own_channel = channels.is_channel_mode(incident)
    ctx.messenger.update_message(channel, ts, message.text, blocks=message.blocks)
    if own_channel:
        channels.refresh_surfaces(ctx, incident_id)


def find_by_public_id(session: Session, public_id: str) -> Incident | None:
    return session.scalars(select(Incident).where(Incident.public_id == public_id.upper())).first()


def find_by_thread(session: Session, channel: str, thread_ts: str) -> Incident | None:
    return session.scalars(
        select(Incident).where(Incident.channel_id == channel, Incident.announcement_ts == thread_ts)
    ).first()


def find_home(session: Session, channel: str, thread_ts: str | None) -> Incident | None:
    """The incident a message in `channel` (in `thread_ts`'s thread, or top-level when None) belongs to: in thread
    mode, a reply in its announcement's thread; in channel mode, any message of its own channel. One read, whose
    two branches are each one index probe (ix_incident_home_thread, ix_incident_home_channel): as an OR, SQLite's
    planner scanned all of the channel's incidents. A thread's own incident wins over a channel-mode incident of
    the same channel. The reply path asks through bot/homes.py, which caches the answer."""
    own_channel = select(Incident.id).where(Incident.channel_id == channel, Incident.mode == channels.CHANNEL,
                                            Incident.channel_name.is_not(None))
    homes = own_channel if thread_ts is None else union_all(
        select(Incident.id).where(Incident.channel_id == channel, Incident.announcement_ts == thread_ts), own_channel)
    found = session.scalars(select(Incident).where(Incident.id.in_(homes)).limit(2)).all()
    for incident in found:
        if thread_ts is not None and incident.announcement_ts == thread_ts:
            return incident
    return found[0] if found else None


def resolve_target(session: Session, asker: Asker, public_id: str | None) -> Incident:
    """The named incident, or the channel's single active one, or else its latest. Raises UsageError otherwise.

    A named incident of another channel is the asker's only if they are a member there (bot.access): UsageError
    when they are not, AccessPending when Slack must be asked first. Callers whose command only makes sense while
    the incident is open check `incident.is_open` themselves.
    """
    channel = asker.channel_id
    if public_id:
        incident = find_by_public_id(session, public_id)
        if incident is None:
            raise UsageError("unknown_incident", "", incident_id=public_id)
        asker.require_access(incident)
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
