"""Status, severity, roles, milestones, `/incident timeline` and `/incident list`, through signed HTTP."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot import lifecycle
from bot.clock import ManualClock
from bot.jobs import after_commit
from bot.parsing import (
    UsageError,
    milestone_time,
    parse_milestone,
    parse_role,
    parse_severity,
    parse_status,
)
from bot.settings import DEFAULT_ROLES
from sandbox.harness import LocalBot
from storage.models import Incident, RoleAssignment, TimelineEvent
from tests.helpers import clocked_bot, count, open_incident

CHANNEL = "C0INCIDENTS"
T0 = datetime(2025, 10, 22, 14, 40, tzinfo=UTC)  # the guide's incident, just after the rollback


@pytest.fixture
def clocked(database_url: str, bot_env: dict[str, str]) -> Iterator[tuple[LocalBot, ManualClock]]:
    with clocked_bot(database_url, T0, bot_env) as pair:
        yield pair


def run(bot: LocalBot, text: str, **kw: Any) -> str:
    response = bot.driver.command("/incident", text, **kw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_type"] == "ephemeral"
    bot.settle()
    return str(body["text"])


def incident(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident).order_by(Incident.id.desc())).first()


def system_events(bot: LocalBot, action: str | None = None, *, visible: bool = True) -> list[TimelineEvent]:
    with bot.ctx.db.session() as session:
        rows = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "system").order_by(TimelineEvent.id)
        ).all()
    return [e for e in rows if (action is None or e.data["action"] == action)
            and (not visible or e.deleted_at is None)]


def announcement_updates(bot: LocalBot, ts: str) -> list[str]:
    return [c.args["text"] for c in bot.slack.calls("chat.update") if c.args.get("ts") == ts]


def current_announcement(bot: LocalBot, ts: str) -> str:
    message = bot.slack.message(CHANNEL, ts)
    assert message is not None
    return str(message["text"])


def thread_texts(bot: LocalBot, ts: str) -> list[str]:
    return [m.get("text", "") for m in bot.slack.thread(CHANNEL, ts)]


# ---- status and severity --------------------------------------------------------------------------------------


def test_status_change_is_an_event_and_updates_the_announcement_in_place(bot: LocalBot) -> None:
    _, ts = open_incident(bot)
    answer = run(bot, "status identified")
    assert "상태를 바꿨습니다: 🔍 조사 중 → 🎯 원인 파악" in answer
    [event] = system_events(bot, "status")
    assert (event.data["old"], event.data["new"], event.author_id) == ("investigating", "identified", "U0SENA")
    assert event.author_name == "Sena"  # the display name, looked up after the ack
    [update] = announcement_updates(bot, ts)
    assert "*현재 상태:* 🎯 원인 파악" in update
    assert "*현재 상태:* 🎯 원인 파악" in current_announcement(bot, ts)
    assert incident(bot).status == "identified"
    # The same status again changes nothing and says so.
    assert "이미 🎯 원인 파악 상태" in run(bot, "status identified")
    assert len(system_events(bot, "status")) == 1 and len(announcement_updates(bot, ts)) == 1


def test_severity_change(bot: LocalBot) -> None:
    _, ts = open_incident(bot)
    assert "HIGH → CRITICAL" in run(bot, "severity CRITICAL")
    [event] = system_events(bot, "severity")
    assert (event.data["old"], event.data["new"]) == ("high", "critical")
    assert "심각도 *CRITICAL*" in current_announcement(bot, ts)
    assert "이미 CRITICAL" in run(bot, "severity critical")


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_status_and_severity_in_english(bot: LocalBot) -> None:
    _, ts = open_incident(bot, "Recommendation API p95 spike")
    assert "status: 🔍 Investigating → 👀 Monitoring" in run(bot, "status monitoring")
    assert "severity: HIGH → LOW" in run(bot, "severity low")
    text = current_announcement(bot, ts)
    assert "*Current status:* 👀 Monitoring" in text and "Severity *LOW*" in text
    assert "is already 👀 Monitoring" in run(bot, "status monitoring")


def test_many_quick_changes_end_with_the_latest_state(bot: LocalBot) -> None:
    _, ts = open_incident(bot)
    for status in ("identified", "monitoring", "investigating", "identified", "monitoring"):
        bot.driver.command("/incident", f"status {status}")
    for sev in ("critical", "low", "medium"):
        bot.driver.command("/incident", f"severity {sev}")
    bot.settle()
    text = current_announcement(bot, ts)
    assert "*현재 상태:* 👀 모니터링 중" in text and "심각도 *MEDIUM*" in text
    assert len(system_events(bot, "status")) == 5 and len(system_events(bot, "severity")) == 3


# ---- roles -----------------------------------------------------------------------------------------------------


def test_roles_by_name_and_by_the_guides_korean_name(bot: LocalBot) -> None:
    _, ts = open_incident(bot)
    answer = run(bot, "role lead <@U0SENA|sena>")
    assert "배포 리더: <@U0SENA>" in answer
    run(bot, "role 백엔드 <@U0GITCO|gitco>")
    run(bot, "role 배포 리더 <@U0LUBIT|lubit>")  # reassigned, with the guide's two-word name
    with bot.ctx.db.session() as session:
        roles = dict(session.execute(select(RoleAssignment.role, RoleAssignment.user_id)).all())
    assert roles == {"lead": "U0LUBIT", "backend": "U0GITCO"}
    events = system_events(bot, "role")
    assert [(e.data["role"], e.data["new"], e.data["new_name"]) for e in events] == [
        ("lead", "U0SENA", "Sena"), ("backend", "U0GITCO", "Gitco"), ("lead", "U0LUBIT", "Lubit")]
    assert (events[2].data["old"], events[2].data["old_name"]) == ("U0SENA", "Sena")
    text = current_announcement(bot, ts)
    assert "*담당:* 배포 리더 <@U0LUBIT> · 백엔드 엔지니어 <@U0GITCO>" in text
    assert "이미 <@U0GITCO>" in run(bot, "role backend <@U0GITCO|gitco>")


def test_a_mention_without_a_name_gets_the_name_from_slack(bot: LocalBot) -> None:
    open_incident(bot)
    run(bot, "role monitoring <@U0LEMUN>")
    [event] = system_events(bot, "role")
    assert event.data["new"] == "U0LEMUN" and event.data["new_name"] == "Lemun"


@pytest.mark.parametrize("bot_env", [{"INCIDENT_ROLES": "commander,scribe", "INCIDENT_LOCALE": "en"}])
def test_roles_are_configurable(bot: LocalBot) -> None:
    _, ts = open_incident(bot, "Configurable roles")
    assert "scribe: <@U0SENA>" in run(bot, "role scribe <@U0SENA|sena>")
    answer = run(bot, "role lead <@U0SENA|sena>")
    assert "`lead` is not a role here" in answer and "`commander`" in answer and "`scribe`" in answer
    assert "*Roles:* scribe <@U0SENA>" in current_announcement(bot, ts)


# ---- milestones ------------------------------------------------------------------------------------------------


def test_milestones_by_command_give_the_guides_durations(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    public_id, ts = open_incident(bot)
    assert "배포 시점을 14:00 UTC로 기록했습니다" in run(bot, "milestone deployed 14:00")
    assert "이상 발생 시점을 14:15 UTC로 기록했습니다" in run(bot, "milestone started 14:15")
    # Detected defaults to the open (14:40); 14:35 corrects it.
    answer = run(bot, "milestone detected 14:35")
    assert "실패 감지 시점을 14:35 UTC로 고쳤습니다 (이전: 14:40 UTC)" in answer
    assert "감지까지 20분" in answer
    run(bot, "milestone rollback 14:35")
    answer = run(bot, "milestone recovered 14:38")
    assert "감지까지 20분 · 복구 3분 · 총 영향 23분" in answer
    with bot.ctx.db.session() as session:
        stored = session.scalars(select(Incident)).one()
        assert stored.deployed_at == datetime(2025, 10, 22, 14, 0, tzinfo=UTC)
        assert stored.recovered_at == datetime(2025, 10, 22, 14, 38, tzinfo=UTC)
    text = current_announcement(bot, ts)
    assert "배포 시간: 2025-10-22 14:00 UTC" in text
    assert "이상 발생: 14:15 UTC" in text
    assert "실패 감지: 14:35 UTC (발생 후 20분)" in text
    assert "롤백 결정: 14:35 UTC" in text
    assert "롤백 완료: 14:38 UTC (복구 시간 3분)" in text
    assert "총 영향 시간: 23분" in text and "✅ 서비스: 정상 복구됨" in text
    # One visible event per milestone, dated at the milestone itself.
    visible = {e.data["milestone"]: e for e in system_events(bot, "milestone")}
    assert set(visible) == {"deployed", "started", "detected", "rollback", "recovered"}
    assert visible["detected"].occurred_at == datetime(2025, 10, 22, 14, 35, tzinfo=UTC)
    assert (visible["detected"].data["old_display"], visible["detected"].data["new_display"]) == (
        "14:40 UTC", "14:35 UTC")
    assert public_id in answer


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_milestones_and_report_in_english(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    public_id, ts = open_incident(bot, "Canary failure")
    for text in ("milestone deployed 14:00", "milestone started 14:15", "milestone detected 14:35",
                 "milestone rollback 14:35"):
        run(bot, text)
    answer = run(bot, "milestone recovered 14:38")
    assert "milestone recorded — Recovered (rollback done): 14:38 UTC" in answer
    assert "Detected after 20 min · recovered in 3 min · total impact 23 min" in answer
    text = current_announcement(bot, ts)
    assert "Detected at: 14:35 UTC (20 min after impact began)" in text
    assert "Rollback done: 14:38 UTC (recovered in 3 min)" in text
    bot.driver.command("/postmortem", "report")
    bot.settle()
    [file] = bot.slack.files()
    document = file["content"].decode()
    assert "- **Detected at**: 14:35 UTC (20 min later)" in document
    assert "- **Recovered at**: 14:38 UTC (3 min)" in document
    assert "- **Total impact time**: 23 min" in document
    assert "- **Occurred at**: 2025-10-22 14:15 UTC" in document
    assert public_id in document


def test_out_of_order_milestone_is_refused_naming_the_conflict(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    open_incident(bot)
    run(bot, "milestone detected 14:35")
    run(bot, "milestone rollback 14:37")
    before = count(bot, TimelineEvent), len(bot.slack.calls("chat.update"))
    answer = run(bot, "milestone recovered 14:30")
    assert "복구(롤백 완료) 시점을 14:30 UTC로 기록할 수 없습니다" in answer
    assert "롤백 결정 시점(14:37 UTC)보다 빠를 수 없습니다" in answer
    assert "배포 ≤ 이상 발생 ≤ 실패 감지 ≤ 롤백 결정 ≤ 복구 ≤ 해결" in answer
    answer = run(bot, "milestone deployed 14:36")
    assert "실패 감지 시점(14:35 UTC)보다 늦을 수 없습니다" in answer
    assert (count(bot, TimelineEvent), len(bot.slack.calls("chat.update"))) == before
    assert incident(bot).recovered_at is None and incident(bot).deployed_at is None


def test_started_defaults_to_deployed_for_order_and_durations(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    _, ts = open_incident(bot)
    run(bot, "milestone deployed 14:00")
    assert "실패 감지: 14:40 UTC (배포 후 40분)" in current_announcement(bot, ts)
    run(bot, "milestone detected 14:30")
    assert "실패 감지 시점(14:30 UTC)보다 늦을 수 없습니다" in run(bot, "milestone started 14:35")
    assert "이상 발생 시점을 14:00 UTC로 기록" in run(bot, "milestone started 14:00")  # equal is fine
    assert "실패 감지: 14:30 UTC (발생 후 30분)" in current_announcement(bot, ts)


def test_times_before_the_open_and_on_earlier_days(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = clocked
    _, ts = open_incident(bot)
    # 23:50 is still to come today, so it means yesterday 23:50; the date is shown because the days differ.
    answer = run(bot, "milestone deployed 23:50")
    assert "2025-10-21 23:50 UTC" in answer
    assert incident(bot).deployed_at == datetime(2025, 10, 21, 23, 50, tzinfo=UTC)
    run(bot, "milestone deployed 2025-10-20 09:15")
    assert incident(bot).deployed_at == datetime(2025, 10, 20, 9, 15, tzinfo=UTC)
    text = current_announcement(bot, ts)
    assert "배포 시간: 2025-10-20 09:15 UTC" in text
    assert "실패 감지: 2025-10-22 14:40 UTC (배포 후 2일 5시간 25분)" in text
    # No time means now, to the minute.
    clock.advance(timedelta(minutes=5, seconds=20))
    run(bot, "milestone rollback")
    assert incident(bot).rollback_at == datetime(2025, 10, 22, 14, 45, tzinfo=UTC)


@pytest.mark.parametrize("bot_env", [{"INCIDENT_TIMEZONE": "Asia/Seoul"}])
def test_milestone_times_are_read_in_the_incident_timezone(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked  # 14:40 UTC is 23:40 KST
    _, ts = open_incident(bot)
    run(bot, "milestone deployed 23:00")
    assert incident(bot).deployed_at == datetime(2025, 10, 22, 14, 0, tzinfo=UTC)
    assert "배포 시간: 2025-10-22 23:00 KST" in current_announcement(bot, ts)


def test_future_and_malformed_times_are_refused(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    open_incident(bot)
    before = count(bot, TimelineEvent)
    assert "아직 오지 않은 시간" in run(bot, "milestone recovered 2025-10-22 15:00")
    assert "`25:00` 는 시간으로 읽을 수 없습니다" in run(bot, "milestone recovered 25:00")
    assert "`launch` 는 알 수 없는 시점" in run(bot, "milestone launch 14:00")
    assert count(bot, TimelineEvent) == before


def test_a_corrected_milestone_shows_once_on_the_timeline(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    open_incident(bot)
    run(bot, "milestone detected 14:35")
    run(bot, "milestone rollback 14:37")
    run(bot, "milestone rollback 14:36")
    visible = [e for e in system_events(bot, "milestone") if e.data["milestone"] == "rollback"]
    assert len(visible) == 1 and visible[0].data["old_display"] == "14:37 UTC"
    hidden = [e for e in system_events(bot, "milestone", visible=False) if e.data["milestone"] == "rollback"]
    assert len(hidden) == 2  # the first is kept in the database, hidden from the timeline
    answer = run(bot, "timeline")
    assert "롤백 결정 시점 수정: 14:37 UTC → 14:36 UTC" in answer
    assert "롤백 결정 시점 기록: 14:37 UTC" not in answer
    assert "이미 14:36 UTC" in run(bot, "milestone 롤백 14:36")  # Korean name for the milestone


# ---- closing and reopening -------------------------------------------------------------------------------------


def hooks(bot: LocalBot) -> list[tuple[str, str, str]]:
    fired: list[tuple[str, str, str]] = []
    for hook in (bot.ctx.hooks.on_closed, bot.ctx.hooks.on_reopened):
        hook.register(lambda _ctx, _session, inc, name=hook.name: fired.append((name, inc.public_id, inc.status)))
    return fired


def test_resolving_says_so_closes_commands_and_reopening_works(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = clocked
    fired = hooks(bot)
    public_id, ts = open_incident(bot)
    run(bot, "milestone detected 14:35")
    assert "복구(롤백 완료) 시점을 14:38 UTC로 기록했습니다" in run(bot, "milestone recovered 14:38")
    clock.advance(timedelta(minutes=10))
    answer = run(bot, "status resolved")
    assert "✅ 해결됨" in answer and "스레드에도 알렸습니다" in answer
    assert fired == [("on_closed", public_id, "resolved")]
    stored = incident(bot)
    assert stored.status == "resolved" and stored.resolved_at == datetime(2025, 10, 22, 14, 50, tzinfo=UTC)
    [milestone] = [e for e in system_events(bot, "milestone") if e.data["milestone"] == "resolved"]
    assert milestone.data["new_display"] == "14:50 UTC"
    [notice] = [t for t in thread_texts(bot, ts) if "사건이 해결되었습니다" in t]
    assert "(Sena)" in notice and "/postmortem report" in notice
    assert "총 영향" not in notice  # no deploy or start recorded, so no impact span to tell
    assert "*현재 상태:* ✅ 해결됨 (14:50 UTC)" in current_announcement(bot, ts)

    updates = len(bot.slack.calls("chat.update"))
    for text in ("severity critical", "role lead <@U0SENA|sena>", "status monitoring", "status cancelled"):
        answer = run(bot, text)
        assert f"`{public_id}` 사건은 ✅ 해결됨 상태라 이 명령을 받을 수 없습니다" in answer, text
        assert "/incident status investigating" in answer
    assert len(bot.slack.calls("chat.update")) == updates and incident(bot).severity == "high"
    # Milestones can still be corrected after the fact, e.g. in the post-mortem meeting.
    assert "복구(롤백 완료) 시점을 14:39 UTC로 고쳤습니다" in run(bot, "milestone recovered 14:39")
    assert "이미 ✅ 해결됨" in run(bot, "status resolved")

    answer = run(bot, "status investigating")
    assert "다시 열었습니다" in answer
    assert fired[-1] == ("on_reopened", public_id, "investigating")
    stored = incident(bot)
    assert stored.status == "investigating" and stored.resolved_at is None
    assert any("사건을 다시 열었습니다" in t for t in thread_texts(bot, ts))
    assert not [e for e in system_events(bot, "milestone") if e.data["milestone"] == "resolved"]
    assert "해결됨" not in current_announcement(bot, ts)
    assert "HIGH → CRITICAL" in run(bot, "severity critical")


def test_milestone_resolved_resolves_the_incident(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    fired = hooks(bot)
    public_id, ts = open_incident(bot)
    answer = run(bot, "milestone resolved 14:40")
    assert "해결 시점을 14:40 UTC로 기록했습니다" in answer and "해결됨으로 바꾸고" in answer
    assert incident(bot).status == "resolved"
    assert fired == [("on_closed", public_id, "resolved")]
    assert [(e.data["old"], e.data["new"]) for e in system_events(bot, "status")] == [("investigating", "resolved")]
    assert any("사건이 해결되었습니다" in t for t in thread_texts(bot, ts))


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_cancelling_in_english(bot: LocalBot) -> None:
    fired = hooks(bot)
    public_id, ts = open_incident(bot, "False alarm")
    assert "🔍 Investigating → ⚪ Cancelled" in run(bot, "status cancelled")
    assert fired == [("on_closed", public_id, "cancelled")]
    stored = incident(bot)
    assert stored.cancelled_at is not None and stored.resolved_at is None
    assert any("The incident was cancelled" in t for t in thread_texts(bot, ts))
    answer = run(bot, "role lead <@U0SENA|sena>")
    assert f"`{public_id}` is ⚪ Cancelled, so it no longer takes this command" in answer
    assert "is ⚪ Cancelled" in run(bot, "milestone resolved")
    assert "Reopened" in run(bot, "status investigating")
    assert incident(bot).cancelled_at is None


# ---- Slack failing ---------------------------------------------------------------------------------------------


def test_failed_announcement_update_is_reported_kept_and_retried_by_the_sweep(bot: LocalBot) -> None:
    _, ts = open_incident(bot)
    bot.slack.fail("chat.update", status=500, times=10)
    run(bot, "severity critical")
    assert incident(bot).severity == "critical"  # the change is stored
    assert incident(bot).announcement_error is not None
    reports = [r.get("text", "") for r in bot.slack.responses()]
    assert any("채널 공지를 고치지 못했습니다" in r for r in reports)
    assert "심각도 *HIGH*" in current_announcement(bot, ts)
    bot.slack.reset_faults()
    bot.runtime.sweep()
    bot.settle()
    assert "심각도 *CRITICAL*" in current_announcement(bot, ts)
    assert incident(bot).announcement_error is None
    calls = len(bot.slack.calls("chat.update"))
    bot.runtime.sweep()
    assert len(bot.slack.calls("chat.update")) == calls  # nothing left to retry


# ---- who owns the transaction, and announcing once ---------------------------------------------------------------


class Rollback(Exception):
    pass


def test_a_change_reaches_slack_only_once_its_unit_of_work_commits(bot: LocalBot) -> None:
    """bot.lifecycle works in the caller's session and queues its Slack work for after the commit: a unit of work
    that rolls back leaves neither the change nor a chat.update behind. (Called directly: a rollback after the
    change is not something a Slack request can provoke.)"""
    _, ts = open_incident(bot)
    incident_id, updates = incident(bot).id, len(announcement_updates(bot, ts))
    with pytest.raises(Rollback), bot.ctx.db.session() as session:
        change = lifecycle.change_severity(bot.ctx, session, incident_id, "critical", actor="U0SENA", actor_name="sena")
        assert change.outcome == "changed"
        raise Rollback
    bot.settle()
    assert incident(bot).severity == "high" and system_events(bot, "severity") == []
    assert len(announcement_updates(bot, ts)) == updates and "심각도 *HIGH*" in current_announcement(bot, ts)

    seen: list[str] = []
    with bot.ctx.db.session() as session:
        lifecycle.change_severity(bot.ctx, session, incident_id, "critical", actor="U0SENA", actor_name="sena")
        # Queued after the change's own work: by the time it runs the change is visible to everyone.
        after_commit(session, lambda: seen.append(incident(bot).severity))
        bot.settle()
        assert seen == [] and len(announcement_updates(bot, ts)) == updates  # nothing before the commit
    bot.settle()
    assert seen == ["critical"]
    assert "심각도 *CRITICAL*" in current_announcement(bot, ts)


def test_one_open_fires_on_announced_once_however_often_it_arrives_or_is_swept(bot: LocalBot) -> None:
    """on_announced fires from one place (bot.incidents.post_announcement, when it puts the post on record): one
    open fires it once; the same open delivered again and the sweeps after it fire nothing more."""
    fired: list[int] = []
    bot.ctx.hooks.on_announced.register(lambda _ctx, incident_id: fired.append(incident_id))
    for _ in range(2):  # Slack's retry of the same command: the same trigger_id
        response = bot.driver.command("/incident", "open 한 번만 알림 sev:high", trigger_id="T0ANNOUNCEONCE")
        assert response.status_code == 200
    bot.settle()
    bot.runtime.sweep()
    bot.settle()
    assert count(bot, Incident) == 1
    assert fired == [incident(bot).id]


def test_an_announcement_the_sweep_posts_fires_on_announced_once(bot: LocalBot) -> None:
    fired: list[int] = []
    bot.ctx.hooks.on_announced.register(lambda _ctx, incident_id: fired.append(incident_id))
    bot.slack.fail("chat.postMessage", status=500, times=3)  # beyond the client's two retries
    assert bot.driver.command("/incident", "open 늦은 공지").status_code == 200
    bot.settle()
    assert fired == []  # no announcement, nothing announced
    with bot.ctx.db.session() as session:
        session.scalars(select(Incident)).one().announce_claimed_until = None  # the lease expires, as time would
    for _ in range(2):
        bot.runtime.sweep()
        bot.settle()
    assert fired == [incident(bot).id] and incident(bot).announcement_ts is not None


# ---- timeline and list -----------------------------------------------------------------------------------------


def test_timeline_is_ephemeral_readable_and_marks_pins(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = clocked
    public_id, ts = open_incident(bot)
    run(bot, "milestone deployed 14:00")
    run(bot, "role lead <@U0SENA|sena>")
    clock.advance(timedelta(minutes=1))
    reply, _ = bot.driver.say(CHANNEL, "U0LEMUN", "p95 850ms <확인>", thread_ts=ts)
    bot.settle()
    bot.driver.react(CHANNEL, reply["ts"], "U0GITCO", "pushpin")
    bot.settle()
    response = bot.driver.command("/incident", "timeline")
    body = response.json()
    assert body["response_type"] == "ephemeral"
    text = body["text"]
    assert f"*`{public_id}` 타임라인*" in text
    assert "• 배포: 2025-10-22 14:00 UTC" not in text  # same day: times only
    assert "• 배포: 14:00 UTC" in text and "• 실패 감지: 14:40 UTC (배포 후 40분)" in text
    lines = text.splitlines()
    assert any(line.startswith("`14:00` ⏱ 배포 시점 기록: 14:00 UTC") for line in lines)
    assert any(line.startswith("`14:41` 📌 p95 850ms &lt;확인&gt; — _Lemun_") for line in lines)
    assert any(line.startswith("`14:40` • 배포 리더 지정: Sena — _Sena_") for line in lines)
    assert lines.index(next(ln for ln in lines if ln.startswith("`14:00`"))) < lines.index(
        next(ln for ln in lines if ln.startswith("`14:41`")))
    assert body["blocks"] and len(body["blocks"]) <= 50
    assert not [c for c in bot.slack.calls("chat.postMessage") if "타임라인*" in c.args.get("text", "")]


def test_timeline_of_a_long_incident_stays_within_slack_limits(bot: LocalBot) -> None:
    open_incident(bot)
    with bot.ctx.db.session() as session:
        stored = session.scalars(select(Incident)).one()
        base = stored.opened_at
        for n in range(400):
            session.add(TimelineEvent(incident_id=stored.id, kind="message", occurred_at=base + timedelta(seconds=n),
                                      author_id="U0LEMUN", author_name="Lemun", text=f"update {n} " + "x" * 500,
                                      slack_channel=CHANNEL, slack_ts=f"{1000 + n}.000100",
                                      highlighted=n == 3))
    body = bot.driver.command("/incident", "timeline").json()
    assert len(body["text"]) < 40_000 and len(body["blocks"]) <= 50
    assert "update 3 " in body["text"] and "update 399 " in body["text"]  # the pin and the latest stay
    assert "update 10 " not in body["text"]
    assert "생략했습니다" in body["text"]


def test_list_shows_open_incidents_here_and_elsewhere(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = clocked
    first, _ = open_incident(bot, "추천 API p95 급증")
    clock.advance(timedelta(minutes=20))
    second, _ = open_incident(bot, "결제 오류 sev:critical", channel="C0PAYMENTS", channel_name="payments")
    third, _ = open_incident(bot, "오탐")
    run(bot, f"{third} status cancelled")
    clock.advance(timedelta(minutes=15))
    answer = run(bot, f"{first} status monitoring")
    answer = run(bot, "list")
    assert f"`{first}` 추천 API p95 급증 — 👀 모니터링 중 · HIGH · 35분 전 시작" in answer
    assert f"`{second}` 결제 오류 — 🔍 조사 중 · CRITICAL · 15분 전 시작 · <#C0PAYMENTS>" in answer
    assert third not in answer
    assert answer.index("이 채널") < answer.index(first) < answer.index("다른 채널") < answer.index(second)


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_list_and_timeline_in_english(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked  # a stopped clock: the age below reads "0 min" however slowly a busy machine answers
    assert "There are no open incidents." in run(bot, "list")
    public_id, _ = open_incident(bot, "Recommendation API p95 spike")
    answer = run(bot, "list")
    assert f"`{public_id}` Recommendation API p95 spike — 🔍 Investigating · HIGH · open for 0 min" in answer
    text = run(bot, "timeline")
    assert f"*`{public_id}` timeline*" in text and "Incident opened: Recommendation API p95 spike" in text


# ---- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "usage"),
    [
        ("status", "바꿀 상태를 적어 주세요", "/incident status investigating|"),
        ("status fixed", "`fixed` 는 알 수 없는 상태", "/incident status"),
        ("severity", "바꿀 심각도를 적어 주세요", "/incident severity critical|high|medium|low"),
        ("severity urgent", "심각도 `urgent`", "/incident severity"),
        ("role", "지정할 역할을 적어 주세요", "/incident role <역할> @사용자"),
        ("role lead", "`@이름` 으로 적어 주세요", "/incident role"),
        ("role wizard <@U0SENA|sena>", "`wizard` 는 알 수 없는 역할", "`lead`(배포 리더)"),
        ("role lead <@U0SENA|sena> <@U0GITCO|gitco>", "한 사람만", "/incident role"),
        ("role lead @sena", "`@sena` 는 Slack 사용자로 알아볼 수 없습니다", "/incident role"),
        ("milestone", "기록할 시점을 적어 주세요", "/incident milestone deployed|"),
        ("milestone detected 14:35:10", "시간으로 읽을 수 없습니다", "HH:MM"),
        ("milestone detected tomorrow", "시간으로 읽을 수 없습니다", "/incident milestone"),
        ("timeline please", "필요 없는 내용", "/incident timeline"),
        ("list everything", "필요 없는 내용", "/incident list"),
    ],
)
def test_bad_input_is_explained_and_stores_nothing(bot: LocalBot, text: str, expected: str, usage: str) -> None:
    open_incident(bot)
    before = count(bot, TimelineEvent), count(bot, RoleAssignment), incident(bot).status, incident(bot).severity
    updates = len(bot.slack.calls("chat.update"))
    answer = run(bot, text)
    assert expected in answer and usage in answer
    after = count(bot, TimelineEvent), count(bot, RoleAssignment), incident(bot).status, incident(bot).severity
    assert after == before and len(bot.slack.calls("chat.update")) == updates


def test_commands_without_an_incident_or_with_several(bot: LocalBot) -> None:
    assert "이 채널에는 사건이 없습니다" in run(bot, "status identified")
    first, _ = open_incident(bot, "첫 번째")
    second, _ = open_incident(bot, "두 번째")
    answer = run(bot, "severity low")
    assert "여러 개" in answer and first in answer and second in answer
    assert f"`{second}` 심각도를 바꿨습니다" in run(bot, f"severity {second} low")
    assert "`INCIDENT-20990101-001` 사건을 찾을 수 없습니다" in run(bot, "status INCIDENT-20990101-001 resolved")


def test_user_text_never_mentions_anyone(bot: LocalBot) -> None:
    open_incident(bot)
    answer = run(bot, "status <!channel>")
    assert "<!channel>" not in answer and "&lt;!channel&gt;" in answer
    answer = run(bot, "role <!here> <@U0SENA|sena>")
    assert "<!here>" not in answer


# ---- parsers: pure, and never raise anything but UsageError -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parsers_only_ever_raise_usage_error(text: str) -> None:
    now = datetime(2025, 10, 22, 14, 40, tzinfo=UTC)
    for parse in (parse_status, parse_severity, lambda t: parse_role(t, DEFAULT_ROLES), parse_milestone):
        with contextlib.suppress(UsageError):
            parse(text)
    try:
        request = parse_milestone(f"detected {text}")
        milestone_time(request.time_text, now, bot_zone())
    except UsageError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}|\d{1,2}:\d{2}", fullmatch=True))
def test_time_parser_survives_extreme_dates(text: str) -> None:
    now = datetime(2025, 10, 22, 14, 40, tzinfo=UTC)
    for zone in ("UTC", "America/New_York", "Pacific/Kiritimati"):
        try:
            at = milestone_time(text, now, bot_zone(zone))
        except UsageError:
            continue
        assert at <= now


def bot_zone(name: str = "Asia/Seoul") -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def test_parsers_read_the_forms_people_type() -> None:
    assert parse_status(" Resolved ") == "resolved"
    assert parse_severity("sev:Critical") == "critical"
    assert parse_role("<@U0SENA|sena> 배포리더", DEFAULT_ROLES).role == "lead"
    assert parse_role("QA 담당자 <@U0QA>", DEFAULT_ROLES).user_name is None
    assert parse_role("DevOps <@U0LUBIT|lubit>", DEFAULT_ROLES).role == "devops"
    with pytest.raises(UsageError) as refused:
        parse_role("배포리더 <@U0SENA|sena>", ("sre",))
    assert refused.value.code == "bad_role"
    assert parse_milestone("복구 14:38").name == "recovered"
    assert parse_milestone("detected   2025-10-22   14:35").time_text == "2025-10-22 14:35"
    assert json.dumps(parse_milestone("resolved").time_text) == "null"
