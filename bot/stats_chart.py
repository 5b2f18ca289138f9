"""The weekly chart of `/incident stats`: drawn after the answer, sent to the asker's direct messages with the bot.

Why there: the answer is ephemeral and cannot carry a file, and the channel the command was typed in is seen by
others while the numbers may cover private incidents only the asker may see. conversations.open (scope im:write)
gives the direct message, and the PNG goes up through the same files upload v2 flow as the evidence and the report.
A replay of the command (the same trigger_id) is answered again, as any read-only command is, but sends no second
chart: the chart claims its trigger_id in seen_requests first (bot.replays), on any instance.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot import replays
from bot.context import Context
from bot.evidence.chart import WeeklyChartData, WeeklyChartLabels, render_weekly_png
from bot.ports import MessengerError
from bot.stats import Period, Stats, Summary

log = logging.getLogger(__name__)

CLAIM_KIND = "stats_chart"


def file_name(period: Period) -> str:
    return f"incident_stats_{period.key}.png"


def _minutes(value: timedelta | None) -> float:
    return math.nan if value is None else value.total_seconds() / 60


def chart_data(ctx: Context, summary: Summary) -> WeeklyChartData:
    fmt = ctx.formatter()
    return WeeklyChartData(
        weeks=tuple(f"{fmt.local(w.start):%m-%d}" for w in summary.weeks),
        incidents=tuple(w.incidents for w in summary.weeks),
        detect_minutes=tuple(_minutes(w.detect_median) for w in summary.weeks),
        recover_minutes=tuple(_minutes(w.recover_median) for w in summary.weeks),
    )


def chart_labels(ctx: Context, summary: Summary) -> WeeklyChartLabels:
    """The words of templates/messages/stats.j2 (`chart_*`), as plain text: the chart is not Slack mrkdwn."""
    fmt = ctx.formatter()

    def say(macro: str, /, **params: Any) -> str:
        return html.unescape(ctx.say(f"stats.{macro}", **params))

    return WeeklyChartLabels(
        title=say("chart_title", period=summary.period), incidents_title=say("chart_incidents"),
        durations_title=say("chart_durations"), detect=say("chart_detect"), recover=say("chart_recover"),
        footnote=say("chart_footnote", zone=fmt.abbreviation(fmt.local(summary.period.until))),
    )


def send(ctx: Context, result: Stats, user_id: str, trigger_id: str | None, report: Callable[[str], None]) -> None:
    """Draws the chart and uploads it to `user_id`'s direct message with the bot; a failure is told to the asker
    through `report`, never raised (the numbers were answered already)."""
    summary = result.summary
    if not summary.incidents:
        return
    try:
        if not _first(ctx, user_id, trigger_id):
            return
    except SQLAlchemyError:
        log.warning("could not claim the stats chart of this request; sending none", exc_info=True)
        report(ctx.say("stats.chart_failed", reason="database unavailable"))
        return
    try:
        png = render_weekly_png(chart_data(ctx, summary), chart_labels(ctx, summary))
    except Exception:
        log.exception("the weekly stats chart could not be drawn")
        report(ctx.say("stats.chart_failed", reason="drawing failed"))
        return
    try:
        channel = ctx.messenger.open_dm(user_id)
        ctx.messenger.upload_file(channel, None, file_name(summary.period), png,
                                  title=html.unescape(ctx.say("stats.chart_title", period=summary.period)),
                                  initial_comment=ctx.say("stats.chart_comment", period=summary.period))
    except MessengerError as error:
        report(ctx.say("stats.chart_failed", reason=error.kind))


def _first(ctx: Context, user_id: str, trigger_id: str | None) -> bool:
    """Whether this is the first delivery of the command to send a chart (a request without a trigger_id is)."""
    if not trigger_id:
        return True
    key = f"chart:{trigger_id}"[: replays.MAX_TRIGGER_ID]
    with ctx.db.session() as session:
        return replays.first_delivery(session, ctx.clock.now(), key, CLAIM_KIND, user_id)
