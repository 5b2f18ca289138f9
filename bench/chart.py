"""Benchmark: drawing the evidence chart (bot/evidence/chart.py) for a 60-minute and a 24-hour window.

    .venv/bin/python bench/chart.py

Each window is measured in a fresh child process (so matplotlib is not yet imported, as in the app until the
first chart): the request log is folded by the same aggregator the capture uses, then it prints
- cold: the first chart, including importing matplotlib and registering the Hangul font;
- warm: the best of 5 later charts (what every capture after the first costs);
- baseline: the best of 5 empty two-panel figures of the same size, saved the same way (Agg's own floor),
  measured in the same process;
- the process's resident memory before the first chart and its peak after all of them (VmRSS, VmHWM);
- the PNG's size and width.
Targets: a 60-minute, 2-revision chart in under 1 s (warm); the process gains under 60 MB; the PNG under
300 KB and at least 1200 px wide.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPEATS = 5
ZONE = "Asia/Seoul"
END = datetime(2025, 10, 22, 5, 40, tzinfo=UTC)
WINDOWS = (("60 min", timedelta(minutes=60), 200), ("24 h", timedelta(hours=24), 60))  # (name, span, req/min)


def _memory_kib() -> dict[str, int]:
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _prepared(span: timedelta, per_minute: int) -> Any:
    """A failing canary (10 % of the traffic, 9 % 5xx, slow) against a healthy stable, through the aggregator."""
    from bot.evidence import chart
    from bot.evidence.analysis import RequestLogAggregator, RevisionLabel

    rng = random.Random(11)
    start = END - span
    deployed = END - min(span, timedelta(minutes=50))
    aggregator = RequestLogAggregator(start, END)
    for i in range(int(span.total_seconds() // 60)):
        at = start + timedelta(minutes=i)
        canary_share = 0.1 if at >= deployed else 0.0
        for _ in range(per_minute):
            canary = rng.random() < canary_share
            revision, error_rate, scale = (("ion-api-00042-xyz", 0.09, 0.33) if canary
                                           else ("ion-api-00041-abc", 0.004, 0.1))
            latency = f"{rng.lognormvariate(0, 0.6) * scale:.4f}s"
            status = 503 if rng.random() < error_rate else 200
            aggregator.add(revision, status, latency, at + timedelta(seconds=rng.random() * 60), None)
    labels = {"ion-api-00042-xyz": RevisionLabel("ion-api-00042-xyz", "canary", "canary", 10, True, True),
              "ion-api-00041-abc": RevisionLabel("ion-api-00041-abc", "stable", "stable", 90, True, False)}
    milestones = {"deployed": deployed, "detected": deployed + timedelta(minutes=15),
                  "rollback": deployed + timedelta(minutes=35), "recovered": deployed + timedelta(minutes=38)}
    return chart.chart_data(aggregator.summary(), labels, window_start=start, window_end=END, milestones=milestones,
                            error_rate_max=0.005, p95_max_ms=200.0)


def _labels(data: Any) -> Any:
    from bot.evidence import chart

    return chart.ChartLabels(
        title="INCIDENT-20251022-001 · ion-api: 리비전별 분당 에러율과 P95", error_rate_title="분당 5xx 에러율",
        p95_title="분당 P95 응답 시간 (ms)", time_axis="시각 (KST)", error_rate_threshold="기준 0.5%",
        p95_threshold="기준 200 ms", footnote="선이 끊긴 곳은 요청이 없던 분입니다. 시각은 KST 기준.",
        revisions={s.revision: f"{s.tag} · {s.revision} · 트래픽 {s.traffic_percent}%" for s in data.series},
        moments={"deployed": "배포 14:00", "detected": "감지 14:15", "rollback": "롤백 결정 14:35",
                 "recovered": "복구(롤백 완료) 14:38"})


def _empty_figure_png() -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bot.evidence import chart

    figure = Figure(figsize=chart.FIGSIZE_IN, dpi=chart.DPI)
    FigureCanvasAgg(figure)
    figure.subplots(2, 1, sharex=True)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=chart.DPI)
    return out.getvalue()


def _measure(span: timedelta, per_minute: int, conn: Any) -> None:
    from PIL import Image  # matplotlib's own dependency; imported here only to read the size back

    from bot.evidence import chart

    data = _prepared(span, per_minute)
    labels, zone = _labels(data), ZoneInfo(ZONE)
    assert "matplotlib" not in sys.modules
    before = _memory_kib()
    started = time.perf_counter()
    png = chart.render_png(data, labels, zone)
    cold = time.perf_counter() - started
    warm, baseline = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        png = chart.render_png(data, labels, zone)
        warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        _empty_figure_png()
        baseline.append(time.perf_counter() - started)
    after = _memory_kib()
    conn.send({"minutes": len(data.series[0].minutes), "revisions": len(data.series), "cold_s": cold,
               "warm_s": min(warm), "baseline_s": min(baseline), "rss_before_mib": before["VmRSS"] / 1024,
               "peak_mib": after["VmHWM"] / 1024, "gain_mib": (after["VmHWM"] - before["VmRSS"]) / 1024,
               "png_kib": len(png) / 1024, "width": Image.open(io.BytesIO(png)).width})


def bench(span: timedelta, per_minute: int) -> dict[str, Any]:
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_measure, args=(span, per_minute, child))
    process.start()
    result: dict[str, Any] = parent.recv()
    process.join(timeout=60)
    return result


def main() -> int:
    rows = [(name, bench(span, rate)) for name, span, rate in WINDOWS]
    print(f"evidence chart, 2 revisions, {ZONE}, Korean labels (fresh process per window; warm = best of {REPEATS})")
    print(f"{'window':>7} {'minutes':>7} {'cold s':>7} {'warm s':>7} {'empty s':>7} {'RSS before':>10} "
          f"{'peak MiB':>8} {'gain MiB':>8} {'PNG KiB':>7} {'width':>5}")
    for name, r in rows:
        print(f"{name:>7} {r['minutes']:>7} {r['cold_s']:>7.3f} {r['warm_s']:>7.3f} {r['baseline_s']:>7.3f} "
              f"{r['rss_before_mib']:>10.1f} {r['peak_mib']:>8.1f} {r['gain_mib']:>8.1f} {r['png_kib']:>7.0f} "
              f"{r['width']:>5}")
    hour = rows[0][1]
    ok = (hour["warm_s"] < 1.0 and all(r["gain_mib"] < 60 and r["png_kib"] < 300 and r["width"] >= 1200
                                       for _, r in rows))
    print(f"60-minute chart {hour['warm_s']:.3f} s warm ({'under' if hour['warm_s'] < 1 else 'OVER'} 1 s); "
          f"memory gain and PNG size {'within' if ok else 'OUTSIDE'} budget")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
