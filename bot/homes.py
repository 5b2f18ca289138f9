"""Which incident a Slack message belongs to, for the reply path: incidents.find_home behind a bounded cache.

find_home decides the rule (thread mode: the announcement's thread; channel mode: the incident's own channel).
Here its answers are remembered as (channel, thread_ts) → incident id, so a reply in a busy incident costs no
read before its insert. Safe with several replicas, because only what cannot go stale unseen is kept:
- "No incident" is never remembered: a miss reads, so a home that appears on any replica (an announcement
  posted, an incident channel made) is found by the very next message.
- A remembered incident is forgotten on this replica when an incident is opened in its channel, closed, reopened
  or deleted (`forget_incident`, `forget_channel`), and trusted for at most TTL anyway, so what another replica
  changes is seen within TTL. One deleted meanwhile fails the insert's foreign key; ingest forgets it and reads.
- A read that raced with a forget is not remembered (the generation check below).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from bot import incidents
from bot.context import Context
from bot.jobs import after_commit
from storage.db import Work
from storage.models import Incident

MAX_ENTRIES = 4096
TTL_SECONDS = 30.0

Key = tuple[str, str | None]  # (channel, thread_ts); thread_ts None for a top-level message


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlLru(Generic[K, V]):
    """A bounded LRU whose entries live at most `ttl` seconds, safe across threads. functools' caches can't
    forget one entry, which invalidation needs."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self._ttl = ttl

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            value, expires = found
            if time.monotonic() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V, *, unless: Callable[[], bool] | None = None) -> None:
        """Remembers `value`, unless `unless()` says (under the lock) that it may be stale already."""
        with self._lock:
            if unless is not None and unless():
                return
            self._entries[key] = (value, time.monotonic() + self._ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop(self, stale: Callable[[K, V], bool]) -> None:
        with self._lock:
            for key, (value, _) in list(self._entries.items()):
                if stale(key, value):
                    del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class HomeCache:
    """Positive answers of find_home. `generation` moves on with every forget: a read begun before a forget
    may have seen what the forget was about, so it is not remembered."""

    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL_SECONDS) -> None:
        self.entries: TtlLru[Key, int] = TtlLru(max_entries, ttl)
        self.generation = 0
        self._lock = threading.Lock()

    def get(self, key: Key) -> int | None:
        return self.entries.get(key)

    def put(self, key: Key, incident_id: int, generation: int) -> None:
        self.entries.put(key, incident_id, unless=lambda: generation != self.generation)

    def forget(self, *, incident_id: int | None = None, channel: str | None = None) -> None:
        with self._lock:
            self.generation += 1
        self.entries.drop(lambda key, cached: cached == incident_id or key[0] == channel)

    def __len__(self) -> int:
        return len(self.entries)


def cache(ctx: Context) -> HomeCache:
    return ctx.shared(HomeCache, HomeCache)


def find(ctx: Context, channel: str, thread_ts: str | None) -> int | None:
    """The id of the incident whose home the message is in, or None: cached, else one read (no write lock)."""
    homes = cache(ctx)
    key = (channel, thread_ts)
    incident_id = homes.get(key)
    if incident_id is not None:
        return incident_id
    generation = homes.generation
    with ctx.db.read() as session:
        incident = incidents.find_home(session, channel, thread_ts)
        if incident is None:
            return None
        incident_id = incident.id
    homes.put(key, incident_id, generation)
    return incident_id


def forget_incident(ctx: Context, incident_id: int) -> None:
    """For whatever ends or moves an incident's home (its deletion, a channel given up): call after the commit."""
    cache(ctx).forget(incident_id=incident_id)


def forget_channel(ctx: Context, channel: str) -> None:
    """Every remembered home in `channel`: call after the commit that changed which incident owns it."""
    cache(ctx).forget(channel=channel)


def install(ctx: Context) -> None:
    def on_open(ctx: Context, session: Work, incident: Incident) -> None:
        channel = incident.channel_id
        after_commit(session, lambda: forget_channel(ctx, channel))

    def on_changed(ctx: Context, session: Session, incident: Incident) -> None:
        incident_id = incident.id
        after_commit(session, lambda: forget_incident(ctx, incident_id))

    ctx.hooks.on_open.register(on_open)
    ctx.hooks.on_closed.register(on_changed)
    ctx.hooks.on_reopened.register(on_changed)
