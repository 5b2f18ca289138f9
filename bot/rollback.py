"""Rolling a Cloud Run service back from the incident thread, with guards (runbook Phase 1: roll back, then prove it).

A proposal reads the service (its traffic split and etag) and its revisions and names the revision to return to:
the one older revision still serving beside the newest (the one that served 100 % before the canary took its
share), or the REVISION asked for. It is stored in `rollbacks`, then posted in the thread with a confirm button.

Only the incident's lead and devops role holders and ROLLBACK_ALLOWED_USERS may confirm. The confirmation claims
the row with one conditional UPDATE (storage.sql.claim_lease), so two clicks or two people give one update. The
update sets traffic 100 % on the target and carries the etag the proposal read: a service changed since is refused
by Cloud Run, and the new split is proposed afresh. The long-running operation is awaited in the background for at
most OPERATION_WAIT while the proposal message moves requested → running → done / failed. A finished rollback makes
the verification due VERIFY_AFTER_ROLLBACK later; that is kept in the row itself (`verify_due_at`, claimed like a
reminder), so it runs once, after a restart too. A worker that died holding a claim is picked up by the sweep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as core_exceptions
from google.api_core import operation as lro
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bot import channels, lifecycle, reminders, timeline
from bot.context import Context
from bot.evidence import service as evidence
from bot.evidence.analysis import short_revision
from bot.evidence.gcp import DEFAULT_TIMEOUT, classify_exception, make_run_client
from bot.jobs import after_commit
from bot.ports import MessengerError, RollbackConfirmation, RollbackProposalView
from bot.render import RenderedMessage, plain_fallback, text_to_blocks
from storage.models import Incident, RoleAssignment, Rollback
from storage.sql import claim_lease

log = logging.getLogger(__name__)

CONFIRMING_ROLES = ("lead", "devops")
UPDATE_PERMISSION = "run.services.update"
UPDATE_ROLE = "roles/run.developer"
# The bounded wait for Cloud Run's operation, and how often it is read meanwhile.
OPERATION_WAIT = timedelta(minutes=5)
POLL_SECONDS = 2.0
# The confirmation's claim outlives the wait, so no other process takes over a rollback still being awaited.
CLAIM_LEASE = OPERATION_WAIT + timedelta(minutes=2)
VERIFY_LEASE = timedelta(minutes=2)
VERIFY_RETRY = timedelta(minutes=1)
REVISION_TYPE = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST_TYPE = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST

PROPOSED, REQUESTED, RUNNING, DONE, FAILED = "proposed", "requested", "running", "done", "failed"
STALE, SUPERSEDED, TIMED_OUT = "stale", "superseded", "timed_out"
IN_FLIGHT = (REQUESTED, RUNNING)
_VERIFY_JOB = "rollback-verify:{}"


# ---- Cloud Run -----------------------------------------------------------------------------------------------


class RunClients:
    """The Cloud Run Admin clients of one Context (services for read and update, revisions for the list), on the
    REST transport like the evidence's, built on first use."""

    def __init__(self, api_url: str | None) -> None:
        self._api_url = api_url
        self._services: run_v2.ServicesClient | None = None
        self._revisions: run_v2.RevisionsClient | None = None

    def services(self) -> run_v2.ServicesClient:
        if self._services is None:
            self._services = make_run_client(self._api_url)
        return self._services

    def revisions(self) -> run_v2.RevisionsClient:
        if self._revisions is None:
            url = self._api_url
            if url and url.startswith("http://"):
                self._revisions = run_v2.RevisionsClient(transport="rest", credentials=AnonymousCredentials(),
                                                         client_options={"api_endpoint": url.rstrip("/")})
            else:
                self._revisions = run_v2.RevisionsClient(
                    transport="rest", client_options={"api_endpoint": url.rstrip("/")} if url else None)
        return self._revisions


def clients(ctx: Context) -> RunClients:
    return ctx.shared(RunClients, lambda: RunClients(ctx.settings.cloud_run_api_url))


@dataclass(frozen=True)
class Share:
    """One line of a traffic split."""

    revision: str
    percent: int
    tag: str | None = None
    latest: bool = False  # a "latest revision" target, resolved to the latest ready one

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "percent": self.percent, "tag": self.tag, "latest": self.latest}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Share:
        return cls(str(data["revision"]), int(data["percent"]), data.get("tag"), bool(data.get("latest")))


@dataclass(frozen=True)
class ServiceState:
    name: str
    etag: str
    requested: list[Share]  # `traffic`: what the update changes
    serving: list[Share]  # `traffic_statuses`: what serves now
    revisions: list[str]  # newest first


class Failure(Exception):
    """Why Cloud Run could not be read or changed: `kind` is one of permission_denied, missing_revision,
    operation_error, timeout, unavailable, stale, not_found, interrupted, error."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _failure(exc: BaseException, *, updating: bool = False) -> Failure:
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, core_exceptions.Conflict) or _is_etag_precondition(exc):
        return Failure("stale", str(getattr(exc, "message", exc)))
    err = classify_exception(exc, "run")
    if err.kind == "not_found" and updating:
        return Failure("missing_revision", err.detail)
    return Failure(err.kind, err.detail)


def _is_etag_precondition(exc: BaseException) -> bool:
    # Some Google APIs answer a stale etag with FAILED_PRECONDITION instead of ABORTED.
    return isinstance(exc, core_exceptions.FailedPrecondition) and "etag" in str(exc).lower()


def _shares(targets: Sequence[run_v2.TrafficTarget], latest_ready: str | None) -> list[Share]:
    out = []
    for target in targets:
        latest = target.type_ == LATEST_TYPE
        revision = latest_ready if latest else target.revision
        if revision:
            out.append(Share(revision, int(target.percent), target.tag or None, latest))
    return out


def read_service(ctx: Context, service: str) -> ServiceState:
    """The service's split, etag and revisions. Raises Failure."""
    settings = ctx.settings
    run = clients(ctx)
    try:
        services = run.services()
        name = services.service_path(settings.gcp_project or "", settings.cloud_run_region or "", service)
        found = services.get_service(name=name, timeout=DEFAULT_TIMEOUT)
        listed = run.revisions().list_revisions(parent=name, timeout=DEFAULT_TIMEOUT)
        revisions = sorted(listed, key=lambda r: r.create_time.timestamp() if r.create_time else 0.0, reverse=True)
    except Exception as exc:
        raise _failure(exc) from exc
    latest_ready = short_revision(found.latest_ready_revision) or None
    return ServiceState(name=found.name, etag=found.etag, requested=_shares(found.traffic, latest_ready),
                        serving=_shares(found.traffic_statuses, latest_ready),
                        revisions=[short_revision(r.name) or r.name for r in revisions])


def choose_target(state: ServiceState, asked: str | None) -> tuple[str | None, str | None]:
    """(the revision to return to, None) or (None, why there is none)."""
    serving = {s.revision: s.percent for s in state.serving if s.percent > 0}
    if asked:
        if asked not in state.revisions:
            return None, "unknown_revision"
        if serving.get(asked) == 100:
            return None, "already_serving"
        return asked, None
    if not serving:
        return None, "no_traffic"
    order = {revision: i for i, revision in enumerate(state.revisions)}  # 0 = newest
    newest = min(serving, key=lambda r: order.get(r, len(order)))
    older = [r for r in serving if r != newest]
    if len(older) == 1:
        return older[0], None
    if older:
        return None, "several_older"
    return None, "only_newest" if order.get(newest) == 0 else "already_serving"


def rolled_back_traffic(requested: Sequence[Share], target: str) -> list[run_v2.TrafficTarget]:
    """100 % on the target. Tagged targets stay at 0 % so their tag URLs keep working, as `gcloud run services
    update-traffic --to-revisions` keeps them."""
    out: list[run_v2.TrafficTarget] = []
    seen_target = False
    for share in requested:
        if not share.tag and share.revision != target:
            continue
        is_target = share.revision == target and not share.latest
        seen_target = seen_target or is_target
        out.append(run_v2.TrafficTarget(
            type_=LATEST_TYPE if share.latest else REVISION_TYPE, revision="" if share.latest else share.revision,
            percent=100 if is_target else 0, tag=share.tag or ""))
    if not seen_target:
        out.append(run_v2.TrafficTarget(type_=REVISION_TYPE, revision=target, percent=100))
    return out


def console_url(ctx: Context, service: str) -> str:
    settings = ctx.settings
    return (f"https://console.cloud.google.com/run/detail/{settings.cloud_run_region}/{service}/revisions"
            f"?project={settings.gcp_project}")


# ---- who may confirm -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Confirmers:
    roles: dict[str, str]  # role → user id, of CONFIRMING_ROLES that are assigned
    users: tuple[str, ...]  # ROLLBACK_ALLOWED_USERS

    def allows(self, user_id: str) -> bool:
        return user_id in self.roles.values() or user_id in self.users


def confirmers(ctx: Context, session: Session, incident_id: int) -> Confirmers:
    rows = session.execute(
        select(RoleAssignment.role, RoleAssignment.user_id).where(
            RoleAssignment.incident_id == incident_id, RoleAssignment.role.in_(CONFIRMING_ROLES))
    ).all()
    return Confirmers({role: user for role, user in rows}, ctx.settings.rollback_allowed_users)


# ---- the message --------------------------------------------------------------------------------------------------


def _message(ctx: Context, key: str, **params: Any) -> RenderedMessage:
    text = ctx.say(key, **params)
    return RenderedMessage(plain_fallback(text), text_to_blocks(text))


def proposal_view(ctx: Context, session: Session, row: Rollback) -> RollbackProposalView:
    incident = session.get_one(Incident, row.incident_id)
    fmt = ctx.formatter()
    before = [Share.from_dict(s) for s in row.traffic_before]
    after = [Share.from_dict(s) for s in row.traffic_after] if row.traffic_after else None
    allowed = confirmers(ctx, session, row.incident_id)
    times = [row.proposed_at, row.confirmed_at, row.started_at, row.finished_at, row.verify_due_at]
    body = _message(
        ctx, "rollback.proposal", r=row, public_id=incident.public_id, before=before, after=after,
        fmt=fmt, with_date=fmt.spans_days(times), confirmers=allowed, console_url=console_url(ctx, row.service),
        wait=fmt.duration(OPERATION_WAIT), permission=UPDATE_PERMISSION, role=UPDATE_ROLE,
        home=channels.home_channel(incident),
    )
    confirmation = None
    if row.status == PROPOSED:
        change = ", ".join(f"{s.revision} {s.percent}%" for s in before if s.percent)
        confirmation = RollbackConfirmation(
            rollback_id=row.id, button=ctx.say("rollback.confirm_button", target=row.target_revision),
            title=ctx.say("rollback.dialog_title"),
            text=ctx.say("rollback.dialog_text", service=row.service, target=row.target_revision, change=change),
            confirm=ctx.say("rollback.dialog_confirm"), deny=ctx.say("rollback.dialog_deny"),
        )
    return RollbackProposalView(body, confirmation)


def show(ctx: Context, rollback_id: int) -> None:
    """Draws the proposal message as the row stands: updates it in place, or posts it the first time."""
    with ctx.db.session() as session:
        row = session.get_one(Rollback, rollback_id)
        incident = session.get_one(Incident, row.incident_id)
        message = ctx.presenter.rollback_proposal(proposal_view(ctx, session, row))
        channel, ts, thread_ts = row.message_channel or incident.channel_id, row.message_ts, incident.home_thread_ts
    try:
        if ts is not None:
            ctx.messenger.update_message(channel, ts, message.text, blocks=message.blocks)
            return
        posted = ctx.messenger.post_message(channel, message.text, blocks=message.blocks, thread_ts=thread_ts)
    except MessengerError as error:
        # The row holds the truth; the next change redraws the message.
        log.warning("rollback message for %s not shown: %s", rollback_id, error.kind)
        return
    with ctx.db.session() as session:
        session.execute(update(Rollback).where(Rollback.id == rollback_id, Rollback.message_ts.is_(None))
                        .values(message_channel=channel, message_ts=posted))


def _post_in_thread(ctx: Context, incident_id: int, message: RenderedMessage) -> None:
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        channel, thread_ts = incident.channel_id, incident.home_thread_ts
    try:
        ctx.messenger.post_message(channel, message.text, blocks=message.blocks, thread_ts=thread_ts)
    except MessengerError as error:
        log.warning("rollback note not posted: %s", error.kind)


# ---- proposing -------------------------------------------------------------------------------------------------


def propose(ctx: Context, incident_id: int, asked: str | None, *, actor: str | None,
            state: ServiceState | None = None) -> int | None:
    """Reads the service, stores a proposal and posts it; or posts why there is none. The new rollback's id."""
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        service = evidence.service_of(incident, ctx.settings)
        public_id = incident.public_id
    if service is None:
        return None
    if state is None:
        try:
            state = read_service(ctx, service)
        except Failure as failure:
            _post_in_thread(ctx, incident_id, _message(
                ctx, "rollback.read_failed", public_id=public_id, service=service, kind=failure.kind,
                detail=failure.detail))
            return None
    target, reason = choose_target(state, asked)
    if target is None:
        _post_in_thread(ctx, incident_id, _message(
            ctx, "rollback.no_target", public_id=public_id, service=service, reason=reason, asked=asked,
            serving=[s for s in state.serving if s.percent], revisions=state.revisions[:5]))
        return None
    now = ctx.clock.now()
    with ctx.db.session() as session:
        # One proposal stands at a time: older ones can no longer be confirmed.
        session.execute(update(Rollback).where(Rollback.incident_id == incident_id, Rollback.status == PROPOSED)
                        .values(status=SUPERSEDED))
        row = Rollback(incident_id=incident_id, service=service, target_revision=target, etag=state.etag,
                       traffic_before=[s.to_dict() for s in state.serving], proposed_by=actor, proposed_at=now,
                       status=PROPOSED)
        session.add(row)
        session.flush()
        rollback_id = row.id
    show(ctx, rollback_id)
    return rollback_id


def propose_job(ctx: Context, incident_id: int, asked: str | None, actor: str | None) -> None:
    try:
        propose(ctx, incident_id, asked, actor=actor)
    except Exception:
        log.exception("rollback proposal failed")


# ---- confirming -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why a click changed nothing: `code` is a key of the rollback.refused message."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)


def confirm(ctx: Context, rollback_id: int, user_id: str, user_name: str | None, *, channel: str | None = None
            ) -> Refusal | None:
    """Claims the proposal for this person and starts the update after the commit; a Refusal says why not.
    Exactly one of any number of concurrent confirmations gets None."""
    now = ctx.clock.now()
    if not ctx.settings.rollback_enabled:
        return Refusal("disabled")
    with ctx.db.session() as session:
        row = session.get(Rollback, rollback_id)
        if row is None:
            return Refusal("unknown")
        incident = session.get_one(Incident, row.incident_id)
        if channel is not None and channel != incident.channel_id:
            return Refusal("unknown")
        allowed = confirmers(ctx, session, row.incident_id)
        if not allowed.allows(user_id):
            return Refusal("not_allowed", {"roles": allowed.roles, "users": allowed.users})
        if row.status != PROPOSED:
            return Refusal(row.status, {"by": row.confirmed_by, "at": row.confirmed_at,
                                        "home": channels.home_channel(incident)})
        if not claim_lease(session, Rollback.claimed_until, Rollback.id == rollback_id, Rollback.status == PROPOSED,
                           now=now, until=now + CLAIM_LEASE):
            return Refusal(REQUESTED, {"by": None, "at": None})  # someone else's click won
        row = session.get_one(Rollback, rollback_id, populate_existing=True)
        row.status, row.confirmed_by, row.confirmed_by_name, row.confirmed_at = REQUESTED, user_id, user_name, now
        _event(session, incident, row, "confirmed", actor=user_id, actor_name=user_name, at=now)
        after_commit(session, lambda: ctx.jobs.submit(execute, ctx, rollback_id))
    return None


def _event(session: Session, incident: Incident, row: Rollback, step: str, *, actor: str | None,
           actor_name: str | None, at: datetime, **data: Any) -> None:
    timeline.add_system_event(session, incident, actor=actor, actor_name=actor_name, at=at, action="rollback",
                              data={"step": step, "service": row.service, "target": row.target_revision, **data})


# ---- carrying it out ---------------------------------------------------------------------------------------------


def execute(ctx: Context, rollback_id: int) -> None:
    """The background job of a confirmed rollback: update, await, record, redraw. Never raises."""
    try:
        _execute(ctx, rollback_id)
    except Exception:
        log.exception("rollback %s failed unexpectedly", rollback_id)
        _finish(ctx, rollback_id, FAILED, Failure("error", "unexpected error; see the bot's logs"))


def _execute(ctx: Context, rollback_id: int) -> None:
    show(ctx, rollback_id)
    with ctx.db.read() as session:
        row = session.get_one(Rollback, rollback_id)
        service, target, etag = row.service, row.target_revision, row.etag
        before = [Share.from_dict(s) for s in row.traffic_before]
    services = clients(ctx).services()
    settings = ctx.settings
    name = services.service_path(settings.gcp_project or "", settings.cloud_run_region or "", service)
    # The split the proposal showed, with the etag read for it: Cloud Run refuses it if the service changed since.
    change = run_v2.Service(name=name, etag=etag, traffic=rolled_back_traffic(before, target))
    try:
        # Only the split changes (update_mask), whatever the rest of the Service message holds.
        operation = services.update_service(request={"service": change, "update_mask": {"paths": ["traffic"]}},
                                            timeout=DEFAULT_TIMEOUT)
    except Exception as exc:
        failure = _failure(exc, updating=True)
        if failure.kind == "stale":
            _stale(ctx, rollback_id, failure)
        else:
            _finish(ctx, rollback_id, FAILED, failure)
        return
    _started(ctx, rollback_id, operation.operation.name)
    show(ctx, rollback_id)
    _await(ctx, rollback_id, operation)


def _started(ctx: Context, rollback_id: int, operation_name: str) -> None:
    now = ctx.clock.now()
    with ctx.db.session() as session:
        row = session.get_one(Rollback, rollback_id)
        incident = session.get_one(Incident, row.incident_id)
        row.status, row.operation_name, row.started_at = RUNNING, operation_name, now
        _event(session, incident, row, "started", actor=row.confirmed_by, actor_name=row.confirmed_by_name, at=now)
        if incident.rollback_at is None and row.confirmed_at is not None:
            # Cloud Run took the change: the decision's moment is the incident's `rollback` milestone.
            result = lifecycle.set_milestone(ctx, session, incident.id, "rollback", row.confirmed_at,
                                             row.confirmed_by, row.confirmed_by_name)
            if not result.ok:
                log.info("rollback milestone not set: %s", result.reason,
                         extra={"json_fields": {"incident_id": incident.public_id}})


def _await(ctx: Context, rollback_id: int, operation: lro.Operation) -> None:
    deadline = time.monotonic() + OPERATION_WAIT.total_seconds()
    while True:
        try:
            done = operation.done()
        except Exception as exc:
            _finish(ctx, rollback_id, TIMED_OUT, _failure(exc))
            return
        if done:
            error = operation.exception()
            if error is None:
                _finish(ctx, rollback_id, DONE, None)
            else:
                _finish(ctx, rollback_id, FAILED, Failure("operation_error", str(getattr(error, "message", error))))
            return
        if time.monotonic() >= deadline:
            _finish(ctx, rollback_id, TIMED_OUT, Failure("timeout", "still running"))
            return
        time.sleep(POLL_SECONDS)


def _finish(ctx: Context, rollback_id: int, status: str, failure: Failure | None) -> None:
    """The end of a rollback the bot saw through: stored with its timeline event in one transaction, then shown."""
    now = ctx.clock.now()
    due: datetime | None = None
    with ctx.db.session() as session:
        row = session.get_one(Rollback, rollback_id)
        if row.status not in IN_FLIGHT:
            return  # already ended (a sweep that took over an interrupted worker)
        incident = session.get_one(Incident, row.incident_id)
        row.status, row.finished_at, row.claimed_until = status, now, None
        if failure is not None:
            row.error_kind, row.error_detail = failure.kind, failure.detail[:2000]
        step = {DONE: "finished", TIMED_OUT: "still_running"}.get(status, "failed")
        data = {"error_kind": failure.kind} if failure is not None else {}
        _event(session, incident, row, step, actor=None, actor_name=None, at=now, **data)
        if status == DONE:
            due = row.verify_due_at = now + ctx.settings.verify_after_rollback
    if due is not None:
        _schedule_verification(ctx, rollback_id, due)
    show(ctx, rollback_id)


def _stale(ctx: Context, rollback_id: int, failure: Failure) -> None:
    """The service changed since the proposal: record the refusal with the split found now, and propose afresh."""
    with ctx.db.read() as session:
        row = session.get_one(Rollback, rollback_id)
        incident_id, service, target = row.incident_id, row.service, row.target_revision
    try:
        state: ServiceState | None = read_service(ctx, service)
    except Failure:
        state = None
    now = ctx.clock.now()
    with ctx.db.session() as session:
        row = session.get_one(Rollback, rollback_id)
        incident = session.get_one(Incident, incident_id)
        row.status, row.finished_at, row.claimed_until = STALE, now, None
        row.error_kind, row.error_detail = failure.kind, failure.detail[:2000]
        row.traffic_after = [s.to_dict() for s in state.serving] if state is not None else None
        _event(session, incident, row, "failed", actor=None, actor_name=None, at=now, error_kind="stale")
    show(ctx, rollback_id)
    # A fresh confirmation of the new split: the same target if it is still one, else whatever the split now says.
    propose(ctx, incident_id, target if state is not None and target in state.revisions else None, actor=None,
            state=state)


# ---- the verification after a finished rollback --------------------------------------------------------------


def _schedule_verification(ctx: Context, rollback_id: int, due: datetime) -> None:
    """Wakes this process at the due time; the row is the truth and the sweep the safety net."""
    sched = reminders.scheduler(ctx)
    if sched is not None:
        sched.scheduler.add_job(run_due_verifications, "date", run_date=due, args=[ctx],
                                id=_VERIFY_JOB.format(rollback_id), replace_existing=True)


def due_verifications(ctx: Context) -> list[int]:
    now = ctx.clock.now()
    with ctx.db.read() as session:
        return list(session.scalars(select(Rollback.id).where(
            Rollback.status == DONE, Rollback.verified_at.is_(None), Rollback.verify_due_at <= now,
            or_(Rollback.verify_claimed_until.is_(None), Rollback.verify_claimed_until < now),
        ).order_by(Rollback.verify_due_at)).all())


def verify_after(ctx: Context, rollback_id: int) -> bool:
    """Runs the verification of a finished rollback if it is due and nobody else has it. True when it ran."""
    now = ctx.clock.now()
    with ctx.db.session() as session:
        if not claim_lease(session, Rollback.verify_claimed_until, Rollback.id == rollback_id,
                           Rollback.status == DONE, Rollback.verified_at.is_(None), Rollback.verify_due_at <= now,
                           now=now, until=now + VERIFY_LEASE):
            return False
        incident_id = session.get_one(Rollback, rollback_id).incident_id
    try:
        evidence.verify(ctx, incident_id)
    except Exception:
        log.exception("verification after rollback %s failed; retrying", rollback_id)
        with ctx.db.session() as session:
            session.execute(update(Rollback).where(Rollback.id == rollback_id)
                            .values(verify_claimed_until=ctx.clock.now() + VERIFY_RETRY))
        return False
    with ctx.db.session() as session:
        session.execute(update(Rollback).where(Rollback.id == rollback_id).values(verified_at=ctx.clock.now()))
    return True


def run_due_verifications(ctx: Context) -> None:
    for rollback_id in due_verifications(ctx):
        verify_after(ctx, rollback_id)


# ---- a worker that died holding a claim ----------------------------------------------------------------------------


def recover_interrupted(ctx: Context) -> None:
    """A confirmed rollback whose claim ran out without an end: look at Cloud Run once and record what it says."""
    now = ctx.clock.now()
    with ctx.db.read() as session:
        rows = session.execute(select(Rollback.id, Rollback.claimed_until).where(
            Rollback.status.in_(IN_FLIGHT), Rollback.claimed_until < now)).all()
    for rollback_id, seen in rows:
        with ctx.db.session() as session:
            if not claim_lease(session, Rollback.claimed_until, Rollback.id == rollback_id,
                               Rollback.status.in_(IN_FLIGHT), now=now, until=now + CLAIM_LEASE, seen=seen):
                continue
            row = session.get_one(Rollback, rollback_id)
            operation_name, service, target = row.operation_name, row.service, row.target_revision
        try:
            _settle_interrupted(ctx, rollback_id, operation_name, service, target)
        except Exception:
            log.exception("interrupted rollback %s could not be settled", rollback_id)


def _settle_interrupted(ctx: Context, rollback_id: int, operation_name: str | None, service: str,
                        target: str) -> None:
    if operation_name:
        services = clients(ctx).services()
        try:
            current = services.get_operation(request={"name": operation_name}, timeout=DEFAULT_TIMEOUT)
            future = lro.from_gapic(current, services.transport.operations_client, run_v2.Service,
                                    metadata_type=run_v2.Service)
            done = future.done()
        except Exception as exc:
            _finish(ctx, rollback_id, TIMED_OUT, _failure(exc))
            return
        if not done:
            _finish(ctx, rollback_id, TIMED_OUT, Failure("timeout", "still running"))
        elif future.exception() is None:
            _finish(ctx, rollback_id, DONE, None)
        else:
            _finish(ctx, rollback_id, FAILED, Failure("operation_error", str(future.exception())))
        return
    # Confirmed, but whether the update reached Cloud Run is unknown: the split tells.
    try:
        state = read_service(ctx, service)
    except Failure as failure:
        _finish(ctx, rollback_id, FAILED, Failure("interrupted", failure.detail))
        return
    if any(s.revision == target and s.percent == 100 for s in state.serving):
        _finish(ctx, rollback_id, DONE, None)
    else:
        _finish(ctx, rollback_id, FAILED, Failure("interrupted", "the bot stopped before Cloud Run took the update"))


# ---- wiring ------------------------------------------------------------------------------------------------------


def start(ctx: Context) -> None:
    """Timers for verifications still ahead: they died with the previous process."""
    with ctx.db.read() as session:
        pending = session.execute(select(Rollback.id, Rollback.verify_due_at).where(
            Rollback.status == DONE, Rollback.verified_at.is_(None), Rollback.verify_due_at.is_not(None))).all()
    for rollback_id, due in pending:
        if due is not None:
            _schedule_verification(ctx, rollback_id, due)


def sweep(ctx: Context) -> None:
    recover_interrupted(ctx)
    run_due_verifications(ctx)


def install(ctx: Context) -> None:
    # After reminders.install: its on_start starts the scheduler this one's timers go on.
    ctx.hooks.on_start.register(start)
    ctx.hooks.on_sweep.register(sweep)
