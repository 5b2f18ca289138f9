"""Modal submissions, one module per domain."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context


def register(app: App, ctx: Context) -> None:
    from handlers.views import postmortem

    postmortem.register(app, ctx)
