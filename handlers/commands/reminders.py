"""`/incident meeting HH:MM | YYYY-MM-DD HH:MM`: moves the post-mortem meeting, and its reminders with it."""

from __future__ import annotations

import logging

from slack_bolt import Respond

from bot import incidents, reminders, timeline
from bot.context import Context
from bot.parsing import UsageError, decode
from bot.ports import MessengerError
from bot.timefmt import parse_future_clock_time
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand
from storage.models import Incident

log = logging.getLogger(__name__)


@incident_subcommand("meeting")
def meeting(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    text = " ".join(request.rest.split())
    if not text:
        raise UsageError("missing_meeting_time", "meeting")
    now = ctx.clock.now()
    try:
        # HH:MM is its next occurrence: a meeting is scheduled ahead, never in the past.
        when = parse_future_clock_time(text, now, ctx.settings.timezone).replace(second=0, microsecond=0)
    except ValueError:
        # Slack sends `<`, `>` and `&` as entities; the template escapes once, so echo what the person typed.
        raise UsageError("bad_meeting_time", "meeting", value=decode(text)[:40]) from None
    fmt = ctx.formatter()
    if when <= now:
        raise UsageError("meeting_in_past", "meeting", value=fmt.time(when, with_date=True))
    with ctx.db.session() as session:
        found = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        incident = session.get_one(Incident, found.id, with_for_update=True, populate_existing=True)
        if incident.status == "cancelled":
            raise UsageError("meeting_cancelled_incident", "meeting", incident_id=incident.public_id)
        old = incident.meeting_at
        with_date = fmt.spans_days([incident.opened_at, old, when, now])
        old_display, new_display = fmt.time(old, with_date=with_date), fmt.time(when, with_date=with_date)
        if old == when:
            return Answer(text=ctx.say("reminders.meeting_unchanged", public_id=incident.public_id,
                                       display=new_display))
        incident.meeting_at = when
        timeline.add_system_event(
            session, incident, actor=request.user_id, actor_name=request.user_name, at=now, action="meeting",
            data={"old": old.isoformat(), "new": when.isoformat(), "old_display": old_display,
                  "new_display": new_display},
        )
        session.flush()
        ctx.hooks.on_meeting_moved.fire(session, incident)
        incident_id, public_id = incident.id, incident.public_id
    ctx.jobs.submit(_refresh, ctx, incident_id)
    return Answer(text=ctx.say(
        "reminders.meeting_moved", public_id=public_id, old_display=old_display, new_display=new_display,
        pre_skipped=when - reminders.PRE_MEETING < now,
    ))


def _refresh(ctx: Context, incident_id: int) -> None:
    try:
        incidents.refresh_announcement(ctx, incident_id)
    except MessengerError as error:
        # The stored meeting time and its reminders are already right; only the announcement's text lags.
        log.warning("announcement refresh after meeting move failed: %s", error.kind)
