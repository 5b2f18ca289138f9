"""The "Add to incident timeline" message shortcut (bot/add_to_timeline.py): its payload and its chooser modal,
built and parsed back here.

- The message shortcut has the callback id `add_to_timeline` (manifest.yml).
- The chooser is a modal with the callback id `add-to-timeline:choose`: one static select, block and action id
  `add-to-timeline:incident`, each option's value an incident's database id. Its private_metadata is JSON with
  the message's channel and ts, the shortcut's response_url, where the answer goes once the choice is made, and
  the message itself as the shortcut carried it when it fits in private_metadata's 3,000 characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import InputBlock, Option, PlainTextObject, StaticSelectElement
from slack_sdk.models.views import View

from bot.add_to_timeline import ChooseForm
from bot.ports import ChatMessage

ADD_SHORTCUT = "add_to_timeline"
CHOOSER_CALLBACK = "add-to-timeline:choose"
_INCIDENT = "add-to-timeline:incident"
# Every id this surface gives its shortcut, view, blocks and controls; nothing else may use them.
ID_PREFIXES = (ADD_SHORTCUT, "add-to-timeline:")
OPTION_TEXT = 75  # Block Kit's limit for an option's text
PRIVATE_METADATA = 3000  # a view's private_metadata, in characters (slack_sdk's View refuses more)


@dataclass(frozen=True)
class MessageShortcut:
    user_id: str
    message: ChatMessage
    trigger_id: str | None
    response_url: str | None


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_shortcut(body: dict[str, Any]) -> MessageShortcut | None:
    """The person, the whole message and where it is, as Slack sends a message shortcut; None when misshapen."""
    message = _object(body, "message")
    user_id, channel = _str(_object(body, "user").get("id")), _str(_object(body, "channel").get("id"))
    ts = _str(message.get("ts")) or _str(body.get("message_ts"))
    if user_id is None or channel is None or ts is None:
        return None
    chat = ChatMessage(channel=channel, ts=ts, user=_str(message.get("user")), text=_str(message.get("text")) or "",
                       thread_ts=_str(message.get("thread_ts")), bot_id=_str(message.get("bot_id")))
    return MessageShortcut(user_id, chat, _str(body.get("trigger_id")), _str(body.get("response_url")))


def _option_text(public_id: str, title: str) -> str:
    text = " ".join(f"{public_id} {title}".split())
    return text if len(text) <= OPTION_TEXT else text[: OPTION_TEXT - 1] + "…"


def chooser_modal(form: ChooseForm) -> dict[str, Any]:
    options = [Option(value=str(c.incident_id), text=PlainTextObject(text=_option_text(c.public_id, c.title)))
               for c in form.candidates]
    select = StaticSelectElement(action_id=_INCIDENT, options=options)
    block = InputBlock(block_id=_INCIDENT, label=PlainTextObject(text=form.label),
                       hint=PlainTextObject(text=form.hint), element=select)
    metadata = _chooser_metadata(form)
    view = View(type="modal", callback_id=CHOOSER_CALLBACK, private_metadata=metadata,
                title=PlainTextObject(text=form.title), submit=PlainTextObject(text=form.submit),
                close=PlainTextObject(text=form.close), blocks=[block])
    return view.to_dict()


def _chooser_metadata(form: ChooseForm) -> str:
    where = {"channel": form.channel, "ts": form.ts, "response_url": form.response_url}
    if form.message is not None:
        message = form.message
        carried = json.dumps({**where, "message": {"user": message.user, "text": message.text,
                                                   "thread_ts": message.thread_ts, "bot_id": message.bot_id}},
                             ensure_ascii=False, separators=(",", ":"))
        if len(carried) <= PRIVATE_METADATA:
            return carried
    return json.dumps(where, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Chosen:
    incident_id: int
    channel: str
    ts: str
    response_url: str | None
    message: ChatMessage | None = None  # as the shortcut carried it; None when it did not fit: read it again


def parse_choice(view: dict[str, Any]) -> Chosen | None:
    """The chosen incident and the message it is for; None when the submission is not the chooser's."""
    try:
        metadata = json.loads(str(view.get("private_metadata") or ""))
    except ValueError:
        return None
    state = _object(_object(_object(_object(view, "state"), "values"), _INCIDENT), _INCIDENT)
    option = state.get("selected_option")
    value = option.get("value") if isinstance(option, dict) else None
    if not isinstance(metadata, dict) or not isinstance(value, str) or not value.isdigit() or len(value) > 12:
        return None
    channel, ts = _str(metadata.get("channel")), _str(metadata.get("ts"))
    if channel is None or ts is None:
        return None
    carried = metadata.get("message")
    message = None
    if isinstance(carried, dict) and isinstance(carried.get("text"), str):
        message = ChatMessage(channel=channel, ts=ts, user=_str(carried.get("user")), text=carried["text"],
                              thread_ts=_str(carried.get("thread_ts")), bot_id=_str(carried.get("bot_id")))
    return Chosen(int(value), channel, ts, _str(metadata.get("response_url")), message)
