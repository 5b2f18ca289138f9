"""Events API listeners. Every subscribed event has one, so Slack never gets a 404 and retries."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext

from bot import ingest
from bot.context import Context
from handlers.guards import wait_until_acked

log = logging.getLogger(__name__)


def _incoming(event: dict[str, Any]) -> ingest.IncomingMessage:
    return ingest.IncomingMessage(
        channel=event.get("channel", ""), ts=event.get("ts", ""), thread_ts=event.get("thread_ts"),
        user=event.get("user"), text=event.get("text") or "", bot_id=event.get("bot_id"),
        username=event.get("username"),
    )


def register(app: App, ctx: Context) -> None:
    @app.event("message")
    def on_message(event: dict[str, Any], context: BoltContext) -> None:
        wait_until_acked(context)
        subtype = event.get("subtype")
        if subtype == "message_changed":
            changed = event.get("message") or {}
            ingest.record_edit(ctx, event.get("channel", ""), changed.get("ts", ""), changed.get("text") or "")
        elif subtype == "message_deleted":
            ingest.record_delete(ctx, event.get("channel", ""), event.get("deleted_ts", ""))
        elif subtype in (None, "thread_broadcast", "bot_message", "file_share", "me_message"):
            ingest.record_reply(ctx, _incoming(event))

    @app.event("app_mention")
    def on_mention(event: dict[str, Any]) -> None:
        # Mentions in an incident thread are ordinary replies there; the `message` event records them.
        return None

    for name in ("reaction_added", "reaction_removed"):
        app.event(name)(_reaction_listener(ctx, name))


def _reaction_listener(ctx: Context, name: str) -> Any:
    from handlers import reactions

    def on_reaction(event: dict[str, Any], context: BoltContext) -> None:
        wait_until_acked(context)
        reactions.handle(ctx, name, event)

    on_reaction.__name__ = f"on_{name}"
    return on_reaction
