"""Evidence capture from Google Cloud (runbook Phase 1 Step 2): error logs, a per-revision metrics
snapshot built from the Cloud Run request log and Cloud Monitoring's container metrics, and the deployment
config, plus the health check.

Real clients only — tests point them at ``sandbox.gcp.GcpSandbox`` over loopback HTTP instead of
patching them. Every call has an explicit timeout; every failure becomes an :class:`EvidenceError`
saying which source failed and why, and :func:`collect_evidence` keeps whatever succeeded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import google.auth
import requests
from google.api_core import exceptions as core_exceptions
from google.api_core import retry as retries
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import logging as cloud_logging
from google.cloud import monitoring_v3, run_v2

from bot.evidence.analysis import (
    DEFAULT_THRESHOLDS,
    EndpointCount,
    ErrorRecord,
    MinuteCount,
    OnsetSummary,
    PatternCount,
    ReadingThresholds,
    RequestLogAggregator,
    RequestLogSummary,
    RevisionLabel,
    RevisionStats,
    affected_endpoints,
    endpoint_path,
    error_onset,
    errors_per_minute,
    label_revisions,
    metrics_by_role,
    short_revision,
    top_patterns,
)
from bot.evidence.monitoring import MEMORY, fetch_utilisation, utilisation_percentile
from bot.evidence.verify import VerifyResult, verify_rollback
from bot.sanitize import clean_optional, clean_text

REQUEST_LOG_ID = "run.googleapis.com%2Frequests"
DEFAULT_TIMEOUT = 10.0  # seconds per HTTP call
MAX_PAGE_SIZE = 1000  # entries.list rejects larger pages

# -- errors ---------------------------------------------------------------------------------------

ERROR_KINDS = ("permission_denied", "not_found", "timeout", "unavailable", "error")


class EvidenceError(Exception):
    """What failed (``source``: logging | run | monitoring | health) and why (``kind``), with a short ``detail``."""

    def __init__(self, kind: str, source: str, detail: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        super().__init__(f"{source}: {kind}: {detail}")
        self.kind = kind
        self.source = source
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "source": self.source, "detail": self.detail}


def classify_exception(exc: BaseException, source: str) -> EvidenceError:
    """Map google.api_core / google.auth / requests exceptions to an :class:`EvidenceError`."""
    if isinstance(exc, EvidenceError):
        return exc
    if isinstance(exc, core_exceptions.RetryError):
        # The retry budget ran out: report the last underlying failure, else call it a timeout.
        if exc.cause is not None:
            return classify_exception(exc.cause, source)
        return EvidenceError("timeout", source, _short(str(exc)))
    if isinstance(exc, core_exceptions.GoogleAPICallError):
        detail = _short(f"HTTP {exc.code}: {exc.message}")
        if isinstance(exc, core_exceptions.Forbidden | core_exceptions.Unauthorized):
            return EvidenceError("permission_denied", source, detail)
        if isinstance(exc, core_exceptions.NotFound):
            return EvidenceError("not_found", source, detail)
        if isinstance(exc, core_exceptions.GatewayTimeout):  # includes DeadlineExceeded
            return EvidenceError("timeout", source, detail)
        if isinstance(exc, core_exceptions.ServiceUnavailable | core_exceptions.TooManyRequests):
            return EvidenceError("unavailable", source, detail)
        return EvidenceError("error", source, detail)
    if isinstance(exc, requests.Timeout | TimeoutError):
        return EvidenceError("timeout", source, _short(f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, requests.ConnectionError | ConnectionError):
        return EvidenceError("unavailable", source, _short(f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, GoogleAuthError):
        return EvidenceError("permission_denied", source, _short(f"{type(exc).__name__}: {exc}"))
    return EvidenceError("error", source, _short(f"{type(exc).__name__}: {exc}"))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(clean_text(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- clients --------------------------------------------------------------------------------------


class _TimeoutSession(AuthorizedSession):
    """google-cloud-logging's HTTP layer always passes its own 60 s timeout and offers no per-call
    override, so the session enforces ours on every request."""

    def __init__(self, credentials: Credentials, timeout: float) -> None:
        super().__init__(credentials)
        self.timeout = timeout

    def request(  # type: ignore[override]  # keeps google-auth's signature, which already departs from requests'
        self, method: Any, url: Any, data: Any = None, headers: Any = None, max_allowed_time: Any = None,
        timeout: Any = None, **kwargs: Any,
    ) -> Any:
        # The caller's timeout is replaced by ours.
        return super().request(method, url, data=data, headers=headers, max_allowed_time=max_allowed_time,
                               timeout=self.timeout, **kwargs)


def make_logging_client(project: str, api_url: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
                        ) -> cloud_logging.Client:
    """A Cloud Logging client on the JSON/REST API.

    ``http://…`` (the sandbox) → anonymous credentials and that endpoint; otherwise Application
    Default Credentials, at ``api_url`` if given (``https://…``) or the default endpoint.
    """
    if api_url and api_url.startswith("http://"):
        credentials: Credentials = AnonymousCredentials()
    else:
        credentials, _ = google.auth.default(scopes=cloud_logging.Client.SCOPE)
    options = {"api_endpoint": api_url.rstrip("/")} if api_url else None
    return cloud_logging.Client(
        project=project, credentials=credentials, _http=_TimeoutSession(credentials, timeout),
        _use_grpc=False, client_options=options,
    )


def make_run_client(api_url: str | None = None) -> run_v2.ServicesClient:
    """A Cloud Run Admin v2 client on the REST transport (also in production, so the tested
    transport is the one that runs). The REST transport keeps an explicit ``http://`` scheme in
    ``api_endpoint`` (it only prefixes ``url_scheme`` when the host has none), so no
    ``url_scheme="http"`` is needed for the sandbox."""
    if api_url and api_url.startswith("http://"):
        return run_v2.ServicesClient(
            transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": api_url.rstrip("/")}
        )
    options = {"api_endpoint": api_url.rstrip("/")} if api_url else None
    return run_v2.ServicesClient(transport="rest", client_options=options)


# -- filters --------------------------------------------------------------------------------------


def rfc3339(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _window(start: datetime, end: datetime) -> str:
    # Always explicit: Client.list_entries appends a 24 h window when the filter has no "timestamp".
    return f'timestamp>="{rfc3339(start)}" AND timestamp<"{rfc3339(end)}"'


def error_log_filter(service: str, start: datetime, end: datetime) -> str:
    return (f'resource.type="cloud_run_revision" AND resource.labels.service_name="{service}" '
            f"AND severity>=ERROR AND {_window(start, end)}")


def request_log_filter(project: str, service: str, start: datetime, end: datetime,
                       revision: str | None = None) -> str:
    parts = [
        'resource.type="cloud_run_revision"',
        f'resource.labels.service_name="{service}"',
        f'logName="projects/{project}/logs/{REQUEST_LOG_ID}"',
    ]
    if revision:
        parts.append(f'resource.labels.revision_name="{revision}"')
    return " AND ".join([*parts, _window(start, end)])


# -- logging --------------------------------------------------------------------------------------


@dataclass
class ErrorLogCapture:
    records: list[ErrorRecord]
    limit: int
    filter: str

    @property
    def limit_reached(self) -> bool:
        """True when the cap was hit, so more matching entries may exist."""
        return len(self.records) >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records], "limit": self.limit,
                "limit_reached": self.limit_reached, "filter": self.filter}


def _labels(entry: Any) -> Mapping[str, str]:
    resource = getattr(entry, "resource", None)
    return {k: clean_text(v) for k, v in (getattr(resource, "labels", None) or {}).items() if isinstance(v, str)}


def _cleaned(value: Any) -> Any:
    """Every string of a JSON-able tree from Google without NUL and other C0 controls, as at every way in."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {_cleaned(k): _cleaned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cleaned(v) for v in value]
    return value


def _status(http: Mapping[str, Any] | None) -> int | None:
    if not http or http.get("status") is None:
        return None
    try:
        return int(http["status"])
    except (TypeError, ValueError):
        return None


def entry_message(entry: Any) -> str:
    """The human message of a LogEntry: text payload, ``jsonPayload.message``, or for a request
    log entry without payload ``"HTTP 503 GET /api/v2/chat"``."""
    payload = getattr(entry, "payload", None)
    if isinstance(payload, str):
        return payload
    if isinstance(payload, Mapping):
        for key in ("message", "msg", "error", "textPayload"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
        return _short(json.dumps(payload, default=str, sort_keys=True), 2000)
    http = getattr(entry, "http_request", None)
    if http:
        url = http.get("requestUrl") or ""
        return f"HTTP {http.get('status', '?')} {http.get('requestMethod', '')} {endpoint_path(url)}".strip()
    return ""


def error_record(entry: Any) -> ErrorRecord:
    http = getattr(entry, "http_request", None)
    return ErrorRecord(
        timestamp=getattr(entry, "timestamp", None),
        severity=getattr(entry, "severity", None) or "DEFAULT",
        revision=_labels(entry).get("revision_name"),
        message=clean_text(entry_message(entry)),
        log_name=clean_text(getattr(entry, "log_name", "") or ""),
        request_url=clean_optional((http or {}).get("requestUrl")),
        status=_status(http),
    )


def _iter_error_records(client: cloud_logging.Client, project: str, service: str, start: datetime, end: datetime,
                        limit: int, page_size: int | None, order_by: str) -> Iterator[ErrorRecord]:
    if limit <= 0:
        return
    size = min(page_size or limit, limit, MAX_PAGE_SIZE)
    entries = client.list_entries(resource_names=[f"projects/{project}"], filter_=error_log_filter(service, start, end),
                                  order_by=order_by, page_size=size)
    # Not max_results: the library's pager asks for the next page before noticing it is done,
    # which costs a spare request whenever the limit falls on a page boundary. Counting here and
    # never calling next() after the limit-th entry fetches only the pages needed.
    for count, entry in enumerate(entries, start=1):
        yield error_record(entry)
        if count >= limit:
            return


def fetch_error_logs(client: cloud_logging.Client, project: str, service: str, start: datetime, end: datetime,
                     limit: int = 500, page_size: int | None = None, order_by: str = cloud_logging.ASCENDING
                     ) -> ErrorLogCapture:
    """Up to ``limit`` ERROR-or-worse entries of the service in [start, end), oldest first by default
    (the onset matters more than the tail for "right after the deploy or later?").

    Raises :class:`EvidenceError` (source "logging")."""
    records: list[ErrorRecord] = []
    try:
        records.extend(_iter_error_records(client, project, service, start, end, limit, page_size, order_by))
    except Exception as exc:
        raise classify_exception(exc, "logging") from exc
    return ErrorLogCapture(records, limit, error_log_filter(service, start, end))


def stream_request_logs(client: cloud_logging.Client, project: str, service: str, start: datetime, end: datetime,
                        page_size: int = MAX_PAGE_SIZE, revision: str | None = None) -> Iterator[Any]:
    """Yield the Cloud Run request-log entries of [start, end), oldest first, one page in memory at
    a time. Library exceptions propagate as they are; wrap with :func:`classify_exception`."""
    yield from client.list_entries(
        resource_names=[f"projects/{project}"],
        filter_=request_log_filter(project, service, start, end, revision),
        order_by=cloud_logging.ASCENDING,
        page_size=min(page_size, MAX_PAGE_SIZE),
    )


def fetch_request_summary(client: cloud_logging.Client, project: str, service: str, start: datetime, end: datetime,
                          page_size: int = MAX_PAGE_SIZE, *, aggregator: RequestLogAggregator | None = None,
                          thresholds: ReadingThresholds = DEFAULT_THRESHOLDS) -> RequestLogSummary:
    """Per-revision stats, 5xx per minute and failing endpoints, aggregated while streaming.

    Pass your own ``aggregator`` to keep the partial result if this raises :class:`EvidenceError`."""
    agg = aggregator or RequestLogAggregator(start, end, thresholds)
    try:
        for entry in stream_request_logs(client, project, service, start, end, page_size):
            _add_request(agg, entry)
    except Exception as exc:
        raise classify_exception(exc, "logging") from exc
    return agg.summary()


def _add_request(aggregator: RequestLogAggregator, entry: Any) -> None:
    http = entry.http_request or {}
    aggregator.add(_labels(entry).get("revision_name") or "(unknown)", _status(http), http.get("latency"),
                   entry.timestamp, clean_optional(http.get("requestUrl")))


def fetch_judged_and_drawn(client: cloud_logging.Client, project: str, service: str, since: datetime,
                           now: datetime, drawn_since: datetime) -> tuple[RequestLogSummary, RequestLogSummary]:
    """The request stats of [since, now), which a verification judges, and of the longer [drawn_since, now), which
    its chart draws, from one stream over the longer window: no page is read twice, and the judged numbers are
    exactly those of [since, now) alone. Raises :class:`EvidenceError` (source "logging")."""
    if drawn_since >= since:
        judged = fetch_request_summary(client, project, service, since, now)
        return judged, judged
    judged_agg, drawn_agg = RequestLogAggregator(since, now), RequestLogAggregator(drawn_since, now)
    try:
        for entry in stream_request_logs(client, project, service, drawn_since, now):
            _add_request(drawn_agg, entry)
            # The filter already ends the stream at `now`. An entry without a time is counted, as a read of
            # [since, now) alone counts it.
            if entry.timestamp is None or entry.timestamp >= since:
                _add_request(judged_agg, entry)
    except Exception as exc:
        raise classify_exception(exc, "logging") from exc
    return judged_agg.summary(), drawn_agg.summary()


# -- Cloud Run ------------------------------------------------------------------------------------


def _run_retry(timeout: float) -> retries.Retry:
    # Retry only 503s, briefly, within the same overall budget as the call's timeout.
    return retries.Retry(initial=0.2, maximum=1.0, multiplier=2.0, timeout=timeout,
                         predicate=retries.if_exception_type(core_exceptions.ServiceUnavailable))


def service_config_from(service: run_v2.Service) -> dict[str, Any]:
    """A JSON-able summary of a Cloud Run Service (plus its full ``raw`` dict), its text cleaned."""
    cleaned: dict[str, Any] = _cleaned(_service_config(service))  # a dict in, a dict out
    return cleaned


def _service_config(service: run_v2.Service) -> dict[str, Any]:
    latest_ready = short_revision(service.latest_ready_revision) or None

    def target(t: Any, with_uri: bool) -> dict[str, Any]:
        item = {"type": t.type_.name, "revision": t.revision or None, "percent": int(t.percent), "tag": t.tag or None}
        if item["revision"] is None and t.type_.name.endswith("_LATEST"):
            item["revision"] = latest_ready  # LATEST targets follow the latest ready revision
        if with_uri:
            item["uri"] = t.uri or None
        return item

    container = service.template.containers[0] if service.template.containers else None
    limits = dict(container.resources.limits) if container else {}
    return {
        "name": service.name,
        "uri": service.uri or None,
        "latest_ready_revision": latest_ready,
        "latest_created_revision": short_revision(service.latest_created_revision) or None,
        "image": container.image if container else None,
        "resources": {"cpu": limits.get("cpu"), "memory": limits.get("memory")},
        "scaling": {
            "min_instance_count": int(service.template.scaling.min_instance_count),
            "max_instance_count": int(service.template.scaling.max_instance_count),
        },
        "traffic": [target(t, False) for t in service.traffic],
        "traffic_statuses": [target(t, True) for t in service.traffic_statuses],
        "raw": run_v2.Service.to_dict(service, use_integers_for_enums=False),
    }


def fetch_service_config(run_client: run_v2.ServicesClient, project: str, region: str, service: str,
                         timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """The deployment config: requested traffic, actual traffic_statuses (with tags), latest
    revisions, uri, image, cpu/memory limits and scaling. Raises :class:`EvidenceError` (source "run")."""
    name = run_client.service_path(project, region, service)
    try:
        svc = run_client.get_service(name=name, timeout=timeout, retry=_run_retry(timeout))
    except Exception as exc:
        raise classify_exception(exc, "run") from exc
    return service_config_from(svc)


# -- health ---------------------------------------------------------------------------------------


def check_health(url: str, timeout: float = 5.0) -> tuple[int | None, EvidenceError | None]:
    """``GET url`` once. A status code (any) and no error, or no status and why (source "health").
    Redirects are not followed: a /health that redirects is not healthy."""
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False)
    except Exception as exc:
        return None, classify_exception(exc, "health")
    response.close()
    return response.status_code, None


def health_url_for(service_config: Mapping[str, Any] | None) -> str | None:
    uri = (service_config or {}).get("uri")
    return uri.rstrip("/") + "/health" if uri else None


# -- the whole capture ----------------------------------------------------------------------------


@dataclass
class EvidenceBundle:
    """Everything captured for one incident window, what failed, and the derived analysis."""

    project: str
    region: str
    service: str
    window_start: datetime
    window_end: datetime
    deployed_at: datetime
    errors: ErrorLogCapture | None = None
    requests: RequestLogSummary | None = None
    requests_complete: bool = False
    service_config: dict[str, Any] | None = None
    failures: list[EvidenceError] = field(default_factory=list)
    capture_seconds: float = 0.0
    patterns: list[PatternCount] = field(default_factory=list)
    error_timeline: list[MinuteCount] = field(default_factory=list)
    onset: OnsetSummary | None = None
    onset_source: str | None = None  # "canary_5xx" | "all_5xx" | "error_logs"
    endpoints: list[EndpointCount] = field(default_factory=list)
    labels: dict[str, RevisionLabel] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Cloud Monitoring's per-revision memory / CPU p99 and peak instances; kept apart from `failures`, whose order
    # tells the three files' failures apart (view.failures_by_kind).
    utilisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    utilisation_error: EvidenceError | None = None

    @property
    def complete(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project, "region": self.region, "service": self.service,
            "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
            "deployed_at": self.deployed_at.isoformat(),
            "errors": self.errors.to_dict() if self.errors else None,
            "requests": self.requests.to_dict() if self.requests else None,
            "requests_complete": self.requests_complete,
            "service_config": self.service_config,
            "failures": [f.to_dict() for f in self.failures],
            "capture_seconds": round(self.capture_seconds, 3),
            "patterns": [{"pattern": p, "count": c, "example": e} for p, c, e in self.patterns],
            "error_timeline": [{"minute": m.isoformat(), "count": c} for m, c in self.error_timeline],
            "onset": self.onset.to_dict() if self.onset else None,
            "onset_source": self.onset_source,
            "endpoints": [{"path": p, "count": c} for p, c in self.endpoints],
            "labels": {r: vars(lab).copy() for r, lab in self.labels.items()},
            "metrics": self.metrics,
            "utilisation": self.utilisation,
            "utilisation_error": self.utilisation_error.to_dict() if self.utilisation_error else None,
        }


def collect_evidence(
    *,
    logging_client: cloud_logging.Client,
    run_client: run_v2.ServicesClient,
    project: str,
    region: str,
    service: str,
    now: datetime,
    since: datetime,
    deployed_at: datetime | None = None,
    error_limit: int = 500,
    error_page_size: int | None = None,
    request_page_size: int = MAX_PAGE_SIZE,
    run_timeout: float = DEFAULT_TIMEOUT,
    thresholds: ReadingThresholds = DEFAULT_THRESHOLDS,
    monitoring_client: monitoring_v3.MetricServiceClient | None = None,
) -> EvidenceBundle:
    """Capture error logs, the request-log metrics snapshot and the service config for
    [since, now), then analyse. Never raises for a failed capture: it is listed in ``failures``
    and the rest is kept (a request stream that broke midway is kept with ``requests_complete``
    False). With ``monitoring_client`` the snapshot gains each revision's memory and CPU utilisation and
    instance count; a failure there is ``utilisation_error``."""
    started = time.perf_counter()
    bundle = EvidenceBundle(project, region, service, since, now, deployed_at or since)

    records: list[ErrorRecord] = []
    try:
        records.extend(_iter_error_records(logging_client, project, service, since, now, error_limit,
                                           error_page_size, cloud_logging.ASCENDING))
    except Exception as exc:
        bundle.failures.append(classify_exception(exc, "logging"))
    bundle.errors = ErrorLogCapture(records, error_limit, error_log_filter(service, since, now))

    aggregator = RequestLogAggregator(since, now, thresholds)
    try:
        bundle.requests = fetch_request_summary(logging_client, project, service, since, now, request_page_size,
                                                aggregator=aggregator)
        bundle.requests_complete = True
    except EvidenceError as err:
        bundle.failures.append(err)
        bundle.requests = aggregator.summary() if aggregator.entries else None

    try:
        bundle.service_config = fetch_service_config(run_client, project, region, service, run_timeout)
    except EvidenceError as err:
        bundle.failures.append(err)

    if monitoring_client is not None:
        try:
            found = fetch_utilisation(monitoring_client, project, service, since, now)
            bundle.utilisation = {revision: usage.to_dict() for revision, usage in found.items()}
        except Exception as exc:
            bundle.utilisation_error = classify_exception(exc, "monitoring")

    _analyse(bundle)
    bundle.capture_seconds = time.perf_counter() - started
    return bundle


def _analyse(bundle: EvidenceBundle) -> None:
    records = bundle.errors.records if bundle.errors else []
    bundle.patterns = top_patterns((r.message for r in records), 10)
    bundle.error_timeline = errors_per_minute((r.timestamp for r in records if r.timestamp),
                                              bundle.window_start, bundle.window_end)
    stats = bundle.requests.revisions if bundle.requests else {}
    bundle.labels = label_revisions(bundle.service_config, stats.keys())
    bundle.metrics = metrics_by_role(stats, bundle.labels)
    for snapshot in bundle.metrics.values():
        usage = bundle.utilisation.get(snapshot.get("revision", ""))
        if usage is not None:
            snapshot.update({"memory_utilization_p99": usage["memory_p99"], "cpu_utilization_p99": usage["cpu_p99"],
                             "instance_count_max": usage["instances_max"]})
    canary = next((r for r, lab in bundle.labels.items() if lab.role == "canary"), None)
    by_rev = bundle.requests.server_errors_per_minute_by_revision if bundle.requests else {}
    if canary and canary in by_rev:
        bundle.onset, bundle.onset_source = error_onset(by_rev[canary], bundle.deployed_at), "canary_5xx"
    elif bundle.requests:
        bundle.onset = error_onset(bundle.requests.server_errors_per_minute, bundle.deployed_at)
        bundle.onset_source = "all_5xx"
    elif records:
        bundle.onset, bundle.onset_source = error_onset(bundle.error_timeline, bundle.deployed_at), "error_logs"
    if bundle.requests and bundle.requests.failing_endpoints:
        bundle.endpoints = bundle.requests.failing_endpoints[:10]
    else:
        bundle.endpoints = affected_endpoints((r.request_url for r in records if r.request_url), 10)


# -- rollback verification against live data --------------------------------------------------------


class GcpClientSource(Protocol):
    """Where the Google clients come from (``service.GcpClients`` in the app). Building one may fail, for
    instance without credentials: that is the source failing, like any failed fetch."""

    def logging(self) -> cloud_logging.Client: ...

    def run(self) -> run_v2.ServicesClient: ...

    def monitoring(self) -> monitoring_v3.MetricServiceClient: ...


@dataclass(frozen=True)
class LiveVerification:
    """The verdict and what it was based on, so the record and the message show what was measured."""

    result: VerifyResult
    failures: list[EvidenceError]
    health_url: str | None
    service_config: dict[str, Any] | None
    revisions: dict[str, RevisionStats]
    requests: RequestLogSummary | None = None  # the judged window's request logs in full
    memory: dict[str, float] | None = None  # p99 per revision; None when not read or unreadable
    # The chart's window (`chart_since` to now) in full: `requests` itself when the chart draws the judged window.
    chart_requests: RequestLogSummary | None = None


def verify_rollback_live(
    *,
    clients: GcpClientSource,
    project: str,
    region: str,
    service: str,
    now: datetime,
    since: datetime,
    error_rate_max: float,
    p95_max_ms: float,
    health_url: str | None = None,
    memory_max: float | None = None,
    chart_since: datetime | None = None,
) -> LiveVerification:
    """Fetch config, request stats of [since, now) and /health (``health_url``, else the service's own
    ``<uri>/health``), and with ``memory_max`` the p99 memory utilisation of the serving revisions from Cloud
    Monitoring, then :func:`verify_rollback`. A failed fetch is returned in ``failures`` (and makes the
    affected checks fail), never raised. With an earlier ``chart_since`` the same request-log read starts there,
    for the chart only (``chart_requests``): what is judged stays [since, now)."""
    failures: list[EvidenceError] = []
    config: dict[str, Any] | None = None
    try:
        config = fetch_service_config(clients.run(), project, region, service)
    except Exception as exc:  # EvidenceError, or the client could not be built
        failures.append(classify_exception(exc, "run"))
    revisions: dict[str, RevisionStats] = {}
    requests: RequestLogSummary | None = None
    chart_requests: RequestLogSummary | None = None
    try:
        requests, chart_requests = fetch_judged_and_drawn(clients.logging(), project, service, since, now,
                                                          chart_since or since)
        revisions = dict(requests.revisions)
    except Exception as exc:
        failures.append(classify_exception(exc, "logging"))
    status: int | None = None
    url = health_url or health_url_for(config)
    if url:
        status, health_error = check_health(url)
        if health_error:
            failures.append(health_error)
    memory: dict[str, float] | None = None
    if memory_max is not None:
        memory = _read_memory(clients, project, service, since, now, config, failures)
    result = verify_rollback(config, revisions, status, error_rate_max=error_rate_max, p95_max_ms=p95_max_ms,
                             memory_max=memory_max, memory_by_revision=memory)
    return LiveVerification(result, failures, url, config, revisions, requests, memory, chart_requests)


def _read_memory(clients: GcpClientSource, project: str, service: str, since: datetime, now: datetime,
                 config: Mapping[str, Any] | None, failures: list[EvidenceError]) -> dict[str, float] | None:
    """p99 memory of the revisions serving now (every revision of the service when the split is unknown), or None
    with the reason added to `failures`."""
    served = [item["revision"] for item in (config or {}).get("traffic_statuses") or []
              if item.get("revision") and item.get("percent")]
    try:
        return utilisation_percentile(clients.monitoring(), project, service, MEMORY, since, now,
                                      revisions=sorted(set(served)))
    except Exception as exc:  # the API refused, or the client could not be built (no credentials)
        failures.append(classify_exception(exc, "monitoring"))
        return None
