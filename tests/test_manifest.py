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
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert scopes == {"commands", "chat:write", "channels:history", "groups:history", "reactions:read",
                      "reactions:write", "users:read", "files:write", "app_mentions:read", "channels:read",
                      "groups:read"}
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
