"""Replayed requests (issue "Trust", item 6): a slash command or an interaction runs once per trigger_id.

Slack's signature stays valid for 5 minutes, so a captured body can be posted again. Slack never retries slash
commands or interactions itself, so a second delivery of the same trigger_id is always a replay: it gets the
first delivery's answer and runs nothing. The row is inserted before the request runs; the unique constraint
decides which of several concurrent deliveries (on any replica) runs it. Requests without a trigger_id
(events, view_closed, block_suggestion) cannot be told apart this way and are not deduplicated here.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update

from bot.context import Context
from storage.db import Work
from storage.models import SeenRequest
from storage.sql import dialect_name, upsert

log = logging.getLogger(__name__)

# A signature is accepted while its timestamp is within 5 minutes of the receiver's clock, either side, so two
# deliveries of one signed body can be up to 10 minutes apart.
KEEP = timedelta(minutes=10)
# How long a replay that arrives while the first delivery still runs waits for its answer (Slack gives 3 s).
WAIT_SECONDS = 2.0
_POLL_SECONDS = 0.05
MAX_TRIGGER_ID = 255


class Replayed(Exception):
    """A second delivery of a trigger_id whose first delivery ran the request (or is running it): the transaction
    that found out stores nothing, and the replay is answered with the first delivery's answer."""


def dedupe_key(body: dict[str, Any]) -> str | None:
    trigger_id = body.get("trigger_id")
    if not isinstance(trigger_id, str) or not trigger_id or len(trigger_id) > MAX_TRIGGER_ID:
        return None
    return trigger_id


def first_delivery(session: Work, now: datetime, trigger_id: str, kind: str, user_id: str | None) -> bool:
    """Records the trigger_id; True for the one delivery that runs the request, False for a replay. On
    PostgreSQL a concurrent delivery waits here until the first one's transaction ends, then sees its row."""
    row = {"trigger_id": trigger_id, "kind": kind[:32], "received_at": now,
           "user_id": user_id[:32] if isinstance(user_id, str) and user_id else None}
    return session.execute(_seen_insert(dialect_name(session)), row).first() is not None


@functools.cache
def _seen_insert(dialect: str) -> Any:
    """Built once per dialect, a Core statement run with the row as parameters: the ORM's insert bookkeeping, and
    building the statement anew, cost the ack."""
    table = cast(Table, SeenRequest.__table__)
    return upsert(dialect, table, None, index_elements=["trigger_id"]).returning(table.c.id)


def record_answer(ctx: Context, trigger_id: str, answer: dict[str, Any]) -> None:
    with ctx.db.session() as session:
        keep_answer(session, trigger_id, answer)


def keep_answer(session: Work, trigger_id: str, answer: dict[str, Any]) -> None:
    """The first answer stays: a later one (after a failure) never replaces it."""
    session.execute(_answer_update(), {"trigger": trigger_id, "kept": answer})


@functools.cache
def _answer_update() -> Any:
    """A Core statement built once: no SeenRequest is loaded in the session, and the ORM's UPDATE path cost three
    times as much."""
    table = cast(Table, SeenRequest.__table__)
    return (update(table).where(table.c.trigger_id == bindparam("trigger"), table.c.answer.is_(None))
            .values(answer=bindparam("kept", type_=table.c.answer.type)))


def wait_for_answer(ctx: Context, trigger_id: str, timeout: float = WAIT_SECONDS) -> dict[str, Any] | None:
    """The first delivery's answer, waiting briefly while it still runs; None when it has none in time."""
    deadline = time.monotonic() + timeout
    while True:
        with ctx.db.read() as session:
            answer = session.scalar(select(SeenRequest.answer).where(SeenRequest.trigger_id == trigger_id))
        if answer is not None or time.monotonic() >= deadline:
            return answer
        time.sleep(_POLL_SECONDS)


def expire(ctx: Context) -> None:
    """Forgets trigger_ids whose signature can no longer be valid (run by the sweep)."""
    with ctx.db.session() as session:
        session.execute(delete(SeenRequest).where(SeenRequest.received_at < ctx.clock.now() - KEEP))
