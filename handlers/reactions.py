"""Reactions: 📌 puts a message on the timeline, milestone emoji set milestones. Others are ignored silently."""

from __future__ import annotations

from typing import Any

from bot import pins


def incoming(name: str, event: dict[str, Any]) -> pins.Reaction | None:
    """The reaction a `reaction_added` / `reaction_removed` event describes; None when it is not on a message."""
    item = event.get("item") or {}
    if not isinstance(item, dict) or item.get("type") != "message":
        return None  # reactions on files and file comments are not timeline material
    fields = [value if isinstance(value, str) else ""
              for value in (event.get("user"), event.get("reaction"), item.get("channel"), item.get("ts"))]
    if not all(fields):
        return None  # not the shape Slack documents: nothing to store
    user, emoji, channel, ts = fields
    event_ts = event.get("event_ts")
    return pins.Reaction(added=name == "reaction_added", user=user, emoji=emoji, channel=channel, ts=ts,
                         event_ts=event_ts if isinstance(event_ts, str) else None)
