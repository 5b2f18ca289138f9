"""The verification message's button that records `recovered` (action id `evidence.confirm_recovered`, value
`<incident id>|<verified at, ISO 8601>`): built and parsed here."""

from __future__ import annotations

from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, ButtonElement, PlainTextObject

from bot.ports import VerificationView
from bot.render import RenderedMessage

CONFIRM_RECOVERED = "evidence.confirm_recovered"
RECOVERY_BLOCK = "evidence.recovered"
# Every id this surface gives its blocks and controls; nothing else may use them.
ID_PREFIXES = (CONFIRM_RECOVERED, RECOVERY_BLOCK)
BUTTON_TEXT_LIMIT = 75  # Block Kit's limit for a button's text


def confirm_value(incident_id: int, verified_at: datetime) -> str:
    return f"{incident_id}|{verified_at.isoformat()}"


def parse_confirm_value(value: str) -> tuple[int, datetime] | None:
    incident, _, at = value.partition("|")
    try:
        parsed = datetime.fromisoformat(at)
        return (int(incident), parsed) if parsed.tzinfo is not None else None
    except ValueError:
        return None


def verification_message(view: VerificationView) -> RenderedMessage:
    offer = view.recovery
    if offer is None:
        return view.body
    button = ButtonElement(
        action_id=CONFIRM_RECOVERED, style="primary",
        text=PlainTextObject(text=offer.label[:BUTTON_TEXT_LIMIT], emoji=True),
        value=confirm_value(offer.incident_id, offer.verified_at),
    )
    actions = ActionsBlock(block_id=RECOVERY_BLOCK, elements=[button])
    return RenderedMessage(view.body.text, [*view.body.blocks, actions.to_dict()])
