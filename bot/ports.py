"""What the domain needs from the chat platform. handlers/ implements it with slack_sdk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class MessengerError(RuntimeError):
    """A chat API call failed after the client's own retries. `kind` is short and shown to users."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class ChatMessage:
    channel: str
    ts: str
    user: str | None
    text: str
    thread_ts: str | None = None
    bot_id: str | None = None


class Messenger(Protocol):
    bot_user_id: str

    def post_message(
        self, channel: str, text: str, *, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
    ) -> str: ...

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
