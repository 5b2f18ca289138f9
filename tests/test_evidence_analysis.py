"""bot.evidence.analysis and bot.evidence.verify: pure functions, no I/O."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.evidence.analysis import (
    READING_LOGIC_BUG,
    READING_OUTLIERS,
    READING_PERFORMANCE,
    EndpointCounter,
    LatencyHistogram,
    MinuteCount,
    RevisionStatsAccumulator,
    affected_endpoints,
    endpoint_path,
    error_onset,
    errors_per_minute,
    label_revisions,
    metrics_by_role,
    normalise_message,
    parse_latency_ms,
    readings_for,
    top_patterns,
)
from bot.evidence.verify import verify_rollback

T0 = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)


# -- normalisation and patterns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("TimeoutError: query on recommendations took 1234ms (user_id=8812)",
         "TimeoutError: query on recommendations took <num>ms (user_id=<num>)"),
        ('sqlalchemy.exc.OperationalError: too many connections for role "ion"',
         'sqlalchemy.exc.OperationalError: too many connections for role "<str>"'),
        ("KeyError: 'session_9f2c1a'", "KeyError: '<str>'"),
        ("lookup failed for session_9f2c1a", "lookup failed for session_<hex>"),
        ("request 550e8400-e29b-41d4-a716-446655440000 failed", "request <uuid> failed"),
        ("segfault at 0x7ffd3a2b", "segfault at <hex>"),
        ("peer 10.8.1.254 reset", "peer <ip> reset"),
        ("GET /api/v2/chat failed", "GET /api/v2/chat failed"),  # "v2" is not a number
        ("can't reach 'db-1'", "can't reach '<str>'"),  # an apostrophe is not a quote
        ("2024-05-14 09:01:37,429 KeyError: 'x'", "KeyError: '<str>'"),
        ("2024-05-14T09:01:37.123456Z ERROR boom 7", "ERROR boom <num>"),
        ("[2024-05-14 09:01:37] boom", "boom"),
        ("2024-05-14T09:01:37+09:00 - boom", "boom"),
        ("Traceback (most recent call last):\n  File \"app.py\", line 12, in f\nValueError: bad 42",
         "ValueError: bad <num>"),
        ("  many   spaces\t7 ", "many spaces <num>"),
        ("", ""),
    ],
)
def test_normalise_message(message: str, expected: str) -> None:
    assert normalise_message(message) == expected


def test_top_patterns_groups_counts_and_keeps_an_example() -> None:
    messages = (
        [f"TimeoutError: query took {ms}ms (user_id={u})" for ms, u in [(1200, 1), (3400, 22), (999, 333)]]
        + [f"KeyError: 'session_{h}'" for h in ("9f2c1a", "abc123", "000fff", "7a7a7a")]
        + ["2024-05-14 09:00:00,001 ValueError: x 1", "ValueError: x 2"]
        + ["  "]
    )
    result = top_patterns(messages, n=10)
    assert [(p.pattern, p.count) for p in result] == [
        ("KeyError: '<str>'", 4),
        ("TimeoutError: query took <num>ms (user_id=<num>)", 3),
        ("ValueError: x <num>", 2),
    ]
    assert result[0].example == "KeyError: 'session_9f2c1a'"
    assert result[2].example == "ValueError: x 1"  # first seen, leading timestamp dropped
    assert top_patterns(messages, n=1) == result[:1]


def test_top_patterns_ties_keep_first_seen_order() -> None:
    result = top_patterns(["b 1", "a 1", "b 2", "a 2"])
    assert [p.pattern for p in result] == ["b <num>", "a <num>"]


# -- errors per minute ---------------------------------------------------------------------------


def test_errors_per_minute_covers_the_window_with_zero_minutes() -> None:
    start, end = T0 + timedelta(seconds=30), T0 + timedelta(minutes=4)
    stamps = [
        T0,  # before the window (start is 09:00:30)
        T0 + timedelta(seconds=30),  # exactly at start: counted
        T0 + timedelta(minutes=2, seconds=59, microseconds=999999),
        T0 + timedelta(minutes=2, seconds=1),
        T0 + timedelta(minutes=4),  # exactly at end: excluded
    ]
    buckets = errors_per_minute(stamps, start, end)
    assert buckets == [
        MinuteCount(T0, 1),
        MinuteCount(T0 + timedelta(minutes=1), 0),
        MinuteCount(T0 + timedelta(minutes=2), 2),
        MinuteCount(T0 + timedelta(minutes=3), 0),
    ]


def test_errors_per_minute_partial_last_minute_and_other_zones() -> None:
    kst = datetime(2024, 5, 14, 18, 0, 10, tzinfo=timezone(timedelta(hours=9)))  # 09:00:10 UTC
    buckets = errors_per_minute([kst], T0, T0 + timedelta(minutes=1, seconds=1))
    assert [b.count for b in buckets] == [1, 0]
    assert buckets[0].minute_start.tzinfo == UTC


def test_errors_per_minute_rejects_naive_and_empty_windows() -> None:
    with pytest.raises(ValueError):
        errors_per_minute([datetime(2024, 5, 14, 9, 0)], T0, T0 + timedelta(minutes=1))
    with pytest.raises(ValueError):
        errors_per_minute([], T0, T0)


def _buckets(counts: list[int], first: datetime) -> list[MinuteCount]:
    return [MinuteCount(first + timedelta(minutes=i), c) for i, c in enumerate(counts)]


def test_onset_immediate_after_deploy_over_background() -> None:
    # 5 pre-deploy minutes with 1 error/min of background, then a burst 2 minutes after the deploy.
    buckets = _buckets([1, 1, 1, 1, 1, 1, 1, 9, 12, 4, 2], T0 - timedelta(minutes=5))
    onset = error_onset(buckets, T0)
    assert onset.before_deploy == 5 and onset.baseline_per_minute == 1.0
    assert onset.onset_minute == T0 + timedelta(minutes=2)
    assert onset.onset_minutes_after_deploy == 2.0
    assert onset.onset == "immediate"
    assert onset.peak_minute == T0 + timedelta(minutes=3) and onset.peak_count == 12
    assert onset.first_error_minute == T0 - timedelta(minutes=5)
    assert onset.share_first_10_min == 1.0
    assert onset.to_dict()["onset_minute"] == (T0 + timedelta(minutes=2)).isoformat()


def test_onset_delayed_and_none() -> None:
    counts = [0] * 40
    counts[31] = 5
    delayed = error_onset(_buckets(counts, T0), T0)
    assert delayed.onset == "delayed" and delayed.onset_minutes_after_deploy == 31.0
    assert delayed.share_first_10_min == 0.0
    none = error_onset(_buckets([0] * 10, T0), T0)
    assert none.onset == "none" and none.onset_minute is None and none.share_first_10_min is None
    assert none.peak_minute is None


# -- endpoints -----------------------------------------------------------------------------------


def test_affected_endpoints_drop_host_and_query() -> None:
    urls = [
        "https://ion-api-abc-uc.a.run.app/api/v2/recommendations?user=123",
        "https://ion-api-abc-uc.a.run.app/api/v2/recommendations?user=9",
        "http://other.host:8080/api/v2/chat",
        "/api/v2/session/12345?x=1",
        "/api/v2/session/550e8400-e29b-41d4-a716-446655440000",
        "https://h/api/v2/recommendations/",
        "",
    ]
    assert affected_endpoints(urls) == [
        ("/api/v2/recommendations", 3),
        ("/api/v2/session/{id}", 2),
        ("/api/v2/chat", 1),
    ]
    assert affected_endpoints(urls, n=1) == [("/api/v2/recommendations", 3)]
    assert endpoint_path("https://h") == "/"


def test_endpoint_counter_is_capped() -> None:
    counter = EndpointCounter(max_paths=2)
    for url in ["/a", "/b", "/c", "/d", "/a"]:
        counter.add(url)
    assert counter.most_common() == [("(other)", 2), ("/a", 2), ("/b", 1)]


# -- latency, percentiles, readings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [("0.452s", 452.0), ("1.2s", 1200.0), ("0s", 0.0), (" 3.000000001s", 3000.000001),
     ({"seconds": "1", "nanos": 500_000_000}, 1500.0), (0.25, 250.0),
     (None, None), ("12ms", None), ("abcs", None), ("-1s", None), (True, None), ([], None)],
)
def test_parse_latency_ms(value: object, ms: float | None) -> None:
    result = parse_latency_ms(value)
    assert result == ms if ms is None else result == pytest.approx(ms)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_within_documented_error(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(5.5, 0.8) for _ in range(5000)] + [rng.uniform(1500, 9000) for _ in range(60)]
    hist = LatencyHistogram()
    for v in values:
        hist.add(v)
    assert hist.mean() == pytest.approx(sum(values) / len(values))
    for q in (0.5, 0.95, 0.99, 1.0):
        exact = _nearest_rank(values, q)
        assert abs(hist.quantile(q) - exact) <= LatencyHistogram.RELATIVE_ERROR * exact + 1e-9, q
    assert LatencyHistogram.RELATIVE_ERROR < 0.01


def test_histogram_edges() -> None:
    hist = LatencyHistogram()
    assert hist.quantile(0.95) is None and hist.mean() is None
    for v in (0.0, 0.0, 0.0, 250.0):
        hist.add(v)
    assert hist.quantile(0.5) == 0.0
    assert hist.quantile(1.0) == 250.0  # clamped to the exact max
    single = LatencyHistogram()
    single.add(7.3)
    assert single.quantile(0.99) == 7.3
    huge = LatencyHistogram()
    huge.add(10 * LatencyHistogram.MAX_MS)
    assert huge.quantile(0.5) == 10 * LatencyHistogram.MAX_MS
    assert len(hist._counts) == LatencyHistogram.BUCKETS < 1100  # fixed size, whatever the count


def test_accumulator_counts_errors_rates_and_readings() -> None:
    acc = RevisionStatsAccumulator()
    # Canary like the guide: 500 requests, 45 5xx, slow with a long tail.
    for i in range(500):
        status = 500 if i < 45 else (404 if i < 50 else 200)
        latency = "2.1s" if i % 50 == 0 else ("0.85s" if i % 20 == 1 else "0.4s")
        acc.add("ion-api-00042-xyz", status, latency)
    for i in range(1000):
        acc.add("ion-api-00041-abc", 503 if i < 4 else 200, "0.1s" if i % 10 else "0.15s")
    acc.add("ion-api-00041-abc", None, None)  # no status, no latency: a request, nothing else
    result = acc.result()
    canary, stable = result["ion-api-00042-xyz"], result["ion-api-00041-abc"]
    assert canary["request_count"] == 500 and canary["error_count"] == 45 and canary["client_error_count"] == 5
    assert canary["error_rate"] == pytest.approx(0.09) and canary["error_rate_display"] == "9.0%"
    assert canary["readings"] == [READING_LOGIC_BUG, READING_PERFORMANCE, READING_OUTLIERS]
    assert canary["p99_response_time_ms"] == pytest.approx(2100, rel=0.01)
    assert canary["p95_response_time_ms"] == pytest.approx(850, rel=0.01)
    assert stable["request_count"] == 1001 and stable["latency_samples"] == 1000
    assert stable["error_rate_display"] == "0.4%" and stable["readings"] == []
    assert stable["avg_response_time_ms"] == pytest.approx(105.0)


def test_accumulator_bounds_revisions() -> None:
    acc = RevisionStatsAccumulator(max_revisions=2)
    for name in ("a", "b", "c", "d", "a"):
        acc.add(name, 200, "0.1s")
    assert acc.result()["(other)"]["request_count"] == 2
    assert acc.result()["a"]["request_count"] == 2


def test_readings_follow_the_guide() -> None:
    # The guide's canary: 9 %, avg 450, p95 850, p99 2100 → all three readings.
    assert readings_for(0.09, 450, 850, 2100) == [READING_LOGIC_BUG, READING_PERFORMANCE, READING_OUTLIERS]
    # The guide's normal service: none.
    assert readings_for(0.005, 150, 200, 300) == []
    assert readings_for(0.05, None, None, None) == [READING_LOGIC_BUG]  # boundary is inclusive
    assert readings_for(0.0499, 299, 399, 999) == []
    assert readings_for(0.0, 120, 180, 1500) == [READING_OUTLIERS]
    assert readings_for(0.0, 500, 900, 1500) == [READING_PERFORMANCE]  # p99 < 2×p95: not an outlier tail


# -- revision labels -----------------------------------------------------------------------------

STABLE, CANARY = "ion-api-00041-abc", "ion-api-00042-xyz"
NAME = "projects/p/locations/l/services/ion-api"


def _config(stable_pct: int, canary_pct: int, *, tags: bool = True) -> dict:
    def item(rev: str, pct: int, tag: str) -> dict:
        return {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": rev, "percent": pct,
                "tag": tag if tags else None}
    statuses = [item(STABLE, stable_pct, "stable"), item(CANARY, canary_pct, "canary")]
    return {"latest_ready_revision": CANARY, "latest_created_revision": CANARY, "uri": "http://x",
            "traffic": statuses, "traffic_statuses": statuses}


def test_labels_canary_by_tag_and_traffic() -> None:
    labels = label_revisions(_config(90, 10))
    assert labels[CANARY].role == "canary" and labels[CANARY].tag == "canary" and labels[CANARY].serving
    assert labels[STABLE].role == "stable" and labels[STABLE].traffic_percent == 90 and not labels[STABLE].latest
    untagged = label_revisions(_config(90, 10, tags=False), ["ion-api-00039-old"])
    assert untagged[CANARY].role == "canary" and untagged[STABLE].role == "stable"
    assert untagged["ion-api-00039-old"].role == "other" and not untagged["ion-api-00039-old"].serving


def test_labels_after_rollback_without_tags_use_latest_revision() -> None:
    labels = label_revisions(_config(100, 0, tags=False))
    assert labels[CANARY].role == "canary" and not labels[CANARY].serving
    assert labels[STABLE].role == "stable"


def test_labels_resolve_latest_targets_and_missing_config() -> None:
    config = {"latest_ready_revision": f"{NAME}/revisions/{CANARY}", "traffic_statuses": [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST", "revision": None, "percent": 100}]}
    labels = label_revisions(config, [STABLE])
    assert labels[CANARY].traffic_percent == 100 and labels[CANARY].role == "stable"
    assert labels[STABLE].role == "other"
    assert label_revisions(None, ["a"])["a"].role == "other"


def test_metrics_by_role_matches_the_guide_shape() -> None:
    acc = RevisionStatsAccumulator()
    acc.add(CANARY, 500, "0.9s")
    acc.add(STABLE, 200, "0.1s")
    acc.add("ion-api-00039-old", 200, "0.1s")
    out = metrics_by_role(acc.result(), label_revisions(_config(90, 10)))
    assert out["canary"]["error_rate_display"] == "100.0%" and out["canary"]["tag"] == "canary"
    assert out["stable"]["traffic_percent"] == 90
    assert set(out["others"]) == {"ion-api-00039-old"}


# -- verify --------------------------------------------------------------------------------------


def _stats(rev: str, requests: int, errors: int, p95: float | None) -> dict:
    return {"revision": rev, "request_count": requests, "error_count": errors,
            "error_rate": errors / requests if requests else 0.0, "p95_response_time_ms": p95}


def _verify(config: dict | None, stats: dict, health: int | None = 200, **kw: object):
    return verify_rollback(config, stats, health, error_rate_max=0.005, p95_max_ms=200.0, **kw)


def test_verify_passes_after_a_clean_rollback() -> None:
    result = _verify(_config(100, 0), {STABLE: _stats(STABLE, 1000, 4, 150.0)})
    assert result.all_passed, result.to_dict()
    assert [c.name for c in result.checks] == ["traffic", "canary_traffic", "error_rate", "p95", "health"]
    assert result.check("traffic").measured == 100 and result.check("canary_traffic").measured == 0
    assert result.stable_revision == STABLE and result.canary_revision == CANARY
    assert result.check("error_rate").measured == pytest.approx(0.004)
    assert result.to_dict()["all_passed"] is True


def test_verify_fails_before_rollback_on_every_measure() -> None:
    stats = {STABLE: _stats(STABLE, 900, 3, 150.0), CANARY: _stats(CANARY, 100, 9, 850.0)}
    result = _verify(_config(90, 10), stats)
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == {"traffic", "canary_traffic", "error_rate", "p95"}
    assert result.check("error_rate").revision == CANARY  # the worst serving revision is reported
    assert result.check("p95").measured == 850.0
    assert not result.all_passed


@pytest.mark.parametrize(
    ("errors", "p95", "passed_rate", "passed_p95"),
    [(4, 199.9, True, True), (5, 200.0, False, False), (6, 250.0, False, False), (0, 0.0, True, True)],
)
def test_verify_thresholds_are_strict(errors: int, p95: float, passed_rate: bool, passed_p95: bool) -> None:
    result = _verify(_config(100, 0), {STABLE: _stats(STABLE, 1000, errors, p95)})
    assert result.check("error_rate").passed is passed_rate  # 5/1000 = 0.5 % is not "< 0.5 %"
    assert result.check("p95").passed is passed_p95


@pytest.mark.parametrize(("status", "passed"), [(200, True), (204, True), (301, False), (503, False), (None, False)])
def test_verify_health(status: int | None, passed: bool) -> None:
    result = _verify(_config(100, 0), {STABLE: _stats(STABLE, 10, 0, 100.0)}, health=status)
    assert result.check("health").passed is passed
    assert result.check("health").detail == (None if status is not None else "no_answer")


def test_verify_without_data_fails_rather_than_guessing() -> None:
    result = _verify(_config(100, 0), {})
    assert result.check("error_rate").detail == "no_requests" and not result.check("error_rate").passed
    assert not result.check("p95").passed
    assert result.check("traffic").passed  # traffic is still judged from the config
    no_config = _verify(None, {STABLE: _stats(STABLE, 10, 0, 100.0)})
    assert no_config.check("traffic").detail == "no_service_config" and not no_config.all_passed


def test_verify_partial_traffic_and_stable_override() -> None:
    result = _verify(_config(95, 5), {STABLE: _stats(STABLE, 950, 0, 120.0), CANARY: _stats(CANARY, 50, 0, 120.0)})
    assert result.check("traffic").measured == 95 and not result.check("traffic").passed
    assert result.check("canary_traffic").measured == 5
    # Naming the canary as "stable" makes the 5 % revision the one that must carry everything.
    override = _verify(_config(95, 5), {}, stable_revision=CANARY)
    assert override.stable_revision == CANARY and override.check("traffic").measured == 5
