"""Benchmark: rendering the post-mortem document of a production-size incident.

    .venv/bin/python bench/report.py [--database-url URL]

Builds (bulk insert) an incident with 50,000 timeline events, 300 action items and 20 whys, and in the same
database a baseline incident with 5,000 events and the same content otherwise. For each it prints the render
time (best of 5, `bot.report.render_report`; wall clock and process CPU time, which shared machines
disturb less), the number of SQL statements one render issues (counted with
SQLAlchemy's `before_cursor_execute` event) and the tracemalloc peak of one render, then the ratios.
Targets: the large render well under a second; the statement count equal for both sizes (no N+1); the
memory peak following the size of the document, not holding the timeline as ORM objects.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, insert

from app import build_context
from bot import checklist
from bot.context import Context
from bot.report import render_report
from bot.settings import load_settings
from storage import migrate
from storage.models import ActionItem, ChecklistItem, ImpactValue, Incident, Note, TimelineEvent, Why

LARGE, BASELINE = 50_000, 5_000
ACTIONS, WHYS = 300, 20
REPEATS = 5
START = datetime(2025, 10, 22, 13, 0, tzinfo=UTC)
USERS = [("U0SENA", "Sena"), ("U0LEMUN", "Lemun"), ("U0GITCO", "Gitco"), ("U0LUBIT", "Lubit"), ("U0QA", "QA")]


class _NoSlack:
    """The report reads only the database."""

    bot_user_id = "U0BOT"

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"the benchmark never calls Slack ({name})")


def _system_data(n: int, at: datetime) -> dict[str, Any]:
    statuses = ("investigating", "identified", "monitoring", "resolved")
    kinds = (
        {"action": "status", "old": statuses[n % 4], "new": statuses[(n + 1) % 4]},
        {"action": "milestone", "milestone": "detected", "old": None, "new_display": f"{at:%H:%M} UTC #{n}"},
        {"action": "role", "role": "devops", "new": "U0LUBIT", "new_name": f"Lubit {n}"},
        {"action": "action_item", "item": n, "priority": "P1", "task": f"부하 테스트 {n}", "owner": "U0GITCO",
         "owner_name": "Gitco"},
    )
    return kinds[n % len(kinds)]


def build_incident(ctx: Context, public_id: str, events: int, *, seed: int = 7) -> int:
    """One incident with `events` timeline events and the full post-mortem content, inserted in bulk."""
    rng = random.Random(seed)
    with ctx.db.session() as session:
        incident = Incident(
            public_id=public_id, day=public_id[9:17], seq=int(public_id[-3:]),
            title="Phase 4 Canary 배포 실패 (응답시간 증가) | N+1", severity="high", status="resolved",
            service="ion-api", channel_id="C0INCIDENTS", announcement_ts=f"{START.timestamp():.6f}",
            opened_by="U0SENA", opened_at=START + timedelta(minutes=35), meeting_at=START + timedelta(hours=3),
            deployed_at=START + timedelta(hours=1), started_at=START + timedelta(minutes=75),
            detected_at=START + timedelta(minutes=95), rollback_at=START + timedelta(minutes=97),
            recovered_at=START + timedelta(minutes=98), resolved_at=START + timedelta(hours=2),
            root_cause="추천 엔진의 N+1 쿼리 문제로 인해 응답 시간이 과도하게 증가했습니다.\n- 400번의 개별 쿼리",
            conclusion="이번 사건은 **프로덕션 데이터 크기를 고려한 테스트의 중요성**을 보여주었습니다.",
            checklist_ts="1761141600.000100",
        )
        session.add(incident)
        session.flush()
        incident_id = incident.id
        messages: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        span = timedelta(hours=2).total_seconds()
        for n in range(events):
            user, name = USERS[n % len(USERS)]
            at = START + timedelta(seconds=span * n / events)
            row: dict[str, Any] = {
                "incident_id": incident_id, "occurred_at": at, "author_id": user, "author_name": name,
                "created_at": at, "edited_at": at if n % 50 == 0 else None,
                "deleted_at": at if n % 97 == 0 else None,
            }
            if n % 20 == 7:  # 5 % system events, each different, as the bot records them
                row.update(kind="system", text="", highlighted=False, data=_system_data(n, at))
                system.append(row)
            else:  # thread replies (10 % of them pinned), stored without data as ingest stores them
                row.update(kind="pin" if n % 10 == 0 else "message", highlighted=n % 10 == 0,
                           text=f"p95 {rng.randint(150, 900)}ms | 에러율 {rng.random() * 9:.1f}% <확인> #{n}",
                           slack_channel="C0INCIDENTS", slack_ts=f"{at.timestamp():.6f}")
                messages.append(row)
            for batch in (messages, system):
                if len(batch) == 5000:
                    session.execute(insert(TimelineEvent), batch)
                    batch.clear()
        for batch in (messages, system):
            if batch:
                session.execute(insert(TimelineEvent), batch)
        session.execute(insert(ActionItem), [
            {"incident_id": incident_id, "priority": f"P{n % 4}", "task": f"개선 작업 {n} | 조인으로 변경",
             "owner_id": USERS[n % len(USERS)][0] if n % 6 else "@DevOps",
             "due_at": START + timedelta(days=1 + n % 30), "impact": ("critical", "high", "medium", "low")[n % 4],
             "status": ("open", "in_progress", "done")[n % 3], "created_by": "U0SENA",
             "created_at": START, "updated_at": START}
            for n in range(ACTIONS)
        ])
        session.execute(insert(Why), [
            {"incident_id": incident_id, "position": n + 1, "text": f"왜 {n}번이 일어났나? → 원인 {n}",
             "created_at": START, "updated_at": START}
            for n in range(WHYS)
        ])
        session.execute(insert(Note), [
            {"incident_id": incident_id, "kind": kind, "position": n + 1, "text": f"{kind} {n} → 설명",
             "created_at": START}
            for kind in ("lesson", "prevent") for n in range(10)
        ])
        session.execute(insert(ImpactValue), [
            {"incident_id": incident_id, "field": field, "value": value, "source": "manual", "updated_at": START}
            for field, value in (("users", "~500 (1%)"), ("error-rate", "0.5%→9%"), ("p95", "150ms→450ms"),
                                 ("availability", "90.5%"))
        ])
        session.execute(insert(ChecklistItem), [
            {"incident_id": incident_id, "key": key, "checked": True} for key in checklist.ALL_KEYS[::2]
        ])
    return incident_id


def measure(ctx: Context, incident_id: int) -> dict[str, float]:
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    render_report(ctx, incident_id, "ko")  # warm the template cache and the connection pool
    times, cpu = [], []
    for _ in range(REPEATS):
        started, started_cpu = time.perf_counter(), time.process_time()
        document = render_report(ctx, incident_id, "ko")
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    event.listen(ctx.db.engine, "before_cursor_execute", count)
    try:
        render_report(ctx, incident_id, "ko")
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", count)
    tracemalloc.start()
    try:
        render_report(ctx, incident_id, "ko")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"seconds": min(times), "cpu": min(cpu), "statements": statements, "peak_mb": peak / 2**20,
            "document_mb": len(document.encode()) / 2**20, "lines": document.count("\n")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        ctx = build_context(load_settings({"DATABASE_URL": url, "INCIDENT_TIMEZONE": "Asia/Seoul"}),
                            messenger=_NoSlack())  # type: ignore[arg-type]
        migrate.upgrade(ctx.db.engine)
        started = time.perf_counter()
        baseline_id = build_incident(ctx, "INCIDENT-20251022-001", BASELINE)
        large_id = build_incident(ctx, "INCIDENT-20251022-002", LARGE)
        print(f"built {BASELINE:,} + {LARGE:,} events, {ACTIONS} action items and {WHYS} whys each "
              f"in {time.perf_counter() - started:.1f} s ({ctx.db.dialect})")
        results = {}
        for label, incident_id, events in (("baseline", baseline_id, BASELINE), ("large", large_id, LARGE)):
            r = measure(ctx, incident_id)
            results[label] = r
            print(f"{label:>8}: {events:>6,} events  render {r['seconds'] * 1000:7.1f} ms "
                  f"(CPU {r['cpu'] * 1000:6.1f} ms)  "
                  f"{r['statements']:>2} SQL statements  peak {r['peak_mb']:6.1f} MiB  "
                  f"document {r['document_mb']:5.1f} MiB / {r['lines']:,} lines")
        base, large = results["baseline"], results["large"]
        print(f"   ratio: ×{LARGE / BASELINE:.0f} events → render ×{large['seconds'] / base['seconds']:.1f}, "
              f"statements ×{large['statements'] / base['statements']:.1f}, "
              f"peak ×{large['peak_mb'] / base['peak_mb']:.1f} "
              f"(document ×{large['document_mb'] / base['document_mb']:.1f})")
        ok = large["seconds"] < 1.0 and large["statements"] == base["statements"]
        print("target met" if ok else "TARGET MISSED: render under 1 s with a constant statement count")
        ctx.db.dispose()
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
