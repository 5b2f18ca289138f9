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

from sandbox.slack import JSONDict, SlackSandbox, SlackSandboxError, channel_type

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

    def _trigger(self, trigger_id: str | None, user: str) -> str:
        """A trigger_id for one interaction, handed out by the workspace so that views.open can exchange it."""
        return self.sandbox.issue_trigger(trigger_id or self.new_trigger_id(), user=user)

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
            "trigger_id": self._trigger(trigger_id, user),
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

    def deliver(self, channel: str, message: JSONDict) -> requests.Response:
        """Sends a message the sandbox already holds (a `channel_join`, a topic change, the bot's own post) as the
        `message` event Slack delivers for it."""
        return self.event(self._message_event(channel, message))

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

    def app_home_opened(self, user: str = "U0SENA", tab: str = "home") -> requests.Response:
        """`user` opens the app's Home (or Messages) tab. As Slack sends it: the DM channel, the tab, and, once a
        home view has been published for that user, the `view` they see, with its hash."""
        event: JSONDict = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.sandbox.app_homes.dm_channel(user),
            "tab": tab,
            "event_ts": self.sandbox.new_ts(),
        }
        shown = self.sandbox.app_homes.home(user) if tab == "home" else None
        if shown is not None:
            event["view"] = shown
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
            "trigger_id": self._trigger(trigger_id, user),
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
        trigger_id: str | None = None,
    ) -> requests.Response:
        # A view opened through the sandbox's views.open keeps its blocks and title.
        opened = next((v for v in self.sandbox.views() if v.get("id") == view_id), {})
        payload: JSONDict = {
            "type": "view_submission",
            "team": self._team_obj(),
            "user": self._user_obj(user),
            "api_app_id": self.sandbox.app_id,
            "token": self.verification_token,
            "trigger_id": self._trigger(trigger_id, user),
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

    def submit_view(
        self, view_id: str | None = None, values: dict[str, Any] | None = None, *, user: str = "U0SENA",
        trigger_id: str | None = None,
    ) -> requests.Response:
        """The person presses Submit on a view the app opened (the newest one without `view_id`). Slack sends every
        input's state: what the view set initially, except the blocks in `values` (block_id → the typed text or
        the chosen value; None clears the input)."""
        views = self.sandbox.views()
        view = next(v for v in views if v["id"] == view_id) if view_id else views[-1]
        return self.view_submission(str(view.get("callback_id") or ""), form_state(view, values or {}), user=user,
                                    private_metadata=str(view.get("private_metadata") or ""), view_id=view["id"],
                                    trigger_id=trigger_id)

    # ------------------------------------------------------------------ shortcuts

    def global_shortcut(self, callback_id: str, *, user: str = "U0SENA",
                        trigger_id: str | None = None) -> requests.Response:
        """A global shortcut from the composer or search: Slack sends no channel and no response_url."""
        payload: JSONDict = {
            "type": "shortcut",
            "token": self.verification_token,
            "action_ts": f"{time.time():.6f}",
            "team": self._team_obj(),
            "user": self._user_obj(user),
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": self._trigger(trigger_id, user),
        }
        return self._post_payload(payload)

    def message_shortcut(self, callback_id: str, channel: str, message_ts: str, *, user: str = "U0SENA",
                         trigger_id: str | None = None) -> requests.Response:
        """A message shortcut from a message's menu: Slack sends the whole message, its channel and a
        response_url for answering the person."""
        message = self.sandbox.message(channel, message_ts)
        if message is None:
            raise SlackSandboxError("message_not_found")
        response_url = self.sandbox.new_response_url(channel=channel, user=user)
        self.last_response_url = response_url
        payload: JSONDict = {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": f"{time.time():.6f}",
            "team": self._team_obj(),
            "user": self._user_obj(user),
            "channel": {"id": channel, "name": self.sandbox.channel_name(channel)},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": self._trigger(trigger_id, user),
            "response_url": response_url,
            "message_ts": message["ts"],
            "message": message,
        }
        return self._post_payload(payload)


def _initial_state(element: JSONDict) -> JSONDict:
    """An input's state as Slack sends it when the person left it as the view set it."""
    kind = str(element.get("type"))
    state: JSONDict = {"type": kind}
    if kind in _SINGLE_SELECT:
        state["selected_option"] = element.get("initial_option")
    elif kind in _MULTI_SELECT:
        state["selected_options"] = element.get("initial_options") or []
    else:
        initial = {"users_select": "initial_user", "conversations_select": "initial_conversation",
                   "channels_select": "initial_channel", "datepicker": "initial_date",
                   "timepicker": "initial_time"}.get(kind, "initial_value")
        state[_VALUE_KEYS.get(kind, "value")] = element.get(initial)
    return state


def _chosen_state(element: JSONDict, value: Any) -> JSONDict:
    kind = str(element.get("type"))
    state: JSONDict = {"type": kind}
    if kind in _SINGLE_SELECT:
        option = next((o for o in element.get("options") or [] if o.get("value") == value), None)
        if option is None and value is not None:  # a value the view never offered: Slack would not send it
            option = {"text": {"type": "plain_text", "text": str(value), "emoji": True}, "value": value}
        state["selected_option"] = option
    elif kind in _MULTI_SELECT:
        state["selected_options"] = [o for o in element.get("options") or [] if o.get("value") in (value or [])]
    else:
        state[_VALUE_KEYS.get(kind, "value")] = value
    return state


def form_state(view: JSONDict, values: dict[str, Any]) -> JSONDict:
    """`view.state.values` of a submission: every input block by block_id and action_id."""
    state: JSONDict = {}
    for block in view.get("blocks") or []:
        element = block.get("element") if block.get("type") == "input" else None
        if not isinstance(element, dict):
            continue
        block_id, action_id = str(block.get("block_id")), str(element.get("action_id"))
        chosen = _chosen_state(element, values[block_id]) if block_id in values else _initial_state(element)
        state[block_id] = {action_id: chosen}
    return state
