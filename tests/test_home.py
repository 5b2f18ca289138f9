"""The App Home (issue 16): on `app_home_opened`, each viewer's home is published with views.publish, after the ack:
the open incidents they may see, their own open action items (overdue first), the last 30 days in three numbers.

The history is made through the app's own commands and clicks, as Slack sends them; the sandbox records the
published views. The sandbox's views.publish and conversations.open are checked against Slack's documented
answers at the end of the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import func, select

from bot.clock import ManualClock
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import ActionItem, Base
from tests.helpers import clocked_bot, open_incident

PRIVATE, PRIVATE_NAME = "G0PRIVATE", "incident-secret"
SECRET_TITLE = "결제 DB 자격 증명 유출 의심"
SENA, LEMUN = "U0SENA", "U0LEMUN"
T0 = datetime(2025, 10, 22, 5, 0, tzinfo=UTC)


@pytest.fixture
def home_bot(database_url: str) -> Iterator[tuple[LocalBot, ManualClock]]:
    with clocked_bot(database_url, T0, {"INCIDENT_LOCALE": "en", "SCHEDULER_ENABLED": "false"}) as running:
        yield running


def pm(bot: LocalBot, text: str, *, channel: str = "C0INCIDENTS", channel_name: str = "critical-incidents") -> str:
    assert bot.driver is not None
    response = bot.driver.command("/postmortem", text, channel=channel, channel_name=channel_name)
    assert response.status_code == 200, response.text
    bot.settle()
    return str(response.json()["text"])


def item_id(bot: LocalBot, task: str) -> tuple[int, str]:
    with bot.ctx.db.read() as session:
        item = session.scalars(select(ActionItem).where(ActionItem.task == task)).one()
        return item.id, str(item.message_ts)


def open_home(bot: LocalBot, user: str, tab: str = "home") -> dict[str, Any] | None:
    assert bot.driver is not None
    response = bot.driver.app_home_opened(user, tab)
    assert response.status_code == 200, response.text
    bot.settle()
    return bot.slack.app_homes.home(user)


def lines(view: dict[str, Any]) -> list[str]:
    """The text of each block, in order (headers, sections, context)."""
    out: list[str] = []
    for block in view["blocks"]:
        if isinstance(block.get("text"), dict):
            out.append(block["text"]["text"])
        out += [element["text"] for element in block.get("elements") or [] if "text" in element]
    return out


def section(view: dict[str, Any], title: str) -> list[str]:
    """The lines under the header `title`, up to the next header."""
    found = lines(view)
    start = found.index(title) + 1
    headers = {b["text"]["text"] for b in view["blocks"] if b["type"] == "header"}
    end = next((i for i in range(start, len(found)) if found[i] in headers), len(found))
    return found[start:end]


def test_two_people_each_see_their_own_items_and_only_the_incidents_they_may_see(
        home_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = home_bot
    assert bot.driver is not None
    # A public incident with Lemun as its lead, and a private one in a channel Lemun is not in.
    bot.slack.add_channel(PRIVATE, PRIVATE_NAME, private=True, members=[SENA])
    public_id, thread_ts = open_incident(bot, "결제 API 오류 <@U0LUBIT> sev:high")
    assert bot.driver.command("/incident", f"role lead <@{LEMUN}|lemun>").status_code == 200
    private_id, _ = open_incident(bot, f"{SECRET_TITLE} sev:critical", channel=PRIVATE, channel_name=PRIVATE_NAME)
    # Sena's items: the later due one first given; one she finishes. Lemun's: one public, one in the private channel.
    pm(bot, f'action P0 "Fix the connection pool" <@{SENA}|sena> due:3d')
    pm(bot, f'action P1 "Rotate the keys" <@{SENA}|sena> due:1d')
    pm(bot, f'action P2 "Already done" <@{SENA}|sena>')
    pm(bot, f'action P2 "Lemun\'s dashboard" <@{LEMUN}|lemun> due:3d')
    pm(bot, f'action P1 "Private follow-up" <@{LEMUN}|lemun> due:1d', channel=PRIVATE, channel_name=PRIVATE_NAME)
    done, done_ts = item_id(bot, "Already done")
    assert bot.driver.block_action("postmortem.action.done", str(done), message_ts=done_ts).status_code == 200
    bot.settle()
    clock.advance(timedelta(days=2, hours=3))  # "Rotate the keys" is now overdue

    sena = open_home(bot, SENA)
    lemun = open_home(bot, LEMUN)
    assert sena is not None and lemun is not None
    assert sena["type"] == "home" and lemun["type"] == "home"
    assert {c.args["user_id"] for c in bot.slack.calls("views.publish")} == {SENA, LEMUN}

    # Sena sees both incidents, newest first: ID linked to its thread, title, severity, status, age, lead.
    incidents = section(sena, "🚨 Open incidents")
    assert len(incidents) == 2
    assert private_id in incidents[0] and SECRET_TITLE in incidents[0] and "CRITICAL" in incidents[0]
    link = f"https://sandbox.slack.com/archives/C0INCIDENTS/p{thread_ts.replace('.', '')}"
    assert f"*<{link}|{public_id}>* 결제 API 오류 &lt;@U0LUBIT&gt;" in incidents[1]  # text never mentions anyone
    assert "HIGH · 🔍 Investigating · open for 2 d 3 h · lead <@U0LEMUN>" in incidents[1]
    assert "no lead yet" in incidents[0]
    # Her open items, overdue first; not the done one, nor Lemun's.
    items = section(sena, "📋 Your open action items")
    assert len(items) == 2
    assert "*[P1]* Rotate the keys" in items[0] and "⏰ overdue" in items[0] and public_id in items[0]
    assert "*[P0]* Fix the connection pool" in items[1] and "overdue" not in items[1]
    assert "2025-10-25 (Sat)" in items[1]
    assert "Incidents *2*" in section(sena, "📈 The last 30 days")[0]

    # Lemun: the public incident only, and nothing of the private one anywhere in his home.
    incidents = section(lemun, "🚨 Open incidents")
    assert len(incidents) == 1 and public_id in incidents[0]
    assert private_id not in json.dumps(lemun, ensure_ascii=False)
    assert SECRET_TITLE not in json.dumps(lemun, ensure_ascii=False)
    assert "Private follow-up" not in json.dumps(lemun, ensure_ascii=False)
    items = section(lemun, "📋 Your open action items")
    assert len(items) == 1 and "Lemun's dashboard" in items[0] and "overdue" not in items[0]
    assert "Incidents *1*" in section(lemun, "📈 The last 30 days")[0]


def row_counts(bot: LocalBot) -> dict[str, int]:
    with bot.ctx.db.read() as session:
        return {table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for table in Base.metadata.sorted_tables}


def test_opening_stores_nothing_and_a_burst_of_opens_publishes_once(home_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, clock = home_bot
    open_incident(bot)
    before = row_counts(bot)
    for _ in range(3):
        open_home(bot, SENA)
    open_home(bot, SENA, tab="messages")  # the Messages tab has no home to publish
    assert len(bot.slack.calls("views.publish")) == 1
    first = bot.slack.app_homes.home(SENA)
    assert first is not None

    clock.advance(timedelta(seconds=6))
    second = open_home(bot, SENA)
    publishes = bot.slack.calls("views.publish")
    assert len(publishes) == 2
    # The event carried the view Sena saw; its hash guards the publish against a newer one.
    assert publishes[1].args["hash"] == first["hash"]
    assert second is not None and second["hash"] != first["hash"] and second["id"] == first["id"]
    assert row_counts(bot) == before


@pytest.mark.serial  # times the ack against a slow Slack
def test_the_event_is_acked_without_waiting_for_slack(home_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = home_bot
    assert bot.driver is not None
    open_incident(bot)  # Bolt's own auth.test is behind us
    bot.slack.set_latency("*", 3.0)
    try:
        started = time.monotonic()
        response = bot.driver.app_home_opened(SENA)
        took = time.monotonic() - started
    finally:
        bot.slack.reset_faults()
    assert response.status_code == 200 and took < 1.5, took
    bot.settle()
    assert bot.slack.app_homes.home(SENA) is not None  # published afterwards


def test_a_failed_publish_is_tried_again_at_the_next_open(home_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = home_bot
    open_incident(bot)
    bot.slack.fail("views.publish", status=200, error="internal_error")
    assert open_home(bot, SENA) is None
    # Not held back by the debounce: the failure released it.
    shown = open_home(bot, SENA)
    assert shown is not None and len(section(shown, "🚨 Open incidents")) == 1
    assert len(bot.slack.calls("views.publish")) == 2


def test_when_slack_cannot_say_who_is_in_which_channel_only_public_incidents_are_shown(
        home_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = home_bot
    bot.slack.add_channel(PRIVATE, PRIVATE_NAME, private=True, members=[SENA])
    open_incident(bot, "Public one")
    open_incident(bot, SECRET_TITLE, channel=PRIVATE, channel_name=PRIVATE_NAME)
    bot.slack.fail("users.conversations", status=200, error="internal_error", times=5)
    shown = open_home(bot, SENA)
    assert shown is not None
    text = json.dumps(shown, ensure_ascii=False)
    assert "Public one" in text and SECRET_TITLE not in text
    assert "only public incidents are shown" in text


# ---- the sandbox's App Home methods, as Slack documents them ----------------------------------------------------


@pytest.fixture
def client(slack: SlackSandbox) -> WebClient:
    return WebClient(token=slack.bot_token, base_url=slack.api_url)


def refused(call: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as raised:
        call()
    return dict(raised.value.response.data)  # type: ignore[arg-type]


HOME = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}


def test_views_publish_follows_slacks_documented_answers(slack: SlackSandbox, client: WebClient) -> None:
    answer = refused(lambda: client.views_publish(user_id="U0NOBODY", view=HOME))
    assert answer["error"] == "invalid_arguments" and answer["response_metadata"]["messages"] == ["invalid `user_id`"]
    assert refused(lambda: client.views_publish(user_id=SENA, view={**HOME, "type": "modal"}))["error"] == \
        "invalid_arguments"
    too_many = {"type": "home", "blocks": [{"type": "divider"}] * 101}
    assert refused(lambda: client.views_publish(user_id=SENA, view=too_many))["error"] == "invalid_arguments"

    first = client.views_publish(user_id=SENA, view=HOME)["view"]
    assert first["type"] == "home" and first["hash"] and slack.app_homes.home(SENA) == first
    second = client.views_publish(user_id=SENA, view=HOME, hash=first["hash"])["view"]
    assert second["id"] == first["id"] and second["hash"] != first["hash"]
    # A publish made from the view as it was before the last one is refused, and changes nothing.
    assert refused(lambda: client.views_publish(user_id=SENA, view=HOME, hash=first["hash"]))["error"] == \
        "hash_conflict"
    assert slack.app_homes.home(SENA) == second

    slack.app_homes.home_tab_enabled = False
    assert refused(lambda: client.views_publish(user_id=LEMUN, view=HOME))["error"] == "not_enabled"


def test_conversations_open_gives_one_dm_per_person(slack: SlackSandbox, client: WebClient) -> None:
    opened = client.conversations_open(users=SENA)
    assert opened["channel"]["id"] == slack.app_homes.dm_channel(SENA) and opened["already_open"] is False
    again = client.conversations_open(users=SENA)
    assert again["channel"]["id"] == opened["channel"]["id"] and again["already_open"] is True
    assert client.conversations_open(channel=opened["channel"]["id"])["channel"]["id"] == opened["channel"]["id"]
    assert refused(lambda: client.conversations_open(users="U0NOBODY"))["error"] == "user_not_found"
    assert refused(lambda: client.api_call("conversations.open", json={}))["error"] == "users_list_not_supplied"
