"""`/incident meeting HH:MM | YYYY-MM-DD HH:MM`: moves the post-mortem meeting, and its reminders with it."""

from __future__ import annotations

from slack_bolt import Respond

from bot import incidents, reminders
from bot.context import Context
from bot.parsing import UsageError, decode
from bot.timefmt import parse_future_clock_time
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand


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
    if when <= now:
        raise UsageError("meeting_in_past", "meeting", value=ctx.formatter().time(when, with_date=True))
    with ctx.db.session() as session:
        found = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        move = reminders.move_meeting(ctx, session, found.id, when, actor=request.user_id,
                                      actor_name=request.user_name)
    if not move.moved:
        return Answer(text=ctx.say("reminders.meeting_unchanged", public_id=move.public_id,
                                   display=move.new_display))
    return Answer(text=ctx.say(
        "reminders.meeting_moved", public_id=move.public_id, old_display=move.old_display,
        new_display=move.new_display, pre_skipped=move.pre_meeting_skipped,
    ))
