"""`/incident open` and `/incident help`; `/incident open` with nothing after it opens the declare form."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, Respond

from bot import channels, declare, incidents
from bot.context import Context
from bot.parsing import CommandText, parse_open
from bot.ports import MessengerError
from handlers import modals
from handlers.blocks import declare as declare_blocks
from handlers.commands.base import Answer, CommandRequest, incident_subcommand, tell
from storage.models import Incident

log = logging.getLogger(__name__)


@incident_subcommand("help")
def help_(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    return Answer(text=ctx.say("incident.help"))


@incident_subcommand("open")
def open_(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    open_request = parse_open(request.rest)
    # Core work, not a Session: every statement the ack waits for is a Core one (Database.work).
    with ctx.db.work() as work:
        refused = request.admit(work)  # the delivery recorded and the budget taken first, in this transaction
        if refused is None:
            incident = incidents.open_incident(
                ctx, work, open_request, channel_id=request.channel_id, user_id=request.user_id,
                user_name=request.user_name, announcing=True,
            )
            answer = Answer(text=opened_answer(ctx, incident))
            if request.keep_answer is not None:  # kept for replays with the incident: no transaction after the ack
                request.keep_answer(work, answer)
    if refused is not None:
        raise refused  # once the delivery's record is committed: a replay gets this refusal again, never an open
    # Only once the incident is committed: the post, and what reacts to it, find its row.
    ctx.jobs.submit(announce, ctx, incident.id, incident.public_id, respond, incidents.Opened(incident))
    return answer


def opened_answer(ctx: Context, incident: Incident) -> str:
    """What the person who opened `incident` is told, by the command or by the declare form."""
    ack = "channels.open_ack" if incident.mode == channels.CHANNEL else "incident.open_ack"
    return ctx.say(ack, public_id=incident.public_id)


def announce(ctx: Context, incident_id: int, public_id: str, respond: Respond, opened: incidents.Opened | None) -> None:
    announce_telling(ctx, incident_id, public_id, lambda text: tell(respond, text), opened=opened)


def announce_telling(ctx: Context, incident_id: int, public_id: str, told: Callable[[str], object], *,
                     opened: incidents.Opened | None = None) -> None:
    """Posts the announcement; a failure is `told` to the person who opened the incident. `opened`: the incident
    as an open that took the announcement's lease for this call committed it."""
    # post_announcement fires on_announced itself when this call is the one that put the post on record.
    try:
        incidents.post_announcement(ctx, incident_id, opened=opened)
    except MessengerError as error:
        # Slack may have posted it: "failed" would be wrong, and the sweep finishes it once, whichever it was.
        outcome = "incident.announce_pending" if error.outcome_unknown else "incident.announce_failed"
        told(ctx.say(outcome, public_id=public_id, reason=error.kind))


# ---- `/incident open` without a title: the declare form ------------------------------------------------------


def wants_form(parsed: CommandText, body: dict[str, Any]) -> bool:
    """`/incident open` and nothing else, with the trigger a modal needs: the form rather than the usage."""
    return parsed.sub == "open" and not parsed.rest and parsed.incident_id is None and bool(body.get("trigger_id"))


def open_form(ctx: Context, body: dict[str, Any], ack: Ack, respond: Respond) -> None:
    """Opens the declare form first thing (nothing is read or stored before it); its submission declares in the
    command's channel (handlers/views/declare.py)."""
    form = declare.form(ctx, str(body.get("user_id") or ""), declare.channel_id(str(body.get("channel_id") or "")))
    opening = modals.open_at_once(
        ctx, body.get("trigger_id"), declare_blocks.declare_modal(form),
        late=lambda error: tell(respond, ctx.say("declare.modal_failed", reason=error.kind)),
    )
    if opening.opened:
        ack()
    elif opening.outcome == "slow":
        ack(response_type="ephemeral", text=ctx.say("declare.modal_slow"))
    else:
        ack(response_type="ephemeral", text=ctx.say("declare.modal_failed", reason=opening.reason))
