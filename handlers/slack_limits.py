"""Slack's size limits, applied to every outgoing message after rendering and escaping.

The numbers are Slack's documented ones (docs.slack.dev, Block Kit reference and chat.postMessage); slack_sdk's
block models carry the same values (e.g. SectionBlock.text_max_length), which they only validate, never fit.
A message that breaks them is refused (msg_too_long, invalid_blocks), so nothing may leave without fit_message().
"""

from __future__ import annotations

import copy
from typing import Any

from bot.render import clip_slack

# chat.postMessage: "The text field is truncated after 40,000 characters"; longer fails with msg_too_long.
MESSAGE_TEXT = 40_000
# Blocks reference: "up to 50 blocks in each message, and 100 blocks in modals or Home tabs".
MESSAGE_BLOCKS = 50
MODAL_BLOCKS = 100
# Section block: text 3,000; fields at most 10 items of 2,000 each.
SECTION_TEXT = 3_000
SECTION_FIELDS = 10
SECTION_FIELD_TEXT = 2_000
HEADER_TEXT = 150  # header block: plain_text, 150
CONTEXT_ELEMENTS = 10  # context block: at most 10 elements
ACTIONS_ELEMENTS = 25  # actions block: at most 25 elements
BUTTON_TEXT = 75  # button element: text 75
OPTION_TEXT = 75  # option object: text 75
OPTIONS = 100  # select menus: at most 100 options
PLACEHOLDER_TEXT = 150  # placeholder of selects and plain_text_input: 150
INPUT_LABEL = 2_000  # input block: label and hint 2,000
TEXT_OBJECT = 3_000  # a text object anywhere else (context elements…): 3,000

Blocks = list[dict[str, Any]]


def fit_message(
    text: str, blocks: Blocks | None, *, note: str = "…", max_blocks: int = MESSAGE_BLOCKS
) -> tuple[str, Blocks | None]:
    """The message cut to Slack's limits: text and every block's text clipped outside any entity or token, and
    blocks beyond the limit replaced by one section saying so (`note`: "…" and, localised, where the full text
    is). Returns its arguments unchanged (the same objects) when they already fit."""
    fitted_text = clip_slack(text, MESSAGE_TEXT, tail=note)
    if not blocks:
        return fitted_text, blocks
    fitted = [_fit_block(block) for block in blocks]
    if len(fitted) > max_blocks:
        fitted = [*fitted[: max_blocks - 1], {"type": "section", "text": {"type": "mrkdwn", "text": note}}]
    return fitted_text, (blocks if fitted == blocks else fitted)


def fits(text: str, blocks: Blocks | None) -> bool:
    fitted_text, fitted_blocks = fit_message(text, blocks)
    return fitted_text == text and fitted_blocks is blocks


def _clip_text_object(obj: Any, limit: int) -> Any:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or len(obj["text"]) <= limit:
        return obj
    return {**obj, "text": clip_slack(obj["text"], limit)}


def _fit_element(element: Any) -> Any:
    if not isinstance(element, dict):
        return element
    out = dict(element)
    if element.get("type") == "button":
        out["text"] = _clip_text_object(element.get("text"), BUTTON_TEXT)
    elif isinstance(element.get("text"), str):  # a text object used as an element (context blocks)
        out = _clip_text_object(element, TEXT_OBJECT)
    if "placeholder" in element:
        out["placeholder"] = _clip_text_object(element["placeholder"], PLACEHOLDER_TEXT)
    if isinstance(element.get("options"), list):
        out["options"] = [
            {**o, "text": _clip_text_object(o.get("text"), OPTION_TEXT)} if isinstance(o, dict) else o
            for o in element["options"][:OPTIONS]
        ]
    return out


def _fit_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    out = copy.copy(block)
    if kind == "section":
        out["text"] = _clip_text_object(block.get("text"), SECTION_TEXT) if "text" in block else None
        if isinstance(block.get("fields"), list):
            out["fields"] = [_clip_text_object(f, SECTION_FIELD_TEXT) for f in block["fields"][:SECTION_FIELDS]]
        if "accessory" in block:
            out["accessory"] = _fit_element(block["accessory"])
        if "text" not in block:
            del out["text"]
    elif kind == "header":
        out["text"] = _clip_text_object(block.get("text"), HEADER_TEXT)
    elif kind == "context" and isinstance(block.get("elements"), list):
        out["elements"] = [_fit_element(e) for e in block["elements"][:CONTEXT_ELEMENTS]]
    elif kind == "actions" and isinstance(block.get("elements"), list):
        out["elements"] = [_fit_element(e) for e in block["elements"][:ACTIONS_ELEMENTS]]
    elif kind == "input":
        for key in ("label", "hint"):
            if key in block:
                out[key] = _clip_text_object(block[key], INPUT_LABEL)
        if "element" in block:
            out["element"] = _fit_element(block["element"])
    return out

