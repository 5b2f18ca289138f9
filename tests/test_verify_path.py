"""One rollback verification: `/incident verify` runs `gcp.verify_rollback_live`, and that function is tested
with the app's own client holder (real google-cloud-logging and run_v2 clients) against the GCP sandbox over
loopback HTTP: thresholds that pass and fail, the boundary, and sources that fail."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

import bot.evidence.service as service
from bot.clock import ManualClock
from bot.evidence.gcp import LiveVerification, verify_rollback_live
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Evidence, TimelineEvent
from tests.helpers import gcp_env, open_incident, shared_gcp_sandbox
from tests.helpers import verify_live as live

CHANNEL = "C0INCIDENTS"
ENTRIES = "/v2/entries:list"

# The rolled-back service: what a verification is asked to confirm.
module_gcp_fixture, gcp_fixture = shared_gcp_sandbox(CanaryScenario, rolled_back=True)


def failed_checks(verification: LiveVerification) -> list[str]:
    return [c.name for c in verification.result.checks if not c.passed]


# -- /incident verify runs it ---------------------------------------------------------------------------


@pytest.mark.parametrize(("thresholds", "failed"), [
    ({}, []),  # the defaults (0.5 %, 200 ms): the rolled-back stable revision passes
    ({"P95_MAX_MS": "1"}, ["p95"]),
    ({"ERROR_RATE_MAX": "0%"}, ["error_rate"]),
])
def test_incident_verify_runs_the_live_verification_with_the_configured_thresholds(
        gcp: GcpSandbox, slack: SlackSandbox, database_url: str, monkeypatch: pytest.MonkeyPatch,
        thresholds: dict[str, str], failed: list[str]) -> None:
    calls: list[tuple[dict[str, Any], LiveVerification]] = []

    def spy(**kwargs: Any) -> LiveVerification:
        outcome = verify_rollback_live(**kwargs)
        calls.append((kwargs, outcome))
        return outcome

    # Wraps, never replaces: the real function runs with the real clients against the sandbox.
    monkeypatch.setattr(service, "verify_rollback_live", spy)
    sc = gcp.scenario
    clock = ManualClock(sc.post_end)
    env = {**gcp_env(gcp), "SCHEDULER_ENABLED": "false", **thresholds}
    local = LocalBot(env, clock=clock, slack=slack, database_url=database_url)
    local.start()
    try:
        _, thread_ts = open_incident(local, f"롤백 확인 sev:high service:{sc.service}")
        calls.clear()
        response = local.driver.command("/incident", "verify")
        assert response.status_code == 200
        local.settle()

        [(kwargs, outcome)] = calls
        settings = local.ctx.settings
        assert (kwargs["error_rate_max"], kwargs["p95_max_ms"]) == (settings.error_rate_max, settings.p95_max_ms)
        assert (kwargs["since"], kwargs["now"]) == (sc.post_end - settings.verify_window, sc.post_end)
        assert failed_checks(outcome) == failed and outcome.failures == []
        with local.ctx.db.session() as session:
            [stored] = session.scalars(select(Evidence).where(Evidence.kind == "verify")).all()
            assert stored.payload["result"] == outcome.result.to_dict()
            assert stored.payload["revisions"] == outcome.revisions
            [event] = [e for e in session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "system"))
                       if (e.data or {}).get("action") == "verify"]
            assert (event.data["passed"], event.data["failed"]) == (not failed, failed)
        [message] = [m for m in local.slack.thread(CHANNEL, thread_ts) if "롤백 완료 확인" in m.get("text", "")]
        assert ("모든 점검 통과" in message["text"]) is (not failed)
    finally:
        local.stop()


# -- the function itself, through the real clients ---------------------------------------------------------


def test_a_threshold_is_a_strict_upper_bound(gcp: GcpSandbox) -> None:
    measured = live(gcp, error_rate_max=1.0, p95_max_ms=1e9)
    assert failed_checks(measured) == [] and measured.failures == []
    rate = measured.result.check("error_rate").measured
    p95 = measured.result.check("p95").measured
    assert isinstance(rate, float) and isinstance(p95, float) and p95 > 0

    at_the_line = live(gcp, error_rate_max=rate, p95_max_ms=p95)
    assert failed_checks(at_the_line) == ["error_rate", "p95"]
    assert at_the_line.result.check("p95").threshold == p95
    just_under = live(gcp, error_rate_max=rate + 1e-6, p95_max_ms=p95 + 0.01)
    assert failed_checks(just_under) == []


def test_before_the_rollback_every_traffic_and_canary_check_fails(gcp: GcpSandbox) -> None:
    gcp.set_rolled_back(False)
    verification = live(gcp)
    assert failed_checks(verification) == ["traffic", "canary_traffic", "error_rate", "p95"]
    assert verification.result.check("canary_traffic").measured == 10
    assert verification.health_url == f"{gcp.base_url}/health"  # the service's own uri + /health
    assert verification.service_config is not None and verification.service_config["traffic_statuses"]


def test_a_failed_google_source_is_reported_and_fails_only_what_it_measures(gcp: GcpSandbox) -> None:
    gcp.fail(ENTRIES, 403, times=100)
    verification = live(gcp)
    assert [(f.source, f.kind) for f in verification.failures] == [("logging", "permission_denied")]
    assert failed_checks(verification) == ["error_rate", "p95"]
    assert verification.result.check("p95").detail == "no_requests" and verification.revisions == {}


def test_clients_that_cannot_be_built_are_failed_sources_not_an_exception(
        gcp: GcpSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    # An https endpoint means Application Default Credentials; point them at nothing.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    env = {**gcp_env(gcp), "CLOUD_LOGGING_API_URL": "https://logging.example.invalid",
           "CLOUD_RUN_API_URL": "https://run.example.invalid"}
    verification = live(gcp, env=env)
    assert [(f.source, f.kind) for f in verification.failures] == [("run", "permission_denied"),
                                                                   ("logging", "permission_denied")]
    assert failed_checks(verification) == ["traffic", "canary_traffic", "error_rate", "p95", "health"]
    assert verification.health_url is None and gcp.requests() == []
