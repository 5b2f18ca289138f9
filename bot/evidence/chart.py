"""Evidence charts: error rate and P95 per minute, one line per revision, with the incident's moments marked.

Two halves. The data preparation is pure and cheap: it takes the per-minute series of the same
:class:`~bot.evidence.analysis.RequestLogAggregator` pass that feeds the summary, keeps a minute without
requests as a gap (NaN, never 0), and places the milestones. The drawing uses matplotlib's Agg backend and
imports it only when a chart is drawn, in the evidence job: never at start-up and never before an ack.
Hangul comes from the NanumGothic font that the ``koreanize-matplotlib`` package ships, registered with
matplotlib at the first draw (the package itself is never imported: it would change global rcParams).
"""

from __future__ import annotations

import gc
import html
import io
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.evidence.analysis import MinuteStats, RequestLogSummary, RevisionLabel
from storage.models import Alert, Evidence, Incident

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bot.context import Context

log = logging.getLogger(__name__)

FILE_PREFIX = "evidence_chart"
# The moments a chart marks, in the order they happen in the guide; "alert" is a Cloud Monitoring alert's start.
MOMENTS = ("alert", "deployed", "started", "detected", "rollback", "recovered")
ROLE_ORDER = {"stable": 0, "canary": 1}
# 16 × 9 in at 100 dpi: 1600 × 900 px, wide enough for Slack's preview and the report.
FIGSIZE_IN, DPI = (16.0, 9.0), 100
# Okabe-Ito colours (told apart with colour-blindness) and a line style each, so grey scale keeps them apart too.
STYLE = {
    "canary": {"color": "#D55E00", "linestyle": "-", "linewidth": 2.4, "marker": "o"},
    "stable": {"color": "#0072B2", "linestyle": "-.", "linewidth": 1.8, "marker": "s"},
    "other": {"color": "#7F7F7F", "linestyle": ":", "linewidth": 1.6, "marker": "^"},
}
THRESHOLD_COLOR = "#222222"
MOMENT_COLOR = "#6A3D9A"
MARKERS_UP_TO_MINUTES = 180  # beyond that a marker per minute is clutter, and a lone minute is under a pixel
# A verification's chart reaches back before the rollback at most this far (or VERIFY_WINDOW, if longer): the
# capture's own window when no deploy is known. Enough for the spike, and a bounded request-log read.
VERIFY_CHART_LOOKBACK = timedelta(hours=1)
# A rollback longer ago than this is history: the verification then draws only the window it judges.
VERIFY_CHART_AFTER_ROLLBACK = timedelta(hours=2)
# A rotated 9-pt moment label with its padding is about 16 px wide.
MOMENT_LABEL_PX = 18
MOMENT_LABEL_HEIGHTS = (0.98, 0.58, 0.18)  # in axes fractions: where a label's top may go, highest first


# -- data preparation (pure) ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionSeries:
    """One revision's line: per minute, the 5xx share (a fraction) and the P95; NaN where there is nothing."""

    revision: str
    role: str  # canary | stable | other
    tag: str | None
    traffic_percent: int
    minutes: tuple[datetime, ...]
    error_rate: tuple[float, ...]
    p95_ms: tuple[float, ...]


@dataclass(frozen=True)
class Moment:
    name: str  # one of MOMENTS
    at: datetime


@dataclass(frozen=True)
class ChartData:
    window_start: datetime
    window_end: datetime
    series: tuple[RevisionSeries, ...]
    moments: tuple[Moment, ...]
    error_rate_max: float  # a fraction, like ERROR_RATE_MAX
    p95_max_ms: float
    requests_read: bool = True  # False: the request logs could not be read at all
    partial: bool = False  # the request-log stream broke off

    @property
    def missing(self) -> str | None:
        """Why there is no chart: `no_request_logs` or `no_requests`; None when there is one to draw."""
        if not self.requests_read:
            return "no_request_logs"
        return None if self.series else "no_requests"


def revision_series(per_minute: Mapping[str, Sequence[MinuteStats]],
                    labels: Mapping[str, RevisionLabel]) -> list[RevisionSeries]:
    """A line for every revision with at least one request in the window, stable first, then canary."""
    out: list[RevisionSeries] = []
    for revision, minutes in per_minute.items():
        if not any(m.requests for m in minutes):
            continue
        label = labels.get(revision)
        out.append(RevisionSeries(
            revision=revision, role=label.role if label else "other", tag=label.tag if label else None,
            traffic_percent=label.traffic_percent if label else 0,
            minutes=tuple(m.minute_start for m in minutes),
            error_rate=tuple(m.server_errors / m.requests if m.requests else math.nan for m in minutes),
            p95_ms=tuple(m.p95_ms if m.requests and m.p95_ms is not None else math.nan for m in minutes),
        ))
    out.sort(key=lambda s: (ROLE_ORDER.get(s.role, 2), s.revision))
    return out


def moments_in_window(milestones: Mapping[str, datetime | None], start: datetime, end: datetime,
                      alert_started_at: datetime | None = None) -> list[Moment]:
    """The moments that are set and fall inside [start, end], in time order (the guide's order on a tie)."""
    times = {**{name: at for name, at in milestones.items() if name in MOMENTS}, "alert": alert_started_at}
    found = [Moment(name, at) for name, at in times.items() if at is not None and start <= at <= end]
    return sorted(found, key=lambda m: (m.at, MOMENTS.index(m.name)))


def verify_chart_start(*, judged_start: datetime, now: datetime, rollback_at: datetime | None,
                       evidence_start: datetime, verify_window: timedelta) -> datetime:
    """Where a verification's chart starts: early enough to show the canary failing, the rollback and the drop
    in one picture. From the earlier of the evidence window's start and `rollback_at − verify_window`, but no
    more than VERIFY_CHART_LOOKBACK (or `verify_window`) before the rollback. Without a rollback in the last
    VERIFY_CHART_AFTER_ROLLBACK the chart keeps the judged window."""
    if rollback_at is None or not now - VERIFY_CHART_AFTER_ROLLBACK <= rollback_at <= now:
        return judged_start
    earliest = rollback_at - max(VERIFY_CHART_LOOKBACK, verify_window)
    # Never later than the judged window: with the rollback at or before `now`, rollback − window is not.
    return min(judged_start, max(earliest, min(evidence_start, rollback_at - verify_window)))


def chart_data(requests: RequestLogSummary | None, labels: Mapping[str, RevisionLabel], *, window_start: datetime,
               window_end: datetime, milestones: Mapping[str, datetime | None], error_rate_max: float,
               p95_max_ms: float, alert_started_at: datetime | None = None, partial: bool = False) -> ChartData:
    series = revision_series(requests.per_minute_by_revision, labels) if requests else []
    return ChartData(window_start, window_end, tuple(series),
                     tuple(moments_in_window(milestones, window_start, window_end, alert_started_at)),
                     error_rate_max, p95_max_ms, requests_read=requests is not None, partial=partial)


def payload(data: ChartData, filename: str | None) -> dict[str, Any]:
    """What a stored payload needs beside its `per_minute_by_revision` to draw the chart again (the report)."""
    return {
        "file": filename, "window_start": data.window_start.isoformat(), "window_end": data.window_end.isoformat(),
        "error_rate_max": data.error_rate_max, "p95_max_ms": data.p95_max_ms, "partial": data.partial,
        "requests_read": data.requests_read,
        "revisions": [{"revision": s.revision, "role": s.role, "tag": s.tag, "traffic_percent": s.traffic_percent}
                      for s in data.series],
    }


def chart_data_from_payload(stored: Mapping[str, Any], milestones: Mapping[str, datetime | None],
                            alert_started_at: datetime | None = None) -> ChartData | None:
    """The chart of a stored `metrics` or `verify` payload, with today's milestones; None if it holds none."""
    meta, minutes = stored.get("chart"), stored.get("per_minute_by_revision")
    if not isinstance(meta, Mapping) or not isinstance(minutes, Mapping):
        return None
    per_minute = {
        revision: [MinuteStats(datetime.fromisoformat(m["minute"]), int(m["requests"]), int(m["server_errors"]),
                               m["p95_ms"]) for m in rows]
        for revision, rows in minutes.items()
    }
    labels = {r["revision"]: RevisionLabel(r["revision"], r["role"], r["tag"], int(r["traffic_percent"]),
                                           int(r["traffic_percent"]) > 0, False) for r in meta["revisions"]}
    start, end = datetime.fromisoformat(meta["window_start"]), datetime.fromisoformat(meta["window_end"])
    return ChartData(start, end, tuple(revision_series(per_minute, labels)),
                     tuple(moments_in_window(milestones, start, end, alert_started_at)),
                     float(meta["error_rate_max"]), float(meta["p95_max_ms"]),
                     requests_read=bool(meta.get("requests_read", True)), partial=bool(meta.get("partial")))


# -- drawing -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartLabels:
    """Every word on the chart, already in the reader's language (see `labels_for`)."""

    title: str
    error_rate_title: str
    p95_title: str
    time_axis: str
    error_rate_threshold: str
    p95_threshold: str
    footnote: str
    revisions: Mapping[str, str]  # revision → its legend entry
    moments: Mapping[str, str]  # moment name → its label


# FT2Font objects are cached and shared by matplotlib and are not thread-safe: one chart at a time.
_draw_lock = threading.Lock()
_font_families: list[str] = []


def hangul_font_path() -> Path:
    """NanumGothic (SIL OFL) as shipped in the koreanize-matplotlib package, found without importing it."""
    spec = find_spec("koreanize_matplotlib")
    if spec is None or spec.origin is None:
        raise RuntimeError("koreanize-matplotlib is not installed: it ships the Hangul font the charts use")
    return Path(spec.origin).parent / "fonts" / "NanumGothic.ttf"


def _families() -> list[str]:
    """The fonts every label asks for: NanumGothic for Hangul and Latin, matplotlib's DejaVu Sans for the rest."""
    if not _font_families:
        from matplotlib import font_manager

        path = str(hangul_font_path())
        font_manager.fontManager.addfont(path)
        _font_families.extend([font_manager.FontProperties(fname=path).get_name(), "DejaVu Sans"])
    return _font_families


def _text(value: str) -> str:
    # A `$` pair would start matplotlib's mathtext.
    return value.replace("$", r"\$")


def _moment_places(data: ChartData, axes_width_px: float) -> list[tuple[Moment, str, float]]:
    """Where each moment's label goes: left of its line, or right of it when that place is taken, and lower down
    when both sides are, so labels of moments a minute apart stay readable. A label never leaves the axes: at the
    left edge it goes right of its line, off the y-axis numbers, and at the right edge left of it."""
    span = (data.window_end - data.window_start).total_seconds() or 1.0
    places: list[tuple[Moment, str, float]] = []
    taken: list[tuple[float, float, float]] = []  # (left px, right px, height) of each label placed
    for moment in data.moments:
        px = (moment.at - data.window_start).total_seconds() / span * axes_width_px
        # `ha="right"`: the text ends at the line; `ha="left"`: it starts there.
        sides: tuple[str, ...] = ("right", "left")
        if px < MOMENT_LABEL_PX:
            sides = ("left",)
        elif px > axes_width_px - MOMENT_LABEL_PX:
            sides = ("right",)
        candidates = [(side, height) for height in MOMENT_LABEL_HEIGHTS for side in sides]
        # Every place taken (moments piled up): overlap rather than leave the axes.
        side, height = next((c for c in candidates if _free(taken, _label_span(px, c[0]), c[1])), candidates[0])
        taken.append((*_label_span(px, side), height))
        places.append((moment, side, height))
    return places


def _free(taken: Sequence[tuple[float, float, float]], span: tuple[float, float], height: float) -> bool:
    return not any(h == height and left < span[1] and span[0] < right for left, right, h in taken)


def _label_span(px: float, side: str) -> tuple[float, float]:
    return (px - MOMENT_LABEL_PX, px) if side == "right" else (px, px + MOMENT_LABEL_PX)


def draw_figure(data: ChartData, labels: ChartLabels, zone: tzinfo) -> Figure:
    """The figure (not yet saved): error rate above, P95 below, sharing the time axis in `zone`.

    Callers hold `_draw_lock` (render_png does); tests use the figure's transforms to find the lines."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    families = _families()
    font: dict[str, Any] = {"fontfamily": families}
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.06, right=0.975, top=0.88, bottom=0.10, hspace=0.2)
    ax_rate, ax_p95 = figure.subplots(2, 1, sharex=True)
    figure.suptitle(_text(labels.title), x=0.06, ha="left", fontsize=15, **font)

    half_minute = timedelta(seconds=30)  # a minute's value sits in the middle of its minute
    markers = max((len(s.minutes) for s in data.series), default=0) <= MARKERS_UP_TO_MINUTES
    for series in data.series:
        style = dict(STYLE.get(series.role, STYLE["other"]))
        if not markers:
            style.pop("marker")
        x = [m + half_minute for m in series.minutes]
        legend = _text(labels.revisions.get(series.revision, series.revision))
        ax_rate.plot(x, [v * 100 for v in series.error_rate], label=legend, markersize=4, **style)
        ax_p95.plot(x, list(series.p95_ms), label=legend, markersize=4, **style)

    for ax, values, threshold, text in (
        (ax_rate, [v * 100 for s in data.series for v in s.error_rate], data.error_rate_max * 100,
         labels.error_rate_threshold),
        (ax_p95, [v for s in data.series for v in s.p95_ms], data.p95_max_ms, labels.p95_threshold),
    ):
        finite = [v for v in values if math.isfinite(v)]
        top = max([*finite, threshold, 0.0]) or 1.0
        ax.set_ylim(0, top * 1.15)
        # Not antialiased: a crisp dashed line, which the tests find pixel for pixel.
        ax.axhline(threshold, color=THRESHOLD_COLOR, linestyle=(0, (6, 4)), linewidth=1.5, antialiased=False,
                   zorder=3)
        ax.text(0.995, threshold, _text(text), transform=blended_transform_factory(ax.transAxes, ax.transData),
                ha="right", va="bottom", fontsize=10, color=THRESHOLD_COLOR, zorder=4,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}, **font)
        ax.grid(True, axis="both", color="#E5E5E5", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax_rate.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}%"))
    ax_p95.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    ax_rate.set_title(_text(labels.error_rate_title), loc="left", fontsize=12, **font)
    ax_p95.set_title(_text(labels.p95_title), loc="left", fontsize=12, **font)

    ax_p95.set_xlim(data.window_start, data.window_end)
    for moment, side, height in _moment_places(data, FIGSIZE_IN[0] * DPI * 0.915):
        for ax in (ax_rate, ax_p95):
            ax.axvline(moment.at, color=MOMENT_COLOR, linestyle=(0, (1, 2)), linewidth=1.4, zorder=2)
        ax_rate.text(moment.at, height, " " + _text(labels.moments.get(moment.name, moment.name)) + " ",
                     transform=blended_transform_factory(ax_rate.transData, ax_rate.transAxes), rotation=90,
                     ha=side, va="top", fontsize=9, color=MOMENT_COLOR, zorder=5,
                     bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none",
                           "alpha": 0.8}, **font)

    locator = mdates.AutoDateLocator(tz=zone, minticks=5, maxticks=12)
    spans_days = data.window_start.astimezone(zone).date() != data.window_end.astimezone(zone).date()
    ax_p95.xaxis.set_major_locator(locator)
    ax_p95.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M" if spans_days else "%H:%M", tz=zone))
    ax_p95.set_xlabel(_text(labels.time_axis), fontsize=11, **font)
    if data.series:
        handles, texts = ax_rate.get_legend_handles_labels()
        figure.legend(handles, texts, loc="upper right", bbox_to_anchor=(0.975, 0.985), ncol=min(3, len(handles)),
                      frameon=False, prop=FontProperties(family=families, size=11))
    figure.text(0.06, 0.015, _text(labels.footnote), fontsize=10, color="#444444", **font)
    return figure


def render_png(data: ChartData, labels: ChartLabels, zone: tzinfo) -> bytes:
    """The chart as a PNG of FIGSIZE_IN × DPI pixels. Raises if there is nothing to draw (`data.missing`)."""
    if data.missing:
        raise ValueError(f"no chart to draw: {data.missing}")
    with _draw_lock:
        return _png_bytes(draw_figure(data, labels, zone))


def _png_bytes(figure: Figure) -> bytes:
    """Saves and lets go of `figure`; the caller holds `_draw_lock`."""
    out = io.BytesIO()
    # No metadata: the same data gives the same bytes.
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    del figure
    # A figure is a web of reference cycles holding its raster (~7 MB here): collected now, not at the next
    # full collection, so charts do not pile up in a long-running process (tens of ms).
    gc.collect()
    return out.getvalue()


# -- the app's side: words from the templates, moments from the database --------------------------------------------


def file_name(stamp: str) -> str:
    """`evidence_chart_<YYYYMMDD_HHMMSS>.png`, the stamp in INCIDENT_TIMEZONE like the JSON files'."""
    return f"{FILE_PREFIX}_{stamp}.png"


def labels_for(ctx: Context, data: ChartData, *, public_id: str, service: str, locale: str | None = None
               ) -> ChartLabels:
    """The words of templates/messages/evidence.j2 (`chart_*`), as plain text: the chart is not Slack mrkdwn."""
    fmt = ctx.formatter(locale)

    def say(macro: str, /, **params: Any) -> str:
        return html.unescape(ctx.say(f"evidence.{macro}", locale, **params))

    with_date = fmt.spans_days([data.window_start, data.window_end])
    zone = fmt.abbreviation(fmt.local(data.window_end))
    revisions = {}
    for s in data.series:
        tag = s.tag or (s.role if s.role in ROLE_ORDER else None)
        revisions[s.revision] = say("chart_revision", revision=s.revision, tag=tag, share=f"{s.traffic_percent}%")
    footnote = say("chart_footnote", zone=zone)
    if data.partial:
        footnote += "  " + say("chart_partial")
    return ChartLabels(
        title=say("chart_title", public_id=public_id, service=service),
        error_rate_title=say("chart_error_rate"), p95_title=say("chart_p95"),
        time_axis=say("chart_time_axis", zone=zone),
        error_rate_threshold=say("chart_threshold", value=f"{data.error_rate_max * 100:g}%"),
        p95_threshold=say("chart_threshold", value=f"{data.p95_max_ms:g} ms"),
        footnote=footnote, revisions=revisions,
        moments={m.name: say("chart_moment", name=m.name, time=fmt.time(m.at, with_date=with_date, with_zone=False))
                 for m in data.moments},
    )


def incident_moments(session: Session, incident_id: int) -> tuple[dict[str, datetime | None], datetime | None]:
    """The incident's milestones and, when it came from a Cloud Monitoring alert, the alert's start."""
    incident = session.get_one(Incident, incident_id)
    milestones = {name: getattr(incident, f"{name}_at") for name in MOMENTS if name != "alert"}
    alert_start = session.scalar(select(func.min(Alert.started_at)).where(Alert.incident_id == incident_id))
    return milestones, alert_start


@dataclass(frozen=True)
class ChartFile:
    """A drawn chart (`png` set), or why there is none (`missing`: no_requests | no_request_logs | failed)."""

    filename: str
    png: bytes | None
    missing: str | None


def draw_for_thread(ctx: Context, data: ChartData, filename: str, *, public_id: str, service: str) -> ChartFile:
    """Draw in the configured language; a failure is logged and reported as `failed`, never raised: the
    evidence goes out without its picture."""
    if data.missing:
        return ChartFile(filename, None, data.missing)
    try:
        png = render_png(data, labels_for(ctx, data, public_id=public_id, service=service), ctx.settings.timezone)
    except Exception:
        log.exception("evidence chart %s could not be drawn", filename,
                      extra={"json_fields": {"incident_id": public_id}})
        return ChartFile(filename, None, "failed")
    return ChartFile(filename, png, None)


def latest_chart(ctx: Context, incident_id: int, locale: str | None = None) -> ChartFile | None:
    """The newest chart of an incident (its latest evidence capture or verification that had one), drawn again
    in `locale` with the incident's milestones as they are now, under the file name it was posted with.
    None when no capture had data to draw. Raises if drawing fails (the caller decides what to do without it)."""
    with ctx.db.read() as session:
        rows = session.scalars(
            select(Evidence.payload)
            .where(Evidence.incident_id == incident_id, Evidence.kind.in_(("metrics", "verify")))
            .order_by(Evidence.captured_at.desc(), Evidence.id.desc())
        )
        stored = next((p for p in rows if p and isinstance(p.get("chart"), Mapping) and p["chart"].get("file")
                       and (p["chart"].get("revisions"))), None)
        if stored is None:
            return None
        milestones, alert_start = incident_moments(session, incident_id)
        incident = session.get_one(Incident, incident_id)
        public_id, service = incident.public_id, incident.service or ctx.settings.cloud_run_service or ""
    data = chart_data_from_payload(stored, milestones, alert_start)
    if data is None or data.missing:
        return None
    labels = labels_for(ctx, data, public_id=public_id, service=service, locale=locale)
    return ChartFile(str(stored["chart"]["file"]), render_png(data, labels, ctx.settings.timezone), None)



def chart_data_for(ctx: Context, incident_id: int, requests: RequestLogSummary | None,
                   labels: Mapping[str, RevisionLabel], *, window_start: datetime, window_end: datetime,
                   partial: bool = False) -> ChartData:
    """`chart_data` with the incident's moments from the database and the thresholds from the settings. Never
    raises: without its moments the chart is still drawn."""
    milestones: dict[str, datetime | None] = {}
    alert_start: datetime | None = None
    try:
        with ctx.db.read() as session:
            milestones, alert_start = incident_moments(session, incident_id)
    except Exception:
        log.exception("the chart's milestones could not be read")
    return chart_data(requests, labels, window_start=window_start, window_end=window_end, milestones=milestones,
                      alert_started_at=alert_start, error_rate_max=ctx.settings.error_rate_max,
                      p95_max_ms=ctx.settings.p95_max_ms, partial=partial)


# -- the weekly stats chart (`/incident stats`) --------------------------------------------------------------------

WEEKLY_FIGSIZE_IN = (12.0, 6.75)  # 1200 × 675 px: readable in Slack's preview, a third of an evidence chart's size
WEEKLY_BAR_COLOR = "#56B4E9"
WEEKLY_STYLE = {
    "detect": {"color": "#E69F00", "linestyle": "-", "linewidth": 2.2, "marker": "o"},
    "recover": {"color": "#009E73", "linestyle": "--", "linewidth": 2.2, "marker": "s"},
}


@dataclass(frozen=True)
class WeeklyChartData:
    """Per week: its label, the incidents opened, and the medians in minutes (NaN for a week without one)."""

    weeks: tuple[str, ...]
    incidents: tuple[int, ...]
    detect_minutes: tuple[float, ...]
    recover_minutes: tuple[float, ...]


@dataclass(frozen=True)
class WeeklyChartLabels:
    title: str
    incidents_title: str
    durations_title: str
    detect: str
    recover: str
    footnote: str


def render_weekly_png(data: WeeklyChartData, labels: WeeklyChartLabels) -> bytes:
    """Incidents per week as bars above, the weekly median time to detect and to recover as lines below."""
    with _draw_lock:
        return _png_bytes(draw_weekly_figure(data, labels))


def draw_weekly_figure(data: WeeklyChartData, labels: WeeklyChartLabels) -> Figure:
    """The figure (not yet saved); callers hold `_draw_lock`. A week without a complete incident leaves a gap in
    its line, never a zero."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator

    families = _families()
    font: dict[str, Any] = {"fontfamily": families}
    figure = Figure(figsize=WEEKLY_FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.07, right=0.975, top=0.87, bottom=0.14, hspace=0.3)
    ax_count, ax_time = figure.subplots(2, 1, sharex=True)
    figure.suptitle(_text(labels.title), x=0.07, ha="left", fontsize=14, **font)
    x = list(range(len(data.weeks)))
    ax_count.bar(x, data.incidents, color=WEEKLY_BAR_COLOR, width=0.6)
    ax_count.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    ax_count.set_ylim(0, max([*data.incidents, 1]) * 1.2)
    ax_count.set_title(_text(labels.incidents_title), loc="left", fontsize=11, **font)
    for name, values, label in (("detect", data.detect_minutes, labels.detect),
                                ("recover", data.recover_minutes, labels.recover)):
        ax_time.plot(x, list(values), label=_text(label), markersize=5, **WEEKLY_STYLE[name])
    finite = [v for v in (*data.detect_minutes, *data.recover_minutes) if math.isfinite(v)]
    ax_time.set_ylim(0, max([*finite, 1.0]) * 1.4)  # room above the highest point for the legend
    ax_time.set_title(_text(labels.durations_title), loc="left", fontsize=11, **font)
    ax_time.legend(loc="upper right", frameon=False, prop=FontProperties(family=families, size=10))
    ax_time.set_xticks(x, [_text(week) for week in data.weeks], fontsize=9, **font)
    for ax in (ax_count, ax_time):
        ax.grid(True, axis="y", color="#E5E5E5", linewidth=0.8)
        ax.set_axisbelow(True)
    figure.text(0.07, 0.015, _text(labels.footnote), fontsize=9, color="#444444", wrap=True, **font)
    return figure
