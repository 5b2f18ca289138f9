"""The domain's Messenger port on slack_sdk's WebClient, whose retry handlers cover 429, 5xx and dropped
connections before anything reaches the domain as a MessengerError."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.ports import ChatMessage, MessengerError

log = logging.getLogger(__name__)

# Failures after which Slack may or may not have carried the call out.
_UNCERTAIN = ("timeout", "connection_error")
_CLOCK_SKEW = 2.0  # seconds of slack between our clock and Slack's when looking for a post that landed


def make_web_client(token: str, base_url: str, *, timeout: int = 10, retries: int = 2) -> WebClient:
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=retries),
            RateLimitErrorRetryHandler(max_retry_count=retries),
            ServerErrorRetryHandler(max_retry_count=retries),
        ],
    )


def _failure(error: Exception) -> MessengerError:
    if isinstance(error, SlackApiError):
        code = error.response.get("error") if error.response is not None else None
        status = error.response.status_code if error.response is not None else None
        return MessengerError(str(code or f"http_{status}"), f"HTTP {status}")
    if isinstance(error, TimeoutError | OSError):
        return MessengerError("timeout" if isinstance(error, TimeoutError) else "connection_error", str(error))
    return MessengerError("slack_error", str(error))


class SlackMessenger:
    def __init__(self, client: WebClient) -> None:
        self.client = client
        self._names: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._bot_user_id: str | None = None

    @property
    def bot_user_id(self) -> str:
        if self._bot_user_id is None:
            self._bot_user_id = str(self._call("auth_test")["user_id"])
        return self._bot_user_id

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except (SlackApiError, SlackClientError, TimeoutError, OSError) as error:
            failure = _failure(error)
            log.warning("slack call %s failed: %s", method, failure.kind)
            raise failure from error

    def post_message(
        self, channel: str, text: str, *, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
    ) -> str:
        started = time.time()
        try:
            response = self._call(
                "chat_postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                unfurl_links=False, unfurl_media=False,
            )
        except MessengerError as error:
            landed = self._landed(error, channel, thread_ts, started,
                                  lambda m: (m.get("text") or "").strip() == text.strip())
            if landed is None:
                raise
            return str(landed["ts"])
        return str(response["ts"])

    def _landed(
        self, error: MessengerError, channel: str, thread_ts: str | None, started: float,
        match: Callable[[dict[str, Any]], bool],
    ) -> dict[str, Any] | None:
        """A timed-out or dropped post may have been carried out by Slack all the same. Look for it, so that
        the caller does not report a failure and a retry does not post it a second time."""
        if error.kind not in _UNCERTAIN:
            return None
        oldest = f"{started - _CLOCK_SKEW:.6f}"
        try:
            if thread_ts:
                found = self._call("conversations_replies", channel=channel, ts=thread_ts, oldest=oldest, limit=200)
            else:
                found = self._call("conversations_history", channel=channel, oldest=oldest, limit=200)
            me = self.bot_user_id
        except MessengerError:
            return None  # can't tell; the caller treats it as failed
        for message in found.get("messages", []):
            if message.get("user") == me and float(message.get("ts", 0)) >= started - _CLOCK_SKEW and match(message):
                log.warning("slack call failed (%s) but its message was posted; keeping that one", error.kind)
                return dict(message)
        return None

    def update_message(self, channel: str, ts: str, text: str, *, blocks: list[dict[str, Any]] | None = None) -> None:
        self._call("chat_update", channel=channel, ts=ts, text=text, blocks=blocks)

    def post_ephemeral(
        self, channel: str, user: str, text: str, *, blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> None:
        self._call("chat_postEphemeral", channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread_ts)

    def upload_file(
        self, channel: str, thread_ts: str | None, filename: str, content: bytes, *, title: str,
        initial_comment: str | None = None,
    ) -> str:
        started = time.time()
        try:
            response = self._call(
                "files_upload_v2", channel=channel, thread_ts=thread_ts, filename=filename, content=content,
                title=title, initial_comment=initial_comment,
            )
        except MessengerError as error:

            def shares_it(message: dict[str, Any]) -> bool:
                return any(f.get("name") == filename for f in message.get("files") or [])

            landed = self._landed(error, channel, thread_ts, started, shares_it)
            if landed is None:
                raise
            return str(next(f.get("id", "") for f in landed["files"] if f.get("name") == filename))
        files = response.get("files") or [response.get("file") or {}]
        return str(files[0].get("id", ""))

    def add_reaction(self, channel: str, ts: str, name: str) -> None:
        try:
            self._call("reactions_add", channel=channel, timestamp=ts, name=name)
        except MessengerError as error:
            if error.kind != "already_reacted":
                raise

    def user_name(self, user_id: str) -> str | None:
        with self._lock:
            if user_id in self._names:
                return self._names[user_id]
        try:
            user = self._call("users_info", user=user_id)["user"]
            profile = user.get("profile") or {}
            name = profile.get("display_name") or profile.get("real_name") or user.get("real_name") or user.get("name")
        except MessengerError:
            return None  # a name is a nicety; never lose the event over it, and try again next time
        with self._lock:
            self._names[user_id] = name
        return name

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """views.open: a modal for the person whose click or command gave `trigger_id` (valid for 3 s)."""
        return str(self._call("views_open", trigger_id=trigger_id, view=view)["view"]["id"])

    def fetch_message(self, channel: str, ts: str) -> ChatMessage | None:
        """conversations.history only holds top-level messages; a thread reply needs conversations.replies."""
        response = self._call("conversations_history", channel=channel, latest=ts, oldest=ts, inclusive=True, limit=1)
        messages = [m for m in response.get("messages", []) if m.get("ts") == ts]
        if not messages:
            # Given a reply's ts, Slack answers with its thread; the parent comes first, so search for the reply.
            response = self._call("conversations_replies", channel=channel, ts=ts, limit=1000)
            messages = [m for m in response.get("messages", []) if m.get("ts") == ts]
        if not messages:
            return None
        m = messages[0]
        return ChatMessage(
            channel=channel, ts=ts, user=m.get("user"), text=m.get("text", ""), thread_ts=m.get("thread_ts"),
            bot_id=m.get("bot_id"),
        )
