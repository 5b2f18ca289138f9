"""handlers/blocks/: each surface lays out what bot/ hands it and parses back, in the same module, every id it put
on its controls; and bot/ itself lays out no Block Kit.

The round trips feed the parsers what Slack sends back for the built message: a click carries the control's
action_id, its block's block_id and its value; a modal submission carries each input under its block and action id.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import handlers.blocks
from bot import checklist, postmortem
from bot.add_to_timeline import Candidate, ChooseForm
from bot.parsing import UsageError
from bot.ports import ActionItemView, ChatMessage, ChecklistView, RecoveryOffer, Transition, VerificationView
from bot.render import RenderedMessage, Renderer
from handlers.blocks import SlackPresenter
from handlers.blocks import add_to_timeline as add_blocks
from handlers.blocks import evidence as evidence_blocks
from handlers.blocks import postmortem as pm_blocks

ROOT = Path(__file__).resolve().parent.parent
BODY = RenderedMessage("the words", [{"type": "section", "text": {"type": "mrkdwn", "text": "the words"}}])


def controls(blocks: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(block, element) of every interactive element, as Slack finds the one that was used."""
    for block in blocks:
        for element in block.get("elements") or []:
            if "action_id" in element:
                yield block, element


def ids(value: Any) -> Iterator[str]:
    """Every action_id, block_id and callback_id in a payload."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("action_id", "block_id", "callback_id"):
                yield str(inner)
            yield from ids(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from ids(inner)


def owned(value: str, declared: tuple[str, ...]) -> bool:
    """An id ending in `.` or `:` is a prefix the surface adds to; any other is an id of its own."""
    return any(value == owned_id or (owned_id.endswith((".", ":")) and value.startswith(owned_id))
               for owned_id in declared)


def assert_owned(payload: Any, module: Any, *, besides: tuple[str, ...] = ()) -> None:
    for found in ids(payload):
        assert found in besides or owned(found, module.ID_PREFIXES), found


# ---- action items ----------------------------------------------------------------------------------------------


def item_view(item_id: int, status: str) -> ActionItemView:
    return ActionItemView(item_id, BODY, tuple(
        Transition(name, f"label {name}") for name, target in postmortem.TRANSITIONS.items() if target != status))


@pytest.mark.parametrize("status", postmortem.STATUSES)
def test_every_action_item_button_parses_back_to_its_item_and_transition(status: str) -> None:
    item_id = 987654321
    message = pm_blocks.action_item_message(item_view(item_id, status))
    assert message.text == BODY.text and message.blocks[: len(BODY.blocks)] == BODY.blocks
    clicked = []
    for block, button in controls(message.blocks):
        assert block["block_id"] == pm_blocks.action_item_block_id(item_id)
        assert pm_blocks.ACTION_ITEM_ACTIONS.match(button["action_id"])  # the listener gets the click
        action = {"action_id": button["action_id"], "block_id": block["block_id"], "value": button["value"]}
        click = pm_blocks.parse_action_item_click(action)
        assert click is not None and click.item_id == item_id
        clicked.append(click.transition)
        assert (button.get("style") == "primary") == (click.transition == "done")
    assert clicked == [name for name, target in postmortem.TRANSITIONS.items() if target != status]
    assert_owned(message.blocks, pm_blocks)


@pytest.mark.parametrize("action", [
    {"action_id": "postmortem.action.delete", "value": "1"},
    {"action_id": "postmortem.action.done", "value": "one"},
    {"action_id": "postmortem.action.done"},
    {"action_id": "xpostmortem.action.done", "value": "1"},
    {},
])
def test_a_click_that_no_action_item_button_makes_parses_to_nothing(action: dict[str, Any]) -> None:
    assert pm_blocks.parse_action_item_click(action) is None


# ---- the checklist ---------------------------------------------------------------------------------------------


def test_every_checklist_group_parses_back_to_its_incident_group_and_ticks() -> None:
    ticked = {"basic.rollback", "analysis.logs", "analysis.perf", "prevent.training"}
    groups = checklist.build(ticked, "ko")
    message = pm_blocks.checklist_message(ChecklistView(424242, BODY, tuple(groups)))
    assert message.text == BODY.text and message.blocks[: len(BODY.blocks)] == BODY.blocks
    seen = []
    for block, boxes in controls(message.blocks):
        assert pm_blocks.CHECKLIST_ACTIONS.match(boxes["action_id"])
        # A click that ticks one more box: Slack sends the new selection and the message as it was.
        shown = frozenset(o["value"] for o in boxes.get("initial_options", []))
        extra = next(o for o in boxes["options"] if o["value"] not in shown)
        body = {"actions": [{"action_id": boxes["action_id"], "block_id": block["block_id"], "type": "checkboxes",
                             "selected_options": [*boxes.get("initial_options", []), extra]}],
                "message": {"blocks": message.blocks}}
        click = pm_blocks.parse_checklist_click(body)
        assert click is not None and click.incident_id == 424242
        assert click.shown == shown and click.selected == shown | {extra["value"]}
        group_keys = {key for key in checklist.ALL_KEYS if key.startswith(f"{click.group}.")}
        assert {o["value"] for o in boxes["options"]} == group_keys
        seen.append(click.group)
        # Without the message (Slack may leave it out) the selection is all there is.
        body.pop("message")
        assert pm_blocks.parse_checklist_click(body) == pm_blocks.ChecklistClick(424242, click.group, click.selected,
                                                                                 None)
    assert seen == [group.key for group in groups]
    assert_owned(message.blocks, pm_blocks)


def test_an_untouched_group_sends_no_initial_options() -> None:
    message = pm_blocks.checklist_message(ChecklistView(1, BODY, tuple(checklist.build([], "en"))))
    assert all("initial_options" not in boxes for _, boxes in controls(message.blocks))


@pytest.mark.parametrize("block_id", ["pm-checklist:x:basic", "pm-checklist:1:", "pm-checklist:1:basic:2",
                                      "pm-checklist-title:basic", "", "pm-checklist:1234567890123:basic"])
def test_a_block_no_checklist_makes_parses_to_nothing(block_id: str) -> None:
    body = {"actions": [{"action_id": "postmortem.checklist.basic", "block_id": block_id}]}
    assert pm_blocks.parse_checklist_click(body) is None


# ---- the edit modal --------------------------------------------------------------------------------------------


def edit_form(values: dict[str, str]) -> postmortem.EditForm:
    return postmortem.EditForm(
        incident_id=31337, header="`INCIDENT-1` title\n", title="Edit", submit="Save", close="Cancel",
        fields=tuple(postmortem.EditField(name, f"label {name}", None if name == "conclusion" else f"hint {name}",
                                          values.get(name, "")) for name in postmortem.EDIT_FIELD_NAMES),
    )


def submission(view: dict[str, Any], typed: dict[str, str]) -> dict[str, Any]:
    """What Slack sends when the modal is submitted: each input's value under its block and action id."""
    state: dict[str, Any] = {}
    for block in view["blocks"]:
        if block["type"] == "input":
            element = block["element"]
            state[block["block_id"]] = {element["action_id"]: {"type": element["type"],
                                                               "value": typed.get(block["block_id"])}}
    return {**view, "id": "V1", "state": {"values": state}}


def test_the_edit_modal_submits_back_every_field_and_its_incident() -> None:
    stored = {"root_cause": "N+1 쿼리", "lessons": "하나\n둘", "prevention": "부하 테스트", "conclusion": ""}
    view = pm_blocks.edit_modal(edit_form(stored))
    assert view["callback_id"] == pm_blocks.EDIT_CALLBACK
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "input"] == list(postmortem.EDIT_FIELD_NAMES)
    prefilled = {b["block_id"]: b["element"].get("initial_value", "") for b in view["blocks"] if b["type"] == "input"}
    assert prefilled == stored
    assert pm_blocks.submitted_values(submission(view, prefilled)) == stored
    typed = {"root_cause": "새 원인\n\x00둘째 줄", "lessons": "", "prevention": "a\nb"}
    assert pm_blocks.submitted_values(submission(view, typed)) == {
        "root_cause": "새 원인\n둘째 줄", "lessons": "", "prevention": "a\nb", "conclusion": ""}
    assert pm_blocks.edit_incident_id(submission(view, typed)) == 31337
    assert_owned(view, pm_blocks, besides=(*postmortem.EDIT_FIELD_NAMES, "value"))


@pytest.mark.parametrize("metadata", ["", "abc", "-1", "1.5", None])
def test_a_modal_without_an_incident_id_names_none(metadata: str | None) -> None:
    assert pm_blocks.edit_incident_id({"private_metadata": metadata}) is None


def test_a_stored_field_longer_than_the_modal_holds_is_refused_by_name() -> None:
    assert pm_blocks.edit_modal(edit_form({"lessons": "x" * pm_blocks.MODAL_LIMIT}))  # exactly the limit fits
    with pytest.raises(UsageError) as refused:
        pm_blocks.edit_modal(edit_form({"lessons": "x" * (pm_blocks.MODAL_LIMIT + 1)}))
    assert refused.value.code == "modal_too_long" and refused.value.params["field"] == "label lessons"


# ---- verification ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "carried"), [("캐시 서버 재시작함 \"따옴표\" & <@U0SENA>", True),
                                             ("가" * 2700, True), ("가" * 2950, False)])
def test_the_chooser_carries_the_message_back_when_it_fits_in_private_metadata(text: str, carried: bool) -> None:
    message = ChatMessage(channel="C0INCIDENTS", ts="1761110100.000100", user="U0LEMUN", text=text,
                          thread_ts="1761110000.000100")
    form = ChooseForm(title="t", submit="s", close="c", label="l", hint="h",
                      candidates=(Candidate(7, "INCIDENT-20251022-001", "결제 장애"),), channel=message.channel,
                      ts=message.ts, response_url="https://hooks.slack.test/r/1", message=message)
    view = add_blocks.chooser_modal(form)
    assert len(view["private_metadata"]) <= add_blocks.PRIVATE_METADATA
    view["state"] = {"values": {"add-to-timeline:incident": {"add-to-timeline:incident": {
        "type": "static_select", "selected_option": {"value": "7"}}}}}
    chosen = add_blocks.parse_choice(view)
    assert chosen is not None and (chosen.incident_id, chosen.channel, chosen.ts) == (7, message.channel, message.ts)
    assert chosen.message == (message if carried else None)  # not carried: read again after the ack


@pytest.mark.parametrize("verified_at", [datetime(2025, 10, 22, 5, 38, 12, 345678, tzinfo=UTC),
                                         datetime(2025, 10, 22, 14, 38, tzinfo=timezone(timedelta(hours=9)))])
def test_the_recovery_button_parses_back_to_its_incident_and_the_time_measured(verified_at: datetime) -> None:
    offer = RecoveryOffer(55, verified_at, "✅ " + "복구 시점 기록 " * 10)
    message = evidence_blocks.verification_message(VerificationView(BODY, offer))
    [(_, button)] = controls(message.blocks)
    assert button["action_id"] == evidence_blocks.CONFIRM_RECOVERED and button["style"] == "primary"
    assert button["text"]["text"] == offer.label[: evidence_blocks.BUTTON_TEXT_LIMIT]
    assert evidence_blocks.parse_confirm_value(button["value"]) == (55, verified_at)
    assert_owned(message.blocks, evidence_blocks)


def test_a_verification_without_an_offer_has_no_controls() -> None:
    assert evidence_blocks.verification_message(VerificationView(BODY, None)) == BODY


@pytest.mark.parametrize("value", ["garbage", "55", "55|", "x|2025-10-22T05:38:00+00:00", "55|2025-10-22T05:38:00"])
def test_a_recovery_value_the_button_never_carries_parses_to_nothing(value: str) -> None:
    assert evidence_blocks.parse_confirm_value(value) is None


# ---- the words fit -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_each_language_s_words_fit_block_kit_s_limits(locale: str) -> None:
    """slack_sdk checks Block Kit's lengths as it lays out (a modal title of 24 characters, a button's 75)."""
    say = Renderer().say
    presenter = SlackPresenter()
    transitions = tuple(Transition(name, say(f"postmortem.button_{name}", locale)) for name in postmortem.TRANSITIONS)
    presenter.action_item(ActionItemView(1, BODY, transitions))
    presenter.checklist(ChecklistView(1, BODY, tuple(checklist.build(checklist.ALL_KEYS, locale))))
    form = postmortem.EditForm(
        incident_id=1, header="h", title=say("postmortem.modal_title", locale),
        submit=say("postmortem.modal_submit", locale), close=say("postmortem.modal_close", locale),
        fields=tuple(postmortem.EditField(name, say(f"postmortem.{label}", locale),
                                          say(f"postmortem.{hint}", locale) if hint else None, "v")
                     for name, label, hint in postmortem.EDIT_FIELDS),
    )
    pm_blocks.edit_modal(form)


# ---- bot/ lays out no Block Kit ----------------------------------------------------------------------------------

# Fields only Block Kit's blocks, controls and views have.
BLOCK_KIT_FIELDS = {"action_id", "block_id", "callback_id", "initial_options", "initial_value", "private_metadata",
                    "elements", "accessory", "blocks"}
BLOCK_KIT_TYPES = {"actions", "button", "checkboxes", "radio_buttons", "static_select", "overflow", "datepicker",
                   "context", "divider", "header", "image", "input", "section", "modal", "home", "plain_text",
                   "mrkdwn", "plain_text_input", "rich_text"}
COMPOSITION_WORDS = {"plain_text", "mrkdwn", "plain_text_input"}
# bot/render.py turns a template's paragraphs into mrkdwn sections and dividers (text_to_blocks): text, no controls.
RENDER_MAY_USE = frozenset({"section", "mrkdwn", "divider"})
SURFACES = [importlib.import_module(f"handlers.blocks.{found.name}")
            for found in pkgutil.iter_modules(handlers.blocks.__path__)]
OWNED_IDS = tuple(owned_id for surface in SURFACES for owned_id in getattr(surface, "ID_PREFIXES", ()))


@pytest.mark.parametrize("surface", SURFACES, ids=lambda module: module.__name__)
def test_every_surface_declares_the_ids_it_owns(surface: Any) -> None:
    assert surface.ID_PREFIXES and all(isinstance(owned_id, str) for owned_id in surface.ID_PREFIXES)


def block_kit_in(source: str, *, allowed: frozenset[str] = frozenset()) -> list[str]:
    """What in this module's code is Block Kit: a dict with a Block Kit field or type, a Block Kit word, an id
    handlers/blocks owns, a Slack library."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    continue
                if key.value in BLOCK_KIT_FIELDS:
                    found.append(f"line {node.lineno}: field {key.value!r}")
                if (key.value == "type" and isinstance(value, ast.Constant)
                        and value.value in BLOCK_KIT_TYPES - allowed):
                    found.append(f"line {node.lineno}: type {value.value!r}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in COMPOSITION_WORDS - allowed:
                found.append(f"line {node.lineno}: {node.value!r}")
            if owned(node.value, OWNED_IDS):
                found.append(f"line {node.lineno}: id {node.value!r} belongs to handlers/blocks")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            slack = [name for name in names if name.split(".")[0] in ("slack_sdk", "slack_bolt")]
            found += [f"line {node.lineno}: imports {name}" for name in slack]
    return found


def bot_modules() -> list[Path]:
    return sorted((ROOT / "bot").rglob("*.py"))


@pytest.mark.parametrize("path", bot_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_bot_lays_out_no_block_kit(path: Path) -> None:
    allowed = RENDER_MAY_USE if path == ROOT / "bot" / "render.py" else frozenset()
    assert block_kit_in(path.read_text(encoding="utf-8"), allowed=allowed) == []


def test_the_rule_catches_what_bot_used_to_build() -> None:
    """The layouts bot/postmortem.py and bot/evidence/service.py built before they moved to handlers/blocks."""
    old = '''
elements = [{"type": "button", "action_id": f"postmortem.action.{name}", "value": str(item.id),
             "text": {"type": "plain_text", "text": label, "emoji": True}}]
blocks.append({"type": "actions", "block_id": f"pm-action:{item.id}", "elements": elements})
view = {"type": "modal", "callback_id": "postmortem.edit", "private_metadata": str(incident.id)}
button = {"action_id": CONFIRM_RECOVERED}
CONFIRM_RECOVERED = "evidence.confirm_recovered"
from slack_sdk.models.blocks import ButtonElement
'''
    found = block_kit_in(old)
    for expected in ("type 'button'", "field 'action_id'", "id 'postmortem.action.'", "'plain_text'",
                     "type 'actions'", "id 'pm-action:'", "type 'modal'", "field 'callback_id'",
                     "id 'postmortem.edit'", "id 'evidence.confirm_recovered'", "imports slack_sdk"):
        assert any(expected in line for line in found), (expected, found)
    # render.py's paragraphs pass; a control there does not.
    assert block_kit_in('{"type": "section", "text": {"type": "mrkdwn", "text": t}}', allowed=RENDER_MAY_USE) == []
    assert block_kit_in('{"type": "button"}', allowed=RENDER_MAY_USE) == ["line 1: type 'button'"]
