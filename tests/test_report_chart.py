"""The report carries the latest evidence chart: embedded as `![…](evidence_chart_….png)` in the impact section and
uploaded beside the Markdown in the thread, end to end through the Slack and GCP sandboxes. A picture that cannot
be drawn or uploaded never costs the report; no chart data means no image line. The CLI writes the PNG beside
its file."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

import app
from bot.clock import ManualClock
from bot.evidence import chart
from bot.report import render_report
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Incident, Report
from tests.helpers import evidence_bot, open_incident, shared_gcp_sandbox
from tests.test_catalogue import shape

CHANNEL = "C0INCIDENTS"
OPEN_TEXT = "추천 API p95 급증 sev:high service:ion-api"
ALT_KO = "에러율과 P95 응답 시간, 리비전별 분 단위 (증거 차트)"
ALT_EN = "Error rate and P95 latency per minute, per revision (evidence chart)"
IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$", re.MULTILINE)

module_gcp_fixture, gcp_fixture = shared_gcp_sandbox(CanaryScenario)


@pytest.fixture
def clock(gcp: GcpSandbox) -> ManualClock:
    return ManualClock(gcp.scenario.window_end)


@pytest.fixture
def ebot(gcp: GcpSandbox, clock: ManualClock, slack: SlackSandbox, database_url: str) -> Iterator[LocalBot]:
    with evidence_bot(gcp, clock, slack, database_url) as local:
        yield local


def stamp(at: datetime) -> str:
    return f"{at:%Y%m%d_%H%M%S}"  # INCIDENT_TIMEZONE is UTC here


def thread_files(bot: LocalBot, thread_ts: str) -> list[str]:
    """The file names the thread shows, message by message, oldest first."""
    return [f["name"] for m in bot.slack.thread(CHANNEL, thread_ts) for f in m.get("files") or []]


def uploaded(bot: LocalBot, filename: str) -> list[dict[str, Any]]:
    return [f for f in bot.slack.files() if f["filename"] == filename and f["completed"]]


def document(bot: LocalBot, filename: str) -> str:
    [upload] = uploaded(bot, filename)
    return bytes(upload["content"]).decode("utf-8")


def images(text: str) -> list[tuple[str, str]]:
    return IMAGE.findall(text)


def section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def reports(bot: LocalBot) -> list[Report]:
    with bot.ctx.db.session() as session:
        rows = session.scalars(select(Report).order_by(Report.id)).all()
        session.expunge_all()
        return list(rows)


def told(bot: LocalBot) -> list[str]:
    return [r.get("text", "") for r in bot.slack.responses()]


def incident_id(bot: LocalBot) -> int:
    with bot.ctx.db.read() as session:
        return session.scalars(select(Incident.id)).one()


def report_command(bot: LocalBot, text: str = "report") -> None:
    assert bot.driver.command("/postmortem", text).status_code == 200
    bot.settle()


def test_the_report_embeds_the_latest_chart_and_the_png_arrives_beside_it(ebot: LocalBot, clock: ManualClock) -> None:
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)  # the capture at open draws the first chart
    clock.advance(timedelta(minutes=1))
    ebot.driver.command("/incident", "evidence")
    ebot.settle()
    latest = f"evidence_chart_{stamp(clock.now())}.png"
    assert len(uploaded(ebot, latest)) == 1  # the capture's own

    report_command(ebot)
    korean = document(ebot, f"{public_id}-postmortem.md")
    # Once, in the impact section, where the guide's report keeps the error rate and response time.
    assert images(korean) == [(ALT_KO, latest)]
    assert f"![{ALT_KO}]({latest})" in section(korean, "## 임팩트")
    # In the thread right after the document, under the name the document uses, as a PNG Slack can preview.
    assert thread_files(ebot, thread_ts)[-2:] == [f"{public_id}-postmortem.md", latest]
    _capture, beside = uploaded(ebot, latest)
    assert beside["thread_ts"] == thread_ts and beside["channel"] == CHANNEL
    picture = Image.open(io.BytesIO(bytes(beside["content"])))
    assert picture.format == "PNG" and picture.width >= 1200
    [posted] = reports(ebot)
    assert posted.posted_at is not None and posted.error is None and told(ebot) == []

    # The other language: its own words around the picture, and a picture of its own (`….en.png`, like the .md).
    report_command(ebot, "report en")
    english = document(ebot, f"{public_id}-postmortem.en.md")
    latest_en = latest.removesuffix(".png") + ".en.png"
    assert images(english) == [(ALT_EN, latest_en)]
    assert f"![{ALT_EN}]({latest_en})" in section(english, "## Impact")
    assert thread_files(ebot, thread_ts)[-2:] == [f"{public_id}-postmortem.en.md", latest_en]
    [in_english] = uploaded(ebot, latest_en)
    assert Image.open(io.BytesIO(bytes(in_english["content"]))).width >= 1200
    assert bytes(in_english["content"]) != bytes(beside["content"])  # its labels are English
    assert len(uploaded(ebot, latest)) == 2  # the Korean one was not posted again

    # Both templates print the picture in the same place of the same structure.
    ko, en = (render_report(ebot.ctx, incident_id(ebot), locale, chart_file="c.png") for locale in ("ko", "en"))
    assert shape(ko) == shape(en) and len(images(ko)) == len(images(en)) == 1


def test_a_chart_that_cannot_be_drawn_leaves_the_report_without_its_picture(
        ebot: LocalBot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)
    assert len([f for f in ebot.slack.files() if f["filename"].endswith(".png")]) == 1  # there is a chart to draw

    def broken(*_args: Any, **_kw: Any) -> bytes:
        raise RuntimeError("the font cache is gone")

    monkeypatch.setattr(chart, "render_png", broken)
    with caplog.at_level(logging.ERROR, logger="bot.reports"):
        report_command(ebot)
    korean = document(ebot, f"{public_id}-postmortem.md")
    assert images(korean) == [] and "](evidence_chart_" not in korean
    assert "## 임팩트" in korean and "## 근본 원인" in korean
    assert thread_files(ebot, thread_ts)[-1] == f"{public_id}-postmortem.md"  # nothing after it
    assert len([f for f in ebot.slack.files() if f["filename"].endswith(".png")]) == 1
    [posted] = reports(ebot)
    assert posted.posted_at is not None and posted.error is None and told(ebot) == []
    assert any("could not be drawn" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_chart_upload_that_fails_loses_no_report_and_a_rerun_posts_each_once(ebot: LocalBot) -> None:
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)
    [capture] = [f for f in ebot.slack.files() if f["filename"].endswith(".png")]
    name = capture["filename"]
    # A failed upload whose outcome is unknown counts as landed when the thread shows a file of its name from the
    # last 2 s (handlers/messenger.py); the capture's chart has this name, and a report comes long after it.
    time.sleep(2.5)
    # The bytes of the next upload (the document's) go through; those of the one after it (the picture's) fail.
    ebot.slack.slow_once("upload", 0.0)
    ebot.slack.fail("upload", status=500, times=1)  # slack_sdk does not retry the upload itself
    report_command(ebot)
    markdown = f"{public_id}-postmortem.md"
    assert images(document(ebot, markdown)) == [(ALT_KO, name)]
    assert thread_files(ebot, thread_ts)[-1] == markdown and len(uploaded(ebot, name)) == 1
    [posted] = reports(ebot)
    assert posted.posted_at is not None and posted.file_id  # the report is out, and on record as such
    assert posted.error is not None and name in posted.error  # with what did not go
    assert told(ebot) == []

    report_command(ebot)  # a rerun is a new report: the document and its picture, each once
    assert thread_files(ebot, thread_ts)[-3:] == [markdown, markdown, name]
    assert len(uploaded(ebot, markdown)) == 2 and len(uploaded(ebot, name)) == 2
    assert [(r.posted_at is not None, r.error is None) for r in reports(ebot)] == [(True, False), (True, True)]


@pytest.mark.parametrize("clock", [ManualClock(datetime(2024, 5, 14, 20, 0, tzinfo=UTC))])
def test_no_chart_data_gives_no_image_line(ebot: LocalBot) -> None:
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)  # long after the scenario's traffic: nothing to draw
    assert len([f for f in ebot.slack.files() if f["filename"].endswith(".json")]) == 3  # evidence was captured
    report_command(ebot)
    report_command(ebot, "report en")
    for markdown in (f"{public_id}-postmortem.md", f"{public_id}-postmortem.en.md"):
        text = document(ebot, markdown)
        assert images(text) == [] and "evidence_chart_" not in text
    assert [f for f in ebot.slack.files() if f["filename"].endswith(".png")] == []
    assert thread_files(ebot, thread_ts)[-2:] == [f"{public_id}-postmortem.md", f"{public_id}-postmortem.en.md"]


def test_the_cli_writes_the_chart_beside_the_markdown_file(ebot: LocalBot, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    public_id, _ = open_incident(ebot, OPEN_TEXT)
    [capture] = [f for f in ebot.slack.files() if f["filename"].endswith(".png")]
    name = str(capture["filename"])
    monkeypatch.setenv("DATABASE_URL", ebot.ctx.settings.database_url)
    monkeypatch.setenv("INCIDENT_TIMEZONE", "UTC")
    monkeypatch.delenv("INCIDENT_LOCALE", raising=False)

    out = tmp_path / "reports" / "pm.md"
    out.parent.mkdir()
    assert app.main(["report", public_id, "-o", str(out)]) == 0
    assert images(out.read_text(encoding="utf-8")) == [(ALT_KO, name)]
    written = Image.open(out.parent / name)
    assert written.format == "PNG" and written.width >= 1200

    assert app.main(["report", public_id, "--locale", "en", "-o", str(out.parent / "pm.en.md")]) == 0
    name_en = name.removesuffix(".png") + ".en.png"
    assert images((out.parent / "pm.en.md").read_text(encoding="utf-8")) == [(ALT_EN, name_en)]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["pm.md", "pm.en.md", name, name_en])

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert app.main(["report", public_id]) == 0  # to stdout: nothing beside it, so no image line
    assert images(capsys.readouterr().out) == [] and list(elsewhere.iterdir()) == []
