"""`/postmortem` content: why, root-cause, action, actions, impact, lesson, prevent, checklist, edit.

Each subcommand parses first (bad input raises UsageError before anything is stored), stores in one transaction,
answers ephemerally, and leaves Slack posts (item messages, the checklist, the announcement refresh) to ctx.jobs.
"""

from __future__ import annotations

import logging

from slack_bolt import Respond

from bot import channels, incidents, pm_parsing, postmortem
from bot.context import Context
from bot.parsing import UsageError
from bot.ports import MessengerError
from bot.render import most_that_fits
from handlers import modals
from handlers.blocks import postmortem as blocks
from handlers.commands.access import asking
from handlers.commands.base import Answer, CommandRequest, Subcommand, postmortem_subcommand, tell
from handlers.slack_limits import fits
from storage.models import ImpactValue

log = logging.getLogger(__name__)
ACTIONS_LIMIT = 100  # items in one `actions` answer at most, Slack's size limits permitting


@postmortem_subcommand("why")
def why(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    command = pm_parsing.parse_why(request.rest)
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        if command.position is None:
            assert command.text is not None
            position = postmortem.add_why(session, incident, command.text, request.user_id)
            return Answer(text=ctx.say("postmortem.why_added", position=position, text=command.text))
        if command.remove:
            count = postmortem.remove_why(session, incident, command.position)
            return Answer(text=ctx.say("postmortem.why_removed", position=command.position, count=count))
        assert command.text is not None
        postmortem.edit_why(session, incident, command.position, command.text, request.user_id)
        return Answer(text=ctx.say("postmortem.why_edited", position=command.position, text=command.text))


@postmortem_subcommand("root-cause", "rootcause", "root_cause")
def root_cause(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    text = pm_parsing.parse_text(request.rest, "root-cause")
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        postmortem.set_root_cause(session, incident, text)
        incident_id = incident.id
    ctx.jobs.submit(_refresh_announcement, ctx, incident_id)
    return Answer(text=ctx.say("postmortem.root_cause_set"))


def _refresh_announcement(ctx: Context, incident_id: int) -> None:
    # The announcement's "원인: [TBD - 분석 중]" line shows the root cause once there is one.
    try:
        incidents.refresh_announcement(ctx, incident_id)
    except MessengerError as error:
        log.warning("announcement refresh failed: %s", error.kind)


@postmortem_subcommand("action")
def action(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    parsed = pm_parsing.parse_action(request.rest, ctx.clock.now(), ctx.settings.timezone)
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        item = postmortem.add_action_item(
            ctx, session, incident, parsed, user_id=request.user_id, user_name=request.user_name or None
        )
        home = channels.home_channel(incident)
        answer = Answer(text=ctx.say("postmortem.action_added", item=item, fmt=ctx.formatter(), home=home))
        item_id = item.id
    ctx.jobs.submit(_post_item, ctx, item_id, home, respond)
    return answer


def _post_item(ctx: Context, item_id: int, home: str | None, respond: Respond) -> None:
    postmortem.remember_owner_name(ctx, item_id)
    try:
        postmortem.post_action_item(ctx, item_id)
    except MessengerError as error:
        # Stored already; the sweep posts it later (retry_unposted_action_items).
        tell(respond, ctx.say("postmortem.action_post_failed", reason=error.kind, home=home))


@postmortem_subcommand("actions")
def actions(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    pm_parsing.no_arguments(request.rest, "actions")
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        items = postmortem.list_actions(session, incident.id)
        fmt, now = ctx.formatter(), ctx.clock.now()

        def render(limit: int) -> str:
            return ctx.renderer.text(
                "postmortem/actions_list", ctx.locale, incident=incident, items=items, fmt=fmt, now=now, limit=limit,
            ).strip()

        # Open items first, by priority (list_actions' order), as many as Slack takes; the rest are counted.
        text = most_that_fits(render, ACTIONS_LIMIT, lambda t: fits(t, None))
    return Answer(text=text)


@postmortem_subcommand("impact")
def impact(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    value = pm_parsing.parse_impact(request.rest)
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        postmortem.record_manual_impact(ctx, session, incident, value, request.user_id)
    view = postmortem.impact_view(value.field, ImpactValue(field=value.field, value=value.canonical(),
                                                           source="manual"))
    return Answer(text=ctx.say("postmortem.impact_set", view=view))


def _note(kind: str) -> Subcommand:
    def handler(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
        text = pm_parsing.parse_note(request.rest, kind)
        with ctx.db.session() as session:
            incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
            position = postmortem.add_note(session, incident, kind, text, request.user_id)
        return Answer(text=ctx.say("postmortem.note_added", kind=kind, position=position, text=text))

    handler.__name__ = kind
    return handler


postmortem_subcommand("lesson")(_note("lesson"))
postmortem_subcommand("prevent")(_note("prevent"))


@postmortem_subcommand("checklist")
def checklist(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    pm_parsing.no_arguments(request.rest, "checklist")
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        incident_id, home = incident.id, channels.home_channel(incident)
    ctx.jobs.submit(_post_checklist, ctx, incident_id, respond)
    return Answer(text=ctx.say("postmortem.checklist_ack", home=home))


def _post_checklist(ctx: Context, incident_id: int, respond: Respond) -> None:
    try:
        postmortem.post_checklist(ctx, incident_id)
    except MessengerError as error:
        tell(respond, ctx.say("postmortem.checklist_failed", reason=error.kind))


@postmortem_subcommand("edit")
def edit(ctx: Context, request: CommandRequest, respond: Respond) -> Answer:
    pm_parsing.no_arguments(request.rest, "edit")
    with ctx.db.session() as session:
        incident = incidents.resolve_target(session, asking(ctx, request), request.parsed.incident_id)
        view = blocks.edit_modal(postmortem.edit_form(ctx, session, incident))
    # The trigger lives 3 s from the command. On the background pool, views.open could queue behind slow Slack
    # posts and miss them; the opener's own pool opens it before the ack, as the declare form does. A missing
    # trigger_id, or one Slack refuses, fails the opening with its reason.
    opening = modals.open_at_once(ctx, request.trigger_id, view, late=lambda error: tell(
        respond, ctx.say("postmortem.error", code="modal_failed", params={"reason": error.kind})))
    if opening.outcome == "failed":
        raise UsageError("modal_failed", "edit", reason=opening.reason)
    return Answer(text=ctx.say("postmortem.edit_opened"))
