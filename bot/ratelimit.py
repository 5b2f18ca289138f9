"""Rate limits: per-user and per-channel budgets on what can flood a channel (issue "Trust", item 9).

Hits are rows in the database, so every replica counts the same budget, and the check and the hit share one
transaction: on PostgreSQL an advisory lock per budget key serialises concurrent checks of the same key, on
SQLite the write lock every transaction takes already does. A budget is keyed by its `source` (`open`, `post`;
alerts will get their own) and by whom or where it limits, so sources never eat into each other's budget.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, Select, Table, bindparam, delete, func, insert, select, union_all
from sqlalchemy import cast as cast_

from bot.context import Context
from storage.db import Work
from storage.models import RateHit
from storage.sql import dialect_name

OPEN = "open"
POST = "post"


@dataclass(frozen=True)
class Limit:
    key: str  # `user:U…` or `channel:C…`
    most: int  # hits allowed per window; 0 means no limit

    @property
    def scope(self) -> str:
        return self.key.partition(":")[0]


class RateLimited(Exception):
    """A budget is spent: nothing was counted, and the request must store nothing."""

    def __init__(self, source: str, limit: Limit, window: timedelta, retry_at: datetime) -> None:
        super().__init__(f"{source} limit {limit.key} reached; retry at {retry_at.isoformat()}")
        self.source, self.limit, self.window, self.retry_at = source, limit, window, retry_at


def _lock_id(source: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{source}\0{key}".encode()).digest()[:8], "big", signed=True)


def take(session: Work, source: str, limits: Sequence[Limit], *, now: datetime, window: timedelta) -> list[int]:
    """Counts one hit against every limit, or none at all: RateLimited when any of them is spent.

    Returns the ids of the hits, so that a request which turns out to be bad input can give them back.
    """
    active = {limit.key: limit for limit in limits if limit.most > 0}
    if not active:
        return []
    keys = list(active)
    params: dict[str, Any] = {"source": source, "since": now - window, "at": now}
    for i, key in enumerate(keys):
        params |= {f"key_{i}": key, f"most_{i}": active[key].most}
    if dialect_name(session) == "postgresql":
        # In one global order, so two requests sharing a channel never wait on each other in a cycle. A statement
        # of its own: the INSERT below then reads the hits under a snapshot taken once the locks are held.
        lock_ids = sorted(_lock_id(source, key) for key in keys)
        session.execute(_advisory_locks(len(lock_ids)), {f"lock_{i}": lock_id for i, lock_id in enumerate(lock_ids)})
    # One statement counts and inserts: a hit for each budget with room left. All of them, or it is a refusal.
    taken = session.execute(_hits_where_room(len(keys)), params).all()
    if len(taken) == len(keys):
        return [hit_id for hit_id, in taken]
    if taken:  # some budgets had room: those hits go again, so that a refusal counts nothing
        session.execute(delete(RateHit).where(RateHit.id.in_([hit_id for hit_id, in taken])))
    counted = session.execute(_counted(), {"source": source, "keys": keys, "since": now - window}).all()
    spent = [(first + window, active[key]) for key, hits, first in counted if hits >= active[key].most]
    retry_at, limit = max(spent, key=lambda pair: pair[0])  # every spent budget must have room again
    raise RateLimited(source, limit, window, retry_at)


# Built once, Core statements run with parameters: building them (and the ORM's bookkeeping) cost more than the SQL.
@functools.cache
def _advisory_locks(count: int) -> Select[Any]:
    return select(*(func.pg_advisory_xact_lock(bindparam(f"lock_{i}", type_=BigInteger)) for i in range(count)))


@functools.cache
def _hits_where_room(count: int) -> Any:
    """INSERT INTO rate_hits SELECT … per budget key, each row only while the key's hits in the window are under
    its limit; RETURNING the ids of the hits taken."""
    table = cast(Table, RateHit.__table__)
    # The strings typed for PostgreSQL, whose UNION would otherwise make them text. Not the time: SQLite's CAST to
    # a DATETIME would make it a number, and both drivers send a datetime typed.
    source = cast_(bindparam("source", type_=table.c.source.type), table.c.source.type)
    at = bindparam("at", type_=table.c.at.type)
    rows = []
    for i in range(count):
        key = cast_(bindparam(f"key_{i}", type_=table.c.key.type), table.c.key.type)
        hits = (select(func.count()).select_from(table)
                .where(table.c.source == source, table.c.key == key,
                       table.c.at > bindparam("since", type_=table.c.at.type))
                .scalar_subquery())
        rows.append(select(source, key, at).where(hits < bindparam(f"most_{i}", type_=Integer)))
    return (insert(table).from_select(["source", "key", "at"], union_all(*rows) if count > 1 else rows[0])
            .returning(table.c.id))


@functools.cache
def _counted() -> Select[Any]:
    table = cast(Table, RateHit.__table__)
    return (select(table.c.key, func.count(), func.min(table.c.at))
            .where(table.c.source == bindparam("source"), table.c.key.in_(bindparam("keys", expanding=True)),
                   table.c.at > bindparam("since", type_=table.c.at.type))
            .group_by(table.c.key))


def give_back(ctx: Context, hit_ids: Sequence[int]) -> None:
    if hit_ids:
        with ctx.db.session() as session:
            session.execute(delete(RateHit).where(RateHit.id.in_(list(hit_ids))))


def command_limits(ctx: Context, source: str, user_id: str, channel_id: str) -> list[Limit]:
    settings = ctx.settings
    per_user, per_channel = {
        OPEN: (settings.open_limit_per_user, settings.open_limit_per_channel),
        POST: (settings.post_limit_per_user, settings.post_limit_per_channel),
    }[source]
    return [Limit(f"user:{user_id}", per_user), Limit(f"channel:{channel_id}", per_channel)]


@dataclass
class Spend:
    """What one slash command took from its budgets: the hits (to give back after bad input) or the refusal."""

    hits: list[int] = field(default_factory=list)
    refused: RateLimited | None = None

    def take(self, ctx: Context, session: Work, source: str, user_id: str, channel_id: str) -> None:
        """Takes from the per-user and per-channel budgets of `source` in the caller's transaction. A refusal
        is kept, not raised, so that the caller's transaction (which records the request) still commits."""
        limits = command_limits(ctx, source, user_id, channel_id)
        try:
            self.hits = take(session, source, limits, now=ctx.clock.now(), window=ctx.settings.rate_limit_window)
        except RateLimited as refusal:
            self.refused = refusal

    def check(self) -> None:
        if self.refused is not None:
            raise self.refused


def expire(ctx: Context) -> None:
    """Hits older than the window count for nothing any more (run by the sweep)."""
    with ctx.db.session() as session:
        session.execute(delete(RateHit).where(RateHit.at <= ctx.clock.now() - ctx.settings.rate_limit_window))
