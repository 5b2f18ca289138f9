"""`POST /alerts/cloud-monitoring`: Cloud Monitoring's webhook notification channel, on the same server as Slack.

Cloud Monitoring's webhook channels send no custom headers, so ALERT_WEBHOOK_TOKEN arrives as `?auth_token=…`
(`webhook_tokenauth`) or as the HTTP basic-auth password (`webhook_basicauth`), and is compared in constant time.
No token configured: 404, the feature is off. A missing or wrong secret: 401. A body over 1 MiB: 413; one that is
not a schema 1.2 notification: 400 with the reason. None of them stores or posts anything. A notification is
answered 200 once it is stored; its Slack work starts after the answer is written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.exc import SQLAlchemyError

from bot import alerts
from bot.context import Context
from bot.logsetup import outage_log
from handlers.guards import Refused, SetWhenClosed, json_answer, require_post, webhook_body

log = logging.getLogger(__name__)

ROUTE = "/alerts/cloud-monitoring"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def presented_secret(environ: dict[str, Any]) -> str | None:
    """The secret as Cloud Monitoring sends it: the `auth_token` query parameter, else the basic-auth password."""
    token = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True).get("auth_token")
    if token:
        return token[0]
    scheme, _, encoded = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _user, colon, password = decoded.partition(":")
    return password if colon else None


def authorized(environ: dict[str, Any], token: str) -> bool:
    presented = presented_secret(environ)
    if presented is None:
        return False
    # Digests of equal length, so the comparison takes the same time whatever was guessed, its length included.
    return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(token.encode("utf-8")).digest())


def make_webhook(ctx: Context) -> WSGIApp:
    def webhook(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        token = ctx.settings.alert_webhook_token
        if not token:
            return json_answer(start_response, "404 Not Found", {"error": "not found"})
        try:
            require_post(environ)
            if not authorized(environ, token):  # before the body is read: a stranger's body is never looked at
                raise Refused("401 Unauthorized", "missing or wrong token",
                              [("WWW-Authenticate", 'Basic realm="incident-bot alerts"')])
            raw = webhook_body(environ)
        except Refused as refused:
            return refused.answer(start_response)
        try:
            notification = alerts.parse_notification(raw)
        except alerts.NotANotification as error:
            return json_answer(start_response, "400 Bad Request",
                           {"error": "not a Cloud Monitoring notification (schema 1.2)", "reason": str(error)})
        written = threading.Event()
        try:
            # What receive() queues for after the commit starts once this answer is written.
            with ctx.jobs.held_until(written), ctx.db.session() as session:
                received = alerts.receive(ctx, session, notification)
        except SQLAlchemyError:
            written.set()
            outage_log.error(log, "could not store an alert; answering 503 so that Cloud Monitoring sends it again")
            return json_answer(start_response, "503 Service Unavailable", {"error": "database unavailable"})
        log.info("alert %s", "stored" if received.created else "already stored",
                 extra={"json_fields": {"alert": received.alert_id, "state": notification.state}})
        body = json_answer(start_response, "200 OK", {"status": "stored" if received.created else "duplicate",
                                                  "alert": received.alert_id})
        return SetWhenClosed(body, written)

    return webhook
