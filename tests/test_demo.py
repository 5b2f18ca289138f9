"""The README's demo command end to end: the guide's scenario fills every section of the report, computed; the
transcript reads in the configured language with nothing left blank; the demo's database stays readable."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app import build_runtime
from sandbox.demo import run_demo
from sandbox.driver import SlackDriver

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
    """Runs the demo, recording what people typed at the driver, the only way user text gets into the app."""
    typed: list[str] = []
    command, say, view_submission = SlackDriver.command, SlackDriver.say, SlackDriver.view_submission

    def typed_command(self: SlackDriver, name: str, text: str, **kw: Any) -> Any:
        typed.append(text)
        return command(self, name, text, **kw)

    def typed_say(self: SlackDriver, channel: str, user: str, text: str, **kw: Any) -> Any:
        typed.append(text)
        return say(self, channel, user, text, **kw)

    def typed_view(self: SlackDriver, callback_id: str, state_values: Any, **kw: Any) -> Any:
        typed.extend(_strings(state_values))
        return view_submission(self, callback_id, state_values, **kw)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SlackDriver, "command", typed_command)
        patch.setattr(SlackDriver, "say", typed_say)
        patch.setattr(SlackDriver, "view_submission", typed_view)
        assert run_demo(build_runtime, output_dir=str(directory), locale=locale, out=out) == 0
    return DemoRun(directory, out.getvalue(), typed)


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

    # Durations come from milestones set by commands and reactions, not typed text.
    assert "- **감지 시간**: 14:35 UTC (20분 후)" in report
    assert "- **복구 시간**: 14:38 UTC (3분)" in report
    assert "- **발생 일시**: 2025-10-22 14:15 UTC" in report
    assert "**Detected at**: 14:35 UTC (20 min later)" in english
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
    for expected in ("🚨 *[INCIDENT] Phase 4 Canary 배포 실패", "긴급 증거", "근본 원인 분석 (RCA)",
                     "Post-Mortem 회의 10분 전", "INCIDENT-20251022-001-postmortem.md"):
        assert expected in transcript
    evidence = sorted(p.name for p in tmp_path.glob("evidence_*.json"))
    assert [name.split("_2025")[0] for name in evidence] == [
        "evidence_canary_config", "evidence_errors", "evidence_metrics"]
    metrics = json.loads((tmp_path / evidence[2]).read_text(encoding="utf-8"))
    assert metrics  # the snapshot is real JSON with content


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
    pins = [line for line in lines if line.startswith("👤") and ":pushpin:" in line]
    assert len(pins) == 1 and "Monitoring" in pins[0] and "[ALERT] ion-api p95" in pins[0], pins


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
