"""The core path through real HTTP: open → announcement thread → replies on the timeline → report upload."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select

from sandbox.harness import LocalBot
from storage.models import Incident, Report, TimelineEvent
from tests.helpers import count, events, open_incident, posted_texts

CHANNEL = "C0INCIDENTS"


def test_open_posts_the_guides_announcement_and_acks_ephemerally(bot: LocalBot) -> None:
    response = bot.driver.command("/incident", "open 추천 API p95 급증 sev:high service:ion-api")
    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    assert "INCIDENT-" in body["text"]
    bot.settle()

    [post] = bot.slack.calls("chat.postMessage")
    assert post.args["channel"] == CHANNEL
    text = post.args["text"]
    public_id = body["text"].split("`")[1]
    assert public_id.startswith("INCIDENT-") and public_id.endswith("-001")
    assert "🚨 *[INCIDENT] 추천 API p95 급증*" in text
    assert "심각도 *HIGH*" in text and "`ion-api`" in text
    assert "원인: [TBD - 분석 중]" in text
    assert "실패 감지:" in text and "현재 상태:* 🔍 조사 중" in text
    assert "다음 단계" in text and "Post-Mortem 회의 (2시간 후)" in text
    with bot.ctx.db.session() as session:
        incident = session.scalars(select(Incident)).one()
        # The date is shown when the meeting falls on another day than the open (e.g. opened after 22:00 UTC).
        spans_days = incident.meeting_at.date() != incident.opened_at.date()
        meeting = incident.meeting_at.strftime("%Y-%m-%d %H:%M" if spans_days else "%H:%M")
        assert incident.announcement_ts == post.response["ts"]
        assert (incident.meeting_at - incident.opened_at).total_seconds() == 2 * 3600
    assert f"*Post-Mortem 회의:* {meeting} UTC" in text
    blocks = post.args["blocks"]
    assert blocks and all(b["type"] in ("section", "divider") for b in blocks)
    assert any(public_id in json.dumps(b, ensure_ascii=False) for b in blocks)


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "en", "INCIDENT_TIMEZONE": "Asia/Seoul"}])
def test_announcement_in_english_and_local_time(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot, "Recommendation API p95 spike sev:critical")
    [post] = bot.slack.calls("chat.postMessage")
    text = post.args["text"]
    assert "🚨 *[INCIDENT] Recommendation API p95 spike*" in text
    assert "Severity *CRITICAL*" in text and "Cause: [TBD - under analysis]" in text
    assert "Asia/Seoul" in text or "KST" in text
    # The ID's date is the local date in INCIDENT_TIMEZONE.
    with bot.ctx.db.session() as session:
        incident = session.scalars(select(Incident)).one()
        local_day = incident.opened_at.astimezone(bot.ctx.settings.timezone).strftime("%Y%m%d")
    assert public_id == f"INCIDENT-{local_day}-001"


def test_thread_replies_become_events_and_retries_stay_single(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    message, response = bot.driver.say(CHANNEL, "U0LEMUN", "p95 850ms 확인했습니다", thread_ts=thread_ts)
    assert response.status_code == 200
    bot.settle()
    # Slack redelivers the same event (same event_id) with X-Slack-Retry-Num.
    event = {"type": "message", "channel": CHANNEL, "user": "U0LEMUN", "text": message["text"],
             "ts": message["ts"], "thread_ts": thread_ts, "channel_type": "channel"}
    for retry in (1, 2):
        assert bot.driver.event(event, retry_num=retry, event_id="Ev0RETRY").status_code == 200
    bot.settle()
    replies = events(bot, "message")
    assert len(replies) == 1
    reply = replies[0]
    assert reply.text == "p95 850ms 확인했습니다"
    assert reply.author_id == "U0LEMUN" and reply.author_name == "Lemun"
    assert reply.slack_channel == CHANNEL and reply.slack_ts == message["ts"]
    assert reply.occurred_at.tzinfo is not None
    assert abs(reply.occurred_at.timestamp() - float(message["ts"])) < 1e-3


def test_messages_outside_the_thread_and_the_bots_own_are_not_events(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    bot.slack.echo_bot_messages_to(bot.driver)  # Slack echoes the bot's posts back as events
    bot.driver.say(CHANNEL, "U0SENA", "unrelated chatter in the channel")
    bot.ctx.messenger.post_message(CHANNEL, "bot says hi", thread_ts=thread_ts)
    time.sleep(0.5)
    bot.settle()
    assert events(bot, "message") == []


def test_edits_update_and_deletions_mark_the_event(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    message, _ = bot.driver.say(CHANNEL, "U0GITCO", "롤백 시작합니다", thread_ts=thread_ts)
    bot.settle()
    bot.driver.edit(CHANNEL, message["ts"], "롤백 시작합니다 (14:35)")
    bot.settle()
    [event] = events(bot, "message")
    assert event.text == "롤백 시작합니다 (14:35)" and event.edited_at is not None
    bot.driver.delete(CHANNEL, message["ts"])
    bot.settle()
    [event] = events(bot, "message")
    assert event.deleted_at is not None


# Twenty opens by one user in a second is what the rate limits refuse; this test is about the IDs under load.
@pytest.mark.serial  # twenty writers at once, against the SQLite busy timeout
@pytest.mark.parametrize("bot_env", [{"RATE_LIMIT_OPEN_PER_USER": "0", "RATE_LIMIT_OPEN_PER_CHANNEL": "0"}])
def test_twenty_concurrent_opens_get_distinct_consecutive_ids(bot: LocalBot) -> None:
    results: list[int] = []
    barrier = threading.Barrier(20)

    def open_one(n: int) -> None:
        barrier.wait()
        results.append(bot.driver.command("/incident", f"open concurrent {n}").status_code)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bot.settle()
    assert results == [200] * 20
    with bot.ctx.db.session() as session:
        ids = sorted(session.scalars(select(Incident.public_id)).all())
    assert len(set(ids)) == 20
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == list(range(1, 21))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # `open` alone opens the declare form now: tests/test_declare_modal.py
        ("open sev:high", "제목이 없습니다"),
        ("open 장애 sev:urgent", "심각도 `urgent`"),
        ("open 장애 service:Bad_Name", "서비스 이름"),
        ("frobnicate", "`frobnicate` 는 알 수 없는 명령"),
    ],
)
def test_bad_input_gets_ephemeral_usage_and_stores_nothing(bot: LocalBot, text: str, expected: str) -> None:
    response = bot.driver.command("/incident", text)
    assert response.status_code == 200
    body = response.json()
    assert body["response_type"] == "ephemeral"
    assert expected in body["text"]
    assert "/incident" in body["text"]  # shows the right form
    bot.settle()
    assert count(bot, Incident) == 0 and count(bot, TimelineEvent) == 0
    assert bot.slack.calls("chat.postMessage") == []


def test_help_lists_the_commands(bot: LocalBot) -> None:
    incident_help = bot.driver.command("/incident", "help").json()["text"]
    for sub in ("open", "status", "severity", "role", "milestone", "meeting", "timeline", "list", "evidence", "verify"):
        assert f"/incident {sub}" in incident_help
    postmortem_help = bot.driver.command("/postmortem", "help").json()["text"]
    for sub in ("why", "root-cause", "action", "actions", "impact", "lesson", "prevent", "checklist", "edit", "report"):
        assert f"/postmortem {sub}" in postmortem_help


def test_forged_signature_and_stale_timestamp_are_refused(bot: LocalBot) -> None:
    body = b"command=%2Fincident&text=open+forged&user_id=U0SENA&channel_id=C0INCIDENTS&team_id=T0SANDBOX"
    headers = bot.driver.sign(body)
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    assert bot.driver.post_raw(body, headers).status_code == 401
    stale = bot.driver.sign(body, timestamp=int(time.time()) - 6 * 60)
    stale["Content-Type"] = "application/x-www-form-urlencoded"
    assert bot.driver.post_raw(body, stale).status_code == 401
    bot.settle()
    assert count(bot, Incident) == 0
    assert bot.slack.calls("chat.postMessage") == []


def test_report_is_uploaded_into_the_thread_with_a_summary(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot)
    bot.driver.say(CHANNEL, "U0SENA", "롤백 결정", thread_ts=thread_ts)
    bot.settle()
    response = bot.driver.command("/postmortem", "report")
    assert response.status_code == 200 and response.json()["response_type"] == "ephemeral"
    bot.settle()
    [complete] = bot.slack.calls("files.completeUploadExternal")
    assert complete.args["channel_id"] == CHANNEL
    assert complete.args["thread_ts"] == thread_ts
    assert public_id in complete.args["initial_comment"]
    [file] = bot.slack.files()
    assert file["filename"] == f"{public_id}-postmortem.md"
    document = file["content"].decode()
    assert "## 기본 정보" in document and f"**사건 ID**: {public_id}" in document
    assert "| 시간 | 이벤트 | 담당자 |" in document
    assert "롤백 결정 | Sena |" in document
    assert "_(작성 필요)_" in document  # empty sections are marked, not dropped
    with bot.ctx.db.session() as session:
        report = session.scalars(select(Report)).one()
        assert report.posted_at is not None and report.file_id


def test_report_in_the_other_language_has_its_own_name(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot)
    bot.driver.command("/postmortem", "report en")
    bot.settle()
    [file] = bot.slack.files()
    assert file["filename"] == f"{public_id}-postmortem.en.md"
    assert "## Basic information" in file["content"].decode()


def test_mentions_in_titles_and_replies_arrive_escaped_everywhere(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "<!channel> 장애 <@U0GITCO> | 파이프")
    bot.driver.say(CHANNEL, "U0LEMUN", "<!here> 확인 | a\nb <@U0SENA>", thread_ts=thread_ts)
    bot.settle()
    bot.driver.command("/postmortem", "report")
    bot.settle()
    for text in posted_texts(bot):
        assert "<!channel>" not in text and "<!here>" not in text
        assert "<@U0GITCO>" not in text and "<@U0SENA>" not in text
    announcement = bot.slack.calls("chat.postMessage")[0].args["text"]
    assert "&lt;!channel&gt;" in announcement and "&lt;@U0GITCO&gt;" in announcement
    document = bot.slack.files()[0]["content"].decode()
    rows = [line for line in document.splitlines() if line.startswith("| ") and "확인" in line]
    assert len(rows) == 1, rows  # the newline did not end the row
    row = rows[0]
    assert row.count(" | ") == 2 and "\\|" in row  # the pipe did not split the cell
    assert "&lt;!here>" in row


def test_ack_is_fast_while_slack_is_slow(bot: LocalBot) -> None:
    """The ack does not wait for Slack: it arrives while the announcement's post is still held by Slack (for up
    to 20 s), without depending on how fast a loaded machine is."""
    released = threading.Event()
    bot.slack.slow_once("chat.postMessage", 20, until=released.is_set)
    response = bot.driver.command("/incident", "open 느린 Slack에서도 빠른 ack")
    assert response.status_code == 200 and "INCIDENT-" in response.json()["text"]
    with bot.ctx.db.read() as session:  # the post has no answer yet, nor did the client give up on it
        assert session.execute(select(Incident.announcement_ts, Incident.announcement_error)).one() == (None, None)
    released.set()
    bot.settle()
    assert len(bot.slack.calls("chat.postMessage")) == 1
    with bot.ctx.db.read() as session:
        assert session.scalars(select(Incident.announcement_ts)).one() is not None


def test_failed_announcement_is_reported_and_retried_later(bot: LocalBot) -> None:
    bot.slack.fail("chat.postMessage", status=500, times=3)  # beyond the client's two retries
    response = bot.driver.command("/incident", "open 공지 실패")
    assert response.status_code == 200
    bot.settle()
    assert bot.slack.messages(CHANNEL) == []
    [told] = bot.slack.responses()
    assert "공지 게시에 실패" in told["text"]
    with bot.ctx.db.session() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.announcement_ts is None and incident.announcement_error
        # The lease keeps the sweep off for a while; expire it as time would.
        incident.announce_claimed_until = None
    bot.runtime.sweep()
    assert len(bot.slack.messages(CHANNEL)) == 1
    bot.runtime.sweep()
    assert len(bot.slack.messages(CHANNEL)) == 1  # nothing posted twice
