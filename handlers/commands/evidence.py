"""`/incident evidence` and `/incident verify`: Google Cloud evidence and the rollback check, run in the
background after the ack; results go to the incident's home (its thread, or its channel)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from slack_bolt import Respond

from bot import channels, incidents
from bot.context import Context
from bot.evidence import service
from bot.parsing import UsageError
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand, tell

log = logging.getLogger(__name__)


class _Target(NamedTuple):
    incident_id: int
    public_id: str
    service: str
    home: str | None  # the incident's own channel (channel mode), for the answers that say where results go


def _target(ctx: Context, request: CommandRequest, sub: str) -> _Target:
    """The incident and its service, or UsageError saying what is missing. Stores nothing."""
    if request.rest:
        raise UsageError("extra_text", sub, value=request.rest)
    missing = service.missing_settings(ctx.settings)
    if missing:
        raise UsageError("evidence_not_configured", sub, missing=missing)
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        name = service.service_of(incident, ctx.settings)
        if not name:
            raise UsageError("evidence_no_service", sub, public_id=incident.public_id)
        return _Target(incident.id, incident.public_id, name, channels.home_channel(incident))


@incident_subcommand("evidence")
def evidence(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    target = _target(ctx, request, "evidence")
    if not service.claim(ctx, target.incident_id):
        return Answer(text=ctx.say("evidence.already_running", public_id=target.public_id, home=target.home))
    ctx.jobs.submit(_run_and_report, ctx, service.capture_job, "evidence", "evidence.capture_not_posted",
                    target, request, respond)
    return Answer(text=ctx.say("evidence.capture_ack", public_id=target.public_id, service=target.service,
                               home=target.home))


@incident_subcommand("verify")
def verify(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    target = _target(ctx, request, "verify")
    ctx.jobs.submit(_run_and_report, ctx, service.verify, "verify", "evidence.verify_not_posted",
                    target, request, respond)
    return Answer(text=ctx.say("evidence.verify_ack", public_id=target.public_id, service=target.service,
                               home=target.home))


def _run_and_report(ctx: Context, run: Callable[..., Any], command: str, not_posted_key: str, target: _Target,
                    request: CommandRequest, respond: Respond) -> None:
    """Runs a capture or a verification off the request path; tells the invoker when its post didn't land."""
    incident_id, public_id = target.incident_id, target.public_id
    try:
        outcome = run(ctx, incident_id, actor=request.user_id, actor_name=request.user_name)
    except Exception:
        log.exception("%s failed", command, extra={"json_fields": {"incident_id": public_id}})
        tell(respond, ctx.say("evidence.failed", public_id=public_id, command=command))
        return
    if outcome.slack_error:
        tell(respond, ctx.say(not_posted_key, public_id=public_id, reason=outcome.slack_error, home=target.home))
