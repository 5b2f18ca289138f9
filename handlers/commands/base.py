"""What every subcommand module shares: the request, the answer, and the tables the subcommands register in.

A module of its own, so the subcommand modules and the dispatcher in handlers/commands/__init__.py both import
it, and neither imports the other's half-loaded package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Respond

from bot.context import Context
from bot.logsetup import outage_log
from bot.parsing import CommandText, UsageError
from bot.ratelimit import RateLimited
from handlers.slack_limits import fit_message
from storage.db import Work

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
    # Stores the answer for replays in the caller's transaction (handlers/replays.RecordingAck.keep); None when
    # the request is not deduplicated.
    keep_answer: Callable[[Work, Answer], None] | None = None
    # `/incident open` only: records the delivery and takes the open budget as the first step of the open's own
    # transaction (handlers/replays.Admission). Raises bot.replays.Replayed; returns the refusal when the budget
    # is spent, which the handler raises once that transaction (which records the delivery) has committed.
    admit: Callable[[Work], RateLimited | None] = lambda _session: None

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
    respond(response_type="ephemeral", replace_original=False, text=fit_message(text, None)[0])


def usage_answer(ctx: Context, group: str, error: UsageError) -> Answer:
    message = ctx.say(f"{group}.error", code=error.code, params=error.params)
    usage = ctx.say(f"{group}.usage", sub=error.usage)
    return Answer(text=f"{message}\n{usage}".strip())


def database_unavailable_answer(ctx: Context, request: CommandRequest) -> Answer:
    """For any SQLAlchemy error, not only OperationalError: a read-only PostgreSQL raises InternalError."""
    outage_log.error(log, "database unavailable during %s %s", request.command, request.parsed.sub)
    return Answer(text=ctx.say("incident.error", code="database_unavailable", params={}))


def fitted(ctx: Context, answer: Answer) -> Answer:
    """The answer cut to Slack's limits, measured after rendering, with the localized pointer to the report."""
    answer.text, answer.blocks = fit_message(answer.text, answer.blocks, note=ctx.say("limits.truncated"))
    return answer


def ack_arguments(answer: Answer) -> dict[str, Any]:
    """What a subcommand's (fitted) answer is acked with."""
    return {"response_type": "ephemeral", "text": answer.text, "blocks": answer.blocks}
