"""What the evidence templates show: plain view models built from a capture or a verification, and the
helpers templates use to format numbers and to pad monospace table cells.

Templates lay out every table themselves; :class:`Mono` only pads one cell at a time and escapes it, so no
table is ever assembled from unescaped strings here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup

from bot.evidence.analysis import OnsetSummary, traffic_by_revision
from bot.evidence.gcp import EvidenceBundle, EvidenceError
from bot.evidence.verify import VerifyResult
from bot.render import slack_escape

TOP_PATTERNS_IN_MESSAGE = 5
TOP_ENDPOINTS_IN_MESSAGE = 5
PATTERN_CHARS = 110
_ROLE_ORDER = {"canary": 0, "stable": 1, "other": 2}


class Mono:
    """Cell helpers for monospace (``` … ```) blocks. Widths count East Asian wide characters (Hangul,
    emoji) as two columns, so Korean headers line up."""

    @staticmethod
    def clean(value: object, limit: int | None = None) -> str:
        # A backtick could close the code block; a newline would break the row.
        text = re.sub(r"\s+", " ", "" if value is None else str(value)).strip().replace("`", "'")
        if limit is not None and Mono.width(text) > limit:
            out, used = [], 0
            for ch in text:
                w = Mono.char_width(ch)
                if used + w > limit - 1:
                    break
                out.append(ch)
                used += w
            text = "".join(out) + "…"
        return text

    @staticmethod
    def char_width(ch: str) -> int:
        if unicodedata.combining(ch):
            return 0
        return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1

    @staticmethod
    def width(text: str) -> int:
        return sum(Mono.char_width(ch) for ch in text)

    def widths(self, rows: Iterable[Sequence[object]]) -> list[int]:
        out: list[int] = []
        for row in rows:
            for i, cell in enumerate(row):
                w = self.width(self.clean(cell))
                if i >= len(out):
                    out.append(w)
                else:
                    out[i] = max(out[i], w)
        return out

    def pad(self, value: object, width: int, right: bool = False, last: bool = False) -> Markup:
        text = self.clean(value)
        gap = " " * max(0, width - self.width(text))
        if right:
            text = gap + text
        elif not last:
            text = text + gap
        return Markup(slack_escape(text))

    def code(self, value: object, limit: int | None = None) -> Markup:
        """Text for inline `code`: escaped, one line, no backticks."""
        return Markup(slack_escape(self.clean(value, limit)))


def pct(value: float | None, digits: int | None = None) -> str:
    """A fraction as a percentage like the guide's "9.0%": one decimal, or up to two below 1% so that
    0.45% is not shown as 0.5% next to a 0.5% threshold."""
    if value is None:
        return "—"
    number = value * 100
    if digits is not None:
        return f"{number:.{digits}f}%"
    if abs(number) >= 1:
        return f"{number:.1f}%"
    text = f"{number:.2f}".rstrip("0")
    return (text + "0" if text.endswith(".") else text) + "%"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{round(value):,}ms"


def num(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


FORMAT = {"pct": pct, "ms": ms, "num": num}


# -- capture summary ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One piece of evidence that could not be captured (or only partly)."""

    kind: str  # errors | metrics | config | verify
    source: str  # logging | run | health
    error_kind: str  # permission_denied | not_found | timeout | unavailable | error
    detail: str


@dataclass(frozen=True)
class RevisionRow:
    revision: str
    role: str
    tag: str | None
    traffic: int
    serving: bool
    requests: int
    errors: int
    error_rate: float
    avg: float | None
    p95: float | None
    p99: float | None
    readings: list[str]


@dataclass
class CaptureView:
    public_id: str
    service: str
    window_start: datetime
    window_end: datetime
    deployed_at: datetime | None
    errors_ok: bool
    error_count: int
    error_limit: int
    limit_reached: bool
    patterns: list[tuple[int, str]]
    pattern_total: int
    onset: OnsetSummary | None
    onset_source: str | None
    endpoints: list[tuple[str, int]]
    endpoints_from: str  # "requests" (5xx in the request log) | "errors" (error log URLs)
    revisions: list[RevisionRow]
    metrics_ok: bool
    metrics_partial: bool
    request_entries: int
    traffic: list[dict[str, Any]]
    requested_traffic: list[dict[str, Any]]
    config_ok: bool
    failures: list[Failure]
    capture_seconds: float
    files: list[str] = field(default_factory=list)
    upload_failures: list[tuple[str, str]] = field(default_factory=list)
    chart_missing: str | None = None  # why no chart was posted (bot/evidence/chart.py)
    # Cloud Monitoring per revision (memory / CPU p99, peak instances), or why it is missing.
    utilisation: list[dict[str, Any]] = field(default_factory=list)
    utilisation_failure: Failure | None = None


def failures_by_kind(bundle: EvidenceBundle) -> dict[str, EvidenceError]:
    """Which evidence kind each failure belongs to. Both log queries report source "logging";
    collect_evidence runs the error query, then the request query, then Cloud Run, and marks a request
    stream that finished with ``requests_complete``, so the order tells them apart."""
    logging_failures = [f for f in bundle.failures if f.source == "logging"]
    out: dict[str, EvidenceError] = {}
    if len(logging_failures) >= 2:
        out["errors"], out["metrics"] = logging_failures[0], logging_failures[1]
    elif logging_failures:
        out["metrics" if not bundle.requests_complete else "errors"] = logging_failures[0]
    run_failure = next((f for f in bundle.failures if f.source == "run"), None)
    if run_failure is not None:
        out["config"] = run_failure
    return out


def _revision_rows(bundle: EvidenceBundle) -> list[RevisionRow]:
    stats = bundle.requests.revisions if bundle.requests else {}
    rows = []
    for revision, s in stats.items():
        label = bundle.labels.get(revision)
        rows.append(RevisionRow(
            revision=revision, role=label.role if label else "other", tag=label.tag if label else None,
            traffic=label.traffic_percent if label else 0, serving=bool(label and label.serving),
            requests=s["request_count"], errors=s["error_count"], error_rate=s["error_rate"],
            avg=s["avg_response_time_ms"], p95=s["p95_response_time_ms"], p99=s["p99_response_time_ms"],
            readings=list(s["readings"]),
        ))
    return sorted(rows, key=lambda r: (_ROLE_ORDER.get(r.role, 3), -r.traffic, r.revision))


def _traffic(config: Mapping[str, Any] | None, key: str, labels: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not config:
        return []
    tags: dict[str, str] = {}
    latest = config.get("latest_ready_revision")
    for item in config.get(key) or []:
        revision = item.get("revision") or latest
        if revision and item.get("tag"):
            tags.setdefault(revision, item["tag"])
    out = []
    for revision, percent in traffic_by_revision(config, key).items():
        label = labels.get(revision)
        out.append({"revision": revision, "percent": percent, "tag": tags.get(revision),
                    "role": label.role if label else "other"})
    return sorted(out, key=lambda t: -t["percent"])


def capture_view(bundle: EvidenceBundle, public_id: str, deployed_known: bool) -> CaptureView:
    by_kind = failures_by_kind(bundle)
    records = bundle.errors.records if bundle.errors else []
    requests_failed_endpoints = bool(bundle.requests and bundle.requests.failing_endpoints)
    actual = _traffic(bundle.service_config, "traffic_statuses", bundle.labels)
    requested = _traffic(bundle.service_config, "traffic", bundle.labels)
    same = {(t["revision"], t["percent"]) for t in actual} == {(t["revision"], t["percent"]) for t in requested}
    return CaptureView(
        public_id=public_id,
        service=bundle.service,
        window_start=bundle.window_start,
        window_end=bundle.window_end,
        deployed_at=bundle.deployed_at if deployed_known else None,
        errors_ok="errors" not in by_kind,
        error_count=len(records),
        error_limit=bundle.errors.limit if bundle.errors else 0,
        limit_reached=bool(bundle.errors and bundle.errors.limit_reached),
        patterns=[(p.count, p.pattern) for p in bundle.patterns[:TOP_PATTERNS_IN_MESSAGE]],
        pattern_total=len(bundle.patterns),
        onset=bundle.onset,
        onset_source=bundle.onset_source,
        endpoints=[(e.path, e.count) for e in bundle.endpoints[:TOP_ENDPOINTS_IN_MESSAGE]],
        endpoints_from="requests" if requests_failed_endpoints else "errors",
        revisions=_revision_rows(bundle),
        metrics_ok="metrics" not in by_kind,
        metrics_partial=bool(bundle.requests) and not bundle.requests_complete,
        request_entries=bundle.requests.entries if bundle.requests else 0,
        traffic=actual,
        requested_traffic=[] if same else requested,
        config_ok="config" not in by_kind,
        failures=[Failure(kind, f.source, f.kind, f.detail) for kind, f in by_kind.items()],
        capture_seconds=bundle.capture_seconds,
        utilisation=[{"revision": revision, **usage} for revision, usage in bundle.utilisation.items()],
        utilisation_failure=Failure("metrics", "monitoring", bundle.utilisation_error.kind,
                                    bundle.utilisation_error.detail) if bundle.utilisation_error else None,
    )


# -- verification --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckRow:
    name: str
    passed: bool
    measured: str | None  # formatted; None when nothing was measured
    threshold: str
    revision: str | None
    detail: str | None


def _check_value(name: str, value: float | int | None) -> str | None:
    if value is None:
        return None
    if name in ("traffic", "canary_traffic"):
        return f"{int(value)}%"
    if name == "error_rate":
        return pct(float(value))
    if name == "p95":
        return ms(float(value))
    if name == "memory":
        return pct(float(value))
    return str(int(value))


def _check_threshold(name: str, value: float | int | None) -> str:
    if name in ("traffic", "canary_traffic"):
        return f"= {int(value or 0)}%"
    if name == "error_rate":
        return f"< {pct(float(value or 0))}"
    if name == "p95":
        return f"< {ms(float(value or 0))}"
    if name == "memory":
        return f"< {pct(float(value or 0), 0)}"
    return "2xx"


@dataclass
class VerifyView:
    public_id: str
    service: str
    window_start: datetime
    window_end: datetime
    verified_at: datetime
    passed: bool
    checks: list[CheckRow]
    failed: list[str]
    stable_revision: str | None
    canary_revision: str | None
    health_url: str | None
    failures: list[Failure]
    confirmed_by: str | None = None
    confirmed_at: datetime | None = None
    recorded_recovery: datetime | None = None  # already set: nothing to propose


def verify_view(result: VerifyResult, failures: Sequence[EvidenceError], *, public_id: str, service: str,
                window_start: datetime, window_end: datetime, health_url: str | None) -> VerifyView:
    rows = [CheckRow(c.name, c.passed, _check_value(c.name, c.measured), _check_threshold(c.name, c.threshold),
                     c.revision, c.detail) for c in result.checks]
    return VerifyView(
        public_id=public_id, service=service, window_start=window_start, window_end=window_end,
        verified_at=window_end, passed=result.all_passed, checks=rows,
        failed=[c.name for c in result.checks if not c.passed],
        stable_revision=result.stable_revision, canary_revision=result.canary_revision, health_url=health_url,
        failures=[Failure("verify", f.source, f.kind, f.detail) for f in failures],
    )


def verify_view_from_payload(payload: Mapping[str, Any]) -> VerifyView:
    """Rebuilds the view from a stored verify record (to redraw the message after a button click)."""
    checks = [CheckRow(c["name"], c["passed"], _check_value(c["name"], c["measured"]),
                       _check_threshold(c["name"], c["threshold"]), c.get("revision"), c.get("detail"))
              for c in payload["result"]["checks"]]
    return VerifyView(
        public_id=payload["incident"], service=payload["service"],
        window_start=datetime.fromisoformat(payload["window_start"]),
        window_end=datetime.fromisoformat(payload["window_end"]),
        verified_at=datetime.fromisoformat(payload["window_end"]),
        passed=payload["result"]["all_passed"], checks=checks,
        failed=[c.name for c in checks if not c.passed],
        stable_revision=payload["result"]["stable_revision"], canary_revision=payload["result"]["canary_revision"],
        health_url=payload.get("health_url"),
        failures=[Failure("verify", f["source"], f["kind"], f["detail"]) for f in payload.get("failures", [])],
    )
