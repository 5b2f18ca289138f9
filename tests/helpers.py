"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from bot.clock import ManualClock
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Incident, TimelineEvent


def posted_texts(bot: LocalBot) -> list[str]:
    """Every piece of text the app sent to Slack: message texts, blocks, updates, uploads' comments, responses."""
    texts: list[str] = []
    for call in bot.slack.calls():
        args = call.args
        for key in ("text", "initial_comment"):
            if isinstance(args.get(key), str):
                texts.append(args[key])
        if args.get("blocks") is not None:
            texts.append(json.dumps(args["blocks"], ensure_ascii=False))
    for response in bot.slack.responses():
        texts.append(json.dumps(response, ensure_ascii=False))
    return texts


def count(bot: LocalBot, model: Any) -> int:
    with bot.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def open_incident(
    bot: LocalBot, text: str = "추천 API p95 급증 sev:high service:ion-api", **kw: Any
) -> tuple[str, str]:
    """Opens an incident through Slack; returns (public_id, thread_ts)."""
    assert bot.driver is not None
    response = bot.driver.command("/incident", f"open {text}", **kw)
    assert response.status_code == 200, response.text
    bot.settle()
    with bot.ctx.db.session() as session:
        incident = session.scalars(select(Incident).order_by(Incident.id.desc())).first()
        assert incident is not None and incident.announcement_ts is not None
        return incident.public_id, incident.announcement_ts


def events(bot: LocalBot, kind: str | None = None) -> list[TimelineEvent]:
    with bot.ctx.db.session() as session:
        query = select(TimelineEvent).order_by(TimelineEvent.occurred_at, TimelineEvent.id)
        if kind:
            query = query.where(TimelineEvent.kind == kind)
        return list(session.scalars(query).all())


@contextmanager
def clocked_bot(
    database_url: str, start: datetime, env: dict[str, str] | None = None
) -> Iterator[tuple[LocalBot, ManualClock]]:
    """A bot whose clock the test moves; the Slack sandbox stamps messages from the same clock."""
    clock = ManualClock(start)
    with SlackSandbox(clock=lambda: clock.now().timestamp()) as slack:
        bot = LocalBot(env or {}, clock=clock, slack=slack, database_url=database_url)
        bot.start()
        try:
            yield bot, clock
        finally:
            bot.stop()


def slack_ts(value: datetime) -> str:
    """The Slack ts of a message posted at `value`."""
    return f"{value.timestamp():.6f}"
