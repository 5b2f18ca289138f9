"""A local fake of the Google Cloud APIs incident-bot uses, served over loopback.

* Cloud Logging v2 ``POST /v2/entries:list`` with a small filter evaluator (exactly the clauses
  ``bot.evidence.gcp`` sends; anything else is a 400 so a drifting filter is noticed), ordering and
  opaque page tokens.
* Cloud Run Admin v2: ``GET`` the service and its revisions, ``PATCH`` the service (an update: the traffic split
  changes, the etag with it, and a long-running operation finishes after a few polls of
  ``GET …/operations/{id}``). An update carrying a stale etag is refused (409 ABORTED, as AIP-154 has Google's
  APIs answer), and it can be told to deny permission, fail the operation or never finish it.
* ``GET /health`` so the rollback health check has a target (the Service ``uri`` is this server).
* Cloud Monitoring's ``ListTimeSeries`` over gRPC, by :class:`sandbox.monitoring.MonitoringSandbox` on its own
  port (:attr:`GcpSandbox.monitoring`), on the same scenario.

The data is a seeded :class:`CanaryScenario` shaped like the runbook's failed canary: the canary
revision answers ~9 % 5xx with avg ≈450 ms / p95 ≈850 ms / p99 ≈2100 ms, the stable one ~0.4 % and
p95 ≈150 ms. Every request is recorded, and faults (error statuses, latency) can be injected.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from sandbox.json_server import Answer, JsonServer, RecordedRequest
from sandbox.monitoring import MonitoringSandbox

REQUESTS_LOG = "run.googleapis.com%2Frequests"
STDERR_LOG = "run.googleapis.com%2Fstderr"

# Piecewise-linear inverse CDFs (quantile, latency ms). Stratified sampling through them lands the
# nearest-rank percentiles on the knots, so the fake reproduces the runbook's numbers closely.
CANARY_LATENCY_KNOTS: tuple[tuple[float, float], ...] = (
    (0.0, 100.0), (0.5, 330.0), (0.95, 850.0), (0.99, 2100.0), (1.0, 3000.0),
)
STABLE_LATENCY_KNOTS: tuple[tuple[float, float], ...] = (
    (0.0, 40.0), (0.5, 100.0), (0.95, 150.0), (0.99, 300.0), (1.0, 600.0),
)

_ENDPOINTS = ("/api/v2/chat", "/api/v2/recommendations", "/api/v2/session", "/health")
_ENDPOINT_WEIGHTS = (0.40, 0.35, 0.15, 0.10)
# 5xx land on the three API endpoints the runbook names, never on /health.
_ERROR_ENDPOINT_WEIGHTS = (0.30, 0.50, 0.20, 0.0)

_SEVERITY_RANK = {
    "DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400,
    "ERROR": 500, "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800,
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _duration_str(ms: float) -> str:
    # Cloud Logging prints protobuf Durations like "0.452161s", "1.2s" or "0s".
    text = f"{ms / 1000.0:.6f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _inverse_cdf(knots: Sequence[tuple[float, float]], u: float) -> float:
    for (q0, v0), (q1, v1) in itertools.pairwise(knots):
        if u <= q1:
            return v0 + (v1 - v0) * (u - q0) / (q1 - q0)
    return knots[-1][1]


@dataclass
class CanaryScenario:
    """Seeded log and service data for one failed canary.

    Time line: ``window_start`` (= deploy − ``pre_deploy``, stable only) → ``deployed_at`` (canary
    gets ``canary_share``; it serves like the stable one until ``onset`` after the deploy, then fails) →
    ``window_end`` (= deploy + ``duration``, the rollback moment) → ``post_end`` (``verify_window``
    later). ``request_count`` request-log entries and ``error_count`` stderr ERROR entries fall in
    [window_start, window_end). The post-rollback segment depends on ``rolled_back``: healthy
    stable-only traffic if True, the canary still misbehaving if False.
    """

    project: str = "ion-project"
    region: str = "us-central1"
    service: str = "ion-api"
    stable_revision: str = "ion-api-00041-abc"
    canary_revision: str = "ion-api-00042-xyz"
    retired_revision: str = "ion-api-00040-def"  # an older one, serving nothing: list_revisions shows it
    deployed_at: datetime = field(default_factory=lambda: datetime(2024, 5, 14, 9, 0, tzinfo=UTC))
    duration: timedelta = timedelta(minutes=30)
    onset: timedelta = timedelta(0)  # how long the canary serves well before it fails (a load- or data-bound bug)
    pre_deploy: timedelta = timedelta(minutes=5)
    canary_share: float = 0.1
    request_count: int = 5000
    error_count: int = 500
    seed: int = 42
    canary_error_rate: float = 0.09
    stable_error_rate: float = 0.004
    client_error_rate: float = 0.01
    canary_latency: tuple[tuple[float, float], ...] = CANARY_LATENCY_KNOTS
    stable_latency: tuple[tuple[float, float], ...] = STABLE_LATENCY_KNOTS
    rolled_back: bool = False
    verify_window: timedelta = timedelta(minutes=10)
    post_request_count: int = 1000
    _cache: dict[Any, list[dict[str, Any]]] = field(default_factory=dict, init=False, repr=False)

    # -- time line ---------------------------------------------------------------------------
    @property
    def window_start(self) -> datetime:
        return self.deployed_at - self.pre_deploy

    @property
    def window_end(self) -> datetime:
        return self.deployed_at + self.duration

    @property
    def post_end(self) -> datetime:
        return self.window_end + self.verify_window

    @property
    def run_host(self) -> str:
        digest = hashlib.sha256(f"{self.project}/{self.service}".encode()).hexdigest()[:10]
        return f"{self.service}-{digest}-uc.a.run.app"

    # -- data ----------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """All LogEntry JSON objects (request and stderr logs), sorted by timestamp.

        The incident window never changes; the post-rollback segment follows ``rolled_back``.
        """
        fingerprint = self._fingerprint()
        key = (self.rolled_back, fingerprint)
        cached = self._cache.get(key)
        if cached is None:
            # Keep both rollback states of the current parameters, so toggling is cheap.
            self._cache = {k: v for k, v in self._cache.items() if k[1] == fingerprint}
            incident = next(iter(self._cache.values()), None)
            base = [e for e in incident if e["timestamp"] < _rfc3339(self.window_end)] if incident else None
            cached = (base if base is not None else self._incident_entries()) + self._post_entries()
            cached.sort(key=lambda e: (e["timestamp"], e["insertId"]))
            self._cache[key] = cached
        return cached

    def _fingerprint(self) -> tuple[Any, ...]:
        return (self.project, self.region, self.service, self.stable_revision, self.canary_revision,
                self.deployed_at, self.duration, self.pre_deploy, self.canary_share, self.request_count,
                self.error_count, self.seed, self.canary_error_rate, self.stable_error_rate,
                self.client_error_rate, self.canary_latency, self.stable_latency, self.verify_window,
                self.post_request_count, self.onset)

    def _incident_entries(self) -> list[dict[str, Any]]:
        rng = random.Random(self.seed)
        ids = _Ids(f"{self.seed:x}a")
        total = self.window_end - self.window_start
        after_share = self.duration / total if total else 0.0
        n_canary = round(self.request_count * after_share * self.canary_share)
        n_stable = self.request_count - n_canary
        out: list[dict[str, Any]] = []
        out += self._requests(rng, ids, self.stable_revision, n_stable, self.window_start, self.window_end,
                              self.stable_error_rate, self.stable_latency)
        failing_from = self.deployed_at + self.onset
        if self.onset:
            # Before its onset the canary serves like the stable revision.
            n_healthy = round(n_canary * (self.onset / self.duration)) if self.duration else 0
            # No 5xx: at a tenth of the traffic the stable revision's 0.4 % is less than one in that time.
            out += self._requests(rng, ids, self.canary_revision, n_healthy, self.deployed_at, failing_from,
                                  0.0, self.stable_latency)
            n_canary -= n_healthy
        out += self._requests(rng, ids, self.canary_revision, n_canary, failing_from, self.window_end,
                              self.canary_error_rate, self.canary_latency)
        # Most application errors come from the canary and bunch up shortly after it starts failing.
        n_canary_err = round(self.error_count * 0.9)
        for _ in range(n_canary_err):
            offset = self._early_offset(rng, self.duration - self.onset)
            out.append(self._stderr(rng, ids, self.canary_revision, failing_from + offset, canary=True))
        for _ in range(self.error_count - n_canary_err):
            out.append(self._stderr(rng, ids, self.stable_revision, _uniform(rng, self.window_start, self.window_end),
                                    canary=False))
        return out

    def _post_entries(self) -> list[dict[str, Any]]:
        rng = random.Random(self.seed * 7919 + (1 if self.rolled_back else 2))
        ids = _Ids(f"{self.seed:x}{'r' if self.rolled_back else 'c'}")
        start, end = self.window_end, self.post_end
        out: list[dict[str, Any]] = []
        if self.rolled_back:
            out += self._requests(rng, ids, self.stable_revision, self.post_request_count, start, end,
                                  self.stable_error_rate, self.stable_latency)
            for _ in range(round(self.post_request_count * self.stable_error_rate)):
                out.append(self._stderr(rng, ids, self.stable_revision, _uniform(rng, start, end), canary=False))
        else:
            n_canary = round(self.post_request_count * self.canary_share)
            out += self._requests(rng, ids, self.stable_revision, self.post_request_count - n_canary, start, end,
                                  self.stable_error_rate, self.stable_latency)
            out += self._requests(rng, ids, self.canary_revision, n_canary, start, end,
                                  self.canary_error_rate, self.canary_latency)
            per_window = self.verify_window / self.duration if self.duration else 0.0
            for _ in range(round(self.error_count * per_window * 0.5)):
                out.append(self._stderr(rng, ids, self.canary_revision, _uniform(rng, start, end), canary=True))
        return out

    @staticmethod
    def _early_offset(rng: random.Random, duration: timedelta) -> timedelta:
        # First minute quiet (instances warming up), then an exponential decay from the deploy.
        span = duration.total_seconds()
        while True:
            seconds = 60.0 + rng.expovariate(4.0 / span)
            if seconds < span:
                return timedelta(seconds=seconds)

    def _resource(self, revision: str) -> dict[str, Any]:
        return {"type": "cloud_run_revision", "labels": {
            "service_name": self.service, "revision_name": revision, "location": self.region,
            "project_id": self.project, "configuration_name": self.service,
        }}

    def _requests(self, rng: random.Random, ids: _Ids, revision: str, n: int, start: datetime, end: datetime,
                  error_rate: float, knots: Sequence[tuple[float, float]]) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        errors = set(rng.sample(range(n), round(n * error_rate)))
        rest = [i for i in range(n) if i not in errors]
        client_errors = set(rng.sample(rest, min(len(rest), round(n * self.client_error_rate))))
        quantiles = [(i + rng.random()) / n for i in range(n)]
        rng.shuffle(quantiles)
        log_name = f"projects/{self.project}/logs/{REQUESTS_LOG}"
        out = []
        for i in range(n):
            if i in errors:
                status = rng.choices((500, 503, 504), (0.5, 0.3, 0.2))[0]
                path = rng.choices(_ENDPOINTS, _ERROR_ENDPOINT_WEIGHTS)[0]
                severity = "ERROR"
            elif i in client_errors:
                status = rng.choice((400, 404))
                path = rng.choices(_ENDPOINTS, _ENDPOINT_WEIGHTS)[0]
                severity = "WARNING"
            else:
                status = 200
                path = rng.choices(_ENDPOINTS, _ENDPOINT_WEIGHTS)[0]
                severity = "INFO"
            method = "POST" if path in ("/api/v2/chat", "/api/v2/session") else "GET"
            query = f"?user={rng.randint(1, 9999)}" if path != "/health" else ""
            ms = _inverse_cdf(knots, quantiles[i])
            out.append({
                "logName": log_name,
                "resource": self._resource(revision),
                "timestamp": _rfc3339(_uniform(rng, start, end)),
                "severity": severity,
                "insertId": ids.next(),
                "httpRequest": {
                    "requestMethod": method,
                    "requestUrl": f"https://{self.run_host}{path}{query}",
                    "status": status,
                    "latency": _duration_str(round(ms, 3)),
                    "userAgent": "ion-web/3.1",
                    "remoteIp": f"203.0.113.{rng.randint(1, 254)}",
                    "protocol": "HTTP/1.1",
                },
                "trace": f"projects/{self.project}/traces/{rng.getrandbits(128):032x}",
            })
        return out

    def _stderr(self, rng: random.Random, ids: _Ids, revision: str, ts: datetime, *, canary: bool) -> dict[str, Any]:
        message = _error_message(rng, canary)
        entry: dict[str, Any] = {
            "logName": f"projects/{self.project}/logs/{STDERR_LOG}",
            "resource": self._resource(revision),
            "timestamp": _rfc3339(ts),
            "severity": "ERROR",
            "insertId": ids.next(),
        }
        roll = rng.random()
        if roll < 0.3:
            entry["jsonPayload"] = {"message": message, "logger": "ion.api"}
        elif roll < 0.6:
            # Some handlers print their own timestamp first; normalisation must strip it.
            stamp = ts.strftime("%Y-%m-%d %H:%M:%S") + f",{ts.microsecond // 1000:03d}"
            entry["textPayload"] = f"{stamp} {message}"
        else:
            entry["textPayload"] = message
        return entry

    # -- Cloud Run -------------------------------------------------------------------------------
    @property
    def service_name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/services/{self.service}"

    def default_traffic(self) -> list[dict[str, Any]]:
        """The split the scenario describes: stable and canary, or everything on stable once rolled back."""
        canary_pct = 0 if self.rolled_back else round(self.canary_share * 100)
        return [
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": self.stable_revision,
             "percent": 100 - canary_pct, "tag": "stable"},
            {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": self.canary_revision,
             "percent": canary_pct, "tag": "canary"},
        ]

    def service_json(self, base_url: str, *, traffic: list[dict[str, Any]] | None = None,
                     statuses: list[dict[str, Any]] | None = None, generation: int = 42, etag: str | None = None,
                     reconciling: bool = False) -> dict[str, Any]:
        """Cloud Run Admin v2 Service resource; ``uri`` is ``base_url`` so ``uri + '/health'`` works. ``traffic``
        (what was asked for) and ``statuses`` (what serves) default to the scenario's split."""
        name = self.service_name
        traffic = [dict(t) for t in (traffic if traffic is not None else self.default_traffic())]
        served = statuses if statuses is not None else traffic
        statuses = [dict(t, uri=f"https://{t['tag']}---{self.run_host}") if t.get("tag") else dict(t) for t in served]
        for item in traffic + statuses:
            if not item.get("percent"):
                item.pop("percent", None)  # proto3 JSON omits zero values, like the real API
        return {
            "name": name,
            "uid": hashlib.md5(name.encode()).hexdigest(),
            "generation": str(generation),
            "etag": etag or _etag(generation, traffic),
            "creator": "deployer@ion-project.iam.gserviceaccount.com",
            "lastModifier": "deployer@ion-project.iam.gserviceaccount.com",
            "ingress": "INGRESS_TRAFFIC_ALL",
            "launchStage": "GA",
            "template": {
                "revision": self.canary_revision,
                "scaling": {"minInstanceCount": 1, "maxInstanceCount": 20},
                "containers": [{
                    "image": f"us-central1-docker.pkg.dev/{self.project}/ion/ion-api@sha256:{'ab' * 32}",
                    "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "cpuIdle": True},
                    "ports": [{"name": "http1", "containerPort": 8080}],
                }],
                "maxInstanceRequestConcurrency": 80,
                "timeout": "300s",
            },
            "traffic": traffic,
            "observedGeneration": str(generation if not reconciling else generation - 1),
            "latestReadyRevision": f"{name}/revisions/{self.canary_revision}",
            "latestCreatedRevision": f"{name}/revisions/{self.canary_revision}",
            "trafficStatuses": statuses,
            "uri": base_url,
            "urls": [base_url],
            "reconciling": reconciling,
        }

    def revisions_json(self) -> list[dict[str, Any]]:
        """The service's revisions, newest first, as ``revisions.list`` returns them."""
        made = ((self.canary_revision, self.deployed_at), (self.stable_revision, self.deployed_at - timedelta(days=2)),
                (self.retired_revision, self.deployed_at - timedelta(days=9)))
        return [self.revision_json(name, created) for name, created in made]

    def revision_json(self, revision: str, created: datetime) -> dict[str, Any]:
        return {
            "name": f"{self.service_name}/revisions/{revision}",
            "uid": hashlib.md5(revision.encode()).hexdigest(),
            "generation": "1",
            "createTime": _rfc3339(created),
            "service": self.service_name,
            "conditions": [{"type": "Ready", "state": "CONDITION_SUCCEEDED"}],
        }


class _Ids:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:08x}"


SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"


def _etag(generation: int, traffic: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256(json.dumps([generation, traffic], sort_keys=True).encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _uniform(rng: random.Random, start: datetime, end: datetime) -> datetime:
    span_us = int((end - start) / timedelta(microseconds=1))
    return start + timedelta(microseconds=rng.randrange(max(1, span_us)))


def _error_message(rng: random.Random, canary: bool) -> str:
    kind = rng.choices(("timeout", "db", "key", "upstream", "attr"), (0.35, 0.25, 0.2, 0.12, 0.08))[0] \
        if canary else rng.choices(("reset", "timeout"), (0.6, 0.4))[0]
    if kind == "timeout":
        return (f"TimeoutError: query on recommendations took {rng.randint(1000, 9000)}ms "
                f"(user_id={rng.randint(1000, 99999)})")
    if kind == "db":
        return 'sqlalchemy.exc.OperationalError: (psycopg.OperationalError) too many connections for role "ion"'
    if kind == "key":
        return f"KeyError: 'session_{rng.getrandbits(24):06x}'"
    if kind == "upstream":
        return (f"requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='llm-gateway.internal', port=443): "
                f"Read timed out. (read timeout={rng.choice((5, 10, 30))})")
    if kind == "attr":
        return (f"AttributeError: 'NoneType' object has no attribute 'embedding' "
                f"(request_id={rng.getrandbits(128):032x})")
    peer = f"10.8.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return f"ConnectionResetError: [Errno 104] Connection reset by peer (peer={peer})"


# -- filter evaluation -----------------------------------------------------------------------------


class FilterError(ValueError):
    """A filter clause the fake does not understand (served as 400 INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class _Meta:
    ts: datetime
    resource_type: str
    service: str
    revision: str
    log_name: str
    severity: int
    status: int | None


_CLAUSE = re.compile(r'^([A-Za-z_.]+)\s*(>=|<=|!=|=|>|<)\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))$')
_STRING_FIELDS: dict[str, Callable[[_Meta], str]] = {
    "resource.type": lambda m: m.resource_type,
    "resource.labels.service_name": lambda m: m.service,
    "resource.labels.revision_name": lambda m: m.revision,
    "logName": lambda m: m.log_name,
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}


def _split_and(text: str) -> list[str]:
    parts, buf, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if not quoted and text.startswith(" AND ", i):
            parts.append("".join(buf))
            buf, i = [], i + 5
            continue
        if not quoted and ch == "\n":  # a newline between clauses is an implicit AND
            parts.append("".join(buf))
            buf, i = [], i + 1
            continue
        buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return [p.strip() for p in parts if p.strip()]


def compile_filter(text: str) -> Callable[[_Meta], bool]:
    """Compile the AND-only subset of the Logging query language this project sends."""
    preds: list[Callable[[_Meta], bool]] = []
    for clause in _split_and(text or ""):
        match = _CLAUSE.match(clause)
        if not match:
            raise FilterError(f"unsupported filter clause: {clause!r}")
        name, op, quoted, bare = match.groups()
        value = quoted if quoted is not None else bare
        cmp = _OPS[op]
        if name in _STRING_FIELDS and op in ("=", "!="):
            getter = _STRING_FIELDS[name]
            preds.append(lambda m, g=getter, c=cmp, v=value: c(g(m), v))
        elif name == "severity":
            if value.upper() not in _SEVERITY_RANK:
                raise FilterError(f"unknown severity: {value!r}")
            rank = _SEVERITY_RANK[value.upper()]
            preds.append(lambda m, c=cmp, r=rank: c(m.severity, r))
        elif name == "timestamp":
            try:
                bound = datetime.fromisoformat(value)
            except ValueError as exc:
                raise FilterError(f"bad timestamp: {value!r}") from exc
            if bound.tzinfo is None:
                raise FilterError(f"timestamp without zone: {value!r}")
            preds.append(lambda m, c=cmp, b=bound: c(m.ts, b))
        elif name == "httpRequest.status":
            try:
                code = int(value)
            except ValueError as exc:
                raise FilterError(f"bad status: {value!r}") from exc
            preds.append(lambda m, c=cmp, s=code: m.status is not None and c(m.status, s))
        else:
            raise FilterError(f"unsupported filter clause: {clause!r}")
    return lambda m: all(p(m) for p in preds)


def _meta(entry: dict[str, Any]) -> _Meta:
    res = entry.get("resource") or {}
    labels = res.get("labels") or {}
    http = entry.get("httpRequest")
    return _Meta(
        ts=datetime.fromisoformat(entry["timestamp"]),
        resource_type=res.get("type", ""),
        service=labels.get("service_name", ""),
        revision=labels.get("revision_name", ""),
        log_name=entry.get("logName", ""),
        severity=_SEVERITY_RANK.get(entry.get("severity", "DEFAULT"), 0),
        status=int(http["status"]) if http and "status" in http else None,
    )


# -- server ----------------------------------------------------------------------------------------


@dataclass
class _Fault:
    prefix: str
    status: int
    remaining: int
    message: str
    skip: int = 0


class _Index:
    """Pre-parsed, pre-serialised entries for one scenario state; filter results are cached."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.source = entries
        self.metas = [_meta(e) for e in entries]
        self.blobs = [json.dumps(e, separators=(",", ":")).encode() for e in entries]
        self._matches: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def match(self, filter_text: str) -> list[int]:
        with self._lock:
            hit = self._matches.get(filter_text)
        if hit is None:
            pred = compile_filter(filter_text)
            hit = [i for i, m in enumerate(self.metas) if pred(m)]
            with self._lock:
                self._matches[filter_text] = hit
        return hit


UPDATE_DENIED = ("Permission 'run.services.update' denied on resource '{name}' (or resource may not exist).")
OPERATION_FAILED = "Revision '{revision}' is not ready and cannot serve traffic."


@dataclass
class _Operation:
    """A service update in flight: it finishes after `polls` more reads, unless told to fail or to hang."""

    name: str
    polls: int
    traffic: list[dict[str, Any]]
    outcome: str  # finish | fail | hang
    error: str = ""
    done: bool = False


@dataclass
class _CloudRun:
    """What updates changed: the requested split, the served split, and the generation the etag is made from."""

    traffic: list[dict[str, Any]] | None = None
    statuses: list[dict[str, Any]] | None = None
    generation: int = 42
    reconciling: bool = False
    operations: dict[str, _Operation] = field(default_factory=dict)
    deny_updates: bool = False
    operation_outcome: str = "finish"
    operation_error: str = ""
    operation_polls: int = 2


class GcpSandbox:
    """Fake Cloud Logging + Cloud Run Admin REST endpoints on 127.0.0.1 (port 0 = any free port), and Cloud
    Monitoring over gRPC beside them.

    Point ``google.cloud.logging.Client`` and ``run_v2.ServicesClient`` at :attr:`base_url`, and the monitoring
    client at ``monitoring.address``.
    """

    def __init__(self, scenario: CanaryScenario | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.scenario = scenario or CanaryScenario()
        self.health_status = 200
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._latency: list[tuple[str, float]] = []
        self._indexes: list[_Index] = []
        self._run = _CloudRun()
        self.monitoring = MonitoringSandbox(self.scenario, host=host)
        self._server = JsonServer(self._respond, host=host, port=port, name="gcp-sandbox")
        self._index()  # build now so the first request is not slower than the rest

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def close(self) -> None:
        self._server.close()
        self.monitoring.close()

    def __enter__(self) -> GcpSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection and fault injection -------------------------------------------------------
    def requests(self, path_prefix: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.path.startswith(path_prefix)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
        self.monitoring.clear_requests()

    def fail(self, path_prefix: str, status: int = 500, times: int = 1, message: str | None = None,
             *, after: int = 0) -> None:
        """Answer ``times`` requests under ``path_prefix`` with a Google error JSON, after letting
        ``after`` of them through (to break a paged stream midway)."""
        with self._lock:
            self._faults.append(_Fault(path_prefix, status, times, message or f"injected {status}", after))

    def set_latency(self, seconds: float, path_prefix: str = "") -> None:
        with self._lock:
            self._latency = [(p, s) for p, s in self._latency if p != path_prefix]
            if seconds > 0:
                self._latency.append((path_prefix, seconds))

    def reset_faults(self) -> None:
        """Every fault off, and the service as the scenario describes it (no update applied)."""
        with self._lock:
            self._faults.clear()
            self._latency.clear()
            self._run = _CloudRun()
        self.health_status = 200
        self.monitoring.reset()

    # -- Cloud Run updates ------------------------------------------------------------------------
    def deny_updates(self, value: bool = True) -> None:
        """The caller lacks run.services.update (no roles/run.developer): updates get 403 PERMISSION_DENIED."""
        with self._lock:
            self._run.deny_updates = value

    def operations_end(self, outcome: str, *, error: str = "", polls: int | None = None) -> None:
        """How the next updates' operations end: "finish", "fail" (with `error`) or "hang" (never done)."""
        if outcome not in ("finish", "fail", "hang"):
            raise ValueError(outcome)
        with self._lock:
            self._run.operation_outcome, self._run.operation_error = outcome, error
            if polls is not None:
                self._run.operation_polls = polls

    def change_service(self, traffic: list[dict[str, Any]]) -> None:
        """Someone else changes the split now (the console, a deploy): a new generation and etag, served at once."""
        with self._lock:
            self._run.traffic = self._run.statuses = [dict(t) for t in traffic]
            self._run.generation += 1
            self._run.reconciling = False

    def service(self) -> dict[str, Any]:
        """The Service resource as the API returns it now."""
        with self._lock:
            run = self._run
            return self.scenario.service_json(self.base_url, traffic=run.traffic, statuses=run.statuses,
                                              generation=run.generation, reconciling=run.reconciling)

    def updates(self) -> list[RecordedRequest]:
        """Every PATCH of the service that reached the sandbox, accepted or not."""
        return [r for r in self.requests("/v2/projects/") if r.method == "PATCH"]

    def set_rolled_back(self, value: bool = True) -> None:
        self.scenario.rolled_back = value

    # -- request handling ------------------------------------------------------------------------
    def _index(self) -> _Index:
        entries = self.scenario.entries()
        with self._lock:
            index = next((i for i in self._indexes if i.source is entries), None)
        if index is None:  # scenario changed (e.g. rolled_back): index it, keep the last two
            index = _Index(entries)
            with self._lock:
                self._indexes = [index, *self._indexes[:1]]
        return index

    def _respond(self, method: str, raw_path: str, raw: bytes, _headers: Message) -> Answer:
        status, body = self._handle(method, raw_path, raw)
        return status, body, {}

    def _handle(self, method: str, raw_path: str, raw: bytes) -> tuple[int, bytes]:
        path, _, query = raw_path.partition("?")
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            delay = max((s for p, s in self._latency if path.startswith(p)), default=0.0)
            fault = next((f for f in self._faults if f.remaining > 0 and path.startswith(f.prefix)), None)
            if fault and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault:
                fault.remaining -= 1
        if delay:
            time.sleep(delay)
        if fault:
            status, payload = fault.status, _error(fault.status, fault.message)
        elif body is None and raw:
            status, payload = 400, _error(400, "request body is not JSON")
        else:
            status, payload = self._route(method, path, body, query)
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, body, status, time=time.time()))
        return status, payload

    def _route(self, method: str, path: str, body: Any, query: str = "") -> tuple[int, bytes]:
        if path == "/health" and method == "GET":
            ok = 200 <= self.health_status < 300
            return self.health_status, json.dumps({"status": "ok" if ok else "unhealthy"}).encode()
        if path == "/v2/entries:list" and method == "POST":
            return self._list_entries(body or {})
        sc = self.scenario
        match = re.fullmatch(r"/v2/projects/([^/]+)/locations/([^/]+)/services/([^/]+)(/revisions(?:/([^/]+))?)?",
                             path)
        if match and method in ("GET", "PATCH"):
            if match.groups()[:3] != (sc.project, sc.region, sc.service):
                return 404, _error(404, f"Resource '{match.group(3)}' of kind 'SERVICE' in region "
                                        f"'{match.group(2)}' in project '{match.group(1)}' does not exist.")
            if method == "PATCH" and not match.group(4):
                return self._update_service(body or {}, query)
            if method == "GET" and match.group(5):
                found = [r for r in sc.revisions_json() if r["name"].endswith(f"/revisions/{match.group(5)}")]
                if not found:
                    return 404, _error(404, f"Resource '{match.group(5)}' of kind 'REVISION' in region "
                                            f"'{sc.region}' in project '{sc.project}' does not exist.")
                return 200, json.dumps(found[0]).encode()
            if method == "GET" and match.group(4):
                return 200, json.dumps({"revisions": sc.revisions_json()}).encode()
            if method == "GET":
                return 200, json.dumps(self.service()).encode()
        match = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/operations/[^/]+)", path)
        if match and method == "GET":
            return self._poll_operation(match.group(1))
        return 404, _error(404, f"no route for {method} {path}")

    def _update_service(self, body: dict[str, Any], query: str) -> tuple[int, bytes]:
        """PATCH …/services/{s}: only the traffic split is applied (what `updateMask=traffic` asks for)."""
        sc = self.scenario
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        mask = {p for p in params.get("updateMask", "").split(",") if p}
        with self._lock:
            run = self._run
            if run.deny_updates:
                return 403, _error(403, UPDATE_DENIED.format(name=sc.service_name))
            current = sc.service_json(self.base_url, traffic=run.traffic, statuses=run.statuses,
                                      generation=run.generation, reconciling=run.reconciling)
            if body.get("etag") and body["etag"] != current["etag"]:
                return 409, _error(409, f"Resource '{sc.service}' has been modified: the etag in the request does "
                                        f"not match the current etag '{current['etag']}'. Read it again and retry.")
            if mask - {"traffic"}:
                return 400, _error(400, f"the sandbox applies traffic updates only, not {sorted(mask)}")
            traffic = body.get("traffic") or []
            known = {r["name"].rsplit("/", 1)[1] for r in sc.revisions_json()}
            unknown = [t.get("revision") for t in traffic if t.get("revision") and t["revision"] not in known]
            if unknown:
                return 404, _error(404, f"Revision named '{unknown[0]}' not found.")
            if sum(int(t.get("percent") or 0) for t in traffic) != 100:
                return 400, _error(400, "Traffic percentages must add up to 100.")
            run.traffic = [dict(t, type=t.get("type") or "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION")
                           for t in traffic]
            run.statuses = run.statuses if run.statuses is not None else sc.default_traffic()
            run.generation += 1
            run.reconciling = True
            name = f"projects/{sc.project}/locations/{sc.region}/operations/{uuid.uuid4()}"
            target = next((t["revision"] for t in traffic if int(t.get("percent") or 0) == 100), "")
            error = run.operation_error or OPERATION_FAILED.format(revision=target)
            run.operations[name] = _Operation(name, run.operation_polls, run.traffic, run.operation_outcome, error)
            service = sc.service_json(self.base_url, traffic=run.traffic, statuses=run.statuses,
                                      generation=run.generation, reconciling=True)
        return 200, json.dumps({"name": name, "metadata": {"@type": SERVICE_TYPE, **service}}).encode()

    def _poll_operation(self, name: str) -> tuple[int, bytes]:
        sc = self.scenario
        with self._lock:
            run = self._run
            operation = run.operations.get(name)
            if operation is None:
                return 404, _error(404, f"Operation '{name}' not found.")
            if not operation.done and operation.outcome != "hang":
                operation.polls -= 1
                if operation.polls <= 0:
                    operation.done = True
                    if operation.outcome == "finish":
                        run.statuses = [dict(t) for t in operation.traffic]
                    else:
                        run.traffic = run.statuses  # the update did not take: what serves stays what is asked
                    run.reconciling = False
                    if operation.outcome == "finish" and any(
                            t.get("revision") == sc.stable_revision and int(t.get("percent") or 0) == 100
                            for t in operation.traffic):
                        sc.rolled_back = True  # the request logs from here on are the stable revision's
            service = sc.service_json(self.base_url, traffic=run.traffic, statuses=run.statuses,
                                      generation=run.generation, reconciling=run.reconciling)
            answer: dict[str, Any] = {"name": name, "metadata": {"@type": SERVICE_TYPE, **service},
                                      "done": operation.done}
            if operation.done and operation.outcome == "finish":
                answer["response"] = {"@type": SERVICE_TYPE, **service}
            elif operation.done:
                answer["error"] = {"code": 9, "message": operation.error}  # FAILED_PRECONDITION
        return 200, json.dumps(answer).encode()

    def _list_entries(self, body: dict[str, Any]) -> tuple[int, bytes]:
        page_size = int(body.get("pageSize") or 50)
        if page_size < 0 or page_size > 1000:
            return 400, _error(400, "pageSize must be between 0 and 1000")
        order = (body.get("orderBy") or "timestamp asc").strip().lower()
        if order not in ("timestamp asc", "timestamp desc"):
            return 400, _error(400, f"unsupported orderBy: {order!r}")
        filter_text = body.get("filter") or ""
        index = self._index()
        try:
            hits = index.match(filter_text)
        except FilterError as exc:
            return 400, _error(400, str(exc))
        if f"projects/{self.scenario.project}" not in (body.get("resourceNames") or []):
            hits = []
        if order == "timestamp desc":
            hits = hits[::-1]
        state = hashlib.sha256(f"{filter_text}|{order}".encode()).hexdigest()[:12]
        offset = 0
        if token := body.get("pageToken"):
            try:
                tok_state, tok_offset = base64.urlsafe_b64decode(token.encode()).decode().split(":")
                offset = int(tok_offset)
            except ValueError:
                return 400, _error(400, "invalid page token")
            if tok_state != state:
                return 400, _error(400, "page token does not match the request")
        page = hits[offset:offset + page_size]
        parts = [b'{"entries":[', b",".join(index.blobs[i] for i in page), b"]"]
        if offset + page_size < len(hits):
            token = base64.urlsafe_b64encode(f"{state}:{offset + page_size}".encode()).decode()
            parts.append(f',"nextPageToken":"{token}"'.encode())
        parts.append(b"}")
        return 200, b"".join(parts)


def _error(status: int, message: str) -> bytes:
    return json.dumps({"error": {
        "code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }}).encode()
