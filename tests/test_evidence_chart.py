"""The evidence chart: its data preparation as pure functions, the PNG read back pixel by pixel, and end to end
through the Slack and GCP sandboxes (signed requests into the real app, real Google clients), where the picture
arrives in the thread beside the JSON files. Expected numbers come from the raw log entries, in plain Python."""

from __future__ import annotations

import io
import json
import logging
import math
import random
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from sqlalchemy import select

from bot.clock import ManualClock
from bot.evidence import chart
from bot.evidence.analysis import (
    CompactLatencyHistogram,
    RequestLogAggregator,
    RevisionLabel,
    label_revisions,
    per_minute_json,
)
from bot.evidence.gcp import LiveVerification, request_log_filter, rfc3339, verify_rollback_live
from bot.evidence.service import GcpClients
from bot.settings import load_settings
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Evidence, Incident
from tests.helpers import evidence_bot, gcp_env, open_incident, shared_gcp_sandbox

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "C0INCIDENTS"
ENTRIES = "/v2/entries:list"
OPEN_TEXT = "추천 API p95 급증 sev:high service:ion-api"
T0 = datetime(2025, 10, 22, 5, 0, tzinfo=UTC)  # 14:00 in Seoul
CANARY, STABLE = "ion-api-00042-xyz", "ion-api-00041-abc"
LABELS = {
    CANARY: RevisionLabel(CANARY, "canary", "canary", 10, True, True),
    STABLE: RevisionLabel(STABLE, "stable", "stable", 90, True, False),
}


def minute(n: int, second: int = 0) -> datetime:
    return T0 + timedelta(minutes=n, seconds=second)


def aggregate(rows: list[tuple[str, int, str, datetime]], start: datetime = T0,
              end: datetime = T0 + timedelta(minutes=5)) -> RequestLogAggregator:
    """Request-log rows (revision, status, latency as Cloud Logging writes it, time) folded as the capture does."""
    aggregator = RequestLogAggregator(start, end)
    for revision, status, latency, at in rows:
        aggregator.add(revision, status, latency, at, "https://ion-api.run.app/api/v2/chat")
    return aggregator


def data_for(rows: list[tuple[str, int, str, datetime]], **kw: Any) -> chart.ChartData:
    summary = aggregate(rows).summary()
    return chart.chart_data(summary, LABELS, window_start=T0, window_end=T0 + timedelta(minutes=5),
                            milestones=kw.pop("milestones", {}), error_rate_max=0.005, p95_max_ms=200.0, **kw)


# -- data preparation -------------------------------------------------------------------------------------------


def test_series_per_revision_from_the_aggregator_that_feeds_the_summary() -> None:
    rows = [
        # minute 0: canary 4 requests, one 503; stable 2, no error
        (CANARY, 200, "0.1s", minute(0, 1)), (CANARY, 503, "0.2s", minute(0, 20)),
        (CANARY, 200, "0.3s", minute(0, 40)), (CANARY, 200, "0.4s", minute(0, 59)),
        (STABLE, 200, "0.05s", minute(0, 5)), (STABLE, 200, "0.15s", minute(0, 6)),
        # minute 1: canary 2, both 500
        (CANARY, 500, "1.2s", minute(1, 0)), (CANARY, 500, "0.8s", minute(1, 30)),
        # minute 2: nobody; minute 3: stable one 200; minute 4: canary one 200
        (STABLE, 200, "0.1s", minute(3, 10)), (CANARY, 200, "0.25s", minute(4, 10)),
        # outside the window: ignored
        (CANARY, 500, "9s", minute(5, 0)), (CANARY, 500, "9s", minute(-1, 0)),
    ]
    data = data_for(rows)
    assert [s.revision for s in data.series] == [STABLE, CANARY]  # stable first, then the canary
    stable, canary = data.series
    assert canary.minutes == tuple(minute(i) for i in range(5))
    assert (canary.role, canary.tag, canary.traffic_percent) == ("canary", "canary", 10)
    assert canary.error_rate[:2] == (0.25, 1.0) and canary.error_rate[4] == 0.0
    assert math.isnan(canary.error_rate[2]) and math.isnan(canary.error_rate[3])  # gaps, not 0 %
    # P95 is the nearest-rank value (4 of 4, 2 of 2), within the per-minute histogram's error.
    for got, want in ((canary.p95_ms[0], 400.0), (canary.p95_ms[1], 1200.0), (canary.p95_ms[4], 250.0)):
        assert abs(got - want) <= want * CompactLatencyHistogram.RELATIVE_ERROR
    assert math.isnan(canary.p95_ms[2]) and math.isnan(canary.p95_ms[3])
    assert stable.error_rate[0] == 0.0 and math.isnan(stable.error_rate[1]) and math.isnan(stable.error_rate[2])
    # The summary's per-revision totals and the chart's minutes come from the same pass (Cloud Logging's filter
    # keeps the stream inside the window; the stray rows above only show the minutes ignore what is outside).
    summary = aggregate(rows[:-2]).summary()
    for revision in (CANARY, STABLE):
        minutes = summary.per_minute_by_revision[revision]
        assert sum(m.requests for m in minutes) == summary.revisions[revision]["request_count"]
        assert sum(m.server_errors for m in minutes) == summary.revisions[revision]["error_count"]


def test_a_gap_is_null_in_the_stored_minutes_never_zero() -> None:
    summary = aggregate([(CANARY, 200, "0.1s", minute(0)), (CANARY, 200, "0.1s", minute(2))]).summary()
    stored = per_minute_json(summary.per_minute_by_revision[CANARY])
    assert [m["requests"] for m in stored] == [1, 0, 1, 0, 0]
    assert [m["error_rate"] for m in stored] == [0.0, None, 0.0, None, None]
    assert stored[1]["p95_ms"] is None


def test_a_single_revision_gives_one_line_and_no_requests_give_no_chart() -> None:
    only = data_for([(STABLE, 200, "0.1s", minute(1))])
    assert [s.revision for s in only.series] == [STABLE] and only.missing is None
    # A revision whose requests all fall outside the window draws nothing.
    nothing = data_for([(CANARY, 200, "0.1s", minute(7))])
    assert nothing.series == () and nothing.missing == "no_requests"
    unread = chart.chart_data(None, LABELS, window_start=T0, window_end=minute(5), milestones={},
                              error_rate_max=0.005, p95_max_ms=200.0)
    assert unread.missing == "no_request_logs"
    with pytest.raises(ValueError, match="no_requests"):
        chart.render_png(nothing, labels(nothing), UTC)


def test_moments_inside_the_window_in_time_order_with_the_alert_start() -> None:
    milestones = {"deployed": minute(-10), "detected": minute(3), "rollback": minute(4, 30), "started": minute(3),
                  "recovered": None, "resolved": minute(2)}
    moments = chart.moments_in_window(milestones, T0, minute(5), alert_started_at=minute(2, 30))
    # Before the window (deployed), unset (recovered) and not a chart moment (resolved) are left out; a tie keeps
    # the guide's order (started before detected).
    assert [(m.name, m.at) for m in moments] == [("alert", minute(2, 30)), ("started", minute(3)),
                                                 ("detected", minute(3)), ("rollback", minute(4, 30))]
    assert chart.moments_in_window(milestones, T0, minute(5)) == [m for m in moments if m.name != "alert"]


def test_the_verification_chart_starts_before_the_rollback_within_its_bounds() -> None:
    rollback, window = minute(35), timedelta(minutes=10)
    now = rollback + timedelta(minutes=13)  # verified 10 minutes after the rollback was done at 14:38

    def start(rollback_at: datetime | None = rollback, evidence_start: datetime = T0, at: datetime = now,
              verify_window: timedelta = window) -> datetime:
        return chart.verify_chart_start(judged_start=at - verify_window, now=at, rollback_at=rollback_at,
                                        evidence_start=evidence_start, verify_window=verify_window)

    assert start() == T0  # from the deploy: the spike, the rollback and the drop in one picture
    assert start(evidence_start=minute(30)) == rollback - window  # a later capture still shows 10 minutes before
    assert start(evidence_start=T0 - timedelta(hours=3)) == rollback - chart.VERIFY_CHART_LOOKBACK  # bounded
    long_window = timedelta(hours=2)
    assert start(evidence_start=T0 - timedelta(hours=5), at=rollback + long_window,
                 verify_window=long_window) == rollback - long_window  # VERIFY_WINDOW longer than the bound
    # Without a rollback, with one long ago or not yet happened, the chart keeps the judged window.
    assert start(rollback_at=None) == now - window
    assert start(at=rollback + chart.VERIFY_CHART_AFTER_ROLLBACK + timedelta(minutes=1)) == (
        rollback + chart.VERIFY_CHART_AFTER_ROLLBACK + timedelta(minutes=1) - window)
    assert start(at=rollback - timedelta(minutes=1)) == rollback - timedelta(minutes=1) - window
    # A rollback a minute ago, evidence captured just now: still VERIFY_WINDOW before the rollback.
    assert start(rollback_at=now - timedelta(minutes=1), evidence_start=now) == now - timedelta(minutes=11)


def rollback_story() -> chart.ChartData:
    """Deployed at 0, canary failing half its requests at 900 ms until the rollback at 4; verified at 8 over the
    4 minutes after the rollback; the chart reaches back to the deploy."""
    rollback, now, window = minute(4), minute(8), timedelta(minutes=4)
    rows = []
    for m in range(8):
        rows += [(STABLE, 200, "0.08s", minute(m, 10)), (STABLE, 200, "0.12s", minute(m, 40))]
        if m < 4:
            rows += [(CANARY, 503, "0.9s", minute(m, 20)), (CANARY, 200, "0.9s", minute(m, 50))]
    start = chart.verify_chart_start(judged_start=now - window, now=now, rollback_at=rollback, evidence_start=T0,
                                     verify_window=window)
    summary = aggregate(rows, start, now).summary()
    return chart.chart_data(summary, LABELS, window_start=start, window_end=now,
                            milestones={"deployed": T0, "rollback": rollback, "recovered": now},
                            error_rate_max=0.005, p95_max_ms=200.0)


def test_the_verification_chart_data_holds_the_failing_canary_then_the_drop() -> None:
    data = rollback_story()
    assert (data.window_start, data.window_end) == (T0, minute(8))
    stable, canary = data.series
    assert canary.minutes[3] == minute(3) and canary.error_rate[3] == 0.5 > data.error_rate_max  # before
    assert abs(canary.p95_ms[3] - 900.0) <= 900.0 * CompactLatencyHistogram.RELATIVE_ERROR
    assert all(math.isnan(v) for v in canary.error_rate[4:])  # after: the canary serves nothing, a gap
    assert stable.error_rate[4:] == (0.0,) * 4 and all(v < data.p95_max_ms for v in stable.p95_ms[4:])
    assert [m.name for m in data.moments] == ["deployed", "rollback", "recovered"]


def test_the_stored_payload_draws_the_same_series_again() -> None:
    rows = [(CANARY, 503, "0.9s", minute(0)), (CANARY, 200, "0.3s", minute(0, 30)), (STABLE, 200, "0.1s", minute(2))]
    data = data_for(rows)
    summary = aggregate(rows).summary()
    stored = json.loads(json.dumps({
        "per_minute_by_revision": {r: per_minute_json(m) for r, m in summary.per_minute_by_revision.items()},
        "chart": chart.payload(data, "evidence_chart_20251022_140500.png"),
    }))
    again = chart.chart_data_from_payload(stored, {"detected": minute(1)})
    assert again is not None
    assert [(s.revision, s.role, s.tag, s.traffic_percent) for s in again.series] == [
        (s.revision, s.role, s.tag, s.traffic_percent) for s in data.series]
    for before, after in zip(data.series, again.series, strict=True):
        assert str(before.error_rate) == str(after.error_rate) and str(before.p95_ms) == str(after.p95_ms)
    assert [m.name for m in again.moments] == ["detected"]
    assert chart.chart_data_from_payload({"revisions": {}}, {}) is None


def test_the_minute_histogram_stays_within_its_error_of_the_exact_p95() -> None:
    rng = random.Random(7)
    for n in (1, 2, 19, 20, 500):
        values = [rng.lognormvariate(5.5, 0.8) for _ in range(n)]
        histogram = CompactLatencyHistogram()
        for v in values:
            histogram.add(v)
        exact = sorted(values)[max(1, math.ceil(0.95 * n)) - 1]
        got = histogram.quantile(0.95)
        assert got is not None and abs(got - exact) <= exact * CompactLatencyHistogram.RELATIVE_ERROR, (n, got, exact)


# -- the picture ------------------------------------------------------------------------------------------------


def labels(data: chart.ChartData, korean: bool = True) -> chart.ChartLabels:
    if korean:
        return chart.ChartLabels(
            title="INCIDENT-20251022-001 · ion-api: 리비전별 분당 에러율과 P95", error_rate_title="분당 5xx 에러율",
            p95_title="분당 P95 응답 시간 (ms)", time_axis="시각 (KST)", error_rate_threshold="기준 0.5%",
            p95_threshold="기준 200 ms", footnote="선이 끊긴 곳은 요청이 없던 분입니다.",
            revisions={s.revision: f"{s.tag} · {s.revision} · 트래픽 {s.traffic_percent}%" for s in data.series},
            moments={"deployed": "배포 14:00", "detected": "감지 14:15", "rollback": "롤백 결정 14:35",
                     "recovered": "복구(롤백 완료) 14:38", "alert": "알림 시작 14:14"})
    return chart.ChartLabels("INCIDENT · ion-api", "5xx error rate", "P95 (ms)", "Time (UTC)", "threshold 0.5%",
                             "threshold 200 ms", "gaps", {}, {})


def sixty_minutes() -> chart.ChartData:
    """A 60-minute window of the sandbox's failing canary, with its moments, and a quiet stretch for a gap."""
    sc = CanaryScenario(deployed_at=T0, duration=timedelta(minutes=50), pre_deploy=timedelta(minutes=10),
                        request_count=12_000, error_count=0)
    aggregator = RequestLogAggregator(sc.window_start, sc.window_end)
    for entry in sc.entries():
        at = datetime.fromisoformat(entry["timestamp"])
        if "httpRequest" in entry and not (minute(20) <= at < minute(23)):  # 3 minutes without a request
            http = entry["httpRequest"]
            aggregator.add(entry["resource"]["labels"]["revision_name"], http["status"], http["latency"], at,
                           http["requestUrl"])
    summary = aggregator.summary()
    config = {"traffic_statuses": [{"revision": sc.stable_revision, "percent": 90, "tag": "stable"},
                                   {"revision": sc.canary_revision, "percent": 10, "tag": "canary"}]}
    milestones = {"deployed": T0, "detected": minute(15), "rollback": minute(35), "recovered": minute(38)}
    return chart.chart_data(summary, label_revisions(config, summary.revisions), window_start=sc.window_start,
                            window_end=sc.window_end, milestones=milestones, error_rate_max=0.005, p95_max_ms=200.0,
                            alert_started_at=minute(14))


@pytest.fixture(scope="module")
def sixty() -> chart.ChartData:
    return sixty_minutes()


def test_hangul_renders_with_the_shipped_font_and_a_missing_glyph_fails(sixty: chart.ChartData,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph … missing from font(s)" is a UserWarning
        png = chart.render_png(sixty, labels(sixty), ZoneInfo("Asia/Seoul"))
    assert png.startswith(b"\x89PNG")
    assert chart._families()[0] == "NanumGothic" and chart.hangul_font_path().is_file()
    # The check can fail: without the shipped font the same chart reports the missing Hangul glyphs.
    monkeypatch.setattr(chart, "_font_families", ["DejaVu Sans"])
    with pytest.warns(UserWarning, match="missing from font"):
        chart.render_png(sixty, labels(sixty), ZoneInfo("Asia/Seoul"))


def test_the_png_fits_slack_and_its_threshold_lines_are_where_the_axes_put_them(sixty: chart.ChartData) -> None:
    png = chart.render_png(sixty, labels(sixty), ZoneInfo("Asia/Seoul"))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= 1200 and len(png) < 300 * 1024, (image.size, len(png))

    with chart._draw_lock:
        figure = chart.draw_figure(sixty, labels(sixty), ZoneInfo("Asia/Seoul"))
        figure.canvas.draw()
    assert (image.width, image.height) == tuple(round(v) for v in figure.bbox.size)
    ax_rate, ax_p95 = figure.axes
    threshold_rgb = tuple(int(chart.THRESHOLD_COLOR[i:i + 2], 16) for i in (1, 3, 5))
    pixels = image.load()

    def share_of_threshold_colour(row: int, left: int, right: int) -> float:
        return sum(pixels[x, row] == threshold_rgb for x in range(left, right)) / (right - left)

    for ax, value in ((ax_rate, sixty.error_rate_max * 100), (ax_p95, sixty.p95_max_ms)):
        (x0, _), (x1, _) = ax.transAxes.transform([(0, 0), (1, 0)])
        _, y = ax.transData.transform((0, value))
        row = round(image.height - y)  # display coordinates count from the bottom, image rows from the top
        left, right = round(x0) + 2, round(x0 + (x1 - x0) * 0.8)  # left of the line's own label
        found = max(share_of_threshold_colour(r, left, right) for r in range(row - 1, row + 2))
        # A dashed line: most of the row is the line's colour, with the gaps between its dashes.
        assert 0.4 <= found <= 0.85, (row, found)
        for elsewhere in (row - 25, row - 60):
            assert share_of_threshold_colour(elsewhere, left, right) < 0.02


def test_the_figure_draws_gaps_as_breaks_and_marks_every_moment(sixty: chart.ChartData) -> None:
    with chart._draw_lock:
        figure = chart.draw_figure(sixty, labels(sixty), ZoneInfo("Asia/Seoul"))
    ax_rate, ax_p95 = figure.axes
    quiet = [i for i, m in enumerate(sixty.series[0].minutes) if minute(20) <= m < minute(23)]
    assert len(quiet) == 3
    for ax in (ax_rate, ax_p95):
        lines = [line for line in ax.get_lines() if line.get_label() in labels(sixty).revisions.values()]
        assert len(lines) == 2
        for line in lines:
            ydata = [float(v) for v in line.get_ydata()]
            assert all(math.isnan(ydata[i]) for i in quiet) and not math.isnan(ydata[quiet[0] - 1])
        # One vertical line per moment, at its time.
        verticals = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_color() == chart.MOMENT_COLOR)
        assert verticals == [m.at for m in sixty.moments]
    texts = {t.get_text().strip() for t in ax_rate.texts}
    assert {"배포 14:00", "알림 시작 14:14", "감지 14:15", "롤백 결정 14:35", "복구(롤백 완료) 14:38"} <= texts


def test_moment_labels_at_the_edges_stay_inside_the_axes_off_the_y_axis_numbers() -> None:
    data = rollback_story()  # `deployed` on the left edge, `recovered` on the right one
    with chart._draw_lock:
        figure = chart.draw_figure(data, labels(data), UTC)
        figure.canvas.draw()
    ax_rate = figure.axes[0]
    axes_box = ax_rate.get_window_extent()
    tick_right = max(t.get_window_extent().x1 for t in ax_rate.get_yticklabels() if t.get_text())
    placed = {t.get_text().strip(): t.get_window_extent() for t in ax_rate.texts}
    deployed, recovered = placed["배포 14:00"], placed["복구(롤백 완료) 14:38"]
    assert deployed.x0 >= axes_box.x0 - 0.5 and axes_box.x0 > tick_right, (deployed, axes_box)  # off the numbers
    assert recovered.x1 <= axes_box.x1 + 0.5, (recovered, axes_box)


def test_a_day_long_window_stays_within_the_size_budget() -> None:
    rng = random.Random(3)
    start = T0 - timedelta(hours=24)
    aggregator = RequestLogAggregator(start, T0)
    for i in range(24 * 60):
        at = start + timedelta(minutes=i, seconds=5)
        for revision, error_rate, scale in ((STABLE, 0.004, 0.1), (CANARY, 0.09, 0.4)):
            for _ in range(rng.randint(0, 6)):
                status = 503 if rng.random() < error_rate else 200
                aggregator.add(revision, status, f"{rng.lognormvariate(0, 0.5) * scale:.4f}s", at, None)
    data = chart.chart_data(aggregator.summary(), LABELS, window_start=start, window_end=T0, milestones={},
                            error_rate_max=0.005, p95_max_ms=200.0)
    png = chart.render_png(data, labels(data), ZoneInfo("Asia/Seoul"))
    assert Image.open(io.BytesIO(png)).width >= 1200 and len(png) < 300 * 1024, len(png)


# -- start-up and the ack path stay without matplotlib -------------------------------------------------------------

_NO_MATPLOTLIB_BEFORE_A_CHART = """
import sys, tempfile
import app
from bot.settings import load_settings
from sandbox.harness import LocalBot
with tempfile.TemporaryDirectory() as tmp:
    settings = load_settings({"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "secret",
                              "DATABASE_URL": f"sqlite:///{tmp}/a.db", "SCHEDULER_ENABLED": "false"})
    app.build_runtime(settings).ctx.db.dispose()
    loaded = [m for m in sys.modules if m.split(".")[0] in ("matplotlib", "koreanize_matplotlib")]
    bot = LocalBot({"SCHEDULER_ENABLED": "false"}, database_url=f"sqlite:///{tmp}/b.db")
    bot.start()
    try:
        assert bot.driver.command("/incident", "open 결제 오류 sev:high").status_code == 200
        assert bot.driver.command("/incident", "evidence").status_code == 200
        assert bot.driver.command("/incident", "help").status_code == 200
        bot.settle()
    finally:
        bot.stop()
    loaded += [m for m in sys.modules if m.split(".")[0] in ("matplotlib", "koreanize_matplotlib")]
print(" ".join(sorted(set(loaded))))
"""


def test_building_the_app_and_answering_commands_imports_no_matplotlib() -> None:
    result = subprocess.run([sys.executable, "-c", _NO_MATPLOTLIB_BEFORE_A_CHART], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"loaded before any chart was drawn: {result.stdout}"


# -- end to end ---------------------------------------------------------------------------------------------------

module_gcp_fixture, gcp_fixture = shared_gcp_sandbox(CanaryScenario)


@pytest.fixture
def sc(gcp: GcpSandbox) -> CanaryScenario:
    return gcp.scenario


@pytest.fixture
def clock(sc: CanaryScenario) -> ManualClock:
    return ManualClock(sc.window_end)


@pytest.fixture
def ebot(gcp: GcpSandbox, clock: ManualClock, slack: SlackSandbox, database_url: str) -> Iterator[LocalBot]:
    with evidence_bot(gcp, clock, slack, database_url) as local:
        yield local


def files_named(bot: LocalBot, suffix: str) -> list[dict[str, Any]]:
    return [f for f in bot.slack.files() if str(f["filename"]).endswith(suffix)]


def summaries(bot: LocalBot, thread_ts: str, marker: str) -> list[str]:
    return [m["text"] for m in bot.slack.thread(CHANNEL, thread_ts) if marker in m.get("text", "")]


def stored(bot: LocalBot, kind: str) -> list[Evidence]:
    with bot.ctx.db.session() as session:
        rows = session.scalars(select(Evidence).where(Evidence.kind == kind).order_by(Evidence.id)).all()
        session.expunge_all()
        return list(rows)


def raw_requests(sc: CanaryScenario, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return [e for e in sc.entries() if e["logName"].endswith("%2Frequests")
            and start <= datetime.fromisoformat(e["timestamp"]) < end]


def test_the_chart_arrives_in_the_thread_beside_the_json_files(ebot: LocalBot, sc: CanaryScenario,
                                                               clock: ManualClock) -> None:
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)
    assert ebot.driver.command("/incident", "milestone deployed 09:00").status_code == 200
    clock.advance(timedelta(minutes=1))
    ebot.driver.command("/incident", "evidence")
    ebot.settle()
    start, end = sc.deployed_at, clock.now()
    stamp = f"{end:%Y%m%d_%H%M%S}"

    # In the thread, after the three JSON files of the same capture, in the same upload flow.
    names = [str(f["filename"]) for f in ebot.slack.files() if stamp in str(f["filename"])]
    assert names == [f"evidence_errors_{stamp}.json", f"evidence_metrics_{stamp}.json",
                     f"evidence_canary_config_{stamp}.json", f"evidence_chart_{stamp}.png"]
    [picture] = [f for f in files_named(ebot, ".png") if stamp in str(f["filename"])]
    assert picture["completed"] and picture["thread_ts"] == thread_ts and picture["channel"] == CHANNEL
    image = Image.open(io.BytesIO(bytes(picture["content"])))
    assert image.format == "PNG" and image.width >= 1200 and len(picture["content"]) < 300 * 1024
    assert not any("차트 없음" in text for text in summaries(ebot, thread_ts, "긴급 증거 보존"))
    assert len(files_named(ebot, ".png")) == 2  # the capture at open had its chart too

    # The stored metrics hold the minutes it was drawn from, counted from the raw request logs.
    metrics = stored(ebot, "metrics")[-1].payload
    assert metrics is not None and metrics["chart"]["file"] == f"evidence_chart_{stamp}.png"
    assert {r["revision"]: r["role"] for r in metrics["chart"]["revisions"]} == {
        sc.canary_revision: "canary", sc.stable_revision: "stable"}
    raw = raw_requests(sc, start, end)
    for revision in (sc.canary_revision, sc.stable_revision):
        want = Counter(datetime.fromisoformat(e["timestamp"]).replace(second=0, microsecond=0) for e in raw
                       if e["resource"]["labels"]["revision_name"] == revision)
        want_5xx = Counter(datetime.fromisoformat(e["timestamp"]).replace(second=0, microsecond=0) for e in raw
                           if e["resource"]["labels"]["revision_name"] == revision
                           and e["httpRequest"]["status"] >= 500)
        got = metrics["per_minute_by_revision"][revision]
        assert len(got) == 31  # 09:00 … 09:30 inclusive of the minute the window ends in
        for m in got:
            at = datetime.fromisoformat(m["minute"])
            assert (m["requests"], m["server_errors"]) == (want.get(at, 0), want_5xx.get(at, 0)), at
            assert (m["error_rate"] is None) == (m["requests"] == 0)

    # The report draws the latest chart again, in the language it asks for, under the posted name.
    with ebot.ctx.db.read() as session:
        incident_id = session.scalars(select(Incident.id).where(Incident.public_id == public_id)).one()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = chart.latest_chart(ebot.ctx, incident_id, "en")
    assert again is not None and again.filename == f"evidence_chart_{stamp}.png" and again.png
    assert Image.open(io.BytesIO(again.png)).width >= 1200


def test_verification_posts_the_chart_of_its_window(ebot: LocalBot, sc: CanaryScenario, gcp: GcpSandbox,
                                                    clock: ManualClock) -> None:
    _, thread_ts = open_incident(ebot, OPEN_TEXT)
    clock.set(sc.post_end)
    gcp.set_rolled_back()
    ebot.driver.command("/incident", "verify")
    ebot.settle()
    name = f"evidence_chart_{sc.post_end:%Y%m%d_%H%M%S}.png"
    [picture] = [f for f in files_named(ebot, ".png") if f["filename"] == name]
    assert picture["thread_ts"] == thread_ts
    assert Image.open(io.BytesIO(bytes(picture["content"]))).width >= 1200
    [verify] = stored(ebot, "verify")
    payload = verify.payload or {}
    assert payload["chart"]["file"] == name
    assert payload["chart"]["window_start"] == sc.window_end.isoformat()
    # After the rollback only the stable revision answers: one line.
    data = chart.chart_data_from_payload(payload, {})
    assert data is not None and [s.revision for s in data.series] == [sc.stable_revision]
    assert sum(m["requests"] for m in payload["per_minute_by_revision"][sc.stable_revision]) == len(
        raw_requests(sc, sc.window_end, sc.post_end))


def test_the_verification_chart_after_a_rollback_shows_the_failing_canary_and_the_drop(
        ebot: LocalBot, sc: CanaryScenario, gcp: GcpSandbox, clock: ManualClock) -> None:
    public_id, thread_ts = open_incident(ebot, OPEN_TEXT)
    for command in ("milestone deployed 09:00", "milestone rollback 09:30"):
        assert ebot.driver.command("/incident", command).status_code == 200
    rollback = sc.window_end  # the scenario's canary fails until here, then only the stable revision answers
    clock.set(sc.post_end)
    gcp.set_rolled_back()
    gcp.clear_requests()
    ebot.driver.command("/incident", "verify")
    ebot.settle()
    since = sc.post_end - ebot.ctx.settings.verify_window
    name = f"evidence_chart_{sc.post_end:%Y%m%d_%H%M%S}.png"
    [picture] = [f for f in files_named(ebot, ".png") if f["filename"] == name]
    assert picture["thread_ts"] == thread_ts and Image.open(io.BytesIO(bytes(picture["content"]))).width >= 1200

    [verify] = stored(ebot, "verify")
    payload = verify.payload or {}
    # Drawn from the deploy (the evidence window's start) to the verification, in one read of the request logs.
    assert (payload["chart"]["window_start"], payload["chart"]["window_end"]) == (
        sc.deployed_at.isoformat(), sc.post_end.isoformat())
    [read] = {r.body["filter"] for r in gcp.requests(ENTRIES) if "requests" in r.body["filter"]}
    assert rfc3339(sc.deployed_at) in read
    # Judged as before: [since, now) alone, counted from the raw logs; only the stable revision served there.
    assert (payload["window_start"], payload["window_end"]) == (since.isoformat(), sc.post_end.isoformat())
    judged = raw_requests(sc, since, sc.post_end)
    assert {r: s["request_count"] for r, s in payload["revisions"].items()} == {sc.stable_revision: len(judged)}
    assert payload["result"]["all_passed"] is True

    raw = raw_requests(sc, sc.deployed_at, sc.post_end)

    def counted(revision: str, at: datetime) -> tuple[int, int]:
        in_minute = [e for e in raw if e["resource"]["labels"]["revision_name"] == revision
                     and at <= datetime.fromisoformat(e["timestamp"]) < at + timedelta(minutes=1)]
        return len(in_minute), sum(e["httpRequest"]["status"] >= 500 for e in in_minute)

    minutes = {r: {datetime.fromisoformat(m["minute"]): m for m in rows}
               for r, rows in payload["per_minute_by_revision"].items()}
    canary, stable = minutes[sc.canary_revision], minutes[sc.stable_revision]
    before = rollback - timedelta(minutes=1)
    assert (canary[before]["requests"], canary[before]["server_errors"]) == counted(sc.canary_revision, before)
    assert canary[before]["requests"] > 0
    # The canary's last ten minutes before the rollback fail well over the threshold ...
    last_ten = [canary[rollback - timedelta(minutes=i)] for i in range(1, 11)]
    assert sum(m["server_errors"] for m in last_ten) / sum(m["requests"] for m in last_ten) > 0.05
    # ... and after it the canary answers nothing (a gap) and the stable revision stays under it.
    after = [at for at in canary if at >= rollback]
    assert len(after) == 10 and all(canary[at]["error_rate"] is None for at in after)
    for at in after:
        assert (stable[at]["requests"], stable[at]["server_errors"]) == counted(sc.stable_revision, at)
    stable_after = [stable[at] for at in after]
    assert sum(m["server_errors"] for m in stable_after) / sum(m["requests"] for m in stable_after) < 0.005

    # The report's "latest chart" is this one, with the whole story: both lines and the rollback marked.
    with ebot.ctx.db.read() as session:
        incident_id = session.scalars(select(Incident.id).where(Incident.public_id == public_id)).one()
        milestones, alert_start = chart.incident_moments(session, incident_id)
    data = chart.chart_data_from_payload(payload, milestones, alert_start)
    assert data is not None and [s.revision for s in data.series] == [sc.stable_revision, sc.canary_revision]
    assert {"deployed", "rollback"} <= {m.name for m in data.moments}
    latest = chart.latest_chart(ebot.ctx, incident_id)
    assert latest is not None and latest.filename == name


def test_the_chart_read_leaves_what_is_judged_unchanged_and_reads_each_page_once(gcp: GcpSandbox) -> None:
    gcp.set_rolled_back()
    sc = gcp.scenario
    clients = GcpClients(load_settings(gcp_env(gcp)))

    def judged_after_the_rollback(chart_since: datetime | None = None) -> LiveVerification:
        return verify_rollback_live(clients=clients, project=sc.project, region=sc.region, service=sc.service,
                                    now=sc.post_end, since=sc.window_end, error_rate_max=0.005, p95_max_ms=200.0,
                                    chart_since=chart_since)

    plain = judged_after_the_rollback()
    assert plain.chart_requests is plain.requests
    gcp.clear_requests()
    longer = judged_after_the_rollback(sc.deployed_at)
    assert longer.result.to_dict() == plain.result.to_dict() and longer.revisions == plain.revisions
    assert plain.requests is not None and longer.requests is not None and longer.chart_requests is not None
    assert longer.requests.to_dict() == plain.requests.to_dict()
    assert sc.canary_revision in longer.chart_requests.revisions  # the failing minutes before the rollback
    # One stream over the longer window, a page of 1000 at a time: nothing read twice.
    reads = [r for r in gcp.requests(ENTRIES) if "requests" in r.body["filter"]]
    assert {r.body["filter"] for r in reads} == {
        request_log_filter(sc.project, sc.service, sc.deployed_at, sc.post_end)}
    assert len(reads) == math.ceil(len(raw_requests(sc, sc.deployed_at, sc.post_end)) / 1000)


@pytest.mark.parametrize("clock", [ManualClock(datetime(2024, 5, 14, 20, 0, tzinfo=UTC))])
def test_a_window_without_requests_gets_no_chart_and_one_line_saying_why(ebot: LocalBot) -> None:
    _, thread_ts = open_incident(ebot, OPEN_TEXT)  # 19:00–20:00: long after the scenario's traffic
    [summary] = summaries(ebot, thread_ts, "긴급 증거 보존 완료")
    assert "📈 차트 없음: 수집 구간에 요청이 없었습니다." in summary
    assert files_named(ebot, ".png") == [] and len(files_named(ebot, ".json")) == 3


def test_a_chart_that_fails_to_draw_loses_no_evidence(ebot: LocalBot, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_args: Any, **_kw: Any) -> bytes:
        raise RuntimeError("the font cache is gone")

    monkeypatch.setattr(chart, "render_png", broken)
    with caplog.at_level(logging.ERROR, logger="bot.evidence.chart"):
        _, thread_ts = open_incident(ebot, OPEN_TEXT)
    [summary] = summaries(ebot, thread_ts, "긴급 증거 보존 완료")
    assert "📈 차트 없음: 그리는 중 오류가 났습니다" in summary
    assert files_named(ebot, ".png") == [] and len(files_named(ebot, ".json")) == 3
    assert [(r.kind, r.ok) for r in stored(ebot, "errors") + stored(ebot, "metrics")] == [
        ("errors", True), ("metrics", True)]
    assert any("could not be drawn" in r.getMessage() and r.exc_info for r in caplog.records)
