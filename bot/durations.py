"""The durations the post-mortem measures, from milestones. Pure; never `timedelta.seconds`.

- time to detect   = detected − started (started defaults to deployed)
- time to recover  = recovered − rollback
- total impact     = recovered − started: from the moment users were hurt until service was back.
  The guide's example report prints 20 min for 14:15 → 14:38; we compute the span rather than copy it.

A span is None while either end is unknown, and also when it would be negative: milestone order is enforced
when milestones are set (bot/lifecycle.py), so a negative span can only come from inconsistent old data, and
showing "-5 min" as a time to detect would be worse than showing nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class HasMilestones(Protocol):
    deployed_at: datetime | None
    started_at: datetime | None
    detected_at: datetime | None
    rollback_at: datetime | None
    recovered_at: datetime | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class Durations:
    started: datetime | None
    time_to_detect: timedelta | None
    time_to_recover: timedelta | None
    total_impact: timedelta | None
    since_deploy_to_detect: timedelta | None


def _span(start: datetime | None, end: datetime | None) -> timedelta | None:
    if start is None or end is None or end < start:
        return None
    return end - start


def compute(incident: HasMilestones) -> Durations:
    started = incident.started_at or incident.deployed_at
    return Durations(
        started=started,
        time_to_detect=_span(started, incident.detected_at),
        time_to_recover=_span(incident.rollback_at, incident.recovered_at),
        total_impact=_span(started, incident.recovered_at),
        since_deploy_to_detect=_span(incident.deployed_at, incident.detected_at),
    )


# The order the milestones must keep; equal times are allowed (a rollback decided the minute it was detected).
MILESTONE_ORDER = ("deployed", "started", "detected", "rollback", "recovered", "resolved")


@dataclass(frozen=True)
class OrderConflict:
    """Setting `milestone` would put it before `other` (relation "after": it must not be earlier than other)
    or after it (relation "before": it must not be later than other)."""

    milestone: str
    other: str
    other_at: datetime
    relation: str  # "after" | "before"


def order_conflict(times: Mapping[str, datetime | None], milestone: str, at: datetime) -> OrderConflict | None:
    """The conflict that setting `milestone` to `at` would create, naming the tightest bound, or None.

    Times compare to the minute, as they are shown: 14:35:40 is not "after" a rollback typed as 14:35.
    Unset milestones impose nothing; an unset `started` means `deployed`, which bounds everything after it
    directly, so the default needs no special case here.
    """
    position = MILESTONE_ORDER.index(milestone)
    mine = _minute(at)
    earlier = [(t, m) for m in MILESTONE_ORDER[:position] if (t := times.get(m)) is not None]
    later = [(t, m) for m in MILESTONE_ORDER[position + 1:] if (t := times.get(m)) is not None]
    too_late = [(t, m) for t, m in earlier if _minute(t) > mine]
    if too_late:
        when, other = max(too_late, key=lambda pair: (pair[0], MILESTONE_ORDER.index(pair[1])))
        return OrderConflict(milestone, other, when, "after")
    too_early = [(t, m) for t, m in later if _minute(t) < mine]
    if too_early:
        when, other = min(too_early, key=lambda pair: (pair[0], MILESTONE_ORDER.index(pair[1])))
        return OrderConflict(milestone, other, when, "before")
    return None


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)
