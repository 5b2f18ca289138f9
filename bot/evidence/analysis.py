"""Pure analysis of captured evidence: no I/O, no clients, no Slack.

Covers the runbook's Phase 2 questions: the top error patterns, errors per minute (right after the
deploy or later?), affected endpoints, and the per-revision metrics snapshot with the guide's
readings (high error rate → logic bug; slow → performance or database; extreme p99 → outliers or
external timeouts). Readings are stable codes; templates turn them into Korean or English text.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypedDict
from urllib.parse import urlsplit

# --------------------------------------------------------------------------------------------------
# Error message normalisation and top patterns
# --------------------------------------------------------------------------------------------------

_LEADING_TS = re.compile(
    r"^\s*[\[(]?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})?[\])]?"
    r"\s*[-:|]?\s*"
)
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
# An opening quote must not follow a letter, so "can't" is not taken for a quoted value.
_QUOTED = re.compile(r"""(?<![A-Za-z0-9])'[^'\n]*'|"[^"\n]*\"""")
# Hex ids: 0x… or a run of ≥6 hex digits containing a digit, not glued to letters or digits
# (underscore and dashes are separators, so "session_9f2c1a" becomes "session_<hex>").
_HEX = re.compile(r"(?<![0-9A-Za-z])(?:0x[0-9a-fA-F]+|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{6,})(?![0-9A-Za-z])")
# Numbers not glued to a preceding letter: "1234ms" → "<num>ms" but "v2" and "utf8" stay.
_NUMBER = re.compile(r"(?<![A-Za-z<])\d+(?:\.\d+)?")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_SPACES = re.compile(r"\s+")
MAX_PATTERN_CHARS = 300


def _headline(message: str) -> str:
    """The line of a multi-line message that names the error (a traceback's last line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        return lines[-1]
    return lines[0]


def _strip_timestamp(line: str) -> str:
    return _LEADING_TS.sub("", line, count=1)


def normalise_message(message: str) -> str:
    """Collapse the variable parts of an error message so that similar errors group together.

    Strips a leading timestamp, then replaces UUIDs with ``<uuid>``, quoted values with ``'<str>'``
    / ``"<str>"``, IPv4 addresses with ``<ip>``, hex ids with ``<hex>`` and numbers with ``<num>``.
    """
    text = _strip_timestamp(_headline(message or ""))
    text = _UUID.sub("<uuid>", text)
    text = _QUOTED.sub(lambda m: m.group(0)[0] + "<str>" + m.group(0)[0], text)
    text = _IPV4.sub("<ip>", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<num>", text)
    text = _SPACES.sub(" ", text).strip()
    return text[:MAX_PATTERN_CHARS]


class PatternCount(NamedTuple):
    pattern: str
    count: int  # type: ignore[assignment]  # a field may shadow tuple.count(); callers read the field
    example: str


def top_patterns(messages: Iterable[str], n: int = 10) -> list[PatternCount]:
    """The ``n`` most frequent normalised patterns, each with its first example (the original
    headline line, leading timestamp removed).

    Ties keep first-seen order so the output is deterministic.
    """
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for message in messages:
        pattern = normalise_message(message)
        if not pattern:
            continue
        counts[pattern] += 1
        examples.setdefault(pattern, _strip_timestamp(_headline(message)).strip())
    order = {p: i for i, p in enumerate(examples)}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], order[kv[0]]))
    return [PatternCount(p, c, examples[p]) for p, c in ranked[:n]]


# --------------------------------------------------------------------------------------------------
# Errors per minute and onset relative to the deploy
# --------------------------------------------------------------------------------------------------


class MinuteCount(NamedTuple):
    minute_start: datetime
    count: int  # type: ignore[assignment]  # a field may shadow tuple.count(); callers read the field


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.astimezone(UTC)


def _floor_minute(ts: datetime) -> datetime:
    return _utc(ts).replace(second=0, microsecond=0)


class MinuteCounter:
    """Counts events per UTC minute inside [start, end); memory grows with minutes, not events.

    Buckets run from the minute containing ``start`` to the minute containing the last instant
    before ``end``; events outside the window are ignored (and counted in ``outside``).
    """

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = _utc(start), _utc(end)
        if self.end <= self.start:
            raise ValueError("end must be after start")
        self._first = _floor_minute(self.start)
        self._counts: Counter[int] = Counter()
        self.outside = 0

    def add(self, ts: datetime) -> None:
        ts = _utc(ts)
        if not (self.start <= ts < self.end):
            self.outside += 1
            return
        self._counts[int((ts - self._first).total_seconds() // 60)] += 1

    def buckets(self) -> list[MinuteCount]:
        last = _floor_minute(self.end - timedelta(microseconds=1))
        n = int((last - self._first).total_seconds() // 60) + 1
        return [MinuteCount(self._first + timedelta(minutes=i), self._counts.get(i, 0)) for i in range(n)]


def errors_per_minute(timestamps: Iterable[datetime], start: datetime, end: datetime) -> list[MinuteCount]:
    """Error counts per minute over the whole window [start, end), zero minutes included."""
    counter = MinuteCounter(start, end)
    for ts in timestamps:
        counter.add(ts)
    return counter.buckets()


@dataclass(frozen=True)
class OnsetSummary:
    """When errors began relative to the deploy.

    ``onset_minute`` is the first minute at or after the deploy's minute whose count exceeds
    ``max(1, 2 × the pre-deploy average per minute)`` — background errors of the stable revision do
    not count as an onset. ``onset`` is ``"none"`` (no such minute), ``"immediate"`` (within
    ``immediate_within`` of the deploy, default 10 min) or ``"delayed"``.
    """

    total: int
    first_error_minute: datetime | None
    peak_minute: datetime | None
    peak_count: int
    before_deploy: int
    baseline_per_minute: float
    onset_minute: datetime | None
    onset_minutes_after_deploy: float | None
    share_first_10_min: float | None
    onset: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("first_error_minute", "peak_minute", "onset_minute"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


def error_onset(
    buckets: list[MinuteCount], deployed_at: datetime, *, immediate_within: timedelta = timedelta(minutes=10)
) -> OnsetSummary:
    deploy_minute = _floor_minute(deployed_at)
    before = [b for b in buckets if b.minute_start < deploy_minute]
    after = [b for b in buckets if b.minute_start >= deploy_minute]
    total = sum(b.count for b in buckets)
    first = next((b.minute_start for b in buckets if b.count), None)
    peak = max(buckets, key=lambda b: b.count, default=None)
    before_total = sum(b.count for b in before)
    baseline = before_total / len(before) if before else 0.0
    threshold = max(1.0, 2.0 * baseline)
    onset_bucket = next((b for b in after if b.count >= threshold and b.count > 0), None)
    after_total = sum(b.count for b in after)
    first_10 = sum(b.count for b in after if b.minute_start < deploy_minute + timedelta(minutes=10))
    onset_after: float | None = None
    code = "none"
    if onset_bucket is not None:
        onset_after = max(0.0, (onset_bucket.minute_start - _utc(deployed_at)).total_seconds() / 60.0)
        code = "immediate" if onset_bucket.minute_start < deploy_minute + immediate_within else "delayed"
    return OnsetSummary(
        total=total,
        first_error_minute=first,
        peak_minute=peak.minute_start if peak and peak.count else None,
        peak_count=peak.count if peak else 0,
        before_deploy=before_total,
        baseline_per_minute=round(baseline, 3),
        onset_minute=onset_bucket.minute_start if onset_bucket else None,
        onset_minutes_after_deploy=round(onset_after, 2) if onset_after is not None else None,
        share_first_10_min=round(first_10 / after_total, 4) if after_total else None,
        onset=code,
    )


# --------------------------------------------------------------------------------------------------
# Affected endpoints
# --------------------------------------------------------------------------------------------------


class EndpointCount(NamedTuple):
    path: str
    count: int  # type: ignore[assignment]  # a field may shadow tuple.count(); callers read the field


_ID_SEGMENT = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}|(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,})$"
)
OTHER_ENDPOINTS = "(other)"


def endpoint_path(url: str) -> str:
    """The path of a request URL without host and query; id-like segments become ``{id}``."""
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0].split("#", 1)[0]
    segments = [("{id}" if _ID_SEGMENT.match(s) else s) for s in path.split("/") if s]
    return "/" + "/".join(segments)


class EndpointCounter:
    """Counts endpoint paths; beyond ``max_paths`` distinct paths the rest go to ``(other)``."""

    def __init__(self, max_paths: int = 500) -> None:
        self.max_paths = max_paths
        self._counts: Counter[str] = Counter()

    def add(self, url: str) -> None:
        path = endpoint_path(url)
        if path not in self._counts and len(self._counts) >= self.max_paths:
            path = OTHER_ENDPOINTS
        self._counts[path] += 1

    def most_common(self, n: int | None = None) -> list[EndpointCount]:
        ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [EndpointCount(p, c) for p, c in ranked[:n]]


def affected_endpoints(urls: Iterable[str], n: int | None = None) -> list[EndpointCount]:
    """Request paths by number of occurrences (hosts and query strings dropped), most first."""
    counter = EndpointCounter()
    for url in urls:
        if url:
            counter.add(url)
    return counter.most_common(n)


# --------------------------------------------------------------------------------------------------
# Per-revision request statistics
# --------------------------------------------------------------------------------------------------


def parse_latency_ms(value: object) -> float | None:
    """Milliseconds from a LogEntry ``httpRequest.latency``: ``"0.452s"``, ``"1.2s"``, ``"0s"``,
    a ``{"seconds", "nanos"}`` mapping, or a number of seconds. ``None`` if absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text.endswith("s"):
            return None
        try:
            seconds = float(text[:-1])
        except ValueError:
            return None
    elif isinstance(value, Mapping):
        try:
            seconds = float(value.get("seconds", 0) or 0) + float(value.get("nanos", 0) or 0) / 1e9
        except (TypeError, ValueError):
            return None
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds * 1000.0


class LatencyHistogram:
    """A fixed log-bucketed histogram (DDSketch-style) for streaming percentiles.

    Bucket ``i`` holds values in (MIN_MS·γ^(i-1), MIN_MS·γ^i] with γ = 1.02 and is reported as
    MIN_MS·2γ^i/(γ+1), so any percentile is within **RELATIVE_ERROR = (γ-1)/(γ+1) ≈ 0.99 %** of the
    exact nearest-rank value. Values ≤ MIN_MS (0.01 ms) count as 0; values above MAX_MS (1 h) are
    clamped into the last bucket. Memory is one list of ~1000 counters, whatever the entry count.
    """

    GAMMA = 1.02
    RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
    MIN_MS = 0.01
    MAX_MS = 3_600_000.0
    _LOG_GAMMA = math.log(GAMMA)
    BUCKETS = math.ceil(math.log(MAX_MS / MIN_MS) / _LOG_GAMMA) + 1

    def __init__(self) -> None:
        self._counts = [0] * self.BUCKETS
        self._zero = 0
        self.count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = -math.inf

    def add(self, ms: float) -> None:
        self.count += 1
        self.total_ms += ms
        self.min_ms = min(self.min_ms, ms)
        self.max_ms = max(self.max_ms, ms)
        if ms <= self.MIN_MS:
            self._zero += 1
            return
        index = math.ceil(math.log(ms / self.MIN_MS) / self._LOG_GAMMA)
        self._counts[min(max(index, 0), self.BUCKETS - 1)] += 1

    def mean(self) -> float | None:
        return self.total_ms / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Nearest-rank percentile estimate (the ⌈q·n⌉-th smallest value), within RELATIVE_ERROR."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank <= self._zero:
            return 0.0
        seen = self._zero
        for index, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                estimate = self.MIN_MS * 2.0 * self.GAMMA**index / (self.GAMMA + 1.0)
                return min(max(estimate, self.min_ms), self.max_ms)
        return self.max_ms


@dataclass(frozen=True)
class ReadingThresholds:
    """When a number earns one of the guide's readings. Defaults are derived from the guide's
    normal service (error rate 0.5 %, avg 150 ms, p95 200 ms): 10× the normal error rate, 2× the
    normal average or p95, and a p99 above 1 s that is at least twice the p95."""

    error_rate_high: float = 0.05
    avg_slow_ms: float = 300.0
    p95_slow_ms: float = 400.0
    p99_extreme_ms: float = 1000.0
    p99_over_p95: float = 2.0


DEFAULT_THRESHOLDS = ReadingThresholds()

# Stable reading codes; templates map them to text.
READING_LOGIC_BUG = "logic_bug"
READING_PERFORMANCE = "performance_or_database"
READING_OUTLIERS = "outliers_or_timeouts"


def readings_for(
    error_rate: float | None, avg_ms: float | None, p95_ms: float | None, p99_ms: float | None,
    thresholds: ReadingThresholds = DEFAULT_THRESHOLDS,
) -> list[str]:
    """The guide's interpretation of one revision's numbers, in the guide's order."""
    out: list[str] = []
    if error_rate is not None and error_rate >= thresholds.error_rate_high:
        out.append(READING_LOGIC_BUG)
    if (avg_ms is not None and avg_ms >= thresholds.avg_slow_ms) or (
        p95_ms is not None and p95_ms >= thresholds.p95_slow_ms
    ):
        out.append(READING_PERFORMANCE)
    if p99_ms is not None and p99_ms >= thresholds.p99_extreme_ms and (
        not p95_ms or p99_ms >= thresholds.p99_over_p95 * p95_ms
    ):
        out.append(READING_OUTLIERS)
    return out


class RevisionStats(TypedDict):
    """One revision's snapshot in the guide's field names (error_rate is a fraction: 0.09 = 9 %)."""

    revision: str
    request_count: int
    error_count: int
    client_error_count: int
    error_rate: float
    error_rate_display: str
    avg_response_time_ms: float | None
    p95_response_time_ms: float | None
    p99_response_time_ms: float | None
    latency_samples: int
    readings: list[str]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


class RevisionStatsAccumulator:
    """Streaming per-revision request count, 5xx count, error rate, average, p95 and p99.

    Memory is bounded independent of the number of entries: one :class:`LatencyHistogram` per
    revision, and at most ``max_revisions`` revisions (later ones are pooled under ``(other)``).
    """

    OTHER = "(other)"

    def __init__(self, thresholds: ReadingThresholds = DEFAULT_THRESHOLDS, max_revisions: int = 32) -> None:
        self.thresholds = thresholds
        self.max_revisions = max_revisions
        self._rev: dict[str, _RevisionCounters] = {}

    def add(self, revision: str, status: int | None, latency: object) -> None:
        counters = self._rev.get(revision)
        if counters is None:
            if len(self._rev) >= self.max_revisions:
                revision = self.OTHER
            counters = self._rev.setdefault(revision, _RevisionCounters())
        counters.requests += 1
        if status is not None:
            if status >= 500:
                counters.errors += 1
            elif status >= 400:
                counters.client_errors += 1
        ms = parse_latency_ms(latency)
        if ms is not None:
            counters.latency.add(ms)

    def revisions(self) -> list[str]:
        return list(self._rev)

    def result(self) -> dict[str, RevisionStats]:
        out: dict[str, RevisionStats] = {}
        for name, c in sorted(self._rev.items()):
            rate = c.errors / c.requests if c.requests else 0.0
            avg = c.latency.mean()
            p95 = c.latency.quantile(0.95)
            p99 = c.latency.quantile(0.99)
            out[name] = RevisionStats(
                revision=name,
                request_count=c.requests,
                error_count=c.errors,
                client_error_count=c.client_errors,
                error_rate=rate,
                error_rate_display=f"{rate * 100:.1f}%",
                avg_response_time_ms=_round(avg),
                p95_response_time_ms=_round(p95),
                p99_response_time_ms=_round(p99),
                latency_samples=c.latency.count,
                readings=readings_for(rate if c.requests else None, avg, p95, p99, self.thresholds),
            )
        return out


@dataclass
class _RevisionCounters:
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


# --------------------------------------------------------------------------------------------------
# Per-minute series per revision (what the evidence chart draws)
# --------------------------------------------------------------------------------------------------


class MinuteStats(NamedTuple):
    """One revision's minute: requests, 5xx and the P95 of their latencies (None: no latency sample)."""

    minute_start: datetime
    requests: int
    server_errors: int
    p95_ms: float | None


class CompactLatencyHistogram:
    """A per-minute P95 for charts: γ = 1.05 (within RELATIVE_ERROR ≈ 2.4 %), values from 1 ms to 1 h in
    one array of 32-bit counters (≈1.2 KiB), so a 24-hour window of two revisions stays a few MiB however
    busy the service is. Values at or below 1 ms count as 1 ms."""

    GAMMA = 1.05
    RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)
    MIN_MS = 1.0
    MAX_MS = 3_600_000.0
    _LOG_GAMMA = math.log(GAMMA)
    BUCKETS = math.ceil(math.log(MAX_MS / MIN_MS) / _LOG_GAMMA) + 1

    def __init__(self) -> None:
        self._counts = array("I", bytes(4 * self.BUCKETS))
        self.count = 0

    def add(self, ms: float) -> None:
        self.count += 1
        index = math.ceil(math.log(ms / self.MIN_MS) / self._LOG_GAMMA) if ms > self.MIN_MS else 0
        self._counts[min(index, self.BUCKETS - 1)] += 1

    def quantile(self, q: float) -> float | None:
        """Nearest-rank percentile estimate, like :meth:`LatencyHistogram.quantile`."""
        if not self.count:
            return None
        rank, seen = max(1, math.ceil(q * self.count)), 0
        for index, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                return self.MIN_MS if index == 0 else self.MIN_MS * 2.0 * self.GAMMA**index / (self.GAMMA + 1.0)
        return self.MAX_MS


@dataclass
class _MinuteCounters:
    requests: int = 0
    server_errors: int = 0
    latency: CompactLatencyHistogram | None = None


class MinuteSeriesAccumulator:
    """Requests, 5xx and P95 per revision per minute of [start, end), streamed; every minute of the window
    is reported, with 0 requests where none came (the chart draws those as gaps, never as zeros)."""

    def __init__(self, start: datetime, end: datetime, max_revisions: int = 32) -> None:
        self._window = MinuteCounter(start, end)  # the window's minute grid
        self._first_minute = _floor_minute(start)
        self.max_revisions = max_revisions
        self._rev: dict[str, dict[int, _MinuteCounters]] = {}

    def add(self, revision: str, status: int | None, latency: object, timestamp: datetime | None) -> None:
        if timestamp is None:
            return
        ts = _utc(timestamp)
        if not (self._window.start <= ts < self._window.end):
            return
        minutes = self._rev.get(revision)
        if minutes is None:
            if len(self._rev) >= self.max_revisions:  # pooled like RevisionStatsAccumulator's
                revision = RevisionStatsAccumulator.OTHER
            minutes = self._rev.setdefault(revision, {})
        index = int((ts - self._first_minute).total_seconds() // 60)
        cell = minutes.get(index)
        if cell is None:
            cell = minutes[index] = _MinuteCounters()
        cell.requests += 1
        if status is not None and status >= 500:
            cell.server_errors += 1
        ms = parse_latency_ms(latency)
        if ms is not None:
            if cell.latency is None:
                cell.latency = CompactLatencyHistogram()
            cell.latency.add(ms)

    def result(self) -> dict[str, list[MinuteStats]]:
        grid = [b.minute_start for b in self._window.buckets()]
        out: dict[str, list[MinuteStats]] = {}
        for revision, minutes in sorted(self._rev.items()):
            series = []
            for index, minute in enumerate(grid):
                cell = minutes.get(index)
                if cell is None:
                    series.append(MinuteStats(minute, 0, 0, None))
                else:
                    p95 = cell.latency.quantile(0.95) if cell.latency else None
                    series.append(MinuteStats(minute, cell.requests, cell.server_errors, _round(p95)))
            out[revision] = series
        return out


# --------------------------------------------------------------------------------------------------
# Request-log stream summary (per revision stats + 5xx timeline + failing endpoints)
# --------------------------------------------------------------------------------------------------


@dataclass
class RequestLogSummary:
    entries: int
    revisions: dict[str, RevisionStats]
    server_errors_per_minute: list[MinuteCount]
    server_errors_per_minute_by_revision: dict[str, list[MinuteCount]]
    failing_endpoints: list[EndpointCount]
    per_minute_by_revision: dict[str, list[MinuteStats]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "revisions": dict(self.revisions),
            "server_errors_per_minute": _minutes_json(self.server_errors_per_minute),
            "server_errors_per_minute_by_revision": {
                r: _minutes_json(b) for r, b in self.server_errors_per_minute_by_revision.items()
            },
            "failing_endpoints": [{"path": p, "count": c} for p, c in self.failing_endpoints],
            "per_minute_by_revision": {r: per_minute_json(m) for r, m in self.per_minute_by_revision.items()},
        }


def per_minute_json(minutes: list[MinuteStats]) -> list[dict[str, Any]]:
    """JSON-able minutes; a minute without requests has a null error rate (a gap, not 0 %)."""
    return [{"minute": m.minute_start.isoformat(), "requests": m.requests, "server_errors": m.server_errors,
             "error_rate": round(m.server_errors / m.requests, 6) if m.requests else None, "p95_ms": m.p95_ms}
            for m in minutes]


def _minutes_json(buckets: list[MinuteCount]) -> list[dict[str, Any]]:
    return [{"minute": b.minute_start.isoformat(), "count": b.count} for b in buckets]


class RequestLogAggregator:
    """Folds request-log entries into a :class:`RequestLogSummary` as they stream past.

    State is bounded by revisions × minutes in the window and distinct failing paths (capped),
    never by the number of entries or pages.
    """

    def __init__(self, start: datetime, end: datetime, thresholds: ReadingThresholds = DEFAULT_THRESHOLDS) -> None:
        self.start, self.end = start, end
        self.entries = 0
        self.stats = RevisionStatsAccumulator(thresholds)
        self._minutes = MinuteCounter(start, end)
        self._minutes_by_rev: dict[str, MinuteCounter] = {}
        self._endpoints = EndpointCounter()
        self._series = MinuteSeriesAccumulator(start, end, self.stats.max_revisions)

    def add(self, revision: str, status: int | None, latency: object, timestamp: datetime | None,
            url: str | None) -> None:
        self.entries += 1
        self.stats.add(revision, status, latency)
        self._series.add(revision, status, latency, timestamp)
        if status is not None and status >= 500:
            if timestamp is not None:
                self._minutes.add(timestamp)
                if revision in self._minutes_by_rev or len(self._minutes_by_rev) < self.stats.max_revisions:
                    per_rev = self._minutes_by_rev.setdefault(revision, MinuteCounter(self.start, self.end))
                    per_rev.add(timestamp)
            if url:
                self._endpoints.add(url)

    def summary(self) -> RequestLogSummary:
        return RequestLogSummary(
            entries=self.entries,
            revisions=self.stats.result(),
            server_errors_per_minute=self._minutes.buckets(),
            server_errors_per_minute_by_revision={r: m.buckets() for r, m in sorted(self._minutes_by_rev.items())},
            failing_endpoints=self._endpoints.most_common(),
            per_minute_by_revision=self._series.result(),
        )


# --------------------------------------------------------------------------------------------------
# Error log records (as captured) and revision labels
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRecord:
    """One captured ERROR-or-worse log entry, reduced to what the analysis needs (JSON-able)."""

    timestamp: datetime | None
    severity: str
    revision: str | None
    message: str
    log_name: str
    request_url: str | None = None
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timestamp"] = self.timestamp.isoformat() if self.timestamp else None
        return out


@dataclass(frozen=True)
class RevisionLabel:
    revision: str
    role: str  # "canary" | "stable" | "other"
    tag: str | None
    traffic_percent: int  # actual share now, from traffic_statuses
    serving: bool
    latest: bool


_GENERATION = re.compile(r"-(\d+)-[a-z0-9]+$")


def short_revision(name: str | None) -> str | None:
    """``projects/…/revisions/ion-api-00042-xyz`` → ``ion-api-00042-xyz``."""
    return name.rsplit("/", 1)[-1] if name else None


def _generation(revision: str) -> int:
    match = _GENERATION.search(revision)
    return int(match.group(1)) if match else -1


def traffic_by_revision(service_config: Mapping[str, Any], key: str = "traffic_statuses") -> dict[str, int]:
    """Summed percent per revision (LATEST-type targets resolved to the latest ready revision)."""
    latest = short_revision(service_config.get("latest_ready_revision"))
    out: dict[str, int] = {}
    for item in service_config.get(key) or []:
        revision = short_revision(item.get("revision")) or latest
        if revision:
            out[revision] = out.get(revision, 0) + int(item.get("percent") or 0)
    return out


def label_revisions(
    service_config: Mapping[str, Any] | None, revisions: Iterable[str] = ()
) -> dict[str, RevisionLabel]:
    """Label every revision seen (in traffic, in ``revisions`` or as latest) as canary/stable/other.

    Rule for the canary, first match wins:

    1. a revision whose traffic tag is ``canary``;
    2. if two or more revisions serve traffic now, the newest (highest ``-NNNNN-`` generation) among
       those with a minority (< 50 %) share;
    3. otherwise the latest created/ready revision, when it is not the one with the largest share
       (e.g. after a rollback moved all traffic back).

    The stable revision is the non-canary revision with the largest actual share, or, if no revision
    has traffic, one tagged ``stable``. Traffic comes from ``traffic_statuses`` (what is actually
    served), falling back to the requested ``traffic``.
    """
    config = service_config or {}
    key = "traffic_statuses" if config.get("traffic_statuses") else "traffic"
    percent = traffic_by_revision(config, key)
    latest_ready = short_revision(config.get("latest_ready_revision"))
    latest_created = short_revision(config.get("latest_created_revision"))
    tags: dict[str, list[str]] = {}
    for item in config.get(key) or []:
        revision = short_revision(item.get("revision")) or latest_ready
        if revision and item.get("tag"):
            tags.setdefault(revision, []).append(item["tag"])
    names = list(dict.fromkeys([*percent, *tags, *revisions, *(r for r in (latest_ready, latest_created) if r)]))

    canary: str | None = None
    tagged = [r for r in names if "canary" in tags.get(r, [])]
    serving = [r for r in names if percent.get(r, 0) > 0]
    if tagged:
        canary = max(tagged, key=_generation)
    elif len(serving) >= 2:
        minority = [r for r in serving if percent[r] < 50]
        if minority:
            canary = max(minority, key=_generation)
    else:
        newest = latest_created or latest_ready
        dominant = max(serving, key=lambda r: percent[r]) if serving else None
        if newest and dominant and newest != dominant:
            canary = newest

    candidates = [r for r in names if r != canary and percent.get(r, 0) > 0]
    stable: str | None = max(candidates, key=lambda r: percent[r]) if candidates else None
    if stable is None:
        stable = next((r for r in names if r != canary and "stable" in tags.get(r, [])), None)

    labels: dict[str, RevisionLabel] = {}
    for r in names:
        role = "canary" if r == canary else "stable" if r == stable else "other"
        labels[r] = RevisionLabel(
            revision=r, role=role, tag=next(iter(tags.get(r) or ()), None), traffic_percent=percent.get(r, 0),
            serving=percent.get(r, 0) > 0, latest=r in (latest_ready, latest_created),
        )
    return labels


def metrics_by_role(stats: Mapping[str, RevisionStats], labels: Mapping[str, RevisionLabel]) -> dict[str, Any]:
    """The guide's metrics JSON: ``{"canary": {...}, "stable": {...}}`` plus each revision's label."""
    out: dict[str, Any] = {}
    for revision, s in stats.items():
        label = labels.get(revision)
        role = label.role if label else "other"
        entry = dict(s)
        entry.update(
            role=role, tag=label.tag if label else None, traffic_percent=label.traffic_percent if label else 0,
            serving=label.serving if label else False,
        )
        if role in ("canary", "stable") and role not in out:
            out[role] = entry
        else:
            out.setdefault("others", {})[revision] = entry
    return out
