"""Reactions through signed HTTP: 📌 puts any message of the incident's channel or thread on the timeline,
milestone emoji set milestones at the message's time, everything else is ignored, and retries change nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.clock import ManualClock
from sandbox.harness import LocalBot
from storage.models import EventPin, Incident, TimelineEvent
from tests.helpers import clocked_bot, count, events, open_incident, slack_ts

CHANNEL = "C0INCIDENTS"
T0 = datetime(2025, 10, 22, 14, 40, tzinfo=UTC)
ACK = "ballot_box_with_check"


@pytest.fixture
def clocked(database_url: str, bot_env: dict[str, str]) -> Iterator[tuple[LocalBot, ManualClock]]:
    with clocked_bot(database_url, T0, bot_env) as pair:
        yield pair


def at(hour: int, minute: int) -> datetime:
    return datetime(2025, 10, 22, hour, minute, tzinfo=UTC)


def post(bot: LocalBot, user: str, text: str, when: datetime, *, thread_ts: str | None = None) -> str:
    """A message that exists in Slack at `when` (the bot may never have seen it)."""
    return str(bot.slack.add_message(CHANNEL, user, text, ts=slack_ts(when), thread_ts=thread_ts)["ts"])


def react(bot: LocalBot, ts: str, user: str, emoji: str, *, removed: bool = False) -> None:
    response = bot.driver.react(CHANNEL, ts, user, emoji, removed=removed)
    assert response.status_code == 200
    bot.settle()


def reaction_event(ts: str, user: str, emoji: str, event_ts: str, added: bool = True) -> dict[str, Any]:
    return {"type": "reaction_added" if added else "reaction_removed", "user": user, "reaction": emoji,
            "item": {"type": "message", "channel": CHANNEL, "ts": ts}, "event_ts": event_ts}


def visible(bot: LocalBot, kind: str | None = None) -> list[TimelineEvent]:
    return [e for e in events(bot, kind) if e.deleted_at is None]


def incident(bot: LocalBot) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident).order_by(Incident.id.desc())).first()


def bot_reactions(bot: LocalBot, ts: str) -> list[str]:
    message = bot.slack.message(CHANNEL, ts) or {}
    return [r["name"] for r in message.get("reactions", []) if "U0BOT" in r["users"]]


def run(bot: LocalBot, text: str) -> str:
    body = bot.driver.command("/incident", text).json()
    bot.settle()
    return str(body["text"])


# ---- 📌 ---------------------------------------------------------------------------------------------------------


def test_pin_puts_an_alert_from_before_the_open_on_the_timeline(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    alert = post(bot, "U0MONITOR", "[ALERT] ion-api-canary p95 > 200ms", at(14, 15))
    open_incident(bot)
    react(bot, alert, "U0LEMUN", "pushpin")
    [pin] = visible(bot, "pin")
    assert pin.highlighted and pin.slack_ts == alert and pin.slack_channel == CHANNEL
    assert pin.occurred_at == at(14, 15)  # the message's own time, before the incident was opened
    assert (pin.author_id, pin.author_name) == ("U0MONITOR", "Monitoring")
    assert pin.text == "[ALERT] ion-api-canary p95 > 200ms"
    # A top-level message is read with conversations.history.
    assert [c.args["channel"] for c in bot.slack.calls("conversations.history")] == [CHANNEL]
    timeline = run(bot, "timeline")
    assert "`14:15` 📌 [ALERT] ion-api-canary p95 &gt; 200ms — _Monitoring_" in timeline
    bot.driver.command("/postmortem", "report")
    bot.settle()
    [file] = bot.slack.files()
    assert "| 14:15 | 📌 [ALERT] ion-api-canary p95 > 200ms | Monitoring |" in file["content"].decode()


def test_pinning_a_recorded_reply_highlights_it_without_a_second_event(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    reply, _ = bot.driver.say(CHANNEL, "U0LEMUN", "p95 850ms 확인", thread_ts=thread_ts)
    bot.settle()
    calls = len(bot.slack.calls())
    react(bot, reply["ts"], "U0SENA", "pushpin")
    [event] = visible(bot, "message")
    assert event.highlighted and visible(bot, "pin") == []
    # Already on the timeline: no need to ask Slack for the message.
    assert not [c for c in bot.slack.calls()[calls:] if c.method.startswith("conversations.")]
    react(bot, reply["ts"], "U0SENA", "pushpin", removed=True)
    [event] = visible(bot, "message")
    assert not event.highlighted and event.deleted_at is None  # a reply stays; it only loses the highlight


def test_pinning_a_reply_the_bot_missed_reads_it_from_the_thread(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    missed = bot.slack.add_message(CHANNEL, "U0GITCO", "롤백 완료, 메트릭 정상화", thread_ts=thread_ts)  # no event
    react(bot, missed["ts"], "U0SENA", "pushpin")
    [event] = visible(bot)[-1:]
    assert (event.kind, event.highlighted, event.text, event.author_name) == (
        "message", True, "롤백 완료, 메트릭 정상화", "Gitco")
    # conversations.history does not hold thread replies; conversations.replies does.
    assert bot.slack.calls("conversations.replies")


def test_two_pins_make_one_event_and_the_last_unpin_takes_it_off(bot: LocalBot) -> None:
    open_incident(bot)
    message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "에러율 9% 입니다")  # in the channel, not the thread
    bot.settle()
    react(bot, message["ts"], "U0LEMUN", "pushpin")
    react(bot, message["ts"], "U0GITCO", "pushpin")
    [pin] = visible(bot, "pin")
    assert count(bot, EventPin) == 2
    react(bot, message["ts"], "U0LEMUN", "pushpin", removed=True)
    assert [e.id for e in visible(bot, "pin")] == [pin.id]
    react(bot, message["ts"], "U0GITCO", "pushpin", removed=True)
    assert visible(bot, "pin") == [] and count(bot, EventPin) == 0
    assert "에러율 9%" not in run(bot, "timeline")
    # Pinned again: the same event comes back, not a new one.
    react(bot, message["ts"], "U0SENA", "pushpin")
    assert [e.id for e in visible(bot, "pin")] == [pin.id] and count(bot, TimelineEvent) == len(events(bot))


def test_slack_retries_of_reaction_events_change_nothing(bot: LocalBot) -> None:
    open_incident(bot)
    message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "p95 급증 확인")
    bot.slack.add_reaction(CHANNEL, message["ts"], "U0SENA", "pushpin")
    event = reaction_event(message["ts"], "U0SENA", "pushpin", "1761144000.000001")
    for retry in (None, 1, 2):
        assert bot.driver.event(event, retry_num=retry, event_id="Ev0PINRETRY").status_code == 200
    bot.settle()
    assert len(visible(bot, "pin")) == 1 and count(bot, EventPin) == 1
    milestone = reaction_event(message["ts"], "U0LEMUN", "rotating_light", "1761144000.000002")
    bot.slack.add_reaction(CHANNEL, message["ts"], "U0LEMUN", "rotating_light")
    for retry in (None, 1, 2):
        bot.driver.event(milestone, retry_num=retry, event_id="Ev0MSRETRY")
    bot.settle()
    detected = [e for e in visible(bot, "system") if e.data["action"] == "milestone"]
    assert len(detected) == 1 and bot_reactions(bot, message["ts"]) == [ACK]


def test_unknown_emoji_and_the_bots_own_reactions_are_ignored(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "확인했습니다", thread_ts=thread_ts)
    bot.settle()
    before = count(bot, TimelineEvent), len(bot.slack.calls())
    react(bot, message["ts"], "U0SENA", "thumbsup")
    react(bot, message["ts"], "U0SENA", "+1::skin-tone-3")
    bot.driver.event(reaction_event(message["ts"], "U0BOT", "white_check_mark", "1761144000.000003"))
    bot.settle()
    assert (count(bot, TimelineEvent), len(bot.slack.calls())) == before
    assert incident(bot).recovered_at is None


def test_which_incident_a_reaction_belongs_to(bot: LocalBot) -> None:
    lonely, _ = bot.driver.say(CHANNEL, "U0LEMUN", "no incident yet")
    bot.settle()
    react(bot, lonely["ts"], "U0SENA", "pushpin")
    assert events(bot) == []  # no open incident: ignored silently
    first, first_ts = open_incident(bot, "첫 번째")
    second, _ = open_incident(bot, "두 번째")
    channel_message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "which one?")
    bot.settle()
    react(bot, channel_message["ts"], "U0SENA", "pushpin")
    assert visible(bot, "pin") == []  # two open incidents: ambiguous, ignored silently
    assert not bot.slack.ephemerals()
    in_thread = bot.slack.add_message(CHANNEL, "U0GITCO", "첫 번째 사건의 답글", thread_ts=first_ts)
    react(bot, in_thread["ts"], "U0SENA", "pushpin")
    [pinned] = visible(bot, "message")
    with bot.ctx.db.session() as session:
        owner = session.get_one(Incident, pinned.incident_id).public_id
    assert owner == first  # the thread decides, whatever else is open
    run(bot, f"status {second} resolved")
    react(bot, channel_message["ts"], "U0LUBIT", "pushpin")
    [pin] = visible(bot, "pin")
    with bot.ctx.db.session() as session:
        assert session.get_one(Incident, pin.incident_id).public_id == first  # now the single open one


def test_a_fetch_failure_is_not_fatal(bot: LocalBot) -> None:
    open_incident(bot)
    message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "중요")
    bot.slack.fail("conversations.history", status=500, times=10)
    react(bot, message["ts"], "U0SENA", "pushpin")
    assert visible(bot, "pin") == []
    bot.slack.reset_faults()
    react(bot, message["ts"], "U0GITCO", "pushpin")  # the next 📌 works
    assert len(visible(bot, "pin")) == 1


# ---- milestone emoji ------------------------------------------------------------------------------------------


def test_the_guides_incident_from_reactions_gives_the_reports_durations(
    clocked: tuple[LocalBot, ManualClock],
) -> None:
    bot, _ = clocked
    alert = post(bot, "U0MONITOR", "[ALERT] p95 > 200ms", at(14, 15))
    noticed = post(bot, "U0LEMUN", "p95 850ms, 이상 신호 확인", at(14, 35))
    decided = post(bot, "U0SENA", "롤백 결정", at(14, 35) + timedelta(seconds=40))  # kept to the minute
    public_id, thread_ts = open_incident(bot)
    run(bot, "milestone deployed 14:00")
    react(bot, alert, "U0LEMUN", "pushpin")
    run(bot, "milestone started 14:15")
    # The rollback can't come before the detection (14:40, the open) until detection is corrected.
    react(bot, decided, "U0SENA", "rewind")
    [refusal] = bot.slack.ephemerals(user="U0SENA")
    assert "롤백 결정 시점을 14:35 UTC로 기록할 수 없습니다" in refusal["text"]
    assert "실패 감지 시점(14:40 UTC)보다 빠를 수 없습니다" in refusal["text"]
    assert bot_reactions(bot, decided) == [] and incident(bot).rollback_at is None
    react(bot, decided, "U0SENA", "rewind", removed=True)
    react(bot, noticed, "U0LEMUN", "rotating_light")
    react(bot, decided, "U0SENA", "rewind")
    recovered = bot.slack.add_message(CHANNEL, "U0GITCO", "롤백 완료, 메트릭 정상화", thread_ts=thread_ts,
                                      ts=slack_ts(at(14, 38)))["ts"]
    react(bot, recovered, "U0GITCO", "white_check_mark")
    stored = incident(bot)
    assert (stored.detected_at, stored.rollback_at, stored.recovered_at) == (at(14, 35), at(14, 35), at(14, 38))
    for ts in (noticed, decided, recovered):
        assert bot_reactions(bot, ts) == [ACK]  # acknowledged quietly, nothing posted
    assert [m["text"] for m in bot.slack.thread(CHANNEL, thread_ts)] == ["롤백 완료, 메트릭 정상화"]
    milestone_events = {e.data["milestone"]: e for e in visible(bot, "system") if e.data["action"] == "milestone"}
    assert milestone_events["recovered"].author_id == "U0GITCO"
    assert milestone_events["recovered"].author_name == "Gitco"
    assert milestone_events["recovered"].occurred_at == at(14, 38)
    announcement = bot.slack.message(CHANNEL, thread_ts)["text"]
    assert "실패 감지: 14:35 UTC (발생 후 20분)" in announcement
    assert "롤백 완료: 14:38 UTC (복구 시간 3분)" in announcement

    bot.driver.command("/postmortem", "report")
    bot.settle()
    [file] = bot.slack.files()
    document = file["content"].decode()
    assert "- **발생 일시**: 2025-10-22 14:15 UTC" in document
    assert "- **감지 시간**: 14:35 UTC (20분 후)" in document
    assert "- **복구 시간**: 14:38 UTC (3분)" in document
    assert "- **총 영향 시간**: 23분" in document
    assert "| 14:15 | 📌 [ALERT] p95 > 200ms | Monitoring |" in document
    assert "| 14:38 | 복구(롤백 완료) 시점 기록: 14:38 UTC | Gitco |" in document
    assert public_id in document


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en"}])
def test_refused_milestone_reaction_is_explained_once_in_english(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    _, thread_ts = open_incident(bot, "Canary failure")
    early = bot.slack.add_message(CHANNEL, "U0GITCO", "traffic back on legacy", thread_ts=thread_ts,
                                  ts=slack_ts(at(14, 30)))["ts"]
    event = reaction_event(early, "U0GITCO", "white_check_mark", "1761144000.000009")
    bot.slack.add_reaction(CHANNEL, early, "U0GITCO", "white_check_mark")
    for retry in (None, 1):
        bot.driver.event(event, retry_num=retry, event_id="Ev0REFUSED")
    bot.settle()
    [refusal] = bot.slack.ephemerals(user="U0GITCO")
    assert refusal["thread_ts"] == thread_ts  # said where the reaction is
    assert "Can't record Recovered (rollback done) at 14:30 UTC" in refusal["text"]
    assert "it can't be earlier than Detected (14:40 UTC)" in refusal["text"]
    assert incident(bot).recovered_at is None and bot_reactions(bot, early) == []


def test_removing_the_reaction_takes_the_milestone_back(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    _, thread_ts = open_incident(bot)
    run(bot, "milestone detected 14:30")
    done = bot.slack.add_message(CHANNEL, "U0GITCO", "done?", thread_ts=thread_ts, ts=slack_ts(at(14, 36)))["ts"]
    react(bot, done, "U0LEMUN", "white_check_mark")
    assert incident(bot).recovered_at == at(14, 36)
    react(bot, done, "U0SENA", "white_check_mark")
    react(bot, done, "U0SENA", "white_check_mark", removed=True)  # not the one who set it: no change
    assert incident(bot).recovered_at == at(14, 36)
    react(bot, done, "U0LEMUN", "white_check_mark", removed=True)
    assert incident(bot).recovered_at is None
    assert "롤백 완료: 진행 전" in bot.slack.message(CHANNEL, thread_ts)["text"]
    assert "복구(롤백 완료) 시점 기록 취소 (이전: 14:36 UTC)" in run(bot, "timeline")
    # A correction by someone else is not undone by removing the older reaction.
    react(bot, done, "U0LEMUN", "white_check_mark")
    run(bot, "milestone recovered 14:38")
    react(bot, done, "U0LEMUN", "white_check_mark", removed=True)
    assert incident(bot).recovered_at == at(14, 38)


def test_detected_set_from_an_alert_before_the_open(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    alert = post(bot, "U0MONITOR", "[ALERT] error rate 9%", at(14, 12))
    _, thread_ts = open_incident(bot)
    react(bot, alert, "U0LEMUN", "rotating_light")
    assert incident(bot).detected_at == at(14, 12)
    assert bot_reactions(bot, alert) == [ACK]
    [event] = [e for e in visible(bot, "system") if e.data["action"] == "milestone"]
    assert (event.data["old_display"], event.data["new_display"]) == ("14:40 UTC", "14:12 UTC")
    assert event.data["source_ts"] == alert and event.data["via"] == "reaction"
    assert "실패 감지: 14:12 UTC" in bot.slack.message(CHANNEL, thread_ts)["text"]


@pytest.mark.parametrize("bot_env", [{"MILESTONE_EMOJI": "fire=detected,ok=recovered"}])
def test_the_emoji_map_is_configurable(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = clocked
    _, thread_ts = open_incident(bot)
    message = bot.slack.add_message(CHANNEL, "U0LEMUN", "불났어요", thread_ts=thread_ts,
                                    ts=slack_ts(at(14, 33)))["ts"]
    react(bot, message, "U0LEMUN", "rotating_light")  # not in this map
    assert incident(bot).detected_at == T0
    react(bot, message, "U0LEMUN", "fire")
    assert incident(bot).detected_at == at(14, 33)


def test_milestone_reactions_still_correct_a_resolved_incident(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = clocked
    _, thread_ts = open_incident(bot)
    late = bot.slack.add_message(CHANNEL, "U0GITCO", "traffic 100% legacy", thread_ts=thread_ts,
                                 ts=slack_ts(at(14, 41)))["ts"]
    clock.advance(timedelta(minutes=10))
    run(bot, "status resolved")
    react(bot, late, "U0GITCO", "white_check_mark")
    assert incident(bot).recovered_at == at(14, 41) and incident(bot).status == "resolved"
    react(bot, late, "U0SENA", "pushpin")
    assert [e.highlighted for e in visible(bot, "message")] == [True]


def test_concurrent_pins_by_many_people_make_one_event(bot: LocalBot) -> None:
    open_incident(bot)
    message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "모두가 본 그 메시지")
    bot.settle()
    users = [f"U0PIN{n}" for n in range(8)]
    barrier = threading.Barrier(len(users))

    def pin(user: str) -> None:
        barrier.wait()
        assert bot.driver.react(CHANNEL, message["ts"], user, "pushpin").status_code == 200

    threads = [threading.Thread(target=pin, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bot.settle()
    assert len(visible(bot, "pin")) == 1 and count(bot, EventPin) == len(users)


def test_reactions_on_files_are_ignored(bot: LocalBot) -> None:
    open_incident(bot)
    before = len(bot.slack.calls())
    event = {"type": "reaction_added", "user": "U0SENA", "reaction": "pushpin",
             "item": {"type": "file", "file": "F0123"}, "event_ts": "1761144000.000010"}
    assert bot.driver.event(event).status_code == 200
    bot.settle()
    assert len(bot.slack.calls()) == before and visible(bot, "pin") == []
