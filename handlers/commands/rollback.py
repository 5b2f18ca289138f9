"""`/incident rollback [REVISION]`: proposes rolling the incident's Cloud Run service back, in its thread.

The answer comes at once; reading Cloud Run and posting the proposal run in the background. While
ROLLBACK_ENABLED is off the command only explains how to turn it on.
"""

from __future__ import annotations

import re

from slack_bolt import Respond

from bot import channels, incidents, rollback
from bot.context import Context
from bot.evidence import service
from bot.parsing import UsageError
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, incident_subcommand

# A Cloud Run revision name: lowercase letters, digits and hyphens, at most 63.
REVISION = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")


@incident_subcommand("rollback")
def rollback_command(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    settings = ctx.settings
    if not settings.rollback_enabled:
        return Answer(text=ctx.say("rollback.disabled"))
    words = request.rest.split()
    if len(words) > 1:
        raise UsageError("extra_text", "rollback", value=" ".join(words[1:]))
    asked = words[0] if words else None
    if asked is not None and not REVISION.fullmatch(asked):
        return Answer(text=ctx.say("rollback.bad_revision", value=asked))
    missing = service.missing_settings(settings)
    if missing:
        raise UsageError("evidence_not_configured", "rollback", missing=missing)
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        name = service.service_of(incident, settings)
        if not name:
            raise UsageError("evidence_no_service", "rollback", public_id=incident.public_id)
        if not incident.is_open:
            raise UsageError("incident_closed", "rollback", incident_id=incident.public_id, status=incident.status)
        incident_id, public_id, home = incident.id, incident.public_id, channels.home_channel(incident)
    ctx.jobs.submit(rollback.propose_job, ctx, incident_id, asked, request.user_id)
    return Answer(text=ctx.say("rollback.reading", public_id=public_id, service=name, home=home))
