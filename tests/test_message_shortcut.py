"""The "Add to incident timeline" message shortcut: any message onto an incident's timeline, exactly like a 📌.

Driven as Slack drives it: the message_action payload with the whole message and a response_url, the chooser
modal the app opens when several incidents could take it, and its view_submission. Then the timeline rows, and
what the person was told through the response_url.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from bot.timefmt import slack_ts_to_datetime
from handlers.blocks.add_to_timeline import ADD_SHORTCUT, CHOOSER_CALLBACK
from sandbox.harness import LocalBot
from storage.models import EventPin, Incident, RateHit, TimelineEvent
from tests.helpers import count, open_incident

CHANNEL = "C0INCIDENTS"
GENERAL = "C0GENERAL"
PRIVATE = "C0PRIVATE"
CHOICE = "add-to-timeline:incident"


def shortcut(bot: LocalBot, ts: str, *, channel: str = CHANNEL, user: str = "U0SENA") -> None:
    response = bot.driver.message_shortcut(ADD_SHORTCUT, channel, ts, user=user)
    assert response.status_code == 200 and not response.content.strip()
    bot.settle()


def told(bot: LocalBot) -> str:
    """The last thing the person was told through the shortcut's response_url."""
    answers = bot.slack.responses()
    assert answers, "nothing was answered"
    assert answers[-1]["response_type"] == "ephemeral"
    return str(answers[-1]["text"])


def message_events(bot: LocalBot, ts: str) -> list[TimelineEvent]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(TimelineEvent).where(TimelineEvent.slack_ts == ts)).all())


def incident(bot: LocalBot, public_id: str) -> Incident:
    with bot.ctx.db.session() as session:
        return session.scalars(select(Incident).where(Incident.public_id == public_id)).one()


def permalink(channel: str, ts: str) -> str:
    return f"https://sandbox.slack.com/archives/{channel}/p{ts.replace('.', '')}"


def test_a_message_from_before_the_incident_goes_on_at_its_own_time_with_its_permalink(bot: LocalBot) -> None:
    before = f"{time.time() - 900:.6f}"  # 15 minutes before the incident
    deploy = bot.slack.add_message(CHANNEL, "U0GITCO", "배포 시작: ion-api-00042 canary 10% &amp; 모니터링", ts=before)
    public_id, _ = open_incident(bot)
    shortcut(bot, deploy["ts"])
    [event] = message_events(bot, deploy["ts"])
    opened = incident(bot, public_id)
    assert (event.incident_id, event.kind, event.highlighted, event.deleted_at) == (opened.id, "pin", True, None)
    assert event.occurred_at == slack_ts_to_datetime(deploy["ts"]) < opened.opened_at
    assert event.text == "배포 시작: ion-api-00042 canary 10% & 모니터링" and event.author_id == "U0GITCO"
    assert event.data == {"permalink": permalink(CHANNEL, deploy["ts"])}
    assert event.author_name == "Gitco"  # named afterwards, as a 📌'd message is
    answer = told(bot)
    assert public_id in answer and f"<{permalink(CHANNEL, deploy['ts'])}|" in answer
    assert "타임라인에 추가했습니다" in answer


def test_the_same_message_added_twice_is_one_event(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot)
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "p95 850ms")
    shortcut(bot, note["ts"])
    shortcut(bot, note["ts"])
    assert len(message_events(bot, note["ts"])) == 1
    assert told(bot) == bot.ctx.say("timeline_add.already", public_id=public_id)


def test_a_pin_and_the_shortcut_on_one_message_are_one_event_whichever_comes_first(bot: LocalBot) -> None:
    open_incident(bot)
    pinned_first = bot.slack.add_message(CHANNEL, "U0LEMUN", "에러율 9%")
    bot.driver.react(CHANNEL, pinned_first["ts"], "U0GITCO", "pushpin")
    bot.settle()
    shortcut(bot, pinned_first["ts"])
    added_first = bot.slack.add_message(CHANNEL, "U0LEMUN", "롤백 결정")
    shortcut(bot, added_first["ts"])
    bot.driver.react(CHANNEL, added_first["ts"], "U0GITCO", "pushpin")
    bot.settle()
    for message in (pinned_first, added_first):
        [event] = message_events(bot, message["ts"])
        assert (event.kind, event.highlighted, event.deleted_at) == ("pin", True, None)
    # The 📌 taken off again: the shortcut put the message there, and it stays.
    for message in (pinned_first, added_first):
        bot.driver.react(CHANNEL, message["ts"], "U0GITCO", "pushpin", removed=True)
    bot.settle()
    for message in (pinned_first, added_first):
        [event] = message_events(bot, message["ts"])
        assert (event.highlighted, event.deleted_at) == (True, None)


def test_a_reply_in_an_incidents_thread_goes_on_that_incident_even_with_another_open(bot: LocalBot) -> None:
    first, thread_ts = open_incident(bot, "첫 번째 장애")
    open_incident(bot, "두 번째 장애")
    # A reply whose event never reached the app (say, the bot was restarted meanwhile).
    reply = bot.slack.add_message(CHANNEL, "U0LEMUN", "원인 후보: N+1", thread_ts=thread_ts)
    shortcut(bot, reply["ts"])
    [event] = message_events(bot, reply["ts"])
    assert (event.incident_id, event.kind) == (incident(bot, first).id, "message")  # as the reply itself would be
    assert bot.slack.calls("views.open") == []
    assert event.data == {"permalink": permalink(CHANNEL, reply["ts"]) + f"?thread_ts={thread_ts}&cid={CHANNEL}"}


def test_with_several_open_incidents_the_person_chooses_one(bot: LocalBot) -> None:
    older, _ = open_incident(bot, "첫 번째 장애")
    newer, _ = open_incident(bot, "두 번째 장애")
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "캐시 서버 재시작함")
    shortcut(bot, note["ts"])
    assert message_events(bot, note["ts"]) == []  # nothing yet: the person is asked
    [view] = bot.slack.views()
    assert view["callback_id"] == CHOOSER_CALLBACK and view["title"]["text"] == "타임라인에 추가"
    options = view["blocks"][0]["element"]["options"]
    assert [o["text"]["text"] for o in options] == [f"{newer} 두 번째 장애", f"{older} 첫 번째 장애"]
    chosen = incident(bot, older)
    response = bot.driver.submit_view(view["id"], {CHOICE: str(chosen.id)})
    assert response.status_code == 200 and not response.content.strip()
    bot.settle()
    [event] = message_events(bot, note["ts"])
    assert (event.incident_id, event.kind, event.highlighted) == (chosen.id, "pin", True)
    assert older in told(bot) and event.data == {"permalink": permalink(CHANNEL, note["ts"])}


def test_the_choice_is_stored_before_the_chooser_closes_from_the_message_it_carries(bot: LocalBot) -> None:
    # The chooser carries the message as the shortcut did, and the person's access is known: nothing waits for
    # Slack, so the event is stored before Slack is told the chooser may close, and the message is not read again.
    older, _ = open_incident(bot, "첫 번째 장애")
    open_incident(bot, "두 번째 장애")
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "캐시 서버 재시작함 & <@U0SENA> 확인")
    shortcut(bot, note["ts"])
    [view] = bot.slack.views()
    bot.slack.slow_once("conversations.history", 1.0)  # a read of the message, were one made, would be late
    reads = len(bot.slack.calls("conversations.history"))
    response = bot.driver.submit_view(view["id"], {CHOICE: str(incident(bot, older).id)})
    assert response.status_code == 200 and not response.content.strip()
    [event] = message_events(bot, note["ts"])  # already, as the chooser closes
    assert (event.incident_id, event.text) == (incident(bot, older).id, note["text"])
    bot.settle()
    assert len(bot.slack.calls("conversations.history")) == reads
    assert older in told(bot)


def test_a_message_too_long_for_the_chooser_to_carry_is_read_again_and_stored(bot: LocalBot) -> None:
    older, _ = open_incident(bot, "첫 번째 장애")
    open_incident(bot, "두 번째 장애")
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "로그 " * 1000)  # 3,000 characters and more
    shortcut(bot, note["ts"])
    [view] = bot.slack.views()
    assert "message" not in json.loads(view["private_metadata"])
    reads = len(bot.slack.calls("conversations.history"))
    assert bot.driver.submit_view(view["id"], {CHOICE: str(incident(bot, older).id)}).status_code == 200
    bot.settle()
    [event] = message_events(bot, note["ts"])
    assert event.incident_id == incident(bot, older).id and len(bot.slack.calls("conversations.history")) > reads
    assert older in told(bot)


def test_with_no_open_incident_the_person_is_told_and_nothing_is_stored(bot: LocalBot) -> None:
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "그냥 잡담")
    shortcut(bot, note["ts"])
    assert told(bot) == bot.ctx.say("timeline_add.no_incident")
    assert count(bot, TimelineEvent) == count(bot, RateHit) == count(bot, EventPin) == 0
    assert bot.slack.calls("users.conversations") == []  # nothing open anywhere: nobody to ask about


def test_from_general_only_incidents_the_person_may_change_are_offered(bot: LocalBot) -> None:
    bot.slack.add_channel(GENERAL, "general")
    bot.slack.add_channel(PRIVATE, "db-incident", private=True, members=["U0LEMUN"])
    public_id, _ = open_incident(bot, "비공개 DB 장애 제목", channel=PRIVATE, channel_name="db-incident",
                                 user="U0LEMUN")
    chatter = bot.slack.add_message(GENERAL, "U0GITCO", "DB 커넥션이 계속 끊겨요")
    # Not in the incident's channel: nothing is offered, and nothing shows that the incident exists.
    shortcut(bot, chatter["ts"], channel=GENERAL, user="U0SENA")
    assert told(bot) == bot.ctx.say("timeline_add.no_incident")
    assert message_events(bot, chatter["ts"]) == [] and bot.slack.views() == []
    assert not [r for r in bot.slack.responses() if "비공개 DB 장애" in json.dumps(r, ensure_ascii=False)]
    # A member of it: the one incident they may change takes the message at once.
    shortcut(bot, chatter["ts"], channel=GENERAL, user="U0LEMUN")
    [event] = message_events(bot, chatter["ts"])
    assert (event.incident_id, event.slack_channel, event.kind) == (incident(bot, public_id).id, GENERAL, "pin")
    assert public_id in told(bot)


def test_a_chooser_submitted_for_an_incident_the_person_cannot_change_is_refused(bot: LocalBot) -> None:
    bot.slack.add_channel(PRIVATE, "db-incident", private=True, members=["U0LEMUN"])
    secret, _ = open_incident(bot, "비공개 DB 장애", channel=PRIVATE, channel_name="db-incident", user="U0LEMUN")
    open_incident(bot, "첫 번째 장애")
    open_incident(bot, "두 번째 장애")
    note = bot.slack.add_message(CHANNEL, "U0SENA", "관련 있어 보임")
    shortcut(bot, note["ts"])
    [view] = bot.slack.views()
    offered = {o["value"] for o in view["blocks"][0]["element"]["options"]}
    target = incident(bot, secret)
    assert str(target.id) not in offered
    # A submission naming it anyway (the option forged into the payload) changes nothing.
    state: dict[str, Any] = {CHOICE: {CHOICE: {"type": "static_select", "selected_option": {
        "text": {"type": "plain_text", "text": secret}, "value": str(target.id)}}}}
    bot.driver.view_submission(CHOOSER_CALLBACK, state, private_metadata=view["private_metadata"],
                               view_id=view["id"])
    bot.settle()
    assert message_events(bot, note["ts"]) == []
    assert told(bot) == bot.ctx.say("incident.error", code="not_member", params={"incident_id": secret})
    assert json.loads(view["private_metadata"])["channel"] == CHANNEL


def test_from_general_with_several_incidents_the_chooser_opens_once_slack_has_answered(bot: LocalBot) -> None:
    bot.slack.add_channel(GENERAL, "general")
    for channel, name in ((PRIVATE, "db-incident"), ("C0PRIVATE2", "cache-incident")):
        bot.slack.add_channel(channel, name, private=True, members=["U0LEMUN"])
        open_incident(bot, f"{name} 장애", channel=channel, channel_name=name, user="U0LEMUN")
    chatter = bot.slack.add_message(GENERAL, "U0GITCO", "캐시도 DB도 느려요")
    shortcut(bot, chatter["ts"], channel=GENERAL, user="U0LEMUN")
    # No answer on who is where yet: the shortcut is acked, Slack asked, then the chooser opened with the trigger.
    methods = [c.method for c in bot.slack.calls() if c.method in ("users.conversations", "views.open")]
    assert methods == ["users.conversations", "views.open"]
    [view] = bot.slack.views()
    assert len(view["blocks"][0]["element"]["options"]) == 2
    assert message_events(bot, chatter["ts"]) == []


def test_a_spent_trigger_for_the_chooser_is_said_and_nothing_is_stored(bot: LocalBot) -> None:
    open_incident(bot, "첫 번째 장애")
    open_incident(bot, "두 번째 장애")
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "관련 메시지")
    stale = bot.slack.issue_trigger(bot.driver.new_trigger_id(), issued_at=time.time() - 10)
    response = bot.driver.message_shortcut(ADD_SHORTCUT, CHANNEL, note["ts"], trigger_id=stale)
    assert response.status_code == 200
    bot.settle()
    assert told(bot) == bot.ctx.say("timeline_add.choose_slow")
    assert bot.slack.views() == [] and message_events(bot, note["ts"]) == []


def _report(bot: LocalBot, locale: str) -> str:
    response = bot.driver.command("/postmortem", f"report {locale}")
    assert response.status_code == 200
    bot.settle()
    uploads = [f for f in bot.slack.files() if f["filename"].endswith(".md")]
    return bytes(uploads[-1]["content"]).decode("utf-8")


def test_an_added_messages_permalink_is_a_link_in_the_timeline_and_in_the_report(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot)
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "p95 850ms > 200ms")
    shortcut(bot, note["ts"])
    link = permalink(CHANNEL, note["ts"])
    shown = bot.driver.command("/incident", f"timeline {public_id}").json()["text"]
    assert f"p95 850ms &gt; 200ms (<{link}|원본 메시지>)" in shown  # a Slack link, the text escaped as ever
    assert f"p95 850ms > 200ms ([원본 메시지]({link}))" in _report(bot, "ko")  # a Markdown link
    assert f"p95 850ms > 200ms ([original message]({link}))" in _report(bot, "en")


def test_a_permalink_that_could_break_out_of_its_link_is_not_linked(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot)
    note = bot.slack.add_message(CHANNEL, "U0LEMUN", "rollback 시작")
    shortcut(bot, note["ts"])
    with bot.ctx.db.session() as session:  # a stored value that would end `<url|…>` or `[…](url)` early
        [event] = session.scalars(select(TimelineEvent).where(TimelineEvent.slack_ts == note["ts"])).all()
        event.data = {"permalink": "https://x.slack.com/a>|<!channel>) [x](https://evil.example"}
    shown = bot.driver.command("/incident", f"timeline {public_id}").json()["text"]
    assert "rollback 시작 —" in shown and "<!channel>" not in shown and "원본 메시지" not in shown
    report = _report(bot, "ko")
    assert "rollback 시작 |" in report and "evil.example" not in report
