"""Benchmark: evidence capture through the real Google clients from the local GCP sandbox.

    .venv/bin/python bench/evidence.py

For 5,000 and 20,000 request-log entries (plus 500 error entries each) it prints the capture time,
entries/s, pages fetched and the peak traced memory of the capture, and, measured in the same run, a
baseline: the raw time to page through the same entries with the same client and no analysis.
The sandbox runs in a child process, so neither its CPU nor its allocations are counted here.
Target: the whole 5,000 + 500 capture under 1 s; peak memory flat across data sizes.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.evidence.gcp import (
    collect_evidence,
    error_log_filter,
    make_logging_client,
    make_run_client,
    request_log_filter,
)
from sandbox.gcp import CanaryScenario, GcpSandbox

SIZES = (5_000, 20_000)
ERRORS = 500
PAGE_SIZE = 1000
REPEATS = 3


def _serve(conn: Connection, request_count: int) -> None:
    scenario = CanaryScenario(request_count=request_count, error_count=ERRORS, seed=11)
    with GcpSandbox(scenario) as sandbox:
        conn.send(sandbox.base_url)
        while True:
            command = conn.recv()
            if command == "pages":
                conn.send(len(sandbox.requests("/v2/entries:list")))
            elif command == "clear":
                sandbox.clear_requests()
                conn.send(None)
            else:
                break


def _ask(conn: Connection, command: str) -> Any:
    conn.send(command)
    return conn.recv()


def _baseline(client: Any, sc: CanaryScenario) -> int:
    """Page through the same data with the client and do nothing else."""
    n = 0
    for n, _ in enumerate(client.list_entries(resource_names=[f"projects/{sc.project}"],
                                              filter_=error_log_filter(sc.service, sc.window_start, sc.window_end),
                                              page_size=ERRORS), start=1):
        if n >= ERRORS:
            break
    for _ in client.list_entries(resource_names=[f"projects/{sc.project}"],
                                 filter_=request_log_filter(sc.project, sc.service, sc.window_start, sc.window_end),
                                 page_size=PAGE_SIZE):
        n += 1
    return n


def _capture(log_client: Any, run_client: Any, sc: CanaryScenario) -> Any:
    return collect_evidence(logging_client=log_client, run_client=run_client, project=sc.project, region=sc.region,
                            service=sc.service, now=sc.window_end, since=sc.window_start, deployed_at=sc.deployed_at,
                            error_limit=ERRORS, request_page_size=PAGE_SIZE)


def bench(request_count: int) -> dict[str, Any]:
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(child, request_count), daemon=True)
    proc.start()
    try:
        base_url = parent.recv()
        sc = CanaryScenario(request_count=request_count, error_count=ERRORS, seed=11)
        log_client = make_logging_client(sc.project, base_url)
        run_client = make_run_client(base_url)
        _capture(log_client, run_client, sc)  # warm-up: connections, imports, server-side filter cache

        baseline, capture = [], []
        for _ in range(REPEATS):
            started = time.perf_counter()
            entries = _baseline(log_client, sc)
            baseline.append(time.perf_counter() - started)
            _ask(parent, "clear")
            started = time.perf_counter()
            bundle = _capture(log_client, run_client, sc)
            capture.append(time.perf_counter() - started)
            pages = _ask(parent, "pages")
        assert bundle.complete, bundle.failures
        assert bundle.requests.entries == request_count and len(bundle.errors.records) == ERRORS

        tracemalloc.start()
        tracemalloc.reset_peak()
        traced_start = tracemalloc.get_traced_memory()[0]
        _capture(log_client, run_client, sc)
        peak = tracemalloc.get_traced_memory()[1] - traced_start
        tracemalloc.stop()
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    best_capture, best_baseline = min(capture), min(baseline)
    return {
        "request_entries": request_count,
        "error_entries": ERRORS,
        "entries": entries,
        "capture_s": best_capture,
        "capture_median_s": statistics.median(capture),
        "baseline_s": best_baseline,
        "ratio": best_capture / best_baseline,
        "entries_per_s": entries / best_capture,
        "pages": pages,
        "peak_kib": peak / 1024,
        "canary": bundle.metrics.get("canary", {}),
    }


def main() -> int:
    rows = [bench(n) for n in SIZES]
    print(f"evidence capture via real clients from the sandbox (page size {PAGE_SIZE}, best of {REPEATS})")
    print(f"{'requests':>9} {'errors':>6} {'capture s':>9} {'median s':>8} {'baseline s':>10} {'ratio':>5} "
          f"{'entries/s':>9} {'pages':>5} {'peak KiB':>8}")
    for r in rows:
        print(f"{r['request_entries']:>9} {r['error_entries']:>6} {r['capture_s']:>9.3f} {r['capture_median_s']:>8.3f} "
              f"{r['baseline_s']:>10.3f} {r['ratio']:>5.2f} {r['entries_per_s']:>9.0f} {r['pages']:>5} "
              f"{r['peak_kib']:>8.0f}")
    c = rows[0]["canary"]
    print(f"canary snapshot: {c.get('request_count')} requests, {c.get('error_rate_display')} errors, "
          f"avg {c.get('avg_response_time_ms')} ms, p95 {c.get('p95_response_time_ms')} ms, "
          f"p99 {c.get('p99_response_time_ms')} ms, readings {c.get('readings')}")
    growth = rows[-1]["peak_kib"] / rows[0]["peak_kib"]
    data_growth = rows[-1]["request_entries"] / rows[0]["request_entries"]
    print(f"peak memory x{growth:.2f} for x{data_growth:.0f} data; "
          f"5,000 + 500 capture {'under' if rows[0]['capture_s'] < 1 else 'OVER'} the 1 s target")
    return 0 if rows[0]["capture_s"] < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
