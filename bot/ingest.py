"""Thread replies in an incident's home become timeline events; edits and deletions follow them.

Each is stored before Slack gets its ack, and nothing on that path asks Slack anything: the author's display
name is filled in afterwards by a background job, one lookup per person per incident at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import update

from bot import incidents, timeline
from bot.context import Context
from bot.render import slack_unescape
from bot.sanitize import clean_optional, clean_text
from bot.timefmt import slack_ts_to_datetime
from storage.models import Incident, TimelineEvent

_lookups_lock = threading.Lock()


@dataclass(frozen=True)
class IncomingMessage:
    channel: str
    ts: str
    thread_ts: str | None
    user: str | None
    text: str
    bot_id: str | None = None
    username: str | None = None


def record_reply(ctx: Context, message: IncomingMessage, *, bot_user_id: str | None = None) -> bool:
    """True when a new event was stored; False for non-incident messages, the bot's own, and retries."""
    if not message.thread_ts or message.thread_ts == message.ts:
        return False
    if message.user is not None and message.user == bot_user_id:
        return False
    # Most thread messages in a channel belong to no incident: finding that out takes no write lock.
    with ctx.db.read() as session:
        incident = incidents.find_by_thread(session, message.channel, message.thread_ts)
        if incident is None:
            return False
        incident_id = incident.id
    name = clean_optional(message.username)  # bots name themselves; people are looked up after the ack
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        stored = timeline.record_message(
            session, incident, channel=message.channel, ts=message.ts, user=message.user or message.bot_id,
            author_name=name, text=clean_text(slack_unescape(message.text)), at=slack_ts_to_datetime(message.ts),
        )
    if stored and message.user and name is None:
        complete_names_later(ctx, incident_id, message.user)
    return stored


def complete_names_later(ctx: Context, incident_id: int, user: str) -> None:
    """Queues one users.info lookup for `user` in this incident unless one is already queued: a burst of
    replies from the same people with Slack slow must not fill the background pool with identical calls."""
    with _lookups_lock:
        queued: set[tuple[int, str]] = ctx.extras.setdefault("ingest.name_lookups", set())
        if (incident_id, user) in queued:
            return
        queued.add((incident_id, user))
    ctx.jobs.submit(_complete_names, ctx, incident_id, user)


def _complete_names(ctx: Context, incident_id: int, user: str) -> None:
    try:
        name = clean_optional(ctx.messenger.user_name(user))
    finally:
        # Forgotten before the write below, so a reply stored from now on queues a lookup of its own.
        with _lookups_lock:
            ctx.extras.setdefault("ingest.name_lookups", set()).discard((incident_id, user))
    if not name:
        return  # unknown rather than wrong: the timeline and the report fall back to the ID
    with ctx.db.session() as session:
        session.execute(
            update(TimelineEvent)
            .where(TimelineEvent.incident_id == incident_id, TimelineEvent.author_id == user,
                   TimelineEvent.kind.in_(("message", "pin")), TimelineEvent.author_name.is_(None))
            .values(author_name=name)
        )


def record_edit(ctx: Context, channel: str, ts: str, text: str) -> bool:
    with ctx.db.session() as session:
        return timeline.edit_message(
            session, channel=channel, ts=ts, text=clean_text(slack_unescape(text)), at=ctx.clock.now()
        ) > 0


def record_delete(ctx: Context, channel: str, ts: str) -> bool:
    with ctx.db.session() as session:
        return timeline.delete_message(session, channel=channel, ts=ts, at=ctx.clock.now()) > 0
