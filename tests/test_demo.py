"""The README's demo command end to end: the guide's scenario fills every section of the report, computed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sandbox.demo import run_demo


@pytest.mark.slow
def test_demo_replays_the_guides_scenario_and_writes_the_report(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(output_dir=str(tmp_path), locale="ko", out=out) == 0
    transcript = out.getvalue()
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
