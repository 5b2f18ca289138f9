"""Thin Slack listeners, grouped by surface. Each parses, calls bot/, and answers."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context
from handlers import actions, commands, events, guards, shortcuts, views


def register(app: App, ctx: Context) -> None:
    guards.register(app, ctx)
    commands.register(app, ctx)
    events.register(app, ctx)
    actions.register(app, ctx)
    views.register(app, ctx)
    shortcuts.register(app, ctx)
