"""An incident's lifecycle: status, severity, roles and milestones.

Each change works in its caller's unit of work (the handler or job opens it and passes the session): it locks
the incident row, stores the new value and its timeline event (who, what, old → new), and fires the lifecycle
hooks. Slack work is queued for after the commit (bot.jobs.after_commit) and runs in the background: the
announcement is re-rendered and updated in place (chat.update), and closing or reopening says so in the
thread; a rollback queues nothing. A failed chat.update leaves `announcement_error` set on the incident; the
sweep (`on_sweep`) retries those, so the stored change is never lost and the announcement catches up. The
jobs at the end of the module open their own short units of work, never one across a Slack call.

Rules the issue leaves to us, decided here:
- Milestones are kept to the minute, as the guide writes them, and can never be in the future.
- Milestones stay correctable after the incident is closed (the post-mortem meeting fixes the times);
  status (except reopening), severity and roles are refused on a closed incident.
- `status investigating` reopens a resolved or cancelled incident: the resolved/cancelled time is cleared
  and `on_reopened` fires. The other open statuses do not reopen, so a stray command cannot.
- A milestone event is dated at the milestone's own time, so the report's timeline reads in order; when a
  milestone is corrected, its earlier event is hidden (kept in the database, `deleted_at` set) and the new
  one says old → new.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import channels, durations, incidents, timeline
from bot.access import Asker
from bot.context import Context
from bot.durations import OrderConflict
from bot.jobs import after_commit
from bot.parsing import CLOSED_STATUSES, UsageError
from bot.ports import MessengerError
from bot.render import RenderedMessage, most_that_fits
from storage.models import Incident, RoleAssignment, TimelineEvent, utc_now

log = logging.getLogger(__name__)

Report = Callable[[str], None]  # tells the person who asked, ephemerally, that a Slack step failed
LIST_LIMIT = 30
TIMELINE_LIMIT = 100
TEXT_LIMIT = 200


# ---- results ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What a command did: `changed` or `unchanged` (the value was already so)."""

    public_id: str
    outcome: str
    old: Any = None
    new: Any = None
    closed: bool = False
    reopened: bool = False


@dataclass(frozen=True)
class MilestoneResult:
    """`set`, `unchanged` or `refused` (with `reason`: `order` and a `conflict`, or `closed`/`future`)."""

    public_id: str
    outcome: str
    milestone: str
    at: datetime
    old: datetime | None = None
    conflict: OrderConflict | None = None
    reason: str | None = None
    closed: bool = False
    incident_status: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != "refused"


class _MilestoneFacts(TypedDict):
    """The fields every MilestoneResult of one call shares, passed on as keywords."""

    public_id: str
    milestone: str
    at: datetime
    incident_status: str


# ---- shared pieces ---------------------------------------------------------------------------------------------


def _lock(session: Session, incident_id: int) -> Incident:
    """The incident row, locked for the rest of the transaction (PostgreSQL; SQLite's BEGIN IMMEDIATE already is)."""
    return session.get_one(Incident, incident_id, with_for_update=True, populate_existing=True)


def minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def display(ctx: Context, incident: Incident, value: datetime | None) -> str:
    """A milestone time as events store it: with the date when it is not the incident's opening day."""
    if value is None:
        return ""
    fmt = ctx.formatter()
    return fmt.time(value, with_date=fmt.local_date(value) != fmt.local_date(incident.opened_at))


_ADDED = "lifecycle.added_events"


def _event(session: Session, incident: Incident, **kwargs: Any) -> TimelineEvent:
    """Adds a system event and remembers it, so the display names can be filled in after the commit."""
    event = timeline.add_system_event(session, incident, **kwargs)
    session.info.setdefault(_ADDED, []).append(event)
    return event


def _take_added(session: Session) -> list[TimelineEvent]:
    """The events this change added, taken off the session so a second change in it starts afresh."""
    added: list[TimelineEvent] = session.info.pop(_ADDED, [])
    return added


def _refuse_closed(incident: Incident, usage: str) -> UsageError:
    return UsageError("incident_closed", usage, incident_id=incident.public_id, status=incident.status)


def _hide_milestone_events(session: Session, incident_id: int, milestone: str, at: datetime) -> None:
    session.execute(
        update(TimelineEvent)
        .where(
            TimelineEvent.incident_id == incident_id,
            TimelineEvent.kind == "system",
            TimelineEvent.deleted_at.is_(None),
            TimelineEvent.data["action"].as_string() == "milestone",
            TimelineEvent.data["milestone"].as_string() == milestone,
        )
        .values(deleted_at=at)
        .execution_options(synchronize_session=False)
    )


def _record_milestone(
    ctx: Context, session: Session, incident: Incident, name: str, at: datetime | None, *, actor: str | None,
    actor_name: str | None, source: dict[str, Any] | None,
) -> None:
    old = getattr(incident, f"{name}_at")
    now = ctx.clock.now()
    _hide_milestone_events(session, incident.id, name, now)
    setattr(incident, f"{name}_at", at)
    _event(
        session, incident, actor=actor, actor_name=actor_name, at=at or now, action="milestone",
        data={
            "milestone": name,
            "old": old.isoformat() if old else None,
            "new": at.isoformat() if at else None,
            "old_display": display(ctx, incident, old),
            "new_display": display(ctx, incident, at),
            **(source or {}),
        },
    )


def _close(ctx: Context, session: Session, incident: Incident, status: str, actor: str | None,
           actor_name: str | None) -> None:
    now = ctx.clock.now()
    old = incident.status
    incident.status = status
    if status == "cancelled":
        incident.cancelled_at = now
    _event(
        session, incident, actor=actor, actor_name=actor_name, at=now, action="status",
        data={"old": old, "new": status},
    )
    session.flush()
    ctx.hooks.on_closed.fire(session, incident)


# ---- status -----------------------------------------------------------------------------------------------------


def change_status(
    ctx: Context, session: Session, incident_id: int, new: str, *, actor: str | None, actor_name: str | None,
    report: Report | None = None,
) -> Change:
    """Raises UsageError when the change is refused (closed incident, or resolving out of milestone order)."""
    now = ctx.clock.now()
    incident = _lock(session, incident_id)
    old = incident.status
    if new == old:
        return Change(incident.public_id, "unchanged", old, new)
    reopened = closed = False
    if not incident.is_open:
        if new != "investigating":
            raise _refuse_closed(incident, "status")
        cleared = {"resolved_at": incident.resolved_at, "cancelled_at": incident.cancelled_at}
        incident.status, incident.resolved_at, incident.cancelled_at = new, None, None
        _hide_milestone_events(session, incident.id, "resolved", now)
        _event(
            session, incident, actor=actor, actor_name=actor_name, at=now, action="status",
            data={"old": old, "new": new, "reopened": True,
                  **{k: v.isoformat() for k, v in cleared.items() if v is not None}},
        )
        session.flush()
        ctx.hooks.on_reopened.fire(session, incident)
        reopened = True
    elif new in CLOSED_STATUSES:
        if new == "resolved" and incident.resolved_at is None:
            at = minute(now)
            conflict = durations.order_conflict(incidents.milestone_times(incident), "resolved", at)
            if conflict is not None:
                raise order_error(ctx, incident, conflict, at, "status")
            _record_milestone(ctx, session, incident, "resolved", at, actor=actor, actor_name=actor_name,
                              source={"via": "status"})
        _close(ctx, session, incident, new, actor, actor_name)
        closed = True
    else:
        incident.status = new
        _event(
            session, incident, actor=actor, actor_name=actor_name, at=now, action="status",
            data={"old": old, "new": new},
        )
    _after_commit_change(ctx, session, incident_id, notice="closed" if closed else "reopened" if reopened else None,
                         actor=actor, actor_name=actor_name, report=report)
    return Change(incident.public_id, "changed", old, new, closed=closed, reopened=reopened)


# ---- severity ---------------------------------------------------------------------------------------------------


def change_severity(
    ctx: Context, session: Session, incident_id: int, new: str, *, actor: str | None, actor_name: str | None,
    report: Report | None = None,
) -> Change:
    incident = _lock(session, incident_id)
    if not incident.is_open:
        raise _refuse_closed(incident, "severity")
    old = incident.severity
    if old == new:
        return Change(incident.public_id, "unchanged", old, new)
    incident.severity = new
    _event(
        session, incident, actor=actor, actor_name=actor_name, at=ctx.clock.now(), action="severity",
        data={"old": old, "new": new},
    )
    _after_commit_change(ctx, session, incident_id, report=report)
    return Change(incident.public_id, "changed", old, new)


# ---- roles ------------------------------------------------------------------------------------------------------


def _last_role_name(session: Session, incident_id: int, role: str, user_id: str) -> str | None:
    """The name the role's current holder was given when assigned, for the "was …" part of the next event."""
    events = session.scalars(
        select(TimelineEvent)
        .where(
            TimelineEvent.incident_id == incident_id,
            TimelineEvent.kind == "system",
            TimelineEvent.data["action"].as_string() == "role",
            TimelineEvent.data["role"].as_string() == role,
        )
        .order_by(TimelineEvent.id.desc())
        .limit(1)
    ).all()
    data = events[0].data if events else None
    return data.get("new_name") if data and data.get("new") == user_id else None


def assign_role(
    ctx: Context, session: Session, incident_id: int, role: str, user_id: str, user_name: str | None, *,
    actor: str | None, actor_name: str | None, report: Report | None = None,
) -> Change:
    incident = _lock(session, incident_id)
    if not incident.is_open:
        raise _refuse_closed(incident, "role")
    current = session.scalars(
        select(RoleAssignment).where(RoleAssignment.incident_id == incident.id, RoleAssignment.role == role)
    ).first()
    old = current.user_id if current else None
    if old == user_id:
        return Change(incident.public_id, "unchanged", old, user_id)
    now = ctx.clock.now()
    old_name = _last_role_name(session, incident.id, role, old) if old else None
    # The roles live in a row of their own: the incident's updated_at still moves (as the row's own clock moves
    # it), so whoever showed it knows.
    incident.updated_at = utc_now()
    if current is None:
        session.add(RoleAssignment(incident_id=incident.id, role=role, user_id=user_id, assigned_by=actor,
                                   assigned_at=now))
    else:
        current.user_id, current.assigned_by, current.assigned_at = user_id, actor, now
    _event(
        session, incident, actor=actor, actor_name=actor_name, at=now, action="role",
        data={"role": role, "old": old, "old_name": old_name, "new": user_id, "new_name": user_name},
    )
    ctx.hooks.on_role_assigned.fire(session, incident, user_id)
    _after_commit_change(ctx, session, incident_id, report=report)
    return Change(incident.public_id, "changed", old, user_id)


# ---- milestones -------------------------------------------------------------------------------------------------


def set_milestone(
    ctx: Context, session: Session, incident_id: int, name: str, at: datetime | None, actor: str | None,
    actor_name: str | None, *, source: dict[str, Any] | None = None, report: Report | None = None,
) -> MilestoneResult:
    """Sets (or corrects) one milestone; `at=None` means now. Never raises for a refusal: the result says why.

    The entry point for commands, reactions and other domains (evidence proposes `recovered` with a button).
    `milestone resolved` on an open incident resolves it. `source` lands in the event's data (e.g. the Slack
    message a reaction was on).
    """
    now = ctx.clock.now()
    when = minute(at if at is not None else now)
    incident = _lock(session, incident_id)
    base: _MilestoneFacts = {"public_id": incident.public_id, "milestone": name, "at": when,
                             "incident_status": incident.status}
    old = getattr(incident, f"{name}_at")
    if when > now:
        return MilestoneResult(outcome="refused", reason="future", old=old, **base)
    if name == "resolved" and incident.status == "cancelled":
        return MilestoneResult(outcome="refused", reason="closed", old=old, **base)
    if old == when and (name != "resolved" or not incident.is_open):
        return MilestoneResult(outcome="unchanged", old=old, **base)
    conflict = durations.order_conflict(incidents.milestone_times(incident), name, when)
    if conflict is not None:
        return MilestoneResult(outcome="refused", reason="order", old=old, conflict=conflict, **base)
    if old != when:
        _record_milestone(ctx, session, incident, name, when, actor=actor, actor_name=actor_name, source=source)
    closed = name == "resolved" and incident.is_open
    if closed:
        _close(ctx, session, incident, "resolved", actor, actor_name)
    base["incident_status"] = incident.status
    _after_commit_change(ctx, session, incident_id, notice="closed" if closed else None, actor=actor,
                         actor_name=actor_name, report=report)
    return MilestoneResult(outcome="set", old=old, closed=closed, **base)


def undo_milestone(ctx: Context, session: Session, incident_id: int, name: str, *, source_channel: str,
                   source_ts: str, actor: str) -> bool:
    """Takes back a milestone a reaction set, when that same person removes the reaction and nothing has changed
    the milestone since. It returns to its earlier value (or to unset). `resolved` is never undone this way."""
    if name == "resolved":
        return False
    incident = _lock(session, incident_id)
    event = session.scalars(
        select(TimelineEvent)
        .where(
            TimelineEvent.incident_id == incident.id,
            TimelineEvent.kind == "system",
            TimelineEvent.deleted_at.is_(None),
            TimelineEvent.data["action"].as_string() == "milestone",
            TimelineEvent.data["milestone"].as_string() == name,
        )
        .order_by(TimelineEvent.id.desc())
        .limit(1)
    ).first()
    data = event.data if event is not None else None
    current = getattr(incident, f"{name}_at")
    if (
        data is None or event is None or event.author_id != actor
        or data.get("source_channel") != source_channel or data.get("source_ts") != source_ts
        or current is None or data.get("new") != current.isoformat()
    ):
        return False
    previous = datetime.fromisoformat(data["old"]) if data.get("old") else None
    if previous is not None and durations.order_conflict(
        incidents.milestone_times(incident), name, previous
    ) is not None:
        return False
    _record_milestone(ctx, session, incident, name, previous, actor=actor, actor_name=event.author_name,
                      source={"via": "reaction_removed", "source_channel": source_channel, "source_ts": source_ts})
    _after_commit_change(ctx, session, incident_id)
    return True


def order_error(ctx: Context, incident: Incident, conflict: OrderConflict, at: datetime, usage: str) -> UsageError:
    return UsageError("milestone_order", usage, **order_params(ctx, incident, conflict, at))


def order_params(ctx: Context, incident: Incident, conflict: OrderConflict, at: datetime) -> dict[str, Any]:
    return {
        "milestone": conflict.milestone, "at": display(ctx, incident, at), "other": conflict.other,
        "other_at": display(ctx, incident, conflict.other_at), "relation": conflict.relation,
    }


def refusal(ctx: Context, session: Session, incident_id: int, result: MilestoneResult,
            usage: str = "milestone") -> UsageError:
    """The UsageError that explains a refused milestone, for the command's answer or a reaction's ephemeral."""
    incident = session.get_one(Incident, incident_id)
    if result.reason == "order" and result.conflict is not None:
        return order_error(ctx, incident, result.conflict, result.at, usage)
    if result.reason == "future":
        return UsageError("future_time", usage, value=display(ctx, incident, result.at))
    return _refuse_closed(incident, usage)


# ---- after the commit: jobs for the announcement and the thread, each opening its own short units of work ----


@dataclass
class _RefreshState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queued: set[int] = field(default_factory=set)
    per_incident: dict[int, threading.Lock] = field(default_factory=dict)

    def incident_lock(self, incident_id: int) -> threading.Lock:
        with self.lock:
            return self.per_incident.setdefault(incident_id, threading.Lock())


def _state(ctx: Context) -> _RefreshState:
    state: _RefreshState | None = ctx.extras.get("lifecycle.refresh")
    if state is None:
        state = ctx.extras.setdefault("lifecycle.refresh", _RefreshState())
    return state


def _after_commit_change(ctx: Context, session: Session, incident_id: int, *, notice: str | None = None,
                         actor: str | None = None, actor_name: str | None = None,
                         report: Report | None = None) -> None:
    """Queues the Slack side of a stored change for once the caller's transaction commits."""
    events = _take_added(session)
    after_commit(session, lambda: after_change(ctx, incident_id, notice=notice, actor=actor, actor_name=actor_name,
                                               report=report, events=events))


def after_change(ctx: Context, incident_id: int, *, notice: str | None = None, actor: str | None = None,
                 actor_name: str | None = None, report: Report | None = None,
                 events: list[TimelineEvent] | None = None) -> None:
    """The Slack side of a committed change, as background jobs: names, the announcement, the thread notice."""
    if events:
        ctx.jobs.submit(complete_names, ctx, [e.id for e in events])
    request_refresh(ctx, incident_id, report=report)
    if notice is not None:
        ctx.jobs.submit(post_notice, ctx, incident_id, notice, actor, actor_name, report)


def complete_names(ctx: Context, event_ids: list[int]) -> None:
    """Display names from Slack for the people on new events (the actor, a role's new and old holder).

    The command carries only a handle (`user_name`) and a mention may carry none; asking Slack happens here,
    after the ack, so nobody waits for it. Without an answer the handle stays.
    """
    with ctx.db.session() as session:
        events = session.scalars(select(TimelineEvent).where(TimelineEvent.id.in_(event_ids))).all()
        wanted = {e.author_id for e in events if e.author_id}
        for e in events:
            if e.data and e.data.get("action") == "role":
                wanted.update(u for u in (e.data.get("new"), e.data.get("old")) if u)
    names = {user: name for user in sorted(wanted) if (name := ctx.messenger.user_name(user))}
    if not names:
        return
    with ctx.db.session() as session:
        for e in session.scalars(select(TimelineEvent).where(TimelineEvent.id.in_(event_ids))).all():
            if e.author_id in names:
                e.author_name = names[e.author_id]
            if e.data and e.data.get("action") == "role":
                data = dict(e.data)
                for key in ("new", "old"):
                    if data.get(key) in names:
                        data[f"{key}_name"] = names[data[key]]
                e.data = data


def request_refresh(ctx: Context, incident_id: int, *, report: Report | None = None) -> None:
    """Queues one chat.update of the announcement. Changes that arrive while one is queued ride along with it."""
    state = _state(ctx)
    with state.lock:
        if incident_id in state.queued:
            return
        state.queued.add(incident_id)
    ctx.jobs.submit(refresh, ctx, incident_id, report)


def refresh(ctx: Context, incident_id: int, report: Report | None = None) -> bool:
    """Renders the announcement from the database and updates it; one at a time per incident, so an older
    rendering can never overwrite a newer one. A failure is stored for the sweep and reported."""
    state = _state(ctx)
    with state.incident_lock(incident_id):
        with state.lock:
            state.queued.discard(incident_id)
        try:
            incidents.refresh_announcement(ctx, incident_id)
        except MessengerError as error:
            log.warning("announcement update failed: %s", error.kind,
                        extra={"json_fields": {"incident_db_id": incident_id}})
            with ctx.db.session() as session:
                session.execute(
                    update(Incident)
                    .where(Incident.id == incident_id, Incident.announcement_ts.is_not(None))
                    .values(announcement_error=f"update: {error}")
                )
                public_id = session.get_one(Incident, incident_id).public_id
            if report is not None:
                report(ctx.say("lifecycle.refresh_failed", public_id=public_id, reason=error.kind))
            return False
        with ctx.db.session() as session:
            session.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.announcement_error.is_not(None),
                       Incident.announcement_ts.is_not(None))
                .values(announcement_error=None)
            )
        return True


def retry_failed_refreshes(ctx: Context) -> int:
    """The sweep: announcements whose last chat.update failed are rendered and updated again."""
    with ctx.db.session() as session:
        pending = session.scalars(
            select(Incident.id).where(Incident.announcement_ts.is_not(None), Incident.announcement_error.is_not(None))
        ).all()
    return sum(1 for incident_id in pending if refresh(ctx, incident_id))


def post_notice(ctx: Context, incident_id: int, notice: str, actor: str | None, actor_name: str | None,
                report: Report | None = None) -> None:
    """A short post in the thread when the incident is closed or reopened."""
    actor_name = (ctx.messenger.user_name(actor) if actor else None) or actor_name
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        if incident.announcement_ts is None:
            return  # no thread yet: the announcement, once posted, shows the status
        text = ctx.say(
            f"lifecycle.{notice}_notice", incident=incident, actor_name=actor_name or "",
            durations=durations.compute(incident), fmt=ctx.formatter(),
        )
        channel, thread_ts, public_id = incident.channel_id, incident.home_thread_ts, incident.public_id
        home = channels.home_channel(incident)
    try:
        ctx.messenger.post_message(channel, text, thread_ts=thread_ts)
    except MessengerError as error:
        log.warning("thread notice failed: %s", error.kind)
        if report is not None:
            report(ctx.say("lifecycle.notice_failed", public_id=public_id, reason=error.kind, home=home))


# ---- views: /incident timeline and /incident list ------------------------------------------------------------


def _important(row: Any) -> bool:
    return bool(row.highlighted) or row.kind in ("pin", "system", "milestone")


def timeline_view(
    ctx: Context, session: Session, incident_id: int,
    fits: Callable[[RenderedMessage], bool] = lambda message: True,
) -> RenderedMessage:
    """The readable timeline, capped for chat: every highlighted and system event, then the latest others, as
    many as `fits` allows (the platform's size limits, measured on the rendered text) up to TIMELINE_LIMIT."""
    incident = session.get_one(Incident, incident_id)
    every = list(session.execute(timeline.timeline_rows_query(incident_id)).all())
    fmt = ctx.formatter()
    milestones = incidents.milestone_times(incident)
    spans_days = fmt.spans_days(
        [*(r.occurred_at for r in every), *milestones.values(), incident.opened_at, ctx.clock.now()]
    )

    def render(limit: int) -> RenderedMessage:
        rows = every
        if len(rows) > limit:
            important = [r for r in rows if _important(r)][-limit:] if limit else []
            room = limit - len(important)
            others = [r for r in rows if not _important(r)][-room:] if room > 0 else []
            kept = {r.id for r in important} | {r.id for r in others}
            rows = [r for r in rows if r.id in kept]
        return ctx.renderer.message(
            "timeline", ctx.locale, incident=incident, events=rows, omitted=len(every) - len(rows), fmt=fmt,
            durations=durations.compute(incident), milestones=milestones, spans_days=spans_days,
            text_limit=TEXT_LIMIT,
        )

    return most_that_fits(render, TIMELINE_LIMIT, fits)


def list_view(ctx: Context, session: Session, asker: Asker) -> str:
    """Open incidents the asker may see (bot.access): this channel's first, then those of public channels and of
    the asker's other channels, each with status, severity and age. Raises AccessPending when Slack must be asked."""
    now = ctx.clock.now()
    channel = asker.channel_id
    is_open = Incident.status.not_in(CLOSED_STATUSES)
    channels = session.scalars(select(Incident.channel_id).where(is_open).distinct())
    visible = asker.visible_channels(session, channels)
    rows = session.scalars(
        select(Incident).where(is_open, Incident.channel_id.in_(visible)).order_by(Incident.opened_at.desc())
        .limit(LIST_LIMIT + 1)
    ).all()
    here = [i for i in rows[:LIST_LIMIT] if i.channel_id == channel]
    elsewhere = [i for i in rows[:LIST_LIMIT] if i.channel_id != channel]
    return ctx.say(
        "lifecycle.list", here=here, elsewhere=elsewhere, more=len(rows) > LIST_LIMIT, now=now,
        fmt=ctx.formatter(), ages={i.id: max(now - i.opened_at, timedelta(0)) for i in rows},
    )


def install(ctx: Context) -> None:
    ctx.hooks.on_sweep.register(lambda c: retry_failed_refreshes(c))
    ctx.hooks.on_announced_stale.register(request_refresh)
