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


@dataclass(frozen=True)
class ChannelRef:
    """A channel as conversations.create / conversations.list describe it."""

    id: str
    name: str
    creator: str | None = None
    created: float = 0.0  # epoch seconds


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

    def permalink(self, channel: str, ts: str) -> str:
        """chat.getPermalink: a link to the message (a thread reply's carries its thread). Raises MessengerError."""
        ...

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str: ...

    def member_channels(self, user_id: str) -> set[str]:
        """The public and private channels `user_id` is a member of (private ones only where the bot is too)."""
        ...

    def is_private_channel(self, channel: str) -> bool:
        """Whether `channel` is private; a channel the bot cannot see counts as private."""
        ...

    # ---- a channel per incident (bot/channels.py) ----

    def create_channel(self, name: str, *, private: bool) -> ChannelRef:
        """conversations.create. MessengerError `name_taken`, `missing_scope`, `restricted_action`, `invalid_name…`."""
        ...

    def find_channel(self, name: str) -> ChannelRef | None:
        """The unarchived channel called `name` (a private one only where the bot is), from conversations.list."""
        ...

    def invite(self, channel: str, user: str) -> None:
        """conversations.invite of one person; one already in the channel counts as invited."""
        ...

    def set_topic(self, channel: str, topic: str) -> None: ...

    def archive_channel(self, channel: str) -> None:
        """conversations.archive; a channel archived already counts as archived."""
        ...

    @property
    def workspace_url(self) -> str:
        """The workspace's `https://….slack.com/` (auth.test, asked once), to build links to messages."""
        ...

    def publish_home(self, user_id: str, view: dict[str, Any], *, hash: str | None = None) -> None:
        """views.publish: `user_id`'s App Home. With `hash`, Slack refuses (hash_conflict) if it changed since."""
        ...

    def open_dm(self, user_id: str) -> str:
        """conversations.open: the ID of the direct message between the bot and `user_id`."""
        ...

    # ---- the report as a canvas (bot/report_canvas.py) ----

    def create_canvas(self, title: str, markdown: str) -> str:
        """canvases.create: a standalone canvas only the bot can see yet; its id. Never sent twice by the client:
        without an answer Slack may have made it (`outcome_unknown`)."""
        ...

    def edit_canvas(self, canvas_id: str, markdown: str) -> None:
        """canvases.edit: the whole content replaced (`canvas_not_found` once someone deleted it)."""
        ...

    def share_canvas(self, canvas_id: str, channel: str) -> str:
        """canvases.access.set: `channel`'s members may read it. Returns its link, for a message."""
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


# ---- the issue tracker action items are kept in (bot/github_sync.py; handlers/github_client.py on PyGithub) ------


class IssueTrackerError(RuntimeError):
    """A tracker call that failed. `kind` is short and shown to users: bad_credentials, repo_not_found,
    invalid_assignee, rate_limited, server_error, unreachable, rejected. `retry_at` is the earliest moment the
    tracker asked to be called again (a rate limit's reset or Retry-After); `outcome_unknown`: the request may have
    been carried out although no answer came (a dropped connection, a timeout)."""

    def __init__(self, kind: str, detail: str = "", *, retry_at: datetime | None = None,
                 outcome_unknown: bool = False) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        self.retry_at = retry_at
        self.outcome_unknown = outcome_unknown


@dataclass(frozen=True)
class RemoteIssue:
    """An issue as the tracker holds it."""

    number: int
    url: str
    state: str  # open | closed
    title: str
    body: str
    updated_at: datetime | None


class IssueTracker(Protocol):
    """One repository's issues. Every method raises IssueTrackerError and never retries a creation by itself."""

    def create_issue(self, title: str, body: str, *, labels: list[str], assignee: str | None) -> RemoteIssue: ...

    def find_by_marker(self, marker: str, *, created_since: datetime) -> RemoteIssue | None:
        """The issue whose body holds `marker`, created since `created_since`: the search API, then the list of
        recently updated issues (the search index lags behind the issue store)."""
        ...

    def set_state(self, number: int, state: str) -> RemoteIssue: ...

    def updated_since(self, since: datetime, *, label: str) -> list[RemoteIssue]:
        """Every issue carrying `label` updated since `since`, open or closed (one paged list call)."""
        ...
