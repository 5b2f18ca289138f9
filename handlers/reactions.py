"""Reactions: 📌 puts a message on the timeline, milestone emoji set milestones. Others are ignored silently."""

from __future__ import annotations

from typing import Any

from bot import pins
from bot.context import Context


def handle(ctx: Context, name: str, event: dict[str, Any]) -> None:
    item = event.get("item") or {}
    if not isinstance(item, dict) or item.get("type") != "message":
        return  # reactions on files and file comments are not timeline material
    pins.handle(ctx, pins.Reaction(
        added=name == "reaction_added", user=str(event.get("user") or ""), emoji=str(event.get("reaction") or ""),
        channel=str(item.get("channel") or ""), ts=str(item.get("ts") or ""), event_ts=event.get("event_ts"),
    ))
