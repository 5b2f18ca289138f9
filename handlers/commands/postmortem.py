"""`/postmortem report` and `/postmortem help`."""

from __future__ import annotations

from slack_bolt import Respond

from bot import channels, incidents, reports
from bot.context import Context
from bot.parsing import UsageError
from bot.ports import MessengerError
from bot.settings import LOCALES
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, postmortem_subcommand, tell


@postmortem_subcommand("help")
def help_(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    return Answer(text=ctx.say("postmortem.help"))


@postmortem_subcommand("report")
def report(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    locale = request.rest.strip().lower() or ctx.locale
    if locale not in LOCALES:
        raise UsageError("bad_locale", "report", value=request.rest.strip())
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        incident_id, public_id, home = incident.id, incident.public_id, channels.home_channel(incident)
    delivery = reports.request_report(ctx, incident_id, locale, request.user_id)
    ctx.jobs.submit(_deliver, ctx, delivery, respond)
    return Answer(text=ctx.say("postmortem.report_ack", public_id=public_id, filename=delivery.filename, home=home))


def _deliver(ctx: Context, delivery: reports.Delivery, respond: Respond) -> None:
    try:
        reports.deliver(ctx, delivery, tell=lambda text: tell(respond, text))
    except MessengerError as error:
        tell(respond, ctx.say("postmortem.report_failed", filename=delivery.filename, reason=error.kind))
