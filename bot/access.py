"""Who may act on an incident, and who may see it in `/incident list`.

A command typed in the incident's own channel needs no check: Slack only lets members type there. From any other
channel the user must be a member of the incident's channel, and only Slack can say so (users.conversations,
never the request). `/incident list` shows this channel's incidents, those of public channels, and those of the
channels the user is a member of. Slack's answers are cached for MEMBERSHIP_TTL. No Slack call happens before a
command is acked: without a fresh answer, AccessPending unwinds the command, and the handler asks Slack in the
background and runs the command again. When Slack cannot answer, the command is refused.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.clock import Clock
from bot.context import Context
from bot.parsing import CLOSED_STATUSES, UsageError
from bot.ports import Messenger, MessengerError
from storage.models import ChannelVisibility, Incident
from storage.sql import upsert

log = logging.getLogger(__name__)

MEMBERSHIP_TTL = timedelta(seconds=60)
VISIBILITY_TTL = timedelta(minutes=10)


class AccessPending(Exception):
    """Slack must be asked who `user_id` is in (and whether `channels` are private) before the command can run."""

    def __init__(self, user_id: str, public_id: str | None, channels: Iterable[str] = ()) -> None:
        super().__init__(public_id or "list")
        self.user_id = user_id
        self.public_id = public_id
        self.channels = frozenset(channels)


class Memberships:
    """Slack's answers to "which channels is this user in?", each kept for `ttl` (a removed member loses access
    within that window). Thread-safe: listeners and background jobs share one instance."""

    def __init__(self, messenger: Messenger, clock: Clock, ttl: timedelta = MEMBERSHIP_TTL) -> None:
        self._messenger = messenger
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[frozenset[str], datetime]] = {}

    def channels_of(self, user_id: str) -> frozenset[str] | None:
        """The channels `user_id` is a member of, or None when there is no fresh answer."""
        with self._lock:
            cached = self._channels.get(user_id)
        if cached is None or self._clock.now() - cached[1] >= self._ttl:
            return None
        return cached[0]

    def ask(self, user_id: str) -> frozenset[str]:
        """Asks Slack now (raises MessengerError when it can't answer; nothing is cached then)."""
        channels = frozenset(self._messenger.member_channels(user_id))
        with self._lock:
            self._channels[user_id] = (channels, self._clock.now())
        return channels


def memberships(ctx: Context) -> Memberships:
    return ctx.shared(Memberships, lambda: Memberships(ctx.messenger, ctx.clock))


@dataclass(frozen=True)
class Asker:
    """Who typed a command, and where."""

    user_id: str
    channel_id: str
    memberships: Memberships

    def require_access(self, incident: Incident) -> None:
        """Returns when the asker may act on `incident`; raises UsageError("not_member") or AccessPending."""
        if incident.channel_id == self.channel_id:
            return
        channels = self.memberships.channels_of(self.user_id)
        if channels is None:
            raise AccessPending(self.user_id, incident.public_id)
        if incident.channel_id not in channels:
            # Names nothing the asker can't already see: the ID is what they typed.
            raise UsageError("not_member", "", incident_id=incident.public_id)

    def visible_channels(self, session: Session, channels: Iterable[str]) -> set[str]:
        """Of `channels`, those whose incidents the asker may see listed; raises AccessPending when that needs
        Slack. A channel not known to be public counts as private."""
        wanted = set(channels) - {self.channel_id}
        public = set(session.scalars(
            select(ChannelVisibility.channel_id).where(
                ChannelVisibility.channel_id.in_(wanted), ChannelVisibility.is_private.is_(False)
            )
        ))
        private = wanted - public
        if not private:
            return public | {self.channel_id}
        member_of = self.memberships.channels_of(self.user_id)
        if member_of is None:
            raise AccessPending(self.user_id, None, private - _checked(session, private))
        return public | (private & member_of) | {self.channel_id}


def asker(ctx: Context, user_id: str, channel_id: str) -> Asker:
    return Asker(user_id=user_id, channel_id=channel_id, memberships=memberships(ctx))


def _checked(session: Session, channels: set[str]) -> set[str]:
    return set(session.scalars(select(ChannelVisibility.channel_id).where(ChannelVisibility.channel_id.in_(channels))))


def look_up(ctx: Context, pending: AccessPending) -> None:
    """Asks Slack what `pending` needs, off the request path. Raises MessengerError when Slack can't answer."""
    memberships(ctx).ask(pending.user_id)
    for channel in sorted(pending.channels):
        record_visibility(ctx, channel)


class Visibilities:
    """What this process last stored for a channel's visibility, for VISIBILITY_TTL, so that an announcement need
    not ask Slack or write again within it. A stored "public" is asked again after the TTL by the sweep, for every
    channel that has an open incident (refresh_stale_visibilities), not only when someone opens another there."""

    def __init__(self, clock: Clock, ttl: timedelta = VISIBILITY_TTL, max_entries: int = 4096) -> None:
        self._clock, self._ttl, self._max = clock, ttl, max_entries
        self._lock = threading.Lock()
        self._stored: dict[str, tuple[bool, datetime]] = {}

    def stored(self, channel: str) -> bool | None:
        """is_private as this process stored it within the TTL, or None."""
        with self._lock:
            found = self._stored.get(channel)
        if found is None or self._clock.now() - found[1] >= self._ttl:
            return None
        return found[0]

    def remember(self, channel: str, is_private: bool) -> None:
        with self._lock:
            if len(self._stored) >= self._max:
                self._stored.clear()  # a miss only costs one lookup
            self._stored[channel] = (is_private, self._clock.now())


def visibilities(ctx: Context) -> Visibilities:
    return ctx.shared(Visibilities, lambda: Visibilities(ctx.clock))


def record_visibility(ctx: Context, channel: str) -> None:
    """Remembers whether `channel` is private (conversations.info). When Slack can't answer, nothing is stored:
    the channel counts as private until a later look-up, announcement or sweep asks again."""
    try:
        is_private = ctx.messenger.is_private_channel(channel)
    except MessengerError as error:
        log.warning("channel visibility lookup failed: %s", error.kind)
        return
    _store_visibility(ctx, channel, is_private)


def _store_visibility(ctx: Context, channel: str, is_private: bool) -> None:
    now = ctx.clock.now()
    with ctx.db.statement() as connection:
        # The latest question wins, whichever replica's answer is written last.
        connection.execute(upsert(ctx.db.dialect, ChannelVisibility,
                                  {"channel_id": channel, "is_private": is_private, "checked_at": now},
                                  index_elements=["channel_id"], set_={"is_private": is_private, "checked_at": now},
                                  where=ChannelVisibility.checked_at <= now))
    visibilities(ctx).remember(channel, is_private)


def announced_in(ctx: Context, channel: str) -> None:
    """After an announcement in `channel`: known at once, `/incident list` shows a public channel's incident without
    asking Slack again. Asks Slack unless this process stored the channel's answer within VISIBILITY_TTL."""
    if visibilities(ctx).stored(channel) is not None:
        return
    record_visibility(ctx, channel)


STALE_PER_SWEEP = 20  # channels asked about per sweep: a workspace of many open incidents catches up over sweeps


def refresh_stale_visibilities(ctx: Context) -> int:
    """The sweep: asks Slack again about every channel with an open incident whose stored "public" is older than
    VISIBILITY_TTL, so a channel made private stops showing its incidents to non-members within about the TTL.
    A stored "private" needs no hurry: it only ever hides. Returns how many channels were asked."""
    stale_before = ctx.clock.now() - VISIBILITY_TTL
    with ctx.db.read() as session:
        stale = list(session.scalars(
            select(ChannelVisibility.channel_id)
            .where(ChannelVisibility.is_private.is_(False), ChannelVisibility.checked_at <= stale_before,
                   ChannelVisibility.channel_id.in_(
                       select(Incident.channel_id).where(Incident.status.not_in(CLOSED_STATUSES))))
            .order_by(ChannelVisibility.checked_at).limit(STALE_PER_SWEEP)
        ))
    for channel in stale:
        record_visibility(ctx, channel)
    return len(stale)


def install(ctx: Context) -> None:
    ctx.hooks.on_sweep.register(refresh_stale_visibilities)
