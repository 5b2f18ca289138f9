"""Plays the Slack side of the conversation: signs and POSTs slash commands, events and
interactivity payloads to the app exactly as Slack would, keeping the sandbox's state in step."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import requests

from sandbox.slack import JSONDict, SlackSandbox, channel_type

_event_seq = itertools.count(1)

# Single-choice elements carry `selected_option`; multi-choice ones `selected_options`.
_SINGLE_SELECT = {"static_select", "external_select", "radio_buttons", "overflow"}
_MULTI_SELECT = {"multi_static_select", "multi_external_select", "checkboxes"}
_VALUE_KEYS = {
    "users_select": "selected_user",
    "conversations_select": "selected_conversation",
    "channels_select": "selected_channel",
    "datepicker": "selected_date",
    "timepicker": "selected_time",
    "plain_text_input": "value",
}


def _find_action(blocks: Any, action_id: str) -> tuple[str, JSONDict] | None:
    """(block_id, element) of the interactive element with this action_id, searching nested blocks."""
    if not isinstance(blocks, list):
        return None
    for block in blocks:
        if not isinstance(block, dict):
            continue
        candidates = [*block.get("elements", []), block.get("accessory"), block.get("element")]
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    return None


class SlackDriver:
    """Sends requests to the app the way Slack does. Every method returns the `requests.Response`."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        sandbox: SlackSandbox,
        *,
        team_id: str = "T0SANDBOX",
        timeout: float = 10,
    ) -> None:
        self.app_url = app_url
        self.signing_secret = signing_secret
        self.sandbox = sandbox
        self.team_id = team_id
        self.timeout = timeout
        self.verification_token = "sandbox-verification-token"  # deprecated by Slack but still sent
        self.last_response_url: str | None = None

    # ------------------------------------------------------------------ transport

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Slack's v0 signature headers for `body` (pass an old timestamp to forge a stale request)."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        base = b"v0:" + ts.encode() + b":" + body
        digest = hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    def post_raw(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(self.app_url, data=body, headers=headers, timeout=self.timeout)

    def _post(self, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> requests.Response:
        headers = {"Content-Type": content_type, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}
        headers.update(self.sign(body))
        headers.update(extra or {})
        return self.post_raw(body, headers)

    def _post_form(self, fields: dict[str, str]) -> requests.Response:
        return self._post(urlencode(fields).encode(), "application/x-www-form-urlencoded")

    def _post_payload(self, payload: JSONDict) -> requests.Response:
        return self._post_form({"payload": json.dumps(payload, separators=(",", ":"))})

    # ------------------------------------------------------------------ helpers

    def _user_name(self, user: str) -> str:
        info = self.sandbox.user(user)
        return str(info["name"]) if info else user.lower()

    def _user_obj(self, user: str) -> JSONDict:
        name = self._user_name(user)
        return {"id": user, "username": name, "name": name, "team_id": self.team_id}

    def _team_obj(self) -> JSONDict:
        return {"id": self.team_id, "domain": self.sandbox.team_name}

    @staticmethod
    def new_trigger_id() -> str:
        return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"

    # ------------------------------------------------------------------ slash commands

    def command(
        self,
        command: str,
        text: str,
        *,
        user: str = "U0SENA",
        channel: str = "C0INCIDENTS",
        channel_name: str = "critical-incidents",
        trigger_id: str | None = None,
    ) -> requests.Response:
        response_url = self.sandbox.new_response_url(channel=channel, user=user)
        self.last_response_url = response_url
        fields = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.sandbox.team_name,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": self._user_name(user),
            "command": command,
            "text": text,
            "api_app_id": self.sandbox.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or self.new_trigger_id(),
        }
        return self._post_form(fields)

    # ------------------------------------------------------------------ events

    def event(
        self,
        event: JSONDict,
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        event_id: str | None = None,
        team_id: str | None = None,
    ) -> requests.Response:
        """POST an event_callback envelope. Pass the same event_id with retry_num to mimic a redelivery."""
        team = team_id or self.team_id
        envelope = {
            "token": self.verification_token,
            "team_id": team,
            "context_team_id": team,
            "api_app_id": self.sandbox.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(_event_seq):06d}{uuid.uuid4().hex[:8].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team,
                    "user_id": self.sandbox.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        extra: dict[str, str] = {}
        if retry_num is not None:
            extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        body = json.dumps(envelope, separators=(",", ":")).encode()
        return self._post(body, "application/json", extra)

    def _message_event(self, channel: str, message: JSONDict) -> JSONDict:
        event = dict(message)
        event.update(channel=channel, event_ts=message["ts"], channel_type=channel_type(channel))
        return event

    def say(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> tuple[JSONDict, requests.Response]:
        """A human posts `text` (in a thread if thread_ts): stored in the sandbox, then the event is sent."""
        message = self.sandbox.add_message(channel, user, text, thread_ts=thread_ts)
        return message, self.event(self._message_event(channel, message))

    def edit(self, channel: str, ts: str, text: str) -> requests.Response:
        previous = self.sandbox.message(channel, ts)
        updated = self.sandbox.edit_message(channel, ts, text)
        event_ts = updated["edited"]["ts"]
        event = {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": channel,
            "channel_type": channel_type(channel),
            "ts": event_ts,
            "event_ts": event_ts,
            "message": updated,
            "previous_message": previous,
        }
        return self.event(event)

    def delete(self, channel: str, ts: str) -> requests.Response:
        previous = self.sandbox.delete_message(channel, ts)
        event_ts = self.sandbox.new_ts()
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "channel": channel,
            "channel_type": channel_type(channel),
            "ts": event_ts,
            "event_ts": event_ts,
            "deleted_ts": previous["ts"],
            "previous_message": previous,
        }
        return self.event(event)

    def react(self, channel: str, ts: str, user: str, name: str, *, removed: bool = False) -> requests.Response:
        name = name.strip(":")
        if removed:
            message = self.sandbox.remove_reaction(channel, ts, user, name)
        else:
            message = self.sandbox.add_reaction(channel, ts, user, name)
        event: JSONDict = {
            "type": "reaction_removed" if removed else "reaction_added",
            "user": user,
            "reaction": name,
            "item": {"type": "message", "channel": channel, "ts": message["ts"]},
            "event_ts": self.sandbox.new_ts(),
        }
        item_user = message.get("user")
        if item_user:
            event["item_user"] = item_user
        return self.event(event)

    # ------------------------------------------------------------------ interactivity

    def _locate(self, channel: str, action_id: str, message_ts: str | None) -> JSONDict | None:
        """The message whose button is clicked: the given one, else the newest carrying action_id."""
        if message_ts is not None:
            return self.sandbox.message(channel, message_ts)
        candidates = list(self.sandbox.messages(channel))
        for top in self.sandbox.messages(channel):
            if top.get("reply_count"):
                candidates.extend(self.sandbox.thread(channel, top["ts"]))
        for message in sorted(candidates, key=lambda m: Decimal(m["ts"]), reverse=True):
            if _find_action(message.get("blocks"), action_id):
                return message
        return None

    def block_action(
        self,
        action_id: str,
        value: str,
        *,
        user: str = "U0SENA",
        channel: str = "C0INCIDENTS",
        message_ts: str | None = None,
        block_id: str | None = None,
        container: JSONDict | None = None,
        action_type: str = "button",
        selected_options: list[JSONDict] | None = None,
        trigger_id: str | None = None,
    ) -> requests.Response:
        """A user clicks/selects `action_id`. Without message_ts the newest message carrying it is used."""
        message = self._locate(channel, action_id, message_ts) if container is None else None
        found = _find_action(message.get("blocks"), action_id) if message else None
        action: JSONDict = {
            "action_id": action_id,
            "block_id": block_id or (found[0] if found else "b"),
            "type": action_type,
            "action_ts": f"{time.time():.6f}",
        }
        element = found[1] if found else {}
        if action_type == "button":
            action["value"] = value
            action["text"] = element.get("text") or {"type": "plain_text", "text": value, "emoji": True}
            if "style" in element:
                action["style"] = element["style"]
        elif action_type in _SINGLE_SELECT:
            option = selected_options[0] if selected_options else {
                "text": {"type": "plain_text", "text": value, "emoji": True}, "value": value
            }
            action["selected_option"] = option
        elif action_type in _MULTI_SELECT:
            action["selected_options"] = selected_options or [
                {"text": {"type": "plain_text", "text": value, "emoji": True}, "value": value}
            ]
        else:
            action[_VALUE_KEYS.get(action_type, "value")] = value

        ts = message["ts"] if message else message_ts
        if container is None:
            container = {"type": "message", "message_ts": ts or "", "channel_id": channel, "is_ephemeral": False}
        response_url = self.sandbox.new_response_url(channel=channel, user=user, message_ts=ts)
        self.last_response_url = response_url
        payload: JSONDict = {
            "type": "block_actions",
            "user": self._user_obj(user),
            "api_app_id": self.sandbox.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": trigger_id or self.new_trigger_id(),
            "team": self._team_obj(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self.sandbox.channel_name(channel)},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [action],
        }
        if message is not None:
            payload["message"] = message
        return self._post_payload(payload)

    def view_submission(
        self,
        callback_id: str,
        state_values: JSONDict,
        *,
        user: str = "U0SENA",
        private_metadata: str = "",
        view_id: str = "V1",
    ) -> requests.Response:
        # A view opened through the sandbox's views.open keeps its blocks and title.
        opened = next((v for v in self.sandbox.views() if v.get("id") == view_id), {})
        payload: JSONDict = {
            "type": "view_submission",
            "team": self._team_obj(),
            "user": self._user_obj(user),
            "api_app_id": self.sandbox.app_id,
            "token": self.verification_token,
            "trigger_id": self.new_trigger_id(),
            "view": {
                "id": view_id,
                "team_id": self.team_id,
                "type": "modal",
                "blocks": opened.get("blocks", []),
                "private_metadata": private_metadata,
                "callback_id": callback_id,
                "state": {"values": state_values},
                "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
                "title": opened.get("title", {"type": "plain_text", "text": "Sandbox", "emoji": True}),
                "clear_on_close": False,
                "notify_on_close": False,
                "close": None,
                "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
                "previous_view_id": None,
                "root_view_id": view_id,
                "app_id": self.sandbox.app_id,
                "external_id": "",
                "app_installed_team_id": self.team_id,
                "bot_id": self.sandbox.bot_id,
            },
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._post_payload(payload)
