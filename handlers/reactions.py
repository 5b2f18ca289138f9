"""Reactions: 📌 puts a message on the timeline, milestone emoji set milestones. Others are ignored silently."""

from __future__ import annotations

from typing import Any

from bot.context import Context


def handle(ctx: Context, name: str, event: dict[str, Any]) -> None:
    return None
