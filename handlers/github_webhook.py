"""`POST /github/webhook`: the repository webhook's `issues` events (and its `ping`), on the same server as Slack.

GitHub signs each delivery's raw body with GITHUB_WEBHOOK_SECRET (HMAC-SHA256, hex, in `X-Hub-Signature-256`
as `sha256=…`), compared here in constant time. Without a secret, or with the sync off, the route answers 404:
nothing unsigned is ever taken. A missing or wrong signature: 401. A body over 1 MiB: 413; a signed `issues` body
we can't read: 400. None of them stores anything. An event is answered 200 once it is stored with what it changed,
and `X-GitHub-Delivery` is stored with it, so a redelivery changes nothing; Slack is asked after the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot import github_events
from bot.context import Context
from bot.logsetup import outage_log
from handlers.guards import Refused, SetWhenClosed, json_answer, require_post, webhook_body

log = logging.getLogger(__name__)

ROUTE = "/github/webhook"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def signed(raw: bytes, presented: str, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogateescape"))


def make_webhook(ctx: Context) -> WSGIApp:
    def webhook(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        secret = ctx.settings.github_webhook_secret
        if not secret or not ctx.settings.github_enabled:
            return json_answer(start_response, "404 Not Found", {"error": "not found"})
        try:
            require_post(environ)
            raw = webhook_body(environ)
        except Refused as refused:
            return refused.answer(start_response)
        if not signed(raw, str(environ.get("HTTP_X_HUB_SIGNATURE_256", "")), secret):
            return json_answer(start_response, "401 Unauthorized", {"error": "missing or wrong signature"})
        event = str(environ.get("HTTP_X_GITHUB_EVENT", ""))
        if event == "ping":
            return json_answer(start_response, "200 OK", {"status": "pong"})
        if event != "issues":
            return json_answer(start_response, "200 OK", {"status": "ignored", "event": event[:40]})
        try:
            parsed = github_events.parse_issue_event(raw)
        except github_events.NotAnIssueEvent as error:
            return json_answer(start_response, "400 Bad Request",
                               {"error": "not an issues event", "reason": str(error)})
        delivery = str(environ.get("HTTP_X_GITHUB_DELIVERY", "")) or None
        written = threading.Event()
        try:
            # What receive() queues for after the commit (the Slack message's redraw) starts once this is written.
            with ctx.jobs.held_until(written), ctx.db.session() as session:
                outcome = github_events.receive(ctx, session, delivery, parsed)
        except SQLAlchemyError:
            written.set()
            outage_log.error(log, "could not store a GitHub delivery; answering 503 so that GitHub shows it failed")
            return json_answer(start_response, "503 Service Unavailable", {"error": "database unavailable"})
        log.info("GitHub issues event %s: %s", parsed.action, outcome,
                 extra={"json_fields": {"issue": parsed.issue.number, "delivery": delivery}})
        return SetWhenClosed(json_answer(start_response, "200 OK", {"status": outcome}), written)

    return webhook
