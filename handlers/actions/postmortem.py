"""Buttons and checkboxes of the postmortem domain (action ids start with `postmortem.`)."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context


def register(app: App, ctx: Context) -> None:
    return None
