"""Reminders that survive restarts: the RCA kickoff, the post-mortem meeting, and action-item follow-ups.

Every reminder is a row in `reminders`; the row, not the scheduler, is the truth. Delivery claims the row with
one conditional UPDATE (not sent, not cancelled, due, claim free), posts in the incident thread (top-level in
an incident's own channel, channel mode), then marks it sent. So a reminder due while the process was down is
posted once when it is back (marked late after LATE_AFTER), two processes on one database post it once, and a
Slack failure releases the claim for a later retry with backoff. A claim taken after an earlier one (a retry, or a
claim that lapsed with its process) looks for the reminder's post by its metadata before posting: the earlier
attempt may have posted it although nobody heard Slack's answer. An in-memory APScheduler (bot/scheduler.py)
wakes delivery at each due time, its jobs rebuilt from the table at start and kept in step as rows change, and a
sweep every SWEEP_SECONDS (and once at start) delivers whatever is due and unclaimed; the runtime's own retry
sweep does too. SCHEDULER_ENABLED=false keeps a process out of all of it; correctness never depends on that
setting.

Policy, decided here:
- At open: RCA kickoff at open + RCA_REMINDER_AFTER; pre-meeting 10 minutes before the meeting (skipped when
  that moment has already passed when the meeting is scheduled); meeting start (always scheduled); after the
  90-minute meeting a nudge to run `/postmortem report`.
- `cancelled` (false alarm, opened by mistake) cancels every pending reminder of the incident. Reopening it
  restores those still in the future.
- `resolved` keeps the post-mortem's clock: the guide runs the RCA (Phase 2) and the meeting (Phase 3) after
  recovery, and action items (Phase 4) for weeks after. What resolving cancels is whatever would now say
  nothing new: the RCA kickoff once the root cause is recorded, the report nudge once a report is posted,
  action reminders for items already done.
- The same "nothing new" rule is checked again at delivery (a reminder is dropped, not sent, when the root cause
  is recorded, a report exists, the item is done, or the meeting it announces has already started).
- Action items: `action_due` on the local calendar date (INCIDENT_TIMEZONE) of the item's due_at at 09:00, and
  `action_overdue` the next day at 09:00. A reminder whose moment has already passed when it is scheduled is
  skipped (an item created after 09:00 on its due date gets no "due today" post, only the overdue nudge).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session

from bot import incidents, timeline
from bot.context import Context
from bot.jobs import after_commit
from bot.parsing import UsageError
from bot.ports import MessengerError
from bot.render import RenderedMessage
from bot.scheduler import ReminderScheduler
from storage.db import Work
from storage.models import ActionItem, Incident, Reminder, Report, RoleAssignment, Why
from storage.sql import claim_lease, dialect_name, insert

log = logging.getLogger(__name__)

RCA = "rca_kickoff"
MEETING_PRE = "meeting_pre"
MEETING_START = "meeting_start"
REPORT_NUDGE = "report_nudge"
ACTION_DUE = "action_due"
ACTION_OVERDUE = "action_overdue"
INCIDENT_KINDS = (RCA, MEETING_PRE, MEETING_START, REPORT_NUDGE)
ACTION_KINDS = (ACTION_DUE, ACTION_OVERDUE)
REMINDER_EVENT = "incident_reminder"  # the message metadata that marks a reminder's post
# Not a post: archives a channel-mode incident's own channel (bot/channel_archive.py), claimed and retried like one.
CHANNEL_ARCHIVE = "channel_archive"

PRE_MEETING = timedelta(minutes=10)
MEETING_LENGTH = timedelta(minutes=90)
# The guide's 90-minute meeting: (agenda item, start minute, end minute).
AGENDA = (("timeline", 0, 10), ("root_cause", 10, 40), ("improvements", 40, 60), ("action_items", 60, 90))
REQUIRED_ROLES = ("lead", "backend", "devops")
RECOMMENDED_ROLES = ("monitoring", "manager", "qa")
ACTION_REMIND_AT = time(9, 0)

LATE_AFTER = timedelta(minutes=5)
# Longer than the Slack client's own retries (3 attempts × 10 s timeout plus backoff), so a slow post is
# never taken over by another process while it is still in flight.
CLAIM_LEASE = timedelta(minutes=2)
THREAD_WAIT = timedelta(seconds=10)
RETRY_BASE = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=30)
MAX_ATTEMPTS = 20  # about seven hours of Slack refusing before a reminder is given up (and the reason kept)
# The incident's channel is archived (channel mode archives it): no retry can post there.
CHANNEL_GONE = ("is_archived",)
SWEEP_SECONDS = 15.0
# A timer is set only for a reminder due within this much of now: the scheduler's sweep sets the others as they
# come within it, so each still fires on time. An open then sets none (its reminders are half an hour and more
# away), and a process holds timers for the next half minute only, however many incidents are open.
TIMER_HORIZON = timedelta(seconds=2 * SWEEP_SECONDS)

# Why a row was cancelled, kept in last_error; reopening restores only those cancelled with the incident.
CANCELLED_WITH_INCIDENT = "cancelled: incident cancelled"
SKIPPED_PASSED = "skipped: its time had passed when it was scheduled"

_QUEUE_KEY = "reminders.jobs"
_SCHEDULER_KEY = "reminders.scheduler"
_TEST_RE = re.compile(r"test|테스트|\bqa\b", re.IGNORECASE)


# ---- wiring ---------------------------------------------------------------------------------------------------


def install(ctx: Context) -> None:
    ctx.hooks.on_open.register(on_open)
    ctx.hooks.on_announced.register(on_announced)
    ctx.hooks.on_closed.register(on_closed)
    ctx.hooks.on_reopened.register(on_reopened)
    ctx.hooks.on_meeting_moved.register(on_meeting_moved)
    ctx.hooks.on_action_item_added.register(on_action_item_scheduled)
    ctx.hooks.on_action_item_reopened.register(on_action_item_scheduled)
    ctx.hooks.on_action_item_done.register(on_action_item_done)
    ctx.hooks.on_start.register(start)
    ctx.hooks.on_sweep.register(sweep)
    ctx.hooks.on_stop.register(stop)


def scheduler(ctx: Context) -> ReminderScheduler | None:
    """This process's running scheduler, or None (SCHEDULER_ENABLED=false, or not started)."""
    sched = ctx.extras.get(_SCHEDULER_KEY)
    return sched if isinstance(sched, ReminderScheduler) and sched.running else None


def start(ctx: Context) -> None:
    if not ctx.settings.scheduler_enabled:
        log.info("reminder scheduler disabled in this process (SCHEDULER_ENABLED=false)")
        return
    if scheduler(ctx) is not None:
        return
    sched = ReminderScheduler(wake=partial(run_reminder, ctx), sweep=partial(run_sweep, ctx),
                              sweep_seconds=SWEEP_SECONDS)
    sched.start()
    ctx.extras[_SCHEDULER_KEY] = sched
    rebuild_jobs(ctx, sched)


def rebuild_jobs(ctx: Context, sched: ReminderScheduler) -> None:
    """The timers of pending reminders due within TIMER_HORIZON, read from the table: the jobs themselves die with
    the process. What is already due is the start sweep's; a claimed row (a retry backing off) wakes when its claim
    ends. Run at start and by every sweep, which is how a reminder further away gets its timer in time."""
    now = ctx.clock.now()
    near = now + TIMER_HORIZON
    with ctx.db.read() as session:
        ahead = session.execute(
            select(Reminder.id, Reminder.due_at, Reminder.claimed_until).where(
                Reminder.sent_at.is_(None), Reminder.cancelled_at.is_(None),
                or_(and_(Reminder.due_at > now, Reminder.due_at <= near),
                    and_(Reminder.claimed_until > now, Reminder.claimed_until <= near)),
            )
        ).all()
    for reminder_id, due_at, claimed_until in ahead:
        wake = max(due_at, claimed_until or due_at)
        if sched.next_wake(reminder_id) != wake:
            sched.schedule(reminder_id, wake)


def sweep(ctx: Context) -> None:
    """The runtime's retry sweep delivers too (a second net, and what a script driving `runtime.sweep()` uses);
    a process told SCHEDULER_ENABLED=false sends no reminders of its own accord."""
    if ctx.settings.scheduler_enabled:
        deliver_due(ctx)


def stop(ctx: Context) -> None:
    sched = ctx.extras.pop(_SCHEDULER_KEY, None)
    if isinstance(sched, ReminderScheduler):
        sched.shutdown()


# ---- job functions: a failure is logged, never raised into the scheduler's worker ---------------------------


def run_reminder(ctx: Context, reminder_id: int) -> None:
    try:
        deliver(ctx, reminder_id)
    except Exception:
        log.exception("reminder %s delivery failed", reminder_id)


def run_sweep(ctx: Context) -> None:
    try:
        deliver_due(ctx)
        sched = scheduler(ctx)
        if sched is not None:
            rebuild_jobs(ctx, sched)
    except Exception:
        log.exception("reminder sweep failed")


# ---- scheduling rows ------------------------------------------------------------------------------------------


def _queue_job(ctx: Context, session: Session, *reminders: Reminder) -> None:
    """Sets the timers after the transaction commits: a timer that fired before the commit would find no row it can
    claim, and a rollback must leave no timer behind. One sync per transaction, with each row's latest state."""
    session.flush()
    _queue_times(ctx, session, [(reminder.id, reminder.incident_id,
                                 reminder.due_at if reminder.sent_at is None and reminder.cancelled_at is None
                                 else None) for reminder in reminders])


def _queue_times(ctx: Context, session: Work, rows: list[tuple[int, int, datetime | None]]) -> None:
    """(reminder id, incident id, due time or None when no longer pending) of rows written in `session`."""
    queue: dict[int, datetime | None] | None = session.info.get(_QUEUE_KEY)
    if queue is None:
        queue = session.info[_QUEUE_KEY] = {}
        after_commit(session, partial(_after_commit, ctx, session), state_key=_QUEUE_KEY)
    soonest = _soonest(ctx)
    for reminder_id, incident_id, due_at in rows:
        queue[reminder_id] = due_at
        if due_at is not None:
            soonest.lower(incident_id, due_at)


def _after_commit(ctx: Context, session: Work) -> None:
    queue = session.info.pop(_QUEUE_KEY, None)
    sched = scheduler(ctx)
    if not queue or sched is None:
        return
    # A timer for what comes due within TIMER_HORIZON (the sweep sets the rest in time); a timer set before, for a
    # time that has moved away or is no longer pending, goes. A stale timer would find nothing due to claim anyway.
    near = ctx.clock.now() + TIMER_HORIZON
    changes: dict[int, datetime | None] = {}
    for reminder_id, due_at in queue.items():
        if due_at is not None and due_at <= near:
            changes[reminder_id] = due_at
        elif sched.next_wake(reminder_id) is not None:
            changes[reminder_id] = None
    if changes:
        ctx.jobs.submit(_sync_jobs, ctx, changes)


def _sync_jobs(ctx: Context, queue: dict[int, datetime | None]) -> None:
    sched = scheduler(ctx)
    if sched is None:
        return
    for reminder_id, due_at in queue.items():
        if due_at is None:
            sched.unschedule(reminder_id)
        else:
            sched.schedule(reminder_id, due_at)


def _find(session: Session, incident_id: int, kind: str, action_item_id: int | None = None) -> Reminder | None:
    query = select(Reminder).where(Reminder.incident_id == incident_id, Reminder.kind == kind)
    query = query.where(
        Reminder.action_item_id.is_(None) if action_item_id is None else Reminder.action_item_id == action_item_id
    )
    return session.scalars(query.order_by(Reminder.id)).first()


def _rearm(reminder: Reminder, due_at: datetime) -> None:
    reminder.due_at = due_at
    reminder.sent_at = None
    reminder.cancelled_at = None
    reminder.claimed_until = None
    reminder.attempts = 0
    reminder.last_error = None
    reminder.late = False
    reminder.message_ts = None


def _cancel(reminder: Reminder, now: datetime, reason: str) -> bool:
    if reminder.sent_at is not None or reminder.cancelled_at is not None:
        return False
    reminder.cancelled_at = now
    reminder.claimed_until = None
    reminder.last_error = reason
    return True


def _set(
    ctx: Context, session: Session, incident_id: int, kind: str, due_at: datetime, *,
    action_item_id: int | None = None, always: bool = False,
) -> Reminder | None:
    """Creates, moves or revives one reminder. A sent one is posted again only when its time changes (the meeting
    moved, a new due date); a cancelled one comes back when it is scheduled again (an action item reopened)."""
    now = ctx.clock.now()
    reminder = _find(session, incident_id, kind, action_item_id)
    passed = due_at < now and not always
    if reminder is None:
        if passed:
            return None
        reminder = Reminder(incident_id=incident_id, kind=kind, action_item_id=action_item_id, due_at=due_at,
                            attempts=0, late=False)
        session.add(reminder)
    elif reminder.due_at == due_at and reminder.cancelled_at is None:
        return reminder  # unchanged: pending stays pending, sent stays sent (no second post)
    elif passed:
        if not _cancel(reminder, now, SKIPPED_PASSED):
            return reminder
    else:
        _rearm(reminder, due_at)
    _queue_job(ctx, session, reminder)
    return reminder


def _meeting_plan(incident: Incident) -> list[tuple[str, datetime, bool]]:
    """(kind, due, scheduled even when its moment has passed) for the meeting's reminders."""
    meeting = incident.meeting_at
    return [(MEETING_PRE, meeting - PRE_MEETING, False), (MEETING_START, meeting, True),
            (REPORT_NUDGE, meeting + MEETING_LENGTH, True)]


def on_open(ctx: Context, session: Work, incident: Incident) -> None:
    # A new incident has no reminders to look up: all of them go in with one Core INSERT (this runs before the
    # ack; the ORM's unit of work for four objects cost three times as much).
    now = ctx.clock.now()
    plan = [(RCA, incident.opened_at + ctx.settings.rca_reminder_after, False), *_meeting_plan(incident)]
    due = {kind: due_at for kind, due_at, always in plan if always or due_at >= now}
    _soonest(ctx).start(incident.id)
    if not due:
        return
    rows = [{"incident_id": incident.id, "kind": kind, "action_item_id": None, "due_at": due_at, "attempts": 0,
             "late": False} for kind, due_at in due.items()]
    dialect = dialect_name(session)
    # The usual open has nothing due within the horizon: no timer to set (the sweep sets them in time), so no ids
    # to learn. A new row can have no timer to take down either.
    timers = any(due_at <= now + TIMER_HORIZON for due_at in due.values())
    # Rows as parameters (`.values(rows)` was compiled anew every time). RETURNING makes it SQLAlchemy's
    # insertmanyvalues, one statement: on PostgreSQL always, as psycopg runs an executemany in pipeline mode, which
    # cost twice a statement's CPU (README "Performance", round 7); SQLite's executemany is a loop in C.
    returning = timers or dialect == "postgresql"
    result = session.execute(_new_reminders(dialect, returning=returning), rows)
    if not timers:
        soonest = _soonest(ctx)
        for due_at in due.values():
            soonest.lower(incident.id, due_at)
        return
    # One row per kind, so RETURNING's order does not matter.
    written = result.all()
    _queue_times(ctx, session, [(reminder_id, incident.id, due[kind]) for reminder_id, kind in written])


@functools.cache
def _new_reminders(dialect: str, *, returning: bool) -> Any:
    """Built once per dialect: building it cost the ack."""
    table = cast(Table, Reminder.__table__)
    statement = insert(dialect, table)
    return statement.returning(table.c.id, table.c.kind) if returning else statement


def _schedule_meeting(ctx: Context, session: Session, incident: Incident) -> None:
    for kind, due_at, always in _meeting_plan(incident):
        _set(ctx, session, incident.id, kind, due_at, always=always)


def on_meeting_moved(ctx: Context, session: Session, incident: Incident) -> None:
    _schedule_meeting(ctx, session, incident)


@dataclass(frozen=True)
class MeetingMove:
    public_id: str
    moved: bool  # False: the meeting was already at that time
    old_display: str
    new_display: str
    pre_meeting_skipped: bool  # the 10-minute warning's moment has already passed


def move_meeting(ctx: Context, session: Session, incident_id: int, when: datetime, *, actor: str,
                 actor_name: str | None) -> MeetingMove:
    """Moves the post-mortem meeting, and its reminders with it (on_meeting_moved), with a timeline event; the
    announcement shows the new time once the caller's transaction commits. Raises UsageError for a cancelled
    incident: it has no meeting to move."""
    now = ctx.clock.now()
    incident = session.get_one(Incident, incident_id, with_for_update=True, populate_existing=True)
    if incident.status == "cancelled":
        raise UsageError("meeting_cancelled_incident", "meeting", incident_id=incident.public_id)
    old = incident.meeting_at
    fmt = ctx.formatter()
    with_date = fmt.spans_days([incident.opened_at, old, when, now])
    old_display, new_display = fmt.time(old, with_date=with_date), fmt.time(when, with_date=with_date)
    move = MeetingMove(incident.public_id, old != when, old_display, new_display,
                       pre_meeting_skipped=when - PRE_MEETING < now)
    if not move.moved:
        return move
    incident.meeting_at = when
    timeline.add_system_event(
        session, incident, actor=actor, actor_name=actor_name, at=now, action="meeting",
        data={"old": old.isoformat(), "new": when.isoformat(), "old_display": old_display,
              "new_display": new_display},
    )
    session.flush()
    ctx.hooks.on_meeting_moved.fire(session, incident)
    after_commit(session, lambda: ctx.jobs.submit(_refresh_announcement, ctx, incident_id))
    return move


def _refresh_announcement(ctx: Context, incident_id: int) -> None:
    try:
        incidents.refresh_announcement(ctx, incident_id)
    except MessengerError as error:
        # The stored meeting time and its reminders are already right; only the announcement's text lags.
        log.warning("announcement refresh after meeting move failed: %s", error.kind)


def on_closed(ctx: Context, session: Session, incident: Incident) -> None:
    now = ctx.clock.now()
    pending = session.scalars(
        select(Reminder).where(
            Reminder.incident_id == incident.id, Reminder.sent_at.is_(None), Reminder.cancelled_at.is_(None)
        )
    ).all()
    has_report = bool(pending) and _has_report(session, incident.id)
    for reminder in pending:
        reason = _nothing_new(session, incident, reminder, now, has_report=has_report)
        if reason and _cancel(reminder, now, reason):
            _queue_job(ctx, session, reminder)


def on_reopened(ctx: Context, session: Session, incident: Incident) -> None:
    """Brings back what the cancellation took away, when it still lies ahead."""
    now = ctx.clock.now()
    cancelled = session.scalars(
        select(Reminder).where(
            Reminder.incident_id == incident.id, Reminder.sent_at.is_(None),
            Reminder.last_error == CANCELLED_WITH_INCIDENT, Reminder.due_at > now,
        )
    ).all()
    for reminder in cancelled:
        _rearm(reminder, reminder.due_at)
        _queue_job(ctx, session, reminder)


def action_reminder_times(ctx: Context, due_at: datetime) -> tuple[datetime, datetime]:
    """(due-day reminder, overdue nudge): 09:00 local on the due date and on the day after."""
    zone = ctx.settings.timezone
    day = due_at.astimezone(zone).date()
    due_day = datetime.combine(day, ACTION_REMIND_AT, tzinfo=zone)
    next_day = datetime.combine(day + timedelta(days=1), ACTION_REMIND_AT, tzinfo=zone)
    return due_day, next_day


def schedule_action_item(ctx: Context, session: Session, action_item: ActionItem) -> None:
    """Creates or replaces the due-day and overdue reminders of an action item (call it on add and on edit)."""
    if action_item.id is None:
        session.flush()
    if action_item.due_at is None or action_item.status == "done":
        cancel_action_item(ctx, session, action_item.id)
        return
    due_day, overdue = action_reminder_times(ctx, action_item.due_at)
    _set(ctx, session, action_item.incident_id, ACTION_DUE, due_day, action_item_id=action_item.id)
    _set(ctx, session, action_item.incident_id, ACTION_OVERDUE, overdue, action_item_id=action_item.id)


def schedule_once(ctx: Context, session: Session, incident_id: int, kind: str, due_at: datetime) -> None:
    """Sets (or moves) a one-off reminder of the incident; once carried out it is never set again."""
    found = _find(session, incident_id, kind)
    if found is None or found.sent_at is None:
        _set(ctx, session, incident_id, kind, due_at)


def cancel_kind(ctx: Context, session: Session, incident_id: int, kind: str, reason: str) -> None:
    found = _find(session, incident_id, kind)
    if found is not None and _cancel(found, ctx.clock.now(), reason):
        _queue_job(ctx, session, found)


def has_report(session: Session, incident_id: int) -> bool:
    return _has_report(session, incident_id)


def on_action_item_scheduled(ctx: Context, session: Session, action_item: ActionItem) -> None:
    """A new item, or a done one taken back: reminders only when it has a due date."""
    if action_item.due_at is not None:
        schedule_action_item(ctx, session, action_item)


def on_action_item_done(ctx: Context, session: Session, action_item: ActionItem) -> None:
    cancel_action_item(ctx, session, action_item.id)


def cancel_action_item(ctx: Context, session: Session, action_item_id: int) -> None:
    now = ctx.clock.now()
    for reminder in session.scalars(select(Reminder).where(Reminder.action_item_id == action_item_id)).all():
        if _cancel(reminder, now, "cancelled: action item done or removed"):
            _queue_job(ctx, session, reminder)


# ---- what applies ---------------------------------------------------------------------------------------------


def _has_report(session: Session, incident_id: int) -> bool:
    return session.scalar(
        select(Report.id).where(Report.incident_id == incident_id, Report.posted_at.is_not(None)).limit(1)
    ) is not None


def _nothing_new(
    session: Session, incident: Incident, reminder: Reminder, now: datetime, *, has_report: bool
) -> str | None:
    """Why this reminder would say nothing new, or None when it should be posted."""
    if incident.status == "cancelled":
        return CANCELLED_WITH_INCIDENT
    if reminder.kind == RCA and incident.root_cause:
        return "skipped: root cause already recorded"
    if reminder.kind == MEETING_PRE and now >= incident.meeting_at:
        return "skipped: the meeting has already started"
    if reminder.kind == REPORT_NUDGE and has_report:
        return "skipped: a report is already posted"
    if reminder.kind == CHANNEL_ARCHIVE and (incident.status != "resolved" or incident.mode != "channel"):
        return "skipped: the incident is no longer resolved"
    if reminder.kind in ACTION_KINDS:
        item = session.get(ActionItem, reminder.action_item_id) if reminder.action_item_id else None
        if item is None or item.status == "done":
            return "skipped: action item done or removed"
        if item.due_at is None:
            return "skipped: action item has no due date"
    return None


# ---- delivery -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | skipped (dropped: nothing new) | not_claimed (not due, taken, or done) | waiting | failed
    reminder_id: int
    detail: str = ""


def reminder_metadata(reminder_id: int, due_at: datetime) -> dict[str, Any]:
    """Slack message metadata naming the reminder and the time it was due (a moved meeting re-arms the same row
    for another time): how a later attempt recognises a post of this one that landed unanswered."""
    return {"event_type": REMINDER_EVENT, "event_payload": {"reminder_id": reminder_id, "due_at": due_at.isoformat()}}


def _claim(ctx: Context, reminder_id: int, now: datetime) -> bool | None:
    """Takes the row: None when someone else has it or it is not due; else whether an earlier claim may have posted
    it (one whose process died after Slack took the post, or an attempt Slack left unanswered)."""
    with ctx.db.session() as session:
        seen = session.scalar(select(Reminder.claimed_until).where(Reminder.id == reminder_id))
        if not claim_lease(
            session, Reminder.claimed_until,
            Reminder.id == reminder_id, Reminder.sent_at.is_(None), Reminder.cancelled_at.is_(None),
            Reminder.due_at <= now,
            now=now, until=now + CLAIM_LEASE, seen=seen,
        ):
            return None
    return seen is not None


def _release(ctx: Context, reminder_id: int, retry_at: datetime, **values: Any) -> None:
    with ctx.db.session() as session:
        session.execute(update(Reminder).where(Reminder.id == reminder_id).values(claimed_until=retry_at, **values))
    sched = scheduler(ctx)
    if sched is not None:
        sched.schedule(reminder_id, retry_at)


def retry_delay(attempts: int) -> timedelta:
    return min(RETRY_BASE * int(2 ** max(0, attempts - 1)), RETRY_MAX)  # int(): typeshed types int ** int as Any


@dataclass(frozen=True)
class _Post:
    channel: str
    thread_ts: str | None  # None: top-level, in an incident's own channel
    due_at: datetime
    late: bool
    message: RenderedMessage | None  # None: the channel is archived instead (CHANNEL_ARCHIVE)
    public_id: str
    kind: str


def deliver(ctx: Context, reminder_id: int) -> Outcome:
    """Posts one reminder if it is due and nobody else has it. Safe to call any number of times, anywhere."""
    now = ctx.clock.now()
    retried = _claim(ctx, reminder_id, now)
    if retried is None:
        return Outcome("not_claimed", reminder_id)
    try:
        post = _prepare(ctx, reminder_id, now)
    except Exception as error:
        # A bug or a database hiccup must not leave the row claimed for good: back off and try again.
        log.exception("reminder %s could not be prepared", reminder_id)
        return _failed(ctx, reminder_id, type(error).__name__, str(error)[:500], "", "")
    if isinstance(post, Outcome):
        return post
    try:
        if post.message is None:
            ctx.messenger.archive_channel(post.channel)
            ts = None
        else:
            metadata = reminder_metadata(reminder_id, post.due_at)
            # Never sent again blind: no attempt can have posted it before it was due.
            ts = ctx.messenger.find_posted(post.channel, metadata, since=post.due_at.timestamp(),
                                           thread_ts=post.thread_ts) if retried else None
            if ts is None:
                ts = ctx.messenger.post_message(post.channel, post.message.text, blocks=post.message.blocks,
                                                thread_ts=post.thread_ts, metadata=metadata)
    except MessengerError as error:
        return _failed(ctx, reminder_id, error.kind, str(error), post.public_id, post.kind)
    with ctx.db.session() as session:
        # Only if the row still describes what we posted: a meeting moved meanwhile re-armed it for the new time.
        session.execute(
            update(Reminder)
            .where(Reminder.id == reminder_id, Reminder.due_at == post.due_at, Reminder.sent_at.is_(None))
            .values(sent_at=ctx.clock.now(), message_ts=ts, late=post.late, claimed_until=None, last_error=None)
        )
    log.info("reminder sent%s", " late" if post.late else "",
             extra={"json_fields": {"incident_id": post.public_id, "reminder": post.kind}})
    return Outcome("sent", reminder_id)


def _prepare(ctx: Context, reminder_id: int, now: datetime) -> _Post | Outcome:
    """The claimed reminder's message, or why it is not posted (dropped, or waiting for the thread)."""
    with ctx.db.session() as session:
        reminder = session.get_one(Reminder, reminder_id)
        incident_id, kind = reminder.incident_id, reminder.kind
        incident = session.get_one(Incident, incident_id)
        has_report = kind == REPORT_NUDGE and _has_report(session, incident_id)
        reason = _nothing_new(session, incident, reminder, now, has_report=has_report)
        if reason:
            _cancel(reminder, now, reason)
            log.info("reminder dropped: %s", reason,
                     extra={"json_fields": {"incident_id": incident.public_id, "reminder": kind}})
            return Outcome("skipped", reminder_id, reason)
        if incident.announcement_ts is not None:
            late = now - reminder.due_at > LATE_AFTER
            message = None if kind == CHANNEL_ARCHIVE else render(ctx, session, reminder, incident, now=now, late=late)
            return _Post(
                channel=incident.channel_id, thread_ts=incident.home_thread_ts, due_at=reminder.due_at, late=late,
                message=message, public_id=incident.public_id, kind=kind,
            )
    # The announcement (the thread's parent) is still being posted or retried: look again shortly.
    _release(ctx, reminder_id, now + THREAD_WAIT, last_error="waiting for the incident thread")
    return Outcome("waiting", reminder_id)


def _failed(ctx: Context, reminder_id: int, error_kind: str, detail: str, public_id: str, kind: str) -> Outcome:
    now = ctx.clock.now()
    fields = {"json_fields": {"incident_id": public_id, "reminder": kind}}
    with ctx.db.session() as session:
        attempts = int(session.get_one(Reminder, reminder_id).attempts) + 1
        if attempts >= MAX_ATTEMPTS or error_kind in CHANNEL_GONE:
            session.execute(
                update(Reminder).where(Reminder.id == reminder_id).values(
                    attempts=attempts, cancelled_at=now, claimed_until=None, last_error=f"gave up: {detail}"
                )
            )
            log.error("reminder given up after %d attempts: %s", attempts, error_kind, extra=fields)
            return Outcome("failed", reminder_id, "gave up")
    _release(ctx, reminder_id, now + retry_delay(attempts), attempts=attempts, last_error=detail)
    log.warning("reminder post failed (%s); retrying in %s", error_kind, retry_delay(attempts), extra=fields)
    return Outcome("failed", reminder_id, error_kind)


def due_ids(ctx: Context, *, incident_id: int | None = None, limit: int = 200) -> list[int]:
    now = ctx.clock.now()
    query = select(Reminder.id).where(
        Reminder.sent_at.is_(None),
        Reminder.cancelled_at.is_(None),
        Reminder.due_at <= now,
        or_(Reminder.claimed_until.is_(None), Reminder.claimed_until < now),
    )
    if incident_id is not None:
        query = query.where(Reminder.incident_id == incident_id)
    with ctx.db.read() as session:
        return list(session.scalars(query.order_by(Reminder.due_at, Reminder.id).limit(limit)).all())


def deliver_due(ctx: Context, *, incident_id: int | None = None) -> list[Outcome]:
    """The sweep: every due, unclaimed reminder, oldest first. Tests call it directly with a ManualClock."""
    return [deliver(ctx, reminder_id) for reminder_id in due_ids(ctx, incident_id=incident_id)]


class Soonest:
    """incident id → the soonest due time of the reminders this process wrote for it since it opened it, so that
    an announcement looks for due reminders only when one can be due. An incident not opened here (or forgotten:
    the map is bounded) is unknown and read as before. A reminder another replica sets has its own timer there
    and the sweeps, so a wrong "none due yet" costs at most the sweep interval, as any job this process never
    knew."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._lock = threading.Lock()
        self._max = max_entries
        self._soonest: OrderedDict[int, datetime | None] = OrderedDict()

    def start(self, incident_id: int) -> None:
        with self._lock:
            self._soonest[incident_id] = None
            while len(self._soonest) > self._max:
                self._soonest.popitem(last=False)

    def lower(self, incident_id: int, due_at: datetime) -> None:
        with self._lock:
            if incident_id in self._soonest:
                known = self._soonest[incident_id]
                self._soonest[incident_id] = due_at if known is None else min(known, due_at)

    def none_due(self, incident_id: int, now: datetime) -> bool:
        """True only when every reminder of the incident is known to lie after `now`."""
        with self._lock:
            if incident_id not in self._soonest:
                return False
            soonest = self._soonest[incident_id]
        return soonest is None or soonest > now


def _soonest(ctx: Context) -> Soonest:
    return ctx.shared(Soonest, Soonest)


def on_announced(ctx: Context, incident_id: int) -> None:
    # Reminders that came due before the thread existed need not wait for the next sweep; when none can be due
    # yet (the usual case, the announcement follows the open at once), there is nothing to look for.
    if scheduler(ctx) is not None and not _soonest(ctx).none_due(incident_id, ctx.clock.now()):
        deliver_due(ctx, incident_id=incident_id)


# ---- texts ----------------------------------------------------------------------------------------------------


def _roles(session: Session, incident_id: int) -> dict[str, str]:
    rows = session.execute(
        select(RoleAssignment.role, RoleAssignment.user_id).where(RoleAssignment.incident_id == incident_id)
    ).all()
    return {role: user for role, user in rows}


def _involves_tests(session: Session, incident: Incident) -> bool:
    """The guide recommends QA "when the failure involved tests": judged from what the team wrote so far."""
    texts = [incident.title, incident.root_cause or ""]
    texts += session.scalars(select(Why.text).where(Why.incident_id == incident.id)).all()
    return any(_TEST_RE.search(text) for text in texts)


def render(
    ctx: Context, session: Session, reminder: Reminder, incident: Incident, *, now: datetime, late: bool,
    locale: str | None = None,
) -> RenderedMessage:
    locale = locale or ctx.locale
    fmt = ctx.formatter(locale)
    roles = _roles(session, incident.id)
    meeting = incident.meeting_at
    agenda = [(key, meeting + timedelta(minutes=a), meeting + timedelta(minutes=b)) for key, a, b in AGENDA]
    params: dict[str, Any] = {
        "incident": incident,
        "fmt": fmt,
        "late": late,
        "due_at": reminder.due_at,
        "now": now,
        "roles": roles,
        "role_order": ctx.settings.roles,
        "required": [(role, roles.get(role)) for role in REQUIRED_ROLES],
        "recommended": [(role, roles.get(role)) for role in RECOMMENDED_ROLES],
        "involves_tests": False,
        "meeting_at": meeting,
        "meeting_end": meeting + MEETING_LENGTH,
        "agenda": agenda,
        "rca_after": ctx.settings.rca_reminder_after,
        # Dates appear whenever the times involved fall on more than one local day.
        "with_date": fmt.spans_days([incident.opened_at, reminder.due_at, now, meeting, meeting + MEETING_LENGTH]),
        "item": None,
    }
    if reminder.kind in (MEETING_PRE, MEETING_START):
        params["involves_tests"] = _involves_tests(session, incident)
    if reminder.kind in ACTION_KINDS and reminder.action_item_id is not None:
        item = session.get_one(ActionItem, reminder.action_item_id)
        params["item"] = item
        params["due_date"] = fmt.local_date(item.due_at).isoformat() if item.due_at else ""
    return ctx.renderer.message(f"reminders/{reminder.kind}", locale, **params)
