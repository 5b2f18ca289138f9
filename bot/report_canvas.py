"""Writing the report into its Slack canvas, once per incident and language, after the .md file is posted.

The first report creates the canvas (canvases.create), lets the channel's members read it (canvases.access.set)
and posts its link in the thread; every later report replaces its content (canvases.edit). canvases.create has
no idempotency key, so a writer holds the row's lease (storage.sql.claim_lease) while it talks to Slack: of two
reports at once one writes, and the other leaves its request for the holder, who writes again with fresh content
before it lets go. A canvas problem never touches the .md file (posted before); it is logged, kept on the row
and handed back for the person to be told.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from bot.canvas import to_canvas
from bot.context import Context
from bot.ports import MessengerError
from storage.models import ReportCanvas
from storage.sql import claim_lease, upsert

log = logging.getLogger(__name__)

SHARED_EVENT = "incident_report_canvas"
# Errors Slack's docs call transient ("likely due to a transient issue", "temporarily unavailable"), and a call
# that got no answer: an edit or an access change replaces what was there, so doing it again is harmless.
_TRANSIENT = ("internal_error", "fatal_error", "service_unavailable", "request_timeout", "timeout",
              "connection_error")
_ATTEMPTS = 3
# The workspace cannot have this canvas: a paid plan, canvases turned on, or another scope is needed.
UNAVAILABLE = ("canvas_disabled_user_team", "free_teams_cannot_create_standalone_canvases",
               "free_teams_cannot_create_non_tabbed_canvases", "free_teams_cannot_edit_standalone_canvases")
NOT_PERMITTED = ("missing_scope", "not_allowed_token_type", "no_permission", "access_denied")


@dataclass(frozen=True)
class Target:
    incident_id: int
    public_id: str
    locale: str
    channel: str
    thread_ts: str | None  # None: the incident's own channel, top level
    filename: str  # the .md file the canvas mirrors, which holds whatever the canvas has no room for


@dataclass(frozen=True)
class Outcome:
    canvas_id: str | None = None
    created: bool = False
    pending: bool = False  # another report holds the canvas; it writes this request's content too
    failure: MessengerError | None = None
    stage: str = ""  # where it failed: create | edit | share


@dataclass
class _Lease:
    until: datetime
    canvas_id: str | None
    shared_ts: str | None
    share_attempted_at: datetime | None
    requested: int


def canvas_lease(ctx: Context) -> timedelta:
    """Outlasts one write at its worst: an edit and an access change with their retries, a create, and the post
    with the searches around it, each with all the client's retries."""
    return (2 * _ATTEMPTS + 4) * ctx.messenger.call_budget


def title(ctx: Context, target: Target) -> str:
    other = "" if target.locale == ctx.settings.locale else f" ({target.locale})"
    return f"{target.public_id} Post-Mortem{other}"


def publish(ctx: Context, target: Target, document: str, render: Callable[[], str]) -> Outcome:
    """Writes `document` (the report's Markdown) into the target's canvas. `render` draws the report again when a
    report that came meanwhile left its request to this one. Never raises MessengerError."""
    row_id, covers = _request(ctx, target)
    outcome = Outcome(pending=True)
    while True:
        lease = _claim(ctx, row_id)
        if lease is None:
            return outcome
        if lease.requested > covers:  # reports that came after this one was drawn may have changed it
            covers, document = lease.requested, render()
        try:
            markdown = to_canvas(document, more_in_file=lambda n: ctx.say(
                "canvas.rows_omitted", target.locale, count=n, filename=target.filename))
            outcome = _write(ctx, target, row_id, lease, markdown, covers)
        finally:
            _release(ctx, row_id, lease.until)
        if outcome.failure is not None:
            return outcome
        newer = _newer_request(ctx, row_id)
        if newer is None:
            return outcome
        covers, document = newer, render()


def _request(ctx: Context, target: Target) -> tuple[int, int]:
    """Counts this report's request on the row (made on first use); returns the row and the count."""
    with ctx.db.session() as session:
        statement = upsert(
            session, ReportCanvas,
            {"incident_id": target.incident_id, "locale": target.locale, "requested": 1, "written": 0},
            index_elements=("incident_id", "locale"), set_={"requested": ReportCanvas.requested + 1},
        ).returning(ReportCanvas.id, ReportCanvas.requested)
        row_id, requested = session.execute(statement).one()
        return int(row_id), int(requested)


def _claim(ctx: Context, row_id: int) -> _Lease | None:
    now = ctx.clock.now()
    until = now + canvas_lease(ctx)
    with ctx.db.session() as session:
        if not claim_lease(session, ReportCanvas.claimed_until, ReportCanvas.id == row_id, now=now, until=until):
            return None
        canvas_id, shared_ts, attempted, requested = session.execute(
            select(ReportCanvas.canvas_id, ReportCanvas.shared_ts, ReportCanvas.share_attempted_at,
                   ReportCanvas.requested)
            .where(ReportCanvas.id == row_id)
        ).one()
        return _Lease(until, canvas_id, shared_ts, attempted, int(requested))


def _release(ctx: Context, row_id: int, until: datetime) -> None:
    _save(ctx, row_id, until, claimed_until=None)


def _save(ctx: Context, row_id: int, until: datetime, **values: Any) -> None:
    """Writes `values` while this writer's lease is still the row's (one that outlasted it writes nothing)."""
    with ctx.db.session() as session:
        session.execute(update(ReportCanvas).where(ReportCanvas.id == row_id, ReportCanvas.claimed_until == until)
                        .values(**values))


def _newer_request(ctx: Context, row_id: int) -> int | None:
    with ctx.db.read() as session:
        requested, written = session.execute(
            select(ReportCanvas.requested, ReportCanvas.written).where(ReportCanvas.id == row_id)).one()
    return int(requested) if requested > written else None


def _write(ctx: Context, target: Target, row_id: int, lease: _Lease, markdown: str, covers: int) -> Outcome:
    canvas_id, created = lease.canvas_id, False
    if canvas_id is not None:
        existing = canvas_id
        try:
            _again_if_transient(lambda: ctx.messenger.edit_canvas(existing, markdown))
        except MessengerError as error:
            if error.kind != "canvas_not_found":
                return _failed(ctx, target, row_id, lease, error, "edit", existing)
            # Someone deleted it in Slack: a new one, shared anew.
            log.warning("report canvas %s is gone; creating another", canvas_id,
                        extra={"json_fields": {"incident_id": target.public_id}})
            _save(ctx, row_id, lease.until, canvas_id=None, shared_ts=None, share_attempted_at=None)
            canvas_id, lease.shared_ts, lease.share_attempted_at = None, None, None
    if canvas_id is None:
        try:
            canvas_id = ctx.messenger.create_canvas(title(ctx, target), markdown)
        except MessengerError as error:
            return _failed(ctx, target, row_id, lease, error, "create", None)
        _save(ctx, row_id, lease.until, canvas_id=canvas_id)
        created = True
    if lease.shared_ts is None:
        try:
            _share(ctx, target, row_id, lease, canvas_id)
        except MessengerError as error:
            return _failed(ctx, target, row_id, lease, error, "share", canvas_id, created=created)
    _save(ctx, row_id, lease.until, written=covers, last_error=None)
    return Outcome(canvas_id, created)


def _again_if_transient(call: Callable[[], Any]) -> Any:
    """Calls `call`, again after a short pause while Slack answers with an error its docs call transient."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return call()
        except MessengerError as error:
            if error.kind not in _TRANSIENT or attempt == _ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def _share(ctx: Context, target: Target, row_id: int, lease: _Lease, canvas_id: str) -> None:
    """The channel's members may read it, and its link goes into the thread once: a post that may have landed
    before (an earlier attempt got no answer) is looked for first, by its metadata."""
    link = _again_if_transient(lambda: ctx.messenger.share_canvas(canvas_id, target.channel))
    metadata = {"event_type": SHARED_EVENT, "event_payload": {"incident_id": target.public_id,
                                                              "canvas_id": canvas_id}}
    ts = None
    if lease.share_attempted_at is not None:
        ts = ctx.messenger.find_posted(target.channel, metadata, since=lease.share_attempted_at.timestamp(),
                                       thread_ts=target.thread_ts)
    if ts is None:
        _save(ctx, row_id, lease.until, share_attempted_at=ctx.clock.now())
        text = ctx.say("canvas.shared", target.locale, public_id=target.public_id, url=link,
                       title=title(ctx, target))
        ts = ctx.messenger.post_message(target.channel, text, thread_ts=target.thread_ts, metadata=metadata)
    _save(ctx, row_id, lease.until, shared_ts=ts)


def _failed(ctx: Context, target: Target, row_id: int, lease: _Lease, error: MessengerError, stage: str,
            canvas_id: str | None, *, created: bool = False) -> Outcome:
    log.warning("report canvas %s failed: %s %s", stage, error.kind, error.detail,
                extra={"json_fields": {"incident_id": target.public_id}})
    values: dict[str, Any] = {"last_error": f"{stage}: {error.kind} {error.detail}".strip()}
    if stage == "create" and (error.outcome_unknown or error.kind in _TRANSIENT):
        values["create_unanswered_at"] = ctx.clock.now()
    _save(ctx, row_id, lease.until, **values)
    return Outcome(canvas_id, created, failure=error, stage=stage)


def home_channel(target: Target) -> str | None:
    """The incident's own channel when the report went to its top level (channel mode), for the words of an answer."""
    return target.channel if target.thread_ts is None else None


def failure_message(ctx: Context, outcome: Outcome, target: Target) -> str | None:
    """What the person who asked for the report is told about its canvas; None when all went well."""
    error = outcome.failure
    if error is None:
        return None
    home = home_channel(target)
    if error.kind in NOT_PERMITTED:
        return ctx.say("canvas.not_permitted", reason=error.kind, home=home)
    if error.kind in UNAVAILABLE:
        return ctx.say("canvas.unavailable", reason=error.kind, home=home)
    if outcome.stage == "create" and (error.outcome_unknown or error.kind in _TRANSIENT):
        return ctx.say("canvas.unconfirmed", reason=error.kind, home=home)
    if outcome.stage == "share":
        return ctx.say("canvas.not_shared", reason=error.kind, home=home)
    return ctx.say("canvas.failed", reason=error.kind, home=home)
