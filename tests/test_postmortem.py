"""`/postmortem` content end to end: signed slash commands, button and checkbox clicks and the edit modal go
through real HTTP; each test checks what the database holds and what reached Slack (and the rendered report)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot import postmortem
from bot.clock import ManualClock
from bot.report import render_report
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import ActionItem, ChecklistItem, ImpactValue, Incident, Note, Reminder, TimelineEvent, Why
from tests.helpers import count, open_incident, posted_texts

CHANNEL = "C0INCIDENTS"
START = datetime(2025, 10, 22, 5, 0, tzinfo=UTC)  # 14:00 in Seoul


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def seoul(database_url: str, clock: ManualClock) -> Iterator[LocalBot]:
    """The bot (and Slack's message timestamps) on a manual clock in Asia/Seoul, so due dates are exact."""
    with SlackSandbox(clock=lambda: clock.now().timestamp()) as slack:
        local = LocalBot({"INCIDENT_TIMEZONE": "Asia/Seoul"}, slack=slack, database_url=database_url, clock=clock)
        local.start()
        try:
            yield local
        finally:
            local.stop()


def pm(bot: LocalBot, text: str, **kw: Any) -> str:
    """Runs `/postmortem <text>`; returns the ephemeral answer after the background work settled."""
    response = bot.driver.command("/postmortem", text, **kw)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_type"] == "ephemeral"
    bot.settle()
    return str(body["text"])


def incident(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident).order_by(Incident.id.desc())).first()  # type: ignore[return-value]


def report(bot: LocalBot, locale: str = "ko") -> str:
    return render_report(bot.ctx, incident(bot).id, locale)


def whys(bot: LocalBot) -> list[tuple[int, str]]:
    with bot.ctx.db.session() as session:
        return [(w.position, w.text) for w in session.scalars(select(Why).order_by(Why.position))]


def item(bot: LocalBot, item_id: int | None = None) -> ActionItem:
    with bot.ctx.db.session() as session:
        query = select(ActionItem).order_by(ActionItem.id.desc())
        if item_id is not None:
            query = query.where(ActionItem.id == item_id)
        return session.scalars(query).first()  # type: ignore[return-value]


def thread_message(bot: LocalBot, thread_ts: str, needle: str) -> dict[str, Any]:
    [message] = [m for m in bot.slack.thread(CHANNEL, thread_ts) if needle in json.dumps(m, ensure_ascii=False)]
    return message


def buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


# --------------------------------------------------------------------------------------------- 5 Whys


def test_whys_are_numbered_edited_and_removed_with_renumbering(bot: LocalBot) -> None:
    open_incident(bot)
    assert "1번" in pm(bot, "why 왜 응답 시간이 증가했나? → 데이터베이스 쿼리 시간이 400ms 소요")
    pm(bot, "why 왜 쿼리 시간이 길어졌나? 400번의 개별 쿼리 발생 (N+1 문제)")
    pm(bot, "why 추천 엔진 코드에 조인 대신 루프 쿼리 사용")
    pm(bot, "why 4번째는 곧 지운다")
    assert whys(bot)[2] == (3, "추천 엔진 코드에 조인 대신 루프 쿼리 사용")

    assert "고쳤습니다" in pm(bot, "why 3 왜 N+1 문제가 있었나? → 추천 엔진 코드에 조인 대신 루프 쿼리 사용")
    answer = pm(bot, "why 2 -")
    assert "1–3번" in answer
    assert [w[0] for w in whys(bot)] == [1, 2, 3]
    assert whys(bot)[1][1].startswith("왜 N+1 문제가 있었나?")

    document = report(bot)
    assert (
        "## 근본 원인 분석 (5 Whys)\n"
        "1. **왜 응답 시간이 증가했나?**\n   - 데이터베이스 쿼리 시간이 400ms 소요\n\n"
        "2. **왜 N+1 문제가 있었나?**\n   - 추천 엔진 코드에 조인 대신 루프 쿼리 사용\n\n"
        "3. **왜?**\n   - 4번째는 곧 지운다\n"
    ) in document


def test_why_errors_store_nothing(bot: LocalBot) -> None:
    open_incident(bot)
    pm(bot, "why 첫 번째")
    answer = pm(bot, "why 5 바꿀 내용")
    assert "5번 '왜'가 없습니다 (지금 1–1번)" in answer and "/postmortem why 3 -" in answer
    assert "1–" in pm(bot, "why 7 -")
    assert "사용법" in pm(bot, "why")
    assert whys(bot) == [(1, "첫 번째")]


# --------------------------------------------------------------------------------------------- root cause


def test_root_cause_is_stored_and_the_announcement_shows_it(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    pm(bot, "root-cause 추천 엔진의 N+1 쿼리 문제로 인해 응답 시간이 과도하게 증가했습니다.")
    assert incident(bot).root_cause == "추천 엔진의 N+1 쿼리 문제로 인해 응답 시간이 과도하게 증가했습니다."
    updates = [c for c in bot.slack.calls("chat.update") if c.args["ts"] == thread_ts]
    assert updates and "원인: 추천 엔진의 N+1 쿼리 문제" in updates[-1].args["text"]
    assert "## 근본 원인\n추천 엔진의 N+1 쿼리 문제로 인해 응답 시간이 과도하게 증가했습니다.\n" in report(bot)


# --------------------------------------------------------------------------------------------- action items


def test_action_item_is_stored_posted_with_buttons_and_schedules_the_owners_reminders(
    seoul: LocalBot, clock: ManualClock
) -> None:
    bot = seoul
    _, thread_ts = open_incident(bot)
    bot.driver.say(CHANNEL, "U0GITCO", "N+1 확인했습니다", thread_ts=thread_ts)
    answer = pm(bot, 'action P0 "N+1 쿼리 수정 (조인으로 변경)" <@U0GITCO|gitco> due:2d impact:critical')
    assert "[P0] N+1 쿼리 수정 (조인으로 변경)" in answer and "<@U0GITCO>" in answer

    stored = item(bot)
    assert (stored.priority, stored.task, stored.owner_id, stored.impact, stored.status) == (
        "P0", "N+1 쿼리 수정 (조인으로 변경)", "U0GITCO", "critical", "open")
    assert stored.due_at == START + timedelta(days=2)
    # The item's message is in the thread, with its buttons, and its ts is stored.
    message = thread_message(bot, thread_ts, "N+1 쿼리 수정")
    assert stored.message_ts == message["ts"]
    assert buttons(message) == ["postmortem.action.start", "postmortem.action.done"]
    assert "<@U0GITCO>" in message["text"] and "2025-10-24 (금)" in message["text"]
    # The reminders domain scheduled the owner's due-day and overdue reminders.
    with bot.ctx.db.session() as session:
        reminders = session.scalars(select(Reminder).where(Reminder.action_item_id == stored.id)).all()
        assert len(reminders) == 2 and all(r.cancelled_at is None for r in reminders)

    # A date is that day in INCIDENT_TIMEZONE; the report shows dates and names, not ids.
    pm(bot, 'action P1 "Staging 데이터 크기 프로덕션 동기화" @DevOps due:2025-10-29')
    assert item(bot).due_at == datetime(2025, 10, 29, 14, 59, 59, tzinfo=UTC)  # 23:59:59 KST
    pm(bot, "action p2 데이터베이스 모니터링 강화")
    document = report(bot)
    assert "| 우선순위 | 작업 | 담당자 | 기한 | 영향도 | 상태 |" in document
    assert "| P0 | N+1 쿼리 수정 (조인으로 변경) | Gitco | 2025-10-24 | Critical | [  ] |" in document
    assert "| P1 | Staging 데이터 크기 프로덕션 동기화 | DevOps | 2025-10-29 | - | [  ] |" in document
    assert "| P2 | 데이터베이스 모니터링 강화 | - | - | - | [  ] |" in document
    assert "_완료 0/3_" in document


def test_buttons_move_the_status_update_the_message_and_the_reminders(seoul: LocalBot) -> None:
    bot = seoul
    open_incident(bot)
    pm(bot, 'action P0 "N+1 쿼리 수정" <@U0GITCO|gitco> due:2d')
    stored = item(bot)

    def click(name: str, user: str = "U0GITCO") -> dict[str, Any]:
        response = bot.driver.block_action(f"postmortem.action.{name}", str(stored.id), user=user,
                                           message_ts=stored.message_ts)
        assert response.status_code == 200
        bot.settle()
        return bot.slack.message(CHANNEL, stored.message_ts)  # type: ignore[return-value]

    message = click("start")
    assert item(bot).status == "in_progress"
    assert "🔄 진행 중" in message["text"] and buttons(message) == ["postmortem.action.done",
                                                                    "postmortem.action.reopen"]
    message = click("done")
    done = item(bot)
    assert done.status == "done" and done.done_at == START
    assert "✅ 완료" in message["text"] and buttons(message) == ["postmortem.action.start",
                                                                 "postmortem.action.reopen"]
    with bot.ctx.db.session() as session:
        assert all(r.cancelled_at is not None
                   for r in session.scalars(select(Reminder).where(Reminder.action_item_id == stored.id)))
    assert "[x] 완료" in report(bot)

    updates = len(bot.slack.calls("chat.update"))
    click("done", user="U0SENA")  # a second click on a stale button changes nothing
    assert item(bot).status == "done" and item(bot).done_at == START
    assert len(bot.slack.calls("chat.update")) == updates + 1  # the message is refreshed, without a new "by"

    message = click("reopen")
    reopened = item(bot)
    assert reopened.status == "open" and reopened.done_at is None
    assert "⬜ 할 일" in message["text"] and buttons(message) == ["postmortem.action.start",
                                                                 "postmortem.action.done"]


def test_reopening_a_done_item_re_arms_its_reminders(seoul: LocalBot) -> None:
    bot = seoul
    open_incident(bot)
    pm(bot, 'action P0 "N+1 쿼리 수정" <@U0GITCO|gitco> due:2d')
    stored = item(bot)
    for name in ("done", "reopen"):
        bot.driver.block_action(f"postmortem.action.{name}", str(stored.id), message_ts=stored.message_ts)
        bot.settle()
    assert item(bot).status == "open"
    with bot.ctx.db.session() as session:
        reminders = session.scalars(select(Reminder).where(Reminder.action_item_id == stored.id)).all()
        assert len(reminders) == 2 and all(r.cancelled_at is None for r in reminders)


def test_actions_lists_the_items(bot: LocalBot) -> None:
    open_incident(bot)
    assert "아직 액션 아이템이 없습니다" in pm(bot, "actions")
    pm(bot, 'action P2 "모니터링 알림 강화" <@U0LEMUN|lemun> due:1w')
    pm(bot, 'action P0 "N+1 쿼리 수정" <@U0GITCO|gitco> due:2d impact:critical')
    listing = pm(bot, "actions")
    assert "0/2 완료" in listing
    assert listing.index("[P0]") < listing.index("[P2]")
    assert "⬜ *[P0]* N+1 쿼리 수정 — <@U0GITCO>" in listing and "CRITICAL" in listing
    assert "`extra` 는 이 명령에 필요하지 않습니다" in pm(bot, "actions extra")


def test_a_failed_post_is_reported_and_the_sweep_posts_it_later(seoul: LocalBot, clock: ManualClock) -> None:
    bot = seoul
    _, thread_ts = open_incident(bot)
    bot.slack.fail("chat.postMessage", status=500, times=3)  # the client's two retries fail too
    pm(bot, 'action P1 "부하테스트 기준 상향" @Lubit due:1w')
    assert item(bot).message_ts is None  # stored all the same
    assert any("저장했지만 스레드에 올리지 못했습니다" in r.get("text", "") for r in bot.slack.responses())
    bot.runtime.sweep()
    assert item(bot).message_ts is None  # too soon: the first attempt may still be under way
    clock.advance(timedelta(minutes=3))
    bot.runtime.sweep()
    bot.settle()
    stored = item(bot)
    assert stored.message_ts == thread_message(bot, thread_ts, "부하테스트 기준 상향")["ts"]
    bot.runtime.sweep()
    assert len([m for m in bot.slack.thread(CHANNEL, thread_ts) if "부하테스트" in m.get("text", "")]) == 1


# --------------------------------------------------------------------------------------------- impact


def test_impact_values_are_validated_stored_and_computed_in_the_report(bot: LocalBot) -> None:
    open_incident(bot)
    assert "에러율: 0.5% → 9% (18배 증가)" in pm(bot, "impact error-rate 0.5%-&gt;9%")
    assert "150ms → 450ms (3배 증가)" in pm(bot, "impact p95 150ms→450ms")
    pm(bot, "impact users ~500 (1%)")
    pm(bot, "impact availability 90.5%")
    with bot.ctx.db.session() as session:
        stored = {v.field: (v.value, v.source, v.updated_by) for v in session.scalars(select(ImpactValue))}
    assert stored == {
        "error-rate": ("0.5%→9%", "manual", "U0SENA"), "p95": ("150ms→450ms", "manual", "U0SENA"),
        "users": ("~500 (1%)", "manual", "U0SENA"), "availability": ("90.5%", "manual", "U0SENA"),
    }
    assert (
        "## 임팩트\n- **영향받은 사용자**: 약 500명 (전체의 1%)\n- **에러율**: 0.5% → 9% (18배 증가)\n"
        "- **응답시간 (P95)**: 150ms → 450ms (3배 증가)\n- **기능 가용성**: 90.5%\n"
    ) in report(bot)
    english = report(bot, "en")
    assert "- **Error rate**: 0.5% → 9% (18× higher)" in english
    assert "- **Affected users**: about 500 (1% of all users)" in english


def test_measured_impact_fills_gaps_and_never_overrides_a_person(bot: LocalBot) -> None:
    open_incident(bot)
    pm(bot, "impact error-rate 0.5%→9%")
    with bot.ctx.db.session() as session:
        target = session.get_one(Incident, incident(bot).id)
        assert postmortem.record_measured_impact(bot.ctx, session, target, "error-rate", "0.4%→8.7%") is False
        assert postmortem.record_measured_impact(bot.ctx, session, target, "p95", "180ms→850ms") is True
        assert postmortem.record_measured_impact(bot.ctx, session, target, "p95", "180ms→900ms") is True
        with pytest.raises(ValueError):
            postmortem.record_measured_impact(bot.ctx, session, target, "p95", "slow")
    with bot.ctx.db.session() as session:
        stored = {v.field: (v.value, v.source) for v in session.scalars(select(ImpactValue))}
    assert stored == {"error-rate": ("0.5%→9%", "manual"), "p95": ("180ms→900ms", "measured")}
    document = report(bot)
    assert "- **응답시간 (P95)**: 180ms → 900ms (5배 증가) _(증거에서 측정)_" in document
    assert "- **영향받은 사용자**: _(작성 필요)_" in document
    pm(bot, "impact p95 150ms→450ms")  # a person overrides the measurement
    assert "- **응답시간 (P95)**: 150ms → 450ms (3배 증가)\n" in report(bot)


# --------------------------------------------------------------------------------------------- lessons, prevention


def test_lessons_and_prevention_fill_their_sections_and_the_next_deploy_checklist(bot: LocalBot) -> None:
    open_incident(bot)
    pm(bot, "lesson 테스트 데이터 크기가 중요하다 → 프로덕션 데이터 크기를 반영한 테스트 필수")
    pm(bot, "lesson Canary 배포는 실제 효과가 있다")
    assert "'다음 배포에 적용할 사항'" in pm(bot, "prevent Staging 환경을 프로덕션과 동일한 데이터 크기로 유지")
    pm(bot, "prevent 배포 전 필수적으로 부하 테스트 실행 (1000+ 사용자 시뮬레이션)")
    with bot.ctx.db.session() as session:
        assert [(n.kind, n.position) for n in session.scalars(select(Note).order_by(Note.kind, Note.position))] == [
            ("lesson", 1), ("lesson", 2), ("prevent", 1), ("prevent", 2)]
    document = report(bot)
    assert (
        "## 배운 점 (Lessons Learned)\n1. **테스트 데이터 크기가 중요하다**\n"
        "   - 프로덕션 데이터 크기를 반영한 테스트 필수\n\n2. **Canary 배포는 실제 효과가 있다**\n"
    ) in document
    assert "## 재발 방지책\n1. Staging 환경을 프로덕션과 동일한 데이터 크기로 유지\n2. 배포 전" in document
    assert (
        "## 다음 배포에 적용할 사항\n이번 실패로부터 배운 것을 다음 배포 체크리스트에 추가:\n\n"
        "- [ ] Staging 환경을 프로덕션과 동일한 데이터 크기로 유지\n- [ ] 배포 전 필수적으로 부하 테스트 실행"
    ) in document


# --------------------------------------------------------------------------------------------- checklist


def _checklist(bot: LocalBot, thread_ts: str) -> dict[str, Any]:
    return thread_message(bot, thread_ts, "postmortem.checklist.basic")


def _ticked(message: dict[str, Any], group: str) -> list[str]:
    for block in message["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == f"postmortem.checklist.{group}":
                return [o["value"] for o in element.get("initial_options", [])]
    raise AssertionError(group)


def _tick(bot: LocalBot, group: str, values: list[str], user: str, ts: str) -> None:
    options = [{"text": {"type": "plain_text", "text": v}, "value": v} for v in values]
    response = bot.driver.block_action(f"postmortem.checklist.{group}", "", action_type="checkboxes",
                                       selected_options=options, user=user, message_ts=ts)
    assert response.status_code == 200
    bot.settle()


def test_checklist_is_posted_ticked_by_anyone_and_shown_in_the_report(
    bot: LocalBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, thread_ts = open_incident(bot)
    assert "체크리스트" in pm(bot, "checklist")
    message = _checklist(bot, thread_ts)
    assert incident(bot).checklist_ts == message["ts"]
    groups = [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert groups == [f"postmortem.checklist.{g}" for g in ("basic", "analysis", "meeting", "report", "prevent")]
    assert all(e["type"] == "checkboxes" and "initial_options" not in e
               for b in message["blocks"] if b["type"] == "actions" for e in b["elements"])

    _tick(bot, "basic", ["basic.rollback", "basic.evidence"], "U0LEMUN", message["ts"])
    message = _checklist(bot, thread_ts)
    assert _ticked(message, "basic") == ["basic.rollback", "basic.evidence"] and "*2/20 완료*" in message["text"]
    with bot.ctx.db.session() as session:
        rows = {c.key: (c.checked, c.checked_by) for c in session.scalars(select(ChecklistItem))}
    assert rows == {"basic.rollback": (True, "U0LEMUN"), "basic.evidence": (True, "U0LEMUN")}

    # Two people click from the same view: each click applies only what it changed.
    stale = json.loads(json.dumps(message))
    _tick(bot, "basic", ["basic.rollback", "basic.evidence", "basic.announce"], "U0SENA", message["ts"])
    monkeypatch.setattr(bot.slack, "message", lambda channel, ts: stale)
    _tick(bot, "basic", ["basic.rollback"], "U0GITCO", message["ts"])  # Gitco unticks evidence
    monkeypatch.undo()
    message = _checklist(bot, thread_ts)
    assert _ticked(message, "basic") == ["basic.rollback", "basic.announce"]

    document = report(bot)
    assert ("## Post-Mortem 체크리스트\n_완료 2/20_\n\n**기본** (2/3)\n- [x] 롤백 완료 확인\n- [ ] 긴급 증거 수집\n"
            in document)
    assert "- [x] 팀 공지" in document


# --------------------------------------------------------------------------------------------- edit modal


def _state(**values: str) -> dict[str, Any]:
    return {key: {"value": {"type": "plain_text_input", "value": value}} for key, value in values.items()}


def test_edit_opens_a_prefilled_modal_and_saves_the_submission(bot: LocalBot) -> None:
    open_incident(bot)
    pm(bot, "root-cause 첫 원인")
    pm(bot, "lesson 배운 점 하나")
    pm(bot, "prevent 방지책 하나")
    assert "편집 창" in pm(bot, "edit")
    [opened] = bot.slack.calls("views.open")
    assert opened.args["trigger_id"]
    [view] = bot.slack.views()
    assert view["callback_id"] == "postmortem.edit" and view["private_metadata"] == str(incident(bot).id)
    initial = {b["block_id"]: b["element"].get("initial_value") for b in view["blocks"] if b["type"] == "input"}
    assert initial == {"root_cause": "첫 원인", "lessons": "배운 점 하나", "prevention": "방지책 하나",
                       "conclusion": None}

    response = bot.driver.view_submission(
        "postmortem.edit",
        _state(root_cause="추천 엔진의 N+1 쿼리 문제\n- 400번의 개별 쿼리",
               lessons="테스트 데이터 크기가 중요하다 → 프로덕션 크기 반영\n\n성능 테스트는 필수다",
               prevention="Staging 데이터 크기 유지", conclusion="이번 사건은 **테스트의 중요성**을 보여주었습니다."),
        private_metadata=view["private_metadata"], view_id=view["id"],
    )
    assert response.status_code == 200 and not response.content.strip()
    bot.settle()
    saved = incident(bot)
    assert saved.root_cause == "추천 엔진의 N+1 쿼리 문제\n- 400번의 개별 쿼리"
    assert saved.conclusion == "이번 사건은 **테스트의 중요성**을 보여주었습니다."
    with bot.ctx.db.session() as session:
        assert postmortem.notes(session, saved.id, "lesson") == ["테스트 데이터 크기가 중요하다 → 프로덕션 크기 반영",
                                                                 "성능 테스트는 필수다"]
        assert postmortem.notes(session, saved.id, "prevent") == ["Staging 데이터 크기 유지"]
    assert any("저장했습니다" in e["text"] for e in bot.slack.ephemerals(CHANNEL, "U0SENA"))
    document = report(bot)
    assert "## 근본 원인\n추천 엔진의 N+1 쿼리 문제\n- 400번의 개별 쿼리\n" in document
    assert "## 결론\n이번 사건은 **테스트의 중요성**을 보여주었습니다.\n" in document


def test_edit_opens_its_modal_before_the_ack_even_with_the_background_pool_busy(bot: LocalBot) -> None:
    # The trigger lives 3 s from the command: views.open must not wait behind slow background work.
    open_incident(bot)
    released = threading.Event()
    for _ in range(32):  # more than the pool has workers
        bot.ctx.jobs.submit(released.wait, 30)
    try:
        response = bot.driver.command("/postmortem", "edit")  # no settling: the pool is still held
        assert "편집 창" in response.json()["text"]
        [view] = bot.slack.views()
        assert view["callback_id"] == "postmortem.edit"
    finally:
        released.set()
    bot.settle()
    assert len(bot.slack.calls("views.open")) == 1


def test_edit_with_an_expired_trigger_says_so_in_its_answer(bot: LocalBot) -> None:
    open_incident(bot)
    stale = bot.slack.issue_trigger(bot.driver.new_trigger_id(), issued_at=time.time() - 10)
    answer = pm(bot, "edit", trigger_id=stale)
    assert "편집 창을 열지 못했습니다 (expired_trigger_id)" in answer
    assert bot.slack.views() == [] and bot.slack.responses() == []  # told once, in the answer


def test_a_bad_modal_submission_gets_field_errors_and_stores_nothing(bot: LocalBot) -> None:
    open_incident(bot)
    pm(bot, "lesson 그대로")
    pm(bot, "edit")
    [view] = bot.slack.views()
    response = bot.driver.view_submission(
        "postmortem.edit", _state(root_cause="새 원인", lessons="x" * 600, prevention="", conclusion=""),
        private_metadata=view["private_metadata"], view_id=view["id"],
    )
    body = response.json()
    assert body["response_action"] == "errors" and "1번째 줄이 너무 깁니다" in body["errors"]["lessons"]
    bot.settle()
    assert incident(bot).root_cause is None
    with bot.ctx.db.session() as session:
        assert postmortem.notes(session, incident(bot).id, "lesson") == ["그대로"]


# --------------------------------------------------------------------------------------------- bad input, escaping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("why", "내용이 비어 있습니다"),
        ("why 2 x", "2번 '왜'가 없습니다"),
        ("root-cause", "내용이 비어 있습니다"),
        ("action", "우선순위(P0–P3)와 작업"),
        ("action P7 x", "`P7` 는 우선순위가 아닙니다"),
        ('action P0 "x" due:yesterday', "기한 `yesterday`"),
        ('action P0 "x" due:2020-01-01', "이미 지난 날짜"),
        ('action P0 "x" impact:huge', "영향도 `huge`"),
        ('action P0 "unclosed', "따옴표가 닫히지 않았습니다"),
        ("impact", "어떤 임팩트"),
        ("impact mood great", "`mood` 는 임팩트 항목이 아닙니다"),
        ("impact error-rate 9", "에러율 값 `9`"),
        ("impact p95 fast", "밀리초나 초로"),
        ("impact availability 101%", "0–100 사이 백분율"),
        ("lesson", "내용이 비어 있습니다"),
        ("prevent " + "x" * 600, "내용이 너무 깁니다"),
        ("checklist now", "`now` 는 이 명령에 필요하지 않습니다"),
        ("edit please", "`please` 는 이 명령에 필요하지 않습니다"),
    ],
)
def test_bad_input_gets_the_right_form_and_stores_nothing(bot: LocalBot, text: str, expected: str) -> None:
    open_incident(bot)
    posts = len(bot.slack.calls("chat.postMessage"))
    answer = pm(bot, text)
    assert expected in answer, answer
    assert "/postmortem" in answer  # shows the right form
    for model in (Why, ActionItem, ImpactValue, Note, ChecklistItem):
        assert count(bot, model) == 0
    assert incident(bot).root_cause is None
    assert len(bot.slack.calls("chat.postMessage")) == posts and bot.slack.calls("views.open") == []


def test_content_needs_an_incident(bot: LocalBot) -> None:
    assert "/incident open" in pm(bot, "why 왜?")
    assert count(bot, Why) == 0


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_english_answers(bot: LocalBot) -> None:
    open_incident(bot, "Recommendation API p95 spike")
    assert "Recorded why #1" in pm(bot, "why Why did response time go up? → DB queries took 400ms")
    assert "isn't a priority" in pm(bot, "action P9 x")
    assert "Error rate: 0.5% → 9% (18× higher)" in pm(bot, "impact error-rate 0.5%→9%")
    assert "I didn't understand `9` for the error rate" in pm(bot, "impact error-rate 9")


def test_user_text_cannot_mention_anyone_or_break_the_document(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    pm(bot, 'action P1 "ping &lt;!channel&gt; | a&amp;b" <@U0GITCO|gitco>')
    pm(bot, "why <!channel> 왜? → <@U0LEMUN|lemun> 가 봤다 | 표")
    pm(bot, "root-cause # 제목이 아님\n```\n닫히지 않은 코드")
    bot.driver.say(CHANNEL, "U0SENA", "표를 | 깨는\n줄바꿈 <!here>", thread_ts=thread_ts)
    bot.settle()
    for text in posted_texts(bot):
        assert "<!channel>" not in text and "<!here>" not in text and "<@U0LEMUN" not in text
    message = thread_message(bot, thread_ts, "ping")
    assert "ping &lt;!channel&gt; | a&amp;b" in message["text"]
    document = report(bot)
    assert "| P1 | ping &lt;!channel> \\| a&b | Gitco | - | [  ] |" in document
    assert "1. **@channel 왜?**\n   - @lemun 가 봤다 | 표\n" in document
    assert "\\# 제목이 아님\n\\```\n닫히지 않은 코드" in document
    assert "| 표를 \\| 깨는<br>줄바꿈 &lt;!here> | Sena |" in document
    table = document.split("| 시간 | 이벤트 | 담당자 |")[1].split("\n\n")[0]
    assert all(line.startswith("|") and line.endswith("|") for line in table.strip().split("\n"))
    with bot.ctx.db.session() as session:
        events = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "system")).all()
        assert [e.data["owner_name"] for e in events if e.data["action"] == "action_item"] == ["Gitco"]
