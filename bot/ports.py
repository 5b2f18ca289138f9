"""What the domain needs from the chat platform. handlers/ implements it with slack_sdk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol


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
