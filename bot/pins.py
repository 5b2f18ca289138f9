"""Reactions on messages: 📌 puts a message on an incident's timeline, milestone emoji set milestones.

Which incident a message belongs to: the incident whose thread it is in (or whose announcement it is); a
message already on a timeline belongs to that incident; anything else in the channel belongs to the
channel's single open incident. With several open incidents, or none, the reaction is ignored silently.

Slack redelivers events; the unique constraints (one event per message per incident, one pin per person per
event) make a redelivery change nothing, and a refusal is told once per reaction event.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot import incidents, lifecycle, timeline
from bot.context import Context
from bot.parsing import CLOSED_STATUSES
from bot.ports import ChatMessage, MessengerError
from bot.render import slack_unescape
from bot.timefmt import slack_ts_to_datetime
from storage.models import EventPin, Incident, TimelineEvent

log = logging.getLogger(__name__)

PIN = "pushpin"
ACK_EMOJI = "ballot_box_with_check"  # the bot's "noted", distinct from every default milestone emoji
_NOTIFIED_MAX = 2000


@dataclass(frozen=True)
class Reaction:
    added: bool
    user: str
    emoji: str
    channel: str
    ts: str
    event_ts: str | None = None

    @property
    def key(self) -> tuple[str | None, str, str, str, str, bool]:
        return (self.event_ts, self.user, self.emoji, self.channel, self.ts, self.added)


@dataclass(frozen=True)
class Located:
    incident_id: int
    thread_ts: str | None  # the thread the reacted message is in, for a reply in context
    in_incident_thread: bool  # the incident's announcement or a reply under it
    message: ChatMessage | None = None
    event_id: int | None = None  # the timeline event that already holds this message


def emoji_name(raw: str) -> str:
    """`+1::skin-tone-2` → `+1`; reaction names carry skin tones after a double colon."""
    return raw.split("::", 1)[0].strip(":")


def handle(ctx: Context, reaction: Reaction) -> None:
    if not reaction.user or not reaction.channel or not reaction.ts:
        return
    if reaction.user == ctx.messenger.bot_user_id:
        return  # our own acknowledgements
    name = emoji_name(reaction.emoji)
    if name == PIN:
        if reaction.added:
            pin(ctx, reaction)
        else:
            unpin(ctx, reaction)
    elif name in ctx.settings.milestone_emoji:
        milestone = ctx.settings.milestone_emoji[name]
        if reaction.added:
            set_from_reaction(ctx, reaction, milestone)
        else:
            undo_from_reaction(ctx, reaction, milestone)


# ---- finding the incident -------------------------------------------------------------------------------------


def _known(session: Session, channel: str, ts: str) -> Located | None:
    """Without asking Slack: an announcement, or a message already on some incident's timeline."""
    incident = incidents.find_by_thread(session, channel, ts)
    if incident is not None:
        return Located(incident.id, None, True)
    row = session.execute(
        select(TimelineEvent.id, TimelineEvent.kind, Incident.id, Incident.announcement_ts)
        .join(Incident, Incident.id == TimelineEvent.incident_id)
        .where(TimelineEvent.slack_channel == channel, TimelineEvent.slack_ts == ts,
               TimelineEvent.deleted_at.is_(None))
        .order_by(TimelineEvent.kind.asc(), TimelineEvent.id.desc())  # a thread "message" before a channel "pin"
        .limit(1)
    ).first()
    if row is None:
        return None
    event_id, kind, incident_id, announcement_ts = row
    in_thread = kind == "message"
    return Located(incident_id, announcement_ts if in_thread else None, in_thread, event_id=event_id)


def _single_open(session: Session, channel: str) -> int | None:
    ids = session.scalars(
        select(Incident.id).where(Incident.channel_id == channel, Incident.status.not_in(CLOSED_STATUSES)).limit(2)
    ).all()
    return ids[0] if len(ids) == 1 else None


def locate(ctx: Context, channel: str, ts: str, *, need_message: bool) -> Located | None:
    with ctx.db.session() as session:
        known = _known(session, channel, ts)
    if known is not None and (not need_message or known.event_id is not None):
        return known
    try:
        message = ctx.messenger.fetch_message(channel, ts)
    except MessengerError as error:
        log.warning("could not fetch the reacted message: %s", error.kind)
        return None
    if message is None:
        return None
    if known is not None:
        return Located(known.incident_id, known.thread_ts, known.in_incident_thread, message, known.event_id)
    thread_ts = message.thread_ts if message.thread_ts and message.thread_ts != ts else None
    with ctx.db.session() as session:
        if thread_ts is not None:
            incident = incidents.find_by_thread(session, channel, thread_ts)
            if incident is not None:
                return Located(incident.id, thread_ts, True, message)
        incident_id = _single_open(session, channel)
    if incident_id is None:
        return None
    return Located(incident_id, thread_ts, False, message)


# ---- 📌 ---------------------------------------------------------------------------------------------------------


def _insert_pin(session: Session, event_id: int, user: str, at: datetime) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(EventPin).values(event_id=event_id, user_id=user, created_at=at)
        .on_conflict_do_nothing(index_elements=["event_id", "user_id"])
    )


def pin(ctx: Context, reaction: Reaction) -> bool:
    """Puts the message on the timeline, highlighted, at its own time and with its own author."""
    located = locate(ctx, reaction.channel, reaction.ts, need_message=True)
    if located is None:
        return False
    if located.event_id is None:
        message = located.message
        assert message is not None
        author = message.user or message.bot_id
        # The name is a Slack call: outside the write transaction.
        name = ctx.messenger.user_name(message.user) if message.user else None
        kind = "message" if located.in_incident_thread and located.thread_ts else "pin"
        with ctx.db.session() as session:
            incident = session.get_one(Incident, located.incident_id)
            timeline.record_message(
                session, incident, channel=reaction.channel, ts=reaction.ts, user=author, author_name=name,
                text=slack_unescape(message.text), at=slack_ts_to_datetime(reaction.ts), kind=kind, highlighted=True,
            )
    now = ctx.clock.now()
    with ctx.db.session() as session:
        event = timeline.find_message_event(session, located.incident_id, reaction.channel, reaction.ts)
        if event is None:
            return False
        if event.kind == "pin":
            event.deleted_at = None  # pinned again after the last 📌 was taken off
        elif event.deleted_at is not None:
            return False  # the message itself was deleted
        event.highlighted = True
        _insert_pin(session, event.id, reaction.user, now)
    return True


def unpin(ctx: Context, reaction: Reaction) -> int:
    """Removes this person's 📌; when it was the last, a pin leaves the timeline and a reply loses its highlight."""
    now = ctx.clock.now()
    changed = 0
    with ctx.db.session() as session:
        pinned = session.scalars(
            select(TimelineEvent)
            .join(EventPin, EventPin.event_id == TimelineEvent.id)
            .where(TimelineEvent.slack_channel == reaction.channel, TimelineEvent.slack_ts == reaction.ts,
                   EventPin.user_id == reaction.user)
        ).all()
        for event in pinned:
            session.execute(delete(EventPin).where(EventPin.event_id == event.id, EventPin.user_id == reaction.user))
            left = session.scalar(select(func.count()).select_from(EventPin).where(EventPin.event_id == event.id))
            if left:
                continue
            event.highlighted = False
            if event.kind == "pin" and event.deleted_at is None:
                event.deleted_at = now
            changed += 1
    return changed


# ---- milestone emoji --------------------------------------------------------------------------------------------


def set_from_reaction(ctx: Context, reaction: Reaction, milestone: str) -> lifecycle.MilestoneResult | None:
    located = locate(ctx, reaction.channel, reaction.ts, need_message=False)
    if located is None:
        return None
    name = ctx.messenger.user_name(reaction.user)
    result = lifecycle.set_milestone(
        ctx, located.incident_id, milestone, slack_ts_to_datetime(reaction.ts), reaction.user, name,
        source={"via": "reaction", "emoji": emoji_name(reaction.emoji), "source_channel": reaction.channel,
                "source_ts": reaction.ts},
    )
    if result.ok:
        try:
            ctx.messenger.add_reaction(reaction.channel, reaction.ts, ACK_EMOJI)
        except MessengerError as error:
            log.warning("could not acknowledge the milestone reaction: %s", error.kind)
        return result
    if _first_time(ctx, reaction):
        error = lifecycle.refusal(ctx, located.incident_id, result)
        text = ctx.say("incident.error", code=error.code, params=error.params)
        try:
            ctx.messenger.post_ephemeral(reaction.channel, reaction.user, text, thread_ts=located.thread_ts)
        except MessengerError as failure:
            log.warning("could not explain a refused milestone reaction: %s", failure.kind)
    return result


def undo_from_reaction(ctx: Context, reaction: Reaction, milestone: str) -> bool:
    located = locate(ctx, reaction.channel, reaction.ts, need_message=False)
    if located is None:
        return False
    return lifecycle.undo_milestone(
        ctx, located.incident_id, milestone, source_channel=reaction.channel, source_ts=reaction.ts,
        actor=reaction.user,
    )


_notified_lock = threading.Lock()


def _first_time(ctx: Context, reaction: Reaction) -> bool:
    """A redelivered reaction event must not repeat the ephemeral explanation (bounded memory, per process)."""
    with _notified_lock:
        seen = ctx.extras.setdefault("pins.notified", OrderedDict())
        if reaction.key in seen:
            return False
        seen[reaction.key] = True
        while len(seen) > _NOTIFIED_MAX:
            seen.popitem(last=False)
        return True
