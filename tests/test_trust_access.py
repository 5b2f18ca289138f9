"""Issue "Trust", items 7 and 8: a command reaches an incident of another channel only for members of that
channel (Slack says who is, never the request), and an incident ID inside free text is only text.

Everything goes through signed HTTP to the served app; the Slack sandbox knows the channels and their members.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot import access
from bot.clock import ManualClock
from bot.parsing import split_command
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import ActionItem, Incident, Note, Report, TimelineEvent, Why
from tests.helpers import clocked_bot, count, open_incident

PRIVATE, PRIVATE_NAME = "G0PRIVATE", "incident-secret"
RANDOM, RANDOM_NAME = "C0RANDOM", "random"
SECRET_TITLE = "결제 DB 자격 증명 유출 의심"
SECRET_REPLY = "the root password is hunter2"
OUTSIDER, MEMBER = "U0LUBIT", "U0LEMUN"
T0 = datetime(2025, 10, 22, 5, 0, tzinfo=UTC)


def private_workspace(slack: SlackSandbox) -> None:
    """#random has everyone; the private channel has Sena, Lemun and the bot, not Lubit."""
    slack.add_channel(RANDOM, RANDOM_NAME)
    slack.add_channel(PRIVATE, PRIVATE_NAME, private=True, members=["U0SENA", MEMBER])


def open_private(bot: LocalBot) -> tuple[str, str]:
    """The issue's setup: a private incident with a secret reply in its thread."""
    private_workspace(bot.slack)
    public_id, thread_ts = open_incident(bot, SECRET_TITLE, channel=PRIVATE, channel_name=PRIVATE_NAME)
    assert bot.driver is not None
    bot.driver.say(PRIVATE, "U0SENA", SECRET_REPLY, thread_ts=thread_ts)
    bot.settle()
    return public_id, thread_ts


def ask(bot: LocalBot, command: str, text: str, *, user: str = OUTSIDER, channel: str = RANDOM,
        channel_name: str = RANDOM_NAME) -> tuple[str, str]:
    """Runs a command; returns (the ack's text, the final answer: the ack's, or the one sent later by response_url)."""
    assert bot.driver is not None
    response = bot.driver.command(command, text, user=user, channel=channel, channel_name=channel_name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_type"] == "ephemeral"
    bot.settle()
    later = bot.slack.responses(bot.driver.last_response_url)
    assert all(r.get("response_type") == "ephemeral" for r in later)
    return str(body["text"]), str(later[-1]["text"]) if later else str(body["text"])


def everything_shown(bot: LocalBot) -> str:
    """All the bot said anywhere: calls to Slack (posts, ephemerals, uploads) and response_url answers."""
    parts = [json.dumps(call.args, ensure_ascii=False) for call in bot.slack.calls()]
    parts += [json.dumps(r, ensure_ascii=False) for r in bot.slack.responses()]
    return "\n".join(parts)


def incident_row(bot: LocalBot, public_id: str) -> Incident:
    with bot.ctx.db.read() as session:
        found = session.scalars(select(Incident).where(Incident.public_id == public_id)).one()
        session.expunge(found)
        return found


def membership_calls(bot: LocalBot) -> int:
    return len(bot.slack.calls("users.conversations"))


# ---- item 7: the reproduction, command by command -----------------------------------------------------

REFUSED = [
    ("/incident", "{id} timeline"),
    ("/postmortem", "{id} why 누가 이 채널을 보나"),
    ("/postmortem", "{id} root-cause 외부인이 적은 원인"),
    ("/incident", "{id} status cancelled"),
    ("/postmortem", "{id} report"),
    ("/postmortem", "lesson {id} 외부인이 적은 교훈"),
]


@pytest.mark.parametrize(("command", "text"), REFUSED)
def test_a_non_member_in_another_channel_is_refused(bot: LocalBot, command: str, text: str) -> None:
    public_id, thread_ts = open_private(bot)
    thread_before = len(bot.slack.thread(PRIVATE, thread_ts))
    events_before = count(bot, TimelineEvent)
    bot.slack.clear_calls()
    acked, answer = ask(bot, command, text.format(id=public_id))
    assert public_id in acked and SECRET_TITLE not in acked  # "checking your access…": no Slack call before the ack
    assert "멤버가 아니어서" in answer and public_id in answer
    shown = everything_shown(bot)
    assert SECRET_REPLY not in shown and SECRET_TITLE not in shown
    assert len(bot.slack.thread(PRIVATE, thread_ts)) == thread_before  # nothing posted into the private thread
    assert bot.slack.files() == []
    found = incident_row(bot, public_id)
    assert found.status == "investigating" and found.root_cause is None
    assert count(bot, Why) == count(bot, Note) == count(bot, Report) == 0
    assert count(bot, TimelineEvent) == events_before


def test_list_shows_a_non_member_only_public_incidents(bot: LocalBot) -> None:
    public_id, _ = open_private(bot)
    open_title = "추천 API p95 급증"
    public_incident, _ = open_incident(bot, open_title)  # #critical-incidents: public, everyone is in it
    _, answer = ask(bot, "/incident", "list")
    assert public_incident in answer and open_title in answer
    assert public_id not in answer and SECRET_TITLE not in answer
    # A member of the private channel, asking from the same #random, sees both.
    _, answer = ask(bot, "/incident", "list", user=MEMBER)
    assert public_id in answer and SECRET_TITLE in answer and public_incident in answer


def test_public_incidents_are_listed_without_asking_slack(bot: LocalBot) -> None:
    private_workspace(bot.slack)
    public_incident, _ = open_incident(bot, "추천 API p95 급증")
    bot.slack.clear_calls()
    acked, answer = ask(bot, "/incident", "list")
    assert acked == answer and public_incident in answer  # answered in the ack itself
    assert membership_calls(bot) == 0


def test_a_public_channel_made_private_stops_listing_its_incidents_to_non_members_within_the_ttl(
        clocked: tuple[LocalBot, ManualClock]) -> None:
    """The announcement stores "public"; the sweep asks Slack again about every channel with an open incident once
    that answer is older than VISIBILITY_TTL, though nobody opens anything there again."""
    bot, clock = clocked
    private_workspace(bot.slack)
    incident_id, _ = open_incident(bot, "추천 API p95 급증")  # #critical-incidents: public
    assert incident_id in ask(bot, "/incident", "list")[1]
    bot.slack.add_channel("C0INCIDENTS", "critical-incidents", private=True, members=["U0SENA"])  # made private
    assert access.refresh_stale_visibilities(bot.ctx) == 0  # asked within the TTL: trusted
    clock.advance(access.VISIBILITY_TTL)
    assert access.refresh_stale_visibilities(bot.ctx) == 1
    _, answer = ask(bot, "/incident", "list")
    assert incident_id not in answer
    assert incident_id in ask(bot, "/incident", "list", user="U0SENA")[1]  # a member still sees it


def test_a_member_in_another_channel_is_served_and_the_answer_is_cached(bot: LocalBot) -> None:
    public_id, thread_ts = open_private(bot)
    thread_before = len(bot.slack.thread(PRIVATE, thread_ts))
    bot.slack.clear_calls()
    acked, answer = ask(bot, "/incident", f"{public_id} timeline", user=MEMBER)
    assert "확인하고 있습니다" in acked and SECRET_REPLY not in acked
    assert SECRET_REPLY in answer  # the same timeline the ack would have carried
    assert membership_calls(bot) == 1
    acked, answer = ask(bot, "/postmortem", f"why {public_id} 커넥션 풀 고갈", user=MEMBER)
    assert acked == answer and "5 Whys 1번" in answer  # within the cache window: answered in the ack
    assert membership_calls(bot) == 1
    [why] = _stored(bot, Why)
    assert why.text == "커넥션 풀 고갈" and why.incident_id == incident_row(bot, public_id).id
    _, answer = ask(bot, "/incident", f"status {public_id} cancelled", user=MEMBER)
    assert incident_row(bot, public_id).status == "cancelled"
    assert len(bot.slack.thread(PRIVATE, thread_ts)) > thread_before  # the notice goes into the thread


def test_in_the_incidents_own_channel_slack_is_not_asked(bot: LocalBot) -> None:
    public_id, _ = open_private(bot)
    bot.slack.clear_calls()
    acked, answer = ask(bot, "/incident", f"{public_id} timeline", user="U0SENA", channel=PRIVATE,
                        channel_name=PRIVATE_NAME)
    assert acked == answer and SECRET_REPLY in answer
    assert membership_calls(bot) == 0


@pytest.fixture
def clocked(database_url: str) -> Iterator[tuple[LocalBot, ManualClock]]:
    with clocked_bot(database_url, T0) as pair:
        yield pair


def test_membership_is_asked_again_after_the_cache_window(clocked: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = clocked
    public_id, _ = open_private(bot)
    bot.slack.clear_calls()
    _, answer = ask(bot, "/incident", f"{public_id} timeline", user=MEMBER)
    assert SECRET_REPLY in answer and membership_calls(bot) == 1
    bot.slack.remove_member(PRIVATE, MEMBER)
    clock.advance(timedelta(seconds=59))
    _, answer = ask(bot, "/incident", f"{public_id} timeline", user=MEMBER)
    assert SECRET_REPLY in answer and membership_calls(bot) == 1  # cached: removal not seen yet
    clock.advance(timedelta(seconds=1))
    _, answer = ask(bot, "/incident", f"{public_id} timeline", user=MEMBER)
    assert membership_calls(bot) == 2  # asked again
    assert "멤버가 아니어서" in answer and SECRET_REPLY not in answer
    [call] = bot.slack.calls("users.conversations")[-1:]
    assert call.args["user"] == MEMBER  # Slack is asked about the person who typed it


def test_when_slack_cannot_answer_the_command_is_refused(bot: LocalBot) -> None:
    public_id, thread_ts = open_private(bot)
    thread_before = len(bot.slack.thread(PRIVATE, thread_ts))
    bot.slack.fail("users.conversations", status=503, times=10)
    _, answer = ask(bot, "/incident", f"{public_id} status cancelled", user=MEMBER)
    assert "확인하지 못해" in answer and "아무것도 실행하지 않았습니다" in answer
    assert incident_row(bot, public_id).status == "investigating"
    assert len(bot.slack.thread(PRIVATE, thread_ts)) == thread_before
    _, answer = ask(bot, "/incident", "list")
    assert "확인하지 못해" in answer and public_id not in answer and SECRET_TITLE not in answer
    # A failure is not remembered: once Slack answers again, so does the bot.
    bot.slack.reset_faults()
    _, answer = ask(bot, "/incident", f"{public_id} status cancelled", user=MEMBER)
    assert incident_row(bot, public_id).status == "cancelled"


# ---- item 8: an ID inside free text is text ---------------------------------------------------------------------


@pytest.fixture
def two_incidents(bot: LocalBot) -> tuple[str, str]:
    """A is the open incident of #critical-incidents; B is open in another channel."""
    a, _ = open_incident(bot, "추천 API p95 급증")
    b, _ = open_incident(bot, "결제 오류", channel="C0PAYMENTS", channel_name="payments")
    return a, b


def _stored(bot: LocalBot, model: Any) -> list[Any]:
    with bot.ctx.db.read() as session:
        rows = list(session.scalars(select(model)).all())
        session.expunge_all()
        return rows


@pytest.mark.parametrize(("text", "model", "field"), [
    ("why Same failure mode as {b} last month", Why, "text"),
    ("lesson Same failure mode as {b} last month", Note, "text"),
    ('action P2 "Add the {b} alarm to the canary"', ActionItem, "task"),
])
def test_an_id_inside_free_text_is_stored_verbatim_on_the_channels_incident(
    bot: LocalBot, two_incidents: tuple[str, str], text: str, model: Any, field: str,
) -> None:
    a, b = two_incidents
    typed = text.format(b=b)
    _, answer = ask(bot, "/postmortem", typed, user="U0SENA", channel="C0INCIDENTS",
                    channel_name="critical-incidents")
    assert b in answer or model is ActionItem  # the confirmation echoes the text
    [row] = _stored(bot, model)
    assert b in getattr(row, field)
    assert getattr(row, field) in typed  # verbatim: nothing cut out
    assert row.incident_id == incident_row(bot, a).id


def test_an_id_inside_an_open_title_stays_in_the_title(bot: LocalBot, two_incidents: tuple[str, str]) -> None:
    _, b = two_incidents
    for title in (f"Same failure mode as {b} last month", f"{b} again"):
        assert bot.driver is not None
        bot.driver.command("/incident", f"open {title}")
        bot.settle()
        newest = max(_stored(bot, Incident), key=lambda i: i.id)
        assert newest.title == title and newest.channel_id == "C0INCIDENTS"


def test_the_id_counts_first_or_right_after_the_subcommand(bot: LocalBot, two_incidents: tuple[str, str]) -> None:
    _, b = two_incidents
    for typed in (f"{b} why first position", f"why {b} second position"):
        ask(bot, "/postmortem", typed, user="U0SENA", channel="C0INCIDENTS", channel_name="critical-incidents")
    whys = _stored(bot, Why)
    assert [w.text for w in whys] == ["first position", "second position"]
    assert {w.incident_id for w in whys} == {incident_row(bot, b).id}


@pytest.mark.parametrize(("text", "sub", "incident_id", "rest"), [
    ("INCIDENT-20251022-002 why text", "why", "INCIDENT-20251022-002", "text"),
    ("why incident-20251022-002 text", "why", "INCIDENT-20251022-002", "text"),
    ("why Same as INCIDENT-20251022-002 last month", "why", None, "Same as INCIDENT-20251022-002 last month"),
    ("status resolved INCIDENT-20251022-002", "status", None, "resolved INCIDENT-20251022-002"),
    ("open INCIDENT-20251022-002 again", "open", None, "INCIDENT-20251022-002 again"),
    ("why\nline one\n  line two", "why", None, "line one\n  line two"),
    ("INCIDENT-20251022-002", "", "INCIDENT-20251022-002", ""),
    ("why xINCIDENT-20251022-002 y", "why", None, "xINCIDENT-20251022-002 y"),
])
def test_split_command_position_rule(text: str, sub: str, incident_id: str | None, rest: str) -> None:
    parsed = split_command(text)
    assert (parsed.sub, parsed.incident_id, parsed.rest) == (sub, incident_id, rest)


# ---- the sandbox answers as Slack documents it ------------------------------------------------------------------


def test_sandbox_membership_methods_follow_slacks_documented_behaviour(slack: SlackSandbox) -> None:
    private_workspace(slack)
    slack.add_channel("G0HIDDEN", "bot-not-invited", private=True, members=[OUTSIDER], bot_member=False)
    client = WebClient(token=slack.bot_token, base_url=slack.api_url, timeout=5)
    both = "public_channel,private_channel"

    def channels_of(user: str, types: str | None = None) -> list[str]:
        pages = client.users_conversations(user=user, limit=1, **({"types": types} if types else {}))
        return [c["id"] for page in pages for c in page["channels"]]  # one per page: the cursor is followed

    assert channels_of(MEMBER, both) == ["C0INCIDENTS", RANDOM, PRIVATE]
    assert channels_of(MEMBER) == ["C0INCIDENTS", RANDOM]  # Slack's default types: public channels only
    # A private channel is listed only when the bot shares it.
    assert channels_of(OUTSIDER, both) == ["C0INCIDENTS", RANDOM]
    assert client.conversations_info(channel=PRIVATE)["channel"]["is_private"] is True
    assert client.conversations_info(channel=RANDOM)["channel"]["is_private"] is False
    for method in (client.conversations_info, client.conversations_members):
        with pytest.raises(SlackApiError) as refused:
            method(channel="G0HIDDEN")
        assert refused.value.response["error"] == "channel_not_found"
    members = [m for page in client.conversations_members(channel=PRIVATE, limit=1) for m in page["members"]]
    assert sorted(members) == sorted(["U0SENA", MEMBER, slack.bot_user_id])
    slack.remove_member(PRIVATE, MEMBER)
    assert PRIVATE not in channels_of(MEMBER, both)
