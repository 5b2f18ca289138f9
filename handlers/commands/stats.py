"""`/incident stats [30d|90d|YYYY-MM]`: the numbers at once in the ephemeral answer (three SQL statements, no Slack
call), then the weekly chart, drawn after the ack and sent to the asker's direct messages (bot/stats_chart.py).

Read-only (READ_ONLY_SUBCOMMANDS): it changes nothing, so it spends no rate budget. Which incidents count and who
may see them: bot/stats.py. When private channels are involved and Slack has not said lately which the asker is
in, the answer comes through the response_url once it has (handlers/commands/access.py).
"""

from __future__ import annotations

from slack_bolt import Respond

from bot import stats, stats_chart
from bot.context import Context
from bot.parsing import UsageError, decode
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand, tell


@incident_subcommand("stats")
def stats_command(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    now = ctx.clock.now()
    zone = ctx.settings.timezone
    # Stats name no incident: an ID typed here is a bad period, not a target.
    text = request.rest if request.parsed.incident_id is None else request.parsed.incident_id
    try:
        period = stats.parse_period(decode(text), now, zone)
    except UsageError as error:
        value = str(error.params.get("value", ""))
        usage = ctx.say("stats.usage", zone=ctx.formatter().zone_label)
        return Answer(text=f"{ctx.say('stats.error', code=error.code, value=value)}\n{usage}")
    with ctx.db.read() as session:
        result = stats.compute(session, asking(ctx, request), period, now, zone)
    chart = result.summary.incidents > 0

    def report(message: str) -> None:
        tell(respond, message)

    if chart:
        ctx.jobs.submit(stats_chart.send, ctx, result, request.user_id, request.trigger_id, report)
    return Answer(text=ctx.say("stats.report", s=result, fmt=ctx.formatter(), chart=chart))
