"""A channel per incident (INCIDENT_CHANNEL_MODE=channel), end to end through signed Slack requests and the sandbox.

The core scenario runs in both modes and must give the same timeline; the rest covers naming, exactly one channel
whatever Slack loses, invites, the topic and the link line, what is not an event, the fallback to a thread, archiving
and incidents that keep their mode when the setting flips. Time is a ManualClock and reminders are delivered by
`reminders.deliver_due` (SCHEDULER_ENABLED=false), so nothing sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bot import channels, reminders
from bot.clock import ManualClock
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from sandbox.slack_channels import name_problem
from storage.models import Incident, Reminder, TimelineEvent
from tests.helpers import open_incident

ORIGIN = "C0INCIDENTS"
T0 = datetime(2025, 10, 22, 5, 15, tzinfo=UTC)
CHANNEL_MODE = {"INCIDENT_CHANNEL_MODE": "channel"}
EVERY_SCOPE = {"commands", "chat:write", "channels:history", "groups:history", "reactions:read", "reactions:write",
               "users:read", "files:write", "app_mentions:read", "channels:read", "groups:read", "channels:manage",
               "groups:write"}


# ---- fixtures and helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def slack(clock: ManualClock) -> Iterator[SlackSandbox]:
    """The sandbox stamps messages from the bot's clock, so message times and the bot's own times agree."""
    with SlackSandbox(clock=lambda: clock.now().timestamp()) as sandbox:
        yield sandbox


def start(slack: SlackSandbox, database_url: str, clock: ManualClock, env: dict[str, str] | None = None) -> LocalBot:
    return LocalBot({"SCHEDULER_ENABLED": "false", **(env or {})}, slack=slack, database_url=database_url,
                    clock=clock).start()


@pytest.fixture
def bot(slack: SlackSandbox, database_url: str, clock: ManualClock, bot_env: dict[str, str]) -> Iterator[LocalBot]:
    """The app in channel mode on the test's clock (replaces conftest's `bot`)."""
    local = start(slack, database_url, clock, {**CHANNEL_MODE, **bot_env})
    try:
        yield local
    finally:
        local.stop()


def incident(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        found = session.scalars(select(Incident).order_by(Incident.id.desc())).first()
        assert found is not None
        return found


def command(bot: LocalBot, text: str, *, channel: str = ORIGIN, user: str = "U0SENA",
            name: str = "/incident") -> dict[str, Any]:
    response = bot.driver.command(name, text, channel=channel, user=user)
    assert response.status_code == 200, response.text
    bot.settle()
    return dict(response.json())


def timeline(bot: LocalBot) -> list[tuple[Any, ...]]:
    """What the timeline says, in order, without the times and Slack ids that differ between runs."""
    with bot.ctx.db.session() as session:
        rows = session.scalars(select(TimelineEvent).where(TimelineEvent.deleted_at.is_(None))
                               .order_by(TimelineEvent.occurred_at, TimelineEvent.id)).all()
        return [(e.kind, e.author_id, e.text, e.highlighted, (e.data or {}).get("action"),
                 (e.data or {}).get("milestone"), (e.data or {}).get("new")) for e in rows]


def calls(slack: SlackSandbox, method: str, **args: Any) -> list[Any]:
    return [c for c in slack.calls(method) if all(c.args.get(k) == v for k, v in args.items())]


def ok_calls(slack: SlackSandbox, method: str) -> list[Any]:
    return [c for c in slack.calls(method) if (c.response or {}).get("ok")]


# ---- the name -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("title", "name"), [
    ("추천 API p95 급증", "inc-20251022-001-api-p95"),
    ("결제 장애", "inc-20251022-001"),
    ("Café -- DOWN!! (EU)", "inc-20251022-001-cafe-down-eu"),
    ("__ checkout_v2 __", "inc-20251022-001-checkout_v2"),
    ("<@U0SENA|sena> & friends", "inc-20251022-001-u0sena-sena-friends"),
])
def test_channel_names_follow_slacks_rules(title: str, name: str) -> None:
    assert channels.channel_name("20251022", 1, title) == name


def test_a_long_title_is_cut_to_eighty_characters_with_its_suffix() -> None:
    title = "Recommendation API p95 latency spike after canary ion-api-00042 rollout in asia-northeast3 region"
    first, second = channels.channel_name("20251022", 7, title), channels.channel_name("20251022", 7, title, 12)
    assert len(first) <= 80 and len(second) <= 80
    assert first.startswith("inc-20251022-007-recommendation-api-p95") and second.endswith("-12")
    assert not first.endswith("-") and "--" not in second
    cut_at_a_hyphen = channels.channel_name("20251022", 1, "a" * 62 + " tail")
    assert cut_at_a_hyphen == "inc-20251022-001-" + "a" * 62 and name_problem(cut_at_a_hyphen) is None


@given(st.text(max_size=200), st.integers(min_value=1, max_value=channels.NAME_TRIES))
def test_any_title_gives_a_name_slack_accepts(title: str, attempt: int) -> None:
    name = channels.channel_name("20251022", 42, title, attempt)
    assert name_problem(name) is None
    assert re.fullmatch(r"inc-20251022-042(-[a-z0-9_]+(-[a-z0-9_]+)*)?", name), name
    assert len(name) <= 80


# ---- both modes, one scenario ----------------------------------------------------------------------------------------


EXPECTED_TIMELINE = [
    ("system", "U0SENA", "", False, "opened", None, None),
    ("message", "U0LEMUN", "p95 850ms 확인", True, None, None, None),
    ("message", "U0GITCO", "롤백 준비합니다", False, None, None, None),
    ("system", "U0SENA", "", False, "milestone", "rollback", "2025-10-22T05:17:00+00:00"),
    ("message", "U0SENA", "canary 10% 유지 중", False, None, None, None),
    ("system", "U0SENA", "", False, "status", None, "identified"),
    ("system", None, "", False, "report", None, None),
]


@pytest.mark.parametrize("mode", ["thread", "channel"])
def test_both_modes_give_the_same_timeline(mode: str, slack: SlackSandbox, database_url: str,
                                           clock: ManualClock) -> None:
    bot = start(slack, database_url, clock, {"INCIDENT_CHANNEL_MODE": mode})
    try:
        _, announcement = open_incident(bot, "추천 API p95 급증 sev:high")
        found = incident(bot)
        home, thread = found.channel_id, found.home_thread_ts
        assert (home != ORIGIN, thread is None) == ((True, True) if mode == "channel" else (False, False))
        clock.advance(timedelta(minutes=1))
        first, _ = bot.driver.say(home, "U0LEMUN", "p95 850ms 확인", thread_ts=thread)
        clock.advance(timedelta(minutes=1))
        second, _ = bot.driver.say(home, "U0GITCO", "롤백 준비합니다", thread_ts=thread)
        clock.advance(timedelta(minutes=1))
        # In its own channel a reply in any thread counts; in thread mode the incident's thread is the only one.
        bot.driver.say(home, "U0SENA", "canary 10% 유지 중", thread_ts=thread or first["ts"])
        bot.settle()
        bot.driver.react(home, first["ts"], "U0SENA", "pushpin")
        bot.settle()
        bot.driver.react(home, second["ts"], "U0SENA", "rewind")
        bot.settle()
        command(bot, "status identified", channel=home)
        clock.advance(timedelta(minutes=30))
        assert [o.status for o in reminders.deliver_due(bot.ctx)] == ["sent"]
        command(bot, "report", channel=home, name="/postmortem")

        assert timeline(bot) == EXPECTED_TIMELINE
        with bot.ctx.db.session() as session:
            rca = session.scalars(select(Reminder).where(Reminder.kind == reminders.RCA)).one()
        posted = slack.message(home, rca.message_ts or "")
        assert posted is not None and "RCA" in posted["text"]
        report = next(f for f in slack.files() if f["filename"].endswith("-postmortem.md"))
        if mode == "channel":
            # The channel is the home: reminder and report at its top level, nothing in the announcement's thread.
            assert "thread_ts" not in posted and report["channel"] == home and report["thread_ts"] is None
            assert slack.thread(home, announcement) == []
        else:
            assert posted["thread_ts"] == announcement and report["thread_ts"] == announcement
    finally:
        bot.stop()


def test_joins_leaves_topic_changes_and_the_bots_own_messages_are_not_events(bot: LocalBot) -> None:
    slack = bot.slack
    open_incident(bot, "결제 장애 sev:critical")
    home = incident(bot).channel_id
    command(bot, "role lead <@U0LEMUN|lemun>", channel=home)
    before = timeline(bot)
    kept = slack.messages(home)
    assert {m.get("subtype") for m in kept} >= {"channel_join", "channel_topic"}
    assert {m.get("user") for m in kept if m.get("subtype") == "channel_join"} == {"U0SENA", "U0LEMUN"}
    for message in kept:  # every join, the topic, the announcement: delivered as Slack sends them
        assert bot.driver.deliver(home, message).status_code == 200
    leave = {"type": "message", "subtype": "channel_leave", "user": "U0LEMUN", "channel": home,
             "text": "<@U0LEMUN> has left the channel", "ts": slack.new_ts(), "channel_type": "channel"}
    assert bot.driver.event(leave).status_code == 200
    bot.settle()
    assert timeline(bot) == before


def test_top_level_edits_and_deletions_in_the_channel_are_followed(bot: LocalBot) -> None:
    open_incident(bot, "결제 장애")
    home = incident(bot).channel_id
    message, _ = bot.driver.say(home, "U0GITCO", "롤백 시작합니다")
    bot.settle()
    bot.driver.edit(home, message["ts"], "롤백 시작합니다 (14:35)")
    bot.settle()
    with bot.ctx.db.session() as session:
        event = session.scalars(select(TimelineEvent).where(TimelineEvent.slack_ts == message["ts"])).one()
        assert event.text == "롤백 시작합니다 (14:35)" and event.edited_at is not None
    bot.driver.delete(home, message["ts"])
    bot.settle()
    assert [row for row in timeline(bot) if row[0] == "message"] == []


# ---- making the channel ------------------------------------------------------------------------------------------


def test_a_taken_name_is_retried_with_a_suffix_and_a_title_without_ascii_gets_the_bare_name(
        bot: LocalBot) -> None:
    slack = bot.slack
    slack.add_channel("C0SOMEONE", "inc-20251022-001")  # someone else's channel holds the plain name
    open_incident(bot, "결제 장애")
    found = incident(bot)
    assert found.channel_name == "inc-20251022-001-2" and found.channel_id != "C0SOMEONE"
    assert [c.args["name"] for c in slack.calls("conversations.create")] == ["inc-20251022-001", "inc-20251022-001-2"]
    assert len(slack.channel_admin.created()) == 1


def test_a_long_taken_name_keeps_its_suffix_within_eighty_characters(bot: LocalBot) -> None:
    title = "Recommendation API p95 latency spike after canary ion-api-00042 rollout in asia-northeast3 region"
    bot.slack.add_channel("C0SOMEONE", channels.channel_name("20251022", 1, title))
    open_incident(bot, title)
    name = incident(bot).channel_name or ""
    assert name.endswith("-2") and len(name) <= 80 and name_problem(name) is None


def test_a_lost_create_answer_is_recognised_and_makes_one_channel(bot: LocalBot) -> None:
    slack = bot.slack
    slack.lose_response("conversations.create")  # Slack makes the channel; its answer never arrives
    open_incident(bot, "추천 API p95 급증")
    [made] = slack.channel_admin.created()
    assert incident(bot).channel_id == made["id"]
    assert len(slack.calls("conversations.create")) == 2 and slack.calls("conversations.list")


def test_an_attempt_whose_every_answer_is_lost_is_finished_by_the_sweep_with_one_channel(
        bot: LocalBot, clock: ManualClock) -> None:
    slack = bot.slack
    slack.lose_response("conversations.create", times=3)  # the first call and both of the client's retries
    response = bot.driver.command("/incident", "open 추천 API p95 급증")
    assert response.status_code == 200
    bot.settle()
    pending = incident(bot)
    assert pending.announcement_ts is None and pending.channel_name is None
    assert len(slack.channel_admin.created()) == 1  # made, but unknown to the bot
    clock.advance(bot.ctx.messenger.call_budget + timedelta(seconds=1))
    bot.runtime.sweep()
    bot.settle()
    done = incident(bot)
    [made] = slack.channel_admin.created()
    assert done.channel_id == made["id"] and done.announcement_ts is not None
    assert [m for m in slack.messages(made["id"]) if m.get("metadata")]  # the announcement, once
    assert len([m for m in slack.messages(made["id"]) if m.get("metadata")]) == 1


@pytest.mark.parametrize("bot_env", [{"INCIDENT_CHANNEL_PRIVATE": "true"}])
def test_a_private_channel_when_asked_for(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot, "결제 장애")
    [made] = bot.slack.channel_admin.created()
    assert made["is_private"] is True and made["id"] == incident(bot).channel_id
    assert bot.slack.calls("conversations.create")[0].args["is_private"] in (True, "true", "1")
    # The channel where it was declared may be public: the line there names the ID, not the title.
    [line] = [m["text"] for m in bot.slack.messages(ORIGIN)]
    assert public_id in line and f"<#{made['id']}>" in line and "결제 장애" not in line
    # The channel made and named under the announcement's lease is what the post showed: nothing to update after.
    assert not bot.slack.calls("chat.update")


# ---- falling back to a thread ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("private", "refusal", "named"), [
    (False, "missing_scope", "channels:manage"),
    (True, "missing_scope", "groups:write"),
    (False, "restricted_action", "워크스페이스 설정"),
])
def test_a_bot_that_may_not_make_channels_falls_back_to_a_thread_and_says_why(
        slack: SlackSandbox, database_url: str, clock: ManualClock, private: bool, refusal: str,
        named: str) -> None:
    if refusal == "missing_scope":
        slack.channel_admin.grant(EVERY_SCOPE - {"channels:manage", "groups:write"})
    else:
        slack.fail("conversations.create", status=200, error=refusal)
    bot = start(slack, database_url, clock, {**CHANNEL_MODE, "INCIDENT_CHANNEL_PRIVATE": str(private).lower()})
    try:
        public_id, announcement = open_incident(bot, "추천 API p95 급증")
        found = incident(bot)
        assert (found.mode, found.channel_id, found.channel_error) == ("thread", ORIGIN, refusal)
        assert slack.channel_admin.created() == [] and not calls(slack, "conversations.invite")
        [told] = slack.ephemerals(channel=ORIGIN, user="U0SENA")
        assert public_id in told["text"] and named in told["text"]
        assert slack.message(ORIGIN, announcement) is not None
        bot.driver.say(ORIGIN, "U0LEMUN", "스레드에서 계속합니다", thread_ts=announcement)
        bot.driver.say(ORIGIN, "U0LEMUN", "채널의 다른 대화")
        bot.settle()
        assert [row[2] for row in timeline(bot) if row[0] == "message"] == ["스레드에서 계속합니다"]
    finally:
        bot.stop()


# ---- members, topic, the link line ----------------------------------------------------------------------------


def test_one_person_who_cannot_be_invited_does_not_stop_the_others_and_is_listed(
        bot: LocalBot, clock: ManualClock) -> None:
    slack = bot.slack
    slack.channel_admin.refuse_invites("U0GITCO", "cant_invite")
    slack.fail("conversations.create", status=200, error="ratelimited")  # the channel comes with the sweep
    bot.driver.command("/incident", "open 추천 API p95 급증")
    bot.settle()
    command(bot, "role backend <@U0GITCO|gitco>")  # before the channel exists
    command(bot, "role lead <@U0LEMUN|lemun>")
    clock.advance(timedelta(seconds=31))
    bot.runtime.sweep()
    bot.settle()
    home = incident(bot).channel_id
    assert {u for u in ("U0SENA", "U0LEMUN", "U0GITCO") if slack.is_member(home, u)} == {"U0SENA", "U0LEMUN"}
    listed = [m["text"] for m in slack.messages(home) if "cant_invite" in m.get("text", "")]
    assert len(listed) == 1 and "<@U0GITCO>" in listed[0] and "U0LEMUN" not in listed[0]


def test_a_later_role_holder_is_invited(bot: LocalBot) -> None:
    slack = bot.slack
    open_incident(bot, "추천 API p95 급증")
    home = incident(bot).channel_id
    assert not slack.is_member(home, "U0GITCO")
    command(bot, "role devops <@U0GITCO|gitco>", channel=home)
    assert slack.is_member(home, "U0GITCO")
    assert [c.args["users"] for c in ok_calls(slack, "conversations.invite")] == ["U0SENA", "U0GITCO"]


def test_the_topic_and_the_link_line_follow_status_and_severity(bot: LocalBot) -> None:
    slack = bot.slack
    public_id, _ = open_incident(bot, "추천 API p95 급증 sev:high")
    found = incident(bot)
    home, link_ts = found.channel_id, found.link_ts
    assert link_ts is not None
    [line] = [m for m in slack.messages(ORIGIN) if m["ts"] == link_ts]
    assert f"<#{home}>" in line["text"] and public_id in line["text"] and "HIGH" in line["text"]
    command(bot, "severity critical", channel=home)
    command(bot, "status resolved", channel=home)
    topics = [c.args["topic"] for c in ok_calls(slack, "conversations.setTopic")]
    assert topics == [f"🔍 조사 중 · HIGH · {public_id}", f"🔍 조사 중 · CRITICAL · {public_id}",
                      f"✅ 해결됨 · CRITICAL · {public_id}"]
    assert all(len(t) <= 250 for t in topics)
    now = slack.message(ORIGIN, link_ts)
    assert now is not None and "해결됨" in now["text"] and "CRITICAL" in now["text"]
    assert len([m for m in slack.messages(ORIGIN) if public_id in m.get("text", "")]) == 1  # one line, updated


# ---- archiving ------------------------------------------------------------------------------------------------------


ARCHIVE = {**CHANNEL_MODE, "INCIDENT_CHANNEL_ARCHIVE_AFTER": "2h"}


def resolve_and_report(bot: LocalBot) -> str:
    open_incident(bot, "추천 API p95 급증")
    home = incident(bot).channel_id
    command(bot, "status resolved", channel=home)
    command(bot, "report", channel=home, name="/postmortem")
    return home


def test_the_channel_is_archived_once_after_the_report_across_a_restart(
        slack: SlackSandbox, database_url: str, clock: ManualClock) -> None:
    bot = start(slack, database_url, clock, ARCHIVE)
    try:
        home = resolve_and_report(bot)
        reported = clock.now()
        clock.advance(timedelta(hours=2) - timedelta(minutes=1))
        reminders.deliver_due(bot.ctx)
        assert not slack.calls("conversations.archive")
    finally:
        bot.stop()
    clock.advance(timedelta(minutes=2))
    bot = start(slack, database_url, clock, ARCHIVE)  # a new process on the same database
    try:
        reminders.deliver_due(bot.ctx)
        reminders.deliver_due(bot.ctx)
        assert [c.args["channel"] for c in ok_calls(slack, "conversations.archive")] == [home]
        with bot.ctx.db.session() as session:
            row = session.scalars(select(Reminder).where(Reminder.kind == reminders.CHANNEL_ARCHIVE)).one()
            assert row.due_at == reported + timedelta(hours=2) and row.sent_at is not None
        assert slack.channel_admin.conversation(home)["is_archived"] is True
    finally:
        bot.stop()


def test_reopening_before_the_archive_cancels_it_and_resolving_again_starts_it_afresh(
        slack: SlackSandbox, database_url: str, clock: ManualClock) -> None:
    bot = start(slack, database_url, clock, ARCHIVE)
    try:
        home = resolve_and_report(bot)
        clock.advance(timedelta(hours=1))
        command(bot, "status investigating", channel=home)
        with bot.ctx.db.session() as session:
            row = session.scalars(select(Reminder).where(Reminder.kind == reminders.CHANNEL_ARCHIVE)).one()
            assert row.cancelled_at is not None and row.sent_at is None
        clock.advance(timedelta(hours=2))
        reminders.deliver_due(bot.ctx)
        assert not slack.calls("conversations.archive")
        command(bot, "status resolved", channel=home)
        resolved = clock.now()
        clock.advance(timedelta(hours=2) - timedelta(seconds=1))
        reminders.deliver_due(bot.ctx)
        assert not slack.calls("conversations.archive")
        clock.set(resolved + timedelta(hours=2))
        reminders.deliver_due(bot.ctx)
        assert len(ok_calls(slack, "conversations.archive")) == 1
    finally:
        bot.stop()


def test_a_channel_archived_by_hand_counts_as_archived(slack: SlackSandbox, database_url: str,
                                                      clock: ManualClock) -> None:
    bot = start(slack, database_url, clock, ARCHIVE)
    try:
        home = resolve_and_report(bot)
        slack.channel_admin.archived.add(home)  # someone archived it first
        clock.advance(timedelta(hours=3))
        reminders.deliver_due(bot.ctx)
        assert [c.response["error"] for c in slack.calls("conversations.archive")] == ["already_archived"]
        with bot.ctx.db.session() as session:
            rows = {r.kind: r for r in session.scalars(select(Reminder)).all()}
        assert rows[reminders.CHANNEL_ARCHIVE].sent_at is not None
        # The meeting's reminders can't be posted in an archived channel: given up at once, not retried for hours.
        gone = rows[reminders.MEETING_START]
        assert gone.cancelled_at is not None and gone.attempts == 1 and "is_archived" in (gone.last_error or "")
    finally:
        bot.stop()


# ---- the setting flips --------------------------------------------------------------------------------------------


def test_incidents_keep_the_mode_they_were_opened_in_when_the_setting_flips(
        slack: SlackSandbox, database_url: str, clock: ManualClock) -> None:
    bot = start(slack, database_url, clock)
    try:
        _, thread = open_incident(bot, "결제 장애")
    finally:
        bot.stop()
    bot = start(slack, database_url, clock, CHANNEL_MODE)
    try:
        bot.driver.say(ORIGIN, "U0LEMUN", "스레드 답글", thread_ts=thread)
        bot.driver.say(ORIGIN, "U0LEMUN", "채널 대화")
        bot.settle()
        command(bot, "status identified")
        clock.advance(timedelta(minutes=31))
        assert [o.status for o in reminders.deliver_due(bot.ctx)] == ["sent"]
        with bot.ctx.db.session() as session:
            old = session.scalars(select(Incident)).one()
            assert (old.mode, old.channel_id, old.channel_name, old.status) == ("thread", ORIGIN, None, "identified")
        assert [row[2] for row in timeline(bot) if row[0] == "message"] == ["스레드 답글"]
        assert any("RCA" in m.get("text", "") for m in slack.thread(ORIGIN, thread))
        assert slack.channel_admin.created() == []
        open_incident(bot, "추천 API p95 급증")
        assert incident(bot).mode == "channel" and len(slack.channel_admin.created()) == 1
    finally:
        bot.stop()


# ---- where the answers say things went -------------------------------------------------------------------------------


ACKS = [("/incident", "status resolved"), ("/incident", "status investigating"), ("/incident", "milestone resolved"),
        ("/postmortem", "checklist"), ("/postmortem", 'action P1 "canary 자동 중단"'), ("/postmortem", "report")]


@pytest.mark.parametrize("locale", ["ko", "en"])
@pytest.mark.parametrize("mode", ["thread", "channel"])
def test_command_answers_name_the_incidents_channel_or_its_thread(
    mode: str, locale: str, slack: SlackSandbox, database_url: str, clock: ManualClock, bot_env: dict[str, str],
) -> None:
    bot = start(slack, database_url, clock, {"INCIDENT_CHANNEL_MODE": mode, "INCIDENT_LOCALE": locale, **bot_env})
    try:
        open_incident(bot, "추천 API p95 급증")
        here = incident(bot).channel_id  # its own channel, or where it was declared (thread mode)
        answers = [command(bot, text, channel=here, name=name)["text"] for name, text in ACKS]
    finally:
        bot.stop()
    closed, reopened, resolved, checklist, action, report = answers
    thread = "스레드" if locale == "ko" else "the thread"
    if mode == "channel":
        assert all(f"<#{here}>" in answer and thread not in answer for answer in answers), answers
    else:
        assert all(thread in answer and "<#" not in answer for answer in answers), answers
    where = {("channel", "ko"): f"<#{here}> 채널", ("channel", "en"): f"<#{here}>",
             ("thread", "ko"): "스레드", ("thread", "en"): "the thread"}[mode, locale]
    if locale == "ko":  # the same sentence, only the place differs
        assert closed.endswith(f"{where}에도 알렸습니다.") and reopened.endswith(f"{where}에도 알렸습니다.")
        assert f"사건을 해결됨으로 바꾸고 {where}에 알렸습니다." in resolved
        assert checklist.strip() == f"Post-Mortem 체크리스트를 {where}에 올리고 있습니다…"
        assert f"{where}에 버튼(진행 중 / 완료 / 다시 열기)과 함께 올립니다." in action
        assert report.strip().endswith(f"{where}에 올리고 있습니다…")
    else:
        assert closed.endswith(f"I've said so in {where}.") and reopened.endswith(f"I've said so in {where}.")
        assert f"The incident is now resolved; I've said so in {where}." in resolved
        assert checklist.strip() == f"Posting the post-mortem checklist to {where}…"
        assert f"Posting it to {where} with In progress / Done / Reopen buttons." in action
        assert report.strip().endswith(f"and posting it to {where}…")


def test_a_refused_milestone_reaction_in_the_channel_is_explained_in_the_channel(bot: LocalBot) -> None:
    open_incident(bot, "결제 장애")
    found = incident(bot)
    home = found.channel_id
    before_detected = f"{(T0 - timedelta(minutes=10)).timestamp():.6f}"
    early = bot.slack.add_message(home, "U0GITCO", "트래픽 복구 확인", ts=before_detected)
    assert bot.driver.deliver(home, early).status_code == 200
    bot.settle()
    assert ("message", "U0GITCO", "트래픽 복구 확인") in [row[:3] for row in timeline(bot)]
    assert bot.driver.react(home, early["ts"], "U0GITCO", "white_check_mark").status_code == 200
    bot.settle()
    [refusal] = bot.slack.ephemerals(user="U0GITCO")
    # At the channel's top level, where everything of the incident is, not in the announcement's thread.
    assert refusal["channel"] == home and refusal.get("thread_ts") is None
    assert found.announcement_ts is not None and incident(bot).recovered_at is None


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_every_answer_that_says_where_results_go_names_the_channel_in_channel_mode(bot: LocalBot, locale: str) -> None:
    """The answers whose commands need Google Cloud or a failing Slack, rendered as their commands render them."""
    keys: dict[str, dict[str, Any]] = {
        "evidence.capture_ack": {"public_id": "INC-1", "service": "ion-api"},
        "evidence.already_running": {"public_id": "INC-1"},
        "evidence.capture_not_posted": {"public_id": "INC-1", "reason": "ratelimited"},
        "evidence.verify_ack": {"public_id": "INC-1", "service": "ion-api"},
        "evidence.verify_not_posted": {"public_id": "INC-1", "reason": "ratelimited"},
        "rollback.reading": {"public_id": "INC-1", "service": "ion-api"},
        "lifecycle.notice_failed": {"public_id": "INC-1", "reason": "ratelimited"},
        "postmortem.action_post_failed": {"reason": "ratelimited"},
        **{f"canvas.{name}": {"reason": "ratelimited"}
           for name in ("failed", "not_permitted", "unavailable", "unconfirmed", "not_shared")},
    }
    thread = "스레드" if locale == "ko" else "the thread"
    for key, params in keys.items():
        in_channel = bot.ctx.say(key, locale, home="C0INC42", **params)
        assert "<#C0INC42>" in in_channel and thread not in in_channel, in_channel
        assert thread in bot.ctx.say(key, locale, **params)
    superseded = bot.ctx.say("rollback.refused", locale, code="superseded", params={"home": "C0INC42"})
    assert "<#C0INC42>" in superseded and thread not in superseded
