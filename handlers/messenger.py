"""The domain's Messenger port on slack_sdk's WebClient, whose retry handlers cover 429, 5xx and dropped
connections before anything reaches the domain as a MessengerError. A post is never sent again blind: after a
failure Slack may have carried out, the channel is searched for it first."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.ports import ChannelRef, ChatMessage, MessengerError
from bot.render import clip_slack
from handlers.slack_http import KeepAliveWebClient
from handlers.slack_limits import MESSAGE_TEXT, MODAL_BLOCKS, fit_message

log = logging.getLogger(__name__)

_CLOCK_SKEW = 2.0  # seconds of slack between our clock and Slack's when looking for a post that landed
_LANDED_PAGES = 10  # history pages of 200 searched for a post that may have landed; past them we can't tell
# Methods whose blind re-send can do the thing twice; post_message looks in the channel before sending again.
_NOT_IDEMPOTENT = ("chat.postMessage", "canvases.create")  # canvases.create has no idempotency key
# The default retry interval calculator: backoff_factor * 2**attempt, plus a random jitter of up to 1 s.
_BACKOFF_FACTOR, _JITTER = 0.5, 1.0


def _not_idempotent(request: HttpRequest) -> bool:
    return request.url.rstrip("/").rsplit("/", 1)[-1] in _NOT_IDEMPOTENT


class _UnsentConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
    """For a post, retries only a connection that failed while sending (urllib's URLError): Slack never had the
    request. A connection dropped after it was sent (RemoteDisconnected, reset) may have posted it."""

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if _not_idempotent(request) and not isinstance(error, URLError):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


class _IdempotentServerErrorRetryHandler(ServerErrorRetryHandler):
    """A 5xx may come after Slack posted the message; post_message checks the channel instead."""

    def _can_retry(self, *, state: RetryState, request: HttpRequest, response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        if _not_idempotent(request):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


def make_web_client(token: str, base_url: str, *, timeout: int = 10, retries: int = 2) -> KeepAliveWebClient:
    # slack_sdk never retries a read timeout itself (urllib raises TimeoutError, which no handler here takes).
    return KeepAliveWebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        ssl=tls_context(base_url),
        retry_handlers=[
            _UnsentConnectionErrorRetryHandler(max_retry_count=retries),
            RateLimitErrorRetryHandler(max_retry_count=retries),
            _IdempotentServerErrorRetryHandler(max_retry_count=retries),
        ],
    )


def tls_context(base_url: str) -> ssl.SSLContext | None:
    """One verifying context for all of a client's calls. Without it urllib makes a default context for every
    HTTPS connection, loading the system's CA bundle again: 51 ms of CPU a call with OpenSSL 3 (README
    "Performance"). Bolt's respond() takes the client's. None for plain HTTP, which never uses it."""
    return ssl.create_default_context() if base_url.lower().startswith("https:") else None


def _carries(message: dict[str, Any], metadata: dict[str, Any]) -> bool:
    found = message.get("metadata") or {}
    return bool(found.get("event_type") == metadata.get("event_type")
                and found.get("event_payload") == metadata.get("event_payload"))


def _failure(error: Exception) -> MessengerError:
    if isinstance(error, SlackApiError):
        code = error.response.get("error") if error.response is not None else None
        status = error.response.status_code if error.response is not None else None
        return MessengerError(str(code or f"http_{status}"), f"HTTP {status}",
                              outcome_unknown=status is not None and status >= 500)
    if isinstance(error, TimeoutError | OSError):
        return MessengerError("timeout" if isinstance(error, TimeoutError) else "connection_error", str(error),
                              outcome_unknown=True)
    return MessengerError("slack_error", str(error))


def _channel_ref(channel: dict[str, Any]) -> ChannelRef:
    return ChannelRef(id=str(channel["id"]), name=str(channel.get("name") or ""), creator=channel.get("creator"),
                      created=float(channel.get("created") or 0))


class SlackMessenger:
    def __init__(self, client: WebClient, *, overflow_note: str = "…") -> None:
        self.client = client
        # Ends a message cut to Slack's limits: "…" and, localised, where the full text is.
        self.overflow_note = overflow_note
        self._names: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._bot_user_id: str | None = None
        self._workspace_url: str | None = None
        self._team_id: str | None = None

    def close(self) -> None:
        """Closes the client's idle connections to Slack (once nothing more will be sent)."""
        if isinstance(self.client, KeepAliveWebClient):
            self.client.close()

    @property
    def bot_user_id(self) -> str:
        if self._bot_user_id is None:
            self._identify()
        assert self._bot_user_id is not None
        return self._bot_user_id

    @property
    def workspace_url(self) -> str:
        if self._workspace_url is None:
            self._identify()
        assert self._workspace_url is not None
        return self._workspace_url

    def _identify(self) -> None:
        """auth.test once: who the bot is and where its workspace lives."""
        answer = self._call("auth_test")
        self._workspace_url = str(answer.get("url") or "")
        self._team_id = str(answer.get("team_id") or "")
        self._bot_user_id = str(answer["user_id"])

    @property
    def retries(self) -> int:
        return max((getattr(h, "max_retry_count", 0) for h in self.client.retry_handlers), default=0)

    @property
    def call_budget(self) -> timedelta:
        """The longest one call may take: every attempt timing out, with the backoff between them."""
        retries = self.retries
        backoff = sum(_BACKOFF_FACTOR * 2**attempt + _JITTER for attempt in range(retries))
        return timedelta(seconds=(retries + 1) * (self.client.timeout or 0) + backoff)

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except (SlackApiError, SlackClientError, TimeoutError, OSError) as error:
            failure = _failure(error)
            log.warning("slack call %s failed: %s", method, failure.kind)
            raise failure from error

    def post_message(
        self, channel: str, text: str, *, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        text, blocks = fit_message(text, blocks, note=self.overflow_note)

        def send() -> Any:
            return self._call(
                "chat_postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                metadata=metadata, unfurl_links=False, unfurl_media=False,
            )

        def ours(message: dict[str, Any]) -> bool:
            if metadata is not None:
                return _carries(message, metadata)
            return (message.get("text") or "").strip() == text.strip()

        return self._post_once(send, channel, thread_ts, ours)

    def _post_once(self, send: Callable[[], Any], channel: str, thread_ts: str | None,
                   ours: Callable[[dict[str, Any]], bool]) -> str:
        """Sends again only when Slack answered or hung up and the post is not in the channel. After a timeout
        Slack may still be carrying it out, so the error goes up with its outcome unknown."""
        started = time.time()
        for attempt in range(self.retries + 1):
            try:
                return str(send()["ts"])
            except MessengerError as error:
                if not error.outcome_unknown:
                    raise
                try:
                    landed = self._find_landed(channel, thread_ts, started, ours)
                except MessengerError:
                    raise error from error.__cause__  # can't tell: never send again blind
                if landed is not None:
                    log.warning("slack call failed (%s) but its message was posted; keeping that one", error.kind)
                    return str(landed["ts"])
                if error.kind == "timeout":
                    raise
                if attempt == self.retries:
                    error.outcome_unknown = False  # Slack answered, and the post is not there
                    raise
        raise AssertionError("unreachable")

    def find_posted(
        self, channel: str, metadata: dict[str, Any], *, since: float, thread_ts: str | None = None
    ) -> str | None:
        found = self._find_landed(channel, thread_ts, since, lambda message: _carries(message, metadata))
        return None if found is None else str(found["ts"])

    def _find_landed(self, channel: str, thread_ts: str | None, started: float,
                     match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The bot's message posted since `started` that `match`es, or None. Raises MessengerError when
        Slack can't be asked (or the window is too long to search), since then nobody can tell."""
        oldest = f"{started - _CLOCK_SKEW:.6f}"
        cursor: str | None = None
        for _ in range(_LANDED_PAGES):
            if thread_ts:
                page = self._call("conversations_replies", channel=channel, ts=thread_ts, oldest=oldest, limit=200,
                                  cursor=cursor, include_all_metadata=True)
            else:
                page = self._call("conversations_history", channel=channel, oldest=oldest, limit=200,
                                  cursor=cursor, include_all_metadata=True)
            me = self.bot_user_id
            for message in page.get("messages", []):
                if (message.get("user") == me and float(message.get("ts", 0)) >= started - _CLOCK_SKEW
                        and match(message)):
                    return dict(message)
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        raise MessengerError("history_too_long", f"more than {_LANDED_PAGES} pages since {oldest}",
                             outcome_unknown=True)

    def _landed(
        self, error: MessengerError, channel: str, thread_ts: str | None, started: float,
        match: Callable[[dict[str, Any]], bool],
    ) -> dict[str, Any] | None:
        """A timed-out or dropped call may have been carried out by Slack all the same. Look for it, so that
        the caller does not report a failure and a retry does not post it a second time."""
        if not error.outcome_unknown:
            return None
        try:
            landed = self._find_landed(channel, thread_ts, started, match)
        except MessengerError:
            return None  # can't tell; the caller treats it as failed
        if landed is not None:
            log.warning("slack call failed (%s) but its message was posted; keeping that one", error.kind)
        return landed

    def update_message(self, channel: str, ts: str, text: str, *, blocks: list[dict[str, Any]] | None = None) -> None:
        text, blocks = fit_message(text, blocks, note=self.overflow_note)
        self._call("chat_update", channel=channel, ts=ts, text=text, blocks=blocks)

    def post_ephemeral(
        self, channel: str, user: str, text: str, *, blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> None:
        text, blocks = fit_message(text, blocks, note=self.overflow_note)
        self._call("chat_postEphemeral", channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread_ts)

    def upload_file(
        self, channel: str, thread_ts: str | None, filename: str, content: bytes, *, title: str,
        initial_comment: str | None = None,
    ) -> str:
        if initial_comment:  # posted as a message of its own, with the message's limit
            initial_comment = clip_slack(initial_comment, MESSAGE_TEXT, tail=self.overflow_note)
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
            name: str | None = (profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                                or user.get("name"))
        except MessengerError:
            return None  # a name is a nicety; never lose the event over it, and try again next time
        with self._lock:
            self._names[user_id] = name
        return name

    def publish_home(self, user_id: str, view: dict[str, Any], *, hash: str | None = None) -> None:
        """views.publish, its blocks fitted to a Home tab's limits (100 blocks, each block's own)."""
        _, blocks = fit_message("", view.get("blocks"), note=self.overflow_note, max_blocks=MODAL_BLOCKS)
        self._call("views_publish", user_id=user_id, view={**view, "blocks": blocks or []}, hash=hash)

    def open_dm(self, user_id: str) -> str:
        return str(self._call("conversations_open", users=user_id)["channel"]["id"])

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """views.open: a modal for the person whose click or command gave `trigger_id` (valid for 3 s)."""
        return str(self._call("views_open", trigger_id=trigger_id, view=view)["view"]["id"])

    def permalink(self, channel: str, ts: str) -> str:
        return str(self._call("chat_getPermalink", channel=channel, message_ts=ts)["permalink"])

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

    def member_channels(self, user_id: str) -> set[str]:
        """users.conversations for `user_id`, every page. With a bot token Slack lists a private channel only when
        the bot is in it too, which every incident channel is."""
        channels: set[str] = set()
        try:
            first = self.client.users_conversations(user=user_id, types="public_channel,private_channel", limit=999)
            for page in first:  # slack_sdk follows response_metadata.next_cursor
                channels.update(str(c["id"]) for c in page.get("channels") or [])
        except (SlackApiError, SlackClientError, TimeoutError, OSError) as error:
            failure = _failure(error)
            log.warning("slack call users_conversations failed: %s", failure.kind)
            raise failure from error
        return channels

    def is_private_channel(self, channel: str) -> bool:
        """conversations.info's is_private. Slack answers channel_not_found for a private channel the bot is not
        in, so that counts as private."""
        try:
            info = self._call("conversations_info", channel=channel)["channel"]
        except MessengerError as error:
            if error.kind == "channel_not_found":
                return True
            raise
        return bool(info.get("is_private"))

    # ---- a channel per incident -------------------------------------------------------------------------------

    def create_channel(self, name: str, *, private: bool) -> ChannelRef:
        return _channel_ref(self._call("conversations_create", name=name, is_private=private)["channel"])

    def find_channel(self, name: str) -> ChannelRef | None:
        """Every page of conversations.list until `name` turns up (Slack has no lookup by name)."""
        try:
            pages = self.client.conversations_list(types="public_channel,private_channel", exclude_archived=True,
                                                   limit=999)
            for page in pages:  # slack_sdk follows response_metadata.next_cursor
                for channel in page.get("channels") or []:
                    if channel.get("name") == name:
                        return _channel_ref(channel)
        except (SlackApiError, SlackClientError, TimeoutError, OSError) as error:
            failure = _failure(error)
            log.warning("slack call conversations_list failed: %s", failure.kind)
            raise failure from error
        return None

    def invite(self, channel: str, user: str) -> None:
        # One person per call: with several, one refusal makes Slack invite none of them.
        try:
            self._call("conversations_invite", channel=channel, users=user)
        except MessengerError as error:
            if error.kind not in ("already_in_channel", "cant_invite_self"):
                raise

    def set_topic(self, channel: str, topic: str) -> None:
        self._call("conversations_setTopic", channel=channel, topic=topic)

    def archive_channel(self, channel: str) -> None:
        try:
            self._call("conversations_archive", channel=channel)
        except MessengerError as error:
            if error.kind != "already_archived":
                raise

    # ---- canvases (the report as a canvas, bot/report_canvas.py) ----------------------------------------------

    def _canvas_call(self, method: str, **kwargs: Any) -> Any:
        """Slack explains a refused canvas in `detail` ("'content' error: line 28: …"): keep it for the log."""
        try:
            return self._call(method, **kwargs)
        except MessengerError as error:
            cause = error.__cause__
            if isinstance(cause, SlackApiError) and cause.response is not None and cause.response.get("detail"):
                error.detail = str(cause.response.get("detail"))
            raise

    def create_canvas(self, title: str, markdown: str) -> str:
        answer = self._canvas_call("canvases_create", title=title,
                                   document_content={"type": "markdown", "markdown": markdown})
        return str(answer["canvas_id"])

    def edit_canvas(self, canvas_id: str, markdown: str) -> None:
        self._canvas_call("canvases_edit", canvas_id=canvas_id, changes=[
            {"operation": "replace", "document_content": {"type": "markdown", "markdown": markdown}}])

    def share_canvas(self, canvas_id: str, channel: str) -> str:
        """canvases.access.set: `channel`'s members may read it. Its link, which Slack unfurls in a message."""
        self._canvas_call("canvases_access_set", canvas_id=canvas_id, access_level="read", channel_ids=[channel])
        if self._team_id is None:
            self._identify()
        return f"{self.workspace_url}docs/{self._team_id}/{canvas_id}"
