"""Block Kit, one module per surface: each lays out what bot/ hands it and parses back the ids its controls carry,
in the same place. SlackPresenter is the domain's Presenter port on these modules."""

from __future__ import annotations

from bot.ports import (
    ActionItemView,
    AlertView,
    ChecklistView,
    RollbackOffer,
    RollbackProposalView,
    VerificationView,
)
from bot.render import RenderedMessage
from handlers.blocks import alerts, evidence, postmortem, rollback


class SlackPresenter:
    def action_item(self, view: ActionItemView) -> RenderedMessage:
        return postmortem.action_item_message(view)

    def checklist(self, view: ChecklistView) -> RenderedMessage:
        return postmortem.checklist_message(view)

    def verification(self, view: VerificationView) -> RenderedMessage:
        return evidence.verification_message(view)

    def alert(self, view: AlertView) -> RenderedMessage:
        return alerts.alert_message(view)

    def rollback_proposal(self, view: RollbackProposalView) -> RenderedMessage:
        return rollback.proposal_message(view)

    def rollback_offer(self, body: RenderedMessage, offer: RollbackOffer) -> RenderedMessage:
        return rollback.offer_message(body, offer)
