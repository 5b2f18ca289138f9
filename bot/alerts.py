"""Cloud Monitoring alerts: a notification becomes an incident in one click, with its evidence already captured.

A notification (webhook schema 1.2) is parsed into a Notification and stored (`receive`) before it is answered;
one row per alert and state, so a redelivery stores nothing. The Slack work comes after the answer (`advance`, a
job, and the sweep for whatever a crash or Slack left undone), each row leased while it is posted or redrawn:
- an open alert of a Cloud Run service with an open incident goes into that incident's thread and timeline;
- with ALERT_AUTO_OPEN, or the policy's user label `incident_bot_auto_open=true`, it is declared at once;
- otherwise it is posted in ALERT_CHANNEL with Declare and Dismiss.
Declaring opens the incident through `incidents.open_incident`, as `/incident open` does, in one transaction
with the alert row locked, so two clicks (or a click and a sweep) open one incident. `detected` is the alert's
start, the clicker is the opener and the lead, and the alert message joins the timeline as a 📌 would put it.
A closed alert is noted in its incident's thread with a button proposing `recovered` at its end; one that never
became an incident redraws its own message instead.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from bot import incidents, lifecycle, timeline
from bot.context import Context
from bot.jobs import after_commit
from bot.parsing import CLOSED_STATUSES, MAX_TITLE, OpenRequest, UsageError
from bot.ports import AlertChoice, AlertView, MessengerError
from bot.reminders import retry_delay
from bot.render import RenderedMessage, plain_fallback, text_to_blocks
from bot.sanitize import clean_text
from bot.timefmt import slack_ts_to_datetime
from storage.models import Alert, EventPin, Incident
from storage.sql import claim_lease, upsert

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.2"
AUTO_OPEN_LABEL = "incident_bot_auto_open"
CLOUD_RUN = "cloud_run_revision"
# Cloud Monitoring's severities; any other (or none) opens at `/incident open`'s default.
SEVERITIES = {"CRITICAL": "critical", "ERROR": "high", "WARNING": "medium"}
# Who opened an incident nobody clicked for, and who "pinned" an alert onto a timeline: a pin no reaction removes.
MONITORING_ACTOR = "cloud-monitoring"
MONITORING_NAME = "Cloud Monitoring"
ALERT_EVENT = "incident_bot_alert"  # the metadata of each post, by which a retry finds one that landed unseen
PENDING_LIMIT = 50
# Longest text kept per field: the payload is outside input.
LIMITS = {"id": 255, "policy": 300, "condition": 300, "summary": 2000, "url": 2000, "short": 100, "value": 64,
          "resource": 200, "severity": 32}
_CLOUD_RUN_SERVICE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_LINKABLE = re.compile(r"https://[^\s<>|]+")
_LATEST_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


# ---- the notification ------------------------------------------------------------------------------------------


class NotANotification(ValueError):
    """The body is not a Cloud Monitoring notification of schema 1.2; the message says why (the 400 answer)."""


@dataclass(frozen=True)
class Notification:
    monitoring_incident_id: str
    state: str  # open | closed
    started_at: datetime
    ended_at: datetime | None
    policy_name: str
    condition_name: str
    summary: str
    url: str | None
    severity: str | None
    resource_type: str | None
    resource_name: str | None
    service: str | None  # a Cloud Run service, for `cloud_run_revision` resources only
    revision_name: str | None
    location: str | None
    metric: str | None
    observed_value: str | None
    threshold_value: str | None
    auto_open: bool  # the policy's user label asks for it


def parse_notification(raw: bytes) -> Notification:
    """Raises NotANotification; never anything else, whatever the bytes."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise NotANotification("the body is not JSON in UTF-8") from None
    if not isinstance(body, dict):
        raise NotANotification("expected a JSON object")
    version = body.get("version")
    if version != SCHEMA_VERSION:
        shown = json.dumps(version)[:40] if isinstance(version, str | int | float) else "missing"
        raise NotANotification(f"unknown schema version {shown}; expected \"{SCHEMA_VERSION}\"")
    incident = body.get("incident")
    if not isinstance(incident, dict):
        raise NotANotification("`incident` must be an object")
    monitoring_id = _text(incident, "incident_id", LIMITS["id"])
    if not monitoring_id:
        raise NotANotification("`incident.incident_id` is missing")
    state = _text(incident, "state", LIMITS["short"])
    if state is None or state.lower() not in ("open", "closed"):
        raise NotANotification("`incident.state` must be \"open\" or \"closed\"")
    started_at = _epoch(incident, "started_at")
    if started_at is None:
        raise NotANotification("`incident.started_at` is missing")
    resource = _object(incident, "resource")
    resource_type = _text(resource, "type", LIMITS["short"])
    labels = _labels(resource, "labels")
    metric = _object(incident, "metric")
    service = labels.get("service_name") if resource_type == CLOUD_RUN else None
    url = _text(incident, "url", LIMITS["url"])
    return Notification(
        monitoring_incident_id=monitoring_id,
        state=state.lower(),
        started_at=started_at,
        ended_at=_epoch(incident, "ended_at"),
        policy_name=_text(incident, "policy_name", LIMITS["policy"]) or "",
        condition_name=_text(incident, "condition_name", LIMITS["condition"]) or "",
        summary=_text(incident, "summary", LIMITS["summary"]) or "",
        url=url if url and _LINKABLE.fullmatch(url) else None,
        severity=(_text(incident, "severity", LIMITS["severity"]) or "").upper() or None,
        resource_type=resource_type,
        resource_name=(_text(incident, "resource_display_name", LIMITS["resource"])
                       or _text(incident, "resource_name", LIMITS["resource"])),
        service=service if service and _CLOUD_RUN_SERVICE.fullmatch(service) else None,
        revision_name=labels.get("revision_name") if resource_type == CLOUD_RUN else None,
        location=labels.get("location") if resource_type == CLOUD_RUN else None,
        metric=_text(metric, "displayName", LIMITS["resource"]) or _text(metric, "type", LIMITS["resource"]),
        observed_value=_value(incident, "observed_value"),
        threshold_value=_value(incident, "threshold_value"),
        auto_open=_labels(incident, "policy_user_labels").get(AUTO_OPEN_LABEL, "").lower() == "true",
    )


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _text(obj: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise NotANotification(f"`{key}` must be a string")
    return _clip(clean_text(value).strip(), limit)


def _object(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NotANotification(f"`{key}` must be an object")
    return value


def _labels(obj: Mapping[str, Any], key: str) -> dict[str, str]:
    labels = _object(obj, key)
    if not all(isinstance(v, str) for v in labels.values()):
        raise NotANotification(f"`{key}` must map names to strings")
    return {str(k): _clip(clean_text(v).strip(), LIMITS["short"]) for k, v in labels.items()}


def _epoch(obj: Mapping[str, Any], key: str) -> datetime | None:
    """Epoch seconds, as the schema sends them."""
    value = obj.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not 0 <= value <= _LATEST_EPOCH):
        raise NotANotification(f"`{key}` must be a time in epoch seconds")
    return datetime.fromtimestamp(value, UTC)


def _value(obj: Mapping[str, Any], key: str) -> str | None:
    """Observed and threshold values: the schema's examples send strings, some senders numbers."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise NotANotification(f"`{key}` must be a number or a string")
    return _clip(clean_text(str(value)).strip(), LIMITS["value"]) or None


# ---- storing it, before the answer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    alert_id: int
    created: bool  # False: a redelivery, which changes nothing


def receive(ctx: Context, session: Session, notification: Notification) -> Received:
    """Stores the notification once; its Slack work is queued for after the commit."""
    now = ctx.clock.now()
    values = {
        **asdict(notification),  # its fields are the row's columns
        # A closed notification without its end is dated when it arrived.
        "ended_at": notification.ended_at or (now if notification.state == "closed" else None),
        "received_at": now, "revision": 0, "shown_revision": 0, "attempts": 0,
    }
    statement = upsert(session, Alert, values, index_elements=["monitoring_incident_id", "state"])
    alert_id = session.execute(statement.returning(Alert.id)).scalar()
    key = notification.monitoring_incident_id
    if alert_id is None:
        existing = session.scalars(
            select(Alert.id).where(Alert.monitoring_incident_id == key, Alert.state == notification.state)
        ).one()
        return Received(existing, created=False)
    if notification.state == "closed":
        # The open alert's message now says it cleared.
        session.execute(update(Alert).where(Alert.monitoring_incident_id == key, Alert.state == "open")
                        .values(revision=Alert.revision + 1))
    _advance_after_commit(ctx, session, key)
    return Received(alert_id, created=True)


def _advance_after_commit(ctx: Context, session: Session, key: str) -> None:
    after_commit(session, lambda: ctx.jobs.submit(advance, ctx, key))


# ---- decisions: people's clicks, and what the alert decides for itself -------------------------------------------


@dataclass(frozen=True)
class Decision:
    """`declared`, `dismissed`, `already_declared` (the alert belongs to `public_id`), `already_dismissed`, or
    `invalid` (a stale button, or one clicked on a message that is not the alert's)."""

    outcome: str
    public_id: str | None = None
    by: str | None = None


def _lock(session: Session, alert_id: int) -> Alert | None:
    """The alert row, locked until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE already is)."""
    return session.get(Alert, alert_id, with_for_update=True, populate_existing=True)


def _clicked_on(alert: Alert | None, channel: str | None, message_ts: str | None) -> bool:
    """The click came from the alert's own message: only the people in that channel see its buttons."""
    return alert is not None and alert.message_ts is not None and (alert.message_channel, alert.message_ts) == (
        channel, message_ts)


def _taken(session: Session, alert: Alert) -> Decision | None:
    """Why the alert can no longer be declared or dismissed, if it cannot."""
    if alert.incident_id is not None:
        public_id = session.get_one(Incident, alert.incident_id).public_id
        return Decision("already_declared", public_id, alert.declared_by)
    if alert.dismissed_at is not None:
        return Decision("already_dismissed", by=alert.dismissed_by)
    return None


def _undecided(session: Session, alert_id: int, channel: str | None, message_ts: str | None) -> Alert | Decision:
    """The open alert, locked, when a click on its message may still decide it; else what to tell the clicker."""
    alert = _lock(session, alert_id)
    if alert is None or alert.state != "open" or not _clicked_on(alert, channel, message_ts):
        return Decision("invalid")
    return _taken(session, alert) or alert


def declare(ctx: Context, session: Session, alert_id: int, *, user_id: str, user_name: str | None,
            channel: str | None, message_ts: str | None) -> Decision:
    """The Declare button: opens the incident once, however many people click at once."""
    alert = _undecided(session, alert_id, channel, message_ts)
    if isinstance(alert, Decision):
        return alert
    incident = _declare(ctx, session, alert, user_id=user_id, user_name=user_name)
    _advance_after_commit(ctx, session, alert.monitoring_incident_id)
    return Decision("declared", incident.public_id, user_id)


def dismiss(ctx: Context, session: Session, alert_id: int, *, user_id: str, channel: str | None,
            message_ts: str | None) -> Decision:
    """The Dismiss button: records who, and the message says so."""
    alert = _undecided(session, alert_id, channel, message_ts)
    if isinstance(alert, Decision):
        return alert
    alert.dismissed_by, alert.dismissed_at = user_id, ctx.clock.now()
    alert.revision += 1
    _advance_after_commit(ctx, session, alert.monitoring_incident_id)
    return Decision("dismissed", by=user_id)


def incident_title(alert: Alert) -> str:
    """The policy and the condition, as the alert names them."""
    parts = [p for p in (alert.policy_name, alert.condition_name) if p]
    if len(parts) == 2 and parts[0] == parts[1]:
        parts = parts[:1]
    title = ": ".join(parts) or alert.summary or MONITORING_NAME
    return _clip(" ".join(title.split()), MAX_TITLE)


def alert_line(alert: Alert) -> str:
    """The guide's alarm line, as the timeline keeps it."""
    return f"[ALERT] {alert.policy_name}: {alert.summary}" if alert.summary else f"[ALERT] {alert.policy_name}"


def _declare(ctx: Context, session: Session, alert: Alert, *, user_id: str | None,
             user_name: str | None) -> Incident:
    """Opens the alert's incident as `/incident open` does, in the caller's transaction, with the row locked."""
    request = OpenRequest(title=incident_title(alert), service=alert.service)
    severity = SEVERITIES.get(alert.severity or "")
    if severity is not None:
        request = replace(request, severity=severity)
    opener, opener_name = (user_id, user_name) if user_id else (MONITORING_ACTOR, MONITORING_NAME)
    incident = incidents.open_incident(ctx, session, request, channel_id=alert.message_channel or alert_channel(ctx),
                                       user_id=opener, user_name=opener_name)
    if user_id and "lead" in ctx.settings.roles:
        lifecycle.assign_role(ctx, session, incident.id, "lead", user_id, user_name, actor=user_id,
                              actor_name=user_name)
    session.flush()
    # Detected when the alert fired, not when someone clicked (kept to the minute, as milestones are).
    incident.detected_at = min(lifecycle.minute(alert.started_at), incident.detected_at or incident.opened_at)
    alert.incident_id, alert.declared_by, alert.declared_at = incident.id, user_id, ctx.clock.now()
    if alert.message_ts is not None:
        alert.revision += 1
        _put_on_timeline(session, incident, alert, kind="pin")
    # A cleared alert declared afterwards gets its note in the new thread too.
    session.execute(update(Alert).where(Alert.monitoring_incident_id == alert.monitoring_incident_id,
                                        Alert.state == "closed", Alert.message_ts.is_(None)).values(posted_at=None))
    return incident


def _route(ctx: Context, session: Session, alert_id: int) -> None:
    """Decides where a new open alert goes, once: the thread of its service's open incident, a new incident when
    the alert is to open one by itself, or (deciding nothing here) ALERT_CHANNEL with the buttons."""
    alert = _lock(session, alert_id)
    if alert is None or alert.posted_at is not None or _taken(session, alert) is not None:
        return
    if alert.service:
        open_one = session.scalars(
            select(Incident.id).where(Incident.service == alert.service, Incident.status.not_in(CLOSED_STATUSES))
            .order_by(Incident.opened_at.desc()).limit(1)
        ).first()
        if open_one is not None:
            alert.incident_id = open_one
            return
    if ctx.settings.alert_auto_open or alert.auto_open:
        _declare(ctx, session, alert, user_id=None, user_name=None)


def _put_on_timeline(session: Session, incident: Incident, alert: Alert, *, kind: str) -> None:
    """As a 📌 would: at the message's own time, highlighted, with a pin that no reaction takes off."""
    assert alert.message_channel is not None and alert.message_ts is not None
    timeline.record_message(
        session, incident, channel=alert.message_channel, ts=alert.message_ts, user=None,
        author_name=MONITORING_NAME, text=alert_line(alert), at=slack_ts_to_datetime(alert.message_ts), kind=kind,
        highlighted=True,
    )
    event = timeline.find_message_event(session, incident.id, alert.message_channel, alert.message_ts)
    if event is not None:
        session.execute(upsert(session, EventPin,
                               {"event_id": event.id, "user_id": MONITORING_ACTOR, "created_at": alert.received_at},
                               index_elements=["event_id", "user_id"]))


# ---- recovery, proposed on a cleared alert's note --------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """`recorded`, `already` (recovery was on record: `at`), `refused` (the milestone's `error`), or `invalid`."""

    outcome: str
    at: datetime | None = None
    error: UsageError | None = None


def record_recovery(ctx: Context, session: Session, alert_id: int, *, user_id: str, user_name: str | None,
                    channel: str | None, message_ts: str | None) -> Recovery:
    """Sets `recovered` at the alert's end, when a person asks for it and nothing is on record yet."""
    alert = _lock(session, alert_id)
    if (alert is None or alert.state != "closed" or alert.incident_id is None or alert.ended_at is None
            or not _clicked_on(alert, channel, message_ts)):
        return Recovery("invalid")
    incident = session.get_one(Incident, alert.incident_id)
    if incident.recovered_at is not None:
        alert.revision += 1  # the note drops its button
        _advance_after_commit(ctx, session, alert.monitoring_incident_id)
        return Recovery("already", at=incident.recovered_at)
    result = lifecycle.set_milestone(ctx, session, incident.id, "recovered", alert.ended_at, user_id, user_name,
                                     source={"via": "alert", "alert": alert.monitoring_incident_id})
    if not result.ok:
        return Recovery("refused", error=lifecycle.refusal(ctx, session, incident.id, result))
    alert.recovery_recorded_by = user_id
    alert.revision += 1
    _advance_after_commit(ctx, session, alert.monitoring_incident_id)
    return Recovery("recorded", at=result.at)


# ---- after the answer: posting and redrawing, leased, retried, never lost ---------------------------------------


def alert_channel(ctx: Context) -> str:
    if not ctx.settings.alert_channel:
        raise RuntimeError("ALERT_CHANNEL is not set")
    return ctx.settings.alert_channel


def alert_lease(ctx: Context) -> timedelta:
    """One post and the search for it, each with all the client's retries: as long as an announcement's."""
    return incidents.announce_lease(ctx)


def _needs_work(alert: Alert) -> bool:
    return alert.posted_at is None or (alert.message_ts is not None and alert.shown_revision < alert.revision)


def advance(ctx: Context, key: str) -> None:
    """The Slack work one alert (all its rows, open before closed) still needs. Safe to call any number of times,
    anywhere: each row is claimed before Slack is asked. Slack's refusals are stored and retried by the sweep."""
    with ctx.db.session() as session:
        rows = session.execute(
            select(Alert.id, Alert.state).where(Alert.monitoring_incident_id == key).order_by(Alert.state.desc())
        ).all()
        opened = next((row_id for row_id, state in rows if state == "open"), None)
        if opened is not None:
            _route(ctx, session, opened)
    if opened is not None:
        _post_announcement(ctx, opened)
    for row_id, _state in rows:
        try:
            while _post_or_redraw(ctx, row_id):
                pass  # again, in case it changed while Slack was asked (its own job found the row leased)
        except Exception:
            # A bug or a database hiccup must not keep the alert's other rows, or the next alert, waiting.
            log.exception("alert %s could not be posted", row_id)


def _post_announcement(ctx: Context, open_id: int) -> None:
    """The thread of the alert's incident, posted when it is not yet: what goes there waits for it. A failure is
    left to the runtime's announcement sweep, and the rows waiting for the thread to this module's."""
    with ctx.db.read() as session:
        incident_id = session.get_one(Alert, open_id).incident_id
        if incident_id is None or session.get_one(Incident, incident_id).announcement_ts is not None:
            return
    try:
        incidents.post_announcement(ctx, incident_id)  # leased: None when another worker is posting it
    except MessengerError as error:
        log.warning("announcement of an alert's incident failed: %s", error.kind)


@dataclass(frozen=True)
class _Post:
    channel: str
    thread_ts: str | None
    message: RenderedMessage
    revision: int
    existing_ts: str | None  # set: redraw this message instead of posting
    in_thread_of: int | None  # the incident whose thread gets it (and whose timeline, for an open alert)


def _post_or_redraw(ctx: Context, alert_id: int) -> bool:
    """Posts or redraws the row's message under its lease; True when it did."""
    now = ctx.clock.now()
    with ctx.db.session() as session:
        alert = session.get_one(Alert, alert_id)
        if not _needs_work(alert):
            return False
        post = _plan(ctx, session, alert)
        if post is None:
            return False
        held = alert.claimed_until
        if not claim_lease(session, Alert.claimed_until, Alert.id == alert_id, now=now, until=now + alert_lease(ctx),
                           seen=held):
            return False
        retried = held is not None
        since = alert.received_at.timestamp()
    metadata = {"event_type": ALERT_EVENT, "event_payload": {"alert": alert_id}}
    try:
        if post.existing_ts is not None:
            ctx.messenger.update_message(post.channel, post.existing_ts, post.message.text,
                                         blocks=post.message.blocks)
            ts = post.existing_ts
        else:
            found = (ctx.messenger.find_posted(post.channel, metadata, since=since, thread_ts=post.thread_ts)
                     if retried else None)
            ts = found or ctx.messenger.post_message(post.channel, post.message.text, blocks=post.message.blocks,
                                                     thread_ts=post.thread_ts, metadata=metadata)
    except MessengerError as error:
        _failed(ctx, alert_id, error)
        return False
    with ctx.db.session() as session:
        alert = session.get_one(Alert, alert_id, with_for_update=True, populate_existing=True)
        if post.existing_ts is None:
            alert.message_channel, alert.message_ts = post.channel, ts
            if post.in_thread_of is not None and alert.state == "open":
                _put_on_timeline(session, session.get_one(Incident, post.in_thread_of), alert, kind="message")
        alert.posted_at = alert.posted_at or ctx.clock.now()
        alert.shown_revision = max(alert.shown_revision, post.revision)
        alert.claimed_until, alert.attempts, alert.last_error = None, 0, None
    log.info("alert %s", "redrawn" if post.existing_ts else "posted",
             extra={"json_fields": {"alert": alert_id, "channel": post.channel}})
    return True


def _failed(ctx: Context, alert_id: int, error: MessengerError) -> None:
    with ctx.db.session() as session:
        alert = session.get_one(Alert, alert_id)
        alert.attempts += 1
        # A post that may still land is given the time Slack needs to finish it before anyone looks.
        wait = ctx.messenger.call_budget if error.outcome_unknown else retry_delay(alert.attempts)
        alert.claimed_until = ctx.clock.now() + wait
        alert.last_error = str(error)[:500]
    log.warning("alert post failed (%s); retrying in %s", error.kind, wait, extra={"json_fields": {"alert": alert_id}})


def _plan(ctx: Context, session: Session, alert: Alert) -> _Post | None:
    """What to post (or redraw) for the row now, or None when there is nothing to post yet (or ever)."""
    opened = alert if alert.state == "open" else _sibling(session, alert, "open")
    incident = (session.get_one(Incident, opened.incident_id)
                if opened is not None and opened.incident_id is not None else None)
    if alert.message_ts is not None:
        return _Post(alert.message_channel or "", None, _layout(ctx, session, alert), alert.revision,
                     alert.message_ts, None)
    if alert.state == "closed" and opened is not None and incident is None:
        alert.posted_at = ctx.clock.now()  # nothing to post: the alert's own message shows it cleared
        return None
    if incident is not None:
        if incident.announcement_ts is None:
            return None  # the thread is still being posted; the sweep comes back
        alert.incident_id = incident.id  # a closed one's note belongs to its open one's incident
        return _Post(incident.channel_id, incident.home_thread_ts, _layout(ctx, session, alert), alert.revision,
                     None, incident.id)
    if not ctx.settings.alert_channel:
        log.warning("alert %s not posted: ALERT_CHANNEL is not set", alert.id)
        return None
    return _Post(ctx.settings.alert_channel, None, _layout(ctx, session, alert), alert.revision, None, None)


def _layout(ctx: Context, session: Session, alert: Alert) -> RenderedMessage:
    """A closed row in an incident's thread is a note there; any other row is the alert's own message."""
    closed_note = alert.state == "closed" and alert.incident_id is not None
    return ctx.presenter.alert(note_view(ctx, session, alert) if closed_note else alert_view(ctx, session, alert))


def _sibling(session: Session, alert: Alert, state: str) -> Alert | None:
    return session.scalars(
        select(Alert).where(Alert.monitoring_incident_id == alert.monitoring_incident_id, Alert.state == state)
    ).first()


def advance_pending(ctx: Context) -> int:
    """The sweep: alerts whose post or redraw a crash, a full pool or Slack left undone."""
    now = ctx.clock.now()
    with ctx.db.read() as session:
        keys = session.scalars(
            select(Alert.monitoring_incident_id).where(
                or_(Alert.posted_at.is_(None),
                    and_(Alert.message_ts.is_not(None), Alert.shown_revision < Alert.revision)),
                or_(Alert.claimed_until.is_(None), Alert.claimed_until < now),
            ).distinct().limit(PENDING_LIMIT)
        ).all()
    for key in keys:
        advance(ctx, key)
    return len(keys)


def install(ctx: Context) -> None:
    ctx.hooks.on_sweep.register(advance_pending)


# ---- what the messages say ---------------------------------------------------------------------------------------


def _message(ctx: Context, key: str, **params: Any) -> RenderedMessage:
    text = ctx.say(key, **params)
    return RenderedMessage(text=plain_fallback(text), blocks=text_to_blocks(text))


def alert_view(ctx: Context, session: Session, alert: Alert) -> AlertView:
    """The alert's own message: the alarm line and its facts, what became of it, and Declare/Dismiss while nobody
    has decided (a closed row without its open one is shown as it is, cleared, with nothing to decide)."""
    closed = alert if alert.state == "closed" else _sibling(session, alert, "closed")
    incident = session.get(Incident, alert.incident_id) if alert.incident_id is not None else None
    closed_at = closed.ended_at if closed is not None else None
    if incident is None:
        outcome = "dismissed" if alert.dismissed_at is not None else None
    elif alert.declared_at is None:
        outcome = "routed"  # into its service's open incident
    else:
        outcome = "declared" if alert.declared_by else "auto"
    body = _message(
        ctx, "alerts.message", a=alert, fmt=ctx.formatter(), closed_at=closed_at,
        lasted=closed_at - alert.started_at if closed_at else None,
        public_id=incident.public_id if incident is not None else None, outcome=outcome,
    )
    undecided = alert.state == "open" and incident is None and alert.dismissed_at is None
    choices = (AlertChoice("declare", ctx.say("alerts.declare_button")),
               AlertChoice("dismiss", ctx.say("alerts.dismiss_button"))) if undecided else ()
    return AlertView(alert.id, body, choices)


def note_view(ctx: Context, session: Session, alert: Alert) -> AlertView:
    """A cleared alert's note in its incident's thread, proposing `recovered` at its end while none is recorded."""
    incident = session.get_one(Incident, alert.incident_id)
    fmt = ctx.formatter()
    ended = alert.ended_at or alert.received_at
    body = _message(ctx, "alerts.closed_note", a=alert, fmt=fmt, ended=ended, lasted=ended - alert.started_at,
                    public_id=incident.public_id, recorded_by=alert.recovery_recorded_by)
    offer = incident.recovered_at is None and alert.recovery_recorded_by is None and alert.ended_at is not None
    choices = (AlertChoice("recovered", ctx.say("alerts.recovered_button", at=fmt.time(ended))),) if offer else ()
    return AlertView(alert.id, body, choices)
