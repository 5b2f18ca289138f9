"""Shortcuts: "Declare incident" (global) opens the declare form; "Add to incident timeline" (on a message) puts
the message on an incident's timeline, or asks which incident in a small modal.

Both use the shortcut's trigger_id at once (handlers/modals.py). The global shortcut reads nothing and stores
nothing before the form is open; afterwards a job asks Slack which channels the person and the bot are in, so
that the form's submission can check the chosen channel without asking Slack before its own ack.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from sqlalchemy.exc import SQLAlchemyError

from bot import access, add_to_timeline, declare
from bot.context import Context
from bot.logsetup import outage_log
from bot.ports import MessengerError
from handlers import modals
from handlers.blocks import add_to_timeline as add_blocks
from handlers.blocks import declare as declare_blocks
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from handlers.views.add_to_timeline import answer_person, confirm, store

log = logging.getLogger(__name__)

# views.open's answers when the trigger could not be used any more: the person only needs to try again.
_TRIGGER_SPENT = ("expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id")


def on_declare(ctx: Context, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
    user: dict[str, Any] = body["user"] if isinstance(body.get("user"), dict) else {}
    user_id = str(user.get("id") or "")
    if not user_id:
        ack()  # not a shortcut as Slack sends one: nobody to open a form for
        return
    view = declare_blocks.declare_modal(declare.form(ctx, user_id, None))
    # A global shortcut has no channel and no response_url: a form that didn't open can only be logged.
    opening = modals.open_at_once(ctx, body.get("trigger_id"), view)
    ack()
    if opening.outcome != "failed":
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            ctx.jobs.submit(declare.look_up_access, ctx, user_id)


def on_message_shortcut(ctx: Context, ack: Ack, shortcut: add_blocks.MessageShortcut, respond: Respond | None) -> None:
    asker = access.asker(ctx, shortcut.user_id, shortcut.message.channel)
    try:
        with ctx.db.read() as session:
            found = add_to_timeline.candidates(session, asker, shortcut.message)
    except access.AccessPending as pending:
        ack()
        ctx.jobs.submit(_after_lookup, ctx, shortcut, pending, respond)
        return
    except SQLAlchemyError:
        outage_log.error(log, "database unavailable while finding incidents for a message")
        ack()
        ctx.jobs.submit(answer_person, respond, ctx.say("incident.error", code="database_unavailable", params={}))
        return
    if len(found) > 1:
        view = add_blocks.chooser_modal(add_to_timeline.choose_form(ctx, found, shortcut.message,
                                                                    shortcut.response_url))
        opening = modals.open_at_once(ctx, shortcut.trigger_id, view,
                                      late=lambda error: answer_person(respond, _not_opened(ctx, error.kind)))
        ack()
        if opening.outcome == "failed":
            ctx.jobs.submit(answer_person, respond, _not_opened(ctx, opening.reason))
        return
    if not found:
        ack()
        ctx.jobs.submit(answer_person, respond, ctx.say("timeline_add.no_incident"))
        return
    stored = store(ctx, found[0].incident_id, shortcut.message, shortcut.user_id)  # stored before the ack
    ack()
    ctx.jobs.submit(confirm, ctx, stored, shortcut.message, respond)


def _not_opened(ctx: Context, reason: str) -> str:
    if reason in _TRIGGER_SPENT:
        return ctx.say("timeline_add.choose_slow")
    return ctx.say("timeline_add.failed", reason=reason)


def _after_lookup(ctx: Context, shortcut: add_blocks.MessageShortcut, pending: access.AccessPending,
                  respond: Respond | None) -> None:
    """Slack said which channels the person is in: the same decision again, after the ack."""
    try:
        access.look_up(ctx, pending)
        with ctx.db.read() as session:
            found = add_to_timeline.candidates(session, access.asker(ctx, shortcut.user_id, shortcut.message.channel),
                                               shortcut.message)
    except (MessengerError, access.AccessPending) as error:  # fail closed: nothing is offered without Slack's word
        answer_person(respond, ctx.say("timeline_add.failed",
                              reason=error.kind if isinstance(error, MessengerError) else "expired"))
        return
    except SQLAlchemyError:
        answer_person(respond, ctx.say("incident.error", code="database_unavailable", params={}))
        return
    if not found:
        answer_person(respond, ctx.say("timeline_add.no_incident"))
    elif len(found) > 1:
        view = add_blocks.chooser_modal(add_to_timeline.choose_form(ctx, found, shortcut.message,
                                                                    shortcut.response_url))
        try:
            # Right after the ack and one lookup: usually well inside the trigger's 3 s.
            ctx.messenger.open_view(shortcut.trigger_id or "", view)
        except MessengerError as error:
            answer_person(respond, _not_opened(ctx, error.kind))
    else:
        confirm(ctx, store(ctx, found[0].incident_id, shortcut.message, shortcut.user_id), shortcut.message,
                respond)


def register(app: App, ctx: Context) -> None:
    @app.global_shortcut(declare_blocks.DECLARE_SHORTCUT)
    def declare_incident(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        on_declare(ctx, ack, body, context)

    @app.message_shortcut(add_blocks.ADD_SHORTCUT)
    @once(ctx)
    def add_message(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        shortcut = add_blocks.parse_shortcut(body)
        if shortcut is None:
            ack()
            return
        respond = Respond(response_url=shortcut.response_url) if shortcut.response_url else None
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_message_shortcut(ctx, ack, shortcut, respond)
