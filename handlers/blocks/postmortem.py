"""Block Kit of the post-mortem: built here, and the ids its controls carry parsed back here.

- An action item's message gets one button per transition it offers: action id `postmortem.action.<transition>`,
  value = the item's id, in the block `pm-action:<item id>`.
- The checklist gets, per group, a title and a checkbox set: action id `postmortem.checklist.<group>` in the block
  `pm-checklist:<incident id>:<group>`, each option's value a checklist key.
- `/postmortem edit` opens a modal (callback id `postmortem.edit`, private_metadata = the incident id) with one
  input block per field, its block id the field's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.parsing import UsageError
from bot.ports import ActionItemView, ChecklistView
from bot.postmortem import EDIT_FIELD_NAMES, TRANSITIONS, EditForm
from bot.render import RenderedMessage
from bot.sanitize import clean_text

_ACTION_ITEM = "postmortem.action."
_ACTION_ITEM_BLOCK = "pm-action:"
_CHECKLIST = "postmortem.checklist."
_CHECKLIST_BLOCK = "pm-checklist:"
_CHECKLIST_TITLE_BLOCK = "pm-checklist-title:"
EDIT_CALLBACK = "postmortem.edit"
# Every id this surface gives its blocks, controls and views starts with one of these; nothing else may use them.
ID_PREFIXES = (_ACTION_ITEM, _ACTION_ITEM_BLOCK, _CHECKLIST, _CHECKLIST_BLOCK, _CHECKLIST_TITLE_BLOCK, EDIT_CALLBACK)

# ---- action items ----------------------------------------------------------------------------------------------

ACTION_ITEM_ACTIONS = re.compile(rf"^{re.escape(_ACTION_ITEM)}({'|'.join(map(re.escape, TRANSITIONS))})$")


def action_item_action_id(transition: str) -> str:
    return f"{_ACTION_ITEM}{transition}"


def action_item_block_id(item_id: int) -> str:
    return f"{_ACTION_ITEM_BLOCK}{item_id}"


def action_item_message(view: ActionItemView) -> RenderedMessage:
    buttons = [
        ButtonElement(
            action_id=action_item_action_id(transition.name), value=str(view.item_id),
            text=PlainTextObject(text=transition.label, emoji=True),
            style="primary" if transition.name == "done" else None,
        )
        for transition in view.transitions
    ]
    actions = ActionsBlock(block_id=action_item_block_id(view.item_id), elements=buttons)
    return RenderedMessage(view.body.text, [*view.body.blocks, actions.to_dict()])


@dataclass(frozen=True)
class ActionItemClick:
    item_id: int
    transition: str  # a key of bot.postmortem.TRANSITIONS


def parse_action_item_click(action: dict[str, Any]) -> ActionItemClick | None:
    match = ACTION_ITEM_ACTIONS.match(str(action.get("action_id", "")))
    value = str(action.get("value", ""))
    if not match or not value.isdigit():
        return None
    return ActionItemClick(int(value), match.group(1))


# ---- the checklist ---------------------------------------------------------------------------------------------

CHECKLIST_ACTIONS = re.compile(rf"^{re.escape(_CHECKLIST)}[a-z_]+$")
_CHECKLIST_BLOCK_ID = re.compile(rf"^{re.escape(_CHECKLIST_BLOCK)}(\d{{1,12}}):([a-z_]+)$")


def checklist_action_id(group: str) -> str:
    return f"{_CHECKLIST}{group}"


def checklist_block_id(incident_id: int, group: str) -> str:
    return f"{_CHECKLIST_BLOCK}{incident_id}:{group}"


def checklist_message(view: ChecklistView) -> RenderedMessage:
    blocks = list(view.body.blocks)
    for group in view.groups:
        options = [Option(text=PlainTextObject(text=item.label, emoji=True), value=item.key) for item in group.items]
        ticked = [option for option, item in zip(options, group.items, strict=True) if item.checked]
        title = SectionBlock(block_id=f"{_CHECKLIST_TITLE_BLOCK}{group.key}",
                             text=MarkdownTextObject(text=f"*{group.title}* ({group.done}/{group.total})"))
        boxes = CheckboxesElement(action_id=checklist_action_id(group.key), options=options,
                                  initial_options=ticked or None)  # Slack rejects an empty initial_options
        actions = ActionsBlock(block_id=checklist_block_id(view.incident_id, group.key), elements=[boxes])
        blocks += [title.to_dict(), actions.to_dict()]
    return RenderedMessage(view.body.text, blocks)


@dataclass(frozen=True)
class ChecklistClick:
    incident_id: int
    group: str
    selected: frozenset[str]  # the group's ticked values after the click
    shown: frozenset[str] | None  # ticked on the clicked message; None when Slack sent no message


def parse_checklist_click(body: dict[str, Any]) -> ChecklistClick | None:
    action = (body.get("actions") or [{}])[0]
    block = _CHECKLIST_BLOCK_ID.match(str(action.get("block_id", "")))
    if not block:
        return None
    selected = frozenset(str(o.get("value")) for o in action.get("selected_options") or [] if isinstance(o, dict))
    shown = _shown_options(body, str(action.get("block_id")), str(action.get("action_id")))
    return ChecklistClick(int(block.group(1)), block.group(2), selected, shown)


def _shown_options(body: dict[str, Any], block_id: str, action_id: str) -> frozenset[str] | None:
    """The options the clicked message showed as ticked, from the message Slack sends back with the click."""
    for block in (body.get("message") or {}).get("blocks") or []:
        if not isinstance(block, dict) or block.get("block_id") != block_id:
            continue
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return frozenset(str(o.get("value")) for o in element.get("initial_options") or []
                                 if isinstance(o, dict))
    return None


# ---- the edit modal --------------------------------------------------------------------------------------------

MODAL_LIMIT = 3000  # Block Kit's max_length of a plain_text_input
_INPUT = "value"  # the action id of each field's one input


def edit_modal(form: EditForm) -> dict[str, Any]:
    """The modal's view. Raises UsageError when a stored field is longer than the modal can hold."""
    blocks: list[Block] = [ContextBlock(elements=[MarkdownTextObject(text=form.header)])]
    for field in form.fields:
        if len(field.value) > MODAL_LIMIT:
            raise UsageError("modal_too_long", "edit", field=field.label)
        blocks.append(InputBlock(
            block_id=field.name, optional=True, label=PlainTextObject(text=field.label, emoji=True),
            hint=PlainTextObject(text=field.hint, emoji=True) if field.hint is not None else None,
            element=PlainTextInputElement(action_id=_INPUT, multiline=True, max_length=MODAL_LIMIT,
                                          initial_value=field.value or None),
        ))
    view = View(
        type="modal", callback_id=EDIT_CALLBACK, private_metadata=str(form.incident_id),
        title=PlainTextObject(text=form.title, emoji=True), submit=PlainTextObject(text=form.submit, emoji=True),
        close=PlainTextObject(text=form.close, emoji=True), blocks=blocks,
    )
    return view.to_dict()


def edit_incident_id(view: dict[str, Any]) -> int | None:
    metadata = str(view.get("private_metadata") or "")
    return int(metadata) if metadata.isdigit() else None


def submitted_values(view: dict[str, Any]) -> dict[str, str]:
    """Each field's submitted text by name, cleaned; "" for a field left empty or missing."""
    values = (view.get("state") or {}).get("values") or {}
    out: dict[str, str] = {}
    for name in EDIT_FIELD_NAMES:
        entry = (values.get(name) or {}).get(_INPUT) or {}
        value = entry.get("value") if isinstance(entry, dict) else None
        out[name] = clean_text(value) if isinstance(value, str) else ""
    return out
