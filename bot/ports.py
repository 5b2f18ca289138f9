"""What the domain needs from the chat platform. handlers/ implements it with slack_sdk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.checklist import ChecklistGroup
from bot.render import RenderedMessage


class MessengerError(RuntimeError):
    """A chat API call failed after the client's own retries. `kind` is short and shown to users."""

    def __init__(self, kind: str, detail: str = "", *, outcome_unknown: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        # Slack may have carried the call out all the same (timeout, dropped connection, 5xx): look before redoing it.
        self.outcome_unknown = outcome_unknown


@dataclass(frozen=True)
class ChatMessage:
    channel: str
    ts: str
    user: str | None
    text: str
    thread_ts: str | None = None
    bot_id: str | None = None


class Messenger(Protocol):
    @property
    def bot_user_id(self) -> str:
        """The bot's own user id (read-only: the Slack messenger looks it up once)."""
        ...

    @property
    def call_budget(self) -> timedelta:
        """The longest one call may take, with the client's timeout and retries (a rate limit's wait aside)."""
        ...

    def post_message(
        self, channel: str, text: str, *, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str: ...

    def find_posted(
        self, channel: str, metadata: dict[str, Any], *, since: float, thread_ts: str | None = None
    ) -> str | None:
        """The ts of the bot's message carrying `metadata` (top-level, or in `thread_ts`'s thread), posted since
        `since` (epoch seconds). Raises MessengerError when Slack can't be asked."""
        ...

    def update_message(
        self, channel: str, ts: str, text: str, *, blocks: list[dict[str, Any]] | None = None
    ) -> None: ...

    def post_ephemeral(
        self, channel: str, user: str, text: str, *, blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> None: ...

    def upload_file(
        self, channel: str, thread_ts: str | None, filename: str, content: bytes, *, title: str,
        initial_comment: str | None = None,
    ) -> str: ...

    def add_reaction(self, channel: str, ts: str, name: str) -> None: ...

    def user_name(self, user_id: str) -> str | None: ...

    def fetch_message(self, channel: str, ts: str) -> ChatMessage | None: ...

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str: ...

    def member_channels(self, user_id: str) -> set[str]:
        """The public and private channels `user_id` is a member of (private ones only where the bot is too)."""
        ...

    def is_private_channel(self, channel: str) -> bool:
        """Whether `channel` is private; a channel the bot cannot see counts as private."""
        ...


# ---- what the domain shows, for the platform to lay out -------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    """A status change an action item offers from where it is: `name` is a key of postmortem.TRANSITIONS."""

    name: str
    label: str


@dataclass(frozen=True)
class ActionItemView:
    item_id: int
    body: RenderedMessage  # the item's words, from its template
    transitions: tuple[Transition, ...]


@dataclass(frozen=True)
class ChecklistView:
    incident_id: int
    body: RenderedMessage
    groups: tuple[ChecklistGroup, ...]


@dataclass(frozen=True)
class RecoveryOffer:
    """A passing verification offers to record `recovered` at the time it measured."""

    incident_id: int
    verified_at: datetime
    label: str


@dataclass(frozen=True)
class VerificationView:
    body: RenderedMessage
    recovery: RecoveryOffer | None


@dataclass(frozen=True)
class AlertChoice:
    """What an alert's message offers: `declare` and `dismiss`, or `recovered` on a cleared alert's note."""

    name: str
    label: str


@dataclass(frozen=True)
class AlertView:
    alert_id: int  # the stored notification the choices act on
    body: RenderedMessage
    choices: tuple[AlertChoice, ...]


@dataclass(frozen=True)
class RollbackConfirmation:
    """The confirm button of a rollback proposal and the dialog it opens (service, target, traffic change)."""

    rollback_id: int
    button: str
    title: str
    text: str
    confirm: str
    deny: str


@dataclass(frozen=True)
class RollbackProposalView:
    body: RenderedMessage
    confirmation: RollbackConfirmation | None  # None once there is nothing left to confirm


@dataclass(frozen=True)
class RollbackOffer:
    """Under an evidence summary that saw the canary failing: a button that proposes the rollback."""

    incident_id: int
    label: str


class Presenter(Protocol):
    """Lays out the messages people act on. The domain supplies the words and the choices; the platform adds its
    controls, and owns the ids they carry, which it parses back when they are used."""

    def action_item(self, view: ActionItemView) -> RenderedMessage: ...

    def checklist(self, view: ChecklistView) -> RenderedMessage: ...

    def verification(self, view: VerificationView) -> RenderedMessage: ...

    def alert(self, view: AlertView) -> RenderedMessage: ...

    def rollback_proposal(self, view: RollbackProposalView) -> RenderedMessage: ...

    def rollback_offer(self, body: RenderedMessage, offer: RollbackOffer) -> RenderedMessage: ...
