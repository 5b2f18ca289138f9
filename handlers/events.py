"""Events API listeners. Every subscribed event has one, so Slack never gets a 404 and retries.

The app runs with process_before_response: each listener runs before Bolt writes the response, so an event
is acked only once it is stored. A listener stores and returns; it never calls Slack (names, fetching a
pinned message, acknowledging a milestone happen in ctx.jobs, which start once the response is written).
A write that fails answers 503, and Slack delivers the event again; a redelivery of a stored event is a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext, BoltResponse
from sqlalchemy.exc import SQLAlchemyError

from bot import ingest, pins
from bot.context import Context
from bot.logsetup import outage_log
from handlers import home, reactions
from handlers.guards import ACK_WRITTEN

log = logging.getLogger(__name__)

# Subtypes that are someone (or some integration) saying something; the others are channel housekeeping.
SPOKEN = (None, "thread_broadcast", "bot_message", "file_share", "me_message")


def _str(value: Any) -> str | None:
    """A field as Slack documents it (a string), else None: a malformed event is ignored, never a 500."""
    return value if isinstance(value, str) else None


def _incoming(event: dict[str, Any]) -> ingest.IncomingMessage | None:
    channel, ts = _str(event.get("channel")), _str(event.get("ts"))
    if not channel or not ts:
        return None
    return ingest.IncomingMessage(
        channel=channel, ts=ts, thread_ts=_str(event.get("thread_ts")), user=_str(event.get("user")),
        text=_str(event.get("text")) or "", bot_id=_str(event.get("bot_id")), username=_str(event.get("username")),
    )


def store_before_ack(ctx: Context, context: BoltContext, what: str, store: Callable[..., object],
                     *args: Any, **kwargs: Any) -> BoltResponse | None:
    """Runs `store(ctx, *args)` before the response; None lets Bolt ack with 200. Jobs it queues wait for the
    response to be written."""
    try:
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            store(ctx, *args, **kwargs)
    except SQLAlchemyError:
        outage_log.error(log, "could not store a %s event; answering 503 so that Slack delivers it again", what)
        return BoltResponse(status=503, body={"error": "database unavailable"})
    return None


def register(app: App, ctx: Context) -> None:
    pins.install(ctx)

    @app.event("message")
    def on_message(event: dict[str, Any], context: BoltContext) -> BoltResponse | None:
        subtype = event.get("subtype")
        channel = _str(event.get("channel"))
        if subtype == "message_changed":
            changed = event.get("message")
            ts = _str(changed.get("ts")) if isinstance(changed, dict) else None
            if not channel or not ts or not isinstance(changed, dict):
                return None
            text = _str(changed.get("text")) or ""
            return store_before_ack(ctx, context, "message_changed", ingest.record_edit, channel, ts, text)
        if subtype == "message_deleted":
            deleted = _str(event.get("deleted_ts"))
            if not channel or not deleted:
                return None
            return store_before_ack(ctx, context, "message_deleted", ingest.record_delete, channel, deleted)
        message = _incoming(event) if subtype in SPOKEN else None
        if message is None:
            return None
        return store_before_ack(ctx, context, "message", ingest.record_reply, message, bot_user_id=context.bot_user_id)

    @app.event("app_mention")
    def on_mention(event: dict[str, Any]) -> None:
        # Mentions in an incident thread are ordinary replies there; the `message` event records them.
        return None

    for name in ("reaction_added", "reaction_removed"):
        app.event(name)(_reaction_listener(ctx, name))
    home.register(app, ctx)


def _reaction_listener(ctx: Context, name: str) -> Callable[..., BoltResponse | None]:
    def on_reaction(event: dict[str, Any], context: BoltContext) -> BoltResponse | None:
        reaction = reactions.incoming(name, event)
        if reaction is None or reaction.user == context.bot_user_id:
            return None  # not on a message, or our own acknowledgement
        return store_before_ack(ctx, context, name, pins.receive, reaction)

    on_reaction.__name__ = f"on_{name}"
    return on_reaction
