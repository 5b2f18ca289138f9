"""The report issues the same small number of SQL statements whatever the size of the incident (no N+1),
and never loads the timeline as ORM objects."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from app import build_context
from bot import checklist
from bot.context import Context
from bot.report import render_report
from bot.settings import load_settings
from storage import migrate
from storage.models import ActionItem, ChecklistItem, ImpactValue, Incident, Note, RoleAssignment, TimelineEvent, Why

START = datetime(2025, 10, 22, 14, 0, tzinfo=UTC)
USERS = ("U0SENA", "U0LEMUN", "U0GITCO", "U0LUBIT")


class _NoSlack:
    bot_user_id = "U0BOT"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"rendering a report must not call Slack ({name})")


@pytest.fixture
def ctx(database_url: str) -> Iterator[Context]:
    context = build_context(load_settings({"DATABASE_URL": database_url}), messenger=_NoSlack())  # type: ignore[arg-type]
    migrate.upgrade(context.db.engine)
    yield context
    context.db.dispose()


def build(ctx: Context, seq: int, events: int, actions: int, whys: int) -> int:
    rng = random.Random(seq)
    with ctx.db.session() as session:
        incident = Incident(
            public_id=f"INCIDENT-20251022-{seq:03d}", day="20251022", seq=seq, title="scale", severity="high",
            status="resolved", channel_id="C0INCIDENTS", announcement_ts="1.000001", opened_by="U0SENA",
            opened_at=START, meeting_at=START + timedelta(hours=2), deployed_at=START, recovered_at=START,
            checklist_ts="1.000002", root_cause="N+1", conclusion="done",
        )
        session.add(incident)
        session.flush()
        replies = [
            {"incident_id": incident.id, "kind": "pin" if n % 9 == 0 else "message",
             "occurred_at": START + timedelta(seconds=n), "author_id": USERS[n % 4], "author_name": USERS[n % 4][2:],
             "text": f"reply {rng.random():.3f} | #{n}", "slack_channel": "C0INCIDENTS", "slack_ts": f"{n}.000100",
             "highlighted": n % 9 == 0, "created_at": START, "edited_at": START if n % 13 == 0 else None}
            for n in range(events) if n % 10
        ]
        system = [
            {"incident_id": incident.id, "kind": "system", "occurred_at": START + timedelta(seconds=n),
             "author_id": "U0SENA", "author_name": "Sena", "text": "", "highlighted": False, "created_at": START,
             "data": {"action": "action_item", "item": n, "priority": "P1", "task": f"t{n}", "owner": "U0GITCO",
                      "owner_name": "Gitco"}}
            for n in range(events) if n % 10 == 0
        ]
        session.execute(insert(TimelineEvent), replies)
        session.execute(insert(TimelineEvent), system)
        session.execute(insert(ActionItem), [
            {"incident_id": incident.id, "priority": f"P{n % 4}", "task": f"task {n}", "owner_id": USERS[n % 4],
             "due_at": START + timedelta(days=n % 9 + 1), "status": ("open", "done")[n % 2], "created_at": START,
             "updated_at": START, "impact": "high"}
            for n in range(actions)
        ])
        session.execute(insert(Why), [
            {"incident_id": incident.id, "position": n + 1, "text": f"왜 {n}? → {n}", "created_at": START,
             "updated_at": START} for n in range(whys)
        ])
        session.execute(insert(Note), [
            {"incident_id": incident.id, "kind": kind, "position": n + 1, "text": f"{kind} {n}", "created_at": START}
            for kind in ("lesson", "prevent") for n in range(whys)
        ])
        session.execute(insert(ImpactValue), [
            {"incident_id": incident.id, "field": "p95", "value": "150ms→450ms", "source": "manual",
             "updated_at": START}
        ])
        session.execute(insert(ChecklistItem), [
            {"incident_id": incident.id, "key": key, "checked": True} for key in checklist.ALL_KEYS[: whys - 1]
        ])
        session.execute(insert(RoleAssignment), [
            {"incident_id": incident.id, "role": "lead", "user_id": "U0SENA", "assigned_at": START}
        ])
        return incident.id


def render_counting(ctx: Context, incident_id: int) -> tuple[str, list[str], int]:
    statements: list[str] = []
    loaded = 0

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def on_load(_target: Any, _context: Any) -> None:
        nonlocal loaded
        loaded += 1

    event.listen(ctx.db.engine, "before_cursor_execute", on_execute)
    event.listen(TimelineEvent, "load", on_load)
    try:
        document = render_report(ctx, incident_id, "ko")
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", on_execute)
        event.remove(TimelineEvent, "load", on_load)
    return document, statements, loaded


def test_statement_count_is_constant_across_sizes(ctx: Context) -> None:
    small = build(ctx, 1, events=200, actions=5, whys=3)
    large = build(ctx, 2, events=5_000, actions=300, whys=20)
    small_doc, small_sql, small_loaded = render_counting(ctx, small)
    large_doc, large_sql, large_loaded = render_counting(ctx, large)
    assert len(small_sql) == len(large_sql) <= 15, (len(small_sql), len(large_sql))
    assert small_loaded == large_loaded == 0  # the timeline streams as column rows
    # Both documents are complete: every event, item and why is in them.
    assert large_doc.count(" reply ") == sum(1 for n in range(5_000) if n % 10)
    assert large_doc.count("| 📌 reply ") == sum(1 for n in range(5_000) if n % 10 and n % 9 == 0)
    assert large_doc.count("개선사항 등록: [P1]") == 500
    assert "| P3 | task 299 | LUBIT |" in large_doc  # names, not ids
    assert "20. **왜 19?**\n   - 19" in large_doc
    assert small_doc.count(" reply ") == 180
