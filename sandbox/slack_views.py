"""What the Slack sandbox checks before it opens a modal: the trigger_id it is given, and the view itself.

Both follow Slack's documentation (docs.slack.dev):
- views.open / views.push exchange a `trigger_id` that Slack handed out with an interaction. It can be exchanged
  once (`exchanged_trigger_id`, "The trigger_id was already exchanged in a previous call"), only within 3 seconds
  of the interaction (`expired_trigger_id`), and only if Slack issued it (`invalid_trigger_id`).
- A modal view ("Modal views" reference): `title` plain_text of at most 24 characters, at most 100 blocks,
  `submit` / `close` of at most 24 characters, `submit` required when an input block is present,
  `private_metadata` at most 3,000 characters, `callback_id` / `external_id` at most 255. Input blocks need a
  label (2,000) and an element; select menus hold at most 100 options of 75 characters, with an `initial_option`
  among them; plain_text_input's `max_length` is at most 3,000. Slack refuses a view that breaks them with
  `invalid_arguments` and names each problem in `response_metadata.messages`, as "[ERROR] … [json-pointer:…]".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

JSONDict = dict[str, Any]

TRIGGER_TTL_SECONDS = 3.0
MODAL_TEXT = 24  # title, submit, close
MODAL_BLOCKS = 100
PRIVATE_METADATA = 3000
ID_LENGTH = 255  # callback_id, external_id, block_id, action_id
INPUT_LABEL = 2000
OPTIONS = 100
OPTION_TEXT = 75
OPTION_VALUE = 150
PLACEHOLDER = 150
TEXT_INPUT_MAX = 3000
_SELECTS = {"static_select", "multi_static_select", "radio_buttons", "checkboxes"}


@dataclass
class _Trigger:
    user: str | None
    issued: float  # epoch seconds of the interaction that carried it
    exchanged: bool = False


class TriggerBook:
    """The trigger_ids the workspace handed out, and which were exchanged. Wall-clock time, as Slack's 3 s are:
    a manual test clock moves messages' ts, not how long the app took to answer."""

    def __init__(self, ttl: float = TRIGGER_TTL_SECONDS, now: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self._now = now
        self._lock = threading.Lock()
        self._issued: dict[str, _Trigger] = {}

    def issue(self, trigger_id: str, *, user: str | None = None, issued_at: float | None = None) -> str:
        """Records a trigger as Slack sends one; a replayed body carries the same one, whose first issue counts."""
        with self._lock:
            self._issued.setdefault(trigger_id, _Trigger(user, self._now() if issued_at is None else issued_at))
        return trigger_id

    def exchange(self, trigger_id: str) -> str | None:
        """Uses the trigger up; None when that worked, else the error code Slack answers."""
        with self._lock:
            trigger = self._issued.get(trigger_id)
            if trigger is None:
                return "invalid_trigger_id"
            if trigger.exchanged:
                return "exchanged_trigger_id"
            if self._now() - trigger.issued > self.ttl:
                return "expired_trigger_id"
            trigger.exchanged = True
            return None


def _too_long(limit: int, pointer: str) -> str:
    return f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}]"


def _plain(obj: Any, pointer: str, limit: int, *, required: bool = False) -> Iterator[str]:
    if obj is None:
        if required:
            yield f"[ERROR] missing required field: {pointer.rsplit('/', 1)[-1]} [json-pointer:{pointer}]"
        return
    if not isinstance(obj, dict) or obj.get("type") != "plain_text" or not isinstance(obj.get("text"), str):
        yield f"[ERROR] must be a plain_text text object [json-pointer:{pointer}]"
        return
    if len(obj["text"]) > limit:
        yield _too_long(limit, f"{pointer}/text")


def _element_problems(element: Any, pointer: str) -> Iterator[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        yield f"[ERROR] missing required field: type [json-pointer:{pointer}]"
        return
    if len(str(element.get("action_id") or "")) > ID_LENGTH:
        yield _too_long(ID_LENGTH, f"{pointer}/action_id")
    yield from _plain(element.get("placeholder"), f"{pointer}/placeholder", PLACEHOLDER)
    kind = element["type"]
    if kind == "plain_text_input":
        most = element.get("max_length", TEXT_INPUT_MAX)
        if not isinstance(most, int) or not 0 < most <= TEXT_INPUT_MAX:
            yield f"[ERROR] must be at most {TEXT_INPUT_MAX} [json-pointer:{pointer}/max_length]"
        elif len(str(element.get("initial_value") or "")) > most:
            yield f"[ERROR] must be at most max_length characters [json-pointer:{pointer}/initial_value]"
    if kind in _SELECTS:
        options = element.get("options")
        if not isinstance(options, list) or not 0 < len(options) <= OPTIONS:
            yield f"[ERROR] must provide between 1 and {OPTIONS} items [json-pointer:{pointer}/options]"
            return
        for n, option in enumerate(options):
            yield from _plain(option.get("text") if isinstance(option, dict) else None,
                              f"{pointer}/options/{n}/text", OPTION_TEXT, required=True)
            if not isinstance(option, dict) or not 0 < len(str(option.get("value") or "")) <= OPTION_VALUE:
                yield f"[ERROR] must be 1 to {OPTION_VALUE} characters [json-pointer:{pointer}/options/{n}/value]"
        initial = element.get("initial_option")
        if initial is not None and initial not in options:
            yield f"[ERROR] must match one of the options [json-pointer:{pointer}/initial_option]"


def modal_problems(view: JSONDict) -> list[str]:
    """Every way `view` breaks Slack's documented limits for a modal; [] when Slack would take it."""
    problems: list[str] = []
    if view.get("type") != "modal":
        problems.append("[ERROR] must be modal [json-pointer:/view/type]")
    problems += _plain(view.get("title"), "/view/title", MODAL_TEXT, required=True)
    problems += _plain(view.get("submit"), "/view/submit", MODAL_TEXT)
    problems += _plain(view.get("close"), "/view/close", MODAL_TEXT)
    for key, limit in (("private_metadata", PRIVATE_METADATA), ("callback_id", ID_LENGTH), ("external_id", ID_LENGTH)):
        if len(str(view.get(key) or "")) > limit:
            problems.append(_too_long(limit, f"/view/{key}"))
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or len(blocks) > MODAL_BLOCKS:
        problems.append(f"[ERROR] must provide at most {MODAL_BLOCKS} items [json-pointer:/view/blocks]")
        return problems
    seen: set[str] = set()
    for n, block in enumerate(blocks):
        pointer = f"/view/blocks/{n}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"[ERROR] missing required field: type [json-pointer:{pointer}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen:
                problems.append(f"[ERROR] duplicate block_id [json-pointer:{pointer}/block_id]")
            if len(str(block_id)) > ID_LENGTH:
                problems.append(_too_long(ID_LENGTH, f"{pointer}/block_id"))
            seen.add(str(block_id))
        if block["type"] == "input":
            if view.get("submit") is None:
                problems.append("[ERROR] submit is required when an input block is present [json-pointer:/view/submit]")
            problems += _plain(block.get("label"), f"{pointer}/label", INPUT_LABEL, required=True)
            problems += _plain(block.get("hint"), f"{pointer}/hint", INPUT_LABEL)
            problems += _element_problems(block.get("element"), f"{pointer}/element")
        for key in ("accessory",):
            if block.get(key) is not None:
                problems += _element_problems(block[key], f"{pointer}/{key}")
        for m, element in enumerate(block.get("elements") or [] if block["type"] == "actions" else []):
            problems += _element_problems(element, f"{pointer}/elements/{m}")
    return list(dict.fromkeys(problems))  # a modal with many inputs and no submit says so once
