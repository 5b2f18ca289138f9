"""`/incident status|severity|role|milestone|timeline|list`: parse, change through bot.lifecycle, answer ephemerally.

Each subcommand opens one unit of work and hands its session to bot.lifecycle; the Slack work a change queues
runs only once that unit has committed, and the answer is sent after it.
"""

from __future__ import annotations

from slack_bolt import Respond
from sqlalchemy.orm import Session

from bot import channels, durations, incidents, lifecycle
from bot.context import Context
from bot.parsing import UsageError, decode, milestone_time, parse_milestone, parse_role, parse_severity, parse_status
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand, tell
from handlers.slack_limits import fits
from storage.models import Incident


def _target(ctx: Context, session: Session, request: CommandRequest) -> int:
    return incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id).id


def _no_extra(request: CommandRequest, sub: str) -> None:
    if request.rest:
        raise UsageError("extra_text", sub, value=decode(request.rest)[:40])


def _reporter(respond: Respond) -> lifecycle.Report:
    """A failed Slack step after the ack goes back to the person, ephemerally, through the response_url."""

    def report(text: str) -> None:
        tell(respond, text)

    return report


@incident_subcommand("status")
def status(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    new = parse_status(request.rest)
    with ctx.db.session() as session:
        incident_id = _target(ctx, session, request)
        change = lifecycle.change_status(
            ctx, session, incident_id, new, actor=request.user_id, actor_name=request.user_name,
            report=_reporter(respond),
        )
        home = channels.home_channel(session.get_one(Incident, incident_id))
    if change.outcome == "unchanged":
        return Answer(text=ctx.say("lifecycle.status_unchanged", public_id=change.public_id, status=new))
    return Answer(text=ctx.say("lifecycle.status_changed", public_id=change.public_id, old=change.old, new=new,
                               closed=change.closed, reopened=change.reopened, home=home))


@incident_subcommand("severity")
def severity(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    new = parse_severity(request.rest)
    with ctx.db.session() as session:
        change = lifecycle.change_severity(
            ctx, session, _target(ctx, session, request), new, actor=request.user_id, actor_name=request.user_name,
            report=_reporter(respond),
        )
    if change.outcome == "unchanged":
        return Answer(text=ctx.say("lifecycle.severity_unchanged", public_id=change.public_id, severity=new))
    return Answer(text=ctx.say("lifecycle.severity_changed", public_id=change.public_id, old=change.old, new=new))


@incident_subcommand("role")
def role(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    wanted = parse_role(request.rest, ctx.settings.roles)
    with ctx.db.session() as session:
        change = lifecycle.assign_role(
            ctx, session, _target(ctx, session, request), wanted.role, wanted.user_id, wanted.user_name,
            actor=request.user_id, actor_name=request.user_name, report=_reporter(respond),
        )
    if change.outcome == "unchanged":
        return Answer(text=ctx.say("lifecycle.role_unchanged", public_id=change.public_id, role=wanted.role,
                                   user=wanted.user_id))
    return Answer(text=ctx.say("lifecycle.role_assigned", public_id=change.public_id, role=wanted.role,
                               user=wanted.user_id, old=change.old))


@incident_subcommand("milestone")
def milestone(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    wanted = parse_milestone(request.rest)
    at = milestone_time(wanted.time_text, ctx.clock.now(), ctx.settings.timezone)
    with ctx.db.session() as session:
        incident_id = _target(ctx, session, request)
        result = lifecycle.set_milestone(
            ctx, session, incident_id, wanted.name, at, request.user_id, request.user_name,
            source={"via": "command"}, report=_reporter(respond),
        )
        if not result.ok:
            raise lifecycle.refusal(ctx, session, incident_id, result)
        incident = session.get_one(Incident, incident_id)
        shown = lifecycle.display(ctx, incident, result.at)
        if result.outcome == "unchanged":
            answer = ctx.say("lifecycle.milestone_unchanged", public_id=result.public_id, milestone=wanted.name,
                             display=shown)
        else:
            answer = ctx.say(
                "lifecycle.milestone_set", public_id=result.public_id, milestone=wanted.name, display=shown,
                old_display=lifecycle.display(ctx, incident, result.old), d=durations.compute(incident),
                fmt=ctx.formatter(), closed=result.closed, home=channels.home_channel(incident),
            )
    return Answer(text=answer)


@incident_subcommand("timeline")
def timeline(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    _no_extra(request, "timeline")
    # The newest events Slack takes; the answer says how many earlier ones are left to the report.
    with ctx.db.session() as session:
        message = lifecycle.timeline_view(ctx, session, _target(ctx, session, request),
                                          lambda m: fits(m.text, m.blocks))
    return Answer(text=message.text, blocks=message.blocks)


@incident_subcommand("list")
def list_(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    _no_extra(request, "list")
    with ctx.db.session() as session:
        return Answer(text=lifecycle.list_view(ctx, session, asking(ctx, request)))
