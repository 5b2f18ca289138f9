"""bot/leases.py: one thread renews every lease held in this process (pure unit tests, no Slack, no database)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bot import leases
from bot.leases import LeaseKeeper

PERIOD = 0.05


def keeper_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lease-keeper"]


def counter(result: Callable[[int], bool] = lambda _n: True) -> tuple[list[float], Callable[[], bool]]:
    calls: list[float] = []

    def renew() -> bool:
        calls.append(time.monotonic())
        return result(len(calls))

    return calls, renew


def test_a_lease_is_renewed_every_period_while_held_and_never_after() -> None:
    keeper = LeaseKeeper()
    calls, renew = counter()
    try:
        started = time.monotonic()
        with keeper.holding(PERIOD, renew):
            time.sleep(PERIOD * 5.5)
        ended = time.monotonic()
        time.sleep(PERIOD * 3)
        assert 3 <= len(calls) <= 6, calls
        assert all(started + PERIOD <= at <= ended + PERIOD for at in calls)
    finally:
        keeper.stop()


def test_a_lease_found_lost_is_not_renewed_again_and_a_failure_is_tried_again() -> None:
    keeper = LeaseKeeper()
    lost, renew_lost = counter(lambda _n: False)
    failures: list[int] = []

    def failing() -> bool:
        failures.append(1)
        raise RuntimeError("the database is away")

    try:
        with keeper.holding(PERIOD, renew_lost), keeper.holding(PERIOD, failing):
            time.sleep(PERIOD * 5.5)
        assert len(lost) == 1
        assert len(failures) >= 3
    finally:
        keeper.stop()


def test_holds_share_one_thread_which_ends_when_idle_and_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "IDLE_EXIT_SECONDS", 0.2)
    before = len(keeper_threads())
    keeper = LeaseKeeper()
    try:
        for _ in range(20):  # posts one after another: no thread of their own
            with keeper.holding(PERIOD, lambda: True):
                pass
        with keeper.holding(PERIOD, lambda: True), keeper.holding(PERIOD, lambda: True):
            assert len(keeper_threads()) == before + 1
        deadline = time.monotonic() + 5
        while len(keeper_threads()) > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(keeper_threads()) == before  # idle: ended
        calls, renew = counter()
        with keeper.holding(PERIOD, renew):
            time.sleep(PERIOD * 2.5)
        assert calls  # a hold after the idle exit is renewed by a new thread
    finally:
        keeper.stop()
    assert len(keeper_threads()) == before
