"""Reactions on messages: 📌 puts a message on an incident's timeline, milestone emoji set milestones.

Which incident a message belongs to: the incident whose thread it is in (or whose announcement it is), or whose
own channel it is in (channel mode); a message already on a timeline belongs to that incident; anything else in
the channel belongs to the channel's single open incident. With several open incidents, or none, the reaction is
ignored silently.

A reaction is stored (`receive`, a `MessageReaction` row per person, message and emoji) before Slack gets its
ack; what it needs from Slack (the message's text, names, the ☑ acknowledgement) happens afterwards (`apply`).
The row keeps the person's latest event by Slack's `event_ts`, so an add and a remove apply in the order they
were made, whatever order their deliveries or their background work finish in. A redelivery changes nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from bot import channels, incidents, ingest, lifecycle, timeline
from bot.context import Context
from bot.parsing import CLOSED_STATUSES
from bot.ports import ChatMessage, MessengerError
from bot.render import slack_unescape
from bot.sanitize import clean_text
from bot.timefmt import slack_ts_to_datetime
from storage.models import EventPin, Incident, MessageReaction, TimelineEvent
from storage.sql import upsert

log = logging.getLogger(__name__)

PIN = "pushpin"
ACK_EMOJI = "ballot_box_with_check"  # the bot's "noted", distinct from every default milestone emoji
# A stored reaction whose work has not finished this long after it arrived was lost with its process: the sweep
# carries it out. Long enough never to race the job that is still running it.
PENDING_AFTER = timedelta(seconds=60)
# The work for one message runs one at a time in this process (striped locks: bounded memory).
_message_locks = [threading.Lock() for _ in range(64)]


@dataclass(frozen=True)
class Reaction:
    added: bool
    user: str
    emoji: str
    channel: str
    ts: str
    event_ts: str | None = None


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


def _row_key(channel: str, ts: str, user: str, emoji: str) -> tuple[ColumnElement[bool], ...]:
    return (MessageReaction.channel == channel, MessageReaction.message_ts == ts, MessageReaction.user_id == user,
            MessageReaction.emoji == emoji)


# ---- before the ack ---------------------------------------------------------------------------------------------


def receive(ctx: Context, reaction: Reaction) -> bool:
    """Stores a 📌 or milestone reaction and queues its work; other emoji are ignored. Runs before the ack, so
    it never calls Slack. True when there is work to do (False for a redelivery of work already done)."""
    if not reaction.user or not reaction.channel or not reaction.ts:
        return False
    name = emoji_name(reaction.emoji)
    if name != PIN and name not in ctx.settings.milestone_emoji:
        return False
    now = ctx.clock.now()
    # Slack's ts are "seconds.micros" of a fixed width, so they order as strings.
    event_ts = reaction.event_ts or f"{now.timestamp():.6f}"
    with ctx.db.session() as session:
        session.execute(upsert(
            session, MessageReaction,
            {"channel": reaction.channel, "message_ts": reaction.ts, "user_id": reaction.user, "emoji": name,
             "added": reaction.added, "event_ts": event_ts, "applied": False, "updated_at": now},
            index_elements=["channel", "message_ts", "user_id", "emoji"],
            set_=lambda new: {"added": new.added, "event_ts": new.event_ts, "applied": False,
                              "updated_at": new.updated_at},
            where=lambda new: MessageReaction.event_ts < new.event_ts,  # the later event wins
        ))
        applied = session.scalar(select(MessageReaction.applied).where(*_row_key(reaction.channel, reaction.ts,
                                                                                  reaction.user, name)))
    if applied:
        return False
    ctx.jobs.submit(apply, ctx, reaction.channel, reaction.ts, reaction.user, name)
    return True


# ---- after the ack ----------------------------------------------------------------------------------------------


def apply(ctx: Context, channel: str, ts: str, user: str, emoji: str) -> None:
    """Carries out what the person's stored reaction says now (not what the event that queued this said)."""
    with _message_locks[hash((channel, ts)) % len(_message_locks)]:
        if emoji == PIN:
            apply_pins(ctx, channel, ts)
        else:
            _apply_milestone(ctx, channel, ts, user, emoji)


def apply_pending(ctx: Context) -> int:
    """The sweep: reactions stored before a crash whose work never ran."""
    with ctx.db.read() as session:
        pending = session.execute(
            select(MessageReaction.channel, MessageReaction.message_ts, MessageReaction.user_id, MessageReaction.emoji)
            .where(MessageReaction.applied.is_(False), MessageReaction.updated_at < ctx.clock.now() - PENDING_AFTER)
            .limit(200)
        ).all()
    for channel, ts, user, emoji in pending:
        apply(ctx, channel, ts, user, emoji)
    return len(pending)


def install(ctx: Context) -> None:
    ctx.hooks.on_sweep.register(apply_pending)


# ---- finding the incident -------------------------------------------------------------------------------------


def _known(session: Session, channel: str, ts: str) -> Located | None:
    """Without asking Slack: an announcement, or a message already on some incident's timeline."""
    incident = incidents.find_by_thread(session, channel, ts)
    if incident is not None:
        return Located(incident.id, None, True)
    row = session.execute(
        select(TimelineEvent.id, TimelineEvent.kind, Incident.id, Incident.announcement_ts, Incident.mode)
        .join(Incident, Incident.id == TimelineEvent.incident_id)
        .where(TimelineEvent.slack_channel == channel, TimelineEvent.slack_ts == ts,
               TimelineEvent.deleted_at.is_(None))
        .order_by(TimelineEvent.kind.asc(), TimelineEvent.id.desc())  # a thread "message" before a channel "pin"
        .limit(1)
    ).first()
    if row is None:
        return None
    event_id, kind, incident_id, announcement_ts, mode = row
    in_thread = kind == "message"
    # A reply is answered in its incident's thread; in channel mode the channel is the home, so at its top level.
    context = announcement_ts if in_thread and mode != channels.CHANNEL else None
    return Located(incident_id, context, in_thread, event_id=event_id)


def _single_open(session: Session, channel: str) -> int | None:
    ids = session.scalars(
        select(Incident.id).where(Incident.channel_id == channel, Incident.status.not_in(CLOSED_STATUSES)).limit(2)
    ).all()
    return ids[0] if len(ids) == 1 else None


def locate(ctx: Context, channel: str, ts: str, *, need_message: bool) -> Located | None:
    with ctx.db.read() as session:
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
    with ctx.db.read() as session:
        # A reply in an incident's thread, or any message of an incident's own channel (channel mode).
        incident = incidents.find_home(session, channel, thread_ts)
        if incident is not None:
            return Located(incident.id, thread_ts, thread_ts is not None, message)
        incident_id = _single_open(session, channel)
    if incident_id is None:
        return None
    return Located(incident_id, thread_ts, False, message)


# ---- 📌 ---------------------------------------------------------------------------------------------------------


def _pinned_by(session: Session, channel: str, ts: str, *, lock: bool = False) -> tuple[set[str], set[str]]:
    """(who pins the message now, who has a stored 📌 at all). `lock` keeps a concurrent apply for the same
    message (another replica's) waiting until this transaction ends."""
    query = select(MessageReaction.user_id, MessageReaction.added).where(
        MessageReaction.channel == channel, MessageReaction.message_ts == ts, MessageReaction.emoji == PIN
    )
    rows = session.execute(query.with_for_update() if lock else query).all()
    return {user for user, added in rows if added}, {user for user, _ in rows}


def apply_pins(ctx: Context, channel: str, ts: str) -> None:
    """Makes the timeline show the message as pinned exactly by the people whose latest 📌 is on: a pin joins
    the timeline with the first and leaves it with the last, and a reply is highlighted meanwhile."""
    with ctx.db.read() as session:
        wanted, _ = _pinned_by(session, channel, ts)
    # The message's text is a Slack call: outside the write transaction, and only when someone pins it.
    located = locate(ctx, channel, ts, need_message=True) if wanted else None
    now = ctx.clock.now()
    recorded: tuple[int, str] | None = None
    with ctx.db.session() as session:
        wanted, reacted = _pinned_by(session, channel, ts, lock=True)
        if wanted and located is not None and located.event_id is None and located.message is not None:
            recorded = _record_pinned_message(session, channel, ts, located)
        for event in session.scalars(
            select(TimelineEvent).where(TimelineEvent.slack_channel == channel, TimelineEvent.slack_ts == ts)
        ).all():
            _set_pins(session, event, wanted, reacted, now)
        # Everything read under the lock is now carried out; a row written after it queued its own apply.
        session.execute(
            update(MessageReaction)
            .where(MessageReaction.channel == channel, MessageReaction.message_ts == ts, MessageReaction.emoji == PIN)
            .values(applied=True)
        )
    if recorded is not None:
        ingest.complete_names_later(ctx, *recorded)


def _record_pinned_message(session: Session, channel: str, ts: str, located: Located) -> tuple[int, str] | None:
    """Puts the message on the timeline, at its own time and with its own author; the name comes later.
    Returns what needs a name lookup."""
    message = located.message
    assert message is not None
    author = message.user or message.bot_id
    kind = "message" if located.in_incident_thread and located.thread_ts else "pin"
    incident = session.get_one(Incident, located.incident_id)
    stored = timeline.record_message(
        session, incident, channel=channel, ts=ts, user=author, author_name=None,
        text=clean_text(slack_unescape(message.text)), at=slack_ts_to_datetime(ts), kind=kind, highlighted=True,
    )
    return (located.incident_id, message.user) if stored and message.user else None


def _set_pins(session: Session, event: TimelineEvent, wanted: set[str], reacted: set[str], now: datetime) -> None:
    have = set(session.scalars(select(EventPin.user_id).where(EventPin.event_id == event.id)).all())
    # Only people with a stored 📌 are taken off: pins from before reactions were stored stay.
    gone = (have & reacted) - wanted
    if gone:
        session.execute(delete(EventPin).where(EventPin.event_id == event.id, EventPin.user_id.in_(gone)))
    for user in sorted(wanted - have):
        session.execute(upsert(session, EventPin, {"event_id": event.id, "user_id": user, "created_at": now},
                               index_elements=["event_id", "user_id"]))
    pinned = bool((have - gone) | wanted)
    if event.kind == "pin":
        event.highlighted = pinned
        if not pinned and event.deleted_at is None:
            event.deleted_at = now
        elif pinned:
            event.deleted_at = None  # pinned again after the last 📌 was taken off
    elif event.deleted_at is None:  # a deleted reply stays deleted, pinned or not
        event.highlighted = pinned


# ---- a message added from its menu (bot/add_to_timeline.py) ----------------------------------------------------

# The pin of a message added from its menu is its adder's under this prefix: no 📌 removed ever takes it off.
ADDED_PIN = "added:"


def home_of(session: Session, message: ChatMessage) -> int | None:
    """The incident `message` belongs to as `locate` finds it, short of "the channel's single open incident", and
    without asking Slack (the message is at hand): its announcement, its home, or the timeline holding it."""
    known = _known(session, message.channel, message.ts)
    if known is not None:
        return known.incident_id
    home = incidents.find_home(session, message.channel, _thread_of(message))
    return home.id if home is not None else None


def _thread_of(message: ChatMessage) -> str | None:
    return message.thread_ts if message.thread_ts and message.thread_ts != message.ts else None


def _located_in(session: Session, incident_id: int, message: ChatMessage) -> Located:
    """Where `message` stands for this incident, as `locate` would say: in its thread (a reply) or not (a pin)."""
    known = _known(session, message.channel, message.ts)
    if known is not None and known.incident_id == incident_id:
        return Located(incident_id, known.thread_ts, known.in_incident_thread, message, known.event_id)
    thread_ts = _thread_of(message)
    home = incidents.find_home(session, message.channel, thread_ts)
    in_home = home is not None and home.id == incident_id
    return Located(incident_id, thread_ts, in_home and thread_ts is not None, message)


def add_message(session: Session, incident_id: int, message: ChatMessage, *, by: str,
                now: datetime) -> tuple[int, bool]:
    """Puts `message` on the incident's timeline exactly as a 📌 by `by` would (the same row and kind, at the
    message's own time, highlighted), and keeps it there. Returns (its event id, whether it is new there)."""
    located = _located_in(session, incident_id, message)
    event = timeline.find_message_event(session, incident_id, message.channel, message.ts)
    new = event is None or (event.kind == "pin" and event.deleted_at is not None)
    if event is None:
        _record_pinned_message(session, message.channel, message.ts, located)
        event = timeline.find_message_event(session, incident_id, message.channel, message.ts)
        assert event is not None  # recorded now, or by a 📌 that got there first
    if event.kind == "pin":
        event.deleted_at = None  # pinned again after the last 📌 was taken off
    if event.deleted_at is None:  # a deleted reply stays deleted
        event.highlighted = True
    session.execute(upsert(session, EventPin, {"event_id": event.id, "user_id": f"{ADDED_PIN}{by}"[:32],
                                               "created_at": now}, index_elements=["event_id", "user_id"]))
    return event.id, new


# ---- milestone emoji --------------------------------------------------------------------------------------------


def _apply_milestone(ctx: Context, channel: str, ts: str, user: str, emoji: str) -> None:
    with ctx.db.read() as session:
        row = session.execute(
            select(MessageReaction.added, MessageReaction.event_ts, MessageReaction.applied)
            .where(*_row_key(channel, ts, user, emoji))
        ).first()
    if row is None or row.applied:
        return  # done already (a redelivery, or the sweep beside the job)
    milestone = ctx.settings.milestone_emoji.get(emoji)
    if milestone is not None:
        reaction = Reaction(row.added, user, emoji, channel, ts, row.event_ts)
        if row.added:
            set_from_reaction(ctx, reaction, milestone)
        else:
            undo_from_reaction(ctx, reaction, milestone)
    with ctx.db.session() as session:
        # Only this event is done: a later one stored meanwhile keeps its own work queued.
        session.execute(update(MessageReaction).where(*_row_key(channel, ts, user, emoji),
                                                      MessageReaction.event_ts == row.event_ts).values(applied=True))


def set_from_reaction(ctx: Context, reaction: Reaction, milestone: str) -> lifecycle.MilestoneResult | None:
    located = locate(ctx, reaction.channel, reaction.ts, need_message=False)
    if located is None:
        return None
    name = ctx.messenger.user_name(reaction.user)
    with ctx.db.session() as session:
        result = lifecycle.set_milestone(
            ctx, session, located.incident_id, milestone, slack_ts_to_datetime(reaction.ts), reaction.user,
            clean_text(name) if name else None,
            source={"via": "reaction", "emoji": emoji_name(reaction.emoji), "source_channel": reaction.channel,
                    "source_ts": reaction.ts},
        )
        refusal = None if result.ok else lifecycle.refusal(ctx, session, located.incident_id, result)
    if refusal is None:
        try:
            ctx.messenger.add_reaction(reaction.channel, reaction.ts, ACK_EMOJI)
        except MessengerError as error:
            log.warning("could not acknowledge the milestone reaction: %s", error.kind)
        return result
    # Told once per reaction: its stored row is marked done afterwards, so a redelivery comes nowhere near here.
    text = ctx.say("incident.error", code=refusal.code, params=refusal.params)
    try:
        ctx.messenger.post_ephemeral(reaction.channel, reaction.user, text, thread_ts=located.thread_ts)
    except MessengerError as failure:
        log.warning("could not explain a refused milestone reaction: %s", failure.kind)
    return result


def undo_from_reaction(ctx: Context, reaction: Reaction, milestone: str) -> bool:
    located = locate(ctx, reaction.channel, reaction.ts, need_message=False)
    if located is None:
        return False
    with ctx.db.session() as session:
        return lifecycle.undo_milestone(
            ctx, session, located.incident_id, milestone, source_channel=reaction.channel, source_ts=reaction.ts,
            actor=reaction.user,
        )
