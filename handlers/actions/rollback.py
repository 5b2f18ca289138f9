"""The rollback buttons; their ids are built and parsed in handlers/blocks/rollback.py.

Confirm sits on a proposal in the incident thread: the claim is stored before the ack, so the clicker learns at once
when someone else's click won; the update itself runs in the background. Propose sits under an evidence summary
that saw the canary failing and posts the same proposal `/incident rollback` does.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond

from bot import rollback
from bot.context import Context
from handlers.blocks import rollback as blocks
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import Incident


def on_confirm(ctx: Context, body: dict[str, Any]) -> str | None:
    """What to tell the person who clicked, or None when the proposal message itself will say it."""
    click = blocks.parse_click(body, blocks.CONFIRM)
    if click is None:
        return ctx.say("rollback.refused", code="unknown", params={})
    refusal = rollback.confirm(ctx, click.target_id, click.user_id, click.user_name, channel=click.channel)
    if refusal is None:
        return None
    return ctx.say("rollback.refused", code=refusal.code, params=refusal.params)


def on_propose(ctx: Context, body: dict[str, Any]) -> str | None:
    click = blocks.parse_click(body, blocks.PROPOSE)
    if click is None:
        return ctx.say("rollback.refused", code="unknown", params={})
    if not ctx.settings.rollback_enabled:
        return ctx.say("rollback.disabled")
    with ctx.db.read() as session:
        incident = session.get(Incident, click.target_id)
        if incident is None or incident.channel_id != click.channel:
            return ctx.say("rollback.refused", code="unknown", params={})
    ctx.jobs.submit(rollback.propose_job, ctx, click.target_id, None, click.user_id)
    return None


def register(app: App, ctx: Context) -> None:
    def answer(respond: Respond, text: str | None) -> None:
        if text is not None:
            # The response_url is Slack too: used once the click's response is written, never before it.
            ctx.jobs.submit(respond, response_type="ephemeral", replace_original=False, text=text)

    @app.action(blocks.CONFIRM)
    @once(ctx)
    def confirm_rollback(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        # Claimed before the ack: of two clicks, the second is told at once that the first one won.
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            answer(respond, on_confirm(ctx, body))
        ack()

    @app.action(blocks.PROPOSE)
    @once(ctx)
    def propose_rollback(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            answer(respond, on_propose(ctx, body))
        ack()
