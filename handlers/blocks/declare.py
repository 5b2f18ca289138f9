"""The declare form (bot/declare.py), built and parsed back here.

- The global shortcut "Declare incident" has the callback id `declare_incident` (manifest.yml).
- The modal's callback id is `declare.form`; its private_metadata is the channel of the `/incident open` that
  opened it ("" from the global shortcut, whose form asks for the channel instead).
- Each field is an input block `declare.form.<field>` holding one element, action id `declare.form.<field>`.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ConversationFilter,
    ConversationSelectElement,
    InputBlock,
    InputInteractiveElement,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    StaticSelectElement,
    UserSelectElement,
)
from slack_sdk.models.views import View

from bot.declare import MAX_DESCRIPTION, MAX_SERVICE, DeclareForm, Submitted, channel_id
from bot.parsing import MAX_TITLE
from bot.sanitize import clean_text

DECLARE_SHORTCUT = "declare_incident"
FORM_CALLBACK = "declare.form"
_FIELD = "declare.form."
# Every id this surface gives its shortcut, view, blocks and controls; nothing else may use them.
ID_PREFIXES = (DECLARE_SHORTCUT, FORM_CALLBACK, _FIELD)
OPTIONAL = frozenset({"service", "lead", "description"})


def block_id(field: str) -> str:
    return f"{_FIELD}{field}"


def _text(text: str) -> PlainTextObject:
    return PlainTextObject(text=text, emoji=True)


def _elements(form: DeclareForm) -> dict[str, InputInteractiveElement]:
    severities = [Option(value=choice.value, text=_text(choice.label)) for choice in form.severities]
    initial = next(option for option, choice in zip(severities, form.severities, strict=True)
                   if choice.value == form.severity)
    elements: dict[str, InputInteractiveElement] = {
        "title": PlainTextInputElement(max_length=MAX_TITLE),
        "severity": StaticSelectElement(options=severities, initial_option=initial),
        "service": PlainTextInputElement(max_length=MAX_SERVICE),
        "lead": UserSelectElement(initial_user=form.lead),
        "description": PlainTextInputElement(multiline=True, max_length=MAX_DESCRIPTION),
    }
    if form.asks_channel:
        elements["channel"] = ConversationSelectElement(
            initial_conversation=form.initial_channel,
            filter=ConversationFilter(include=["public", "private"], exclude_bot_users=True,
                                      exclude_external_shared_channels=True),
        )
    return elements


def declare_modal(form: DeclareForm) -> dict[str, Any]:
    blocks: list[Block] = []
    for field, element in _elements(form).items():
        element.action_id = block_id(field)
        hint = form.hints.get(field)
        blocks.append(InputBlock(block_id=block_id(field), label=_text(form.labels[field]), element=element,
                                 hint=_text(hint) if hint else None, optional=field in OPTIONAL))
    view = View(type="modal", callback_id=FORM_CALLBACK, private_metadata=form.channel or "",
                title=_text(form.title), submit=_text(form.submit), close=_text(form.close), blocks=blocks)
    return view.to_dict()


def fixed_channel(view: dict[str, Any]) -> str | None:
    """The channel of the command that opened the form; None when the form asked for one."""
    return channel_id(str(view.get("private_metadata") or ""))


def form_id(view: dict[str, Any]) -> str | None:
    """Slack's id of the submitted view: the same for every submission of one form."""
    value = view.get("root_view_id") or view.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def _value(state: dict[str, Any]) -> str:
    """What one input holds, whatever its kind; "" when empty or not as Slack sends it."""
    for key in ("value", "selected_user", "selected_conversation"):
        if isinstance(state.get(key), str):
            return str(state[key])
    option = state.get("selected_option")
    if isinstance(option, dict) and isinstance(option.get("value"), str):
        return str(option["value"])
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def submitted(view: dict[str, Any]) -> Submitted:
    """The form's fields as submitted, cleaned of control characters; "" for a field left empty or missing."""
    values = _dict(_dict(view.get("state")).get("values"))
    found = {field: clean_text(_value(_dict(_dict(values.get(block_id(field))).get(block_id(field)))))
             for field in Submitted.__dataclass_fields__}
    return Submitted(**found)


def errors_by_block(errors: dict[str, str]) -> dict[str, str]:
    """bot.declare.FieldErrors as `response_action: errors` wants them: by block id."""
    return {block_id(field): message for field, message in errors.items()}
