"""The `/postmortem edit` modal (callback id `postmortem.edit`)."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context


def register(app: App, ctx: Context) -> None:
    return None
