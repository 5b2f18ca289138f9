"""Archiving a channel-mode incident's channel, INCIDENT_CHANNEL_ARCHIVE_AFTER after it is done with.

The archive is a reminder row (`reminders.CHANNEL_ARCHIVE`), so it is durable, survives restarts, and is claimed
and retried like any reminder: carried out once (`already_archived` counts as done). Decided here:
- It falls due ARCHIVE_AFTER after the later of the resolution and the latest posted report: scheduled when a
  resolved incident's report is posted, or when an incident with a posted report is resolved; a report posted again
  before it fires moves it later.
- Reopening the incident cancels it; resolving again schedules it afresh. Delivery checks again that the
  incident is still resolved. A cancelled incident's channel is left to people: it has no report to wait for.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot import channels, reminders
from bot.context import Context
from storage.models import Incident


def schedule(ctx: Context, session: Session, incident: Incident) -> None:
    after = ctx.settings.channel_archive_after
    if (after is None or not channels.is_channel_mode(incident) or incident.status != "resolved"
            or not reminders.has_report(session, incident.id)):
        return
    reminders.schedule_once(ctx, session, incident.id, reminders.CHANNEL_ARCHIVE, ctx.clock.now() + after)


def cancel(ctx: Context, session: Session, incident: Incident) -> None:
    reminders.cancel_kind(ctx, session, incident.id, reminders.CHANNEL_ARCHIVE, "cancelled: incident reopened")


def install(ctx: Context) -> None:
    ctx.hooks.on_report_posted.register(schedule)
    ctx.hooks.on_closed.register(schedule)
    ctx.hooks.on_reopened.register(cancel)
