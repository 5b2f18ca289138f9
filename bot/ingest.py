"""Messages in an incident's home become timeline events; edits and deletions follow them. The home is the
announcement's thread, or in channel mode the incident's own channel, top-level and threads alike
(incidents.find_home).

Each is stored before Slack gets its ack, and nothing on that path asks Slack anything: the author's display
name is one this process learnt lately, or is filled in afterwards by a background job, one lookup per person per
incident at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from bot import homes, timeline
from bot.context import Context
from bot.homes import TtlLru
from bot.render import slack_unescape
from bot.sanitize import clean_optional, clean_text
from bot.timefmt import slack_ts_to_datetime
from storage.models import TimelineEvent

_lookups_lock = threading.Lock()
NAMES_KEPT = 2048
NAMES_TTL_SECONDS = 600.0


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
    """True when a new event was stored; False for non-incident messages, the bot's own, and retries.

    The hot path: the home from the cache (else one read that takes no write lock: most messages in a channel
    belong to no incident), then one INSERT whose conflict clause absorbs Slack's retries. Nothing else."""
    # A thread's parent is a top-level message: only an incident's own channel (channel mode) records those.
    thread_ts = message.thread_ts if message.thread_ts != message.ts else None
    if message.user is not None and message.user == bot_user_id:
        return False
    incident_id = homes.find(ctx, message.channel, thread_ts)
    if incident_id is None:
        return False
    # Bots name themselves; a person's name is one this process already knows, or is looked up after the ack.
    name = clean_optional(message.username) or (_names(ctx).get(message.user) if message.user else None)
    text, at = clean_text(slack_unescape(message.text)), slack_ts_to_datetime(message.ts)
    try:
        stored = _insert(ctx, incident_id, message, name, text, at)
    except IntegrityError:
        # The remembered incident was deleted (on any replica): its foreign key fails. Ask again, once.
        homes.forget_incident(ctx, incident_id)
        incident_id = homes.find(ctx, message.channel, thread_ts)
        if incident_id is None:
            return False
        stored = _insert(ctx, incident_id, message, name, text, at)
    if stored and message.user and name is None:
        complete_names_later(ctx, incident_id, message.user)
    return stored


def _insert(ctx: Context, incident_id: int, message: IncomingMessage, name: str | None, text: str,
            at: datetime) -> bool:
    with ctx.db.statement() as session:  # one INSERT: on PostgreSQL one round trip
        return timeline.record_message(session, incident_id, channel=message.channel, ts=message.ts,
                                       user=message.user or message.bot_id, author_name=name, text=text, at=at)


def _names(ctx: Context) -> TtlLru[str, str]:
    """Display names this process looked up lately, so a person's next replies are stored named."""
    return ctx.shared(_KnownNames, _KnownNames)


class _KnownNames(TtlLru[str, str]):
    def __init__(self) -> None:
        super().__init__(max_entries=NAMES_KEPT, ttl=NAMES_TTL_SECONDS)


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
    _names(ctx).put(user, name)
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
