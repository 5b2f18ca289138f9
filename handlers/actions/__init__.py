"""Interactive components (buttons, checkboxes). Action ids are namespaced by domain, one module each."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context
from handlers.actions import alerts, evidence, postmortem, rollback


def register(app: App, ctx: Context) -> None:
    postmortem.register(app, ctx)
    evidence.register(app, ctx)
    alerts.register(app, ctx)
    rollback.register(app, ctx)
