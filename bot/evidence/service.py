"""Evidence for an incident, end to end: capture from Google Cloud, store, then tell the thread.

Order matters: every capture is written to the ``evidence`` table before anything is posted, so a Slack
failure loses nothing; a Google failure is stored as what failed and why, beside whatever did arrive.
Runs off the request path (``ctx.jobs``); the thread gets a progress message that is then updated in place.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.cloud import logging as cloud_logging
from google.cloud import monitoring_v3, run_v2
from sqlalchemy import select

from bot import postmortem, timeline
from bot.context import Context
from bot.evidence import chart, view
from bot.evidence.analysis import label_revisions, per_minute_json
from bot.evidence.gcp import (
    EvidenceBundle,
    EvidenceError,
    classify_exception,
    collect_evidence,
    make_logging_client,
    make_run_client,
    verify_rollback_live,
)
from bot.evidence.monitoring import make_monitoring_client
from bot.parsing import UsageError
from bot.ports import MessengerError, RecoveryOffer, RollbackOffer, VerificationView
from bot.render import RenderedMessage
from bot.settings import Settings
from storage.models import Evidence, Incident

log = logging.getLogger(__name__)

ERROR_LIMIT = 500
LOOKBACK_WITHOUT_DEPLOY = timedelta(hours=1)
FILE_PREFIX = {"errors": "evidence_errors", "metrics": "evidence_metrics", "config": "evidence_canary_config"}
_CLIENTS_KEY = "evidence.clients"
_RUNNING_KEY = "evidence.running"
_setup_lock = threading.Lock()


# -- clients ---------------------------------------------------------------------------------------


class GcpClients:
    """The Google clients of one Context, built on first use and then shared: both are thread-safe
    enough for concurrent reads and expensive to build (credentials, transport)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._logging: cloud_logging.Client | None = None
        self._run: run_v2.ServicesClient | None = None
        self._monitoring: monitoring_v3.MetricServiceClient | None = None

    def logging(self) -> cloud_logging.Client:
        with self._lock:
            if self._logging is None:
                self._logging = make_logging_client(self._settings.gcp_project or "",
                                                    self._settings.cloud_logging_api_url)
            return self._logging

    def has_logging(self) -> bool:
        with self._lock:
            return self._logging is not None

    def run(self) -> run_v2.ServicesClient:
        with self._lock:
            if self._run is None:
                self._run = make_run_client(self._settings.cloud_run_api_url)
            return self._run

    def monitoring(self) -> monitoring_v3.MetricServiceClient:
        with self._lock:
            if self._monitoring is None:
                self._monitoring = make_monitoring_client(self._settings.cloud_monitoring_api_url)
            return self._monitoring

    def close(self) -> None:
        """At shutdown, once no capture runs: closes the transports that hold connections (Cloud Monitoring's gRPC
        channel, Cloud Run's HTTP session). A channel left open hears its server go away and logs it."""
        with self._lock:
            opened, self._run, self._monitoring = [self._run, self._monitoring], None, None
        for client in opened:
            if client is not None:
                client.transport.close()


def clients(ctx: Context) -> GcpClients:
    with _setup_lock:
        holder = ctx.extras.get(_CLIENTS_KEY)
        if holder is None:
            holder = ctx.extras[_CLIENTS_KEY] = GcpClients(ctx.settings)
        return holder


def missing_settings(settings: Settings) -> list[str]:
    """The variables evidence cannot work without (the service may come from the incident instead)."""
    return [name for name, value in (("GCP_PROJECT", settings.gcp_project),
                                     ("CLOUD_RUN_REGION", settings.cloud_run_region)) if not value]


def service_of(incident: Incident, settings: Settings) -> str | None:
    """`service:` given at open wins over CLOUD_RUN_SERVICE (open_incident already stores that choice)."""
    return incident.service or settings.cloud_run_service


# -- one capture at a time per incident ---------------------------------------------------------------


def claim(ctx: Context, incident_id: int) -> bool:
    """False when a capture for this incident is already running in this process."""
    with _setup_lock:
        running: set[int] = ctx.extras.setdefault(_RUNNING_KEY, set())
        if incident_id in running:
            return False
        running.add(incident_id)
        return True


def release(ctx: Context, incident_id: int) -> None:
    with _setup_lock:
        ctx.extras.setdefault(_RUNNING_KEY, set()).discard(incident_id)


# -- where to post ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    incident_id: int
    public_id: str
    channel: str
    thread_ts: str | None
    service: str
    deployed_at: datetime | None
    opened_at: datetime
    recovered_at: datetime | None
    rollback_at: datetime | None = None
    announced: bool = True  # False while the announcement (the home's first post) is not on record


def load_target(ctx: Context, incident_id: int) -> Target | None:
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        service = service_of(incident, ctx.settings)
        if not service:
            return None
        return Target(incident.id, incident.public_id, incident.channel_id, incident.home_thread_ts, service,
                      incident.deployed_at, incident.opened_at, incident.recovered_at, incident.rollback_at,
                      announced=incident.announcement_ts is not None)


@dataclass
class Outcome:
    """What a capture or verification did; `slack_error` is set when the thread could not be told."""

    run_id: str
    stored: dict[str, bool] = field(default_factory=dict)
    message_ts: str | None = None
    files: list[str] = field(default_factory=list)
    slack_error: str | None = None
    passed: bool | None = None


class _Thread:
    """The one message this run keeps up to date in the incident thread."""

    def __init__(self, ctx: Context, target: Target) -> None:
        self.ctx, self.target = ctx, target
        self.ts: str | None = None
        self.error: str | None = None

    def progress(self, text: str) -> None:
        if not self.target.announced:
            self.error = "announcement_not_posted"
            return
        try:
            self.ts = self.ctx.messenger.post_message(self.target.channel, text, thread_ts=self.target.thread_ts)
        except MessengerError as error:
            # Keep capturing: the result is posted as a new message below, or reported by the caller.
            log.warning("evidence progress message failed: %s", error.kind)
            self.error = error.kind

    def show(self, message: RenderedMessage) -> None:
        if not self.target.announced:
            return
        if self.ts is not None:
            try:
                self.ctx.messenger.update_message(self.target.channel, self.ts, message.text, blocks=message.blocks)
                self.error = None
                return
            except MessengerError as error:
                log.warning("evidence message update failed, posting anew: %s", error.kind)
        try:
            self.ts = self.ctx.messenger.post_message(self.target.channel, message.text, blocks=message.blocks,
                                                      thread_ts=self.target.thread_ts)
            self.error = None
        except MessengerError as error:
            log.warning("evidence result message failed: %s", error.kind)
            self.error = error.kind


def _window_context(ctx: Context, *times: datetime | None) -> dict[str, Any]:
    fmt = ctx.formatter()
    return {"fmt": fmt, "spans_days": fmt.spans_days(list(times)), "x": view.FORMAT, "mono": view.Mono()}


# -- capture -----------------------------------------------------------------------------------------


def file_stamp(ctx: Context, at: datetime) -> str:
    """`YYYYMMDD_HHMMSS` in INCIDENT_TIMEZONE, like the guide's `Get-Date -Format "yyyyMMdd_HHmmss"`."""
    return ctx.formatter().local(at).strftime("%Y%m%d_%H%M%S")


def _meta(bundle: EvidenceBundle, target: Target, run_id: str, captured_at: datetime, kind: str,
          complete: bool) -> dict[str, Any]:
    return {
        "kind": kind, "incident": target.public_id, "run_id": run_id, "project": bundle.project,
        "region": bundle.region, "service": bundle.service, "captured_at": captured_at.isoformat(),
        "window_start": bundle.window_start.isoformat(), "window_end": bundle.window_end.isoformat(),
        "deployed_at": target.deployed_at.isoformat() if target.deployed_at else None, "complete": complete,
    }


def build_payloads(bundle: EvidenceBundle, target: Target, run_id: str, captured_at: datetime, zone: str
                   ) -> dict[str, dict[str, Any] | None]:
    """The three files' contents; None where nothing at all was collected."""
    failed = view.failures_by_kind(bundle)
    data = bundle.to_dict()
    meta = {"file_name_time_zone": zone}
    errors: dict[str, Any] | None = None
    records = bundle.errors.records if bundle.errors else []
    if bundle.errors is not None and (records or "errors" not in failed):
        errors = {
            **_meta(bundle, target, run_id, captured_at, "errors", "errors" not in failed), **meta,
            "filter": bundle.errors.filter, "limit": bundle.errors.limit,
            "limit_reached": bundle.errors.limit_reached, "count": len(records),
            "top_patterns": data["patterns"], "errors_per_minute": data["error_timeline"],
            "onset": data["onset"], "onset_source": data["onset_source"],
            "affected_endpoints": data["endpoints"], "records": data["errors"]["records"],
        }
    metrics: dict[str, Any] | None = None
    if bundle.requests is not None:
        requests = data["requests"]
        metrics = {
            **_meta(bundle, target, run_id, captured_at, "metrics", bundle.requests_complete), **meta,
            # The guide's evidence_metrics shape: {"canary": {...}, "stable": {...}}, plus any other revision.
            **bundle.metrics,
            "request_log_entries": requests["entries"],
            "server_errors_per_minute": requests["server_errors_per_minute"],
            "server_errors_per_minute_by_revision": requests["server_errors_per_minute_by_revision"],
            "failing_endpoints": requests["failing_endpoints"],
            # Cloud Monitoring, per revision: memory / CPU p99 and peak instances, or why they are missing.
            "utilisation": data["utilisation"], "utilisation_error": data["utilisation_error"],
            "per_minute_by_revision": requests["per_minute_by_revision"],
        }
    config: dict[str, Any] | None = None
    if bundle.service_config is not None:
        config = {**_meta(bundle, target, run_id, captured_at, "config", True), **meta,
                  "config": bundle.service_config}
    return {"errors": errors, "metrics": metrics, "config": config}


def _impact_values(bundle: EvidenceBundle) -> dict[str, str]:
    """The report's 임팩트 numbers, stable → canary, when both were measured in full."""
    canary, stable = bundle.metrics.get("canary"), bundle.metrics.get("stable")
    if not (bundle.requests_complete and canary and stable):
        return {}
    out = {"error-rate": f"{view.pct(stable['error_rate'])} → {view.pct(canary['error_rate'])}"}
    before, after = stable["p95_response_time_ms"], canary["p95_response_time_ms"]
    if before is not None and after is not None:
        out["p95"] = f"{round(before)}ms → {round(after)}ms"  # no thousands separator: the impact parser reads it
    return out


def _event_data(bundle: EvidenceBundle, run_id: str, failed: list[str]) -> dict[str, Any]:
    def brief(role: str) -> dict[str, str] | None:
        m = bundle.metrics.get(role)
        if not m:
            return None
        return {"revision": m["revision"], "error_rate": view.pct(m["error_rate"]),
                "p95": view.ms(m["p95_response_time_ms"])}

    errors = len(bundle.errors.records) if bundle.errors and "errors" not in failed else None
    canary, stable = brief("canary"), brief("stable")
    parts = [f"errors {errors}" if errors is not None else "errors —"]
    for role, m in (("canary", canary), ("stable", stable)):
        if m:
            parts.append(f"{role} {m['error_rate']} / p95 {m['p95']}")
    if failed:
        parts.append("failed: " + ", ".join(failed))
    return {"run_id": run_id, "summary": " · ".join(parts), "errors": errors, "canary": canary, "stable": stable,
            "failed": failed}


def store_capture(ctx: Context, target: Target, bundle: EvidenceBundle, run_id: str, captured_at: datetime,
                  payloads: dict[str, dict[str, Any] | None], *, actor: str | None, actor_name: str | None
                  ) -> dict[str, bool]:
    """One transaction: the three evidence rows, the timeline event and the measured impact."""
    failed = view.failures_by_kind(bundle)
    stored: dict[str, bool] = {}
    with ctx.db.session() as session:
        incident = session.get_one(Incident, target.incident_id)
        for kind in ("errors", "metrics", "config"):
            failure = failed.get(kind)
            session.add(Evidence(
                incident_id=incident.id, run_id=run_id, kind=kind, captured_at=captured_at, ok=failure is None,
                error_kind=failure.kind if failure else None,
                error_detail=f"{failure.source}: {failure.detail}" if failure else None, payload=payloads[kind],
            ))
            stored[kind] = failure is None
        timeline.add_system_event(session, incident, actor=actor, actor_name=actor_name, at=captured_at,
                                  action="evidence", data=_event_data(bundle, run_id, sorted(failed)))
        for name, value in _impact_values(bundle).items():
            try:
                # The post-mortem domain keeps a value a person typed; a measured one only fills the gap.
                postmortem.record_measured_impact(ctx, session, incident, name, value)
            except UsageError as error:
                log.warning("measured impact %s=%r refused: %s", name, value, error.code)
    return stored


def capture(ctx: Context, incident_id: int, *, actor: str | None = None, actor_name: str | None = None) -> Outcome:
    """Capture, store, post. Never raises for Google or Slack failures (they are stored and shown)."""
    run_id = uuid.uuid4().hex
    outcome = Outcome(run_id)
    target = load_target(ctx, incident_id)
    if target is None:
        return outcome
    settings = ctx.settings
    now = ctx.clock.now()
    since = target.deployed_at or (target.opened_at - LOOKBACK_WITHOUT_DEPLOY)
    if since >= now:
        since = now - LOOKBACK_WITHOUT_DEPLOY
    window = _window_context(ctx, since, now, target.deployed_at)
    thread = _Thread(ctx, target)
    thread.progress(ctx.say("evidence.capture_progress", service=target.service,
                            start=window["fmt"].time(since, with_date=window["spans_days"], with_zone=False),
                            end=window["fmt"].time(now, with_date=window["spans_days"])))

    gcp = clients(ctx)
    try:
        logging_client, run_client = gcp.logging(), gcp.run()
    except Exception as exc:
        # No credentials (ADC) or a bad endpoint: nothing can be fetched. Both clients use the same credentials,
        # so every kind is recorded as failed, for the reason the client that was built first gave.
        first = classify_exception(exc, "run" if gcp.has_logging() else "logging")
        failures = [EvidenceError(first.kind, "logging", first.detail)] * 2 + [
            EvidenceError(first.kind, "run", first.detail)]
        bundle = EvidenceBundle(settings.gcp_project or "", settings.cloud_run_region or "", target.service, since,
                                now, target.deployed_at or since, failures=failures)
    else:
        monitoring_client, monitoring_error = None, None
        try:
            monitoring_client = gcp.monitoring()
        except Exception as exc:  # its own credentials lookup: the snapshot says memory and CPU are missing
            monitoring_error = classify_exception(exc, "monitoring")
        bundle = collect_evidence(
            logging_client=logging_client, run_client=run_client, project=settings.gcp_project or "",
            region=settings.cloud_run_region or "", service=target.service, now=now, since=since,
            deployed_at=target.deployed_at, error_limit=ERROR_LIMIT, monitoring_client=monitoring_client,
        )
        bundle.utilisation_error = bundle.utilisation_error or monitoring_error
    stamp = file_stamp(ctx, now)
    partial = bundle.requests is not None and not bundle.requests_complete
    chart_data = chart.chart_data_for(ctx, target.incident_id, bundle.requests, bundle.labels, window_start=since,
                                      window_end=now, partial=partial)
    payloads = build_payloads(bundle, target, run_id, now, ctx.formatter().zone_label)
    if payloads["metrics"] is not None:  # what the report needs to draw this chart again
        payloads["metrics"]["chart"] = chart.payload(chart_data, chart.file_name(stamp))
    outcome.stored = store_capture(ctx, target, bundle, run_id, now, payloads, actor=actor, actor_name=actor_name)
    log.info("evidence captured", extra={"json_fields": {
        "incident_id": target.public_id, "run_id": run_id, "failed": [f.kind for f in bundle.failures],
        "seconds": round(bundle.capture_seconds, 3)}})

    # Drawn here, in the evidence job, so the summary can say why a chart is missing.
    picture = chart.draw_for_thread(ctx, chart_data, chart.file_name(stamp), public_id=target.public_id,
                                    service=target.service)
    summary = view.capture_view(bundle, target.public_id, target.deployed_at is not None)
    summary.files = [f"{FILE_PREFIX[k]}_{stamp}.json" for k in ("errors", "metrics", "config") if payloads[k]]
    summary.chart_missing = picture.missing
    render = {**window, "v": summary, "zone": window["fmt"].zone_label}
    offer = rollback_offer(ctx, target.incident_id, bundle)
    thread.show(summary_message(ctx, render, offer))
    outcome.message_ts = thread.ts
    if thread.ts is None:
        outcome.slack_error = thread.error
        return outcome

    uploads = [(f"{FILE_PREFIX[kind]}_{stamp}.json", json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8"))
               for kind in ("errors", "metrics", "config") if (payload := payloads[kind]) is not None]
    if picture.png is not None:
        uploads.append((picture.filename, picture.png))
    for filename, content in uploads:
        try:
            ctx.messenger.upload_file(target.channel, target.thread_ts, filename, content, title=filename)
            outcome.files.append(filename)
        except MessengerError as error:
            log.warning("evidence upload %s failed: %s", filename, error.kind)
            summary.upload_failures.append((filename, error.kind))
    if summary.upload_failures:
        thread.show(summary_message(ctx, render, offer))
        outcome.slack_error = summary.upload_failures[0][1]
    return outcome


def canary_failing(bundle: EvidenceBundle, settings: Settings) -> bool:
    """Whether a canary that still serves traffic is over any threshold the rollback check holds it to."""
    canary = bundle.metrics.get("canary")
    label = bundle.labels.get(canary["revision"]) if canary else None
    if canary is None or label is None or not label.serving:
        return False
    p95, memory = canary.get("p95_response_time_ms"), canary.get("memory_utilization_p99")
    return bool(canary["error_rate"] >= settings.error_rate_max or (p95 is not None and p95 >= settings.p95_max_ms)
                or (memory is not None and memory >= settings.memory_max))


def rollback_offer(ctx: Context, incident_id: int, bundle: EvidenceBundle) -> RollbackOffer | None:
    """With rollback turned on, a failing canary gets a button under the summary that proposes the rollback."""
    if not ctx.settings.rollback_enabled or not canary_failing(bundle, ctx.settings):
        return None
    return RollbackOffer(incident_id, ctx.say("rollback.offer_button"))


def summary_message(ctx: Context, render: dict[str, Any], offer: RollbackOffer | None) -> RenderedMessage:
    message = ctx.renderer.message("evidence/summary", ctx.locale, **render)
    return message if offer is None else ctx.presenter.rollback_offer(message, offer)


def capture_job(ctx: Context, incident_id: int, actor: str | None = None, actor_name: str | None = None) -> Outcome:
    """The background job: releases the per-incident claim whatever happens."""
    try:
        return capture(ctx, incident_id, actor=actor, actor_name=actor_name)
    finally:
        release(ctx, incident_id)


# -- rollback verification ------------------------------------------------------------------------------


def verify(ctx: Context, incident_id: int, *, actor: str | None = None, actor_name: str | None = None) -> Outcome:
    """The guide's Phase 1 Step 1 against live data; stored, put on the timeline, then posted."""
    run_id = uuid.uuid4().hex
    outcome = Outcome(run_id)
    target = load_target(ctx, incident_id)
    if target is None:
        return outcome
    settings = ctx.settings
    now = ctx.clock.now()
    since = now - settings.verify_window
    thread = _Thread(ctx, target)
    thread.progress(ctx.say("evidence.verify_progress", service=target.service))

    # The chart reaches back before the rollback, so the failing canary, the rollback and the drop are in one
    # picture; only [since, now) is judged.
    chart_since = chart.verify_chart_start(
        judged_start=since, now=now, rollback_at=target.rollback_at, verify_window=settings.verify_window,
        evidence_start=target.deployed_at or (target.opened_at - LOOKBACK_WITHOUT_DEPLOY))
    live = verify_rollback_live(
        clients=clients(ctx), project=settings.gcp_project or "", region=settings.cloud_run_region or "",
        service=target.service, now=now, since=since, error_rate_max=settings.error_rate_max,
        p95_max_ms=settings.p95_max_ms, health_url=settings.health_url, memory_max=settings.memory_max,
        chart_since=chart_since,
    )
    result, failures, health_url = live.result, live.failures, live.health_url
    stamp = file_stamp(ctx, now)
    drawn = live.chart_requests
    chart_labels = label_revisions(live.service_config, [*live.revisions, *(drawn.revisions if drawn else ())])
    chart_data = chart.chart_data_for(ctx, target.incident_id, drawn, chart_labels, window_start=chart_since,
                                      window_end=now)
    # The chart's minutes (its own window, in `chart`), so the report can draw it again.
    per_minute = drawn.per_minute_by_revision if drawn else {}
    payload = {
        "kind": "verify", "incident": target.public_id, "run_id": run_id, "service": target.service,
        "project": settings.gcp_project, "region": settings.cloud_run_region,
        "window_start": since.isoformat(), "window_end": now.isoformat(), "health_url": health_url,
        "thresholds": {"error_rate_max": settings.error_rate_max, "p95_max_ms": settings.p95_max_ms,
                       "memory_max": settings.memory_max},
        "result": result.to_dict(), "failures": [f.to_dict() for f in failures],
        "traffic_statuses": (live.service_config or {}).get("traffic_statuses"), "revisions": live.revisions,
        "memory_p99": live.memory,
        "per_minute_by_revision": {r: per_minute_json(m) for r, m in per_minute.items()},
        "chart": chart.payload(chart_data, chart.file_name(stamp)),
    }
    failed = [c.name for c in result.checks if not c.passed]
    with ctx.db.session() as session:
        incident = session.get_one(Incident, target.incident_id)
        session.add(Evidence(
            incident_id=incident.id, run_id=run_id, kind="verify", captured_at=now, ok=not failures,
            error_kind=failures[0].kind if failures else None,
            error_detail="; ".join(f"{f.source}: {f.detail}" for f in failures) or None, payload=payload,
        ))
        timeline.add_system_event(session, incident, actor=actor, actor_name=actor_name, at=now, action="verify",
                                  data={"run_id": run_id, "passed": result.all_passed, "failed": failed})
    outcome.stored = {"verify": not failures}
    outcome.passed = result.all_passed

    v = view.verify_view(result, failures, public_id=target.public_id, service=target.service,
                         window_start=since, window_end=now, health_url=health_url)
    v.recorded_recovery = target.recovered_at
    thread.show(ctx.presenter.verification(verification_view(ctx, target.incident_id, v)))
    outcome.message_ts = thread.ts
    outcome.slack_error = thread.error if thread.ts is None else None
    if thread.ts is not None:  # the same picture as the evidence's, for this window: the drop after the rollback
        picture = chart.draw_for_thread(ctx, chart_data, chart.file_name(stamp), public_id=target.public_id,
                                        service=target.service)
        if picture.png is not None:
            try:
                ctx.messenger.upload_file(target.channel, target.thread_ts, picture.filename, picture.png,
                                          title=picture.filename)
                outcome.files.append(picture.filename)
            except MessengerError as error:
                log.warning("verification chart upload %s failed: %s", picture.filename, error.kind)
    return outcome


def verification_view(ctx: Context, incident_id: int, v: view.VerifyView) -> VerificationView:
    """The verification's message; a pass nobody has acted on yet offers to record `recovered`."""
    context = _window_context(ctx, v.window_start, v.window_end)
    body = ctx.renderer.message("evidence/verify", ctx.locale, v=v, memory_max=ctx.settings.memory_max,
                                window=context["fmt"].duration(v.window_end - v.window_start), **context)
    recovery = None
    if v.passed and v.confirmed_by is None and v.recorded_recovery is None:
        label = ctx.say("evidence.confirm_button", at=ctx.formatter().time(v.verified_at))
        recovery = RecoveryOffer(incident_id, v.verified_at, label)
    return VerificationView(body, recovery)


def stored_verify(ctx: Context, incident_id: int, verified_at: datetime) -> dict[str, Any] | None:
    with ctx.db.session() as session:
        rows = session.scalars(
            select(Evidence).where(Evidence.incident_id == incident_id, Evidence.kind == "verify",
                                   Evidence.captured_at == verified_at)
        ).all()
        return next((dict(r.payload) for r in rows if r.payload and r.payload["result"]["all_passed"]), None)


# -- automatic capture at open ------------------------------------------------------------------------


def on_announced(ctx: Context, incident_id: int) -> None:
    """The thread exists now: capture in the background when GCP is configured and a service is known."""
    if missing_settings(ctx.settings):
        return  # decided without reading the incident; said once, at install
    with ctx.db.read() as session:
        incident = session.get(Incident, incident_id)
        if incident is None or not service_of(incident, ctx.settings):
            return
    if claim(ctx, incident_id):
        ctx.jobs.submit(capture_job, ctx, incident_id)


def install(ctx: Context) -> None:
    clients(ctx)
    missing = missing_settings(ctx.settings)
    if missing:
        log.info("evidence capture at open is off: %s not set", ", ".join(missing))
    ctx.hooks.on_announced.register(on_announced)
