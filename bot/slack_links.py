"""Links into Slack built without asking Slack: the workspace URL (auth.test, asked once per process) and a
message's ts give its permalink, as chat.getPermalink would, for no request per message. A leaf module."""

from __future__ import annotations

import logging

from bot.context import Context
from bot.ports import MessengerError
from storage.models import Incident

log = logging.getLogger(__name__)


def workspace_url(ctx: Context) -> str | None:
    """`https://<workspace>.slack.com/`, or None when Slack can't say now (links are then left out)."""
    try:
        return ctx.messenger.workspace_url or None
    except MessengerError as error:
        log.warning("workspace URL unavailable (%s); links to Slack are left out", error.kind)
        return None


def message_link(workspace: str | None, channel: str, ts: str | None) -> str | None:
    """Slack's permalink form: https://<workspace>.slack.com/archives/<channel>/p<ts without its dot>."""
    if not workspace or not ts:
        return None
    return f"{workspace.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


def thread_link(workspace: str | None, incident: Incident) -> str | None:
    """The incident's announcement: its thread's start, or in channel mode the message atop its channel."""
    return message_link(workspace, incident.channel_id, incident.announcement_ts)
