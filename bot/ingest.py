"""Thread replies in an incident's home become timeline events; edits and deletions follow them."""

from __future__ import annotations

from dataclasses import dataclass

from bot import incidents, timeline
from bot.context import Context
from bot.render import slack_unescape
from bot.timefmt import slack_ts_to_datetime
from storage.models import Incident


@dataclass(frozen=True)
class IncomingMessage:
    channel: str
    ts: str
    thread_ts: str | None
    user: str | None
    text: str
    bot_id: str | None = None
    username: str | None = None


def is_own(ctx: Context, message: IncomingMessage) -> bool:
    return message.user is not None and message.user == ctx.messenger.bot_user_id


def record_reply(ctx: Context, message: IncomingMessage) -> bool:
    """True when a new event was stored; False for non-incident messages, the bot's own, and retries."""
    if not message.thread_ts or message.thread_ts == message.ts or is_own(ctx, message):
        return False
    # Most thread messages in a channel belong to no incident: finding that out takes no write lock.
    with ctx.db.read() as session:
        incident = incidents.find_by_thread(session, message.channel, message.thread_ts)
        if incident is None:
            return False
        incident_id = incident.id
    # The name lookup is a Slack call: keep it outside the write transaction.
    name = message.username or (ctx.messenger.user_name(message.user) if message.user else None)
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        return timeline.record_message(
            session, incident, channel=message.channel, ts=message.ts, user=message.user or message.bot_id,
            author_name=name, text=slack_unescape(message.text), at=slack_ts_to_datetime(message.ts),
        )


def record_edit(ctx: Context, channel: str, ts: str, text: str) -> bool:
    with ctx.db.session() as session:
        return timeline.edit_message(session, channel=channel, ts=ts, text=slack_unescape(text), at=ctx.clock.now()) > 0


def record_delete(ctx: Context, channel: str, ts: str) -> bool:
    with ctx.db.session() as session:
        return timeline.delete_message(session, channel=channel, ts=ts, at=ctx.clock.now()) > 0
