"""The buttons of an alert's messages; their ids are built and parsed in handlers/blocks/alerts.py.

Declare and Dismiss sit on the alert's message in ALERT_CHANNEL, and the recovery proposal on a cleared alert's
note in its incident's thread: only people in that channel see them, and the domain acts only on a click that
came from the alert's own message. The decision is stored before the ack; the Slack work follows it.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond

from bot import alerts
from bot.context import Context
from handlers.blocks import alerts as blocks
from handlers.guards import ACK_WRITTEN
from handlers.replays import once


def on_click(ctx: Context, body: dict[str, Any]) -> str | None:
    """Stores what the click decides; returns what to tell the person who clicked, if anything."""
    click = blocks.parse_click(body)
    if click is None:
        return ctx.say("alerts.invalid")
    place = {"channel": click.channel, "message_ts": click.message_ts}
    with ctx.db.session() as session:
        if click.choice == "recovered":
            recovery = alerts.record_recovery(ctx, session, click.alert_id, user_id=click.user_id,
                                              user_name=click.user_name, **place)
            return _recovery_answer(ctx, recovery)
        if click.choice == "declare":
            decision = alerts.declare(ctx, session, click.alert_id, user_id=click.user_id,
                                      user_name=click.user_name, **place)
        else:
            decision = alerts.dismiss(ctx, session, click.alert_id, user_id=click.user_id, **place)
    return _decision_answer(ctx, decision)


def _decision_answer(ctx: Context, decision: alerts.Decision) -> str | None:
    if decision.outcome == "already_declared":
        return ctx.say("alerts.already_declared", public_id=decision.public_id, by=decision.by)
    if decision.outcome == "already_dismissed":
        return ctx.say("alerts.already_dismissed", by=decision.by)
    if decision.outcome == "invalid":
        return ctx.say("alerts.invalid")
    return None  # declared or dismissed: the alert's message says so for everyone


def _recovery_answer(ctx: Context, recovery: alerts.Recovery) -> str | None:
    if recovery.outcome == "already":
        return ctx.say("alerts.recovery_already", at=ctx.formatter().time(recovery.at))
    if recovery.outcome == "refused" and recovery.error is not None:
        reason = ctx.say("incident.error", code=recovery.error.code, params=recovery.error.params)
        return ctx.say("alerts.recovery_failed", reason=reason)
    if recovery.outcome == "invalid":
        return ctx.say("alerts.invalid")
    return None


def register(app: App, ctx: Context) -> None:
    @app.action(blocks.ACTIONS)
    @once(ctx)
    def alert_button(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        # Stored before the ack: if the database fails, Slack shows the clicker an error instead of silence.
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            answer = on_click(ctx, body)
            if answer is not None:
                # The response_url is Slack too: used once the click's response is written, never before it.
                ctx.jobs.submit(respond, response_type="ephemeral", replace_original=False, text=answer)
        ack()
