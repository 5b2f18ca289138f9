"""Any message onto an incident's timeline from the message's menu (the "Add to incident timeline" shortcut).

Which incidents a message can go on, first match wins:
1. the incident it belongs to as a 📌 would find it: its announcement, its thread (or its own channel, in channel
   mode), or the timeline that holds it already;
2. the open incidents of the message's channel;
3. in a channel that is no incident's home (#general), the open incidents of the channels the person is a member
   of: as for any command on another channel's incident, only Slack can say (bot.access), and an incident the
   person could not act on is never offered, nor even named.
The message's own channel counts as where the person is asking from, as the channel a command is typed in: its
incidents need no check. One incident: the message goes on at once. Several: the person chooses. None: they are
told so.

It goes on exactly as a 📌 puts it (bot.pins.add_message): the same row and kind, at the message's own time, so a
📌 and the shortcut on one message are one event, and so are two uses of the shortcut. Its permalink
(chat.getPermalink) is kept in the event's data. Adding counts against the budget of the commands that change
an incident (bot.ratelimit.POST), as `/postmortem why` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from bot import ingest, pins, ratelimit
from bot.access import AccessPending, Asker
from bot.context import Context
from bot.jobs import after_commit
from bot.parsing import CLOSED_STATUSES, UsageError
from bot.ports import ChatMessage
from storage.models import Incident, TimelineEvent

MAX_CHOICES = 100  # a select menu offers at most 100 options


@dataclass(frozen=True)
class Candidate:
    incident_id: int
    public_id: str
    title: str


@dataclass(frozen=True)
class Added:
    incident_id: int
    public_id: str
    event_id: int
    new: bool  # False when the message was on this timeline already


def _candidate(incident: Incident) -> Candidate:
    return Candidate(incident.id, incident.public_id, incident.title)


def _open_incidents(session: Session, *where: ColumnElement[bool]) -> list[Incident]:
    return list(session.scalars(
        select(Incident).where(Incident.status.not_in(CLOSED_STATUSES), *where)
        .order_by(Incident.opened_at.desc()).limit(MAX_CHOICES)
    ).all())


def candidates(session: Session, asker: Asker, message: ChatMessage) -> list[Candidate]:
    """The incidents `message` can go on for `asker` (whose channel is the message's), newest first. Raises
    AccessPending when Slack must say which channels the person is in (step 3 only)."""
    home = pins.home_of(session, message)
    if home is not None:
        incident = session.get_one(Incident, home)
        try:
            asker.require_access(incident)
            return [_candidate(incident)]
        except UsageError:
            pass  # on the timeline of an incident the person can't act on: that one is not offered
    here = _open_incidents(session, Incident.channel_id == message.channel)
    if here:
        return [_candidate(incident) for incident in here]
    elsewhere = _open_incidents(session, Incident.channel_id != message.channel)
    if not elsewhere:
        return []  # nothing open anywhere: no need to ask Slack who is where
    channels = asker.memberships.channels_of(asker.user_id)
    if channels is None:
        raise AccessPending(asker.user_id, None)
    return [_candidate(incident) for incident in elsewhere if incident.channel_id in channels]


def may_add(session: Session, asker: Asker, incident_id: int) -> Incident | None:
    """The chosen incident when `asker` may act on it (None when it is gone); raises UsageError or AccessPending
    as bot.access does."""
    incident = session.get(Incident, incident_id)
    if incident is not None:
        asker.require_access(incident)
    return incident


def add(ctx: Context, session: Session, incident_id: int, message: ChatMessage, *, user_id: str) -> Added:
    """Puts `message` on the incident's timeline in the caller's unit of work. Raises ratelimit.RateLimited
    (the caller rolls back: nothing is stored)."""
    limits = ratelimit.command_limits(ctx, ratelimit.POST, user_id, message.channel)
    now = ctx.clock.now()
    ratelimit.take(session, ratelimit.POST, limits, now=now, window=ctx.settings.rate_limit_window)
    event_id, new = pins.add_message(session, incident_id, message, by=user_id, now=now)
    public_id = session.get_one(Incident, incident_id).public_id
    author = message.user
    if new and author:
        after_commit(session, lambda: ingest.complete_names_later(ctx, incident_id, author))
    return Added(incident_id, public_id, event_id, new)


def keep_permalink(ctx: Context, event_id: int, permalink: str) -> None:
    """Stores the message's permalink in its event (asked of Slack after the event was stored)."""
    with ctx.db.session() as session:
        event = session.get(TimelineEvent, event_id)
        if event is not None and (event.data or {}).get("permalink") != permalink:
            event.data = {**(event.data or {}), "permalink": permalink}


@dataclass(frozen=True)
class ChooseForm:
    """The small modal that asks which incident: its words, the incidents, and where the message is."""

    title: str
    submit: str
    close: str
    label: str
    hint: str
    candidates: tuple[Candidate, ...]
    channel: str
    ts: str
    response_url: str | None  # the shortcut's, for the answer once the choice is made
    message: ChatMessage | None = None  # as the shortcut carried it: stored at once on the choice when it fits


def choose_form(ctx: Context, found: list[Candidate], message: ChatMessage, response_url: str | None) -> ChooseForm:
    return ChooseForm(
        title=ctx.say("timeline_add.choose_title"), submit=ctx.say("timeline_add.choose_submit"),
        close=ctx.say("timeline_add.choose_close"), label=ctx.say("timeline_add.choose_label"),
        hint=ctx.say("timeline_add.choose_hint"), candidates=tuple(found), channel=message.channel, ts=message.ts,
        response_url=response_url, message=message,
    )
