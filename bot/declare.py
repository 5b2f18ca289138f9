"""Declaring an incident from a form: `/incident open` without a title, and the "Declare incident" shortcut.

The form asks what `/incident open` takes (title, severity, Cloud Run service) and what a command line carries
badly: the lead (by default the person), a description, and, from the global shortcut, which comes from no
channel, the channel to announce in (by default ALERT_CHANNEL). Its submission opens the incident through
bot.incidents.open_incident, as the command does, and in the same transaction takes the `open` rate budget and
records the form, so that a refusal stores nothing and one form submitted twice opens one incident.

The description goes on the timeline, right after "Incident opened", in the words of the person who declared.
The guide's announcement is a fixed form (situation, cause, status, next steps) without a line for free text, and
it is rewritten on every change, so it stays exactly as `/incident open` posts it.

A channel chosen in the form must be one the bot is in (or the announcement could not be posted) and one the
person is in (as for any command on another channel's incident). Only Slack knows both, and the submission must
be answered within 3 seconds without a Slack call, so the answers are asked for when the form opens
(`look_up_access`) and kept as bot.access keeps them; without a fresh one the form asks to submit again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import access, incidents, lifecycle, ratelimit, replays, timeline
from bot.context import Context
from bot.parsing import MAX_TITLE, SERVICE_NAME_RE, SEVERITIES, OpenRequest
from bot.ports import MessengerError
from bot.sanitize import clean_text
from storage.models import SeenRequest

log = logging.getLogger(__name__)

FIELDS = ("title", "severity", "service", "lead", "description", "channel")
DEFAULT_SEVERITY = OpenRequest(title="").severity  # what `/incident open` takes without `sev:`
MAX_DESCRIPTION = 3000  # a plain_text_input holds at most 3,000 characters
MAX_SERVICE = 63
LEAD_ROLE = "lead"
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
_FORM_KEY = "declare:"  # a submitted form's row in seen_requests, beside the trigger_ids of bot.replays
_FORM_KIND = "declare_form"


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class DeclareForm:
    """What the modal shows: its words, the severities, and what it starts with."""

    title: str
    submit: str
    close: str
    labels: Mapping[str, str]  # field → label
    hints: Mapping[str, str]  # field → hint, for the fields that have one
    severities: tuple[Choice, ...]
    severity: str
    lead: str  # the person who opens the form
    channel: str | None  # the command's channel: fixed, so the form does not ask
    initial_channel: str | None  # what the channel field starts with when the form asks

    @property
    def asks_channel(self) -> bool:
        return self.channel is None


@dataclass(frozen=True)
class Submitted:
    """The form's fields as submitted, each "" when left empty."""

    title: str = ""
    severity: str = ""
    service: str = ""
    lead: str = ""
    description: str = ""
    channel: str = ""


@dataclass(frozen=True)
class DeclareRequest:
    open: OpenRequest
    channel_id: str
    lead: str | None
    description: str | None


@dataclass(frozen=True)
class Declared:
    incident_id: int
    public_id: str
    again: bool  # the form had been submitted and had opened it already: nothing new was stored
    opened: incidents.Opened | None = None  # as committed, with the announcement's lease taken for the caller's job


class FieldErrors(ValueError):
    """Bad input, by field (one of FIELDS): the form shows each message under its field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(errors))
        self.errors = dict(errors)


def channel_id(value: str) -> str | None:
    """A conversation ID as Slack writes it, or None."""
    return value if _CHANNEL_ID.match(value or "") else None


def form(ctx: Context, user_id: str, channel: str | None) -> DeclareForm:
    """The form for `user_id`; `channel` is the command's, or None from the global shortcut. Reads neither the
    database nor Slack: the modal must open within the trigger's 3 seconds."""
    labels = {name: ctx.say(f"declare.label_{name}") for name in FIELDS}
    hints = {"title": ctx.say("declare.hint_title"), "description": ctx.say("declare.hint_description"),
             "service": ctx.say("declare.hint_service", default=ctx.settings.cloud_run_service or ""),
             "channel": ctx.say("declare.hint_channel")}
    return DeclareForm(
        title=ctx.say("declare.modal_title"), submit=ctx.say("declare.modal_submit"),
        close=ctx.say("declare.modal_close"), labels=labels, hints=hints,
        severities=tuple(Choice(name, name.upper()) for name in SEVERITIES), severity=DEFAULT_SEVERITY,
        lead=user_id, channel=channel, initial_channel=None if channel else ctx.settings.alert_channel,
    )


def validate(ctx: Context, submitted: Submitted, *, channel: str | None) -> DeclareRequest:
    """The request the form makes, cleaned as `/incident open` cleans its text; FieldErrors names every bad field.
    `channel` is the form's fixed channel (from the command), else the submitted one counts."""
    errors: dict[str, str] = {}
    title = " ".join(clean_text(submitted.title).split())
    if not title:
        errors["title"] = ctx.say("incident.error", code="missing_title", params={})
    elif len(title) > MAX_TITLE:
        errors["title"] = ctx.say("incident.error", code="title_too_long", params={"limit": MAX_TITLE})
    severity = submitted.severity.strip().lower() or DEFAULT_SEVERITY
    if severity not in SEVERITIES:
        errors["severity"] = ctx.say("declare.bad_severity")
    service = clean_text(submitted.service).strip() or None
    if service is not None and (len(service) > MAX_SERVICE or not SERVICE_NAME_RE.fullmatch(service)):
        errors["service"] = ctx.say("declare.bad_service")
    lead = submitted.lead.strip() or None
    if lead is not None and not _USER_ID.match(lead):
        errors["lead"] = ctx.say("declare.bad_lead")
    description = clean_text(submitted.description).strip() or None
    if description is not None and len(description) > MAX_DESCRIPTION:
        errors["description"] = ctx.say("declare.description_too_long", limit=MAX_DESCRIPTION)
    target = channel or channel_id(submitted.channel.strip())
    if target is None:
        errors["channel"] = ctx.say("declare.missing_channel")
    if errors:
        raise FieldErrors(errors)
    assert target is not None
    return DeclareRequest(OpenRequest(title=title, severity=severity, service=service), target, lead, description)


# ---- the channel chosen in the form --------------------------------------------------------------------------


def look_up_access(ctx: Context, user_id: str) -> None:
    """Asks Slack which channels the person and the bot are in (after the form has opened), so that its
    submission finds the answers fresh. A failure only leaves the submission to ask for a moment."""
    memberships = access.memberships(ctx)
    try:
        for who in (user_id, ctx.messenger.bot_user_id):
            memberships.ask(who)
    except MessengerError as error:
        log.warning("could not look up channel memberships for the declare form: %s", error.kind)


def check_channel(ctx: Context, channel: str, *, user_id: str, bot_user_id: str | None) -> None:
    """Returns when the bot can post in `channel` and the person is a member there. Raises FieldErrors on the
    channel, or access.AccessPending when Slack's answers are not fresh (look_up_access, then submit again)."""
    memberships = access.memberships(ctx)
    bot_channels = memberships.channels_of(bot_user_id) if bot_user_id else None
    user_channels = memberships.channels_of(user_id)
    if bot_channels is None or user_channels is None:
        raise access.AccessPending(user_id, None, ())
    # The bot first: Slack lists a private channel among the person's only when the bot is in it too.
    if channel not in bot_channels:
        raise FieldErrors({"channel": ctx.say("declare.bot_not_in_channel")})
    if channel not in user_channels:
        raise FieldErrors({"channel": ctx.say("declare.not_member")})


# ---- the submission --------------------------------------------------------------------------------------------


def declare(ctx: Context, session: Session, request: DeclareRequest, *, user_id: str, user_name: str | None,
            form_id: str | None) -> Declared:
    """Opens the incident exactly as `/incident open` does, with the lead and the description, in the caller's
    unit of work. `form_id` (Slack's view id) makes a second submission of the same form answer with the
    incident the first one opened. Raises ratelimit.RateLimited (the caller rolls back: nothing is stored)."""
    now = ctx.clock.now()
    key = f"{_FORM_KEY}{form_id}" if form_id else None
    if key is not None and not replays.first_delivery(session, now, key, _FORM_KIND, user_id):
        # On PostgreSQL the first submission has committed (or rolled back, and then this one won) by now.
        answer = session.scalar(select(SeenRequest.answer).where(SeenRequest.trigger_id == key)) or {}
        return Declared(int(answer.get("incident_id", 0)), str(answer.get("public_id", "")), again=True)
    limits = ratelimit.command_limits(ctx, ratelimit.OPEN, user_id, request.channel_id)
    ratelimit.take(session, ratelimit.OPEN, limits, now=now, window=ctx.settings.rate_limit_window)
    incident = incidents.open_incident(ctx, session, request.open, channel_id=request.channel_id, user_id=user_id,
                                       user_name=user_name, announcing=True)
    if request.description:  # right after "Incident opened": the same moment, the next row
        timeline.add_system_event(session, incident, actor=user_id, actor_name=user_name, at=incident.opened_at,
                                  action="description", text=request.description)
    roles: tuple[tuple[str, str], ...] = ()
    if request.lead and LEAD_ROLE in ctx.settings.roles:
        lifecycle.assign_role(ctx, session, incident.id, LEAD_ROLE, request.lead, None, actor=user_id,
                              actor_name=user_name)
        roles = ((LEAD_ROLE, request.lead),)
    if key is not None:
        session.execute(update(SeenRequest).where(SeenRequest.trigger_id == key)
                        .values(answer={"incident_id": incident.id, "public_id": incident.public_id}))
    return Declared(incident.id, incident.public_id, again=False, opened=incidents.Opened(incident, roles))
