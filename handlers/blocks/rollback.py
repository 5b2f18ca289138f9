"""The rollback surfaces' buttons, built and parsed here.

* A proposal's confirm button: action id `rollback_confirm`, value = the stored rollback's id, with Slack's
  `confirm` dialog (service, target revision, traffic change), in the block `rollback_block:<rollback id>`.
* Under an evidence summary that saw the canary failing: action id `rollback_propose`, value = the incident's id,
  in the block `rollback_offer:<incident id>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject, PlainTextObject

from bot.ports import RollbackOffer, RollbackProposalView
from bot.render import RenderedMessage
from bot.sanitize import clean_text

CONFIRM = "rollback_confirm"
PROPOSE = "rollback_propose"
CONFIRM_BLOCK = "rollback_block:"
OFFER_BLOCK = "rollback_offer:"
# Every id this surface gives its controls and blocks (one ending in `:` is a prefix); nothing else may use them.
ID_PREFIXES = (CONFIRM, PROPOSE, CONFIRM_BLOCK, OFFER_BLOCK)
# Block Kit's limits: a button's text, and a confirm dialog's title, text and buttons.
BUTTON_TEXT_LIMIT = 75
DIALOG_LIMITS = {"title": 100, "text": 300, "confirm": 30, "deny": 30}


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def proposal_message(view: RollbackProposalView) -> RenderedMessage:
    confirmation = view.confirmation
    if confirmation is None:
        return view.body
    dialog = ConfirmObject(
        title=PlainTextObject(text=_fit(confirmation.title, DIALOG_LIMITS["title"])),
        text=PlainTextObject(text=_fit(confirmation.text, DIALOG_LIMITS["text"])),
        confirm=PlainTextObject(text=_fit(confirmation.confirm, DIALOG_LIMITS["confirm"])),
        deny=PlainTextObject(text=_fit(confirmation.deny, DIALOG_LIMITS["deny"])),
        style="danger",
    )
    button = ButtonElement(action_id=CONFIRM, value=str(confirmation.rollback_id), style="danger", confirm=dialog,
                           text=PlainTextObject(text=_fit(confirmation.button, BUTTON_TEXT_LIMIT), emoji=True))
    actions = ActionsBlock(block_id=f"{CONFIRM_BLOCK}{confirmation.rollback_id}", elements=[button])
    return RenderedMessage(view.body.text, [*view.body.blocks, actions.to_dict()])


def offer_message(body: RenderedMessage, offer: RollbackOffer) -> RenderedMessage:
    button = ButtonElement(action_id=PROPOSE, value=str(offer.incident_id),
                           text=PlainTextObject(text=_fit(offer.label, BUTTON_TEXT_LIMIT), emoji=True))
    actions = ActionsBlock(block_id=f"{OFFER_BLOCK}{offer.incident_id}", elements=[button])
    return RenderedMessage(body.text, [*body.blocks, actions.to_dict()])


@dataclass(frozen=True)
class Click:
    target_id: int  # the rollback (confirm) or the incident (propose)
    user_id: str
    user_name: str | None
    channel: str | None
    message_ts: str | None


def parse_click(body: dict[str, Any], action_id: str) -> Click | None:
    """The click on one of this surface's buttons, or None when the payload is not one (forged or malformed)."""
    action = (body.get("actions") or [{}])[0]
    value = str(action.get("value", ""))
    user = _object(body, "user")
    user_id = user.get("id")
    if action.get("action_id") != action_id or not value.isdigit() or len(value) > 12:
        return None
    if not isinstance(user_id, str) or not user_id:
        return None
    name = user.get("name") or user.get("username")
    container = _object(body, "container")
    channel = container.get("channel_id") or _object(body, "channel").get("id")
    ts = container.get("message_ts")
    return Click(int(value), user_id, clean_text(name) if isinstance(name, str) else None,
                 channel if isinstance(channel, str) else None, ts if isinstance(ts, str) else None)


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}
