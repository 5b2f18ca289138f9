"""A local, in-memory fake of the Slack Web API.

`SlackSandbox` serves `/api/<method>` on loopback so the real `slack_sdk.WebClient` (and therefore Bolt)
can talk to it unchanged, including slack_sdk's retry handlers. It also serves the two other kinds of
URL Slack hands out: file upload URLs (`/upload/<file_id>`) and slash-command / interaction
`response_url`s (`/response/<n>`). Everything is recorded so tests can assert on it, and faults
(5xx, 429, latency, dropped connections) can be injected per method.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import email.parser
import email.policy
import json
import logging
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from sandbox.canvases import CanvasWorkspace
from sandbox.slack_channels import ChannelAdmin
from sandbox.slack_home import AppHomes
from sandbox.slack_views import TriggerBook, modal_problems

if TYPE_CHECKING:
    from types import TracebackType

    from sandbox.driver import SlackDriver

log = logging.getLogger(__name__)

JSONDict = dict[str, Any]

DEFAULT_USERS: dict[str, str] = {
    "U0SENA": "Sena",
    "U0LEMUN": "Lemun",
    "U0GITCO": "Gitco",
    "U0LUBIT": "Lubit",
    "U0MONITOR": "Monitoring",
}
DEFAULT_CHANNELS: dict[str, str] = {"C0INCIDENTS": "critical-incidents"}

# Limits Slack enforces that a bot can realistically trip over.
MAX_BLOCKS = 50
MAX_TEXT = 40_000
BLOCK_LIMITS = {
    "section_text": 3000, "section_fields": 10, "section_field_text": 2000, "header_text": 150,
    "context_elements": 10, "actions_elements": 25, "button_text": 75, "option_text": 75, "options": 100,
    "placeholder": 150,
}
RESPONSE_URL_MAX_USES = 5
MAX_PAGE = 999

# Params slack_sdk sends as JSON strings inside form bodies.
_JSON_STRING_PARAMS = ("blocks", "attachments", "files", "metadata", "view")
_THREAD_SUMMARY_KEYS = ("reply_count", "reply_users", "reply_users_count", "latest_reply")


@dataclass(frozen=True)
class Call:
    """One recorded HTTP attempt against the fake API (injected failures included)."""

    method: str
    args: JSONDict
    status: int
    response: JSONDict | None
    at: float


class SlackSandboxError(Exception):
    """Raised by the user-simulation helpers; `error` is the Slack error code it would map to."""

    def __init__(self, error: str, messages: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages  # Slack's response_metadata.messages, e.g. what is wrong with a view


@dataclass
class _Fault:
    kind: str  # "fail" | "ratelimit" | "slow" | "disconnect" | "lose"
    times: int
    status: int = 500
    error: str | None = None
    retry_after: int = 1
    seconds: float = 0.0
    until: Callable[[], bool] | None = None  # "slow": answer once this holds (at most `seconds`)


@dataclass
class _ResponseUrl:
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    after: Callable[[], None] | None = None


# Marks a call that takes effect and whose response is then dropped (lose_response).
_LOSE = _Reply(0, drop=True)


def _json_reply(status: int, payload: JSONDict, **kw: Any) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), **kw)


def _text_reply(status: int, text: str) -> _Reply:
    return _Reply(status, text.encode(), content_type="text/plain; charset=utf-8")


def channel_type(channel: str) -> str:
    """The `channel_type` Slack puts on message events, derived from the ID prefix."""
    if channel.startswith("D"):
        return "im"
    if channel.startswith("G"):
        return "group"
    return "channel"


def _ts_us(ts: Any) -> int:
    """Slack ts → integer microseconds, so "1.5" and "1.500000" compare equal."""
    try:
        value = Decimal(str(ts).strip())
    except InvalidOperation as exc:
        raise ValueError(f"bad ts: {ts!r}") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"bad ts: {ts!r}")
    return int(value * 1_000_000)


def _fmt_ts(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _canon_ts(ts: Any) -> str:
    return _fmt_ts(_ts_us(ts))


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True", "TRUE")


def _text_of(p: JSONDict) -> str | None:
    text = p.get("text")
    if text is None:
        text = p.get("markdown_text")
    return None if text is None else str(text)


def _required(p: JSONDict, name: str, error: str) -> str:
    value = p.get(name)
    if value is None or value == "":
        raise SlackSandboxError(error)
    return str(value)


def _int_param(p: JSONDict, name: str, default: int) -> int:
    value = p.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise SlackSandboxError("invalid_arguments") from exc


def _blocks_param(p: JSONDict) -> list[JSONDict] | None:
    blocks = p.get("blocks")
    if blocks is None or blocks == "":
        return None
    ok = isinstance(blocks, list) and len(blocks) <= MAX_BLOCKS
    if not ok or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
        raise SlackSandboxError("invalid_blocks")
    if not all(_block_within_limits(b) for b in blocks):
        raise SlackSandboxError("invalid_blocks")
    return cast(list[JSONDict], blocks)


def _text_len(obj: Any) -> int:
    return len(obj.get("text") or "") if isinstance(obj, dict) else 0


def _element_within_limits(element: Any) -> bool:
    if not isinstance(element, dict):
        return False
    if element.get("type") == "button" and _text_len(element.get("text")) > BLOCK_LIMITS["button_text"]:
        return False
    if _text_len(element.get("placeholder")) > BLOCK_LIMITS["placeholder"]:
        return False
    options = element.get("options") or []
    return len(options) <= BLOCK_LIMITS["options"] and all(
        _text_len(o.get("text")) <= BLOCK_LIMITS["option_text"] for o in options if isinstance(o, dict)
    )


def _block_within_limits(block: JSONDict) -> bool:
    """Slack's documented Block Kit limits (docs.slack.dev, Block Kit reference), which it answers with
    invalid_blocks; so an over-limit message fails loudly in every test."""
    kind = block.get("type")
    if kind == "section":
        fields = block.get("fields") or []
        return (
            _text_len(block.get("text")) <= BLOCK_LIMITS["section_text"]
            and len(fields) <= BLOCK_LIMITS["section_fields"]
            and all(_text_len(f) <= BLOCK_LIMITS["section_field_text"] for f in fields)
            and ("accessory" not in block or _element_within_limits(block["accessory"]))
        )
    if kind == "header":
        return _text_len(block.get("text")) <= BLOCK_LIMITS["header_text"]
    if kind == "context":
        return len(block.get("elements") or []) <= BLOCK_LIMITS["context_elements"]
    if kind == "actions":
        elements = block.get("elements") or []
        return len(elements) <= BLOCK_LIMITS["actions_elements"] and all(_element_within_limits(e) for e in elements)
    return True


def _attachments_param(p: JSONDict) -> list[JSONDict] | None:
    attachments = p.get("attachments")
    if attachments is None or attachments == "":
        return None
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise SlackSandboxError("invalid_attachments")
    return cast(list[JSONDict], attachments)


def _without_metadata(messages: list[JSONDict], p: JSONDict) -> list[JSONDict]:
    """conversations.history/replies return message metadata only when asked with include_all_metadata."""
    if not _flag(p.get("include_all_metadata")):
        for message in messages:
            message.pop("metadata", None)
    return messages


def _encode_cursor(ts: str) -> str:
    # Slack's cursors are base64 of "next_ts:<ts>"; mimic so callers treat them as opaque.
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _decode_cursor(cursor: Any) -> int | None:
    if cursor in (None, ""):
        return None
    try:
        raw = base64.b64decode(str(cursor), validate=True).decode()
        prefix, _, ts = raw.partition(":")
        if prefix != "next_ts":
            raise ValueError(raw)
        return _ts_us(ts)
    except ValueError as exc:
        raise SlackSandboxError("invalid_cursor") from exc


def _decode_json_strings(params: JSONDict) -> JSONDict:
    for key in _JSON_STRING_PARAMS:
        value = params.get(key)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            # Undecodable values stay strings; the method then reports invalid_blocks etc.
            with contextlib.suppress(json.JSONDecodeError):
                params[key] = json.loads(value)
    return params


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]]:
    """(field name, filename, bytes) for each part of a multipart/form-data body."""
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        return []
    parts: list[tuple[str, str | None, bytes]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        parts.append((str(name or ""), part.get_filename(), payload if isinstance(payload, bytes) else b""))
    return parts


def _parse_params(query: str, body: bytes, content_type: str) -> JSONDict:
    """Merge query string and body (JSON, form or multipart); body wins like on Slack."""
    params: JSONDict = dict(parse_qsl(query, keep_blank_values=True))
    ctype = content_type.split(";", 1)[0].strip().lower()
    if body:
        if ctype == "application/json":
            try:
                decoded = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SlackSandboxError("invalid_json") from exc
            if not isinstance(decoded, dict):
                raise SlackSandboxError("invalid_json")
            params.update({k: v for k, v in decoded.items() if v is not None})
        elif ctype == "multipart/form-data":
            for name, filename, data in _parse_multipart(body, content_type):
                params[name] = data if filename is not None else data.decode("utf-8", "replace")
        else:
            try:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError as exc:
                raise SlackSandboxError("invalid_form_data") from exc
    return _decode_json_strings(params)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: SlackSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client refusing the certificate, or hanging up mid-handshake, is the client's business.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
            log.debug("sandbox: TLS handshake with %s failed", client_address, exc_info=True)
            return
        super().handle_error(request, client_address)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        if self.sandbox.tls is not None:
            # Slack speaks only HTTPS. The handshake runs in the handler's thread (setup), not in the accept loop.
            conn = self.sandbox.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Idle keep-alive connections give up eventually instead of pinning threads forever.
    timeout = 60

    @property
    def sandbox(self) -> SlackSandbox:
        return cast(_Server, self.server).sandbox

    def setup(self) -> None:
        super().setup()
        self.sandbox._track(self.connection, add=True)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except BaseException:  # finish() will not run: the connection is nobody's to kick any more
                self.sandbox._track(self.connection, add=False)
                raise

    def finish(self) -> None:
        self.sandbox._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sandbox %s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        url = urlsplit(self.path)
        content_type = self.headers.get("Content-Type", "")
        try:
            reply = self.sandbox._route(
                url.path, url.query, body, content_type, self.headers.get("Authorization")
            )
        except Exception:
            log.exception("sandbox: unhandled error for %s", self.path)
            reply = _json_reply(500, {"ok": False, "error": "fatal_error"})
        if reply.delay > 0:
            time.sleep(reply.delay)
        if reply.drop:
            # No response at all: the client sees RemoteDisconnected / connection reset.
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            # The client gave up (timeout) before we answered; that is the point of slow_once.
            self.close_connection = True
        if reply.after is not None:
            reply.after()


class SlackSandbox:
    """In-memory Slack workspace behind a loopback HTTP server. All state sits behind one lock."""

    app_id = "A0SANDBOX"
    bot_name = "incident-bot"

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-sandbox-token",
        team_id: str = "T0SANDBOX",
        team_name: str = "sandbox",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        users: dict[str, str | JSONDict] | None = None,
        channels: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        # Message ts values come from this clock (epoch seconds); the demo runs it on the scenario's day.
        self._clock = clock or time.time
        # A server context (sandbox.tls.LoopbackCA.server_context): HTTPS, as Slack's API only is.
        self.tls = tls
        self.bot_token = bot_token
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self._host = host
        self._port = port

        self._lock = threading.RLock()
        self._users: dict[str, JSONDict] = {}
        self._channels: dict[str, str] = dict(DEFAULT_CHANNELS if channels is None else channels)
        # Channels with a member list of their own (add_channel); any other has every user of the workspace in it.
        self._members: dict[str, set[str]] = {}
        self._private: set[str] = set()
        self._messages: dict[str, dict[str, JSONDict]] = {}
        self._edits: dict[tuple[str, str], list[JSONDict]] = {}
        self._ephemerals: list[JSONDict] = []
        self._files: dict[str, JSONDict] = {}
        self._views: dict[str, JSONDict] = {}
        self.triggers = TriggerBook()  # trigger_ids handed out with interactions: single use, 3 s
        self._calls: list[Call] = []
        self._responses: list[tuple[str, JSONDict]] = []
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._last_us = 0
        self._seq = 0
        self._echo: SlackDriver | None = None

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._connections_opened = 0

        self._users[bot_user_id] = self._make_user(bot_user_id, self.bot_name, {"is_bot": True})
        self._users[bot_user_id]["profile"]["bot_id"] = bot_id
        for uid, spec in {**DEFAULT_USERS, **(users or {})}.items():
            self.add_user(uid, spec)

        self._methods: dict[str, Callable[[JSONDict], JSONDict]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "users.info": self._users_info,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.info": self._conversations_info,
            "conversations.members": self._conversations_members,
            "users.conversations": self._users_conversations,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "files.upload": self._files_upload_v1,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.update": self._views_update,
        }
        # Canvases (sandbox/canvases.py): their content, versions and access, and the documented markdown subset.
        self.canvases = CanvasWorkspace(lock=self._lock, new_id=lambda: self._next_id("F"),
                                        bot_user_id=bot_user_id, channel_known=self._known)
        self._methods.update(self.canvases.methods())
        # App Home (sandbox/slack_home.py): each user's published Home tab, and the bot's DMs (conversations.open).
        self.app_homes = AppHomes(lock=self._lock, team_id=team_id, app_id=self.app_id, bot_id=bot_id,
                                  user_known=lambda user: self.user(user) is not None, new_id=self._next_id)
        self._methods.update(self.app_homes.methods())
        # Channel management (sandbox/slack_channels.py): create, invite, set the topic, archive, list; scopes.
        self.channel_admin = ChannelAdmin(self)
        self._methods.update(self.channel_admin.methods())

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SlackSandbox:
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="slack-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self.close_idle_connections()  # kicks keep-alive handler threads off their blocking reads
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("SlackSandbox is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self._host}:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}api/"

    @property
    def connections_opened(self) -> int:
        """How many connections clients have opened to the sandbox so far."""
        with self._lock:
            return self._connections_opened

    def close_idle_connections(self) -> None:
        """Closes the connections clients keep open, as a server's keep-alive timeout does. Call it between
        requests: one in flight would be cut off."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
                self._connections_opened += 1
            else:
                self._conns.discard(conn)

    # ------------------------------------------------------------------ users / channels

    def _make_user(self, user_id: str, name: str, extra: JSONDict) -> JSONDict:
        user: JSONDict = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name.lower().replace(" ", "."),
            "deleted": False,
            "real_name": name,
            "tz": "UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_bot": False,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": {
                "real_name": name,
                "real_name_normalized": name,
                "display_name": name,
                "display_name_normalized": name,
                "team": self.team_id,
            },
        }
        profile = extra.pop("profile", None)
        user.update(extra)
        if isinstance(profile, dict):
            user["profile"].update(profile)
        return user

    def add_user(self, user_id: str, spec: str | JSONDict) -> JSONDict:
        """Add or replace a user. `spec` is a display name, or a dict of users.info fields to override."""
        if isinstance(spec, str):
            user = self._make_user(user_id, spec, {})
        else:
            extra = dict(spec)
            name = str(extra.get("real_name") or extra.get("name") or user_id)
            user = self._make_user(user_id, name, extra)
        with self._lock:
            self._users[user_id] = user
            return copy.deepcopy(user)

    def user(self, user_id: str) -> JSONDict | None:
        with self._lock:
            user = self._users.get(user_id)
            return copy.deepcopy(user) if user is not None else None

    def _channel_id(self, channel: str) -> str:
        # chat.postMessage accepts "#name" or "name" as well as an ID.
        name = channel.lstrip("#")
        for cid, cname in self._channels.items():
            if cname == name:
                return cid
        return channel

    def channel_name(self, channel: str) -> str:
        with self._lock:
            return self._channels.get(channel, channel.lower())

    def add_channel(
        self, channel: str, name: str, *, private: bool = False, members: list[str] | None = None,
        bot_member: bool = True,
    ) -> None:
        """Add a channel with its own member list (the bot joins it unless `bot_member` is False). A public
        channel without `members` has everyone in it; a private one only the bot."""
        with self._lock:
            self._channels[channel] = name
            if private:
                self._private.add(channel)
            else:
                self._private.discard(channel)
            if members is None and not private:
                self._members.pop(channel, None)
                return
            self._members[channel] = set(members or ())
            if bot_member:
                self._members[channel].add(self.bot_user_id)

    def add_member(self, channel: str, user: str) -> None:
        with self._lock:
            self._members.setdefault(channel, set(self._users)).add(user)

    def remove_member(self, channel: str, user: str) -> None:
        with self._lock:
            self._members.setdefault(channel, set(self._users)).discard(user)

    def is_member(self, channel: str, user: str) -> bool:
        with self._lock:
            members = self._members.get(channel)
            return user in self._users if members is None else user in members

    def _known(self, channel: str) -> bool:
        return channel in self._channels or channel in self._messages

    def _is_private(self, channel: str) -> bool:
        return channel in self._private or channel_type(channel) != "channel"

    def _visible_to_bot(self, channel: str) -> bool:
        """Slack hides a private channel from a bot token unless the bot is in it (channel_not_found)."""
        return not self._is_private(channel) or self.is_member(channel, self.bot_user_id)

    def _conversation(self, channel: str) -> JSONDict:
        return {
            "id": channel,
            "name": self._channels.get(channel, channel.lower()),
            "is_channel": channel_type(channel) == "channel",
            "is_group": channel_type(channel) == "group",
            "is_im": channel_type(channel) == "im",
            "is_private": self._is_private(channel),
            "is_archived": channel in self.channel_admin.archived,
            "context_team_id": self.team_id,
        }

    # ------------------------------------------------------------------ timestamps / storage

    def new_ts(self) -> str:
        """A fresh message ts: wall-clock based but strictly increasing across the whole sandbox."""
        with self._lock:
            self._last_us = max(int(self._clock() * 1_000_000), self._last_us + 1)
            return _fmt_ts(self._last_us)

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._seq += 1
            return f"{prefix}{self._seq:04d}"

    def _channel(self, channel: str) -> dict[str, JSONDict]:
        return self._messages.setdefault(channel, {})

    def _sorted(self, channel: str) -> list[JSONDict]:
        return sorted(self._messages.get(channel, {}).values(), key=lambda m: _ts_us(m["ts"]))

    def _find(self, channel: str, ts: Any) -> JSONDict | None:
        try:
            key = _canon_ts(ts)
        except ValueError:
            return None
        return self._messages.get(channel, {}).get(key)

    @staticmethod
    def _is_top_level(message: JSONDict) -> bool:
        thread_ts = message.get("thread_ts")
        return thread_ts is None or thread_ts == message["ts"] or message.get("subtype") == "thread_broadcast"

    def _thread_root(self, channel: str, thread_ts: Any) -> JSONDict:
        try:
            _canon_ts(thread_ts)
        except ValueError as exc:
            raise SlackSandboxError("invalid_thread_ts") from exc
        message = self._find(channel, thread_ts)
        if message is None:
            raise SlackSandboxError("thread_not_found")
        # Replying "to a reply" lands in the same thread, as in the Slack client.
        root_ts = message.get("thread_ts") or message["ts"]
        root = self._find(channel, root_ts)
        if root is None:
            raise SlackSandboxError("thread_not_found")
        return root

    def _insert(self, channel: str, message: JSONDict, thread_ts: Any = None) -> JSONDict:
        """Store a message (ts assigned unless present); thread_ts makes it a reply."""
        with self._lock:
            root = self._thread_root(channel, thread_ts) if thread_ts else None
            if "ts" not in message:
                message["ts"] = self.new_ts()
            if root is not None:
                message["thread_ts"] = root["ts"]
                parent_user = root.get("user") or root.get("bot_id")
                if parent_user:
                    message["parent_user_id"] = parent_user
            self._channel(channel)[message["ts"]] = message
            if root is not None:
                self._refresh_thread(channel, root["ts"])
            return message

    def _refresh_thread(self, channel: str, parent_ts: str) -> None:
        parent = self._find(channel, parent_ts)
        if parent is None:
            return
        replies = [
            m for m in self._sorted(channel) if m.get("thread_ts") == parent_ts and m["ts"] != parent_ts
        ]
        if replies:
            authors = list(dict.fromkeys(str(r.get("user") or r.get("bot_id")) for r in replies))
            parent.update(
                thread_ts=parent_ts,
                reply_count=len(replies),
                reply_users=authors,
                reply_users_count=len(authors),
                latest_reply=replies[-1]["ts"],
            )
            return
        for key in (*_THREAD_SUMMARY_KEYS, "thread_ts"):
            parent.pop(key, None)
        if parent.get("subtype") == "tombstone":
            # A deleted parent only lingers while it still has replies.
            del self._messages[channel][parent_ts]

    def _remove(self, channel: str, message: JSONDict) -> JSONDict:
        """Delete a message the way Slack does; returns the message as it was."""
        previous = copy.deepcopy(message)
        ts = message["ts"]
        thread_ts = message.get("thread_ts")
        if thread_ts and thread_ts != ts:
            del self._messages[channel][ts]
            self._refresh_thread(channel, thread_ts)
        elif message.get("reply_count"):
            # Parents with replies become a tombstone so the thread survives.
            keep = {k: message[k] for k in ("type", "ts", "thread_ts", *_THREAD_SUMMARY_KEYS) if k in message}
            message.clear()
            message.update(keep, subtype="tombstone", text="This message was deleted.", user="USLACKBOT",
                           hidden=True)
        else:
            del self._messages[channel][ts]
        return previous

    def _bot_message(self, text: str, blocks: list[JSONDict] | None, attachments: list[JSONDict] | None
                     ) -> JSONDict:
        message: JSONDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text,
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": self.bot_name,
                "team_id": self.team_id,
                "deleted": False,
            },
        }
        if blocks is not None:
            message["blocks"] = blocks
        if attachments is not None:
            message["attachments"] = attachments
        return message

    # ------------------------------------------------------------------ state inspection

    def messages(self, channel: str) -> list[JSONDict]:
        """Top-level messages (what the channel shows), oldest first."""
        with self._lock:
            return copy.deepcopy([m for m in self._sorted(channel) if self._is_top_level(m)])

    def thread(self, channel: str, thread_ts: str) -> list[JSONDict]:
        """Replies of a thread (parent excluded), oldest first."""
        with self._lock:
            key = _canon_ts(thread_ts)
            return copy.deepcopy(
                [m for m in self._sorted(channel) if m.get("thread_ts") == key and m["ts"] != key]
            )

    def message(self, channel: str, ts: str) -> JSONDict | None:
        with self._lock:
            message = self._find(channel, ts)
            return copy.deepcopy(message) if message is not None else None

    def edits(self, channel: str, ts: str) -> list[JSONDict]:
        """Earlier versions of an edited message, oldest first."""
        with self._lock:
            return copy.deepcopy(self._edits.get((channel, _canon_ts(ts)), []))

    def ephemerals(self, channel: str | None = None, user: str | None = None) -> list[JSONDict]:
        with self._lock:
            return copy.deepcopy(
                [
                    e
                    for e in self._ephemerals
                    if (channel is None or e["channel"] == channel) and (user is None or e["user"] == user)
                ]
            )

    def files(self) -> list[JSONDict]:
        with self._lock:
            return [self._file_record(f) for f in self._files.values()]

    def file(self, file_id: str) -> JSONDict | None:
        with self._lock:
            f = self._files.get(file_id)
            return self._file_record(f) if f is not None else None

    @staticmethod
    def _file_record(f: JSONDict) -> JSONDict:
        # Bytes are immutable, so a shallow copy is enough and avoids copying large uploads.
        return dict(f)

    def views(self) -> list[JSONDict]:
        with self._lock:
            return copy.deepcopy(list(self._views.values()))

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    # ------------------------------------------------------------------ simulating humans

    def add_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None, ts: str | None = None
    ) -> JSONDict:
        """Store a message as if `user` typed it in Slack; returns the stored message."""
        message: JSONDict = {
            "type": "message",
            "user": user,
            "text": text,
            "team": self.team_id,
            "client_msg_id": str(uuid.uuid4()),
        }
        with self._lock:
            if ts is not None:
                key = _canon_ts(ts)
                if key in self._messages.get(channel, {}):
                    raise SlackSandboxError("duplicate_ts")
                message["ts"] = key
                # Later generated ts must still sort after this one.
                self._last_us = max(self._last_us, _ts_us(key))
            return copy.deepcopy(self._insert(channel, message, thread_ts))

    def edit_message(self, channel: str, ts: str, text: str) -> JSONDict:
        """Edit a message as its author would; returns the updated message (with `edited`)."""
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            self._edits.setdefault((channel, message["ts"]), []).append(copy.deepcopy(message))
            message["text"] = text
            message.pop("blocks", None)
            message["edited"] = {"user": message.get("user"), "ts": self.new_ts()}
            return copy.deepcopy(message)

    def delete_message(self, channel: str, ts: str) -> JSONDict:
        """Delete a message; returns it as it was before deletion."""
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            return self._remove(channel, message)

    def add_reaction(self, channel: str, ts: str, user: str, name: str) -> JSONDict:
        """Add a reaction; returns the message. Raises already_reacted like the API would."""
        name = name.strip(":")
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            reactions: list[JSONDict] = message.setdefault("reactions", [])
            entry = next((r for r in reactions if r["name"] == name), None)
            if entry is None:
                entry = {"name": name, "users": [], "count": 0}
                reactions.append(entry)
            if user in entry["users"]:
                raise SlackSandboxError("already_reacted")
            entry["users"].append(user)
            entry["count"] = len(entry["users"])
            return copy.deepcopy(message)

    def remove_reaction(self, channel: str, ts: str, user: str, name: str) -> JSONDict:
        name = name.strip(":")
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            reactions: list[JSONDict] = message.get("reactions", [])
            entry = next((r for r in reactions if r["name"] == name and user in r["users"]), None)
            if entry is None:
                raise SlackSandboxError("no_reaction")
            entry["users"].remove(user)
            entry["count"] = len(entry["users"])
            message["reactions"] = [r for r in reactions if r["count"] > 0]
            if not message["reactions"]:
                del message["reactions"]
            return copy.deepcopy(message)

    # ------------------------------------------------------------------ response_url

    def new_response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """Issue a response_url. With message_ts, replace_original/delete_original act on that message."""
        with self._lock:
            rid = str(len(self._response_urls) + 1)
            self._response_urls[rid] = _ResponseUrl(channel=channel, user=user, message_ts=message_ts)
        return f"{self.base_url}response/{rid}"

    def responses(self, url: str | None = None) -> list[JSONDict]:
        """JSON payloads POSTed to response_urls (all, or for one url), in arrival order."""
        with self._lock:
            return copy.deepcopy([body for u, body in self._responses if url is None or u == url])

    def _response_post(self, rid: str, body: bytes, content_type: str) -> _Reply:
        try:
            if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
                payload = json.loads(dict(parse_qsl(body.decode("utf-8"))).get("payload", ""))
            else:
                payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _text_reply(400, "invalid_payload")
        if not isinstance(payload, dict):
            return _text_reply(400, "invalid_payload")
        # A response_url message has a message's limits; Slack refuses it rather than post a broken one.
        if len(str(payload.get("text") or "")) > MAX_TEXT:
            return _text_reply(400, "msg_too_long")
        if payload.get("blocks") is not None:
            try:
                _blocks_param({"blocks": payload["blocks"]})
            except SlackSandboxError as error:
                return _text_reply(400, error.error)
        with self._lock:
            target = self._response_urls.get(rid)
            if target is None:
                return _text_reply(404, "no_service")
            if target.uses >= RESPONSE_URL_MAX_USES:
                return _text_reply(404, "used_url")
            target.uses += 1
            self._responses.append((f"{self.base_url}response/{rid}", copy.deepcopy(payload)))
            self._apply_response(target, payload)
        return _text_reply(200, "ok")

    def _apply_response(self, target: _ResponseUrl, payload: JSONDict) -> None:
        """Mirror what Slack does with a response_url payload so channel state stays truthful."""
        original = self._find(target.channel, target.message_ts) if target.channel and target.message_ts else None
        blocks = payload.get("blocks") if isinstance(payload.get("blocks"), list) else None
        if original is not None and target.channel and _flag(payload.get("delete_original")):
            self._remove(target.channel, original)
        elif original is not None and _flag(payload.get("replace_original")):
            self._edits.setdefault((cast(str, target.channel), original["ts"]), []).append(copy.deepcopy(original))
            original["text"] = str(payload.get("text", ""))
            for key, value in (("blocks", blocks), ("attachments", payload.get("attachments"))):
                if value:
                    original[key] = value
                else:
                    original.pop(key, None)
        elif payload.get("response_type") == "in_channel" and target.channel:
            message = self._bot_message(str(payload.get("text", "")), blocks, None)
            self._insert(target.channel, message)
        else:
            self._ephemerals.append(
                {
                    "channel": target.channel,
                    "user": target.user,
                    "ts": self.new_ts(),
                    "text": str(payload.get("text", "")),
                    "blocks": blocks,
                    "via": "response_url",
                }
            )

    # ------------------------------------------------------------------ fault injection

    def _add_fault(self, method: str, fault: _Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.setdefault(method, []).append(fault)

    def fail(self, method: str, status: int = 500, times: int = 1, *, error: str | None = None) -> None:
        """Answer the next `times` attempts of `method` with HTTP `status` (status=200 + error → Slack error)."""
        default = {503: "service_unavailable", 200: "internal_error"}.get(status, "fatal_error")
        self._add_fault(method, _Fault("fail", times, status=status, error=error or default))

    def rate_limit(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        self._add_fault(method, _Fault("ratelimit", times, status=429, retry_after=retry_after))

    def slow_once(self, method: str, seconds: float, times: int = 1, *,
                  until: Callable[[], bool] | None = None) -> None:
        """Delay the response of the next `times` attempts (the call itself still takes effect). With `until`,
        the response waits for it to hold instead, `seconds` at most: a test's ordering then needs no guess at
        how fast a loaded machine is."""
        self._add_fault(method, _Fault("slow", times, seconds=seconds, until=until))

    def disconnect(self, method: str, times: int = 1) -> None:
        """Close the connection without answering (for ConnectionErrorRetryHandler)."""
        self._add_fault(method, _Fault("disconnect", times))

    def lose_response(self, method: str, times: int = 1) -> None:
        """Carry out the next `times` calls of Web API `method`, then close the connection instead of answering (a
        response lost on the way back: the client sees RemoteDisconnected although Slack acted)."""
        self._add_fault(method, _Fault("lose", times))

    def set_latency(self, method: str, seconds: float) -> None:
        """Delay every response of `method` ("*" = all methods) until reset_faults()."""
        with self._lock:
            if seconds > 0:
                self._latency[method] = seconds
            else:
                self._latency.pop(method, None)

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._latency.clear()

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for key in (method, "*"):
                queue = self._faults.get(key)
                if queue:
                    fault = queue[0]
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.pop(0)
                    return fault
            return None

    def _latency_for(self, method: str) -> float:
        with self._lock:
            return self._latency.get(method, self._latency.get("*", 0.0))

    def _record(self, method: str, args: JSONDict, status: int, response: JSONDict | None, at: float) -> None:
        with self._lock:
            self._calls.append(Call(method, copy.deepcopy(args), status, copy.deepcopy(response), at))

    def _injected(self, method: str, args: JSONDict, at: float) -> tuple[_Reply | None, float]:
        """Consume one fault for this attempt. Returns (reply that replaces the real one, extra delay)."""
        delay = self._latency_for(method)
        fault = self._take_fault(method)
        if fault is None:
            return None, delay
        if fault.kind == "slow" and fault.until is not None:
            deadline = time.monotonic() + fault.seconds
            while not fault.until() and time.monotonic() < deadline:
                time.sleep(0.02)
            return None, delay
        if fault.kind == "slow":
            return None, delay + fault.seconds
        if fault.kind == "lose":
            return _LOSE, delay
        if fault.kind == "disconnect":
            self._record(method, args, 0, None, at)
            return _Reply(0, drop=True, delay=delay), 0.0
        headers: dict[str, str] = {}
        if fault.kind == "ratelimit":
            response: JSONDict = {"ok": False, "error": "ratelimited"}
            headers["Retry-After"] = str(fault.retry_after)
        else:
            response = {"ok": False, "error": fault.error}
        self._record(method, args, fault.status, response, at)
        return _json_reply(fault.status, response, headers=headers, delay=delay), 0.0

    # ------------------------------------------------------------------ echo

    def echo_bot_messages_to(self, driver: SlackDriver | None) -> None:
        """Deliver the bot's own chat.postMessage posts back as `message` events, as Slack does."""
        with self._lock:
            self._echo = driver

    def _echo_after(self, channel: str, message: JSONDict) -> Callable[[], None] | None:
        driver = self._echo
        if driver is None:
            return None
        event = copy.deepcopy(message)
        event.update(channel=channel, event_ts=message["ts"], channel_type=channel_type(channel))

        def deliver() -> None:
            try:
                driver.event(event)
            except Exception:
                log.exception("sandbox: echo of bot message %s failed", message["ts"])

        return lambda: threading.Thread(target=deliver, name="slack-sandbox-echo", daemon=True).start()

    # ------------------------------------------------------------------ routing

    def _route(self, path: str, query: str, body: bytes, content_type: str, authorization: str | None
               ) -> _Reply:
        if path.startswith("/api/"):
            return self._api(path[len("/api/"):], query, body, content_type, authorization)
        if path.startswith("/upload/"):
            return self._upload(path[len("/upload/"):], body, content_type)
        if path.startswith("/response/"):
            return self._response_post(path[len("/response/"):], body, content_type)
        return _text_reply(404, "not_found")

    def _api(self, method: str, query: str, body: bytes, content_type: str, authorization: str | None
             ) -> _Reply:
        at = time.time()
        parse_error: str | None = None
        try:
            params = _parse_params(query, body, content_type)
        except SlackSandboxError as exc:
            params, parse_error = {}, exc.error
        token = params.pop("token", None)
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[len("bearer "):].strip()

        injected, delay = self._injected(method, params, at)
        if injected is not None and injected is not _LOSE:
            return injected

        after: Callable[[], None] | None = None
        handler = self._methods.get(method)
        if handler is None:
            response: JSONDict = {"ok": False, "error": "unknown_method"}
        elif not token:
            response = {"ok": False, "error": "not_authed"}
        elif token != self.bot_token:
            response = {"ok": False, "error": "invalid_auth"}
        elif parse_error is not None:
            response = {"ok": False, "error": parse_error}
        else:
            try:
                response = handler(params)
            except SlackSandboxError as exc:
                response = {"ok": False, "error": exc.error}
                if exc.messages:
                    response["response_metadata"] = {"messages": exc.messages}
            if method == "chat.postMessage" and response.get("ok"):
                after = self._echo_after(response["channel"], response["message"])
        self._record(method, params, 200, response, at)
        if injected is _LOSE:
            return _Reply(0, drop=True, delay=delay, after=after)
        return _json_reply(200, response, delay=delay, after=after)

    def _upload(self, file_id: str, body: bytes, content_type: str) -> _Reply:
        at = time.time()
        args: JSONDict = {"file_id": file_id, "length": len(body)}
        injected, delay = self._injected("upload", args, at)
        if injected is not None:
            return injected
        content = body
        if content_type.lower().startswith("multipart/form-data"):
            parts = _parse_multipart(body, content_type)
            chosen = next((p for p in parts if p[1] is not None), parts[0] if parts else None)
            content = chosen[2] if chosen is not None else b""
        with self._lock:
            record = self._files.get(file_id)
            if record is None:
                self._record("upload", args, 404, None, at)
                return _text_reply(404, "file_not_found")
            record["content"] = content
            record["uploaded"] = True
        self._record("upload", args, 200, None, at)
        reply = _text_reply(200, f"OK - {len(content)}")
        reply.delay = delay
        return reply

    # ------------------------------------------------------------------ Web API methods

    def _api_test(self, p: JSONDict) -> JSONDict:
        return {"ok": True, "args": {k: v for k, v in p.items() if isinstance(v, str)}}

    def _auth_test(self, p: JSONDict) -> JSONDict:
        return {
            "ok": True,
            "url": f"https://{self.team_name}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        text = _text_of(p)
        blocks = _blocks_param(p)
        attachments = _attachments_param(p)
        if not text and blocks is None and attachments is None:
            raise SlackSandboxError("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackSandboxError("msg_too_long")
        message = self._bot_message(text or "", blocks, attachments)
        if isinstance(p.get("metadata"), dict):
            message["metadata"] = p["metadata"]
        thread_ts = p.get("thread_ts") or None
        if thread_ts and _flag(p.get("reply_broadcast")):
            message["subtype"] = "thread_broadcast"
        if channel in self.channel_admin.archived:
            raise SlackSandboxError("is_archived")
        with self._lock:
            stored = copy.deepcopy(self._insert(channel, message, thread_ts))
        return {"ok": True, "channel": channel, "ts": stored["ts"], "message": stored}

    def _chat_update(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        ts = _required(p, "ts", "message_not_found")
        text = _text_of(p)
        blocks = _blocks_param(p)
        attachments = _attachments_param(p)
        if text is None and blocks is None and attachments is None:
            raise SlackSandboxError("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackSandboxError("msg_too_long")
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            if message.get("bot_id") != self.bot_id:
                raise SlackSandboxError("cant_update_message")
            self._edits.setdefault((channel, message["ts"]), []).append(copy.deepcopy(message))
            # Omitted fields keep their old value; an empty list removes blocks/attachments.
            if text is not None:
                message["text"] = text
            for key, value in (("blocks", blocks), ("attachments", attachments)):
                if value is None:
                    continue
                if value:
                    message[key] = value
                else:
                    message.pop(key, None)
            message["edited"] = {"user": self.bot_user_id, "ts": self.new_ts()}
            stored = copy.deepcopy(message)
        return {"ok": True, "channel": channel, "ts": stored["ts"], "text": stored["text"], "message": stored}

    def _chat_delete(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        ts = _required(p, "ts", "message_not_found")
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            if message.get("bot_id") != self.bot_id:
                raise SlackSandboxError("cant_delete_message")
            self._remove(channel, message)
        return {"ok": True, "channel": channel, "ts": _canon_ts(ts)}

    def _chat_post_ephemeral(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        user = _required(p, "user", "user_not_found")
        text = _text_of(p)
        blocks = _blocks_param(p)
        attachments = _attachments_param(p)
        if not text and blocks is None and attachments is None:
            raise SlackSandboxError("no_text")
        if text is not None and len(text) > MAX_TEXT:
            raise SlackSandboxError("msg_too_long")
        with self._lock:
            if user not in self._users:
                raise SlackSandboxError("user_not_found")
            ts = self.new_ts()
            self._ephemerals.append(
                {
                    "channel": channel,
                    "user": user,
                    "ts": ts,
                    "text": text or "",
                    "blocks": blocks,
                    "attachments": attachments,
                    "thread_ts": p.get("thread_ts") or None,
                    "via": "chat.postEphemeral",
                }
            )
        return {"ok": True, "message_ts": ts}

    def _chat_get_permalink(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        ts = _required(p, "message_ts", "message_not_found")
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("message_not_found")
            link = f"https://{self.team_name}.slack.com/archives/{channel}/p{message['ts'].replace('.', '')}"
            thread_ts = message.get("thread_ts")
            if thread_ts and thread_ts != message["ts"]:
                link += f"?thread_ts={thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _users_info(self, p: JSONDict) -> JSONDict:
        user = self.user(_required(p, "user", "user_not_found"))
        if user is None:
            raise SlackSandboxError("user_not_found")
        return {"ok": True, "user": user}

    def _reaction_target(self, p: JSONDict) -> tuple[str, str, str]:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        ts = _required(p, "timestamp", "message_not_found")
        name = _required(p, "name", "invalid_name")
        return channel, ts, name

    def _reactions_add(self, p: JSONDict) -> JSONDict:
        channel, ts, name = self._reaction_target(p)
        self.add_reaction(channel, ts, self.bot_user_id, name)
        return {"ok": True}

    def _reactions_remove(self, p: JSONDict) -> JSONDict:
        channel, ts, name = self._reaction_target(p)
        self.remove_reaction(channel, ts, self.bot_user_id, name)
        return {"ok": True}

    @staticmethod
    def _window(p: JSONDict) -> tuple[int, int, bool, int]:
        """(oldest_us, latest_us, inclusive, limit) from the common paging params."""
        try:
            oldest = _ts_us(p["oldest"]) if p.get("oldest") not in (None, "") else 0
        except ValueError as exc:
            raise SlackSandboxError("invalid_ts_oldest") from exc
        try:
            latest = _ts_us(p["latest"]) if p.get("latest") not in (None, "") else 1 << 62
        except ValueError as exc:
            raise SlackSandboxError("invalid_ts_latest") from exc
        limit = _int_param(p, "limit", 100)
        limit = 100 if limit <= 0 else min(limit, MAX_PAGE)
        return oldest, latest, _flag(p.get("inclusive")), limit

    @staticmethod
    def _in_window(ts: str, oldest: int, latest: int, inclusive: bool) -> bool:
        us = _ts_us(ts)
        if inclusive:
            return oldest <= us <= latest
        return oldest < us < latest

    def _conversations_history(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        oldest, latest, inclusive, limit = self._window(p)
        cursor = _decode_cursor(p.get("cursor"))
        with self._lock:
            found = [
                m
                for m in reversed(self._sorted(channel))
                if self._is_top_level(m)
                and self._in_window(m["ts"], oldest, latest, inclusive)
                and (cursor is None or _ts_us(m["ts"]) < cursor)
            ]
            page = _without_metadata(copy.deepcopy(found[:limit]), p)
        has_more = len(found) > limit
        return {
            "ok": True,
            "messages": page,
            "has_more": has_more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": _encode_cursor(page[-1]["ts"]) if has_more else ""},
        }

    def _conversations_replies(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        ts = _required(p, "ts", "thread_not_found")
        oldest, latest, inclusive, limit = self._window(p)
        cursor = _decode_cursor(p.get("cursor"))
        with self._lock:
            message = self._find(channel, ts)
            if message is None:
                raise SlackSandboxError("thread_not_found")
            root_ts = message.get("thread_ts") or message["ts"]
            parent = self._find(channel, root_ts) or message
            replies = [
                m
                for m in self._sorted(channel)
                if m.get("thread_ts") == root_ts
                and m["ts"] != root_ts
                and self._in_window(m["ts"], oldest, latest, inclusive)
                and (cursor is None or _ts_us(m["ts"]) > cursor)
            ]
            # Slack always leads with the parent, whatever the window; limit counts the replies.
            page = _without_metadata(copy.deepcopy([parent, *replies[:limit]]), p)
        has_more = len(replies) > limit
        return {
            "ok": True,
            "messages": page,
            "has_more": has_more,
            "response_metadata": {"next_cursor": _encode_cursor(page[-1]["ts"]) if has_more else ""},
        }

    def _conversations_info(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        with self._lock:
            if not self._known(channel) or not self._visible_to_bot(channel):
                raise SlackSandboxError("channel_not_found")
            conversation = self._conversation(channel)
            conversation["is_member"] = self.is_member(channel, self.bot_user_id)
        return {"ok": True, "channel": conversation}

    @staticmethod
    def _page(items: list[Any], p: JSONDict) -> tuple[list[Any], str]:
        """One page of `items` and the next cursor ("" at the end), as Slack's cursor pagination gives them."""
        limit = _int_param(p, "limit", 100)
        if not 1 <= limit <= MAX_PAGE:
            raise SlackSandboxError("invalid_limit")
        start = 0
        if p.get("cursor"):
            try:
                prefix, _, offset = base64.b64decode(str(p["cursor"]), validate=True).decode().partition(":")
                start = int(offset)
                if prefix != "next_offset" or start < 0:
                    raise ValueError(prefix)
            except ValueError as exc:
                raise SlackSandboxError("invalid_cursor") from exc
        end = start + limit
        cursor = base64.b64encode(f"next_offset:{end}".encode()).decode() if end < len(items) else ""
        return items[start:end], cursor

    def _conversations_members(self, p: JSONDict) -> JSONDict:
        channel = self._channel_id(_required(p, "channel", "channel_not_found"))
        with self._lock:
            if not self._known(channel) or not self._visible_to_bot(channel):
                raise SlackSandboxError("channel_not_found")
            members = sorted(self._members.get(channel, set(self._users)))
        page, cursor = self._page(members, p)
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": cursor}}

    def _users_conversations(self, p: JSONDict) -> JSONDict:
        """The channels `user` (default: the bot) is in. With a bot token a private channel is listed only when the
        bot shares it; Slack's default `types` is public_channel only."""
        user = str(p.get("user") or self.bot_user_id)
        types = set(str(p.get("types") or "public_channel").split(","))
        with self._lock:
            if user not in self._users:
                raise SlackSandboxError("user_not_found")
            known = sorted(c for c in set(self._channels) | set(self._messages) if channel_type(c) != "im")
            found = [
                self._conversation(c) for c in known
                if self.is_member(c, user) and self._visible_to_bot(c)
                and ("private_channel" if self._is_private(c) else "public_channel") in types
            ]
        page, cursor = self._page(found, p)
        return {"ok": True, "channels": page, "response_metadata": {"next_cursor": cursor}}

    def _files_get_upload_url(self, p: JSONDict) -> JSONDict:
        filename = _required(p, "filename", "invalid_arguments")
        length = _int_param(p, "length", -1)
        if length < 0:
            raise SlackSandboxError("invalid_arguments")
        file_id = self._next_id("F")
        with self._lock:
            self._files[file_id] = {
                "id": file_id,
                "filename": filename,
                "title": None,
                "length": length,
                "content": b"",
                "uploaded": False,
                "completed": False,
                "channel": None,
                "thread_ts": None,
                "initial_comment": None,
                "message_ts": None,
                "alt_txt": p.get("alt_txt"),
                "snippet_type": p.get("snippet_type"),
            }
        return {"ok": True, "upload_url": f"{self.base_url}upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, p: JSONDict) -> JSONDict:
        items = p.get("files")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) and i.get("id") for i in items):
            raise SlackSandboxError("invalid_arguments")
        targets = [p["channel_id"]] if p.get("channel_id") else []
        targets += [c for c in str(p.get("channels") or "").split(",") if c and c not in targets]
        targets = [self._channel_id(c) for c in targets]
        thread_ts = p.get("thread_ts") or None
        comment = p.get("initial_comment")
        with self._lock:
            records: list[JSONDict] = []
            for item in items:
                record = self._files.get(str(item["id"]))
                if record is None or not record["uploaded"] or record["completed"]:
                    raise SlackSandboxError("file_not_found")
                records.append(record)
            for channel in targets:
                if thread_ts:
                    self._thread_root(channel, thread_ts)  # fail before any side effect
            for record, item in zip(records, items, strict=True):
                record.update(completed=True, title=item.get("title") or record["filename"])
            summaries = [self._file_summary(r) for r in records]
            for channel in targets:
                message = self._bot_message(str(comment or ""), None, None)
                message.update(files=copy.deepcopy(summaries), upload=True)
                stored = self._insert(channel, message, thread_ts)
                for record in records:
                    record.update(
                        channel=record["channel"] or channel,
                        thread_ts=stored.get("thread_ts"),
                        initial_comment=comment,
                        message_ts=record["message_ts"] or stored["ts"],
                    )
            return {"ok": True, "files": copy.deepcopy([self._file_summary(r) for r in records])}

    def _file_summary(self, record: JSONDict) -> JSONDict:
        return {
            "id": record["id"],
            "name": record["filename"],
            "title": record["title"],
            "size": len(record["content"]),
            "mimetype": "application/octet-stream",
            "user": self.bot_user_id,
            "created": int(time.time()),
            "channels": [record["channel"]] if record["channel"] else [],
        }

    def _files_upload_v1(self, p: JSONDict) -> JSONDict:
        # Slack retired files.upload; failing loudly keeps the app on the v2 flow.
        raise SlackSandboxError("method_deprecated")

    def issue_trigger(self, trigger_id: str, *, user: str | None = None, issued_at: float | None = None) -> str:
        """Hands out `trigger_id` as Slack does with an interaction (the driver calls this for every payload)."""
        return self.triggers.issue(trigger_id, user=user, issued_at=issued_at)

    def _views_open(self, p: JSONDict) -> JSONDict:
        trigger_id = _required(p, "trigger_id", "invalid_arguments")
        view = p.get("view")
        if not isinstance(view, dict):
            raise SlackSandboxError("invalid_arguments")
        problems = modal_problems(view)
        if problems:
            raise SlackSandboxError("invalid_arguments", problems)
        refused = self.triggers.exchange(trigger_id)
        if refused is not None:
            raise SlackSandboxError(refused)
        stored = {**view, "id": self._next_id("V"), "team_id": self.team_id, "app_id": self.app_id,
                  "bot_id": self.bot_id, "state": {"values": {}}}
        with self._lock:
            self._views[stored["id"]] = stored
        return {"ok": True, "view": copy.deepcopy(stored)}

    def _views_update(self, p: JSONDict) -> JSONDict:
        view = p.get("view")
        if not isinstance(view, dict):
            raise SlackSandboxError("invalid_arguments")
        problems = modal_problems(view) if view.get("type") == "modal" else []
        if problems:
            raise SlackSandboxError("invalid_arguments", problems)
        with self._lock:
            view_id = p.get("view_id")
            if not view_id and p.get("external_id"):
                view_id = next(
                    (v["id"] for v in self._views.values() if v.get("external_id") == p["external_id"]), None
                )
            if not view_id or view_id not in self._views:
                raise SlackSandboxError("not_found")
            stored = {**self._views[view_id], **view, "id": view_id}
            self._views[view_id] = stored
            return {"ok": True, "view": copy.deepcopy(stored)}
