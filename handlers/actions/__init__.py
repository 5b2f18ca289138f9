"""Interactive components (buttons, checkboxes). Action ids are namespaced by domain, one module each."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context


def register(app: App, ctx: Context) -> None:
    from handlers.actions import evidence, postmortem

    postmortem.register(app, ctx)
    evidence.register(app, ctx)
