"""An alert's buttons, built and parsed here: action id `alerts.<choice>` (declare, dismiss, recovered), value =
the stored alert's id, in the block `alert:<alert id>`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, PlainTextObject

from bot.ports import AlertView
from bot.render import RenderedMessage
from bot.sanitize import clean_text

CHOICES = ("declare", "dismiss", "recovered")
ACTIONS = re.compile(rf"^alerts\.({'|'.join(CHOICES)})$")
BUTTON_TEXT_LIMIT = 75  # Block Kit's limit for a button's text
_STYLES = {"declare": "danger", "recovered": "primary"}


def action_id(choice: str) -> str:
    return f"alerts.{choice}"


# Every id this surface gives its controls and blocks (one ending in `:` is a prefix); nothing else may use them.
ID_PREFIXES = (*(action_id(choice) for choice in CHOICES), "alert:")


def alert_message(view: AlertView) -> RenderedMessage:
    if not view.choices:
        return view.body
    buttons = [
        ButtonElement(action_id=action_id(choice.name), value=str(view.alert_id), style=_STYLES.get(choice.name),
                      text=PlainTextObject(text=choice.label[:BUTTON_TEXT_LIMIT], emoji=True))
        for choice in view.choices
    ]
    actions = ActionsBlock(block_id=f"alert:{view.alert_id}", elements=buttons)
    return RenderedMessage(view.body.text, [*view.body.blocks, actions.to_dict()])


@dataclass(frozen=True)
class AlertClick:
    choice: str  # one of CHOICES
    alert_id: int
    user_id: str
    user_name: str | None
    channel: str | None  # where the clicked message is: the domain checks it is the alert's
    message_ts: str | None


def parse_click(body: dict[str, Any]) -> AlertClick | None:
    action = (body.get("actions") or [{}])[0]
    match = ACTIONS.match(str(action.get("action_id", "")))
    value = str(action.get("value", ""))
    user = _object(body, "user")
    user_id = user.get("id")
    if not match or not value.isdigit() or len(value) > 12 or not isinstance(user_id, str) or not user_id:
        return None
    name = user.get("name") or user.get("username")
    container = _object(body, "container")
    channel = container.get("channel_id") or _object(body, "channel").get("id")
    ts = container.get("message_ts")
    return AlertClick(match.group(1), int(value), user_id, clean_text(name) if isinstance(name, str) else None,
                      channel if isinstance(channel, str) else None, ts if isinstance(ts, str) else None)


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}
