"""Reminders end to end: signed Slack requests in, thread posts out, the reminders table in between.

Time is a ManualClock and delivery is driven by `reminders.deliver_due` (what the scheduler's sweep runs), so
nothing sleeps for real minutes. SCHEDULER_ENABLED=false keeps the background scheduler from racing the test's
own `deliver_due` calls; the tests that are about the scheduler itself turn it on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot import reminders
from bot.clock import ManualClock
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import ActionItem, Incident, Reminder, Report, RoleAssignment, TimelineEvent
from tests.helpers import open_incident

CHANNEL = "C0INCIDENTS"
T0 = datetime(2025, 10, 22, 14, 15, tzinfo=UTC)
LATE = "⏰ *늦게 도착한 알림*"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def _start(slack: SlackSandbox, database_url: str, clock: ManualClock | None, **env: str) -> LocalBot:
    return LocalBot({"SCHEDULER_ENABLED": "false", **env}, slack=slack, database_url=database_url,
                    clock=clock).start()


@pytest.fixture
def manual_bot(slack: SlackSandbox, database_url: str, clock: ManualClock,
               bot_env: dict[str, str]) -> Iterator[LocalBot]:
    local = _start(slack, database_url, clock, **bot_env)
    try:
        yield local
    finally:
        local.stop()


def thread_texts(bot: LocalBot, thread_ts: str) -> list[str]:
    return [m.get("text", "") for m in bot.slack.thread(CHANNEL, thread_ts)]


def rows(bot: LocalBot, kind: str | None = None) -> list[Reminder]:
    with bot.ctx.db.session() as session:
        query = select(Reminder).order_by(Reminder.due_at, Reminder.id)
        if kind:
            query = query.where(Reminder.kind == kind)
        return list(session.scalars(query).all())


def incident_row(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident).order_by(Incident.id.desc())).first()  # type: ignore[return-value]


def command(bot: LocalBot, command: str, text: str) -> dict[str, Any]:
    response = bot.driver.command(command, text)
    assert response.status_code == 200, response.text
    bot.settle()
    return dict(response.json())


def assign(bot: LocalBot, **roles: str) -> None:
    for role, user in roles.items():
        command(bot, "/incident", f"role {role} <@{user}|{user[3:].lower()}>")
    with bot.ctx.db.session() as session:
        assert len(session.scalars(select(RoleAssignment)).all()) >= len(roles)


def set_status(bot: LocalBot, status: str) -> None:
    command(bot, "/incident", f"status {status}")
    assert incident_row(bot).status == status


def deliver(bot: LocalBot) -> list[reminders.Outcome]:
    return reminders.deliver_due(bot.ctx)


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sent(outcomes: list[reminders.Outcome]) -> int:
    return sum(o.status == "sent" for o in outcomes)


# ---- the RCA kickoff ------------------------------------------------------------------------------------------


def test_rca_kickoff_posts_phase_2_checklist_and_roles_at_its_time(manual_bot: LocalBot, clock: ManualClock) -> None:
    public_id, thread_ts = open_incident(manual_bot)
    assign(manual_bot, lead="U0SENA", backend="U0GITCO")
    by_kind = {r.kind: r for r in rows(manual_bot)}
    assert set(by_kind) == {"rca_kickoff", "meeting_pre", "meeting_start", "report_nudge"}
    assert by_kind["rca_kickoff"].due_at == T0 + timedelta(minutes=30)
    assert by_kind["meeting_pre"].due_at == T0 + timedelta(hours=2) - timedelta(minutes=10)
    assert by_kind["meeting_start"].due_at == T0 + timedelta(hours=2)
    assert by_kind["report_nudge"].due_at == T0 + timedelta(hours=3, minutes=30)

    clock.advance(timedelta(minutes=29))
    assert sent(deliver(manual_bot)) == 0
    assert thread_texts(manual_bot, thread_ts) == []

    clock.advance(timedelta(minutes=1))
    assert sent(deliver(manual_bot)) == 1
    [post] = manual_bot.slack.calls("chat.postMessage")[1:]
    assert post.args["thread_ts"] == thread_ts and post.args["channel"] == CHANNEL
    text = post.args["text"]
    assert f"🔎 *근본 원인 분석 (RCA)을 시작할 시간입니다* · `{public_id}` 추천 API p95 급증" in text
    assert "사건이 등록된 지 30분 지났습니다" in text
    steps = ("코드 변경사항 검토", "에러 로그 분석", "성능 데이터 분석", "테스트 커버리지 검토", "인프라 설정 검토")
    for step in steps:
        assert f"☐ *{step}*" in text
    assert "• 배포 리더: <@U0SENA>" in text and "• 백엔드 엔지니어: <@U0GITCO>" in text
    assert "• DevOps 엔지니어: _미지정_" in text and "`/incident role <역할> @사용자`" in text
    assert "*Post-Mortem 회의:* 16:15 UTC" in text
    assert LATE not in text
    assert post.args["blocks"]

    # Delivered once: the row says so, and another sweep finds nothing to do.
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.sent_at == T0 + timedelta(minutes=30) and rca.message_ts == post.response["ts"]
    assert rca.late is False and rca.attempts == 0
    clock.advance(timedelta(minutes=5))
    assert sent(deliver(manual_bot)) == 0
    assert len(thread_texts(manual_bot, thread_ts)) == 1


@pytest.mark.parametrize("bot_env", [{"POSTMORTEM_MEETING_AFTER": "5m"}])
def test_a_meeting_sooner_than_ten_minutes_gets_no_pre_meeting_reminder(manual_bot: LocalBot) -> None:
    open_incident(manual_bot)
    due = {r.kind: r.due_at for r in rows(manual_bot)}
    # The pre-meeting moment (T0 − 5 min) had passed at open; the meeting itself and the nudge are kept.
    assert due == {"rca_kickoff": T0 + timedelta(minutes=30), "meeting_start": T0 + timedelta(minutes=5),
                   "report_nudge": T0 + timedelta(minutes=95)}


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en", "RCA_REMINDER_AFTER": "45m"}])
def test_rca_kickoff_in_english(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot, "Recommendation API p95 spike")
    clock.advance(timedelta(minutes=45))
    assert sent(deliver(manual_bot)) == 1
    [text] = thread_texts(manual_bot, thread_ts)
    assert "🔎 *Time to start the root cause analysis (RCA)*" in text
    assert "The incident was opened 45 min ago" in text
    for step in ("Review code changes", "Analyze error logs", "Analyze performance data", "Review test coverage",
                 "Review infrastructure config"):
        assert f"☐ *{step}*" in text
    assert "• Deploy lead: _unassigned_" in text and "*Post-mortem meeting:* 16:15 UTC" in text


def test_rca_kickoff_is_dropped_once_the_root_cause_is_recorded(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    command(manual_bot, "/postmortem", "root-cause 추천 엔진 N+1 쿼리")
    clock.advance(timedelta(minutes=30))
    outcomes = deliver(manual_bot)
    assert [o.status for o in outcomes] == ["skipped"]
    assert thread_texts(manual_bot, thread_ts) == []
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.sent_at is None and rca.cancelled_at is not None and "root cause" in (rca.last_error or "")


# ---- the post-mortem meeting ----------------------------------------------------------------------------------


def test_pre_meeting_reminder_names_attendees_and_the_agenda_in_clock_times(
    manual_bot: LocalBot, clock: ManualClock
) -> None:
    public_id, thread_ts = open_incident(manual_bot, "추천 API 부하 테스트 누락으로 p95 급증")
    assign(manual_bot, lead="U0SENA", devops="U0LUBIT", monitoring="U0LEMUN")
    clock.set(T0 + timedelta(hours=2) - timedelta(minutes=10))
    outcomes = deliver(manual_bot)
    assert [o.status for o in outcomes] == ["sent", "sent"]  # the RCA kickoff (late by now), then this one
    rca, pre = thread_texts(manual_bot, thread_ts)
    assert rca.startswith(LATE) and "원래 14:45 UTC 에 보낼 알림이었습니다" in rca
    assert f"📅 *Post-Mortem 회의 10분 전입니다* · `{public_id}`" in pre
    assert "*16:15 UTC* 시작 · 90분 · <#C0INCIDENTS> 채널" in pre
    assert "*참석자 (필수)*\n• 배포 리더: <@U0SENA>\n• 백엔드 엔지니어: _미지정_\n• DevOps 엔지니어: <@U0LUBIT>" in pre
    assert "*참석자 (권장)*\n• 모니터링 담당: <@U0LEMUN>\n• 매니저: _미지정_" in pre
    # The title mentions tests, so QA is recommended outright rather than "when the failure involved tests".
    assert "• QA 담당자 (테스트 관련 실패): _미지정_" in pre
    assert "필수 참석자 중 미지정 역할이 있습니다" in pre
    assert "• 16:15–16:25 타임라인 구성" in pre
    assert "• 16:25–16:55 근본 원인 분석 (5 Whys)" in pre
    assert "• 16:55–17:15 개선사항 도출" in pre
    assert "• 17:15–17:45 액션 아이템 정리" in pre
    assert LATE not in pre
    [row] = rows(manual_bot, "meeting_pre")
    assert row.late is False and row.sent_at is not None
    rca_row = rows(manual_bot, "rca_kickoff")[0]
    assert rca_row.late is True


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en", "INCIDENT_TIMEZONE": "Asia/Seoul"}])
def test_meeting_reminders_in_english_local_time_across_midnight(manual_bot: LocalBot, clock: ManualClock) -> None:
    # 14:15 UTC is 23:15 in Seoul: the meeting falls on the next local day, so dates are shown.
    _, thread_ts = open_incident(manual_bot, "Recommendation API p95 spike")
    assign(manual_bot, backend="U0GITCO")
    with manual_bot.ctx.db.session() as session:
        session.get_one(Reminder, rows(manual_bot, "rca_kickoff")[0].id).cancelled_at = T0  # only the meeting here
    clock.set(T0 + timedelta(minutes=110))
    assert sent(deliver(manual_bot)) == 1
    clock.set(T0 + timedelta(minutes=120))
    assert sent(deliver(manual_bot)) == 1
    pre, start = thread_texts(manual_bot, thread_ts)
    assert "📅 *Post-mortem meeting in 10 minutes*" in pre
    assert "Starts at *2025-10-23 01:15 KST* · 90 min · in <#C0INCIDENTS>" in pre
    assert "*Attendees (required)*\n• Deploy lead: _unassigned_\n• Backend engineer: <@U0GITCO>" in pre
    assert "• QA (when the failure involved tests): _unassigned_" in pre
    assert "• 01:15–01:25 Build the timeline" in pre and "• 01:25–01:55 Root cause analysis (5 Whys)" in pre
    assert "• 01:55–02:15 Improvements" in pre and "• 02:15–02:45 Action items" in pre
    assert "▶️ *The post-mortem meeting starts now*" in start
    assert "2025-10-23 01:15 KST–02:45 (90 min)" in start and "Backend engineer <@U0GITCO>" in start


def test_report_nudge_only_when_no_report_was_posted(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    clock.set(T0 + timedelta(hours=3, minutes=30))
    outcomes = deliver(manual_bot)
    assert [(o.status) for o in outcomes] == ["sent", "skipped", "sent", "sent"]
    texts = thread_texts(manual_bot, thread_ts)
    # Pre-meeting is dropped: the meeting had already started by the time it could be posted.
    assert len(texts) == 3 and texts[0].startswith(LATE) and texts[1].startswith(LATE)
    assert not texts[2].startswith(LATE)  # exactly on time
    assert "🔎 *근본 원인 분석 (RCA)" in texts[0] and "▶️ *Post-Mortem 회의를 시작합니다*" in texts[1]
    assert "📝 *Post-Mortem 회의가 끝났습니다*" in texts[2]
    assert "아직 Post-Mortem 보고서가 게시되지 않았습니다. `/postmortem report`" in texts[-1]


def test_report_nudge_is_dropped_when_a_report_exists(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    assert manual_bot.driver.command("/postmortem", "report").status_code == 200
    manual_bot.settle()
    with manual_bot.ctx.db.session() as session:
        assert session.scalars(select(Report.posted_at)).one() is not None
    clock.set(T0 + timedelta(hours=3, minutes=30))
    deliver(manual_bot)
    [nudge] = rows(manual_bot, "report_nudge")
    assert nudge.sent_at is None and nudge.cancelled_at is not None and "report" in (nudge.last_error or "")
    assert not any("📝" in t for t in thread_texts(manual_bot, thread_ts))


# ---- moving the meeting ---------------------------------------------------------------------------------------


def test_moving_the_meeting_moves_its_reminders(manual_bot: LocalBot, clock: ManualClock) -> None:
    public_id, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=20))  # 14:35
    response = manual_bot.driver.command("/incident", "meeting 17:30")
    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    assert f"`{public_id}` Post-Mortem 회의를 *17:30 UTC* 로 옮겼습니다 (이전: 16:15 UTC)" in body["text"]
    manual_bot.settle()

    new = datetime(2025, 10, 22, 17, 30, tzinfo=UTC)
    assert incident_row(manual_bot).meeting_at == new
    due = {r.kind: r.due_at for r in rows(manual_bot)}
    assert due["meeting_pre"] == new - timedelta(minutes=10)
    assert due["meeting_start"] == new
    assert due["report_nudge"] == new + timedelta(minutes=90)
    assert due["rca_kickoff"] == T0 + timedelta(minutes=30)
    with manual_bot.ctx.db.session() as session:
        event = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "system")
                                .order_by(TimelineEvent.id.desc())).first()
        assert event is not None and event.data is not None
        assert event.data["action"] == "meeting" and event.author_id == "U0SENA"
        assert (event.data["old_display"], event.data["new_display"]) == ("16:15 UTC", "17:30 UTC")
    [update] = manual_bot.slack.calls("chat.update")
    assert "*Post-Mortem 회의:* 17:30 UTC" in update.args["text"]

    # Nothing fires at the old times; everything fires at the new ones.
    clock.set(datetime(2025, 10, 22, 16, 15, tzinfo=UTC))
    assert [o.status for o in deliver(manual_bot)] == ["sent"]  # only the RCA kickoff (late)
    clock.set(new - timedelta(minutes=10))
    assert [o.status for o in deliver(manual_bot)] == ["sent"]
    assert "*17:30 UTC* 시작" in thread_texts(manual_bot, thread_ts)[-1]


def test_moving_the_meeting_to_its_own_time_changes_nothing(manual_bot: LocalBot, clock: ManualClock) -> None:
    public_id, _ = open_incident(manual_bot)
    before = [(r.id, r.kind, r.due_at, r.cancelled_at) for r in rows(manual_bot)]
    updates = len(manual_bot.slack.calls("chat.update"))
    clock.advance(timedelta(minutes=5))
    body = manual_bot.driver.command("/incident", "meeting 16:15").json()
    assert f"`{public_id}` Post-Mortem 회의는 이미 16:15 UTC 입니다" in body["text"]
    manual_bot.settle()
    assert [(r.id, r.kind, r.due_at, r.cancelled_at) for r in rows(manual_bot)] == before
    with manual_bot.ctx.db.session() as session:
        system = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "system")).all()
        actions = [e.data["action"] for e in system]
    assert "meeting" not in actions
    assert len(manual_bot.slack.calls("chat.update")) == updates


def test_meeting_moved_within_ten_minutes_skips_the_pre_reminder_but_not_the_start(
    manual_bot: LocalBot, clock: ManualClock
) -> None:
    _, thread_ts = open_incident(manual_bot)
    clock.set(datetime(2025, 10, 22, 14, 40, 30, tzinfo=UTC))
    body = manual_bot.driver.command("/incident", "meeting 14:45").json()
    assert "10분 전 알림은 보내지 않고, 회의 시작 알림만 보냅니다" in body["text"]
    manual_bot.settle()
    [pre] = rows(manual_bot, "meeting_pre")
    assert pre.cancelled_at is not None and pre.sent_at is None
    clock.set(datetime(2025, 10, 22, 14, 45, tzinfo=UTC))
    outcomes = deliver(manual_bot)
    assert [o.status for o in outcomes] == ["sent", "sent"]  # RCA kickoff (14:45) and the meeting start
    assert "▶️ *Post-Mortem 회의를 시작합니다*" in thread_texts(manual_bot, thread_ts)[-1]


def test_moving_after_a_reminder_was_sent_re_arms_it(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    clock.set(T0 + timedelta(hours=2))
    deliver(manual_bot)
    assert sum("Post-Mortem 회의를 시작합니다" in t for t in thread_texts(manual_bot, thread_ts)) == 1
    # The meeting did not happen after all: tomorrow 10:00.
    manual_bot.driver.command("/incident", "meeting 2025-10-23 10:00")
    manual_bot.settle()
    [start] = rows(manual_bot, "meeting_start")
    assert start.sent_at is None and start.due_at == datetime(2025, 10, 23, 10, 0, tzinfo=UTC)
    clock.set(datetime(2025, 10, 23, 10, 0, tzinfo=UTC))
    deliver(manual_bot)
    texts = thread_texts(manual_bot, thread_ts)
    assert sum("Post-Mortem 회의를 시작합니다" in t for t in texts) == 2
    assert "2025-10-23 10:00 UTC–11:30" in texts[-1]


@pytest.mark.parametrize(("text", "expected"), [
    ("meeting", "회의 시간이 없습니다"),
    ("meeting 25:99", "`25:99` 는 시간으로 읽을 수 없습니다"),
    ("meeting tomorrow", "`tomorrow` 는 시간으로 읽을 수 없습니다"),
    ("meeting 2025-10-21 10:00", "2025-10-21 10:00 UTC 는 이미 지난 시간입니다"),
])
def test_bad_meeting_input_answers_ephemerally_and_stores_nothing(
    manual_bot: LocalBot, text: str, expected: str
) -> None:
    open_incident(manual_bot)
    before = [(r.kind, r.due_at) for r in rows(manual_bot)]
    body = manual_bot.driver.command("/incident", text).json()
    assert body["response_type"] == "ephemeral"
    assert expected in body["text"] and "사용법: `/incident meeting HH:MM | YYYY-MM-DD HH:MM`" in body["text"]
    manual_bot.settle()
    assert [(r.kind, r.due_at) for r in rows(manual_bot)] == before
    assert incident_row(manual_bot).meeting_at == T0 + timedelta(hours=2)
    assert manual_bot.slack.calls("chat.update") == []


# ---- resolving and cancelling ---------------------------------------------------------------------------------


def test_cancelling_cancels_every_pending_reminder(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=5))
    set_status(manual_bot, "cancelled")
    assert all(r.cancelled_at is not None and r.sent_at is None for r in rows(manual_bot))
    clock.set(T0 + timedelta(hours=5))
    assert deliver(manual_bot) == []
    assert reminder_texts(manual_bot, thread_ts) == []
    body = manual_bot.driver.command("/incident", "meeting 18:00").json()
    assert "취소되어 Post-Mortem 회의가 없습니다" in body["text"]


def test_reopening_restores_what_the_cancellation_took(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    set_status(manual_bot, "cancelled")
    clock.advance(timedelta(minutes=45))  # the RCA kickoff's moment passes while cancelled
    set_status(manual_bot, "investigating")  # reopens it
    pending = {r.kind for r in rows(manual_bot) if r.cancelled_at is None}
    assert pending == {"meeting_pre", "meeting_start", "report_nudge"}
    clock.set(T0 + timedelta(minutes=110))
    assert sent(deliver(manual_bot)) == 1
    clock.set(T0 + timedelta(hours=2))
    assert sent(deliver(manual_bot)) == 1
    assert len(reminder_texts(manual_bot, thread_ts)) == 2


def test_resolving_keeps_the_postmortem_and_drops_what_says_nothing_new(
    manual_bot: LocalBot, clock: ManualClock
) -> None:
    # The guide's flow: rollback done and resolved within 20 minutes; the RCA and meeting come after recovery.
    _, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=20))
    set_status(manual_bot, "resolved")
    assert all(r.cancelled_at is None for r in rows(manual_bot))
    clock.set(T0 + timedelta(minutes=110))
    assert sent(deliver(manual_bot)) == 2  # the RCA kickoff and the pre-meeting reminder
    clock.set(T0 + timedelta(hours=2))
    assert sent(deliver(manual_bot)) == 1  # the meeting start

    # Once the report exists, resolving again (after a reopen) drops the nudge at once.
    command(manual_bot, "/postmortem", "report")
    set_status(manual_bot, "investigating")
    set_status(manual_bot, "resolved")
    [nudge] = rows(manual_bot, "report_nudge")
    assert nudge.cancelled_at is not None and nudge.sent_at is None
    clock.set(T0 + timedelta(hours=4))
    assert deliver(manual_bot) == []
    assert len(reminder_texts(manual_bot, thread_ts)) == 3


# ---- failures, restarts, replicas -----------------------------------------------------------------------------


def test_slack_500s_are_retried_later_and_delivered_once(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=30))
    # Three 500s exhaust the client's own retries (1 + 2): the domain sees one failed attempt.
    manual_bot.slack.fail("chat.postMessage", 500, times=3)
    [outcome] = deliver(manual_bot)
    assert outcome.status == "failed"
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.sent_at is None and rca.cancelled_at is None and rca.attempts == 1
    assert rca.last_error and rca.claimed_until == clock.now() + reminders.retry_delay(1)
    assert thread_texts(manual_bot, thread_ts) == []

    assert deliver(manual_bot) == []  # backing off
    clock.advance(reminders.retry_delay(1) + timedelta(seconds=1))
    assert [o.status for o in deliver(manual_bot)] == ["sent"]
    [text] = thread_texts(manual_bot, thread_ts)
    assert "근본 원인 분석 (RCA)" in text
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.sent_at is not None and rca.last_error is None and rca.attempts == 1
    clock.advance(timedelta(hours=1))
    deliver(manual_bot)
    assert sum("근본 원인 분석 (RCA)" in t for t in thread_texts(manual_bot, thread_ts)) == 1


def test_a_reminder_whose_post_landed_unanswered_is_found_by_its_retry_not_posted_again(
    manual_bot: LocalBot, clock: ManualClock,
) -> None:
    """Slack took the post but its answer timed out, and so did the look for it: the attempt fails with the outcome
    unknown. The retry looks in the thread for the reminder's metadata first, and finds it."""
    _, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=30))
    manual_bot.ctx.messenger.client.timeout = 1
    manual_bot.slack.slow_once("chat.postMessage", 1.5)
    manual_bot.slack.slow_once("conversations.replies", 1.5)
    assert [o.status for o in deliver(manual_bot)] == ["failed"]
    [landed] = manual_bot.slack.thread(CHANNEL, thread_ts)
    clock.advance(reminders.retry_delay(1) + timedelta(seconds=1))
    assert [o.status for o in deliver(manual_bot)] == ["sent"]
    assert [m["ts"] for m in manual_bot.slack.thread(CHANNEL, thread_ts)] == [landed["ts"]]
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.sent_at is not None and rca.message_ts == landed["ts"]


def test_a_reminder_posted_by_a_process_that_went_before_marking_it_is_not_posted_again(
    manual_bot: LocalBot, clock: ManualClock,
) -> None:
    """Slack took the post and the process went before marking the row sent (here: its answer is still on the way
    when the claim lapses). The next delivery finds the post by its metadata instead of posting it again."""
    _, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=30))
    manual_bot.slack.slow_once("chat.postMessage", 3.0)  # carried out at once, answered 3 s later
    first = threading.Thread(target=deliver, args=(manual_bot,))
    first.start()
    try:
        wait_until(lambda: len(manual_bot.slack.thread(CHANNEL, thread_ts)) == 1)
        clock.advance(reminders.CLAIM_LEASE + timedelta(seconds=1))  # as time would: the claim lapsed
        assert [o.status for o in deliver(manual_bot)] == ["sent"]
    finally:
        first.join(timeout=30)
    [posted] = manual_bot.slack.thread(CHANNEL, thread_ts)
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.sent_at is not None and rca.message_ts == posted["ts"]
    assert posted["metadata"] == reminders.reminder_metadata(rca.id, rca.due_at)


def test_a_reminder_that_slack_keeps_refusing_is_given_up_with_its_reason(
    manual_bot: LocalBot, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reminders, "MAX_ATTEMPTS", 2)
    _, thread_ts = open_incident(manual_bot)
    clock.advance(timedelta(minutes=30))
    manual_bot.slack.fail("chat.postMessage", 200, times=2, error="channel_not_found")
    assert [o.status for o in deliver(manual_bot)] == ["failed"]
    clock.advance(reminders.retry_delay(1) + timedelta(seconds=1))
    assert [(o.status, o.detail) for o in deliver(manual_bot)] == [("failed", "gave up")]
    [rca] = rows(manual_bot, "rca_kickoff")
    assert rca.attempts == 2 and rca.sent_at is None and rca.cancelled_at is not None
    assert (rca.last_error or "").startswith("gave up: channel_not_found")
    clock.advance(timedelta(hours=1))
    assert [o.status for o in deliver(manual_bot)] == []
    assert thread_texts(manual_bot, thread_ts) == []


def test_a_reminder_waits_for_the_incident_thread(manual_bot: LocalBot, clock: ManualClock) -> None:
    manual_bot.slack.fail("chat.postMessage", 500, times=3)
    manual_bot.driver.command("/incident", "open 공지 실패 테스트")
    manual_bot.settle()
    assert incident_row(manual_bot).announcement_ts is None
    clock.advance(timedelta(minutes=30))
    assert [o.status for o in deliver(manual_bot)] == ["waiting"]
    manual_bot.runtime.sweep()  # the announcement retry posts the thread's parent
    thread_ts = incident_row(manual_bot).announcement_ts
    assert thread_ts is not None
    clock.advance(reminders.THREAD_WAIT + timedelta(seconds=1))
    assert [o.status for o in deliver(manual_bot)] == ["sent"]
    assert len(thread_texts(manual_bot, thread_ts)) == 1


def test_restart_delivers_a_missed_reminder_once_marked_late(
    slack: SlackSandbox, database_url: str, clock: ManualClock
) -> None:
    first = _start(slack, database_url, clock, SCHEDULER_ENABLED="true")
    try:
        _, thread_ts = open_incident(first)
    finally:
        first.stop()
    clock.advance(timedelta(minutes=40))  # down across the RCA kickoff's time
    second = _start(slack, database_url, clock, SCHEDULER_ENABLED="true")
    try:
        # The scheduler's first sweep runs at start, in the background.
        wait_until(lambda: rows(second, "rca_kickoff")[0].sent_at is not None)
        texts = [m["text"] for m in slack.thread(CHANNEL, thread_ts)]
        assert len(texts) == 1
        assert texts[0].startswith(LATE) and "원래 14:45 UTC 에 보낼 알림이었습니다" in texts[0]
        assert "근본 원인 분석 (RCA)" in texts[0]
        [rca] = rows(second, "rca_kickoff")
        assert rca.late is True and rca.sent_at == T0 + timedelta(minutes=40)
        assert deliver(second) == []
    finally:
        second.stop()


def test_two_bots_on_one_database_deliver_each_reminder_once(
    slack: SlackSandbox, database_url: str, clock: ManualClock
) -> None:
    bots = [_start(slack, database_url, clock) for _ in range(2)]
    try:
        threads = [open_incident(bots[i % 2], f"동시성 {i}")[1] for i in range(4)]
        clock.set(T0 + timedelta(hours=4))
        results: list[list[reminders.Outcome]] = [[], []]
        barrier = threading.Barrier(2)

        def sweep(index: int) -> None:
            barrier.wait()
            for _ in range(3):
                results[index].extend(reminders.deliver_due(bots[index].ctx))

        workers = [threading.Thread(target=sweep, args=(i,)) for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        posted = sum(o.status == "sent" for outcome in results for o in outcome)
        assert posted == 4 * 3  # RCA, meeting start, report nudge per incident; the pre-meeting was too late
        for thread_ts in threads:
            assert len(slack.thread(CHANNEL, thread_ts)) == 3
        assert all(r.sent_at is not None or r.kind == "meeting_pre" for r in rows(bots[0]))
    finally:
        for bot in bots:
            bot.stop()


def test_the_runtime_sweep_delivers_unless_the_scheduler_is_disabled(
    slack: SlackSandbox, database_url: str, clock: ManualClock
) -> None:
    disabled = _start(slack, database_url, clock)  # SCHEDULER_ENABLED=false
    try:
        _, thread_ts = open_incident(disabled)
        clock.advance(timedelta(minutes=30))
        disabled.runtime.sweep()
        assert slack.thread(CHANNEL, thread_ts) == []
    finally:
        disabled.stop()
    # A script that drives the runtime by hand (background=False starts no scheduler thread), like the demo.
    driven = LocalBot({"SCHEDULER_ENABLED": "true"}, slack=slack, database_url=database_url, clock=clock)
    driven.start(background=False)
    try:
        driven.runtime.sweep()
        [message] = slack.thread(CHANNEL, thread_ts)
        assert "근본 원인 분석 (RCA)" in message["text"]
    finally:
        driven.stop()


@pytest.mark.parametrize("bot_env", [{"RCA_REMINDER_AFTER": "2s"}])
def test_the_scheduler_posts_at_the_due_time(bot: LocalBot) -> None:
    # Real clock, scheduler on (the default): the APScheduler job fires two seconds after open.
    _, thread_ts = open_incident(bot)
    wait_until(lambda: rows(bot, "rca_kickoff")[0].sent_at is not None)
    [message] = bot.slack.thread(CHANNEL, thread_ts)
    assert "근본 원인 분석 (RCA)" in message["text"] and "사건이 등록된 지 2초 지났습니다" in message["text"]
    [rca] = rows(bot, "rca_kickoff")
    assert rca.sent_at is not None and rca.sent_at - rca.due_at < timedelta(seconds=5) and not rca.late
    # The timer job lived in this process's scheduler and is gone once run.
    sched = reminders.scheduler(bot.ctx)
    assert sched is not None and sched.next_wake(rca.id) is None


# ---- action items ---------------------------------------------------------------------------------------------


def add_action(bot: LocalBot, text: str) -> ActionItem:
    """`/postmortem action …` through Slack; returns the stored item."""
    command(bot, "/postmortem", f"action {text}")
    with bot.ctx.db.session() as session:
        item = session.scalars(select(ActionItem).order_by(ActionItem.id.desc())).first()
        assert item is not None
        return item


def press_done(bot: LocalBot, item: ActionItem) -> None:
    """The ✅ button on the item's message in the thread."""
    response = bot.driver.block_action("postmortem.action.done", str(item.id), message_ts=item.message_ts)
    assert response.status_code == 200
    bot.settle()


REMINDER_MARKS = ("🔎", "📅", "▶️", "📝", "⏳", "⚠️")


def reminder_texts(bot: LocalBot, thread_ts: str) -> list[str]:
    """The reminders among the thread's messages (status changes and action items post there too)."""
    texts = []
    for text in thread_texts(bot, thread_ts):
        body = text.split("\n\n", 1)[1] if text.startswith(LATE) else text
        if body.startswith(REMINDER_MARKS):
            texts.append(text)
    return texts


def only_action_reminders(bot: LocalBot) -> None:
    with bot.ctx.db.session() as session:
        for row in session.scalars(select(Reminder).where(Reminder.action_item_id.is_(None))).all():
            row.cancelled_at = T0  # the incident's own reminders are other tests' business


@pytest.mark.parametrize("bot_env", [{"INCIDENT_TIMEZONE": "Asia/Seoul"}])
def test_action_item_due_day_and_overdue_reminders(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    only_action_reminders(manual_bot)
    # `due:2d` from 23:15 KST on the 22nd: due 2025-10-24 23:15 KST.
    item = add_action(manual_bot, 'P0 "추천엔진 N+1 쿼리 수정" <@U0GITCO|gitco> due:2d')
    assert item.due_at == T0 + timedelta(days=2)
    by_kind = {r.kind: r for r in rows(manual_bot) if r.action_item_id == item.id}
    assert by_kind["action_due"].due_at == datetime(2025, 10, 24, 0, 0, tzinfo=UTC)  # 09:00 KST on the 24th
    assert by_kind["action_overdue"].due_at == datetime(2025, 10, 25, 0, 0, tzinfo=UTC)

    clock.set(datetime(2025, 10, 23, 23, 59, tzinfo=UTC))
    assert deliver(manual_bot) == []
    clock.set(datetime(2025, 10, 24, 0, 0, tzinfo=UTC))
    assert sent(deliver(manual_bot)) == 1
    [text] = reminder_texts(manual_bot, thread_ts)
    assert "⏳ <@U0GITCO> 오늘이 액션 아이템 기한입니다" in text
    assert "*[P0] 추천엔진 N+1 쿼리 수정* — 기한 2025-10-24" in text and "*✅ 완료*" in text

    clock.set(datetime(2025, 10, 25, 0, 0, tzinfo=UTC))
    assert sent(deliver(manual_bot)) == 1
    assert "⚠️ <@U0GITCO> 액션 아이템 기한이 지났습니다" in reminder_texts(manual_bot, thread_ts)[-1]


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_action_item_reminders_in_english(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    only_action_reminders(manual_bot)
    add_action(manual_bot, 'P1 "Raise the load-test bar" <@U0LUBIT|lubit> due:2025-10-29')
    clock.set(datetime(2025, 10, 29, 9, 0, tzinfo=UTC))
    deliver(manual_bot)
    clock.set(datetime(2025, 10, 30, 9, 0, tzinfo=UTC))
    deliver(manual_bot)
    due, overdue = reminder_texts(manual_bot, thread_ts)
    assert "⏳ <@U0LUBIT> an action item is due today" in due
    assert "*[P1] Raise the load-test bar* — due 2025-10-29" in due
    assert "⚠️ <@U0LUBIT> an action item is overdue" in overdue and "was due 2025-10-29" in overdue


def test_action_item_reminders_skip_done_items_and_follow_edits(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    assign(manual_bot, lead="U0SENA")
    only_action_reminders(manual_bot)
    done = add_action(manual_bot, 'P1 "부하테스트 기준 상향" <@U0LUBIT|lubit> due:1w')
    moved = add_action(manual_bot, 'P2 "모니터링 알림 강화" due:2d')
    gone = add_action(manual_bot, 'P3 "팀 교육 프로그램" <@U0SENA|sena> due:2d')
    # Done before its day: both reminders go.
    press_done(manual_bot, done)
    # A new due date (as an edit would store it): the reminders follow it.
    with manual_bot.ctx.db.session() as session:
        item = session.get_one(ActionItem, moved.id)
        item.due_at = T0 + timedelta(days=14)
        reminders.schedule_action_item(manual_bot.ctx, session, item)
    # Removed: nothing left to remind.
    with manual_bot.ctx.db.session() as session:
        reminders.cancel_action_item(manual_bot.ctx, session, gone.id)
    pending = [(r.action_item_id, r.kind, r.due_at) for r in rows(manual_bot) if r.cancelled_at is None]
    assert pending == [
        (moved.id, "action_due", datetime(2025, 11, 5, 9, 0, tzinfo=UTC)),
        (moved.id, "action_overdue", datetime(2025, 11, 6, 9, 0, tzinfo=UTC)),
    ]
    clock.set(datetime(2025, 11, 5, 9, 0, tzinfo=UTC))
    assert sent(deliver(manual_bot)) == 1
    [text] = reminder_texts(manual_bot, thread_ts)
    assert "⏳ <@U0SENA> 담당자가 없는 액션 아이템의 기한이 오늘입니다" in text and "모니터링 알림 강화" in text
    # Done after the due-day post but before the overdue nudge: the nudge would say nothing new.
    press_done(manual_bot, moved)
    clock.set(datetime(2025, 11, 6, 9, 0, tzinfo=UTC))
    assert deliver(manual_bot) == []
    assert len(reminder_texts(manual_bot, thread_ts)) == 1


def test_a_reopened_action_item_is_reminded_again(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot)
    only_action_reminders(manual_bot)
    item = add_action(manual_bot, 'P0 "쿼리 수정" <@U0GITCO|gitco> due:2d')
    press_done(manual_bot, item)
    assert all(r.cancelled_at is not None for r in rows(manual_bot) if r.action_item_id == item.id)
    response = manual_bot.driver.block_action("postmortem.action.reopen", str(item.id), message_ts=item.message_ts)
    assert response.status_code == 200
    manual_bot.settle()
    assert all(r.cancelled_at is None for r in rows(manual_bot) if r.action_item_id == item.id)
    clock.set(datetime(2025, 10, 24, 9, 0, tzinfo=UTC))
    assert sent(deliver(manual_bot)) == 1
    assert "⏳ <@U0GITCO> 오늘이 액션 아이템 기한입니다" in reminder_texts(manual_bot, thread_ts)[0]


def test_an_action_item_due_later_today_gets_only_the_overdue_nudge(
    manual_bot: LocalBot, clock: ManualClock
) -> None:
    open_incident(manual_bot)
    # 14:15 UTC on the 22nd: today's 09:00 has passed, so there is no "due today" post, only tomorrow's nudge.
    item = add_action(manual_bot, 'P0 "핫픽스 배포" <@U0GITCO|gitco> due:2025-10-22')
    assert {r.kind: r.due_at for r in rows(manual_bot) if r.action_item_id == item.id} == {
        "action_overdue": datetime(2025, 10, 23, 9, 0, tzinfo=UTC)}


def test_cancelling_the_incident_cancels_its_action_reminders(manual_bot: LocalBot, clock: ManualClock) -> None:
    open_incident(manual_bot)
    add_action(manual_bot, 'P0 "쿼리 수정" <@U0GITCO|gitco> due:2d')
    set_status(manual_bot, "cancelled")
    assert all(r.cancelled_at is not None for r in rows(manual_bot))


def test_user_text_in_reminders_cannot_mention_anyone(manual_bot: LocalBot, clock: ManualClock) -> None:
    _, thread_ts = open_incident(manual_bot, "<!channel> p95 & <@U0SENA> 급증")
    clock.advance(timedelta(minutes=30))
    deliver(manual_bot)
    [text] = thread_texts(manual_bot, thread_ts)
    assert "&lt;!channel&gt; p95 &amp; &lt;@U0SENA&gt; 급증" in text
    assert "<!channel>" not in text
