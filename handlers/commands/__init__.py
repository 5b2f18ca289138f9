"""`/incident` and `/postmortem`: one listener each, dispatching subcommands to small per-domain functions.

A subcommand function gets the Context and a CommandRequest and returns the ephemeral answer. Slow work
(Slack posts, evidence, uploads) goes to ctx.jobs after the answer is decided, so the ack is never late.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from sqlalchemy.exc import SQLAlchemyError

from bot import ratelimit, replays
from bot.access import AccessPending
from bot.context import Context
from bot.logsetup import outage_log
from bot.parsing import CommandText, UsageError, split_command
from bot.sanitize import clean_text
from handlers import replays as replay_guard

# Importing the per-domain modules fills the subcommand tables of handlers/commands/base.py.
from handlers.commands import (  # noqa: F401
    evidence,
    github,
    incident,
    lifecycle,
    pm_content,
    postmortem,
    reminders,
    rollback,
    stats,
)
from handlers.commands.access import answer_after_lookup
from handlers.commands.base import (
    INCIDENT_SUBCOMMANDS,
    POSTMORTEM_SUBCOMMANDS,
    Answer,
    CommandRequest,
    Subcommand,
    ack_arguments,
    database_unavailable_answer,
    fitted,
    usage_answer,
)
from handlers.guards import ACK_WRITTEN
from storage.db import Work

log = logging.getLogger(__name__)


# Subcommands that only answer the person who typed them: never rate limited. `open` has a budget of its own, and
# every other subcommand counts against the budget of the commands that post to the channel.
READ_ONLY_SUBCOMMANDS = frozenset({"", "help", "list", "timeline", "actions", "edit", "stats"})


def rate_budget(group: str, sub: str) -> str | None:
    if group == "incident" and sub == "open":
        return ratelimit.OPEN
    return None if sub in READ_ONLY_SUBCOMMANDS else ratelimit.POST


def rate_limited_answer(ctx: Context, limited: ratelimit.RateLimited) -> Answer:
    now = ctx.clock.now()
    seconds = max(1, math.ceil((limited.retry_at - now).total_seconds()))  # never "try again in 0 seconds"
    fmt = ctx.formatter()
    retry_at = fmt.local(limited.retry_at)  # to the second: a minute's precision would invite an early retry
    return Answer(text=ctx.say(
        "trust.rate_limited", source=limited.source, scope=limited.limit.scope, most=limited.limit.most,
        window=fmt.duration(limited.window), seconds=seconds,
        at=f"{retry_at:%H:%M:%S} {fmt.abbreviation(retry_at)}",
    ))


def dispatch(
    ctx: Context, group: str, table: dict[str, Subcommand], body: dict[str, Any], ack: Ack, respond: Respond,
    context: BoltContext | None = None, parsed: CommandText | None = None,
) -> None:
    # A replay of a signed body (same trigger_id) gets the first delivery's answer and runs nothing; the first
    # delivery takes its rate budget in the same transaction. Read-only subcommands change nothing when run
    # again, so they are answered afresh and cost no write.
    parsed = parsed or command_text(body)  # parsed once a request
    budget = rate_budget(group, parsed.sub)
    spend = ratelimit.Spend()

    def take_budget(session: Work) -> ratelimit.RateLimited | None:
        assert budget is not None
        spend.take(ctx, session, budget, body.get("user_id", ""), body.get("channel_id", ""))
        return spend.refused

    # What the subcommand hands to ctx.jobs (the announcement, scheduler jobs) waits until the ack is written.
    held = ctx.jobs.held_until(context.get(ACK_WRITTEN) if context is not None else None)
    if budget == ratelimit.OPEN:
        # An open is one transaction: the delivery is recorded and the budget taken in it (CommandRequest.admit),
        # so the ack waits for one commit, not two.
        admission = replay_guard.Admission(ctx, body, ack, kind="command", user_id=body.get("user_id"),
                                           also=take_budget)
        with held:
            _dispatch(ctx, group, table, body, parsed, admission.ack, respond, spend, admission)
        return
    try:
        run_ack = ack if budget is None else replay_guard.claim(
            ctx, body, ack, kind="command", user_id=body.get("user_id"), pending=_replay_pending(ctx),
            also=take_budget,
        )
    except SQLAlchemyError:
        outage_log.error(log, "database unavailable while checking %s for a replay", body.get("command"))
        ack(response_type="ephemeral", text=ctx.say("incident.error", code="database_unavailable", params={}))
        return
    if run_ack is None:
        return
    with held:
        _dispatch(ctx, group, table, body, parsed, run_ack, respond, spend)


def _replay_pending(ctx: Context) -> Callable[[Ack], object]:
    """How a replay is answered when its first delivery has not answered in time."""
    return lambda ack: ack(response_type="ephemeral", text=ctx.say("trust.replay_pending"))


def command_text(body: dict[str, Any]) -> CommandText:
    return split_command(clean_text(body.get("text", "")))


def _dispatch(
    ctx: Context, group: str, table: dict[str, Subcommand], body: dict[str, Any], parsed: CommandText, ack: Ack,
    respond: Respond, spend: ratelimit.Spend | None = None, admission: replay_guard.Admission | None = None,
) -> None:
    request = CommandRequest(
        command=body.get("command", ""),
        parsed=parsed,
        user_id=body.get("user_id", ""),
        user_name=clean_text(body.get("user_name", "")),
        channel_id=body.get("channel_id", ""),
        response_url=body.get("response_url"),
        trigger_id=body.get("trigger_id"),
        keep_answer=_keeper(ctx, ack),
        **({"admit": admission} if admission is not None else {}),
    )
    handler = table.get(parsed.sub) if parsed.sub else table.get("help")
    spend = spend or ratelimit.Spend()
    try:
        spend.check()
        if handler is None:
            raise UsageError("unknown_subcommand", "", value=parsed.sub)
        answer = handler(ctx, request, respond)
    except replays.Replayed:
        assert admission is not None  # only an admission finds a replay inside the handler
        admission.answer_replay(_replay_pending(ctx))
        return
    except ratelimit.RateLimited as limited:
        answer = rate_limited_answer(ctx, limited)
    except AccessPending as pending:
        assert handler is not None  # only a handler raises AccessPending
        answer = answer_after_lookup(ctx, group, handler, request, respond, pending)
    except UsageError as error:
        _give_back(ctx, spend.hits)  # bad input stored nothing, so it spends no budget
        answer = usage_answer(ctx, group, error)
    except SQLAlchemyError:
        answer = database_unavailable_answer(ctx, request)
    ack(**ack_arguments(fitted(ctx, answer)))


def _keeper(ctx: Context, ack: Ack) -> Callable[[Work, Answer], None] | None:
    if not isinstance(ack, replay_guard.RecordingAck):
        return None
    recording = ack
    return lambda session, answer: recording.keep(session, **ack_arguments(fitted(ctx, answer)))


def _give_back(ctx: Context, hits: list[int]) -> None:
    try:
        ratelimit.give_back(ctx, hits)
    except SQLAlchemyError:
        log.warning("could not give back rate-limit hits; they expire with the window", exc_info=True)


def _expire(ctx: Context) -> None:
    replays.expire(ctx)
    ratelimit.expire(ctx)


def register(app: App, ctx: Context) -> None:
    ctx.hooks.on_sweep.register(_expire)

    @app.command("/incident")
    def incident_command(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        # `/incident open` alone opens the declare form. Decided here rather than by a listener with a matcher of
        # its own: Bolt builds a listener's arguments anew for each matcher it asks, on every command.
        parsed = command_text(body)
        if incident.wants_form(parsed, body):
            incident.open_form(ctx, body, ack, respond)
        else:
            dispatch(ctx, "incident", INCIDENT_SUBCOMMANDS, body, ack, respond, context, parsed)

    @app.command("/postmortem")
    def postmortem_command(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        dispatch(ctx, "postmortem", POSTMORTEM_SUBCOMMANDS, body, ack, respond, context)
