"""The Slack sandbox's channel management answers as Slack documents it, through the real slack_sdk WebClient, and
the app's Messenger reads those answers as the domain expects (already invited / archived count as done)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.ports import MessengerError
from handlers.messenger import SlackMessenger, make_web_client
from sandbox.slack import SlackSandbox


@pytest.fixture
def slack() -> Iterator[SlackSandbox]:
    with SlackSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def client(slack: SlackSandbox) -> WebClient:
    return WebClient(token=slack.bot_token, base_url=slack.api_url)


def error_of(call: object) -> dict[str, object]:
    with pytest.raises(SlackApiError) as raised:
        call()  # type: ignore[operator]
    return dict(raised.value.response.data)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "error"), [
    ("", "invalid_name_required"),
    ("x" * 81, "invalid_name_maxlength"),
    ("Inc-Upper", "invalid_name_specials"),
    ("inc 1", "invalid_name_specials"),
    ("---", "invalid_name_punctuation"),
])
def test_create_refuses_names_slack_refuses(client: WebClient, name: str, error: str) -> None:
    assert error_of(lambda: client.conversations_create(name=name))["error"] == error


def test_create_makes_a_channel_once_with_the_bot_as_creator_and_only_member(client: WebClient,
                                                                            slack: SlackSandbox) -> None:
    made = client.conversations_create(name="inc-20251022-001", is_private=True)["channel"]
    assert made["name"] == "inc-20251022-001" and made["is_private"] is True and made["creator"] == slack.bot_user_id
    assert slack.is_member(made["id"], slack.bot_user_id) and not slack.is_member(made["id"], "U0SENA")
    assert error_of(lambda: client.conversations_create(name="inc-20251022-001"))["error"] == "name_taken"


def test_missing_scope_names_the_scope_needed(client: WebClient, slack: SlackSandbox) -> None:
    slack.channel_admin.grant({"chat:write", "channels:read", "groups:read"})
    refused = error_of(lambda: client.conversations_create(name="inc-1"))
    assert refused["error"] == "missing_scope" and refused["needed"] == "channels:manage"
    assert error_of(lambda: client.conversations_create(name="inc-1", is_private=True))["needed"] == "groups:write"


def test_invite_of_several_fails_whole_unless_forced_and_each_join_is_a_message(client: WebClient,
                                                                              slack: SlackSandbox) -> None:
    channel = client.conversations_create(name="inc-2")["channel"]["id"]
    slack.channel_admin.refuse_invites("U0GITCO")
    refused = error_of(lambda: client.conversations_invite(channel=channel, users=["U0SENA", "U0GITCO"]))
    assert refused["error"] == "cant_invite" and refused["errors"] == [
        {"user": "U0GITCO", "ok": False, "error": "cant_invite"}]
    assert not slack.is_member(channel, "U0SENA")  # nobody, unless forced
    forced = client.conversations_invite(channel=channel, users=["U0SENA", "U0GITCO"], force=True)
    assert forced["ok"] and slack.is_member(channel, "U0SENA") and not slack.is_member(channel, "U0GITCO")
    [join] = [m for m in slack.messages(channel) if m.get("subtype") == "channel_join"]
    assert join["user"] == "U0SENA" and join["inviter"] == slack.bot_user_id
    assert error_of(lambda: client.conversations_invite(channel=channel, users="U0SENA"))["error"] == \
        "already_in_channel"
    assert error_of(lambda: client.conversations_invite(channel=channel, users="U0NOBODY"))["error"] == \
        "user_not_found"
    slack.add_channel("C0NOBOT", "elsewhere", members=["U0SENA"], bot_member=False)
    assert error_of(lambda: client.conversations_invite(channel="C0NOBOT", users="U0LEMUN"))["error"] == \
        "not_in_channel"


def test_topic_archive_and_list(client: WebClient, slack: SlackSandbox) -> None:
    public = client.conversations_create(name="inc-3")["channel"]["id"]
    private = client.conversations_create(name="inc-4", is_private=True)["channel"]["id"]
    slack.add_channel("C0SECRET", "secret", private=True, members=["U0SENA"], bot_member=False)
    assert error_of(lambda: client.conversations_setTopic(channel=public, topic="x" * 251))["error"] == "too_long"
    assert client.conversations_setTopic(channel=public, topic="🔍 조사 중 · HIGH")["channel"]["topic"]["value"] == \
        "🔍 조사 중 · HIGH"
    assert slack.messages(public)[-1]["subtype"] == "channel_topic"
    assert client.conversations_archive(channel=public)["ok"]
    assert error_of(lambda: client.conversations_archive(channel=public))["error"] == "already_archived"
    assert error_of(lambda: client.chat_postMessage(channel=public, text="late"))["error"] == "is_archived"
    assert error_of(lambda: client.conversations_setTopic(channel=public, topic="t"))["error"] == "is_archived"
    everything = client.conversations_list(types="public_channel,private_channel", limit=1)
    names = [c["name"] for page in everything for c in page["channels"]]  # every page, one channel each
    assert "inc-3" in names and "inc-4" in names and "secret" not in names  # a private one only with the bot in it
    live = client.conversations_list(types="public_channel,private_channel", exclude_archived=True)
    assert "inc-3" not in [c["name"] for c in live["channels"]]
    assert [c["id"] for c in client.conversations_list()["channels"] if c["id"] == private] == []  # public only


def test_the_messenger_counts_already_done_as_done_and_finds_its_own_channel(slack: SlackSandbox) -> None:
    messenger = SlackMessenger(make_web_client(slack.bot_token, slack.api_url))
    made = messenger.create_channel("inc-5", private=False)
    messenger.invite(made.id, "U0SENA")
    messenger.invite(made.id, "U0SENA")  # already_in_channel: invited
    messenger.archive_channel(made.id)
    messenger.archive_channel(made.id)  # already_archived: archived
    assert messenger.find_channel("inc-5") is None  # archived channels are left out
    other = messenger.create_channel("inc-6", private=True)
    found = messenger.find_channel("inc-6")
    assert found is not None and (found.id, found.creator) == (other.id, slack.bot_user_id) and found.created > 0
    slack.channel_admin.refuse_invites("U0GITCO")
    with pytest.raises(MessengerError) as refused:
        messenger.invite(other.id, "U0GITCO")
    assert refused.value.kind == "cant_invite"
