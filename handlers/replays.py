"""The listener side of replay dedupe (bot/replays.py): the first delivery of a trigger_id runs with an ack that
remembers its answer, and a replay is acked with that same answer without running the listener."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, BoltResponse
from sqlalchemy.exc import SQLAlchemyError

from bot import replays
from bot.context import Context
from bot.jobs import after_commit
from storage.db import Work

log = logging.getLogger(__name__)


class RecordingAck:
    """Bolt's ack, storing what it answered so that a replay can be given the same answer."""

    def __init__(self, ctx: Context, ack: Ack, trigger_id: str) -> None:
        self._ctx, self._ack, self._trigger_id = ctx, ack, trigger_id
        self._kept: dict[str, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        response = self._ack(*args, **kwargs)
        # The same ack call gives the same HTTP answer, so the call's arguments are what is kept. Stored after
        # the response is written (a job held by the caller), so it costs the ack nothing; a replay arriving
        # meanwhile waits for it. Not again when the request's own transaction already stored this answer.
        answer = {"args": list(args), "kwargs": kwargs}
        if answer != self._kept:
            self._ctx.jobs.submit(self._record, answer)
        return response

    def keep(self, session: Work, *args: Any, **kwargs: Any) -> None:
        """Stores the answer that `self(*args, **kwargs)` will give in the caller's transaction, the one doing the
        request's work: no transaction of its own follows the ack. Kept only if that transaction commits."""
        answer = {"args": list(args), "kwargs": kwargs}
        replays.keep_answer(session, self._trigger_id, answer)
        after_commit(session, lambda: setattr(self, "_kept", answer))

    def _record(self, answer: dict[str, Any]) -> None:
        try:
            replays.record_answer(self._ctx, self._trigger_id, answer)
        except (SQLAlchemyError, TypeError, ValueError):  # TypeError, ValueError: not JSON
            # The answer went out; a replay of this request then gets the "already handled" answer.
            log.warning("could not store the answer for replays of this request", exc_info=True)


def answer_again(ack: Ack, answer: dict[str, Any]) -> None:
    ack(*answer.get("args", []), **answer.get("kwargs", {}))


def claim(ctx: Context, body: dict[str, Any], ack: Ack, *, kind: str, user_id: str | None,
          pending: Callable[[Ack], object], also: Callable[[Work], object] | None = None) -> Ack | None:
    """The ack to run the request with, or None when it is a replay and has been answered already.

    `also` runs in the transaction that records a first delivery (or for a request without a trigger_id, which
    cannot be deduplicated), so that it costs the ack no second commit. `pending` answers a replay whose first
    delivery has not answered within bot.replays.WAIT_SECONDS. Raises SQLAlchemyError when the database cannot
    tell (the caller answers as for any database failure).
    """
    admission = Admission(ctx, body, ack, kind=kind, user_id=user_id, also=also or (lambda _session: None))
    try:
        with ctx.db.session() as session:
            admission(session)
    except replays.Replayed:
        admission.answer_replay(pending)
        return None
    return admission.ack


class Admission:
    """Records the first delivery of a request in the caller's transaction, with `also` run in it too. claim() is
    an admission in a transaction of its own; a request whose work is one transaction (`/incident open`) calls it
    first thing in that one, so the ack waits for one commit rather than two. The request runs with `ack`; the
    admission raises replays.Replayed for a replay (answer it with `answer_replay`)."""

    def __init__(self, ctx: Context, body: dict[str, Any], ack: Ack, *, kind: str, user_id: str | None,
                 also: Callable[[Work], Any]) -> None:
        self._ctx, self._kind, self._user_id, self._also = ctx, kind, user_id, also
        self._raw_ack = ack
        self.trigger_id = replays.dedupe_key(body)
        self.ack: Ack = ack if self.trigger_id is None else RecordingAck(ctx, ack, self.trigger_id)  # type: ignore[assignment]

    def __call__(self, session: Work) -> Any:
        """Records the delivery (Replayed when it is a replay), then returns what `also` returns."""
        if self.trigger_id is not None and not replays.first_delivery(
                session, self._ctx.clock.now(), self.trigger_id, self._kind, self._user_id):
            raise replays.Replayed(self.trigger_id)
        return self._also(session)

    def answer_replay(self, pending: Callable[[Ack], object]) -> None:
        """The first delivery's answer, once it has one (`pending` answers when it has none in time)."""
        assert self.trigger_id is not None  # only a deduplicated request is ever a replay
        log.info("replayed %s answered from its first delivery", self._kind)
        answer = replays.wait_for_answer(self._ctx, self.trigger_id)
        if answer is None:
            pending(self._raw_ack)
        else:
            answer_again(self._raw_ack, answer)


def once(ctx: Context) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates an interaction listener (taking `ack` and `body`) so a replay of its trigger_id never runs it."""

    def decorate(listener: Callable[..., Any]) -> Callable[..., Any]:
        names = inspect.signature(listener).parameters
        if "ack" not in names or "body" not in names:
            raise TypeError(f"{listener.__name__} must take ack and body to be deduplicated")

        @functools.wraps(listener)  # Bolt injects arguments by the wrapped listener's parameter names
        def run_once(**kwargs: Any) -> Any:
            body = kwargs["body"]
            user = body.get("user") if isinstance(body.get("user"), dict) else {}
            run_ack = claim(ctx, body, kwargs["ack"], kind=str(body.get("type") or "interaction"),
                            user_id=user.get("id"), pending=lambda ack: ack())
            if run_ack is None:
                return None
            return listener(**{**kwargs, "ack": run_ack})

        return run_once

    return decorate
