"""Evidence and rollback verification end to end: signed Slack requests into the real app, the real Google
clients against the GCP sandbox, and assertions on what Slack received and what the database holds.

Expected numbers are computed here from ``scenario.entries()`` with plain Python, never with the analysis
code under test.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Evidence, ImpactValue, Incident, TimelineEvent
from tests.helpers import evidence_bot, open_incident, shared_gcp_sandbox

CHANNEL = "C0INCIDENTS"
ENTRIES = "/v2/entries:list"
OPEN_TEXT = "추천 API p95 급증 sev:high service:ion-api"


# -- fixtures -----------------------------------------------------------------------------------------


module_gcp_fixture, gcp_fixture = shared_gcp_sandbox(CanaryScenario)


@pytest.fixture
def sc(gcp: GcpSandbox) -> CanaryScenario:
    return gcp.scenario


@pytest.fixture
def clock(sc: CanaryScenario) -> ManualClock:
    # The incident is opened at the end of the scenario's failure window, so every window is deterministic.
    return ManualClock(sc.window_end)


@pytest.fixture
def extra_env() -> dict[str, str]:
    return {}


@pytest.fixture
def ebot(gcp: GcpSandbox, clock: ManualClock, slack: SlackSandbox, database_url: str,
         extra_env: dict[str, str]) -> Iterator[LocalBot]:
    with evidence_bot(gcp, clock, slack, database_url, extra_env) as local:
        yield local


# -- independent expectations from the generated data ---------------------------------------------------


def _ts(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["timestamp"])


def _revision(entry: dict[str, Any]) -> str:
    return str(entry["resource"]["labels"]["revision_name"])


def requests_in(sc: CanaryScenario, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [e for e in sc.entries() if e["logName"].endswith("%2Frequests") and start <= _ts(e) < end]


def expected_revisions(sc: CanaryScenario, start: datetime, end: datetime) -> dict[str, dict[str, float]]:
    by_rev: dict[str, list[dict[str, Any]]] = {}
    for e in requests_in(sc, start, end):
        by_rev.setdefault(_revision(e), []).append(e)
    out = {}
    for rev, items in by_rev.items():
        latencies = sorted(float(e["httpRequest"]["latency"][:-1]) * 1000 for e in items)

        def rank(q: float, lat: list[float] = latencies) -> float:
            return lat[max(1, math.ceil(q * len(lat))) - 1]

        errors = sum(1 for e in items if e["httpRequest"]["status"] >= 500)
        out[rev] = {"requests": len(items), "errors": errors, "rate": errors / len(items),
                    "avg": sum(latencies) / len(latencies), "p95": rank(0.95), "p99": rank(0.99)}
    return out


_LEADING_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _family(entry: dict[str, Any]) -> str:
    """What kind of error an entry is, read straight off the raw entry: the exception name of a stderr line,
    or method and path of a failed request."""
    if "httpRequest" in entry and "textPayload" not in entry and "jsonPayload" not in entry:
        http = entry["httpRequest"]
        path = re.sub(r"^https?://[^/]+", "", http["requestUrl"]).split("?")[0]
        return f"HTTP <num> {http['requestMethod']} {path}"
    text = entry.get("textPayload") or entry["jsonPayload"]["message"]
    return _LEADING_STAMP.sub("", text).split(":", 1)[0]


def expected_families(sc: CanaryScenario, start: datetime, end: datetime, limit: int = 500) -> list[tuple[str, int]]:
    errors = [e for e in sc.entries() if e["severity"] in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY")
              and start <= _ts(e) < end]
    errors.sort(key=lambda e: (e["timestamp"], e["insertId"]))  # ascending, as the capture asks for them
    counts = Counter(_family(e) for e in errors[:limit])
    first_seen = {f: i for i, f in reversed(list(enumerate(_family(e) for e in errors[:limit])))}
    return sorted(counts.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))


def expected_endpoints(sc: CanaryScenario, start: datetime, end: datetime) -> list[tuple[str, int]]:
    counts = Counter(
        re.sub(r"^https?://[^/]+", "", e["httpRequest"]["requestUrl"]).split("?")[0]
        for e in requests_in(sc, start, end) if e["httpRequest"]["status"] >= 500
    )
    return counts.most_common()


def canary_5xx_minutes(sc: CanaryScenario, start: datetime, end: datetime) -> Counter[datetime]:
    return Counter(_ts(e).replace(second=0, microsecond=0) for e in requests_in(sc, start, end)
                   if _revision(e) == sc.canary_revision and e["httpRequest"]["status"] >= 500)


# -- reading what Slack shows -------------------------------------------------------------------------


def _number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%").removesuffix("ms"))


ROW = re.compile(r"^(ion-api-\S+)\s+(\S+)\s+(\S+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+%)\s+([\d,]+ms)\s+([\d,]+ms)"
                 r"\s+([\d,]+ms)$", re.MULTILINE)


def table_rows(text: str) -> dict[str, dict[str, Any]]:
    return {m.group(1): {"tag": m.group(2), "traffic": m.group(3), "requests": _number(m.group(4)),
                         "errors": _number(m.group(5)), "rate": _number(m.group(6)), "avg": _number(m.group(7)),
                         "p95": _number(m.group(8)), "p99": _number(m.group(9))}
            for m in ROW.finditer(text)}


def assert_matches(row: dict[str, Any], want: dict[str, float]) -> None:
    assert row["requests"] == want["requests"] and row["errors"] == want["errors"]
    assert abs(row["rate"] - want["rate"] * 100) <= 0.051
    assert abs(row["avg"] - want["avg"]) <= 0.51
    # Percentiles come from a streaming histogram: within 1% of the exact nearest-rank value, then rounded.
    for key in ("p95", "p99"):
        assert abs(row[key] - want[key]) <= want[key] * 0.01 + 0.51, (key, row[key], want[key])


def thread_messages(bot: LocalBot, thread_ts: str, marker: str) -> list[dict[str, Any]]:
    return [m for m in bot.slack.thread(CHANNEL, thread_ts) if marker in m.get("text", "")]


def uploads(bot: LocalBot) -> dict[str, dict[str, Any]]:
    """The JSON files (each capture's chart, a PNG, is tested in test_evidence_chart.py)."""
    return {f["filename"]: json.loads(f["content"]) for f in bot.slack.files() if f["filename"].endswith(".json")}


def evidence_rows(bot: LocalBot) -> list[Evidence]:
    with bot.ctx.db.session() as session:
        rows = session.scalars(select(Evidence).order_by(Evidence.id)).all()
        session.expunge_all()
        return list(rows)


def system_events(bot: LocalBot, action: str) -> list[TimelineEvent]:
    with bot.ctx.db.session() as session:
        rows = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "system")
                               .order_by(TimelineEvent.id)).all()
        session.expunge_all()
        return [r for r in rows if (r.data or {}).get("action") == action]


# -- capture at open ------------------------------------------------------------------------------------


def test_open_with_a_service_preserves_evidence_in_the_thread(ebot: LocalBot, sc: CanaryScenario,
                                                              gcp: GcpSandbox) -> None:
    response = ebot.driver.command("/incident", f"open {OPEN_TEXT}")
    assert response.status_code == 200 and response.json()["response_type"] == "ephemeral"
    ebot.settle()
    with ebot.ctx.db.session() as session:
        incident = session.scalars(select(Incident)).one()
        thread_ts, public_id, opened = incident.announcement_ts, incident.public_id, incident.opened_at
    assert thread_ts and opened == sc.window_end
    start, end = opened - timedelta(hours=1), opened  # no deploy time recorded: open − 1 h … now

    # One message in the thread: posted as progress, then updated in place with the result.
    [summary] = thread_messages(ebot, thread_ts, "긴급 증거 보존 완료")
    [before] = ebot.slack.edits(CHANNEL, summary["ts"])
    assert before["text"].startswith("🔎 긴급 증거 수집 중…") and "`ion-api`" in before["text"]
    assert [c.args["ts"] for c in ebot.slack.calls("chat.update")].count(summary["ts"]) == 1
    text = summary["text"]
    assert public_id in text and "08:30–09:30 UTC" in text and "배포 시점 미기록" in text

    # The per-revision table, checked against the raw request logs.
    want = expected_revisions(sc, start, end)
    rows = table_rows(text)
    assert set(rows) == {sc.canary_revision, sc.stable_revision}
    for revision, row in rows.items():
        assert_matches(row, want[revision])
    assert (rows[sc.canary_revision]["tag"], rows[sc.canary_revision]["traffic"]) == ("canary", "10%")
    assert (rows[sc.stable_revision]["tag"], rows[sc.stable_revision]["traffic"]) == ("stable", "90%")
    canary_line = next(line for line in text.splitlines() if line.startswith("• canary"))
    for reading in ("로직 버그 가능성", "성능 문제 또는 데이터베이스 문제", "아웃라이어 쿼리 또는 외부 API 타임아웃"):
        assert reading in canary_line
    assert not any(line.startswith("• stable") for line in text.splitlines())  # 0.4 % and 150 ms: nothing to say
    assert f"`{sc.stable_revision}` (stable) 90% · `{sc.canary_revision}` (canary) 10%" in text

    # Top five error patterns with their counts, from the first 500 error entries.
    families = expected_families(sc, start, end)
    pattern_lines = re.search(r"```\n건수\s+패턴\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(pattern_lines) == 5
    for line, (family, n) in zip(pattern_lines, families[:5], strict=True):
        count, pattern = line.split(None, 1)
        assert int(count.replace(",", "")) == n and pattern.startswith(family.replace("<", "&lt;").replace(">", "&gt;"))
    assert "에러 로그 500건 (한도 500건 도달" in text

    # Endpoints from the 5xx requests, and when errors began (no deploy time: an absolute minute).
    endpoints = " · ".join(f"`{path}` {n}건" for path, n in expected_endpoints(sc, start, end)[:5])
    assert f"*영향받은 엔드포인트* (5xx 요청 기준): {endpoints}" in text
    first_canary_5xx = min(canary_5xx_minutes(sc, start, end))
    assert f"*에러 급증 시작:* {first_canary_5xx:%H:%M} UTC" in text

    # Three files in the thread, named like the guide's, holding the raw evidence.
    names = [f"evidence_errors_{end:%Y%m%d_%H%M%S}.json", f"evidence_metrics_{end:%Y%m%d_%H%M%S}.json",
             f"evidence_canary_config_{end:%Y%m%d_%H%M%S}.json"]
    files = uploads(ebot)
    assert sorted(files) == sorted(names)
    assert all(c.args["thread_ts"] == thread_ts for c in ebot.slack.calls("files.completeUploadExternal"))
    assert "(파일 이름의 시각은 UTC 기준)" in text
    errors_file, metrics_file, config_file = (files[n] for n in names)
    assert errors_file["count"] == 500 and len(errors_file["records"]) == 500 and errors_file["limit_reached"]
    assert [p["count"] for p in errors_file["top_patterns"]] == [n for _, n in families[:10]]
    for role, revision in (("canary", sc.canary_revision), ("stable", sc.stable_revision)):
        assert metrics_file[role]["revision"] == revision
        assert metrics_file[role]["request_count"] == want[revision]["requests"]
        assert metrics_file[role]["error_count"] == want[revision]["errors"]
    served = {t["revision"]: t["percent"] for t in config_file["config"]["traffic_statuses"]}
    assert served == {sc.stable_revision: 90, sc.canary_revision: 10}

    # Everything is in the database too, under one run id, with the same content as the files.
    rows_db = evidence_rows(ebot)
    assert [(r.kind, r.ok) for r in rows_db] == [("errors", True), ("metrics", True), ("config", True)]
    assert len({r.run_id for r in rows_db}) == 1 and all(r.captured_at == end for r in rows_db)
    assert [r.payload for r in rows_db] == [errors_file, metrics_file, config_file]
    [event] = system_events(ebot, "evidence")
    assert event.data["errors"] == 500 and event.data["failed"] == [] and event.author_id is None

    # The measured impact fills the report's 임팩트 (stable → canary).
    with ebot.ctx.db.session() as session:
        impact = {i.field: i for i in session.scalars(select(ImpactValue)).all()}
    assert set(impact) >= {"error-rate", "p95"} and impact["error-rate"].source == "measured"


@pytest.mark.parametrize("extra_env", [{"INCIDENT_LOCALE": "en", "INCIDENT_TIMEZONE": "Asia/Seoul"}])
def test_on_demand_capture_after_the_deploy_milestone_in_english(ebot: LocalBot, sc: CanaryScenario) -> None:
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    # 09:00 UTC is 18:00 in Seoul.
    assert ebot.driver.command("/incident", "milestone deployed 18:00").status_code == 200
    ebot.settle()
    ack = ebot.driver.command("/incident", "evidence").json()
    assert ack["response_type"] == "ephemeral" and ack["text"].startswith("Preserving evidence for `INCIDENT-")
    ebot.settle()

    summaries = thread_messages(ebot, thread_ts, "*Evidence preserved*")
    assert len(summaries) == 2  # at open, and now
    text = summaries[-1]["text"]
    start, end = sc.deployed_at, sc.window_end
    assert "Window 18:00–18:30 KST · deployed 18:00 KST" in text
    rows = table_rows(text)
    want = expected_revisions(sc, start, end)
    for revision, row in rows.items():
        assert_matches(row, want[revision])

    minutes = canary_5xx_minutes(sc, start, end)
    onset = min(minutes)
    after = int((onset - sc.deployed_at).total_seconds() // 60)
    peak = max(sorted(minutes), key=lambda m: minutes[m])
    assert after < 10
    local = onset.astimezone(ebot.ctx.settings.timezone)
    assert (f"*Errors began:* *right after the deploy* — {after} min after it, canary 5xx rose from "
            f"{local:%H:%M} KST · peak {minutes[peak]}/min at "
            f"{peak.astimezone(ebot.ctx.settings.timezone):%H:%M} KST") in text
    assert "error rate" in text and "likely a logic bug" in text and "outlier queries or external API timeouts" in text

    stamp = end.astimezone(ebot.ctx.settings.timezone).strftime("%Y%m%d_%H%M%S")
    assert stamp == "20240514_183000"
    assert f"evidence_metrics_{stamp}.json" in uploads(ebot)
    assert "(file name times are Asia/Seoul)" in text
    [_, second] = system_events(ebot, "evidence")
    assert second.author_id == "U0SENA"


# -- failures -----------------------------------------------------------------------------------------


def test_permission_denied_on_logging_keeps_the_rest_and_a_rerun_completes(
        ebot: LocalBot, sc: CanaryScenario, gcp: GcpSandbox, clock: ManualClock) -> None:
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    clock.advance(timedelta(minutes=1))
    gcp.fail(ENTRIES, 403, times=1, message="Permission 'logging.logEntries.list' denied on resource")
    ebot.driver.command("/incident", "evidence")
    ebot.settle()

    [partial] = thread_messages(ebot, thread_ts, "긴급 증거 일부 보존")
    text = partial["text"]
    assert "• *에러 로그* — 권한 없음 (Cloud Logging: HTTP 403" in text
    assert "`roles/logging.viewer` 권한이 필요합니다" in text and "`/incident evidence` 로 다시 실행하세요" in text
    assert "에러 로그 수집 실패" in text
    assert table_rows(text)  # the metrics from the request logs are still shown
    stamp = clock.now().strftime("%Y%m%d_%H%M%S")
    files = uploads(ebot)
    assert f"evidence_metrics_{stamp}.json" in files and f"evidence_canary_config_{stamp}.json" in files
    assert f"evidence_errors_{stamp}.json" not in files

    second_run = evidence_rows(ebot)[3:]
    assert [(r.kind, r.ok, r.error_kind) for r in second_run] == [
        ("errors", False, "permission_denied"), ("metrics", True, None), ("config", True, None)]
    assert second_run[0].payload is None and "HTTP 403" in (second_run[0].error_detail or "")
    assert second_run[1].payload["canary"]["request_count"] > 0 and second_run[2].payload["config"]["uri"]
    assert system_events(ebot, "evidence")[-1].data["failed"] == ["errors"]

    # Run it again once the permission is there: a complete capture, three more files.
    clock.advance(timedelta(minutes=1))
    ebot.driver.command("/incident", "evidence")
    ebot.settle()
    third_run = evidence_rows(ebot)[6:]
    assert [(r.kind, r.ok) for r in third_run] == [("errors", True), ("metrics", True), ("config", True)]
    assert f"evidence_errors_{clock.now():%Y%m%d_%H%M%S}.json" in uploads(ebot)
    assert len(thread_messages(ebot, thread_ts, "긴급 증거 보존 완료")) == 2


@pytest.mark.parametrize(("status", "kind", "hint"), [
    (404, "찾을 수 없음", "`CLOUD_RUN_REGION` 과 서비스 이름 `ion-api` 가 맞는지"),
    (403, "권한 없음", "`roles/run.viewer` 권한이 필요합니다"),
])
def test_cloud_run_failure_names_the_deployment_config(ebot: LocalBot, gcp: GcpSandbox, status: int, kind: str,
                                                      hint: str) -> None:
    gcp.fail("/v2/projects/", status, times=5)
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    [partial] = thread_messages(ebot, thread_ts, "긴급 증거 일부 보존")
    assert f"• *배포 설정* — {kind} (Cloud Run: HTTP {status}" in partial["text"] and hint in partial["text"]
    assert [(r.kind, r.ok) for r in evidence_rows(ebot)] == [("errors", True), ("metrics", True), ("config", False)]
    assert not any(n.startswith("evidence_canary_config") for n in uploads(ebot))


def test_a_failed_upload_loses_nothing_and_says_so(ebot: LocalBot, slack: SlackSandbox) -> None:
    slack.fail("files.getUploadURLExternal", status=200, times=1, error="internal_error")
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    [summary] = thread_messages(ebot, thread_ts, "긴급 증거 보존 완료")
    assert re.search(r"⚠️ `evidence_errors_\d{8}_\d{6}\.json` 첨부 실패 \(internal_error\)", summary["text"])
    assert len(uploads(ebot)) == 2
    assert [(r.kind, r.ok, r.payload is not None) for r in evidence_rows(ebot)] == [
        ("errors", True, True), ("metrics", True, True), ("config", True, True)]


def test_progress_update_failure_falls_back_to_a_new_message(ebot: LocalBot, slack: SlackSandbox) -> None:
    slack.fail("chat.update", status=200, times=1, error="message_not_found")
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    assert thread_messages(ebot, thread_ts, "긴급 증거 수집 중…")  # the progress message stayed
    assert len(thread_messages(ebot, thread_ts, "긴급 증거 보존 완료")) == 1


# -- configuration and input -------------------------------------------------------------------------


@pytest.mark.parametrize("extra_env", [{"GCP_PROJECT": "", "CLOUD_RUN_REGION": ""}])
def test_without_gcp_settings_open_skips_and_the_command_says_what_is_missing(ebot: LocalBot,
                                                                                gcp: GcpSandbox) -> None:
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    assert ebot.slack.thread(CHANNEL, thread_ts) == []
    for sub in ("evidence", "verify"):
        body = ebot.driver.command("/incident", sub).json()
        assert body["response_type"] == "ephemeral"
        assert "`GCP_PROJECT`, `CLOUD_RUN_REGION`" in body["text"] and f"/incident {sub}" in body["text"]
    ebot.settle()
    assert evidence_rows(ebot) == [] and system_events(ebot, "evidence") == []
    assert gcp.requests() == []


def test_an_incident_without_a_service_gets_no_capture_and_a_clear_answer(ebot: LocalBot, gcp: GcpSandbox) -> None:
    _, thread_ts = open_incident(ebot, "이름 없는 장애")
    assert ebot.slack.thread(CHANNEL, thread_ts) == [] and gcp.requests() == []
    body = ebot.driver.command("/incident", "evidence").json()
    assert "Cloud Run 서비스가 지정되지 않았습니다" in body["text"] and "CLOUD_RUN_SERVICE" in body["text"]
    body = ebot.driver.command("/incident", "evidence now please").json()
    assert "`now please` 는 이 명령에 필요 없는 내용입니다" in body["text"]
    assert "/incident evidence [INCIDENT-ID]" in body["text"]
    ebot.settle()
    assert evidence_rows(ebot) == []


@pytest.mark.parametrize("extra_env", [{"CLOUD_RUN_SERVICE": "other-api"}])
def test_service_given_at_open_wins_over_the_default(ebot: LocalBot, gcp: GcpSandbox) -> None:
    open_incident(ebot, OPEN_TEXT)
    filters = [r.body["filter"] for r in gcp.requests(ENTRIES)]
    assert filters and all('service_name="ion-api"' in f for f in filters)
    assert all(r.path.endswith("/services/ion-api") for r in gcp.requests("/v2/projects/"))
    gcp.clear_requests()
    # Without service:, CLOUD_RUN_SERVICE names it, and it is still captured at open.
    open_incident(ebot, "두 번째 장애")
    assert any(r.path.endswith("/services/other-api") for r in gcp.requests("/v2/projects/"))


def test_a_second_request_while_capturing_is_told_to_wait(ebot: LocalBot, gcp: GcpSandbox) -> None:
    open_incident(ebot, OPEN_TEXT)
    gcp.set_latency(0.3, ENTRIES)
    first = ebot.driver.command("/incident", "evidence").json()["text"]
    second = ebot.driver.command("/incident", "evidence").json()["text"]
    assert "수집을 시작했습니다" in first and "이미 진행 중입니다" in second
    ebot.settle()
    assert len(evidence_rows(ebot)) == 6  # open + one on-demand run


# -- rollback verification --------------------------------------------------------------------------------

VERIFY_TEXT = {
    "ko": {"failed": "❌ *롤백 완료 확인 실패* — 통과하지 못한 점검: stable 트래픽, canary 트래픽, 에러율, P95",
           "passed": "✅ *롤백 완료 확인: 모든 점검 통과*",
           "labels": ("stable 트래픽", "canary 트래픽", "에러율", "P95", "헬스 체크"),
           "fail": "실패", "pass": "통과", "memory": "메모리",
           "confirmed": "님이 복구(롤백 완료) 시점을 09:40 UTC로 기록했습니다",
           "recorded": "복구(롤백 완료) 시점은 이미 09:40 UTC로 기록되어 있습니다"},
    "en": {"failed": "❌ *Rollback not confirmed* — failed: Stable traffic, Canary traffic, Error rate, P95",
           "passed": "✅ *Rollback confirmed: every check passed*",
           "labels": ("Stable traffic", "Canary traffic", "Error rate", "P95", "Health check"),
           "fail": "FAIL", "pass": "pass", "memory": "Memory",
           "confirmed": "recorded recovery (rollback complete) at 09:40 UTC",
           "recorded": "Recovery (rollback complete) is already recorded at 09:40 UTC"},
}


def check_rows(text: str, labels: tuple[str, ...]) -> dict[str, list[str]]:
    block = re.search(r"```\n(.*?)```", text, re.S).group(1).splitlines()[1:]
    out = {}
    for line in block:
        label = next(lab for lab in labels if line.startswith(lab))
        out[label] = line[len(label):].split()
    return out


@pytest.mark.parametrize("extra_env", [{"INCIDENT_LOCALE": "ko"}, {"INCIDENT_LOCALE": "en"}])
def test_verify_fails_before_the_rollback_passes_after_and_the_button_records_recovery(
        ebot: LocalBot, sc: CanaryScenario, gcp: GcpSandbox, clock: ManualClock, extra_env: dict[str, str]) -> None:
    words = VERIFY_TEXT[extra_env["INCIDENT_LOCALE"]]
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)
    clock.set(sc.post_end)  # the verify window is the 10 minutes after the failure window
    window = (sc.window_end, sc.post_end)

    ebot.driver.command("/incident", "verify")
    ebot.settle()
    [failed] = thread_messages(ebot, thread_ts, words["failed"])
    want = expected_revisions(sc, *window)[sc.canary_revision]
    rows = check_rows(failed["text"], (*words["labels"], words["memory"]))
    stable_traffic, canary_traffic, error_rate, p95, health = (rows[lab] for lab in words["labels"])
    assert stable_traffic == [sc.stable_revision, words["fail"], "90%", "=", "100%"]
    assert canary_traffic == [sc.canary_revision, words["fail"], "10%", "=", "0%"]
    assert error_rate[:2] == [sc.canary_revision, words["fail"]] and error_rate[3:] == ["&lt;", "0.5%"]
    assert abs(_number(error_rate[2]) - want["rate"] * 100) <= 0.051
    assert p95[:2] == [sc.canary_revision, words["fail"]] and p95[3:] == ["&lt;", "200ms"]
    assert abs(_number(p95[2]) - want["p95"]) <= want["p95"] * 0.01 + 0.51
    assert health[1:] == [words["pass"], "200", "2xx"]
    assert words["memory"] in failed["text"]
    # Memory is the fourth check now (Cloud Monitoring): the canary's p99 stays under 70 % in this scenario.
    memory = rows[words["memory"]]
    assert memory[0] == sc.canary_revision and memory[1] == words["pass"] and memory[3:] == ["&lt;", "70%"]
    assert not any(b["type"] == "actions" for b in failed["blocks"])
    [event] = system_events(ebot, "verify")
    assert event.data["passed"] is False and event.data["failed"] == ["traffic", "canary_traffic", "error_rate", "p95"]
    [stored] = [r for r in evidence_rows(ebot) if r.kind == "verify"]
    assert stored.ok and stored.payload["result"]["all_passed"] is False and stored.captured_at == sc.post_end

    gcp.set_rolled_back()
    ebot.driver.command("/incident", "verify")
    ebot.settle()
    [passed] = thread_messages(ebot, thread_ts, words["passed"])
    stable = expected_revisions(sc, *window)[sc.stable_revision]
    rows = check_rows(passed["text"], (*words["labels"], words["memory"]))
    assert rows[words["labels"][0]][2] == "100%" and rows[words["labels"][1]][2] == "0%"
    assert abs(_number(rows[words["labels"][2]][2]) - stable["rate"] * 100) <= 0.0051
    assert abs(_number(rows[words["labels"][3]][2]) - stable["p95"]) <= stable["p95"] * 0.01 + 0.51
    assert all(r[1] == words["pass"] for r in rows.values())
    [actions] = [b for b in passed["blocks"] if b["type"] == "actions"]
    [button] = actions["elements"]
    assert button["action_id"] == "evidence.confirm_recovered" and "09:40 UTC" in button["text"]["text"]
    assert system_events(ebot, "verify")[-1].data == {
        "action": "verify", "run_id": system_events(ebot, "verify")[-1].data["run_id"], "passed": True, "failed": []}

    response = ebot.driver.block_action("evidence.confirm_recovered", button["value"], message_ts=passed["ts"])
    assert response.status_code == 200
    ebot.settle()
    with ebot.ctx.db.session() as session:
        incident = session.scalars(select(Incident).where(Incident.public_id == public_id)).one()
        assert incident.recovered_at == sc.post_end
    redrawn = ebot.slack.message(CHANNEL, passed["ts"])
    assert not any(b["type"] == "actions" for b in redrawn["blocks"])
    assert "<@U0SENA>" in redrawn["text"] and words["confirmed"] in redrawn["text"]
    assert any((e.data or {}).get("milestone") == "recovered" for e in system_events(ebot, "milestone"))

    # Once recorded, a later passing check only says so: there is nothing left to confirm.
    ebot.driver.command("/incident", "verify")
    ebot.settle()
    again = [m for m in ebot.slack.thread(CHANNEL, thread_ts) if not m.get("files")][-1]  # the chart follows it
    assert again["ts"] != passed["ts"] and words["recorded"] in again["text"], again["text"]
    assert not any(b["type"] == "actions" for b in again["blocks"])


def test_an_unhealthy_service_fails_only_the_health_check(ebot: LocalBot, sc: CanaryScenario, gcp: GcpSandbox,
                                                         clock: ManualClock) -> None:
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    clock.set(sc.post_end)
    gcp.set_rolled_back()
    gcp.health_status = 503
    ebot.driver.command("/incident", "verify")
    ebot.settle()
    [message] = thread_messages(ebot, thread_ts, "통과하지 못한 점검: 헬스 체크")
    assert re.search(r"^헬스 체크\s+—\s+실패\s+503\s+2xx$", message["text"], re.M)
    assert f"`{gcp.base_url}/health`" in message["text"]
    assert not any(b["type"] == "actions" for b in message["blocks"])


def test_a_forged_confirm_value_changes_nothing(ebot: LocalBot, sc: CanaryScenario) -> None:
    public_id, _ = open_incident(ebot, OPEN_TEXT)
    with ebot.ctx.db.session() as session:
        incident_id = session.scalars(select(Incident.id).where(Incident.public_id == public_id)).one()
    for value in ("garbage", f"{incident_id}|{sc.window_end.isoformat()}", f"{incident_id}|2024-05-14T09:30:00"):
        ebot.driver.block_action("evidence.confirm_recovered", value, message_ts="1.000001")
        ebot.settle()
    with ebot.ctx.db.session() as session:
        assert session.get_one(Incident, incident_id).recovered_at is None
    texts = [r.get("text", "") for r in ebot.slack.responses()]
    assert len(texts) == 3 and all("/incident verify" in t for t in texts)


def test_window_falls_back_to_an_hour_before_open(ebot: LocalBot, sc: CanaryScenario, gcp: GcpSandbox) -> None:
    open_incident(ebot, OPEN_TEXT)
    first = gcp.requests(ENTRIES)[0].body["filter"]
    start = (sc.window_end - timedelta(hours=1)).astimezone(UTC)
    assert f'timestamp>="{start:%Y-%m-%dT%H:%M:%S}.000000Z"' in first
    assert f'timestamp<"{sc.window_end:%Y-%m-%dT%H:%M:%S}.000000Z"' in first


@pytest.mark.parametrize("extra_env", [{"CLOUD_LOGGING_API_URL": "https://logging.example.invalid",
                                        "CLOUD_RUN_API_URL": "https://run.example.invalid"}])
def test_missing_google_credentials_are_recorded_for_every_kind(ebot: LocalBot, gcp: GcpSandbox,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # An https endpoint means Application Default Credentials; point them at nothing.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    [partial] = thread_messages(ebot, thread_ts, "긴급 증거 일부 보존")
    assert "Application Default Credentials" in partial["text"] and "DefaultCredentialsError" in partial["text"]
    assert [(r.kind, r.ok, r.error_kind) for r in evidence_rows(ebot)] == [
        ("errors", False, "permission_denied"), ("metrics", False, "permission_denied"),
        ("config", False, "permission_denied")]
    assert uploads(ebot) == {} and gcp.requests() == []
