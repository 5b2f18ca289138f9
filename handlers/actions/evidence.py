"""Buttons of the evidence domain; their ids are built and parsed in handlers/blocks/evidence.py."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond

from bot import lifecycle
from bot.context import Context
from bot.evidence import service, view
from bot.ports import MessengerError
from handlers.blocks import evidence as blocks
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import Incident

log = logging.getLogger(__name__)


def register(app: App, ctx: Context) -> None:
    @app.action(blocks.CONFIRM_RECOVERED)
    @once(ctx)
    def confirm_recovered(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        ack()
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            confirm(ctx, body, respond)


def _ephemeral(ctx: Context, respond: Respond, text: str) -> None:
    # The response_url is Slack too: posted once the click's response is written, never before it.
    ctx.jobs.submit(respond, response_type="ephemeral", replace_original=False, text=text)


def confirm(ctx: Context, body: dict[str, Any], respond: Respond) -> None:
    """Records the `recovered` milestone at the time a passing verification measured, then redraws that message
    without its button. A stale or forged value changes nothing."""
    action = (body.get("actions") or [{}])[0]
    parsed = blocks.parse_confirm_value(str(action.get("value") or ""))
    user = body.get("user") or {}
    user_id, user_name = str(user.get("id") or ""), user.get("name") or user.get("username")
    payload = service.stored_verify(ctx, parsed[0], parsed[1]) if parsed else None
    if parsed is None or payload is None:
        _ephemeral(ctx, respond, ctx.say("evidence.confirm_invalid"))
        return
    incident_id, at = parsed
    with ctx.db.session() as session:
        result = lifecycle.set_milestone(ctx, session, incident_id, "recovered", at, user_id, user_name)
        error = None if result.ok else lifecycle.refusal(ctx, session, incident_id, result, usage="milestone")
        recorded = session.get_one(Incident, incident_id).recovered_at
    if error is not None:
        reason = ctx.say("incident.error", code=error.code, params=error.params)
        _ephemeral(ctx, respond, f"{ctx.say('evidence.confirm_failed')}\n{reason}")
        return
    v = view.verify_view_from_payload(payload)
    v.confirmed_by, v.confirmed_at = user_id, recorded or result.at
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    message_ts = container.get("message_ts")
    if channel and message_ts:
        ctx.jobs.submit(_redraw, ctx, incident_id, channel, message_ts, v)


def _redraw(ctx: Context, incident_id: int, channel: str, ts: str, v: view.VerifyView) -> None:
    message = blocks.verification_message(service.verification_view(ctx, incident_id, v))
    try:
        ctx.messenger.update_message(channel, ts, message.text, blocks=message.blocks)
    except MessengerError as error:
        # The milestone is stored and the announcement shows it; only the button stays behind.
        log.warning("could not redraw the verification message: %s", error.kind)
