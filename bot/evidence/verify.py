"""Pure rollback verification (runbook Phase 1 Step 1): is the rollback really done and healthy?

Checks, each with what was measured and the threshold it was held against:

* ``traffic`` — 100 % of the actually served traffic (``traffic_statuses``) is on the stable revision;
* ``canary_traffic`` — 0 % on the canary;
* ``error_rate`` — 5xx share below ``error_rate_max`` (a fraction: 0.005 = 0.5 %);
* ``p95`` — p95 latency below ``p95_max_ms``;
* ``memory`` — p99 memory utilisation (Cloud Monitoring) below ``memory_max``, when that is given;
* ``health`` — ``GET <service-url>/health`` answered 2xx.

Error rate and p95 are measured per revision that serves traffic now, over the verification window,
and the worst one is reported, so a half-finished rollback cannot hide behind a healthy stable.
A check without data (no requests in the window, no memory points, no health answer) fails: "could not
confirm" is not "confirmed".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bot.evidence.analysis import RevisionStats, label_revisions, traffic_by_revision


@dataclass(frozen=True)
class Check:
    name: str  # "traffic" | "canary_traffic" | "error_rate" | "p95" | "memory" | "health"
    passed: bool
    measured: float | int | None
    threshold: float | int | None
    revision: str | None = None
    detail: str | None = None  # a stable code when there is no measurement, e.g. "no_requests"


@dataclass(frozen=True)
class VerifyResult:
    checks: list[Check]
    stable_revision: str | None
    canary_revision: str | None

    @property
    def all_passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "all_passed": self.all_passed,
            "stable_revision": self.stable_revision,
            "canary_revision": self.canary_revision,
            "checks": [asdict(c) for c in self.checks],
        }


def verify_rollback(
    service_config: Mapping[str, Any] | None,
    stats_for_window: Mapping[str, RevisionStats],
    health_status: int | None,
    *,
    error_rate_max: float,
    p95_max_ms: float,
    stable_revision: str | None = None,
    memory_max: float | None = None,
    memory_by_revision: Mapping[str, float] | None = None,
) -> VerifyResult:
    """Run the checks. ``stable_revision`` overrides the stable/canary rule of
    :func:`bot.evidence.analysis.label_revisions` (the canary then is whichever revision that rule
    calls canary, if it is not the given stable one). With ``memory_max`` the memory check joins them:
    ``memory_by_revision`` is p99 utilisation per revision, None when it could not be read."""
    config = service_config or {}
    labels = label_revisions(config, stats_for_window.keys())
    stable = stable_revision or next((r for r, lab in labels.items() if lab.role == "stable"), None)
    canary = next((r for r, lab in labels.items() if lab.role == "canary" and r != stable), None)
    served = traffic_by_revision(config, "traffic_statuses")
    checks: list[Check] = []

    if not config:
        checks.append(Check("traffic", False, None, 100, stable, "no_service_config"))
        checks.append(Check("canary_traffic", False, None, 0, canary, "no_service_config"))
    else:
        on_stable = served.get(stable, 0) if stable else 0
        checks.append(Check("traffic", on_stable == 100, on_stable, 100, stable,
                            None if stable else "no_stable_revision"))
        if canary:
            on_canary = served.get(canary, 0)
            checks.append(Check("canary_traffic", on_canary == 0, on_canary, 0, canary))
        else:
            # No identifiable canary: nothing may be served outside the stable revision.
            elsewhere = sum(p for r, p in served.items() if r != stable)
            checks.append(Check("canary_traffic", elsewhere == 0, elsewhere, 0, None, "no_canary_identified"))

    serving = [r for r, p in served.items() if p > 0] or ([stable] if stable else [])
    measured = [stats_for_window[r] for r in serving if r in stats_for_window and stats_for_window[r]["request_count"]]
    if measured:
        worst_rate = max(measured, key=lambda s: s["error_rate"])
        checks.append(Check("error_rate", worst_rate["error_rate"] < error_rate_max, worst_rate["error_rate"],
                            error_rate_max, worst_rate["revision"]))
        with_p95 = [s for s in measured if s["p95_response_time_ms"] is not None]
        if with_p95:
            worst_p95 = max(with_p95, key=lambda s: s["p95_response_time_ms"] or 0.0)
            value = worst_p95["p95_response_time_ms"]
            checks.append(Check("p95", value is not None and value < p95_max_ms, value, p95_max_ms,
                                worst_p95["revision"]))
        else:
            checks.append(Check("p95", False, None, p95_max_ms, None, "no_latency_data"))
    else:
        checks.append(Check("error_rate", False, None, error_rate_max, None, "no_requests"))
        checks.append(Check("p95", False, None, p95_max_ms, None, "no_requests"))

    if memory_max is not None:
        checks.append(_memory_check(served, memory_max, memory_by_revision))

    healthy = health_status is not None and 200 <= health_status < 300
    no_answer = None if health_status is not None else "no_answer"
    checks.append(Check("health", healthy, health_status, 200, None, no_answer))
    return VerifyResult(checks=checks, stable_revision=stable, canary_revision=canary)


def _memory_check(served: Mapping[str, int], memory_max: float, by_revision: Mapping[str, float] | None) -> Check:
    """The worst p99 among the revisions serving traffic. Without the traffic split every revision of the service
    counts: their worst bounds the serving ones' from above, so a pass still holds. A serving revision without
    points fails the check rather than being left out."""
    if by_revision is None:
        return Check("memory", False, None, memory_max, None, "memory_unreadable")
    serving = [r for r, p in served.items() if p > 0] or sorted(by_revision)
    missing = next((r for r in serving if r not in by_revision), None)
    if not serving or missing is not None:
        return Check("memory", False, None, memory_max, missing, "no_memory_data")
    worst = max(serving, key=lambda r: by_revision[r])
    return Check("memory", by_revision[worst] < memory_max, by_revision[worst], memory_max, worst)
