"""`/incident evidence` and `/incident verify`: Google Cloud evidence and the rollback check, run in the
background after the ack; results go to the incident thread."""

from __future__ import annotations

import logging

from slack_bolt import Respond

from bot import incidents
from bot.context import Context
from bot.evidence import service
from bot.parsing import UsageError
from handlers.commands import Answer, CommandRequest, incident_subcommand

log = logging.getLogger(__name__)


def _target(ctx: Context, request: CommandRequest, sub: str) -> tuple[int, str, str]:
    """(incident id, public id, service), or UsageError saying what is missing. Stores nothing."""
    if request.rest:
        raise UsageError("extra_text", sub, value=request.rest)
    missing = service.missing_settings(ctx.settings)
    if missing:
        raise UsageError("evidence_not_configured", sub, missing=missing)
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, request.channel_id, request.parsed.incident_id)
        name = service.service_of(incident, ctx.settings)
        if not name:
            raise UsageError("evidence_no_service", sub, public_id=incident.public_id)
        return incident.id, incident.public_id, name


@incident_subcommand("evidence")
def evidence(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    incident_id, public_id, name = _target(ctx, request, "evidence")
    if not service.claim(ctx, incident_id):
        return Answer(text=ctx.say("evidence.already_running", public_id=public_id))
    ctx.jobs.submit(_capture, ctx, incident_id, public_id, request.user_id, request.user_name, respond)
    return Answer(text=ctx.say("evidence.capture_ack", public_id=public_id, service=name))


def _capture(ctx: Context, incident_id: int, public_id: str, user_id: str, user_name: str,
             respond: Respond) -> None:
    try:
        outcome = service.capture_job(ctx, incident_id, actor=user_id, actor_name=user_name)
    except Exception:
        log.exception("evidence capture failed", extra={"json_fields": {"incident_id": public_id}})
        respond(response_type="ephemeral", replace_original=False,
                text=ctx.say("evidence.failed", public_id=public_id, command="evidence"))
        return
    if outcome.slack_error:
        respond(response_type="ephemeral", replace_original=False,
                text=ctx.say("evidence.capture_not_posted", public_id=public_id, reason=outcome.slack_error))


@incident_subcommand("verify")
def verify(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    incident_id, public_id, name = _target(ctx, request, "verify")
    ctx.jobs.submit(_verify, ctx, incident_id, public_id, request.user_id, request.user_name, respond)
    return Answer(text=ctx.say("evidence.verify_ack", public_id=public_id, service=name))


def _verify(ctx: Context, incident_id: int, public_id: str, user_id: str, user_name: str,
            respond: Respond) -> None:
    try:
        outcome = service.verify(ctx, incident_id, actor=user_id, actor_name=user_name)
    except Exception:
        log.exception("rollback verification failed", extra={"json_fields": {"incident_id": public_id}})
        respond(response_type="ephemeral", replace_original=False,
                text=ctx.say("evidence.failed", public_id=public_id, command="verify"))
        return
    if outcome.slack_error:
        respond(response_type="ephemeral", replace_original=False,
                text=ctx.say("evidence.verify_not_posted", public_id=public_id, reason=outcome.slack_error))
