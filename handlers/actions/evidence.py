"""Buttons and checkboxes of the evidence domain (action ids start with `evidence.`)."""

from __future__ import annotations

from slack_bolt import App

from bot.context import Context


def register(app: App, ctx: Context) -> None:
    return None
