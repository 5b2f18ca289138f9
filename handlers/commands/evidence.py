"""`/incident evidence` and `/incident verify`: Google Cloud evidence and the rollback check, run in the
background after the ack; results go to the incident thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Respond

from bot import incidents
from bot.context import Context
from bot.evidence import service
from bot.parsing import UsageError
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand, tell

log = logging.getLogger(__name__)


def _target(ctx: Context, request: CommandRequest, sub: str) -> tuple[int, str, str]:
    """(incident id, public id, service), or UsageError saying what is missing. Stores nothing."""
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
        return incident.id, incident.public_id, name


@incident_subcommand("evidence")
def evidence(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    incident_id, public_id, name = _target(ctx, request, "evidence")
    if not service.claim(ctx, incident_id):
        return Answer(text=ctx.say("evidence.already_running", public_id=public_id))
    ctx.jobs.submit(_run_and_report, ctx, service.capture_job, "evidence", "evidence.capture_not_posted",
                    incident_id, public_id, request, respond)
    return Answer(text=ctx.say("evidence.capture_ack", public_id=public_id, service=name))


@incident_subcommand("verify")
def verify(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    incident_id, public_id, name = _target(ctx, request, "verify")
    ctx.jobs.submit(_run_and_report, ctx, service.verify, "verify", "evidence.verify_not_posted",
                    incident_id, public_id, request, respond)
    return Answer(text=ctx.say("evidence.verify_ack", public_id=public_id, service=name))


def _run_and_report(ctx: Context, run: Callable[..., Any], command: str, not_posted_key: str, incident_id: int,
                    public_id: str, request: CommandRequest, respond: Respond) -> None:
    """Runs a capture or a verification off the request path; tells the invoker when its post didn't land."""
    try:
        outcome = run(ctx, incident_id, actor=request.user_id, actor_name=request.user_name)
    except Exception:
        log.exception("%s failed", command, extra={"json_fields": {"incident_id": public_id}})
        tell(respond, ctx.say("evidence.failed", public_id=public_id, command=command))
        return
    if outcome.slack_error:
        tell(respond, ctx.say(not_posted_key, public_id=public_id, reason=outcome.slack_error))
