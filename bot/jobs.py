"""Thread pools that know what they still have to do, so tests and the demo can wait for quiet."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from storage.db import CoreWork, Work

log = logging.getLogger(__name__)

HOLD_AT_MOST_SECONDS = 3.0


_AFTER_COMMIT = "jobs.after_commit"


def after_commit(session: Work, then: Callable[[], object], *, state_key: str | None = None) -> None:
    """Calls `then` on the committing thread once the session's transaction has committed; a rollback drops it,
    and with it `session.info[state_key]` (what `then` was to read), so nothing of a rolled-back unit lingers.

    Domain functions work in their caller's unit of work, so this is how they hand on what must never run before
    (or without) the commit: Slack calls, timers. `then` must not use the session; it usually submits jobs.
    """
    if isinstance(session, CoreWork):  # its info goes with it on a rollback: nothing to drop
        session.on_commit.append(then)
        return
    session.info.setdefault(_AFTER_COMMIT, []).append((then, state_key))


# Listening on the class, once: a listener added to each session cost more than its commit's callbacks.
@event.listens_for(Session, "after_commit")
def _run_committed(session: Session) -> None:
    for then, _ in session.info.pop(_AFTER_COMMIT, ()):
        then()


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    for _, state_key in session.info.pop(_AFTER_COMMIT, ()):
        if state_key is not None:
            session.info.pop(state_key, None)


def wait_for_ack(written: threading.Event | None) -> None:
    """Waits until the ack is written (None: nothing to wait for). Bounded: a response that is never written
    must not keep the work from ever starting."""
    if written is not None:
        written.wait(HOLD_AT_MOST_SECONDS)


class TrackingExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor that remembers its unfinished futures (Bolt's listener pool uses it too)."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._pending_lock:
                pending = list(self._pending)
            if not pending:
                return True
            for future in pending:
                # A failed job was logged where it ran; here we only wait for it to end.
                with contextlib.suppress(Exception):
                    future.result(timeout=max(0.0, end - time.monotonic()))
        with self._pending_lock:
            return not self._pending


class BackgroundJobs:
    """Work done off the request path, after the ack: posting to Slack, capturing evidence, uploading reports.

    What it runs must be safe to lose, because the database keeps the state to retry from.
    """

    def __init__(self, workers: int = 8, name: str = "incident-bot-work") -> None:
        self._executor = TrackingExecutor(max_workers=workers, thread_name_prefix=name)
        self.watched: list[TrackingExecutor] = [self._executor]
        self._held = threading.local()

    @contextlib.contextmanager
    def held_until(self, released: threading.Event | None) -> Iterator[None]:
        """Jobs this thread submits inside the block start once `released` is set (the ack is written), so they
        do not compete for the CPU with the ack they follow. None holds nothing."""
        previous = getattr(self._held, "released", None)
        self._held.released = released
        try:
            yield
        finally:
            self._held.released = previous

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        return self._executor.submit(self._run, getattr(self._held, "released", None), fn, *args, **kwargs)

    @staticmethod
    def _run(released: threading.Event | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        wait_for_ack(released)
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("background job %s failed", getattr(fn, "__name__", fn))
            raise

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Waits for every watched pool (listeners may submit jobs, jobs may submit more) to be quiet."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for executor in self.watched:
                executor.wait_idle(max(0.0, end - time.monotonic()))
            if all(executor.wait_idle(0) for executor in self.watched):
                return True
        return False

    def shutdown(self) -> None:
        for executor in self.watched:
            executor.shutdown(wait=True, cancel_futures=False)
