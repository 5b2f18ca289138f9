"""Request guards: the preflight in front of Bolt (size, signature, a body Bolt can parse, its shape) and the
workspace check that runs after Bolt's own signature check."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from slack_bolt.middleware import Middleware
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.context import Context

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# In the Bolt context: an Event set once the HTTP response (the ack) is written; see BackgroundJobs.held_until.
ACK_WRITTEN = "incident_bot_ack_written"


def request_team(body: dict[str, Any]) -> str | None:
    """Slash commands and events carry `team_id`; interactivity payloads carry `team.id`."""
    if isinstance(body.get("team_id"), str):
        return str(body["team_id"])
    team = body.get("team")
    if isinstance(team, dict) and isinstance(team.get("id"), str):
        return str(team["id"])
    return None


def well_formed(body: dict[str, Any]) -> bool:
    # Bolt's own middleware and listener matchers read these without checking their type; wrong types or a
    # missing action_id would crash it (500). Slack always sends them, as text.
    if any(key in body and not isinstance(body[key], dict) for key in ("event", "view", "container")):
        return False
    actions = body.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        return False
    if not _text_where_present(body, ("callback_id", "action_id")):
        return False
    if body.get("command"):
        return isinstance(body.get("text", ""), str) and bool(body.get("user_id")) and bool(body.get("channel_id"))
    if body.get("type") == "event_callback":
        return isinstance(body.get("event"), dict) and isinstance(body["event"].get("type"), str)
    if body.get("type") == "block_actions":
        return bool(actions) and all(isinstance(a.get("action_id"), str) and _text_where_present(a, ("block_id",))
                                     for a in actions)
    if body.get("type") in ("view_submission", "view_closed"):
        view = body.get("view")
        return (isinstance(view, dict) and isinstance(view.get("type"), str)
                and _text_where_present(view, ("callback_id",)))
    return body.get("type") in ("url_verification", "shortcut", "message_action", "block_suggestion")


def _text_where_present(payload: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return all(isinstance(payload[key], str) for key in keys if key in payload)


def json_answer(start_response: Callable[..., Any], status: str, payload: dict[str, Any],
                headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    """A JSON answer of one of the plain WSGI routes beside Slack's (the alert and GitHub webhooks)."""
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            *(headers or [])])
    return [body]


def read_body(environ: dict[str, Any], max_body: int) -> bytes | None:
    """The raw body, or None when it is over `max_body`; at most `max_body` + 1 bytes are ever read. Raises
    ValueError for a Content-Length that is not a size."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    if environ.get("CONTENT_LENGTH"):
        length = int(environ["CONTENT_LENGTH"])
        if length < 0:
            raise ValueError("negative Content-Length")
        return None if length > max_body else stream.read(length)
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or environ.get("wsgi.input_terminated"):
        raw = stream.read(max_body + 1)
        return None if len(raw) > max_body else raw
    return b""


class Refused(Exception):
    """A plain WSGI route's refusal (the alert and GitHub webhooks), answered as JSON with the reason."""

    def __init__(self, status: str, error: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers

    def answer(self, start_response: Callable[..., Any]) -> list[bytes]:
        return json_answer(start_response, self.status, {"error": self.error}, self.headers)


def require_post(environ: dict[str, Any]) -> None:
    if environ.get("REQUEST_METHOD") != "POST":
        raise Refused("405 Method Not Allowed", "POST only", [("Allow", "POST")])


def webhook_body(environ: dict[str, Any]) -> bytes:
    """A webhook's raw body, at most MAX_BODY_BYTES: Refused (400, 413) otherwise, before anything is stored."""
    try:
        raw = read_body(environ, MAX_BODY_BYTES)
    except ValueError:
        raise Refused("400 Bad Request", "bad content length") from None
    if raw is None:
        raise Refused("413 Content Too Large", "body over 1 MiB")
    return raw


class GuardedRequestHandler(SlackRequestHandler):
    """Bolt's WSGI adapter behind a preflight, so hostile input gets a 4xx and never reaches a listener.

    Bolt parses the body before it checks the signature, and answers 500 to a body it cannot parse (bad
    UTF-8, bad JSON, a JSON list) or a timestamp header that isn't a number. Here: too big → 413, bad
    signature or stale timestamp → 401, unparsable or misshapen → 400. Bolt still verifies the signature
    itself afterwards; this never replaces that check.
    """

    def __init__(self, app: App, signing_secret: str | None, max_body: int = MAX_BODY_BYTES) -> None:
        super().__init__(app)
        # No secret (Socket Mode builds this too, unused): every HTTP request is refused.
        self.verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self.max_body = max_body

    def _read(self, environ: dict[str, Any]) -> bytes | None:
        return read_body(environ, self.max_body)

    def _signed(self, raw: bytes, headers: dict[str, Any]) -> bool:
        if self.verifier is None:
            return False
        try:
            return self.verifier.is_valid_request(raw, headers)
        except ValueError:  # a timestamp that isn't a number
            return False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        written = environ[ACK_WRITTEN] = threading.Event()
        try:
            body = super().__call__(environ, start_response)
        except BaseException:
            written.set()
            raise
        return SetWhenClosed(body, written)

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        try:
            raw = self._read(request.environ)
        except ValueError:
            return BoltResponse(status=400, body={"error": "bad content length"})
        if raw is None:
            return BoltResponse(status=413, body={"error": "body over 1 MiB"})
        headers = request.get_headers()
        try:
            bolt_request: BoltRequest | None = BoltRequest(
                body=raw.decode("utf-8"), query=request.query_string, headers=headers
            )
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            # UnicodeDecodeError and JSONDecodeError are ValueErrors; the rest come from a JSON list or string.
            bolt_request = None
        body = bolt_request.body if bolt_request is not None and isinstance(bolt_request.body, dict) else None
        if bolt_request is not None and body is not None and body.get("ssl_check"):
            return self.app.dispatch(bolt_request)  # Slack's URL check: Bolt answers 200 and does nothing else
        if not self._signed(raw, headers):
            return BoltResponse(status=401, body={"error": "invalid request"})
        if bolt_request is None or body is None or not well_formed(body):
            return BoltResponse(status=400, body={"error": "malformed payload"})
        bolt_request.context[ACK_WRITTEN] = request.environ.get(ACK_WRITTEN)
        return self.app.dispatch(bolt_request)


class SetWhenClosed:
    """The WSGI body: the server calls close() once it has written the response, and that sets the event."""

    def __init__(self, body: Iterable[bytes], written: threading.Event) -> None:
        self._body = body
        self._written = written

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        self._written.set()


def register(app: App, ctx: Context) -> None:
    app.use(Guard(ctx.settings.slack_team_id, DatabaseHealth(ctx)))


class Guard(Middleware):
    """Refuses what no listener should see. A Middleware class rather than a function given to @app.middleware:
    Bolt calls its process() directly, where a function's arguments are built anew for every request."""

    def __init__(self, team_id: str | None, health: DatabaseHealth) -> None:
        self.team_id, self.health = team_id, health

    def process(self, *, req: BoltRequest, resp: BoltResponse,
                next: Callable[[], BoltResponse]) -> BoltResponse | None:
        body = req.body if isinstance(req.body, dict) else {}
        if not well_formed(body):  # the preflight has checked already; Socket Mode requests come only here
            return BoltResponse(status=400, body="malformed payload")
        if self.team_id and body.get("type") != "url_verification" and request_team(body) != self.team_id:
            return BoltResponse(status=403, body="wrong workspace")
        if body.get("type") == "event_callback" and not self.health.up():
            # Known down: refuse before any listener work. A 503 makes Slack deliver it again (three retries over
            # about five minutes); a write that fails inside a listener answers 503 the same way.
            return BoltResponse(status=503, body={"error": "database unavailable"})
        return next()


class DatabaseHealth:
    """Whether the database takes writes, without charging every event a round trip to ask: a good write probe
    counts for FRESH seconds, any connection-level failure anywhere in the process ends that at once, and a
    SQLite file deleted or made read-only in between is seen by the per-event check_files() (no query)."""

    FRESH = 1.0

    def __init__(self, ctx: Context) -> None:
        self._db = ctx.db
        self._good_until = 0.0
        event.listen(ctx.db.engine, "handle_error", self._failed)

    def _failed(self, context: Any) -> None:
        # Not only lost connections: a PostgreSQL gone read-only raises InternalError. A unique violation is
        # routine (a redelivered event) and says nothing about health.
        if not isinstance(context.sqlalchemy_exception, IntegrityError):
            self._good_until = 0.0

    def up(self) -> bool:
        if time.monotonic() < self._good_until:
            try:
                self._db.check_files()
                return True
            except SQLAlchemyError:
                self._good_until = 0.0
        try:
            self._db.check_writable()
        except SQLAlchemyError:
            log.warning("database unavailable; refusing an event so that Slack delivers it again")
            return False
        self._good_until = time.monotonic() + self.FRESH
        return True
