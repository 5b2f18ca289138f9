"""Commands on an incident of another channel: whose they are (bot.access), and the answer that waits for Slack.

No Slack call happens before the ack, so a command whose access needs Slack's word is acked at once with
"checking your access…"; a background job asks Slack, runs the same subcommand again and sends its answer
through the response_url, exactly as the ack would have carried it.
"""

from __future__ import annotations

from slack_bolt import Respond
from sqlalchemy.exc import SQLAlchemyError

from bot import access
from bot.context import Context
from bot.parsing import UsageError
from bot.ports import MessengerError
from handlers.commands.base import (
    Answer,
    CommandRequest,
    Subcommand,
    database_unavailable_answer,
    fitted,
    usage_answer,
)


def asking(ctx: Context, request: CommandRequest) -> access.Asker:
    """Who typed the command and where; resolve_target checks what they may act on with it."""
    return access.asker(ctx, request.user_id, request.channel_id)


def answer_after_lookup(
    ctx: Context, group: str, handler: Subcommand, request: CommandRequest, respond: Respond,
    pending: access.AccessPending,
) -> Answer:
    ctx.jobs.submit(_look_up_and_run, ctx, group, handler, request, respond, pending)
    return Answer(text=ctx.say("access.checking", public_id=pending.public_id))


def _look_up_and_run(
    ctx: Context, group: str, handler: Subcommand, request: CommandRequest, respond: Respond,
    pending: access.AccessPending,
) -> None:
    try:
        access.look_up(ctx, pending)
    except MessengerError as error:
        # Fail closed: without Slack's word nothing runs.
        _deliver(respond, Answer(text=ctx.say("access.unavailable", public_id=pending.public_id, reason=error.kind)))
        return
    try:
        answer = handler(ctx, request, respond)
    except access.AccessPending as again:
        # Only when the answer expired in between; refuse rather than ask Slack in a loop.
        answer = Answer(text=ctx.say("access.unavailable", public_id=again.public_id, reason="expired"))
    except UsageError as error:
        answer = usage_answer(ctx, group, error)
    except SQLAlchemyError:
        answer = database_unavailable_answer(ctx, request)
    _deliver(respond, fitted(ctx, answer))


def _deliver(respond: Respond, answer: Answer) -> None:
    respond(response_type="ephemeral", replace_original=False, text=answer.text, blocks=answer.blocks)
