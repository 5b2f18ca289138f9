"""bot.evidence.gcp with the REAL google-cloud-logging and run_v2 clients against sandbox.gcp over
loopback HTTP. Expected numbers are computed here from ``scenario.entries()`` with plain Python."""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from bot.evidence.analysis import LatencyHistogram
from bot.evidence.gcp import (
    EvidenceError,
    check_health,
    collect_evidence,
    fetch_error_logs,
    fetch_request_summary,
    fetch_service_config,
    make_logging_client,
    make_run_client,
    rfc3339,
    stream_request_logs,
)
from sandbox.gcp import CanaryScenario, GcpSandbox
from tests.helpers import shared_gcp_sandbox, verify_live

ENTRIES_LIST = "/v2/entries:list"
SERVICES = "/v2/projects/"


module_sandbox_fixture, sandbox_fixture = shared_gcp_sandbox(lambda: CanaryScenario(seed=7), name="sandbox")


@pytest.fixture
def sc(sandbox: GcpSandbox) -> CanaryScenario:
    return sandbox.scenario


@pytest.fixture
def log_client(sandbox: GcpSandbox) -> Any:
    return make_logging_client(sandbox.scenario.project, sandbox.base_url, timeout=5.0)


@pytest.fixture
def run_client(sandbox: GcpSandbox) -> Any:
    return make_run_client(sandbox.base_url)


# -- independent expectations from the raw data ---------------------------------------------------


def _ts(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["timestamp"])


def _in_window(entry: dict[str, Any], start: datetime, end: datetime) -> bool:
    return start <= _ts(entry) < end


def _request_entries(sc: CanaryScenario, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [e for e in sc.entries() if e["logName"].endswith("%2Frequests") and _in_window(e, start, end)]


def _error_entries(sc: CanaryScenario, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [e for e in sc.entries() if e["severity"] in ("ERROR", "CRITICAL") and _in_window(e, start, end)]


def _expected_stats(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_rev: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_rev.setdefault(e["resource"]["labels"]["revision_name"], []).append(e)
    out = {}
    for rev, items in by_rev.items():
        lat = sorted(float(e["httpRequest"]["latency"][:-1]) * 1000 for e in items)
        errors = sum(1 for e in items if e["httpRequest"]["status"] >= 500)

        def rank(q: float, lat: list[float] = lat) -> float:
            return lat[max(1, math.ceil(q * len(lat))) - 1]

        out[rev] = {"request_count": len(items), "error_count": errors, "avg": sum(lat) / len(lat),
                    "p95": rank(0.95), "p99": rank(0.99)}
    return out


# -- filters and paging ---------------------------------------------------------------------------


def test_error_filter_has_an_explicit_window(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any) -> None:
    fetch_error_logs(log_client, sc.project, sc.service, sc.window_start, sc.window_end, limit=10)
    [request] = sandbox.requests(ENTRIES_LIST)
    sent = request.body["filter"]
    assert f'timestamp>="{rfc3339(sc.window_start)}"' in sent
    assert f'timestamp<"{rfc3339(sc.window_end)}"' in sent
    assert sent.count("timestamp") == 2  # the client did not add its silent 24 h default
    assert 'resource.type="cloud_run_revision"' in sent and "severity>=ERROR" in sent
    assert f'resource.labels.service_name="{sc.service}"' in sent
    assert request.body["resourceNames"] == [f"projects/{sc.project}"]
    assert request.body["orderBy"] == "timestamp asc"


@pytest.mark.parametrize(("page_size", "pages"), [(300, 2), (100, 5), (500, 1), (1000, 1), (None, 1), (7, 72)])
def test_limit_stops_without_a_spare_page(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any,
                                          page_size: int | None, pages: int) -> None:
    available = len(_error_entries(sc, sc.window_start, sc.window_end))
    assert available > 500  # so a spare page would exist to be fetched
    capture = fetch_error_logs(log_client, sc.project, sc.service, sc.window_start, sc.window_end,
                               limit=500, page_size=page_size)
    assert len(capture.records) == 500 and capture.limit_reached
    requests = sandbox.requests(ENTRIES_LIST)
    assert len(requests) == pages == math.ceil(500 / min(page_size or 500, 500))
    assert all(r.body["pageSize"] <= 500 for r in requests)  # never asks for more than the limit
    expected = _error_entries(sc, sc.window_start, sc.window_end)[:500]
    assert [r.timestamp for r in capture.records] == [_ts(e) for e in expected]


def test_library_max_results_would_fetch_a_spare_page(sandbox: GcpSandbox, sc: CanaryScenario,
                                                      log_client: Any) -> None:
    """Why fetch_error_logs counts itself: the library pager asks for page 6 before stopping at 500."""
    entries = log_client.list_entries(
        resource_names=[f"projects/{sc.project}"], page_size=100, max_results=500,
        filter_=f'severity>=ERROR AND timestamp>="{rfc3339(sc.window_start)}" AND timestamp<"{rfc3339(sc.window_end)}"',
    )
    assert len(list(entries)) == 500
    assert len(sandbox.requests(ENTRIES_LIST)) == 6


def test_limit_larger_than_available(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any) -> None:
    start, end = sc.window_start, sc.deployed_at  # pre-deploy: only a few stable errors
    expected = _error_entries(sc, start, end)
    capture = fetch_error_logs(log_client, sc.project, sc.service, start, end, limit=500, page_size=10)
    assert len(capture.records) == len(expected) < 500 and not capture.limit_reached
    assert len(sandbox.requests(ENTRIES_LIST)) == math.ceil(len(expected) / 10)


def test_stream_is_lazy_one_page_at_a_time(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any) -> None:
    stream = stream_request_logs(log_client, sc.project, sc.service, sc.window_start, sc.window_end, page_size=100)
    for _ in range(150):
        next(stream)
    assert len(sandbox.requests(ENTRIES_LIST)) == 2
    stream.close()
    sent = sandbox.requests(ENTRIES_LIST)[0].body["filter"]
    assert f'logName="projects/{sc.project}/logs/run.googleapis.com%2Frequests"' in sent


# -- metrics snapshot -----------------------------------------------------------------------------


def test_revision_stats_match_independent_numbers(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any) -> None:
    summary = fetch_request_summary(log_client, sc.project, sc.service, sc.window_start, sc.window_end, page_size=1000)
    raw = _request_entries(sc, sc.window_start, sc.window_end)
    expected = _expected_stats(raw)
    assert summary.entries == len(raw) == sc.request_count
    assert len(sandbox.requests(ENTRIES_LIST)) == math.ceil(len(raw) / 1000)
    assert set(summary.revisions) == set(expected) == {sc.stable_revision, sc.canary_revision}
    tol = LatencyHistogram.RELATIVE_ERROR
    for rev, exp in expected.items():
        got = summary.revisions[rev]
        assert got["request_count"] == exp["request_count"]
        assert got["error_count"] == exp["error_count"]
        assert got["error_rate"] == pytest.approx(exp["error_count"] / exp["request_count"])
        assert got["avg_response_time_ms"] == pytest.approx(exp["avg"], abs=0.05)
        assert got["p95_response_time_ms"] == pytest.approx(exp["p95"], rel=tol, abs=0.05)
        assert got["p99_response_time_ms"] == pytest.approx(exp["p99"], rel=tol, abs=0.05)
    canary = summary.revisions[sc.canary_revision]
    # Shaped like the runbook's canary: ~9 % errors, avg ~450, p95 ~850, p99 ~2100.
    assert canary["error_rate_display"] == "9.1%" and canary["readings"] == [
        "logic_bug", "performance_or_database", "outliers_or_timeouts"]
    assert 400 < canary["avg_response_time_ms"] < 500 and 800 < canary["p95_response_time_ms"] < 900
    assert 1900 < canary["p99_response_time_ms"] < 2300
    stable = summary.revisions[sc.stable_revision]
    assert stable["error_rate"] < 0.005 and stable["p95_response_time_ms"] < 200 and stable["readings"] == []
    # 5xx per minute and failing endpoints, independently.
    per_path = Counter(re.sub(r"^https://[^/]+|\?.*$", "", e["httpRequest"]["requestUrl"])
                       for e in raw if e["httpRequest"]["status"] >= 500)
    assert dict(summary.failing_endpoints) == dict(per_path)
    assert sum(b.count for b in summary.server_errors_per_minute) == sum(per_path.values())
    assert len(summary.server_errors_per_minute) == (sc.window_end - sc.window_start) // timedelta(minutes=1)


# -- deployment config ----------------------------------------------------------------------------


def test_service_config(sandbox: GcpSandbox, sc: CanaryScenario, run_client: Any) -> None:
    config = fetch_service_config(run_client, sc.project, sc.region, sc.service, timeout=5)
    assert config["uri"] == sandbox.base_url
    assert config["latest_ready_revision"] == config["latest_created_revision"] == sc.canary_revision
    assert config["traffic"] == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": sc.stable_revision, "percent": 90,
         "tag": "stable"},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": sc.canary_revision, "percent": 10,
         "tag": "canary"},
    ]
    assert [(t["revision"], t["percent"], t["tag"]) for t in config["traffic_statuses"]] == [
        (sc.stable_revision, 90, "stable"), (sc.canary_revision, 10, "canary")]
    assert config["traffic_statuses"][1]["uri"].startswith("https://canary---")
    assert config["resources"] == {"cpu": "2", "memory": "1Gi"}
    assert config["scaling"] == {"min_instance_count": 1, "max_instance_count": 20}
    assert config["image"].startswith("us-central1-docker.pkg.dev/")
    assert config["raw"]["traffic"][0]["type_"] == "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
    sandbox.set_rolled_back(True)
    after = fetch_service_config(run_client, sc.project, sc.region, sc.service, timeout=5)
    assert [(t["revision"], t["percent"]) for t in after["traffic_statuses"]] == [
        (sc.stable_revision, 100), (sc.canary_revision, 0)]


# -- failures -------------------------------------------------------------------------------------


def _collect(sandbox: GcpSandbox, log_client: Any, run_client: Any, **kw: Any) -> Any:
    sc = sandbox.scenario
    return collect_evidence(logging_client=log_client, run_client=run_client, project=sc.project, region=sc.region,
                            service=sc.service, now=sc.window_end, since=sc.window_start, deployed_at=sc.deployed_at,
                            **kw)


def test_collect_evidence_complete(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any,
                                   run_client: Any) -> None:
    bundle = _collect(sandbox, log_client, run_client)
    assert bundle.complete and bundle.requests_complete and bundle.failures == []
    assert len(bundle.errors.records) == 500
    # Top pattern counts, independently: the first 500 ERROR entries, grouped by their error class.
    first = _error_entries(sc, sc.window_start, sc.window_end)[:500]
    texts = [e.get("textPayload") or e.get("jsonPayload", {}).get("message") for e in first]
    timeouts = sum(1 for t in texts if t and "TimeoutError: query on recommendations took" in t)
    top = {p.pattern: p.count for p in bundle.patterns}
    assert top["TimeoutError: query on recommendations took <num>ms (user_id=<num>)"] == timeouts
    assert top["KeyError: '<str>'"] == sum(1 for t in texts if t and "KeyError: 'session_" in t)
    assert bundle.patterns[0].count >= bundle.patterns[-1].count and len(bundle.patterns) <= 10
    assert {p for p, _ in bundle.endpoints} == {"/api/v2/chat", "/api/v2/recommendations", "/api/v2/session"}
    assert bundle.labels[sc.canary_revision].role == "canary" and bundle.metrics["canary"]["tag"] == "canary"
    assert bundle.onset_source == "canary_5xx" and bundle.onset.onset == "immediate"
    assert sum(c for _, c in bundle.error_timeline) == 500
    assert bundle.to_dict()["metrics"]["stable"]["revision"] == sc.stable_revision


def test_permission_denied_on_logging_keeps_the_config(sandbox: GcpSandbox, log_client: Any,
                                                       run_client: Any) -> None:
    sandbox.fail(ENTRIES_LIST, 403, times=2, message="Permission 'logging.logEntries.list' denied")
    bundle = _collect(sandbox, log_client, run_client)
    assert [(f.kind, f.source) for f in bundle.failures] == [("permission_denied", "logging")] * 2
    assert "logging.logEntries.list" in bundle.failures[0].detail
    assert bundle.service_config is not None and bundle.labels  # what succeeded is kept
    assert bundle.errors.records == [] and bundle.requests is None


def test_not_found_service_keeps_the_logs(sandbox: GcpSandbox, log_client: Any, run_client: Any) -> None:
    sc = sandbox.scenario
    with pytest.raises(EvidenceError) as info:
        fetch_service_config(run_client, sc.project, sc.region, "no-such-service", timeout=5)
    assert (info.value.kind, info.value.source) == ("not_found", "run")
    sandbox.fail(SERVICES, 404)
    bundle = _collect(sandbox, log_client, run_client)
    assert [(f.kind, f.source) for f in bundle.failures] == [("not_found", "run")]
    assert bundle.service_config is None and len(bundle.errors.records) == 500 and bundle.requests_complete
    # Without a config the canary is unknown, so the onset falls back to all 5xx.
    assert bundle.onset_source == "all_5xx"


def test_stream_broken_midway_keeps_partial_stats(sandbox: GcpSandbox, log_client: Any, run_client: Any) -> None:
    # Request 1 is the error query; the request stream's 3rd page (request 4) fails.
    sandbox.fail(ENTRIES_LIST, 500, after=3)
    bundle = _collect(sandbox, log_client, run_client, request_page_size=1000)
    assert [(f.kind, f.source) for f in bundle.failures] == [("error", "logging")]
    assert not bundle.requests_complete and bundle.requests.entries == 2000


def test_error_query_broken_midway_keeps_what_arrived(sandbox: GcpSandbox, log_client: Any,
                                                      run_client: Any) -> None:
    sandbox.fail(ENTRIES_LIST, 503, after=2)  # error pages 1-2 arrive, page 3 fails
    bundle = _collect(sandbox, log_client, run_client, error_page_size=100)
    assert [(f.kind, f.source) for f in bundle.failures] == [("unavailable", "logging")]
    assert len(bundle.errors.records) == 200 and bundle.requests_complete and bundle.service_config
    assert sum(p.count for p in bundle.patterns) == 200


def test_unavailable_run_is_retried_then_reported(sandbox: GcpSandbox, sc: CanaryScenario, run_client: Any) -> None:
    sandbox.fail(SERVICES, 503, times=1)
    assert fetch_service_config(run_client, sc.project, sc.region, sc.service, timeout=3)["uri"]
    sandbox.fail(SERVICES, 503, times=100)
    with pytest.raises(EvidenceError) as info:
        fetch_service_config(run_client, sc.project, sc.region, sc.service, timeout=0.5)
    assert (info.value.kind, info.value.source) == ("unavailable", "run")


def test_timeouts_become_evidence_errors(sandbox: GcpSandbox, sc: CanaryScenario, run_client: Any) -> None:
    sandbox.set_latency(1.0)
    slow_logging = make_logging_client(sc.project, sandbox.base_url, timeout=0.2)
    with pytest.raises(EvidenceError) as logging_err:
        fetch_error_logs(slow_logging, sc.project, sc.service, sc.window_start, sc.window_end)
    assert (logging_err.value.kind, logging_err.value.source) == ("timeout", "logging")
    with pytest.raises(EvidenceError) as run_err:
        fetch_service_config(run_client, sc.project, sc.region, sc.service, timeout=0.2)
    assert (run_err.value.kind, run_err.value.source) == ("timeout", "run")
    status, health_err = check_health(sandbox.base_url + "/health", timeout=0.2)
    assert status is None and health_err is not None and health_err.kind == "timeout"
    assert health_err.source == "health"


def test_health_check(sandbox: GcpSandbox) -> None:
    assert check_health(sandbox.base_url + "/health", timeout=2) == (200, None)
    sandbox.health_status = 503
    assert check_health(sandbox.base_url + "/health", timeout=2) == (503, None)
    status, err = check_health("http://127.0.0.1:9/health", timeout=2)  # nothing listens on port 9
    assert status is None and err is not None and (err.kind, err.source) == ("unavailable", "health")


def test_unknown_filter_clause_is_rejected(sandbox: GcpSandbox, sc: CanaryScenario, log_client: Any) -> None:
    entries = log_client.list_entries(resource_names=[f"projects/{sc.project}"],
                                      filter_='jsonPayload.foo="bar" AND timestamp>="2024-01-01T00:00:00Z"')
    with pytest.raises(Exception, match="unsupported filter clause"):
        list(entries)


# -- rollback verification ------------------------------------------------------------------------


def _verify(sandbox: GcpSandbox) -> tuple[Any, list[EvidenceError]]:
    """The production verification, with the app's own client holder built from settings for the sandbox."""
    live = verify_live(sandbox)
    return live.result, live.failures


def test_verify_fails_before_rollback_and_passes_after(sandbox: GcpSandbox) -> None:
    before, failures = _verify(sandbox)
    assert failures == [] and not before.all_passed
    assert {c.name for c in before.checks if not c.passed} == {"traffic", "canary_traffic", "error_rate", "p95"}
    assert before.check("canary_traffic").measured == 10

    sandbox.set_rolled_back(True)
    after, failures = _verify(sandbox)
    assert failures == [] and after.all_passed, after.to_dict()
    sc = sandbox.scenario
    healthy = _expected_stats(_request_entries(sc, sc.window_end, sc.post_end))[sc.stable_revision]
    assert after.check("error_rate").measured == pytest.approx(healthy["error_count"] / healthy["request_count"])
    assert after.check("traffic").revision == sc.stable_revision and after.check("health").measured == 200

    sandbox.health_status = 500
    unhealthy, _ = _verify(sandbox)
    assert [c.name for c in unhealthy.checks if not c.passed] == ["health"]
