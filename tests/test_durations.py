"""The post-mortem's durations and the milestone order, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.durations import MILESTONE_ORDER, compute, order_conflict


@dataclass
class Milestones:
    deployed_at: datetime | None = None
    started_at: datetime | None = None
    detected_at: datetime | None = None
    rollback_at: datetime | None = None
    recovered_at: datetime | None = None
    resolved_at: datetime | None = None


def at(day: int, hour: int, minute: int) -> datetime:
    return datetime(2025, 10, day, hour, minute, tzinfo=UTC)


def test_the_guides_incident() -> None:
    # 배포 14:00, 이상 발생 14:15, 감지 14:35, 롤백 결정 14:35, 복구 14:38.
    d = compute(Milestones(at(22, 14, 0), at(22, 14, 15), at(22, 14, 35), at(22, 14, 35), at(22, 14, 38)))
    assert d.started == at(22, 14, 15)
    assert d.time_to_detect == timedelta(minutes=20)
    assert d.time_to_recover == timedelta(minutes=3)
    assert d.total_impact == timedelta(minutes=23)
    assert d.since_deploy_to_detect == timedelta(minutes=35)


def test_started_defaults_to_deployed() -> None:
    d = compute(Milestones(deployed_at=at(22, 14, 0), detected_at=at(22, 14, 35), recovered_at=at(22, 14, 50)))
    assert d.started == at(22, 14, 0)
    assert d.time_to_detect == timedelta(minutes=35)
    assert d.total_impact == timedelta(minutes=50)
    assert d.time_to_recover is None  # no rollback decision recorded


def test_spanning_midnight() -> None:
    d = compute(Milestones(deployed_at=at(22, 23, 50), detected_at=at(23, 0, 10), rollback_at=at(23, 0, 15),
                           recovered_at=at(23, 0, 40)))
    assert d.time_to_detect == timedelta(minutes=20)
    assert d.time_to_recover == timedelta(minutes=25)
    assert d.total_impact == timedelta(minutes=50)


def test_spanning_several_days_keeps_the_days() -> None:
    # timedelta.seconds would drop the two days and report 1 h 5 min.
    d = compute(Milestones(deployed_at=at(20, 9, 0), detected_at=at(22, 10, 5), rollback_at=at(22, 10, 5),
                           recovered_at=at(23, 11, 0)))
    assert d.time_to_detect == timedelta(days=2, hours=1, minutes=5)
    assert d.time_to_detect.total_seconds() == (2 * 24 * 60 + 65) * 60
    assert d.time_to_recover == timedelta(days=1, minutes=55)
    assert d.total_impact == timedelta(days=3, hours=2)


def test_unknown_ends_give_none() -> None:
    d = compute(Milestones())
    assert (d.started, d.time_to_detect, d.time_to_recover, d.total_impact) == (None, None, None, None)
    d = compute(Milestones(detected_at=at(22, 14, 35), recovered_at=at(22, 14, 38)))
    assert d.time_to_detect is None and d.total_impact is None and d.time_to_recover is None


def test_negative_spans_are_not_shown() -> None:
    # Inconsistent old data (recovered before the rollback decision) must not print "-5 min".
    d = compute(Milestones(deployed_at=at(22, 14, 0), detected_at=at(22, 13, 50), rollback_at=at(22, 14, 40),
                           recovered_at=at(22, 14, 35)))
    assert d.time_to_detect is None
    assert d.time_to_recover is None
    assert d.total_impact == timedelta(minutes=35)


def test_equal_times_are_zero_not_none() -> None:
    d = compute(Milestones(deployed_at=at(22, 14, 0), detected_at=at(22, 14, 0), rollback_at=at(22, 14, 0),
                           recovered_at=at(22, 14, 0)))
    assert d.time_to_detect == timedelta(0) and d.time_to_recover == timedelta(0)


# ---- order -----------------------------------------------------------------------------------------------------


def times(**values: datetime) -> dict[str, datetime | None]:
    return {name: values.get(name) for name in MILESTONE_ORDER}


def test_in_order_and_equal_times_are_accepted() -> None:
    current = times(deployed=at(22, 14, 0), detected=at(22, 14, 35))
    assert order_conflict(current, "rollback", at(22, 14, 35)) is None
    assert order_conflict(current, "started", at(22, 14, 15)) is None
    assert order_conflict(current, "recovered", at(22, 14, 38)) is None


def test_recovered_before_detected_names_detected() -> None:
    conflict = order_conflict(times(deployed=at(22, 14, 0), detected=at(22, 14, 35)), "recovered", at(22, 14, 20))
    assert conflict is not None
    assert (conflict.milestone, conflict.other, conflict.other_at, conflict.relation) == (
        "recovered", "detected", at(22, 14, 35), "after")


def test_the_tightest_bound_is_named() -> None:
    current = times(deployed=at(22, 14, 0), detected=at(22, 14, 35), rollback=at(22, 14, 40))
    late = order_conflict(current, "recovered", at(22, 14, 10))
    assert late is not None and late.other == "rollback"
    early = order_conflict(times(detected=at(22, 14, 35), rollback=at(22, 14, 37), recovered=at(22, 14, 38)),
                           "deployed", at(22, 14, 50))
    assert early is not None and (early.other, early.relation) == ("detected", "before")


def test_unset_started_does_not_constrain_but_deployed_still_does() -> None:
    current = times(deployed=at(22, 14, 0))
    assert order_conflict(current, "detected", at(22, 14, 10)) is None
    conflict = order_conflict(current, "detected", at(22, 13, 50))
    assert conflict is not None and conflict.other == "deployed"
    assert order_conflict(times(started=at(22, 14, 15)), "deployed", at(22, 14, 20)) is not None


def test_order_compares_to_the_minute_and_across_days() -> None:
    current = times(detected=datetime(2025, 10, 22, 14, 35, 40, tzinfo=UTC))
    assert order_conflict(current, "rollback", at(22, 14, 35)) is None
    assert order_conflict(current, "rollback", at(22, 14, 34)) is not None
    # 23:50 the day before is earlier than 00:10, although the clock reads larger.
    assert order_conflict(times(deployed=at(22, 23, 50)), "detected", at(23, 0, 10)) is None
    assert order_conflict(times(detected=at(23, 0, 10)), "deployed", at(22, 23, 50)) is None


def test_correcting_a_milestone_ignores_its_own_old_value() -> None:
    current = times(detected=at(22, 14, 35), rollback=at(22, 14, 37))
    assert order_conflict(current, "detected", at(22, 14, 20)) is None
