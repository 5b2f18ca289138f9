"""How the team is doing over a period: `/incident stats` and the App Home's three numbers. Domain only.

Which incidents count: those *opened* (declared) in the period, whatever their state now, except cancelled ones.
Every incident has its open time, while `started` is often unknown, and the open is the moment the team saw; a
cancelled incident was a false alarm or a duplicate, with no impact to measure. An incident still open counts:
it is what is being handled now, and its missing recovery is named, not hidden.

Measures come from milestones only (bot/durations.py), never from `updated_at` nor the open time:
- time to detect  = detected − started (started defaults to deployed);
- time to recover = recovered − rollback;
- total impact    = the sum of recovered − started over the incidents that have both (the guide's 총 영향 시간).
An incident without the two milestones of a measure is counted in the period and named as incomplete for that
measure, never taken as zero. Median and p90 are PostgreSQL's `percentile_cont` (linear interpolation between the
closest ranks), computed here from one query's rows so that SQLite gives the same numbers.

A rolling period is whole local days: `30d` is today and the 29 days before it, from midnight in
INCIDENT_TIMEZONE; a month is its calendar month there. Weeks are 7-day buckets from the period's start (the last
one may be shorter), not ISO weeks: a rolling 30 days or a month rarely starts on a Monday, and half weeks at both
ends would be compared with whole ones.

Only incidents the asker may see count (bot.access: this channel's, public channels', and the asker's other
channels'). The whole computation is three SQL statements whatever the number of incidents: the incidents' rows,
the channels' visibility, and one aggregate over their action items.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from bot import durations
from bot.access import Asker
from bot.parsing import SEVERITIES, UsageError
from storage.models import ActionItem, Incident

DEFAULT_PERIOD = "30d"
ROLLING_DAYS = {"30d": 30, "90d": 90}
WEEK = timedelta(days=7)
_INSTANT = timedelta(microseconds=1)
NAMED_AT_MOST = 10  # incomplete incidents named by ID; the rest are counted
_MONTH = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class Period:
    """[start, end): `end` is None for a rolling period (nothing is opened after now). `key` is what was typed."""

    key: str
    start: datetime
    end: datetime | None
    until: datetime  # where the period stops today: its end, or now

    @property
    def is_month(self) -> bool:
        return self.end is not None

    @property
    def last_moment(self) -> datetime:
        """The last instant inside the period, for showing its last day."""
        return self.until - _INSTANT if self.end is not None and self.until == self.end else self.until


def parse_period(text: str, now: datetime, zone: ZoneInfo) -> Period:
    """`30d`, `90d` (rolling, up to now) or `YYYY-MM` (a calendar month in `zone`); empty means 30d.
    Raises UsageError("bad_period" | "future_month", "stats")."""
    word = text.strip().lower() or DEFAULT_PERIOD
    if word in ROLLING_DAYS:
        return last_days(ROLLING_DAYS[word], now, zone)
    month = _MONTH.fullmatch(word)
    if month is None or not 1 <= int(month.group(2)) <= 12 or int(month.group(1)) < 1970:
        raise UsageError("bad_period", "stats", value=text.strip()[:40])
    year, number = int(month.group(1)), int(month.group(2))
    start = datetime(year, number, 1, tzinfo=zone).astimezone(UTC)
    following = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone).astimezone(UTC)
    if start > now:
        raise UsageError("future_month", "stats", value=word)
    return Period(word, start, following, min(following, now))


def last_days(days: int, now: datetime, zone: ZoneInfo) -> Period:
    """Today and the `days` − 1 days before it, whole local days: the weeks then start at midnight too."""
    return Period(f"{days}d", _midnight(now.astimezone(zone).date() - timedelta(days=days - 1), zone), None, now)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def percentile(values: Sequence[timedelta], fraction: float) -> timedelta | None:
    """`percentile_cont(fraction)`: the value at rank fraction × (n − 1), interpolated; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class IncidentRow:
    """What the stats read of an incident (a plain class: durations.HasMilestones wants settable attributes)."""

    id: int
    public_id: str
    severity: str
    channel_id: str
    opened_at: datetime
    deployed_at: datetime | None
    started_at: datetime | None
    detected_at: datetime | None
    rollback_at: datetime | None
    recovered_at: datetime | None
    resolved_at: datetime | None


_ROW_COLUMNS = (Incident.id, Incident.public_id, Incident.severity, Incident.channel_id, Incident.opened_at,
                Incident.deployed_at, Incident.started_at, Incident.detected_at, Incident.rollback_at,
                Incident.recovered_at, Incident.resolved_at)


def _counted(period: Period) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [Incident.opened_at >= period.start, Incident.status != "cancelled"]
    if period.end is not None:
        where.append(Incident.opened_at < period.end)
    return where


def incident_rows(session: Session, period: Period) -> list[IncidentRow]:
    """The incidents the period counts, oldest first: one statement."""
    rows = session.execute(
        select(*_ROW_COLUMNS).where(*_counted(period)).order_by(Incident.opened_at, Incident.id)
    )
    return [IncidentRow(*row) for row in rows]


@dataclass(frozen=True)
class Measure:
    """One span over the period: the complete incidents' values, and the IDs of those missing a milestone."""

    values: tuple[timedelta, ...]
    incomplete: tuple[str, ...]

    @property
    def median(self) -> timedelta | None:
        return percentile(self.values, 0.5)

    @property
    def p90(self) -> timedelta | None:
        return percentile(self.values, 0.9)

    @property
    def total(self) -> timedelta | None:
        return sum(self.values, timedelta()) if self.values else None

    @property
    def named(self) -> tuple[str, ...]:
        return self.incomplete[:NAMED_AT_MOST]

    @property
    def unnamed(self) -> int:
        return max(len(self.incomplete) - NAMED_AT_MOST, 0)


def _measure(rows: Iterable[IncidentRow], span: Callable[[durations.Durations], timedelta | None]) -> Measure:
    values: list[timedelta] = []
    incomplete: list[str] = []
    for row in rows:
        value = span(durations.compute(row))
        if value is None:
            incomplete.append(row.public_id)
        else:
            values.append(value)
    return Measure(tuple(values), tuple(incomplete))


def _time_to_detect(d: durations.Durations) -> timedelta | None:
    return d.time_to_detect


def _time_to_recover(d: durations.Durations) -> timedelta | None:
    return d.time_to_recover


def _total_impact(d: durations.Durations) -> timedelta | None:
    return d.total_impact


@dataclass(frozen=True)
class Week:
    start: datetime
    end: datetime  # exclusive; the last week stops where the period does
    incidents: int
    detect_median: timedelta | None
    recover_median: timedelta | None

    @property
    def last_moment(self) -> datetime:
        return self.end - _INSTANT


@dataclass(frozen=True)
class ActionCounts:
    done: int
    open: int  # not done, in progress included
    overdue: int  # of the open ones, due before now


@dataclass(frozen=True)
class Summary:
    """What the rows alone say (no further query): the App Home shows part of it."""

    period: Period
    incidents: int
    by_severity: tuple[tuple[str, int], ...]  # severities in the guide's order, then any other
    detect: Measure
    recover: Measure
    impact: Measure
    weeks: tuple[Week, ...]


@dataclass(frozen=True)
class Stats:
    summary: Summary
    actions: ActionCounts


def summarize(rows: Sequence[IncidentRow], period: Period, zone: ZoneInfo) -> Summary:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.severity] = counts.get(row.severity, 0) + 1
    order = [s for s in SEVERITIES if s in counts] + sorted(s for s in counts if s not in SEVERITIES)
    return Summary(
        period=period, incidents=len(rows), by_severity=tuple((s, counts[s]) for s in order),
        detect=_measure(rows, _time_to_detect), recover=_measure(rows, _time_to_recover),
        impact=_measure(rows, _total_impact), weeks=tuple(weeks(rows, period, zone)),
    )


def weeks(rows: Sequence[IncidentRow], period: Period, zone: ZoneInfo) -> list[Week]:
    """7-day buckets from the period's start (local midnights, so a DST change moves no boundary) to where it stops
    today; each incident in the week it was opened."""
    first = period.start.astimezone(zone).date()
    starts = [period.start]
    while (following := _midnight(first + WEEK * len(starts), zone)) < period.until:
        starts.append(following)
    buckets: list[list[IncidentRow]] = [[] for _ in starts]
    for row in rows:
        buckets[max(bisect_right(starts, row.opened_at) - 1, 0)].append(row)
    return [
        Week(start=start, end=starts[index + 1] if index + 1 < len(starts) else period.until,
             incidents=len(bucket), detect_median=_measure(bucket, _time_to_detect).median,
             recover_median=_measure(bucket, _time_to_recover).median)
        for index, (start, bucket) in enumerate(zip(starts, buckets, strict=True))
    ]


def action_counts(session: Session, period: Period, channels: set[str], now: datetime) -> ActionCounts:
    """Done, open and overdue action items of the period's incidents in `channels`: one aggregate statement."""
    not_done = ActionItem.status != "done"
    overdue = and_(not_done, ActionItem.due_at.is_not(None), ActionItem.due_at < now)
    row = session.execute(
        select(
            func.coalesce(func.sum(case((ActionItem.status == "done", 1), else_=0)), 0),
            func.coalesce(func.sum(case((not_done, 1), else_=0)), 0),
            func.coalesce(func.sum(case((overdue, 1), else_=0)), 0),
        )
        .join(Incident, Incident.id == ActionItem.incident_id)
        .where(*_counted(period), Incident.channel_id.in_(channels))
    ).one()
    return ActionCounts(done=int(row[0]), open=int(row[1]), overdue=int(row[2]))


def visible(rows: Sequence[IncidentRow], channels: set[str]) -> list[IncidentRow]:
    return [row for row in rows if row.channel_id in channels]


def compute(session: Session, asker: Asker, period: Period, now: datetime, zone: ZoneInfo) -> Stats:
    """The period's stats over the incidents `asker` may see. Raises AccessPending when Slack must say which."""
    rows = incident_rows(session, period)
    channels = asker.visible_channels(session, {row.channel_id for row in rows})
    return Stats(summarize(visible(rows, channels), period, zone), action_counts(session, period, channels, now))
