"""Hostile requests: forged or stale signatures, another workspace, oversized and malformed bodies.

Each must get its 4xx, leave no row in any table and make the bot say nothing.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_bolt import BoltRequest
from slack_bolt.middleware.request_verification import RequestVerification
from sqlalchemy import func, select

from sandbox.harness import LocalBot
from storage.models import Base
from tests.helpers import open_incident

REPO = Path(__file__).resolve().parent.parent
CHANNEL = "C0INCIDENTS"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def row_counts(bot: LocalBot) -> dict[str, int]:
    with bot.ctx.db.session() as session:
        return {
            table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def assert_no_trace(bot: LocalBot, before: dict[str, int] | None = None) -> None:
    bot.settle()
    counts = row_counts(bot)
    assert counts == (before or dict.fromkeys(counts, 0))
    # auth.test is Bolt asking who it is; anything else would be the bot acting on the request.
    assert [c.method for c in bot.slack.calls() if c.method != "auth.test"] == []
    assert bot.slack.responses() == []


def post(bot: LocalBot, body: bytes, content_type: str, *, sign: bool = True, **headers: str) -> requests.Response:
    signed = bot.driver.sign(body) if sign else {}
    return bot.driver.post_raw(body, {"Content-Type": content_type, **signed, **headers})


def command_body(text: str = "open 위조된 요청 sev:high", **fields: str) -> bytes:
    form = {"command": "/incident", "text": text, "user_id": "U0SENA", "user_name": "sena",
            "channel_id": CHANNEL, "team_id": "T0SANDBOX", "response_url": "http://127.0.0.1:9/none",
            "trigger_id": "1.2.3", **fields}
    return urlencode({k: v for k, v in form.items() if v is not None}).encode()


def event_body(event: Any, **fields: Any) -> bytes:
    envelope = {"type": "event_callback", "team_id": "T0SANDBOX", "event_id": "Ev0HOSTILE", "event_time": 1,
                "event": event, **fields}
    return json.dumps(envelope).encode()


# ---- signatures ---------------------------------------------------------------------------------------------


def test_forged_signature_is_refused(bot: LocalBot) -> None:
    body = command_body()
    headers = bot.driver.sign(body)
    headers["X-Slack-Signature"] = "v0=" + "0" * 64
    assert bot.driver.post_raw(body, {"Content-Type": FORM, **headers}).status_code == 401
    assert_no_trace(bot)


def test_signature_of_another_body_is_refused(bot: LocalBot) -> None:
    headers = bot.driver.sign(command_body("help"))
    tampered = command_body("open 바뀐 본문")
    assert bot.driver.post_raw(tampered, {"Content-Type": FORM, **headers}).status_code == 401
    assert_no_trace(bot)


def test_signature_with_another_secret_is_refused(bot: LocalBot) -> None:
    body = command_body()
    bot.driver.signing_secret = "not-the-apps-secret"
    try:
        assert post(bot, body, FORM).status_code == 401
    finally:
        bot.driver.signing_secret = "sandbox-signing-secret"
    assert_no_trace(bot)


def test_missing_signature_headers_are_refused(bot: LocalBot) -> None:
    assert post(bot, command_body(), FORM, sign=False).status_code == 401
    ts_only = {"X-Slack-Request-Timestamp": str(int(time.time()))}
    assert post(bot, command_body(), FORM, sign=False, **ts_only).status_code == 401
    assert_no_trace(bot)


@pytest.mark.parametrize("offset", [-6 * 60, 6 * 60], ids=["stale", "future"])
def test_timestamp_outside_five_minutes_is_refused(bot: LocalBot, offset: int) -> None:
    body = command_body()
    # Correctly signed, but for a moment too far from now: a replayed request.
    headers = bot.driver.sign(body, timestamp=int(time.time()) + offset)
    assert bot.driver.post_raw(body, {"Content-Type": FORM, **headers}).status_code == 401
    assert_no_trace(bot)


def test_timestamp_that_is_not_a_number_is_refused_not_a_crash(bot: LocalBot) -> None:
    body = command_body()
    headers = bot.driver.sign(body)
    headers["X-Slack-Request-Timestamp"] = "yesterday"
    assert bot.driver.post_raw(body, {"Content-Type": FORM, **headers}).status_code == 401
    assert_no_trace(bot)


def test_bolts_own_signature_check_is_on_behind_the_preflight(bot: LocalBot) -> None:
    """The preflight is an extra wall, not a replacement: Bolt itself still refuses an unsigned request."""
    assert any(isinstance(m, RequestVerification) for m in bot.runtime.bolt._middleware_list)
    unsigned = BoltRequest(body=command_body().decode(), headers={"content-type": FORM})
    assert bot.runtime.bolt.dispatch(unsigned).status == 401
    assert_no_trace(bot)


def test_signature_verification_is_never_disabled_outside_the_sandbox() -> None:
    offenders = []
    for path in [REPO / "app.py", *(REPO / "bot").rglob("*.py"), *(REPO / "handlers").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        if "request_verification_enabled" in text:
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


# ---- workspace ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bot_env", [{"SLACK_TEAM_ID": "T0SANDBOX"}])
def test_requests_from_another_workspace_are_refused(bot: LocalBot) -> None:
    stranger = {"team_id": "T0STRANGER"}
    assert post(bot, command_body(**stranger), FORM).status_code == 403
    message = {"type": "message", "channel": CHANNEL, "user": "U0SENA", "text": "hi", "ts": "1700000000.000100",
               "thread_ts": "1700000000.000001"}
    assert post(bot, event_body(message, **stranger), JSON).status_code == 403
    action = {"type": "block_actions", "team": {"id": "T0STRANGER"}, "user": {"id": "U0SENA"},
              "actions": [{"action_id": "postmortem.x", "value": "1"}]}
    assert post(bot, urlencode({"payload": json.dumps(action)}).encode(), FORM).status_code == 403
    no_team = {"type": "block_actions", "user": {"id": "U0SENA"}, "actions": [{"action_id": "postmortem.x"}]}
    assert post(bot, urlencode({"payload": json.dumps(no_team)}).encode(), FORM).status_code == 403
    assert_no_trace(bot)
    # The right workspace still gets through.
    ok = post(bot, command_body("help"), FORM)
    assert ok.status_code == 200 and ok.json()["response_type"] == "ephemeral"


# ---- size ---------------------------------------------------------------------------------------------------


def test_body_over_one_mebibyte_is_refused(bot: LocalBot) -> None:
    padding = "x" * (1024 * 1024)
    body = command_body(f"open {padding}")
    assert len(body) > 1024 * 1024
    assert post(bot, body, FORM).status_code == 413
    # A body just under the limit is read and handled normally (a title that long is refused as usage).
    fits = command_body("help", padding="y" * (1024 * 1024 - 400))
    assert len(fits) <= 1024 * 1024
    assert post(bot, fits, FORM).status_code == 200
    assert_no_trace(bot)


@pytest.mark.parametrize("length", ["-5", "many"])
def test_content_length_that_is_not_a_size_is_refused(bot: LocalBot, length: str) -> None:
    body = command_body()
    connection = http.client.HTTPConnection("127.0.0.1", int(bot.base_url.rsplit(":", 1)[1]), timeout=10)
    try:
        connection.request("POST", "/slack/events", body=body,
                           headers={"Content-Type": FORM, "Content-Length": length, **bot.driver.sign(body)})
        assert connection.getresponse().status == 400
    finally:
        connection.close()
    assert_no_trace(bot)


# ---- malformed payloads -------------------------------------------------------------------------------------


MALFORMED: dict[str, tuple[bytes, str]] = {
    "garbage form": (b"%%%&&==;;not a form at all", FORM),
    "empty body": (b"", FORM),
    "payload= that isn't JSON": (b"payload=%7Bnot+json", FORM),
    "payload= that is a JSON list": (urlencode({"payload": "[1, 2]"}).encode(), FORM),
    "payload= that is a JSON string": (urlencode({"payload": '"block_actions"'}).encode(), FORM),
    "JSON body that isn't JSON": (b'{"type": "event_callback", ', JSON),
    "JSON body that is a list": (b"[]", JSON),
    "event_callback without event": (json.dumps({"type": "event_callback", "team_id": "T0SANDBOX"}).encode(), JSON),
    "event_callback whose event is a string": (event_body("message"), JSON),
    "event without a type": (event_body({"channel": CHANNEL, "text": "x"}), JSON),
    "command without user": (command_body(user_id=None), FORM),  # type: ignore[arg-type]
    "command without channel": (command_body(channel_id=None), FORM),  # type: ignore[arg-type]
    "unknown payload type": (json.dumps({"type": "weird", "team_id": "T0SANDBOX"}).encode(), JSON),
    "block_actions without actions": (
        urlencode({"payload": json.dumps({"type": "block_actions", "team": {"id": "T0SANDBOX"}})}).encode(), FORM),
    "view_submission without view": (
        urlencode({"payload": json.dumps({"type": "view_submission", "team": {"id": "T0SANDBOX"}})}).encode(), FORM),
    "authorizations that aren't objects": (event_body({"type": "message"}, authorizations=["x"]), JSON),
    # Fields Bolt's listener matchers index or match without checking (found by the fuzz below: a 500).
    "an action without action_id": (
        json.dumps({"type": "block_actions", "team_id": "T0SANDBOX", "actions": [{}, {"M": False}]}).encode(), JSON),
    "an action_id that isn't text": (urlencode({"payload": json.dumps({
        "type": "block_actions", "team": {"id": "T0SANDBOX"}, "actions": [{"action_id": 5}]})}).encode(), FORM),
    "a block_id that isn't text": (urlencode({"payload": json.dumps({
        "type": "block_actions", "team": {"id": "T0SANDBOX"},
        "actions": [{"action_id": "alerts.ack", "block_id": ["x"]}]})}).encode(), FORM),
    "a view without its type": (urlencode({"payload": json.dumps({
        "type": "view_submission", "team": {"id": "T0SANDBOX"}, "view": {"callback_id": "x"}})}).encode(), FORM),
    "a view callback_id that isn't text": (urlencode({"payload": json.dumps({
        "type": "view_submission", "team": {"id": "T0SANDBOX"},
        "view": {"type": "modal", "callback_id": ["x"]}})}).encode(), FORM),
    "a shortcut callback_id that isn't text": (urlencode({"payload": json.dumps({
        "type": "shortcut", "team": {"id": "T0SANDBOX"}, "callback_id": {"x": 1}})}).encode(), FORM),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_payload_is_a_400_and_leaves_no_trace(bot: LocalBot, name: str) -> None:
    body, content_type = MALFORMED[name]
    response = post(bot, body, content_type)
    assert response.status_code == 400, response.text
    assert_no_trace(bot)


def test_body_that_is_not_utf8_is_refused(bot: LocalBot) -> None:
    # Slack signs UTF-8 text; bytes that aren't cannot carry a valid signature (401) nor be parsed (400).
    response = post(bot, b"command=%2Fincident&text=\xff\xfe\x00", FORM)
    assert response.status_code in (400, 401)
    assert_no_trace(bot)


def test_malformed_request_after_an_incident_changes_nothing(bot: LocalBot) -> None:
    open_incident(bot)
    before = row_counts(bot)
    bot.slack.clear_calls()
    for body, content_type in MALFORMED.values():
        assert post(bot, body, content_type).status_code == 400
    assert_no_trace(bot, before)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_envelope_keys = st.sampled_from(["type", "event", "team_id", "team", "command", "user_id", "channel_id", "text",
                                  "actions", "view", "authorizations", "event_id", "payload", "user", "channel"])
_shapes = st.dictionaries(_envelope_keys, _json | st.sampled_from(["event_callback", "block_actions",
                                                                    "view_submission", "/incident", "T0SANDBOX"]),
                          max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_shapes, as_form=st.booleans())
def test_signed_bodies_of_any_shape_never_crash_the_server(bot: LocalBot, shape: dict[str, Any],
                                                           as_form: bool) -> None:
    if as_form:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in shape.items()}
        response = post(bot, urlencode(fields).encode(), FORM)
    else:
        response = post(bot, json.dumps(shape).encode(), JSON)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code != 200:
        assert response.status_code in (400, 403, 404)


def test_random_shapes_left_no_trace(bot: LocalBot) -> None:
    """The fuzz above asserts status codes; this replays a few of its nastiest shapes and checks the tables."""
    shapes: list[dict[str, Any]] = [
        {"type": "event_callback", "event": {"type": "message", "channel": 5, "ts": [], "thread_ts": {}}},
        {"type": "event_callback", "event": {"type": "reaction_added", "item": "x"}},
        {"type": "event_callback", "event": {"type": "message", "subtype": "message_changed", "message": 3}},
        {"command": "/incident", "user_id": "U0SENA", "channel_id": CHANNEL, "text": "open"},
        {"command": "/postmortem", "user_id": "U0SENA", "channel_id": CHANNEL, "text": "report"},
    ]
    for shape in shapes:
        shape.setdefault("team_id", "T0SANDBOX")
        if "command" in shape:
            response = post(bot, urlencode(shape).encode(), FORM)
        else:
            response = post(bot, json.dumps(shape).encode(), JSON)
        assert response.status_code < 500
    bot.settle()
    assert all(n == 0 for n in row_counts(bot).values())
    assert [c.method for c in bot.slack.calls() if c.method not in ("auth.test", "users.info")] == []
