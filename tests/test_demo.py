"""The README's demo command end to end: the guide's scenario fills every section of the report, computed; the
transcript reads in the configured language with nothing left blank; the demo's database stays readable. The
incident is declared from Cloud Monitoring's alert and rolled back from its thread, and the database shows it."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app import build_runtime
from sandbox.demo import run_demo
from sandbox.driver import SlackDriver
from storage.models import ActionItem, Alert, Evidence, GithubIssue, Incident, Rollback

pytestmark = pytest.mark.slow

ID = "INCIDENT-20251022-001"
HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
# Markup and punctuation around a word the bot quotes: stripped before looking the word up in what people typed.
QUOTING = "*_`\"'“”‘’()[]{}<>.,:;!?…—–-·|#~"


@dataclass
class DemoRun:
    directory: Path
    output: str  # everything printed: the transcript, the list of files, the report and the report command
    typed: list[str]  # every text a person sent to Slack during the run (commands, messages, the modal's fields)
    clicks: list[tuple[str, str]]  # (action id, user) of every button or checkbox a person clicked


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def play(directory: Path, locale: str) -> DemoRun:
    """Runs the demo, recording what people typed and clicked at the driver, the only way people reach the app."""
    typed: list[str] = []
    clicks: list[tuple[str, str]] = []
    command, say, view_submission = SlackDriver.command, SlackDriver.say, SlackDriver.view_submission
    block_action = SlackDriver.block_action

    def typed_command(self: SlackDriver, name: str, text: str, **kw: Any) -> Any:
        typed.append(text)
        return command(self, name, text, **kw)

    def typed_say(self: SlackDriver, channel: str, user: str, text: str, **kw: Any) -> Any:
        typed.append(text)
        return say(self, channel, user, text, **kw)

    def typed_view(self: SlackDriver, callback_id: str, state_values: Any, **kw: Any) -> Any:
        typed.extend(_strings(state_values))
        return view_submission(self, callback_id, state_values, **kw)

    def clicked(self: SlackDriver, action_id: str, value: str, **kw: Any) -> Any:
        clicks.append((action_id, kw.get("user", "")))
        return block_action(self, action_id, value, **kw)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SlackDriver, "command", typed_command)
        patch.setattr(SlackDriver, "say", typed_say)
        patch.setattr(SlackDriver, "view_submission", typed_view)
        patch.setattr(SlackDriver, "block_action", clicked)
        assert run_demo(build_runtime, output_dir=str(directory), locale=locale, out=out) == 0
    return DemoRun(directory, out.getvalue(), typed, clicks)


@pytest.fixture(scope="module")
def korean(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return play(tmp_path_factory.mktemp("demo-ko"), "ko")


@pytest.fixture(scope="module")
def english(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """An English run into a directory an earlier run wrote to, beside the user's own files."""
    directory = tmp_path_factory.mktemp("demo-en")
    (directory / f"{ID}-postmortem.en.md").write_text("stale report of an earlier run\n", encoding="utf-8")
    (directory / "evidence_errors_20251021_120000.json").write_text("{}", encoding="utf-8")  # listed below
    (directory / "demo.json").write_text(json.dumps({"report": "x", "files": [
        str(directory / "evidence_errors_20251021_120000.json")]}), encoding="utf-8")
    (directory / "notes.md").write_text("mine\n", encoding="utf-8")
    (directory / "evidence_mine.json").write_text("{}", encoding="utf-8")
    return play(directory, "en")


def test_demo_replays_the_guides_scenario_and_writes_the_report(korean: DemoRun) -> None:
    tmp_path = korean.directory
    transcript = korean.output
    report = (tmp_path / "INCIDENT-20251022-001-postmortem.md").read_text(encoding="utf-8")
    english = (tmp_path / "INCIDENT-20251022-001-postmortem.en.md").read_text(encoding="utf-8")

    # Durations come from milestones set by the alert, commands and buttons, not typed text. Detected is when the
    # alert fired (14:15), a minute after the impact began (14:14), where the guide's manual path took 20 minutes.
    assert "- **감지 시간**: 14:15 UTC (1분 후)" in report
    assert "- **복구 시간**: 14:38 UTC (3분)" in report
    assert "- **발생 일시**: 2025-10-22 14:14 UTC" in report
    assert "**Detected at**: 14:15 UTC (1 min later)" in english
    assert "**Recovered at**: 14:38 UTC (3 min)" in english
    # Every section is filled: nothing is left "to be filled".
    assert "_(작성 필요)_" not in report
    assert "_(to be filled in)_" not in english
    for heading in ("## 기본 정보", "## 임팩트", "## 근본 원인", "## 타임라인", "## 근본 원인 분석 (5 Whys)",
                    "## 개선사항", "## 배운 점", "## 재발 방지책", "## 결론", "## 다음 배포에 적용할 사항"):
        assert heading in report
    # The scenario's timeline: the pinned alert from before the incident, the replies, the measured impact.
    assert "| 14:15 | 📌 [ALERT] ion-api p95" in report
    assert "| Gitco |" in report and "| Lemun |" in report and "| Sena |" in report
    assert "_(증거에서 측정)_" in report
    # The transcript shows the announcement, the evidence, the reminders in compressed time and the upload.
    # The announcement carries the alert's policy and condition as its title.
    for expected in ("🚨 *[INCIDENT] ion-api p95 latency: p95 > 200ms for 1 min*", "긴급 증거", "근본 원인 분석 (RCA)",
                     "Post-Mortem 회의 10분 전", "INCIDENT-20251022-001-postmortem.md"):
        assert expected in transcript
    # Two captures, each with its three files: at the declaration (14:16) and again before the rollback (14:34).
    evidence = sorted(p.name for p in tmp_path.glob("evidence_*.json"))
    assert [name.split("_2025")[0] for name in evidence] == [
        "evidence_canary_config", "evidence_canary_config", "evidence_errors", "evidence_errors",
        "evidence_metrics", "evidence_metrics"]
    assert {name.rsplit("_", 1)[1] for name in evidence} == {"141600.json", "143400.json"}
    metrics = json.loads((tmp_path / evidence[4]).read_text(encoding="utf-8"))
    assert metrics  # the snapshot is real JSON with content


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_the_demo_writes_the_evidence_charts_and_each_report_embeds_one_beside_it(
        locale: str, korean: DemoRun, english: DemoRun) -> None:
    run, other = (korean, "en") if locale == "ko" else (english, "ko")
    summary = json.loads((run.directory / "demo.json").read_text(encoding="utf-8"))
    listed = {Path(path).name for path in summary["files"]}
    charts = {path.name for path in run.directory.glob("evidence_chart_*.png")}
    assert charts and charts <= listed  # written, and removed by the next run like the rest
    for name in (f"{ID}-postmortem.md", f"{ID}-postmortem.{other}.md"):
        report = (run.directory / name).read_text(encoding="utf-8")
        [picture] = re.findall(r"^!\[[^\]]+\]\((evidence_chart_\d{8}_\d{6}(?:\.[a-z]{2})?\.png)\)$", report, re.M)
        assert picture in charts, name  # the file the report references is there, beside it
        image = Image.open(run.directory / picture)
        assert image.format == "PNG" and image.width >= 1200


def test_english_demo_writes_the_english_report_as_the_default_and_korean_beside_it(english: DemoRun) -> None:
    directory = english.directory
    default = (directory / f"{ID}-postmortem.md").read_text(encoding="utf-8")
    other = (directory / f"{ID}-postmortem.ko.md").read_text(encoding="utf-8")
    assert "## Basic information" in default and "## 기본 정보" not in default
    assert "## 기본 정보" in other
    summary = json.loads((directory / "demo.json").read_text(encoding="utf-8"))
    assert Path(summary["report"]).name == f"{ID}-postmortem.md"
    assert {Path(path).name for path in summary["files"]} >= {f"{ID}-postmortem.md", f"{ID}-postmortem.ko.md"}


def test_a_new_run_removes_what_the_last_run_wrote_and_nothing_else(english: DemoRun) -> None:
    directory = english.directory
    assert not (directory / f"{ID}-postmortem.en.md").exists()  # stale: this run wrote no English .en.md
    assert not (directory / "evidence_errors_20251021_120000.json").exists()  # listed by the last demo.json
    assert (directory / "notes.md").read_text(encoding="utf-8") == "mine\n"
    assert (directory / "evidence_mine.json").exists()  # looks like evidence, but no run of the demo wrote it


def test_english_transcript_has_no_korean_outside_what_people_typed(english: DemoRun, korean: DemoRun) -> None:
    typed = "\n".join(english.typed)
    assert HANGUL.search(typed)  # the guide's scenario is Korean: the check below has something to tell apart
    frame_words = []
    for line in english.output.splitlines():
        # The Korean report's own upload caption is in Korean by request (`/postmortem report ko`).
        line = line.split(f"{ID}-postmortem.ko.md: ", 1)[0]
        for word in line.split():
            if HANGUL.search(word) and word.strip(QUOTING) not in typed:
                frame_words.append((word, line))
    assert frame_words == []
    # The Korean run keeps its Korean frame.
    assert "(나에게만 보임)" in korean.output and "(스레드)" in korean.output


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_transcript_has_no_empty_caption_or_section_and_names_what_was_reacted_to(
        locale: str, korean: DemoRun, english: DemoRun) -> None:
    run = korean if locale == "ko" else english
    lines = (run.directory / "transcript.txt").read_text(encoding="utf-8").splitlines()
    assert lines and run.output.startswith("\n".join(lines))
    assert [line for line in lines if line.rstrip().endswith(":") and line.lstrip().startswith("📎")] == []
    assert [line for line in lines if line.endswith(": ")] == []
    headings = [i for i, line in enumerate(lines) if line.startswith("── ")]
    assert len(headings) > 10
    for start, end in zip(headings, [*headings[1:], len(lines)], strict=True):
        assert any(line.strip() for line in lines[start + 1:end]), f"empty section: {lines[start]}"
    # The one 📌 in the story: Sena puts her deploy announcement, from before the incident, on its timeline.
    pins = [line for line in lines if line.startswith("👤") and ":pushpin:" in line]
    assert len(pins) == 1 and "Sena" in pins[0] and "Phase 4 canary 배포 시작합니다" in pins[0], pins
    # Every click names its button and the message it is on.
    clicks = [line for line in lines if line.startswith("👤") and re.search(r"\[[^\]]+\].*“.+”", line)]
    assert len(clicks) == 3, clicks


def test_the_report_command_the_demo_prints_renders_the_report_from_its_database(english: DemoRun,
                                                                                   tmp_path: Path) -> None:
    printed = english.output.rstrip("\n").splitlines()[-1].strip()
    words = shlex.split(printed)
    settings = dict(word.split("=", 1) for word in words if re.fullmatch(r"[A-Z_]+=.*", word))
    argv = [word for word in words if not re.fullmatch(r"[A-Z_]+=.*", word)]
    assert set(settings) == {"DATABASE_URL"} and argv[1:3] == ["report", ID], printed
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    result = subprocess.run(argv, env={**env, **settings}, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# [{ID}] Post-Mortem Report")
    assert "## Basic information" in result.stdout and "| 14:15 | 📌 [ALERT] ion-api p95" in result.stdout
    assert list(tmp_path.iterdir()) == []  # read from the demo's database; nothing created where it ran


def _at(hhmm: str) -> datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(2025, 10, 22, hours, minutes, tzinfo=UTC)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _database(run: DemoRun) -> Session:
    return Session(create_engine(f"sqlite:///{run.directory / 'demo.db'}"))


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_the_incident_is_declared_from_the_alert_and_detected_a_minute_after_the_impact(
        locale: str, korean: DemoRun, english: DemoRun) -> None:
    run = korean if locale == "ko" else english
    with _database(run) as session:
        incident = session.scalars(select(Incident)).one()
        alert = session.scalars(select(Alert)).one()
        first_capture = min(session.scalars(select(Evidence.captured_at).where(Evidence.kind == "errors")))
    # Cloud Monitoring's notification reached the webhook at 14:15; Lemun's click on Declare opened the incident.
    assert (alert.state, alert.incident_id, alert.declared_by) == ("open", incident.id, "U0LEMUN")
    assert (_utc(alert.received_at), _utc(alert.declared_at)) == (_at("14:15"), _at("14:16"))
    assert (incident.opened_by, _utc(incident.opened_at)) == ("U0LEMUN", _at("14:16"))
    assert _utc(first_capture) == _at("14:16")  # the evidence came with the declaration
    # Detected is the alert's start, not the click; the impact began a minute before, as the logs show.
    assert _utc(incident.detected_at) == _utc(alert.started_at) == _at("14:15")
    assert _utc(incident.started_at) == _at("14:14")
    # 14:14 is what the evidence measured: the canary's 5xx began then, 14 minutes after the deploy.
    surged = {
        "ko": ("*에러 급증 시작:* 14:14 UTC (canary 5xx 기준)",
               "*에러 시작:* *배포 14분 후* — 14:14 UTC부터 canary 5xx 증가"),
        "en": ("*Errors surged from* 14:14 UTC (canary 5xx)",
               "*Errors began:* *14 min after the deploy* — canary 5xx rose from 14:14 UTC"),
    }[locale]
    assert surged[0] in run.output and surged[1] in run.output
    assert not [text for text in run.typed if text.startswith("open")]  # no `/incident open`: the click did it
    assert ("alerts.declare", "U0LEMUN") in run.clicks
    declared = "🚨 <@U0LEMUN> 님이 `INCIDENT-20251022-001` 사건으로 등록했습니다." if locale == "ko" else \
        "🚨 Declared as `INCIDENT-20251022-001` by <@U0LEMUN>."
    assert declared in run.output  # the alert message's edit, in the run's language
    assert "POST /alerts/cloud-monitoring?auth_token=…" in run.output and "↳ HTTP 200" in run.output
    resolved = "감지까지 1분 · 복구 3분" if locale == "ko" else "Detected after 1 min · recovered in 3 min"
    assert resolved in run.output


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_the_rollback_goes_through_the_button_and_its_check_includes_memory(
        locale: str, korean: DemoRun, english: DemoRun) -> None:
    run = korean if locale == "ko" else english
    with _database(run) as session:
        incident = session.scalars(select(Incident)).one()
        rollback = session.scalars(select(Rollback)).one()
        [check] = session.scalars(select(Evidence).where(Evidence.kind == "verify")).all()
    # Sena saw 90 % on the stable revision and 10 % on the canary, and confirmed with the button at 14:35.
    assert [(s["revision"], s["percent"]) for s in rollback.traffic_before] == [
        ("ion-api-00041-kav", 90), ("ion-api-00042-xyz", 10)]
    assert (rollback.status, rollback.target_revision, rollback.confirmed_by) == ("done", "ion-api-00041-kav",
                                                                                 "U0SENA")
    assert ("rollback_confirm", "U0SENA") in run.clicks
    assert _utc(rollback.confirmed_at) == _utc(incident.rollback_at) == _at("14:35")
    # The check ran by itself VERIFY_AFTER_ROLLBACK (3 min) later, memory among its checks, and passed.
    assert _utc(rollback.verify_due_at) == _utc(rollback.verified_at) == _utc(check.captured_at) == _at("14:38")
    assert check.ok and check.payload is not None
    results = {c["name"]: c["passed"] for c in check.payload["result"]["checks"]}
    assert results == {"traffic": True, "canary_traffic": True, "error_rate": True, "p95": True, "memory": True,
                       "health": True}
    assert set(check.payload["memory_p99"]) == {"ion-api-00041-kav"}
    # Gitco recorded the recovery with the check's button; nobody typed a milestone, a verify or a reaction for it.
    assert ("evidence.confirm_recovered", "U0GITCO") in run.clicks
    assert _utc(incident.recovered_at) == _at("14:38")
    assert not [text for text in run.typed if text.startswith(("milestone rollback", "milestone recovered", "verify"))]
    milestone_reactions = [line for line in run.output.splitlines() if line.startswith("👤")
                           and re.search(r":(rotating_light|rewind|white_check_mark):", line)]
    assert milestone_reactions == []


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_the_four_action_items_become_four_github_issues_and_one_is_closed_from_github(
        locale: str, korean: DemoRun, english: DemoRun) -> None:
    run = korean if locale == "ko" else english
    with _database(run) as session:
        items = session.scalars(select(ActionItem).order_by(ActionItem.id)).all()
        issues = {row.action_item_id: row for row in session.scalars(select(GithubIssue))}
    # One issue per item, assigned through the logins Sena mapped; Lemun has none, so hers is unassigned.
    assert [issues[i.id].number for i in items] == [1, 2, 3, 4]
    assert [issues[i.id].assignee for i in items] == ["gitco-dev", "gitco-dev", "lubit-ops", None]
    # Gitco closed #1 on GitHub two days after it was due: the webhook made the item done, and nothing else changed.
    assert [(i.priority, i.status) for i in items] == [("P0", "done"), ("P1", "open"), ("P1", "open"), ("P2", "open")]
    assert [issues[i.id].state for i in items] == ["closed", "open", "open", "open"]
    assert _utc(items[0].done_at) == datetime(2025, 10, 25, 11, 0, tzinfo=UTC)
    # The transcript shows each issue made on GitHub, each item's message getting its link, and the close.
    made = [line for line in run.output.splitlines() if line.startswith("🐙 GitHub ion-team/ion-api")]
    assert len(made) == 4 and all("incident, P" in line for line in made), made
    link = "🐙 GitHub 이슈" if locale == "ko" else "🐙 GitHub issue"
    for number in (1, 2, 3, 4):
        assert f"{link} <https://github.com/ion-team/ion-api/issues/{number}|#{number}>" in run.output
    assert "POST /github/webhook (issues closed #1" in run.output
    done = "상태: *✅ 완료* (2025-10-25 11:00 UTC)" if locale == "ko" else "Status: *✅ Done* (2025-10-25 11:00 UTC)"
    assert done in run.output
    # The reports, written at the meeting, link every issue.
    for name in (f"{ID}-postmortem.md", f"{ID}-postmortem.{'en' if locale == 'ko' else 'ko'}.md"):
        report = (run.directory / name).read_text(encoding="utf-8")
        for number in (1, 2, 3, 4):
            assert f"[#{number}](https://github.com/ion-team/ion-api/issues/{number})" in report, name
