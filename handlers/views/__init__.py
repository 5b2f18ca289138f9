"""Modal submissions, one module per domain."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context
from handlers.views import postmortem


def register(app: App, ctx: Context) -> None:
    postmortem.register(app, ctx)
