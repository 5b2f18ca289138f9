"""Modal submissions, one module per domain."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context
from handlers.views import add_to_timeline, declare, postmortem


def register(app: App, ctx: Context) -> None:
    postmortem.register(app, ctx)
    declare.register(app, ctx)
    add_to_timeline.register(app, ctx)
