"""`/incident open` and `/incident help`."""

from __future__ import annotations

import logging

from slack_bolt import Respond

from bot import incidents
from bot.context import Context
from bot.parsing import parse_open
from bot.ports import MessengerError
from handlers.commands.base import Answer, CommandRequest, incident_subcommand, tell

log = logging.getLogger(__name__)


@incident_subcommand("help")
def help_(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    return Answer(text=ctx.say("incident.help"))


@incident_subcommand("open")
def open_(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    open_request = parse_open(request.rest)
    with ctx.db.session() as session:
        incident = incidents.open_incident(
            ctx, session, open_request, channel_id=request.channel_id, user_id=request.user_id,
            user_name=request.user_name,
        )
    # Only once the incident is committed: the post, and what reacts to it, find its row.
    ctx.jobs.submit(announce, ctx, incident.id, incident.public_id, respond)
    return Answer(text=ctx.say("incident.open_ack", public_id=incident.public_id))


def announce(ctx: Context, incident_id: int, public_id: str, respond: Respond) -> None:
    # post_announcement fires on_announced itself when this call is the one that put the post on record.
    try:
        incidents.post_announcement(ctx, incident_id)
    except MessengerError as error:
        # Slack may have posted it: "failed" would be wrong, and the sweep finishes it once, whichever it was.
        outcome = "incident.announce_pending" if error.outcome_unknown else "incident.announce_failed"
        tell(respond, ctx.say(outcome, public_id=public_id, reason=error.kind))
