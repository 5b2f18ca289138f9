"""The durations the post-mortem measures, from milestones. Pure; never `timedelta.seconds`.

- time to detect   = detected − started (started defaults to deployed)
- time to recover  = recovered − rollback
- total impact     = recovered − started: from the moment users were hurt until service was back.
  The guide's example report prints 20 min for 14:15 → 14:38; we compute the span rather than copy it.
"""

from __future__ import annotations

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
    if start is None or end is None:
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
