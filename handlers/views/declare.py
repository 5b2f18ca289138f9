"""Submissions of the declare form (built and parsed in handlers/blocks/declare.py; the domain in bot/declare.py).

A good submission opens the incident as `/incident open` does, before the ack, and closes the form; the person
is then told in the channel (ephemeral, as the command's answer is) and the announcement follows, from the same
job the command uses. Bad input, a channel the bot or the person is not in, a spent rate budget or a database
that can't be reached come back as `response_action: errors` on the field concerned, and nothing is stored.
A replay of the same submission (the same trigger_id) gets the first answer (handlers/replays.py); the same
form submitted again (Slack timed out and the person pressed the button once more) opens nothing new.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext
from sqlalchemy.exc import SQLAlchemyError

from bot import declare, ratelimit
from bot.access import AccessPending
from bot.context import Context
from bot.logsetup import outage_log
from bot.ports import MessengerError
from bot.sanitize import clean_text
from handlers.blocks import declare as blocks
from handlers.commands import rate_limited_answer
from handlers.commands.incident import announce_telling, opened_answer
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import Incident

log = logging.getLogger(__name__)


def _person(body: dict[str, Any]) -> tuple[str, str | None]:
    user: dict[str, Any] = body["user"] if isinstance(body.get("user"), dict) else {}
    name = user.get("username") or user.get("name")
    return str(user.get("id") or ""), clean_text(name) if isinstance(name, str) else None


def _refused(ctx: Context, limited: ratelimit.RateLimited, *, asks_channel: bool) -> dict[str, str]:
    field = "channel" if asks_channel and limited.limit.scope == "channel" else "title"
    return {field: rate_limited_answer(ctx, limited).text}


def on_submit(ctx: Context, ack: Ack, body: dict[str, Any], view: dict[str, Any], bot_user_id: str | None) -> None:
    user_id, user_name = _person(body)
    fixed = blocks.fixed_channel(view)
    try:
        request = declare.validate(ctx, blocks.submitted(view), channel=fixed)
        if fixed is None:
            declare.check_channel(ctx, request.channel_id, user_id=user_id, bot_user_id=bot_user_id)
        with ctx.db.session() as session:
            declared = declare.declare(ctx, session, request, user_id=user_id, user_name=user_name,
                                       form_id=blocks.form_id(view))
            answer = (ctx.say("declare.already_declared", public_id=declared.public_id) if declared.again
                      else opened_answer(ctx, session.get_one(Incident, declared.incident_id)))
    except declare.FieldErrors as bad:
        ack(response_action="errors", errors=blocks.errors_by_block(bad.errors))
        return
    except AccessPending:
        # Slack's answers went stale while the form was open: ask again now, and the next press finds them.
        ack(response_action="errors", errors=blocks.errors_by_block({"channel": ctx.say("declare.checking_access")}))
        ctx.jobs.submit(declare.look_up_access, ctx, user_id)
        return
    except ratelimit.RateLimited as limited:
        ack(response_action="errors", errors=blocks.errors_by_block(_refused(ctx, limited, asks_channel=fixed is None)))
        return
    except SQLAlchemyError:
        outage_log.error(log, "database unavailable while declaring from the form")
        unavailable = ctx.say("incident.error", code="database_unavailable", params={})
        ack(response_action="errors", errors=blocks.errors_by_block({"title": unavailable}))
        return
    ack()
    ctx.jobs.submit(_after_declare, ctx, declared, request.channel_id, user_id, answer)


def _after_declare(ctx: Context, declared: declare.Declared, channel: str, user_id: str, answer: str) -> None:
    """Tells the person, then posts the announcement (a second submission of the form only tells)."""

    def told(text: str) -> None:
        try:
            ctx.messenger.post_ephemeral(channel, user_id, text)
        except MessengerError as error:
            log.warning("could not tell the person who declared: %s", error.kind)

    told(answer)
    if not declared.again:
        announce_telling(ctx, declared.incident_id, declared.public_id, told, opened=declared.opened)


def register(app: App, ctx: Context) -> None:
    @app.view(blocks.FORM_CALLBACK)
    @once(ctx)
    def declare_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            on_submit(ctx, ack, body, view, context.bot_user_id)
