"""Submissions of the `/postmortem edit` modal (built and parsed in handlers/blocks/postmortem.py).

Bad input comes back as Slack's field errors (response_action "errors") and nothing is stored; a good
submission saves root cause, lessons, prevention and conclusion in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext

from bot import incidents, pm_parsing, postmortem
from bot.context import Context
from bot.parsing import UsageError
from bot.ports import MessengerError
from handlers.blocks import postmortem as blocks
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import Incident

log = logging.getLogger(__name__)


def field_errors(ctx: Context, values: dict[str, str]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for block_id in ("root_cause", "conclusion"):
        if len(values[block_id].strip()) > pm_parsing.MAX_TEXT:
            errors[block_id] = ctx.say("postmortem.error", code="text_too_long",
                                       params={"limit": pm_parsing.MAX_TEXT, "length": len(values[block_id])})
    for block_id in ("lessons", "prevention"):
        try:
            pm_parsing.parse_lines(values[block_id], "edit", max_items=postmortem.MAX_NOTES)
        except UsageError as error:
            errors[block_id] = ctx.say("postmortem.error", code=error.code, params=error.params)
    return errors


def on_submit(ctx: Context, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
    user = (body.get("user") or {}).get("id")
    values = blocks.submitted_values(view)
    errors = field_errors(ctx, values)
    if errors:
        ack(response_action="errors", errors=errors)
        return
    incident_id = blocks.edit_incident_id(view)
    if incident_id is None:
        ack()
        return
    with ctx.db.session() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            ack()
            return
        postmortem.save_edit(session, incident, values, user)
        incident_id, channel, public_id = incident.id, incident.channel_id, incident.public_id
    ack()
    ctx.jobs.submit(_after_save, ctx, incident_id, channel, user, public_id)


def _after_save(ctx: Context, incident_id: int, channel: str, user: str | None, public_id: str) -> None:
    try:
        incidents.refresh_announcement(ctx, incident_id)
        if user:
            ctx.messenger.post_ephemeral(channel, user, ctx.say("postmortem.edit_saved", public_id=public_id))
    except MessengerError as error:
        log.warning("after saving the post-mortem edit: %s", error.kind)


def register(app: App, ctx: Context) -> None:
    @app.view(blocks.EDIT_CALLBACK)
    @once(ctx)
    def edit_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_submit(ctx, ack, body, view)
