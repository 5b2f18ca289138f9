"""`/incident rollback` end to end: signed Slack requests into the real app, the real google-cloud-run client
against the GCP sandbox (which applies updates: the split, a new etag, an operation that takes a few polls), and
assertions on what Slack shows, what Cloud Run ended up with, and what the database holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot import rollback
from bot.clock import ManualClock
from bot.evidence.monitoring import MEMORY
from bot.render import Renderer
from bot.rollback import Confirmers, Share
from bot.timefmt import TimeFormatter
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Evidence, Incident, Rollback, TimelineEvent
from tests.helpers import gcp_env, open_incident, shared_gcp_sandbox

CHANNEL = "C0INCIDENTS"
CONFIRM, PROPOSE = "rollback_confirm", "rollback_propose"
LEAD, DEVOPS, ALLOWED, STRANGER = "U0LEAD", "U0DEVOPS", "U0ALLOWED", "U0STRANGER"
OPEN_TEXT = "추천 API p95 급증 sev:high service:ion-api"
CONSOLE = "https://console.cloud.google.com/run/detail/us-central1/ion-api/revisions?project=ion-project"

module_gcp_fixture, gcp_fixture = shared_gcp_sandbox(CanaryScenario)


@pytest.fixture
def sc(gcp: GcpSandbox) -> CanaryScenario:
    return gcp.scenario


@pytest.fixture
def clock(sc: CanaryScenario) -> ManualClock:
    return ManualClock(sc.window_end)


@pytest.fixture
def extra_env() -> dict[str, str]:
    return {}


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # The operation takes a few polls in the sandbox; two seconds between them would only slow the tests.
    monkeypatch.setattr(rollback, "POLL_SECONDS", 0.02)


def make_bot(gcp: GcpSandbox, clock: ManualClock, slack: SlackSandbox, database_url: str,
             extra_env: dict[str, str]) -> LocalBot:
    env = {**gcp_env(gcp), "SCHEDULER_ENABLED": "false", "ROLLBACK_ENABLED": "true",
           "ROLLBACK_ALLOWED_USERS": ALLOWED, **extra_env}
    return LocalBot({k: v for k, v in env.items() if v != ""}, clock=clock, slack=slack, database_url=database_url)


@pytest.fixture
def rbot(gcp: GcpSandbox, clock: ManualClock, slack: SlackSandbox, database_url: str,
         extra_env: dict[str, str]) -> Iterator[LocalBot]:
    local = make_bot(gcp, clock, slack, database_url, extra_env)
    local.start()
    try:
        yield local
    finally:
        local.stop()


# -- helpers ----------------------------------------------------------------------------------------------------


def opened(bot: LocalBot, clock: ManualClock) -> str:
    """An incident with a lead and a devops engineer; the clock a minute on, as when the team decides."""
    _, thread_ts = open_incident(bot, OPEN_TEXT)
    for text in (f"role lead <@{LEAD}|lead>", f"role devops <@{DEVOPS}|devops>"):
        assert bot.driver.command("/incident", text).status_code == 200
    bot.settle()
    clock.advance(timedelta(minutes=1))
    return thread_ts


def propose(bot: LocalBot, thread_ts: str, text: str = "rollback") -> dict[str, Any]:
    answer = bot.driver.command("/incident", text).json()["text"]
    assert "ion-api" in answer, answer
    bot.settle()
    return latest(bot, thread_ts)


def latest(bot: LocalBot, thread_ts: str, marker: str = "롤백") -> dict[str, Any]:
    return [m for m in bot.slack.thread(CHANNEL, thread_ts) if marker in m.get("text", "")][-1]


def button(message: dict[str, Any], action_id: str = CONFIRM) -> dict[str, Any]:
    found = [e for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]
             if e["action_id"] == action_id]
    assert len(found) == 1, message.get("blocks")
    return found[0]


def click(bot: LocalBot, message: dict[str, Any], user: str, action_id: str = CONFIRM) -> None:
    response = bot.driver.block_action(action_id, button(message, action_id)["value"], user=user,
                                       message_ts=message["ts"])
    assert response.status_code == 200


def rows(bot: LocalBot) -> list[Rollback]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(Rollback).order_by(Rollback.id)).all())


def incident(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident)).one()


def rollback_steps(bot: LocalBot) -> list[str]:
    with bot.ctx.db.session() as session:
        events = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "system")
                                 .order_by(TimelineEvent.id)).all()
        return [e.data["step"] for e in events if (e.data or {}).get("action") == "rollback"]


def served(gcp: GcpSandbox) -> dict[str, int]:
    return {t["revision"]: t.get("percent", 0) for t in gcp.service()["trafficStatuses"]}


def texts_of(bot: LocalBot, ts: str) -> list[str]:
    """Every version of one message, in order: what was posted, then each update."""
    posted = [c.args.get("text", "") for c in bot.slack.calls("chat.postMessage") if (c.response or {}).get("ts") == ts]
    updated = [c.args.get("text", "") for c in bot.slack.calls("chat.update") if c.args.get("ts") == ts]
    return posted + updated


def refusals(bot: LocalBot) -> list[str]:
    return [r.get("text", "") for r in bot.slack.responses()]


# -- off by default ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra_env", [{"ROLLBACK_ENABLED": ""}])
def test_while_disabled_the_command_explains_and_nothing_is_offered_or_changed(
        rbot: LocalBot, gcp: GcpSandbox, clock: ManualClock) -> None:
    assert rbot.ctx.settings.rollback_enabled is False
    thread_ts = opened(rbot, clock)
    summary = latest(rbot, thread_ts, "증거")
    assert not any(b["type"] == "actions" for b in summary.get("blocks", []))  # the failing canary gets no button
    answer = rbot.driver.command("/incident", "rollback").json()["text"]
    assert "`ROLLBACK_ENABLED=true`" in answer and "`roles/run.developer`" in answer
    rbot.driver.block_action(CONFIRM, "1", user=LEAD, message_ts=thread_ts)
    rbot.settle()
    assert rows(rbot) == [] and gcp.updates() == []
    assert "`ROLLBACK_ENABLED=true`" in refusals(rbot)[-1]


# -- the proposal ----------------------------------------------------------------------------------------------


def test_the_proposal_shows_the_split_the_target_and_a_confirm_dialog(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    text = proposal["text"]
    assert "⏪ *롤백 제안*" in text and "서비스 `ion-api`" in text
    assert f"`{sc.stable_revision}` 90% (stable) · `{sc.canary_revision}` 10% (canary)" in text
    assert f"트래픽 전부(100%)를 `{sc.stable_revision}` 로" in text
    assert f"<@{LEAD}> (lead), <@{DEVOPS}> (devops), <@{ALLOWED}>" in text
    confirm = button(proposal)
    dialog = confirm["confirm"]
    assert confirm["style"] == "danger" and dialog["style"] == "danger"
    assert dialog["text"]["type"] == "plain_text"
    assert dialog["text"]["text"] == (f"서비스 ion-api: 트래픽 전부(100%)를 {sc.stable_revision}(으)로 보냅니다. "
                                      f"현재: {sc.stable_revision} 90%, {sc.canary_revision} 10%. "
                                      "Cloud Run에 바로 적용됩니다.")
    [row] = rows(rbot)
    assert (row.status, row.target_revision, row.etag) == ("proposed", sc.stable_revision, gcp.service()["etag"])
    assert confirm["value"] == str(row.id) and row.message_ts == proposal["ts"]
    assert gcp.updates() == []  # proposing changes nothing


def test_without_a_clear_target_it_says_why_and_takes_a_revision(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    gcp.change_service([{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": sc.canary_revision,
                         "percent": 100, "tag": "canary"}])
    none = propose(rbot, thread_ts)
    assert "*롤백 제안 없음*" in none["text"] and "최신 리비전" in none["text"]
    assert "`/incident rollback 리비전`" in none["text"]
    assert not any(b["type"] == "actions" for b in none.get("blocks", [])) and rows(rbot) == []

    unknown = propose(rbot, thread_ts, "rollback ion-api-00099-zzz")
    assert "`ion-api-00099-zzz` 는 `ion-api` 의 리비전이 아닙니다" in unknown["text"] and rows(rbot) == []

    named = propose(rbot, thread_ts, f"rollback {sc.stable_revision}")
    [row] = rows(rbot)
    assert row.target_revision == sc.stable_revision and button(named)["value"] == str(row.id)
    assert f"`{sc.canary_revision}` 100% (canary)" in named["text"]


# -- who may confirm -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("confirmer", [LEAD, DEVOPS, ALLOWED])
def test_only_lead_devops_and_allowed_users_may_confirm(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock, confirmer: str) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    click(rbot, proposal, STRANGER)
    rbot.settle()
    refusal = refusals(rbot)[-1]
    assert f"<@{LEAD}> (lead), <@{DEVOPS}> (devops), <@{ALLOWED}>" in refusal
    assert "아무것도 바뀌지 않았습니다" in refusal
    assert gcp.updates() == [] and rows(rbot)[0].status == "proposed" and rollback_steps(rbot) == []

    confirmed_at = clock.now()
    click(rbot, proposal, confirmer)
    rbot.settle()
    [row] = rows(rbot)
    assert (row.status, row.confirmed_by, row.confirmed_at) == ("done", confirmer, confirmed_at)
    [patch] = gcp.updates()
    assert patch.body["etag"] == row.etag and "updateMask=traffic" in patch.query
    assert {t["revision"]: t.get("percent", 0) for t in patch.body["traffic"]} == {
        sc.stable_revision: 100, sc.canary_revision: 0}
    assert served(gcp) == {sc.stable_revision: 100, sc.canary_revision: 0}
    assert rollback_steps(rbot) == ["confirmed", "started", "finished"]
    assert incident(rbot).rollback_at == confirmed_at.replace(second=0, microsecond=0)
    versions = texts_of(rbot, proposal["ts"])
    headers = [next(h for h in ("*롤백 제안*", "*롤백 요청됨*", "*롤백 진행 중*", "*롤백 완료*") if h in v)
               for v in versions]
    assert headers == ["*롤백 제안*", "*롤백 요청됨*", "*롤백 진행 중*", "*롤백 완료*"]
    final = rbot.slack.message(CHANNEL, proposal["ts"])
    assert f"<@{confirmer}> 님이" in final["text"] and not any(b["type"] == "actions" for b in final["blocks"])
    assert row.verify_due_at == row.finished_at + timedelta(minutes=3)


# -- exactly once ----------------------------------------------------------------------------------------------------


def test_a_double_click_and_two_people_at_once_update_cloud_run_once(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    start = threading.Barrier(4)

    def press(user: str) -> None:
        start.wait()
        click(rbot, proposal, user)

    presses = [threading.Thread(target=press, args=(user,)) for user in (LEAD, LEAD, DEVOPS, ALLOWED)]
    for t in presses:
        t.start()
    for t in presses:
        t.join()
    rbot.settle()
    assert len(gcp.updates()) == 1
    [row] = rows(rbot)
    assert row.status == "done" and row.confirmed_by in (LEAD, DEVOPS, ALLOWED)
    assert rollback_steps(rbot) == ["confirmed", "started", "finished"]
    told = refusals(rbot)
    assert len(told) == 3 and all("이미" in t and "승인" in t for t in told), told
    click(rbot, proposal, LEAD)  # a late click on the finished rollback
    rbot.settle()
    assert len(gcp.updates()) == 1 and "이미 완료" in refusals(rbot)[-1]


# -- refused and failed updates -------------------------------------------------------------------------------------


def test_a_service_changed_since_the_proposal_is_refused_and_proposed_afresh(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    moved = [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": sc.stable_revision, "percent": 80,
              "tag": "stable"},
             {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": sc.canary_revision, "percent": 20,
              "tag": "canary"}]
    gcp.change_service(moved)  # someone shifts traffic in the console meanwhile
    click(rbot, proposal, LEAD)
    rbot.settle()
    stale, fresh = rows(rbot)
    assert stale.status == "stale" and stale.error_kind == "stale"
    assert [(s["revision"], s["percent"]) for s in stale.traffic_after or []] == [
        (sc.stable_revision, 80), (sc.canary_revision, 20)]
    assert served(gcp) == {sc.stable_revision: 80, sc.canary_revision: 20}  # nothing changed
    assert incident(rbot).rollback_at is None and rollback_steps(rbot) == ["confirmed", "failed"]
    old = rbot.slack.message(CHANNEL, proposal["ts"])
    assert "*롤백 거부됨: 서비스가 바뀌었습니다*" in old["text"] and "80%" in old["text"]
    assert not any(b["type"] == "actions" for b in old["blocks"])
    new = rbot.slack.message(CHANNEL, fresh.message_ts or "")
    assert fresh.status == "proposed" and fresh.etag == gcp.service()["etag"] != stale.etag
    assert f"`{sc.stable_revision}` 80% (stable) · `{sc.canary_revision}` 20% (canary)" in new["text"]

    click(rbot, new, DEVOPS)  # the fresh confirmation goes through
    rbot.settle()
    assert rows(rbot)[1].status == "done" and served(gcp) == {sc.stable_revision: 100, sc.canary_revision: 0}


def test_permission_denied_names_the_permission_and_the_role(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    gcp.deny_updates()
    click(rbot, proposal, LEAD)
    rbot.settle()
    [row] = rows(rbot)
    assert (row.status, row.error_kind, row.started_at) == ("failed", "permission_denied", None)
    text = rbot.slack.message(CHANNEL, proposal["ts"])["text"]
    assert "*롤백 실패*" in text and "`run.services.update`" in text and "`roles/run.developer`" in text
    assert served(gcp) == {sc.stable_revision: 90, sc.canary_revision: 10}
    assert incident(rbot).rollback_at is None and rollback_steps(rbot) == ["confirmed", "failed"]


def test_a_revision_gone_before_the_update_is_named(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts, f"rollback {sc.retired_revision}")
    kept = sc.retired_revision
    sc.retired_revision = "ion-api-00040-new"  # deleted, and another created, after the proposal
    try:
        click(rbot, proposal, LEAD)
        rbot.settle()
    finally:
        sc.retired_revision = kept
    [row] = rows(rbot)
    assert (row.status, row.error_kind) == ("failed", "missing_revision")
    assert f"리비전 `{kept}` 가 없습니다" in rbot.slack.message(CHANNEL, proposal["ts"])["text"]


def test_an_operation_that_fails_shows_its_error(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    gcp.operations_end("fail", error="Revision 'ion-api-00041-abc' is not ready and cannot serve traffic.")
    click(rbot, proposal, LEAD)
    rbot.settle()
    [row] = rows(rbot)
    assert (row.status, row.error_kind) == ("failed", "operation_error") and row.started_at is not None
    text = rbot.slack.message(CHANNEL, proposal["ts"])["text"]
    assert "Cloud Run이 변경을 적용하지 못했습니다" in text and "is not ready and cannot serve traffic" in text
    assert served(gcp) == {sc.stable_revision: 90, sc.canary_revision: 10}
    assert rollback_steps(rbot) == ["confirmed", "started", "failed"] and row.verify_due_at is None


def test_a_wait_that_runs_out_says_still_running_with_a_link(
        rbot: LocalBot, gcp: GcpSandbox, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollback, "OPERATION_WAIT", timedelta(seconds=0.3))
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    gcp.operations_end("hang")
    click(rbot, proposal, LEAD)
    rbot.settle()
    [row] = rows(rbot)
    assert (row.status, row.error_kind) == ("timed_out", "timeout") and row.verify_due_at is None
    text = rbot.slack.message(CHANNEL, proposal["ts"])["text"]
    assert "*롤백이 아직 진행 중*" in text and f"<{CONSOLE}|Cloud Console>" in text
    assert rollback_steps(rbot) == ["confirmed", "started", "still_running"]


def test_an_unreachable_api_is_named_and_nothing_is_recorded_as_done(
        rbot: LocalBot, gcp: GcpSandbox, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)
    proposal = propose(rbot, thread_ts)
    gcp.fail("/v2/projects/", 503, times=100)
    click(rbot, proposal, LEAD)
    rbot.settle()
    [row] = rows(rbot)
    assert (row.status, row.error_kind, row.started_at) == ("failed", "unavailable", None)
    text = rbot.slack.message(CHANNEL, proposal["ts"])["text"]
    assert "Cloud Run API에 연결하지 못해" in text and CONSOLE in text
    assert incident(rbot).rollback_at is None


# -- the verification that follows --------------------------------------------------------------------------------


def rolled_back(bot: LocalBot, clock: ManualClock) -> tuple[str, Rollback]:
    thread_ts = opened(bot, clock)
    click(bot, propose(bot, thread_ts), LEAD)
    bot.settle()
    [row] = rows(bot)
    assert row.status == "done"
    return thread_ts, row


def verify_messages(bot: LocalBot, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in bot.slack.thread(CHANNEL, thread_ts) if "*롤백 완료 확인" in m.get("text", "")]


def test_the_verification_runs_by_itself_and_proposes_recovered(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts, _ = rolled_back(rbot, clock)
    clock.advance(timedelta(minutes=2, seconds=59))
    rbot.runtime.sweep()
    rbot.settle()
    assert verify_messages(rbot, thread_ts) == []  # not due yet
    clock.advance(timedelta(seconds=1))
    rbot.runtime.sweep()
    rbot.runtime.sweep()
    rbot.settle()
    [message] = verify_messages(rbot, thread_ts)
    assert "✅ *롤백 완료 확인: 모든 점검 통과*" in message["text"]
    window = (clock.now() - timedelta(minutes=10), clock.now())
    want = p99([s for m in minutes(window) for s in gcp.monitoring.samples(MEMORY, sc.stable_revision, m)])
    [memory] = [line.split() for line in message["text"].splitlines() if line.startswith("메모리 ")]
    assert memory == ["메모리", sc.stable_revision, "통과", f"{want * 100:.1f}%", "&lt;", "70%"]
    assert any(e["action_id"] == "evidence.confirm_recovered" for b in message["blocks"] if b["type"] == "actions"
               for e in b["elements"])
    assert rows(rbot)[0].verified_at == clock.now()
    with rbot.ctx.db.session() as session:
        [stored] = session.scalars(select(Evidence).where(Evidence.kind == "verify")).all()
        assert stored.payload["memory_p99"] == {sc.stable_revision: pytest.approx(want)}


def p99(samples: list[float]) -> float:
    """The 99th percentile by linear interpolation between closest ranks, as the sandbox documents it."""
    ordered = sorted(samples)
    rank = 0.99 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def minutes(window: tuple[Any, Any]) -> list[Any]:
    """The minute ends inside (start, end]: the points a ListTimeSeries interval takes."""
    start, end = window
    out, minute = [], end.replace(second=0, microsecond=0)
    while minute > start:
        out.append(minute)
        minute -= timedelta(minutes=1)
    return out


def test_the_verification_fails_on_memory_over_the_line(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts, _ = rolled_back(rbot, clock)
    gcp.monitoring.set_usage(sc.stable_revision, memory=0.80)
    clock.advance(timedelta(minutes=3))
    rbot.runtime.sweep()
    rbot.settle()
    [message] = verify_messages(rbot, thread_ts)
    assert "❌ *롤백 완료 확인 실패* — 통과하지 못한 점검: 메모리" in message["text"]
    assert not any(b["type"] == "actions" for b in message["blocks"])  # no recovered button
    with rbot.ctx.db.session() as session:
        [event] = [e for e in session.scalars(select(TimelineEvent)) if (e.data or {}).get("action") == "verify"]
        assert event.data["failed"] == ["memory"]


def test_the_verification_is_due_after_a_restart_and_runs_once(
        gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock, slack: SlackSandbox, database_url: str) -> None:
    first = make_bot(gcp, clock, slack, database_url, {})
    first.start()
    try:
        thread_ts, _ = rolled_back(first, clock)
    finally:
        first.stop()  # the process goes away before the verification is due
    clock.advance(timedelta(minutes=5))
    second = make_bot(gcp, clock, slack, database_url, {})
    second.start()
    try:
        second.runtime.sweep()
        second.runtime.sweep()
        second.settle()
        assert len(verify_messages(second, thread_ts)) == 1
        assert rows(second)[0].verified_at == clock.now()
    finally:
        second.stop()


# -- from the evidence summary --------------------------------------------------------------------------------------


def test_the_evidence_summary_offers_the_proposal_when_the_canary_fails(
        rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario, clock: ManualClock) -> None:
    thread_ts = opened(rbot, clock)  # evidence is captured at open: the canary's 9 % errors fail the 0.5 % line
    summary = latest(rbot, thread_ts, "증거")
    offer = button(summary, PROPOSE)
    assert offer["text"]["text"] == "⏪ 롤백 제안하기" and offer["value"] == str(incident(rbot).id)
    click(rbot, summary, STRANGER, PROPOSE)  # anyone may ask for the proposal; confirming is what is guarded
    rbot.settle()
    [row] = rows(rbot)
    assert row.status == "proposed" and row.target_revision == sc.stable_revision
    proposal = rbot.slack.message(CHANNEL, row.message_ts or "")
    assert button(proposal)["value"] == str(row.id)


def test_a_healthy_canary_gets_no_offer(rbot: LocalBot, gcp: GcpSandbox, sc: CanaryScenario,
                                        clock: ManualClock) -> None:
    gcp.set_rolled_back(True)  # all traffic back on stable: no canary serving, nothing to propose
    gcp.change_service(gcp.scenario.default_traffic())
    thread_ts = opened(rbot, clock)
    summary = latest(rbot, thread_ts, "증거")
    assert not any(b["type"] == "actions" for b in summary.get("blocks", []))


# -- every message, in both languages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_every_rollback_message_renders_in_both_languages(locale: str) -> None:
    """The branches the end-to-end tests above don't reach render too, with their values, in each language."""
    say, fmt = Renderer().say, TimeFormatter(ZoneInfo("UTC"), locale)
    at = CanaryScenario().window_end
    before = [Share("ion-api-00041-abc", 90, "stable"), Share("ion-api-00042-xyz", 10, "canary")]
    allowed = Confirmers({"lead": LEAD}, (ALLOWED,))
    english = ("Rollback", "Cloud Run couldn't", "Who may confirm", "Nothing was")
    seen: set[str] = set()
    for status, error_kind in [("proposed", None), ("requested", None), ("running", None), ("done", None),
                               ("stale", "stale"), ("superseded", None), ("timed_out", "timeout"),
                               *[("failed", k) for k in ("permission_denied", "missing_revision", "operation_error",
                                                         "unavailable", "interrupted", "error")]]:
        row = SimpleNamespace(status=status, error_kind=error_kind, error_detail="boom <@U1>", service="ion-api",
                              target_revision="ion-api-00041-abc", proposed_at=at, confirmed_by=LEAD,
                              confirmed_at=at, started_at=at, finished_at=at, verify_due_at=at, verified_at=None)
        text = say("rollback.proposal", locale, r=row, public_id="INCIDENT-1", before=before, after=before, fmt=fmt,
                   with_date=False, confirmers=allowed, console_url=CONSOLE, wait="5m", permission="p", role="r")
        assert "ion-api" in text and "<@U1>" not in text  # the detail came from Google: it never mentions anyone
        seen.add(text)
        if locale == "ko":
            assert not any(word in text for word in english), text
    assert len(seen) == 13  # words of their own for every state and failure
    for code in ("disabled", "unknown", "not_allowed", "requested", "running", "done", "superseded", "failed"):
        text = say("rollback.refused", locale, code=code, params={"roles": {"devops": DEVOPS}, "users": (), "by": LEAD})
        assert text and "{" not in text
    for reason in ("unknown_revision", "already_serving", "several_older", "only_newest", "no_traffic"):
        text = say("rollback.no_target", locale, public_id="INCIDENT-1", service="ion-api", reason=reason,
                   asked="ion-api-1", serving=before, revisions=["ion-api-00042-xyz"])
        assert "`/incident rollback" in text or "ion-api-1" in text
    for kind in ("permission_denied", "not_found", "unavailable", "error"):
        assert "ion-api" in say("rollback.read_failed", locale, public_id="I", service="ion-api", kind=kind, detail="x")
