"""Benchmark: from Cloud Monitoring's POST to the answer, to the alert in Slack, and to the evidence in the thread.

    python bench/alert.py [--alerts 200] [--rate 10] [--opens 10] [--database-url URL]

`incident-bot serve` (gunicorn, serve's worker settings) runs against the Slack sandbox, which answers every Web
API call after 300 ms, and the Google Cloud sandbox with a failed canary deployed 20 minutes ago; both in their
own processes. Measured:
(a) POST → 200: `--alerts` notifications with the token in the URL, sent at a steady `--rate` whether or not
    earlier ones were answered (as Cloud Monitoring sends them), against GET /healthz on the same server
    interleaved at the same rate (the same worker, one database write probe) as the baseline;
(b) POST → the alert message in ALERT_CHANNEL (when Slack stored it; its answer reaches the app 300 ms later);
(c) with the policy label incident_bot_auto_open=true, POST → the announcement, and POST → the evidence summary in
    its thread, for `--opens` alerts one every 4 s; the baseline is the same number of signed `/incident open …
    service:ion-api` commands, from the command to the same two moments, in the same run.
Targets: (a) p99 under 100 ms; (c) p95 to the evidence summary under 10 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import Child, ScratchDatabase, Server, Signer, percentile, serve_argv

from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.slack import SlackSandbox

SECRET = "bench-signing-secret"
TOKEN = "bench-alert-token-0123456789abcdef"
ALERTS = "C0ALERTS"
SLACK_LATENCY = 0.300
TARGET_ACK_MS = 100.0
TARGET_EVIDENCE_S = 10.0
OPEN_EVERY_S = 4.0


def _slack_main(conn: Connection) -> None:
    with SlackSandbox() as slack:
        slack.add_channel(ALERTS, "alerts")
        slack.set_latency("*", SLACK_LATENCY)
        conn.send((slack.api_url, slack.bot_token))
        while True:
            command = conn.recv()
            if command == "dump":
                conn.send(_dump(slack))
            else:
                conn.send(None)
                return


def _dump(slack: SlackSandbox) -> list[dict[str, Any]]:
    """Every message of the alert channel, threads included: when Slack stored it, and when it last changed."""
    out = []
    for top in slack.messages(ALERTS):
        for message in [top, *slack.thread(ALERTS, top["ts"])]:
            out.append({"ts": float(message["ts"]), "thread_ts": message.get("thread_ts"), "top": message is top,
                        "edited": float(message["edited"]["ts"]) if message.get("edited") else None,
                        "text": message.get("text", "")})
    return out


def _gcp_main(conn: Connection, deployed_at: datetime) -> None:
    with GcpSandbox(CanaryScenario(deployed_at=deployed_at)) as gcp:
        conn.send((gcp.base_url, gcp.scenario.project, gcp.scenario.region, gcp.scenario.service,
                   gcp.monitoring.address))
        conn.recv()


def notification(key: str, service: str, *, auto_open: bool) -> bytes:
    started = int(time.time()) - 60
    labels = {"incident_bot_auto_open": "true"} if auto_open else {"team": "ion"}
    return json.dumps({"version": "1.2", "incident": {
        "incident_id": key, "scoping_project_id": "ion-project", "started_at": started, "ended_at": None,
        "state": "open", "policy_name": f"bench {key}", "condition_name": "Request Latencies [95TH PERCENTILE]",
        "summary": f"Request Latencies for {service} is above the threshold of 200 with a value of 450.5.",
        "url": f"https://console.cloud.google.com/monitoring/alerting/incidents/{key}",
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service, "location": "us-central1",
                                                              "revision_name": f"{service}-00042-xyz"}},
        "metric": {"type": "run.googleapis.com/request_latencies", "displayName": "Request Latencies"},
        "observed_value": "450.5", "threshold_value": "200", "severity": "CRITICAL", "policy_user_labels": labels,
    }}).encode()


def steady(jobs: list[Any], rate: float, send: Any) -> list[tuple[float, float]]:
    """Sends at a steady rate; returns (sent at, epoch seconds; ms until answered) per job."""
    local = threading.local()

    def one(due: float, job: Any) -> tuple[float, float]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent_at = time.time()
        send(session, job)
        return sent_at, (time.perf_counter() - due) * 1000

    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(one, start + i / rate, job) for i, job in enumerate(jobs)]
        return [f.result() for f in futures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=200, help="notifications for (a) and (b)")
    parser.add_argument("--rate", type=float, default=10.0, help="notifications (and /healthz) per second")
    parser.add_argument("--opens", type=int, default=10, help="auto-opened alerts for (c), and as many commands")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server to create a scratch database on; default: a fresh SQLite file")
    args = parser.parse_args()

    slack = Child(_slack_main)
    gcp = Child(_gcp_main, datetime.now(UTC) - timedelta(minutes=20))
    gcp_url, project, region, service, monitoring_address = gcp.hello
    scratch = ScratchDatabase(args.database_url)
    env = {"SLACK_API_URL": slack.hello[0], "SLACK_BOT_TOKEN": slack.hello[1], "SLACK_SIGNING_SECRET": SECRET,
           "DATABASE_URL": scratch.url, "LOG_LEVEL": "INFO", "ALERT_WEBHOOK_TOKEN": TOKEN,
           "ALERT_CHANNEL": ALERTS, "GCP_PROJECT": project, "CLOUD_RUN_REGION": region,
           "CLOUD_LOGGING_API_URL": gcp_url, "CLOUD_RUN_API_URL": gcp_url,
           "CLOUD_MONITORING_API_URL": monitoring_address,
           "RATE_LIMIT_OPEN_PER_USER": "100000", "RATE_LIMIT_OPEN_PER_CHANNEL": "100000",
           "RATE_LIMIT_POST_PER_USER": "100000", "RATE_LIMIT_POST_PER_CHANNEL": "100000"}
    signer = Signer(SECRET)
    try:
        server = Server(serve_argv(), env)
        hook = f"{server.url}/alerts/cloud-monitoring?auth_token={TOKEN}"
        try:
            # Warm up: imports, auth.test, connections, the first renders, the Google clients (below).
            for i in range(5):
                requests.post(hook, data=notification(f"warm-{i}", service, auto_open=False), timeout=30)
                requests.get(f"{server.url}/healthz", timeout=30)

            def post_alert(session: requests.Session, body: bytes) -> None:
                response = session.post(hook, data=body, headers={"Content-Type": "application/json"}, timeout=30)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

            def get_health(session: requests.Session, _: Any) -> None:
                if session.get(f"{server.url}/healthz", timeout=30).status_code != 200:
                    raise RuntimeError("healthz")

            keys = [f"a-{i}" for i in range(args.alerts)]
            acks: list[tuple[float, float]] = []
            health: list[tuple[float, float]] = []
            for chunk in range(0, len(keys), 20):  # alternate, so machine noise falls on both
                batch = keys[chunk:chunk + 20]
                acks += steady([notification(k, service, auto_open=False) for k in batch], args.rate, post_alert)
                health += steady([None] * len(batch), args.rate, get_health)
            sent_at = {k: at for k, (at, _) in zip(keys, acks, strict=True)}

            def command(text: str) -> None:
                body, headers = signer.command(text, channel=ALERTS)
                response = requests.post(f"{server.url}/slack/events", data=body, headers=headers, timeout=30)
                if response.status_code != 200:
                    raise RuntimeError(f"{text}: {response.status_code}")

            def evidence_of(title: str) -> str:
                """Waits for the incident titled so to have its evidence summary; returns its ID."""
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    messages = slack.ask("dump")
                    tops = [m for m in messages if m["top"] and f"[INCIDENT] {title}" in m["text"]]
                    if tops and any(m["thread_ts"] == f"{tops[0]['ts']:.6f}" and "evidence_errors_" in m["text"]
                                    for m in messages):
                        return tops[0]["text"].split("`")[1]
                    time.sleep(0.25)
                raise RuntimeError(f"no evidence for {title}")

            command(f"open bench warm sev:high service:{service}")
            command(f"{evidence_of('bench warm*')} status resolved")
            # Each incident is resolved before the next one: an alert for a service with an open incident joins it.
            opened: dict[str, float] = {}
            commands: dict[str, float] = {}
            for i in range(args.opens):
                opened[f"open-{i}"] = time.time()
                post_alert(requests.Session(), notification(f"open-{i}", service, auto_open=True))
                command(f"{evidence_of(f'bench open-{i}:')} status resolved")
                time.sleep(OPEN_EVERY_S / 2)
                commands[f"command-{i}"] = time.time()
                command(f"open bench command-{i} sev:high service:{service}")
                command(f"{evidence_of(f'bench command-{i}*')} status resolved")
                time.sleep(OPEN_EVERY_S / 2)

            deadline = time.monotonic() + 120
            while True:
                messages = slack.ask("dump")
                if sum(1 for m in messages if m["top"] and "[ALERT] bench a-" in m["text"]) >= args.alerts:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("timed out waiting for the alert messages")
                time.sleep(0.5)
        finally:
            server.stop()
    finally:
        slack.stop()
        gcp.stop()
        scratch.drop()

    to_message = []
    for key, at in sent_at.items():
        [posted] = [m["ts"] for m in messages if m["top"] and f"[ALERT] bench {key}*" in m["text"]]
        to_message.append((posted - at) * 1000)

    def to_evidence(starts: dict[str, float], title: str) -> tuple[list[float], list[float]]:
        announced, evidence = [], []
        for key, at in starts.items():
            [top] = [m for m in messages if m["top"] and "[INCIDENT]" in m["text"] and title.format(key) in m["text"]]
            thread = f"{top['ts']:.6f}"
            [summary] = [m for m in messages if m["thread_ts"] == thread and "evidence_errors_" in m["text"]]
            announced.append(top["ts"] - at)
            evidence.append((summary["edited"] or summary["ts"]) - at)
        return announced, evidence

    auto_announced, auto_evidence = to_evidence(opened, "bench {}:")
    cmd_announced, cmd_evidence = to_evidence(commands, "bench {}*")

    ack_ms = [ms for _, ms in acks]
    health_ms = [ms for _, ms in health]
    print(f"alerts: {args.alerts} notifications at {args.rate:g}/s, {args.opens} auto-opened one every "
          f"{OPEN_EVERY_S:g} s; every Slack call answered after {SLACK_LATENCY * 1000:.0f} ms; database {scratch.kind}")
    print(f"{'measure':<44} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9}   baseline (same run)")

    def row(label: str, values: list[float], unit: str, baseline: list[float] | None, base_label: str) -> None:
        digits = 1 if unit == "ms" else 2
        cells = [percentile(values, q) for q in (50, 95, 99)] + [max(values)]
        line = f"{label:<44} " + " ".join(f"{f'{v:.{digits}f} {unit}':>9}" for v in cells)
        if baseline:
            line += (f"   {base_label}: p50 {percentile(baseline, 50):.{digits}f}, "
                     f"p95 {percentile(baseline, 95):.{digits}f}, p99 {percentile(baseline, 99):.{digits}f} {unit}")
        print(line)

    row("(a) POST → 200", ack_ms, "ms", health_ms, "GET /healthz")
    row("(b) POST → alert message in ALERT_CHANNEL", to_message, "ms", None, "")
    row("(c) POST → announcement (auto-open)", auto_announced, "s", cmd_announced, "/incident open → announcement")
    row("(c) POST → evidence summary in thread", auto_evidence, "s", cmd_evidence, "/incident open → summary")
    ok_ack = percentile(ack_ms, 99) < TARGET_ACK_MS
    ok_evidence = percentile(auto_evidence, 95) < TARGET_EVIDENCE_S
    print(f"(a) p99 {percentile(ack_ms, 99):.1f} ms {'under' if ok_ack else 'OVER'} {TARGET_ACK_MS:.0f} ms; "
          f"(c) p95 {percentile(auto_evidence, 95):.2f} s {'under' if ok_evidence else 'OVER'} "
          f"{TARGET_EVIDENCE_S:.0f} s")
    print("targets met" if ok_ack and ok_evidence else "targets NOT met")
    return 0 if ok_ack and ok_evidence else 1


if __name__ == "__main__":
    sys.exit(main())
