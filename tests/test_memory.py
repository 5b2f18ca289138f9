"""Memory, the guide's fourth rollback check, and the container metrics of the snapshot: the real
google-cloud-monitoring client over loopback gRPC against sandbox/monitoring.py, then the same through Slack.

Expected values are recomputed here from the sandbox's raw samples (`MonitoringSandbox.samples`), with a
percentile written out in this file, never with the code under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.api import metric_pb2
from google.api_core import exceptions as core_exceptions
from google.cloud import monitoring_v3
from sqlalchemy import select

from bot.clock import ManualClock
from bot.evidence import service as evidence_service
from bot.evidence.monitoring import (
    CPU,
    INSTANCES,
    MEMORY,
    fetch_utilisation,
    make_monitoring_client,
    peak_instances,
    revision_filter,
    utilisation_percentile,
)
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Evidence, TimelineEvent
from tests.helpers import gcp_env, open_incident, shared_gcp_sandbox

CHANNEL = "C0INCIDENTS"
OPEN_TEXT = "추천 API p95 급증 sev:high service:ion-api"

module_gcp_fixture, gcp_fixture = shared_gcp_sandbox(CanaryScenario, rolled_back=True)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    rank = 0.99 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def minute_ends(start: datetime, end: datetime) -> list[datetime]:
    """The minutes whose points an interval (start, end] takes."""
    out, minute = [], end.replace(second=0, microsecond=0)
    while minute > start:
        out.append(minute)
        minute -= timedelta(minutes=1)
    return out


def expected(gcp: GcpSandbox, metric: str, revision: str, start: datetime, end: datetime) -> float:
    fake = gcp.monitoring
    return p99([s for m in minute_ends(start, end) if fake.has_instances(revision, m)
                for s in fake.samples(metric, revision, m)])


@pytest.fixture
def sc(gcp: GcpSandbox) -> CanaryScenario:
    return gcp.scenario


@pytest.fixture
def client(gcp: GcpSandbox) -> monitoring_v3.MetricServiceClient:
    return make_monitoring_client(gcp.monitoring.address)


# -- the fake answers the real client as Cloud Monitoring does ----------------------------------------------------


def test_p99_per_revision_over_a_window(gcp: GcpSandbox, sc: CanaryScenario,
                                        client: monitoring_v3.MetricServiceClient) -> None:
    start, end = sc.window_start, sc.window_end
    found = utilisation_percentile(client, sc.project, sc.service, MEMORY, start, end)
    assert found == {r: pytest.approx(expected(gcp, MEMORY, r, start, end))
                     for r in (sc.stable_revision, sc.canary_revision)}
    assert found[sc.canary_revision] < 0.70 < found[sc.canary_revision] + 0.1  # close to the line, under it
    only_stable = utilisation_percentile(client, sc.project, sc.service, MEMORY, start, end,
                                         revisions=[sc.stable_revision])
    assert list(only_stable) == [sc.stable_revision]
    [request] = gcp.monitoring.requests()[-1:]
    assert request.filter == revision_filter(MEMORY, sc.service, [sc.stable_revision])
    assert request.aggregation.alignment_period == end - start  # one period: the whole window
    both = utilisation_percentile(client, sc.project, sc.service, CPU, start, end,
                                  revisions=[sc.stable_revision, sc.canary_revision])
    assert 'one_of("ion-api-00041-abc", "ion-api-00042-xyz")' in gcp.monitoring.requests()[-1].filter
    assert both == {r: pytest.approx(expected(gcp, CPU, r, start, end))
                    for r in (sc.stable_revision, sc.canary_revision)}


def test_an_interval_takes_the_points_whose_end_is_inside_it(gcp: GcpSandbox, sc: CanaryScenario,
                                                             client: monitoring_v3.MetricServiceClient) -> None:
    minute = sc.window_end.replace(second=0, microsecond=0)
    raw = list(client.list_time_series(
        name=f"projects/{sc.project}", filter=revision_filter(MEMORY, sc.service, [sc.stable_revision]),
        interval=monitoring_v3.TimeInterval(start_time=minute - timedelta(minutes=1), end_time=minute),
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL))
    [series] = raw
    [point] = series.points
    assert point.interval.end_time == minute
    distribution = point.value.distribution_value
    samples = gcp.monitoring.samples(MEMORY, sc.stable_revision, minute)
    assert distribution.count == len(samples) and distribution.mean == pytest.approx(sum(samples) / len(samples))
    assert series.metric_kind == metric_pb2.MetricDescriptor.MetricKind.DELTA


def test_peak_instances_add_up_active_and_idle(sc: CanaryScenario, client: monitoring_v3.MetricServiceClient) -> None:
    assert peak_instances(client, sc.project, sc.service, sc.window_start, sc.window_end) == {
        sc.stable_revision: 4, sc.canary_revision: 2}


@pytest.mark.parametrize(("change", "error"), [
    ({"aggregation": monitoring_v3.Aggregation(alignment_period=timedelta(seconds=30),
                                               per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_MEAN)},
     core_exceptions.InvalidArgument),
    ({"filter": revision_filter(INSTANCES, "ion-api"), "aggregation": monitoring_v3.Aggregation(
        alignment_period=timedelta(minutes=5),
        per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_PERCENTILE_99)}, core_exceptions.InvalidArgument),
    ({"filter": f'{revision_filter(MEMORY, "ion-api")} AND metric.type = "{CPU}"'}, core_exceptions.InvalidArgument),
    ({"name": "projects/someone-else"}, core_exceptions.PermissionDenied),
])
def test_requests_the_api_refuses_are_refused(sc: CanaryScenario, client: monitoring_v3.MetricServiceClient,
                                              change: dict[str, Any], error: type[Exception]) -> None:
    request = {"name": f"projects/{sc.project}", "filter": revision_filter(MEMORY, sc.service),
               "interval": monitoring_v3.TimeInterval(start_time=sc.window_start, end_time=sc.window_end),
               "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL, **change}
    with pytest.raises(error):
        list(client.list_time_series(request=request, retry=None))


def test_no_data_is_an_empty_answer(gcp: GcpSandbox, sc: CanaryScenario,
                                    client: monitoring_v3.MetricServiceClient) -> None:
    later = sc.post_end + timedelta(days=30)
    assert fetch_utilisation(client, sc.project, sc.service, later, later + timedelta(minutes=10)) == {}
    gcp.monitoring.no_data = True
    assert fetch_utilisation(client, sc.project, sc.service, sc.window_start, sc.window_end) == {}


# -- /incident verify: memory against MEMORY_MAX ------------------------------------------------------------------


@pytest.fixture
def extra_env() -> dict[str, str]:
    return {}


@pytest.fixture
def vbot(gcp: GcpSandbox, sc: CanaryScenario, slack: SlackSandbox, database_url: str,
         extra_env: dict[str, str]) -> Iterator[LocalBot]:
    env = {**gcp_env(gcp), "SCHEDULER_ENABLED": "false", **extra_env}
    local = LocalBot({k: v for k, v in env.items() if v != ""}, clock=ManualClock(sc.post_end), slack=slack,
                     database_url=database_url)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def verify(bot: LocalBot) -> tuple[dict[str, Any], list[str]]:
    _, thread_ts = open_incident(bot, OPEN_TEXT)
    bot.driver.command("/incident", "verify")
    bot.settle()
    [message] = [m for m in bot.slack.thread(CHANNEL, thread_ts) if "*롤백 완료 확인" in m.get("text", "")]
    [memory] = [line.split() for line in message["text"].splitlines() if line.startswith("메모리 ")]
    return message, memory


def verify_failed(bot: LocalBot) -> list[str]:
    with bot.ctx.db.session() as session:
        [event] = [e for e in session.scalars(select(TimelineEvent)) if (e.data or {}).get("action") == "verify"]
        return list(event.data["failed"])


def has_button(message: dict[str, Any]) -> bool:
    return any(b["type"] == "actions" for b in message["blocks"])


def test_verify_shows_memory_against_memory_max_and_passes_under_it(vbot: LocalBot, gcp: GcpSandbox,
                                                                   sc: CanaryScenario) -> None:
    message, memory = verify(vbot)
    want = expected(gcp, MEMORY, sc.stable_revision, sc.post_end - timedelta(minutes=10), sc.post_end)
    assert memory == ["메모리", sc.stable_revision, "통과", f"{want * 100:.1f}%", "&lt;", "70%"]
    assert "메모리는 같은 구간의 Cloud Monitoring 사용률 p99입니다." in message["text"]
    assert "점검은 포함하지 않았습니다" not in message["text"]
    assert verify_failed(vbot) == [] and has_button(message)


@pytest.mark.parametrize("extra_env", [{"MEMORY_MAX": "40%"}])
def test_memory_over_memory_max_fails_the_verification(vbot: LocalBot, sc: CanaryScenario) -> None:
    message, memory = verify(vbot)
    assert memory[:3] == ["메모리", sc.stable_revision, "실패"] and memory[-2:] == ["&lt;", "40%"]
    assert verify_failed(vbot) == ["memory"] and not has_button(message)


def test_memory_that_cannot_be_read_never_passes(vbot: LocalBot, gcp: GcpSandbox) -> None:
    gcp.monitoring.deny()
    message, memory = verify(vbot)
    assert memory == ["메모리", "—", "실패", "측정", "못", "함", "&lt;", "70%"]
    assert "Cloud Monitoring에서 메모리를 읽지 못해 확인할 수 없습니다" in message["text"]
    assert "*Cloud Monitoring* — 권한 없음" in message["text"] and "`roles/monitoring.viewer`" in message["text"]
    assert verify_failed(vbot) == ["memory"] and not has_button(message)
    with vbot.ctx.db.session() as session:
        [stored] = session.scalars(select(Evidence).where(Evidence.kind == "verify")).all()
        assert stored.ok is False and stored.error_kind == "permission_denied"
        assert stored.payload["memory_p99"] is None


def test_memory_without_data_never_passes(vbot: LocalBot, gcp: GcpSandbox) -> None:
    gcp.monitoring.no_data = True
    message, memory = verify(vbot)
    assert memory[2] == "실패" and "Cloud Monitoring에 없어 확인할 수 없습니다" in message["text"]
    assert verify_failed(vbot) == ["memory"] and not has_button(message)


@pytest.mark.parametrize("extra_env", [{"CLOUD_MONITORING_API_URL": ""}])
def test_without_google_credentials_memory_is_unreadable(vbot: LocalBot, monkeypatch: pytest.MonkeyPatch) -> None:
    # No emulator: Google's endpoint with Application Default Credentials, pointed at nothing.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    message, memory = verify(vbot)
    assert memory[2] == "실패" and verify_failed(vbot) == ["memory"] and not has_button(message)
    assert "Application Default Credentials" in message["text"]


# -- the metrics snapshot ----------------------------------------------------------------------------------------------


@pytest.fixture
def sbot(gcp: GcpSandbox, sc: CanaryScenario, slack: SlackSandbox, database_url: str) -> Iterator[LocalBot]:
    gcp.set_rolled_back(False)  # the failing canary, as evidence is captured at open
    local = LocalBot({**gcp_env(gcp), "SCHEDULER_ENABLED": "false"}, clock=ManualClock(sc.window_end), slack=slack,
                     database_url=database_url)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def metrics_file(bot: LocalBot) -> dict[str, Any]:
    [uploaded] = [f for f in bot.slack.files() if f["filename"].startswith("evidence_metrics_")]
    data: dict[str, Any] = json.loads(uploaded["content"])
    return data


def summary(bot: LocalBot, thread_ts: str) -> str:
    [message] = [m for m in bot.slack.thread(CHANNEL, thread_ts) if "긴급 증거" in m.get("text", "")]
    return str(message["text"])


def test_the_snapshot_has_memory_cpu_and_instances_per_revision(sbot: LocalBot, gcp: GcpSandbox,
                                                               sc: CanaryScenario) -> None:
    _, thread_ts = open_incident(sbot, OPEN_TEXT)
    start, end = sc.window_end - timedelta(hours=1), sc.window_end  # no deploy recorded: the hour before open
    data = metrics_file(sbot)
    for role, revision, instances in (("canary", sc.canary_revision, 2), ("stable", sc.stable_revision, 4)):
        assert data[role]["revision"] == revision
        assert data[role]["memory_utilization_p99"] == pytest.approx(expected(gcp, MEMORY, revision, start, end))
        assert data[role]["cpu_utilization_p99"] == pytest.approx(expected(gcp, CPU, revision, start, end))
        assert data[role]["instance_count_max"] == instances
        assert data["utilisation"][revision]["instances_max"] == instances
    assert data["utilisation_error"] is None
    canary, stable = data["canary"], data["stable"]
    line = (f"*메모리 / CPU (p99) / 최대 인스턴스 수* (Cloud Monitoring): `{sc.stable_revision}` "
            f"{stable['memory_utilization_p99'] * 100:.0f}% / {stable['cpu_utilization_p99'] * 100:.0f}% / 4 · "
            f"`{sc.canary_revision}` {canary['memory_utilization_p99'] * 100:.0f}% / "
            f"{canary['cpu_utilization_p99'] * 100:.0f}% / 2")
    assert line in summary(sbot, thread_ts)


def test_a_snapshot_without_cloud_monitoring_says_so(sbot: LocalBot, gcp: GcpSandbox) -> None:
    gcp.monitoring.deny()
    _, thread_ts = open_incident(sbot, OPEN_TEXT)
    text = summary(sbot, thread_ts)
    assert "⚠️ Cloud Monitoring에서 메모리, CPU, 인스턴스 수를 읽지 못했습니다: 권한 없음" in text
    assert "`roles/monitoring.viewer`" in text
    data = metrics_file(sbot)
    assert data["utilisation"] == {} and data["utilisation_error"]["kind"] == "permission_denied"
    assert "memory_utilization_p99" not in data["canary"]


def test_a_stopped_runtime_closes_its_google_transports(vbot: LocalBot, sc: CanaryScenario) -> None:
    """At shutdown, once no capture runs, the gRPC channel to Cloud Monitoring is closed (left open, it hears the
    server go away and logs it); a later use builds a new client."""
    gcp_clients = evidence_service.clients(vbot.ctx)
    used = gcp_clients.monitoring()
    assert peak_instances(used, sc.project, sc.service, sc.window_start, sc.window_end)
    vbot.stop()
    with pytest.raises(ValueError, match="closed channel"):
        peak_instances(used, sc.project, sc.service, sc.window_start, sc.window_end)
    assert gcp_clients.monitoring() is not used
