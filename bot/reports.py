"""Delivering the post-mortem document into the incident's thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update

from bot import durations, timeline
from bot.context import Context
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


def deliver(ctx: Context, delivery: Delivery) -> str:
    """Renders and uploads (files upload v2, into the thread). Raises MessengerError; the row keeps the error."""
    with ctx.db.session() as session:
        report = session.get_one(Report, delivery.report_id)
        incident = session.get_one(Incident, report.incident_id)
        incident_id, channel, thread_ts = incident.id, incident.channel_id, incident.announcement_ts
    if thread_ts is None:
        raise MessengerError("announcement_not_posted", "the incident thread does not exist yet")
    document = render_report(ctx, incident_id, delivery.locale)
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
    return file_id


def has_posted_report(ctx: Context, incident_id: int) -> bool:
    with ctx.db.session() as session:
        return session.scalar(
            select(Report.id).where(Report.incident_id == incident_id, Report.posted_at.is_not(None)).limit(1)
        ) is not None
