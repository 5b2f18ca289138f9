"""A local fake of Cloud Monitoring's `ListTimeSeries`, served over loopback gRPC to the real
``google-cloud-monitoring`` client (``MetricServiceGrpcTransport`` on ``grpc.insecure_channel``).

It holds the three Cloud Run metrics incident-bot reads, per revision of a :class:`sandbox.gcp.CanaryScenario`,
one point a minute like Cloud Run writes them:

* ``run.googleapis.com/container/memory/utilizations`` and ``…/cpu/utilizations``: DELTA, DISTRIBUTION, one
  sample per container instance (a fraction, 1.0 = 100 %);
* ``run.googleapis.com/container/instance_count``: GAUGE, INT64, by metric label ``state`` (active, idle).

What it answers follows the API's documented behaviour for what the bot sends, and refuses the rest, so a drifting
request is noticed: a filter of AND-ed clauses on ``metric.type`` (exactly one), ``resource.type``,
``resource.labels.service_name``, ``resource.labels.revision_name`` (a value or ``one_of(…)``) and
``metric.labels.state``; the interval (points whose end time is in (start, end]); an aggregation with an
``alignment_period`` of at least 60 s and one of ALIGN_PERCENTILE_99/95/50, ALIGN_MEAN, ALIGN_MAX, ALIGN_SUM,
then REDUCE_NONE/SUM/MAX/MEAN over ``group_by_fields``; points newest first. An aligner that does not fit the
metric's kind and type is INVALID_ARGUMENT, another project PERMISSION_DENIED, no data an empty answer.
One simplification: a percentile is taken over the raw samples (linear interpolation), where Google interpolates
within the distribution's buckets.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
from google.api import distribution_pb2, metric_pb2, monitored_resource_pb2
from google.cloud import monitoring_v3

if TYPE_CHECKING:
    from sandbox.gcp import CanaryScenario

SERVICE_NAME = "google.monitoring.v3.MetricService"
MEMORY = "run.googleapis.com/container/memory/utilizations"
CPU = "run.googleapis.com/container/cpu/utilizations"
INSTANCES = "run.googleapis.com/container/instance_count"
DISTRIBUTION_METRICS = (MEMORY, CPU)
STATES = ("active", "idle")
# How long before the deploy and after the verification window revisions keep writing points.
DATA_MARGIN = timedelta(hours=2)
PERMISSION_DENIED_MESSAGE = "Permission monitoring.timeSeries.list denied (or the resource may not exist)."

_Aligner = monitoring_v3.Aggregation.Aligner
_Reducer = monitoring_v3.Aggregation.Reducer
_PERCENTILES = {_Aligner.ALIGN_PERCENTILE_99: 0.99, _Aligner.ALIGN_PERCENTILE_95: 0.95,
                _Aligner.ALIGN_PERCENTILE_50: 0.50}
_NUMERIC_ALIGNERS = (_Aligner.ALIGN_MEAN, _Aligner.ALIGN_MAX, _Aligner.ALIGN_SUM)
_REDUCERS: dict[int, Callable[[list[float]], float]] = {
    _Reducer.REDUCE_SUM: sum, _Reducer.REDUCE_MAX: max, _Reducer.REDUCE_MEAN: lambda v: sum(v) / len(v),
}
_BUCKET_BOUNDS = [round(i / 100, 2) for i in range(1, 101)]  # 1 % buckets up to 100 %


@dataclass(frozen=True)
class Usage:
    """One revision's level: utilisation samples are `mean ± spread` (uniform), per instance and minute."""

    memory: float
    memory_spread: float
    cpu: float
    cpu_spread: float
    active: int
    idle: int


STABLE_USAGE = Usage(memory=0.40, memory_spread=0.06, cpu=0.25, cpu_spread=0.10, active=3, idle=1)
# The failed canary: busier, and closer to the memory line (p99 ≈ 66 %, under the guide's 70 %).
CANARY_USAGE = Usage(memory=0.58, memory_spread=0.08, cpu=0.55, cpu_spread=0.20, active=1, idle=1)


def percentile(samples: Iterable[float], q: float) -> float:
    """Linear interpolation between closest ranks (what numpy calls "linear")."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class _Series:
    metric: str
    revision: str
    state: str | None  # instance_count only


@dataclass(frozen=True)
class _Point:
    end: datetime
    samples: tuple[float, ...] = ()  # distribution metrics
    count: int = 0  # instance_count


class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Fault:
    code: grpc.StatusCode
    message: str
    remaining: int


_CLAUSE = re.compile(r'^\s*([a-z_.]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|one_of\(((?:\s*"[^"]*"\s*,?)+)\))\s*$')
_FILTER_KEYS = {"metric.type": "metric", "resource.type": "resource_type",
                "resource.labels.service_name": "service", "resource.label.service_name": "service",
                "resource.labels.revision_name": "revision", "resource.label.revision_name": "revision",
                "metric.labels.state": "state", "metric.label.state": "state"}


class _Filter:
    """The AND-only subset of the monitoring filter language the bot sends."""

    def __init__(self, text: str) -> None:
        self.allowed: dict[str, set[str]] = {}
        for clause in re.split(r"\s+AND\s+", text.strip()):
            match = _CLAUSE.match(clause)
            if not match or match.group(1) not in _FILTER_KEYS:
                raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse filter clause: {clause!r}")
            key = _FILTER_KEYS[match.group(1)]
            values = {match.group(2)} if match.group(2) is not None else set(re.findall(r'"([^"]*)"', match.group(3)))
            if key in self.allowed:
                raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{match.group(1)} is given twice")
            self.allowed[key] = values
        metric = self.allowed.get("metric", set())
        if len(metric) != 1:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "The filter must specify exactly one metric.type")
        self.metric = next(iter(metric))

    def admits(self, series: _Series, service: str) -> bool:
        checks = {"resource_type": "cloud_run_revision", "service": service, "revision": series.revision,
                  "state": series.state}
        return all(checks[key] in values for key, values in self.allowed.items() if key != "metric")


class MonitoringSandbox:
    """The fake MetricService on 127.0.0.1 (port 0 = any free port); point the client at :attr:`address`."""

    def __init__(self, scenario: CanaryScenario, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.scenario = scenario
        self._lock = threading.Lock()
        self._requests: list[monitoring_v3.ListTimeSeriesRequest] = []
        self._faults: list[_Fault] = []
        self._usage: dict[str, Usage] = {}
        self.no_data = False
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="monitoring-sandbox"))
        handler = grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self._list_time_series,
                request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
            ),
        })
        self._server.add_generic_rpc_handlers((handler,))
        self._port = self._server.add_insecure_port(f"{host}:{port}")
        self._host = host
        self._server.start()

    @property
    def address(self) -> str:
        """What CLOUD_MONITORING_API_URL takes: host:port."""
        return f"{self._host}:{self._port}"

    def close(self) -> None:
        self._server.stop(grace=None).wait(5)

    def __enter__(self) -> MonitoringSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection and knobs -------------------------------------------------------------------
    def requests(self) -> list[monitoring_v3.ListTimeSeriesRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def deny(self, times: int = 1_000_000) -> None:
        """The caller lacks monitoring.timeSeries.list (no roles/monitoring.viewer)."""
        self.fail(grpc.StatusCode.PERMISSION_DENIED, PERMISSION_DENIED_MESSAGE, times)

    def fail(self, code: grpc.StatusCode, message: str, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(code, message, times))

    def set_usage(self, revision: str, **changes: float) -> None:
        """Changes a revision's level, e.g. ``set_usage(rev, memory=0.85)``."""
        base = self.usage(revision)
        with self._lock:
            self._usage[revision] = Usage(**{**vars(base), **changes})

    def usage(self, revision: str) -> Usage:
        with self._lock:
            found = self._usage.get(revision)
        if found is not None:
            return found
        return CANARY_USAGE if revision == self.scenario.canary_revision else STABLE_USAGE

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._usage.clear()
        self.no_data = False

    # -- the data -------------------------------------------------------------------------------
    def has_instances(self, revision: str, minute_end: datetime) -> bool:
        """The stable revision runs throughout; the canary from its deploy until the rollback takes it to 0 %."""
        sc = self.scenario
        if not sc.window_start - DATA_MARGIN < minute_end <= sc.post_end + DATA_MARGIN:
            return False
        if revision == sc.canary_revision:
            return minute_end > sc.deployed_at and (minute_end <= sc.window_end or not sc.rolled_back)
        return revision == sc.stable_revision

    def samples(self, metric: str, revision: str, minute_end: datetime) -> tuple[float, ...]:
        """One utilisation sample per instance for the minute ending at `minute_end` (what tests recompute)."""
        usage = self.usage(revision)
        mean, spread = (usage.memory, usage.memory_spread) if metric == MEMORY else (usage.cpu, usage.cpu_spread)
        seed = hashlib.sha256(f"{self.scenario.seed}|{metric}|{revision}|{minute_end.isoformat()}".encode()).digest()
        rng = random.Random(seed)
        return tuple(min(1.0, max(0.0, mean + spread * rng.uniform(-1.0, 1.0)))
                     for _ in range(usage.active + usage.idle))

    def _series(self) -> list[_Series]:
        revisions = (self.scenario.stable_revision, self.scenario.canary_revision)
        out = [_Series(metric, revision, None) for metric in DISTRIBUTION_METRICS for revision in revisions]
        out += [_Series(INSTANCES, revision, state) for revision in revisions for state in STATES]
        return out

    def _points(self, series: _Series, start: datetime, end: datetime) -> list[_Point]:
        # Points end on whole minutes; an interval takes those whose end time is in (start, end].
        minute = end.replace(second=0, microsecond=0)
        out = []
        while minute > start:
            if self.has_instances(series.revision, minute):
                if series.metric == INSTANCES:
                    usage = self.usage(series.revision)
                    out.append(_Point(minute, count=usage.active if series.state == "active" else usage.idle))
                else:
                    out.append(_Point(minute, samples=self.samples(series.metric, series.revision, minute)))
            minute -= timedelta(minutes=1)
        return out

    # -- the RPC --------------------------------------------------------------------------------
    def _list_time_series(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext
                          ) -> monitoring_v3.ListTimeSeriesResponse:
        with self._lock:
            self._requests.append(request)
            fault = next((f for f in self._faults if f.remaining > 0), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            context.abort(fault.code, fault.message)
        try:
            return self._answer(request)
        except _Refusal as refusal:
            context.abort(refusal.code, refusal.message)
            raise  # abort raises; this line is for type checkers

    def _answer(self, request: monitoring_v3.ListTimeSeriesRequest) -> monitoring_v3.ListTimeSeriesResponse:
        sc = self.scenario
        if request.name != f"projects/{sc.project}":
            raise _Refusal(grpc.StatusCode.PERMISSION_DENIED, PERMISSION_DENIED_MESSAGE)
        query = _Filter(request.filter)
        known = {s.metric for s in self._series()}
        if query.metric not in known:
            raise _Refusal(grpc.StatusCode.NOT_FOUND, f"Cannot find metric(s) that match type = \"{query.metric}\".")
        interval = request.interval
        if "end_time" not in interval:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "The interval's end time is required")
        end = _aware(interval.end_time)
        start = _aware(interval.start_time) if "start_time" in interval else end
        if start > end:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "The interval's start time is after its end time")
        chosen = [s for s in self._series() if s.metric == query.metric and query.admits(s, sc.service)]
        if self.no_data:
            chosen = []
        data = {s: self._points(s, start, end) for s in chosen}
        data = {s: p for s, p in data.items() if p}
        aggregation = request.aggregation
        headers = request.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
        if aggregation.per_series_aligner == _Aligner.ALIGN_NONE:
            if aggregation.cross_series_reducer != _Reducer.REDUCE_NONE:
                raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT,
                               "A cross-series reducer needs a per-series aligner other than ALIGN_NONE")
            return _response([self._raw(s, points, headers) for s, points in data.items()])
        return _response(self._aggregated(query.metric, data, aggregation, start, end, headers))

    def _raw(self, series: _Series, points: list[_Point], headers: bool) -> monitoring_v3.TimeSeries:
        out = _time_series(series.metric, _labels(series))
        if not headers:
            out.points = [_point(p.end, _raw_value(series.metric, p)) for p in points]
        return out

    def _aggregated(self, metric: str, data: dict[_Series, list[_Point]], aggregation: monitoring_v3.Aggregation,
                    start: datetime, end: datetime, headers: bool) -> list[monitoring_v3.TimeSeries]:
        aligner = aggregation.per_series_aligner
        period = aggregation.alignment_period.total_seconds() if "alignment_period" in aggregation else 0
        if period < 60:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "The alignment period must be at least 60 seconds")
        distribution = metric in DISTRIBUTION_METRICS
        fits = aligner in _PERCENTILES if distribution else aligner in _NUMERIC_ALIGNERS
        if not fits:
            kind, value_type = ("DELTA", "DISTRIBUTION") if distribution else ("GAUGE", "INT64")
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"The aligner {aligner.name} cannot be applied to "
                                                             f"metrics with kind {kind} and value type {value_type}.")
        # Periods end at the interval's end time and go back until they cover its start.
        step = timedelta(seconds=period)
        ends = [end - step * k for k in range(max(1, math.ceil((end - start) / step)))]
        aligned: dict[_Series, dict[datetime, float]] = {}
        for series, points in data.items():
            values: dict[datetime, float] = {}
            for period_end in ends:
                inside = [p for p in points if period_end - step < p.end <= period_end]
                if inside:
                    values[period_end] = _align(aligner, inside)
            aligned[series] = values
        reducer = aggregation.cross_series_reducer
        double = aligner in _PERCENTILES or aligner == _Aligner.ALIGN_MEAN
        if reducer == _Reducer.REDUCE_NONE:
            return [self._series_out(metric, _labels(s), values, double, headers) for s, values in aligned.items()]
        reduce = _REDUCERS.get(reducer)
        if reduce is None:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"The reducer {reducer.name} is not supported here")
        groups: dict[tuple[tuple[str, str], ...], list[dict[datetime, float]]] = {}
        for series, values in aligned.items():
            key = tuple((name, value) for name, value in _grouped(series, aggregation.group_by_fields))
            groups.setdefault(key, []).append(values)
        out = []
        for key, members in groups.items():
            ends_seen = sorted({t for values in members for t in values}, reverse=True)
            reduced = {t: reduce([values[t] for values in members if t in values]) for t in ends_seen}
            out.append(self._series_out(metric, dict(key), reduced, double or reducer == _Reducer.REDUCE_MEAN,
                                        headers))
        return out

    @staticmethod
    def _series_out(metric: str, labels: dict[str, str], values: dict[datetime, float], double: bool,
                    headers: bool) -> monitoring_v3.TimeSeries:
        out = _time_series(metric, labels, aligned_double=double)
        if not headers:
            out.points = [_point(t, monitoring_v3.TypedValue(double_value=v) if double
                                 else monitoring_v3.TypedValue(int64_value=round(v)))
                          for t, v in sorted(values.items(), reverse=True)]
        return out


# -- building the answer ---------------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _align(aligner: int, points: list[_Point]) -> float:
    if aligner in _PERCENTILES:
        return percentile((s for p in points for s in p.samples), _PERCENTILES[aligner])
    counts = [float(p.count) for p in points]
    if aligner == _Aligner.ALIGN_MEAN:
        return sum(counts) / len(counts)
    return max(counts) if aligner == _Aligner.ALIGN_MAX else sum(counts)


def _labels(series: _Series) -> dict[str, str]:
    labels = {"resource.revision_name": series.revision}
    if series.state is not None:
        labels["metric.state"] = series.state
    return labels


def _grouped(series: _Series, fields: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for name in fields:
        if name in ("resource.labels.revision_name", "resource.label.revision_name"):
            out.append(("resource.revision_name", series.revision))
        elif name in ("metric.labels.state", "metric.label.state") and series.state is not None:
            out.append(("metric.state", series.state))
        elif name not in ("resource.labels.service_name", "resource.label.service_name"):
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"Cannot group by {name!r}")
    return out


def _time_series(metric: str, labels: dict[str, str], *, aligned_double: bool = False) -> monitoring_v3.TimeSeries:
    resource_labels = {k.removeprefix("resource."): v for k, v in labels.items() if k.startswith("resource.")}
    metric_labels = {k.removeprefix("metric."): v for k, v in labels.items() if k.startswith("metric.")}
    kind = metric_pb2.MetricDescriptor.MetricKind
    value_type = metric_pb2.MetricDescriptor.ValueType
    distribution = metric in DISTRIBUTION_METRICS
    return monitoring_v3.TimeSeries(
        metric=metric_pb2.Metric(type=metric, labels=metric_labels),
        resource=monitored_resource_pb2.MonitoredResource(type="cloud_run_revision", labels=resource_labels),
        metric_kind=kind.GAUGE if aligned_double or not distribution else kind.DELTA,
        value_type=value_type.DOUBLE if aligned_double else (
            value_type.DISTRIBUTION if distribution else value_type.INT64),
        unit="10^2.%" if distribution else "1",
    )


def _raw_value(metric: str, point: _Point) -> monitoring_v3.TypedValue:
    if metric not in DISTRIBUTION_METRICS:
        return monitoring_v3.TypedValue(int64_value=point.count)
    samples = point.samples
    mean = sum(samples) / len(samples)
    counts = [0] * (len(_BUCKET_BOUNDS) + 1)
    for sample in samples:
        counts[next((i for i, bound in enumerate(_BUCKET_BOUNDS) if sample < bound), len(_BUCKET_BOUNDS))] += 1
    return monitoring_v3.TypedValue(distribution_value=distribution_pb2.Distribution(
        count=len(samples), mean=mean, sum_of_squared_deviation=sum((s - mean) ** 2 for s in samples),
        bucket_options=distribution_pb2.Distribution.BucketOptions(
            explicit_buckets=distribution_pb2.Distribution.BucketOptions.Explicit(bounds=_BUCKET_BOUNDS)),
        bucket_counts=counts,
    ))


def _point(end: datetime, value: monitoring_v3.TypedValue) -> monitoring_v3.Point:
    return monitoring_v3.Point(interval=monitoring_v3.TimeInterval(end_time=end), value=value)


def _response(series: list[monitoring_v3.TimeSeries]) -> monitoring_v3.ListTimeSeriesResponse:
    return monitoring_v3.ListTimeSeriesResponse(time_series=series)


__all__ = ["CANARY_USAGE", "CPU", "INSTANCES", "MEMORY", "STABLE_USAGE", "MonitoringSandbox", "Usage", "percentile"]
