"""The Slack app manifest and the app agree: every command and subscribed event has a listener."""

from __future__ import annotations

from importlib import resources

import yaml

from sandbox.harness import LocalBot

EVENT_FOR_SUBSCRIPTION = {"message.channels": "message", "message.groups": "message"}


def manifest() -> dict:
    return yaml.safe_load(resources.files("handlers").joinpath("manifest.yml").read_text(encoding="utf-8"))


def test_manifest_is_package_data_with_escaped_commands_and_least_scopes() -> None:
    data = manifest()
    commands = {c["command"]: c for c in data["features"]["slash_commands"]}
    assert set(commands) == {"/incident", "/postmortem"}
    assert all(c["should_escape"] is True for c in commands.values())
    assert all(c["url"].endswith("/slack/events") for c in commands.values())
    assert data["settings"]["interactivity"]["is_enabled"] is True
    listed = data["oauth_config"]["scopes"]["bot"]
    scopes = set(listed)
    assert len(listed) == len(scopes), "a scope is listed twice"
    assert scopes == {"commands", "chat:write", "channels:history", "groups:history", "reactions:read",
                      "reactions:write", "users:read", "files:write", "app_mentions:read", "channels:read",
                      "groups:read", "im:write", "canvases:write", "channels:manage", "groups:write"}
    assert "chat:write.public" not in scopes and "admin" not in " ".join(scopes)


def test_every_subscribed_event_and_command_has_a_listener(bot: LocalBot) -> None:
    data = manifest()
    events = {EVENT_FOR_SUBSCRIPTION.get(e, e) for e in data["settings"]["event_subscriptions"]["bot_events"]}
    driver = bot.driver
    for event_type in events:
        event = {"type": event_type, "channel": "C0INCIDENTS", "user": "U0SENA", "ts": "1761141600.000100",
                 "event_ts": "1761141600.000100", "text": "hi",
                 "item": {"type": "message", "channel": "C0INCIDENTS", "ts": "1761141600.000100"},
                 "reaction": "thumbsup", "item_user": "U0SENA"}
        response = driver.event(event)
        assert response.status_code == 200, (event_type, response.status_code, response.text)
    for command in ("/incident", "/postmortem"):
        assert driver.command(command, "help").status_code == 200


def test_the_home_tab_is_on_with_its_event_and_the_stats_chart_has_its_dm() -> None:
    data = manifest()
    home = data["features"]["app_home"]
    assert home["home_tab_enabled"] is True
    # The /incident stats chart goes to the person's DM with the bot: visible, but nothing to type there.
    assert home["messages_tab_enabled"] is True and home["messages_tab_read_only_enabled"] is True
    assert "app_home_opened" in data["settings"]["event_subscriptions"]["bot_events"]
    assert "im:write" in data["oauth_config"]["scopes"]["bot"]


def test_both_shortcuts_are_declared_and_each_has_a_listener(bot: LocalBot) -> None:
    shortcuts = {s["callback_id"]: s for s in manifest()["features"]["shortcuts"]}
    assert {(s["type"], s["name"]) for s in shortcuts.values()} == {
        ("global", "Declare incident"), ("message", "Add to incident timeline")}
    assert all(len(s["name"]) <= 24 and len(s["description"]) <= 150 for s in shortcuts.values())
    for callback_id, declared in shortcuts.items():
        if declared["type"] == "global":
            response = bot.driver.global_shortcut(callback_id)
        else:
            message = bot.slack.add_message("C0INCIDENTS", "U0SENA", "hi")
            response = bot.driver.message_shortcut(callback_id, "C0INCIDENTS", message["ts"])
        assert response.status_code == 200, (callback_id, response.status_code, response.text)
    bot.settle()
    assert len(bot.slack.views()) == 1 and len(bot.slack.responses()) == 1  # the form, and "no open incident"
