"""The leases this process holds while it works, renewed by one thread.

The announcement's lease is renewed while Slack is being asked, however slow Slack is. A thread of its own per post
cost about a quarter of a millisecond of CPU per open (starting and joining it), to do nothing almost every time:
a post takes well under a renewal period. One thread renews every lease held here, and ends when none has been
held for a while; the next hold starts it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from bot.context import Context
from storage.sql import renew_lease

log = logging.getLogger(__name__)

IDLE_EXIT_SECONDS = 30.0

# Renews the lease once: False when it was lost, and renewing it stops. An exception is tried again next period.
Renew = Callable[[], bool]


@dataclass(eq=False)
class _Held:
    renew: Renew
    every: float
    due: float  # time.monotonic() of the next renewal


class LeaseKeeper:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: set[_Held] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @contextmanager
    def holding(self, every: float, renew: Renew) -> Iterator[None]:
        """Calls `renew` every `every` seconds while the block runs, until it returns False. A renewal already
        running when the block ends still finishes: `renew` must be a compare-and-set that fails once the work it
        guards is on record."""
        held = _Held(renew, every, time.monotonic() + every)
        with self._changed:
            self._held.add(held)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
            elif len(self._held) == 1:
                self._changed.notify()  # it waits for a first hold; later ones fall due after the soonest
        try:
            yield
        finally:
            with self._changed:
                self._held.discard(held)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        while (due := self._wait_for_due()) is not None:
            for held in due:
                if not self._renewed(held):
                    with self._changed:
                        self._held.discard(held)

    def _wait_for_due(self) -> list[_Held] | None:
        """The holds whose renewal is due, their next one scheduled; None when the thread is to end."""
        with self._changed:
            while not self._stopped:
                if not self._held:
                    if not self._changed.wait(IDLE_EXIT_SECONDS) and not self._held:
                        break
                    continue
                now = time.monotonic()
                due = [held for held in self._held if held.due <= now]
                if due:
                    for held in due:
                        held.due = now + held.every
                    return due
                self._changed.wait(min(held.due for held in self._held) - now)
            self._thread = None  # decided under the lock: a hold from now on starts a new thread
            return None

    @staticmethod
    def _renewed(held: _Held) -> bool:
        try:
            return held.renew()
        except Exception:
            log.warning("lease renewal failed; trying again", exc_info=True)
            return True


def keeper(ctx: Context) -> LeaseKeeper:
    def make() -> LeaseKeeper:
        made = LeaseKeeper()
        ctx.hooks.on_stop.register(lambda _ctx: made.stop())
        return made

    return ctx.shared(LeaseKeeper, make)


@contextmanager
def holding_row(ctx: Context, lease: timedelta, column: InstrumentedAttribute[datetime | None],
                *where: ColumnElement[Any], held: datetime, on_lost: Callable[[], None] = lambda: None,
                ) -> Iterator[None]:
    """Keeps a row's lease (storage.sql.claim_lease on `column`, now `held`) while the block runs: renewed every
    quarter of `lease` by a compare-and-set on the value last written. `where` must stop matching once the work
    the lease guards is on record, so the renewals end there; `on_lost` is called when another holder took it."""
    until = held

    def renew() -> bool:
        nonlocal until
        renewed = ctx.clock.now() + lease
        with ctx.db.session() as session:
            kept = renew_lease(session, column, *where, held=until, until=renewed)
        if not kept:
            on_lost()
            return False
        until = renewed
        return True

    with keeper(ctx).holding(lease.total_seconds() / 4, renew):
        yield
