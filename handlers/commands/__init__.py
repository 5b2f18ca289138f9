"""`/incident` and `/postmortem`: one listener each, dispatching subcommands to small per-domain functions.

A subcommand function gets the Context and a CommandRequest and returns the ephemeral answer. Slow work
(Slack posts, evidence, uploads) goes to ctx.jobs after the answer is decided, so the ack is never late.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from sqlalchemy.exc import OperationalError

from bot.context import Context
from bot.parsing import CommandText, UsageError, split_command
from handlers.guards import ACK_WRITTEN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandRequest:
    command: str
    parsed: CommandText
    user_id: str
    user_name: str
    channel_id: str
    response_url: str | None
    trigger_id: str | None

    @property
    def rest(self) -> str:
        return self.parsed.rest


@dataclass
class Answer:
    """The ephemeral reply to the person who typed the command."""

    text: str
    blocks: list[dict[str, Any]] | None = None


Subcommand = Callable[[Context, CommandRequest, Respond], Answer]
INCIDENT_SUBCOMMANDS: dict[str, Subcommand] = {}
POSTMORTEM_SUBCOMMANDS: dict[str, Subcommand] = {}


def incident_subcommand(*names: str) -> Callable[[Subcommand], Subcommand]:
    def wrap(fn: Subcommand) -> Subcommand:
        for name in names:
            INCIDENT_SUBCOMMANDS[name] = fn
        return fn

    return wrap


def postmortem_subcommand(*names: str) -> Callable[[Subcommand], Subcommand]:
    def wrap(fn: Subcommand) -> Subcommand:
        for name in names:
            POSTMORTEM_SUBCOMMANDS[name] = fn
        return fn

    return wrap


def tell(respond: Respond, text: str) -> None:
    """An ephemeral follow-up to the person who typed the command, once the ack is long gone (response_url)."""
    respond(response_type="ephemeral", replace_original=False, text=text)


def usage_answer(ctx: Context, group: str, error: UsageError) -> Answer:
    message = ctx.say(f"{group}.error", code=error.code, params=error.params)
    usage = ctx.say(f"{group}.usage", sub=error.usage)
    return Answer(text=f"{message}\n{usage}".strip())


def dispatch(
    ctx: Context, group: str, table: dict[str, Subcommand], body: dict[str, Any], ack: Ack, respond: Respond,
    context: BoltContext | None = None,
) -> None:
    # What the subcommand hands to ctx.jobs (the announcement, scheduler jobs) waits until the ack is written.
    with ctx.jobs.held_until(context.get(ACK_WRITTEN) if context is not None else None):
        _dispatch(ctx, group, table, body, ack, respond)


def _dispatch(
    ctx: Context, group: str, table: dict[str, Subcommand], body: dict[str, Any], ack: Ack, respond: Respond
) -> None:
    parsed = split_command(body.get("text", ""))
    request = CommandRequest(
        command=body.get("command", ""),
        parsed=parsed,
        user_id=body.get("user_id", ""),
        user_name=body.get("user_name", ""),
        channel_id=body.get("channel_id", ""),
        response_url=body.get("response_url"),
        trigger_id=body.get("trigger_id"),
    )
    handler = table.get(parsed.sub) if parsed.sub else table.get("help")
    try:
        if handler is None:
            raise UsageError("unknown_subcommand", "", value=parsed.sub)
        answer = handler(ctx, request, respond)
    except UsageError as error:
        answer = usage_answer(ctx, group, error)
    except OperationalError:
        log.exception("database unavailable during %s %s", request.command, parsed.sub)
        answer = Answer(text=ctx.say("incident.error", code="database_unavailable", params={}))
    ack(response_type="ephemeral", text=answer.text, blocks=answer.blocks)


def register(app: App, ctx: Context) -> None:
    # Importing the per-domain modules fills the tables above.
    from handlers.commands import evidence, incident, lifecycle, pm_content, postmortem, reminders  # noqa: F401

    @app.command("/incident")
    def incident_command(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        dispatch(ctx, "incident", INCIDENT_SUBCOMMANDS, body, ack, respond, context)

    @app.command("/postmortem")
    def postmortem_command(ack: Ack, body: dict[str, Any], respond: Respond, context: BoltContext) -> None:
        dispatch(ctx, "postmortem", POSTMORTEM_SUBCOMMANDS, body, ack, respond, context)
