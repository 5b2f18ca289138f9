"""Delivering the post-mortem document into the incident's thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import select, update

from bot import durations, report_canvas, timeline
from bot.context import Context
from bot.evidence import chart
from bot.ports import MessengerError
from bot.report import render_report, report_filename
from storage.models import Incident, Report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    report_id: int
    public_id: str
    filename: str
    locale: str


def request_report(ctx: Context, incident_id: int, locale: str, user_id: str | None) -> Delivery:
    """Records the request first, so a failed upload is visible and can be retried."""
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        filename = report_filename(incident.public_id, locale, ctx.settings.locale)
        report = Report(
            incident_id=incident.id, locale=locale, filename=filename, requested_by=user_id,
            requested_at=ctx.clock.now(),
        )
        session.add(report)
        session.flush()
        return Delivery(report.id, incident.public_id, filename, locale)


def summary_line(ctx: Context, incident_id: int, locale: str, filename: str) -> str:
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        d = durations.compute(incident)
        return ctx.renderer.say(
            "postmortem.report_summary", locale, incident=incident, durations=d, fmt=ctx.formatter(locale),
            filename=filename,
        )


def report_chart(ctx: Context, incident_id: int, locale: str) -> chart.ChartFile | None:
    """The latest evidence chart, drawn for a report in `locale`, under the name the report embeds: the name it
    was posted with, marked with the language like the report's own file (`….en.png`) when that is not the
    configured one. None when no capture had data or it cannot be drawn: the report never waits on a picture."""
    try:
        drawn = chart.latest_chart(ctx, incident_id, locale)
    except Exception:
        log.exception("the report's evidence chart could not be drawn; the report goes out without it")
        return None
    if drawn is None or drawn.png is None:
        return None
    if locale != ctx.settings.locale:
        drawn = replace(drawn, filename=drawn.filename.removesuffix(".png") + f".{locale}.png")
    return drawn


def deliver(ctx: Context, delivery: Delivery, *, tell: Callable[[str], None] | None = None) -> str:
    """Renders and uploads (files upload v2, into the thread), the evidence chart beside the document, and with
    REPORT_CANVAS the canvas after them. Raises MessengerError when the document cannot be posted; the row keeps
    the error. `tell` reaches the person who asked, with what went wrong with the canvas."""
    with ctx.db.session() as session:
        report = session.get_one(Report, delivery.report_id)
        incident = session.get_one(Incident, report.incident_id)
        incident_id, channel, thread_ts = incident.id, incident.channel_id, incident.home_thread_ts
        announced = incident.announcement_ts is not None
    if not announced:
        raise MessengerError("announcement_not_posted", "the incident thread does not exist yet")
    picture = report_chart(ctx, incident_id, delivery.locale)
    document = render_report(ctx, incident_id, delivery.locale, chart_file=picture.filename if picture else None)
    summary = summary_line(ctx, incident_id, delivery.locale, delivery.filename)
    try:
        file_id = ctx.messenger.upload_file(
            channel, thread_ts, delivery.filename, document.encode("utf-8"), title=delivery.filename,
            initial_comment=summary,
        )
    except MessengerError as error:
        with ctx.db.session() as session:
            session.execute(update(Report).where(Report.id == delivery.report_id).values(error=str(error)))
        raise
    now = ctx.clock.now()
    with ctx.db.session() as session:
        session.execute(
            update(Report).where(Report.id == delivery.report_id).values(posted_at=now, file_id=file_id, error=None)
        )
        incident = session.get_one(Incident, incident_id)
        timeline.add_system_event(
            session, incident, actor=None, at=now, action="report", data={"filename": delivery.filename}
        )
        ctx.hooks.on_report_posted.fire(session, incident)
    # The document first, and on record: a picture that fails cannot lose or repeat it. A rerun is a new report,
    # which posts both again once.
    if picture is not None and picture.png is not None:
        _upload_chart(ctx, delivery, channel, thread_ts, picture.filename, picture.png)
    if ctx.settings.report_canvas:
        chart_file = picture.filename if picture else None
        target = report_canvas.Target(incident_id, delivery.public_id, delivery.locale, channel, thread_ts,
                                      delivery.filename)
        _write_canvas(ctx, target, document, chart_file, tell)
    return file_id


def _write_canvas(ctx: Context, target: report_canvas.Target, document: str, chart_file: str | None,
                  tell: Callable[[str], None] | None) -> None:
    """The canvas step: after the document, so nothing here can cost it; a failure is told, never raised."""
    try:
        outcome = report_canvas.publish(ctx, target, document, lambda: render_report(
            ctx, target.incident_id, target.locale, chart_file=chart_file))
        message = report_canvas.failure_message(ctx, outcome, target)
    except Exception:
        log.exception("the report canvas of %s could not be written", target.public_id)
        message = ctx.say("canvas.failed", reason="error", home=report_canvas.home_channel(target))
    if message is not None and tell is not None:
        tell(message)


def _upload_chart(ctx: Context, delivery: Delivery, channel: str, thread_ts: str | None, filename: str,
                  png: bytes) -> None:
    """Beside the document; a failure is logged and kept on the (posted) report's row, never raised."""
    try:
        ctx.messenger.upload_file(channel, thread_ts, filename, png, title=filename)
    except MessengerError as error:
        log.warning("report chart upload %s failed: %s", filename, error.kind,
                    extra={"json_fields": {"incident_id": delivery.public_id}})
        with ctx.db.session() as session:
            session.execute(update(Report).where(Report.id == delivery.report_id)
                            .values(error=f"chart {filename} not uploaded: {error}"))


def has_posted_report(ctx: Context, incident_id: int) -> bool:
    with ctx.db.session() as session:
        return session.scalar(
            select(Report.id).where(Report.incident_id == incident_id, Report.posted_at.is_not(None)).limit(1)
        ) is not None
