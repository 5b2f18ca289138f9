"""Cloud Run's container metrics from Cloud Monitoring: memory and CPU utilisation and the instance count, per
revision. The rollback verification holds memory against MEMORY_MAX; the metrics snapshot shows all three.

The client is google-cloud-monitoring's MetricServiceClient, which speaks gRPC only. With CLOUD_MONITORING_API_URL
(host:port, a local emulator such as sandbox/monitoring.py) it goes over a plain channel with anonymous credentials;
otherwise to Google's endpoint with Application Default Credentials (roles/monitoring.viewer). The library's
exceptions pass through as they are: bot.evidence.gcp classifies them, as it does for every Google source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import grpc
from google.api_core import exceptions as core_exceptions
from google.api_core import retry as retries
from google.auth.credentials import AnonymousCredentials
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports.grpc import MetricServiceGrpcTransport

MEMORY = "run.googleapis.com/container/memory/utilizations"
CPU = "run.googleapis.com/container/cpu/utilizations"
INSTANCES = "run.googleapis.com/container/instance_count"
REVISION_LABEL = "resource.labels.revision_name"
MIN_ALIGNMENT = timedelta(seconds=60)  # the API refuses shorter alignment periods
DEFAULT_TIMEOUT = 10.0  # seconds per call, as for the other Google sources

_Aligner = monitoring_v3.Aggregation.Aligner
_Reducer = monitoring_v3.Aggregation.Reducer
PERCENTILE_ALIGNERS = {99: _Aligner.ALIGN_PERCENTILE_99, 95: _Aligner.ALIGN_PERCENTILE_95}


def make_monitoring_client(api_url: str | None = None) -> monitoring_v3.MetricServiceClient:
    if api_url:
        transport = MetricServiceGrpcTransport(channel=grpc.insecure_channel(api_url),
                                               credentials=AnonymousCredentials())
        return monitoring_v3.MetricServiceClient(transport=transport)
    return monitoring_v3.MetricServiceClient()


def revision_filter(metric: str, service: str, revisions: Sequence[str] = ()) -> str:
    parts = [f'metric.type = "{metric}"', 'resource.type = "cloud_run_revision"',
             f'resource.labels.service_name = "{service}"']
    if len(revisions) == 1:
        parts.append(f'{REVISION_LABEL} = "{revisions[0]}"')
    elif revisions:
        quoted = ", ".join(f'"{r}"' for r in revisions)
        parts.append(f"{REVISION_LABEL} = one_of({quoted})")
    return " AND ".join(parts)


def _retry(timeout: float) -> retries.Retry:
    # Only an unavailable server is worth another try, within the call's own budget.
    return retries.Retry(initial=0.2, maximum=1.0, multiplier=2.0, timeout=timeout,
                         predicate=retries.if_exception_type(core_exceptions.ServiceUnavailable))


def _by_revision(client: monitoring_v3.MetricServiceClient, project: str, metric: str, service: str,
                 start: datetime, end: datetime, aggregation: monitoring_v3.Aggregation, revisions: Sequence[str],
                 timeout: float) -> dict[str, list[float]]:
    """Every aggregated point per revision, newest first."""
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{project}", filter=revision_filter(metric, service, revisions),
        interval=monitoring_v3.TimeInterval(start_time=start, end_time=end), aggregation=aggregation,
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
    )
    out: dict[str, list[float]] = {}
    for series in client.list_time_series(request=request, timeout=timeout, retry=_retry(timeout)):
        revision = series.resource.labels.get("revision_name", "")
        values = out.setdefault(revision, [])
        for point in series.points:
            value = point.value
            values.append(float(value.int64_value) if "int64_value" in value else value.double_value)
    return out


def _whole_window(start: datetime, end: datetime) -> timedelta:
    """One alignment period over the whole window, in whole seconds and never under the API's minimum."""
    return max(MIN_ALIGNMENT, timedelta(seconds=math.ceil((end - start).total_seconds())))


def utilisation_percentile(client: monitoring_v3.MetricServiceClient, project: str, service: str, metric: str,
                           start: datetime, end: datetime, *, percentile: int = 99, revisions: Sequence[str] = (),
                           timeout: float = DEFAULT_TIMEOUT) -> dict[str, float]:
    """The percentile of a utilisation distribution over [start, end], per revision (a fraction: 0.7 = 70 %).
    A revision without points in the window is absent."""
    aggregation = monitoring_v3.Aggregation(
        alignment_period=_whole_window(start, end), per_series_aligner=PERCENTILE_ALIGNERS[percentile],
        # A revision's containers are one series each: the worst of them stands for the revision.
        cross_series_reducer=_Reducer.REDUCE_MAX, group_by_fields=[REVISION_LABEL],
    )
    found = _by_revision(client, project, metric, service, start, end, aggregation, revisions, timeout)
    return {revision: max(values) for revision, values in found.items() if values}


def peak_instances(client: monitoring_v3.MetricServiceClient, project: str, service: str, start: datetime,
                   end: datetime, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, int]:
    """The most instances (active and idle together) any minute of [start, end] had, per revision."""
    aggregation = monitoring_v3.Aggregation(
        alignment_period=MIN_ALIGNMENT, per_series_aligner=_Aligner.ALIGN_MEAN,
        cross_series_reducer=_Reducer.REDUCE_SUM, group_by_fields=[REVISION_LABEL],
    )
    found = _by_revision(client, project, INSTANCES, service, start, end, aggregation, (), timeout)
    return {revision: round(max(values)) for revision, values in found.items() if values}


@dataclass(frozen=True)
class RevisionUtilisation:
    memory_p99: float | None
    cpu_p99: float | None
    instances_max: int | None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def fetch_utilisation(client: monitoring_v3.MetricServiceClient, project: str, service: str, start: datetime,
                      end: datetime, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, RevisionUtilisation]:
    """Memory and CPU p99 and the peak instance count of every revision seen in [start, end]."""
    memory = utilisation_percentile(client, project, service, MEMORY, start, end, timeout=timeout)
    cpu = utilisation_percentile(client, project, service, CPU, start, end, timeout=timeout)
    instances = peak_instances(client, project, service, start, end, timeout=timeout)
    return {revision: RevisionUtilisation(memory.get(revision), cpu.get(revision), instances.get(revision))
            for revision in sorted({*memory, *cpu, *instances})}
