"""Adding a message to a timeline (bot/add_to_timeline.py): storing it and answering the person, for the message
shortcut (handlers/shortcuts.py) and for the submission of its chooser modal, registered here.

The answer goes through the shortcut's response_url (ephemeral), once the event is stored; its permalink is
asked of Slack in the same job and kept in the event. The chooser's choice is stored before the chooser closes
when it can be: the chooser carries the message as the shortcut did, and the person's access is known here. When
either is missing (a message too long to carry, access to ask of Slack) the chooser closes at once and the rest is
done afterwards (access asked of Slack if need be, the message read again, then stored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from sqlalchemy.exc import SQLAlchemyError

from bot import access, add_to_timeline, ratelimit
from bot.context import Context
from bot.logsetup import outage_log
from bot.parsing import UsageError
from bot.ports import ChatMessage, MessengerError
from handlers.blocks import add_to_timeline as blocks
from handlers.commands import rate_limited_answer
from handlers.commands.base import tell
from handlers.guards import ACK_WRITTEN
from handlers.replays import once
from storage.models import Incident

log = logging.getLogger(__name__)


def store(ctx: Context, incident_id: int, message: ChatMessage, user_id: str) -> add_to_timeline.Added | str:
    """Puts the message on the incident's timeline; what to tell the person instead when nothing was stored."""
    try:
        with ctx.db.session() as session:
            return add_to_timeline.add(ctx, session, incident_id, message, user_id=user_id)
    except ratelimit.RateLimited as limited:
        return rate_limited_answer(ctx, limited).text
    except SQLAlchemyError:
        outage_log.error(log, "database unavailable while adding a message to a timeline")
        return ctx.say("incident.error", code="database_unavailable", params={})


def confirm(ctx: Context, stored: add_to_timeline.Added | str, message: ChatMessage, respond: Respond | None) -> None:
    """After the ack: the permalink, kept in the event, and the answer to the person."""
    if isinstance(stored, str):
        answer_person(respond, stored)
        return
    link: str | None = None
    try:
        link = ctx.messenger.permalink(message.channel, message.ts)
        add_to_timeline.keep_permalink(ctx, stored.event_id, link)
    except MessengerError as error:
        log.warning("no permalink for a message added to the timeline: %s", error.kind)
    except SQLAlchemyError:
        log.warning("could not keep the permalink of a message added to the timeline", exc_info=True)
    if stored.new:
        answer_person(respond, ctx.say("timeline_add.added", public_id=stored.public_id, permalink=link))
    else:
        answer_person(respond, ctx.say("timeline_add.already", public_id=stored.public_id))


def answer_person(respond: Respond | None, text: str) -> None:
    """An ephemeral answer through the shortcut's response_url, when there is one that still works."""
    if respond is None:
        log.info("nobody to tell: the shortcut carried no response_url")
        return
    try:
        tell(respond, text)
    except Exception:  # the response_url may have expired (30 minutes) or been used up
        log.warning("could not answer through the shortcut's response_url", exc_info=True)


# ---- the chooser's submission ----------------------------------------------------------------------------------


def _chosen(ctx: Context, asker: access.Asker, incident_id: int) -> Incident | None:
    with ctx.db.read() as session:
        return add_to_timeline.may_add(session, asker, incident_id)


def chosen_before_the_ack(ctx: Context, chosen: blocks.Chosen, user_id: str) -> Callable[[], None]:
    """Stores the choice now when nothing needs Slack (the message carried, access known here); what is left for
    after the ack: the confirmation, a refusal, or all of it (add_chosen)."""
    if chosen.message is None:
        return partial(add_chosen, ctx, chosen, user_id)
    respond = _respond(chosen)
    try:
        incident = _chosen(ctx, access.asker(ctx, user_id, chosen.channel), chosen.incident_id)
    except access.AccessPending:
        return partial(add_chosen, ctx, chosen, user_id)
    except (UsageError, SQLAlchemyError) as error:
        return partial(answer_person, respond, _not_added(ctx, error))
    if incident is None:
        return partial(answer_person, respond, ctx.say("timeline_add.gone"))
    return partial(confirm, ctx, store(ctx, incident.id, chosen.message, user_id), chosen.message, respond)


def add_chosen(ctx: Context, chosen: blocks.Chosen, user_id: str) -> None:
    respond = _respond(chosen)
    asker = access.asker(ctx, user_id, chosen.channel)
    try:
        try:
            incident = _chosen(ctx, asker, chosen.incident_id)
        except access.AccessPending as pending:
            access.look_up(ctx, pending)
            incident = _chosen(ctx, asker, chosen.incident_id)
        message = ctx.messenger.fetch_message(chosen.channel, chosen.ts) if incident is not None else None
    except (UsageError, access.AccessPending, MessengerError, SQLAlchemyError) as error:
        answer_person(respond, _not_added(ctx, error))
        return
    if incident is None or message is None:
        answer_person(respond, ctx.say("timeline_add.gone"))
        return
    confirm(ctx, store(ctx, incident.id, message, user_id), message, respond)


def _respond(chosen: blocks.Chosen) -> Respond | None:
    return Respond(response_url=chosen.response_url) if chosen.response_url else None


def _not_added(ctx: Context,
               error: UsageError | access.AccessPending | MessengerError | SQLAlchemyError) -> str:
    """What the person is told when the choice could not be checked or the message read."""
    if isinstance(error, UsageError):
        return ctx.say("incident.error", code=error.code, params=error.params)
    if isinstance(error, MessengerError):
        return ctx.say("timeline_add.failed", reason=error.kind)
    if isinstance(error, access.AccessPending):
        return ctx.say("timeline_add.failed", reason="expired")
    outage_log.error(log, "database unavailable while checking a chosen incident")
    return ctx.say("incident.error", code="database_unavailable", params={})


def register(app: App, ctx: Context) -> None:
    @app.view(blocks.CHOOSER_CALLBACK)
    @once(ctx)
    def incident_chosen(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
        chosen = blocks.parse_choice(view)
        user: dict[str, Any] = body["user"] if isinstance(body.get("user"), dict) else {}
        user_id = user.get("id")
        if chosen is None or not isinstance(user_id, str) or not user_id:
            ack()
            return
        after = chosen_before_the_ack(ctx, chosen, user_id)
        ack()  # closes the chooser; the answer follows through the shortcut's response_url
        with ctx.jobs.held_until(context.get(ACK_WRITTEN)):
            ctx.jobs.submit(after)
