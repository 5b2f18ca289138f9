"""The Slack sandbox must be indistinguishable from Slack for the real slack_sdk client and for Bolt."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import SignatureVerifier

from sandbox.driver import SlackDriver
from sandbox.slack import SlackSandbox

SECRET = "sandbox-signing-secret"
CHANNEL = "C0INCIDENTS"
FAST = FixedValueRetryIntervalCalculator(0.01)


@pytest.fixture
def sandbox() -> Iterator[SlackSandbox]:
    with SlackSandbox() as sb:
        yield sb


@pytest.fixture
def client(sandbox: SlackSandbox) -> WebClient:
    handlers = [
        ConnectionErrorRetryHandler(max_retry_count=1, interval_calculator=FAST),
        RateLimitErrorRetryHandler(max_retry_count=1),
        ServerErrorRetryHandler(max_retry_count=1, interval_calculator=FAST),
    ]
    return WebClient(token=sandbox.bot_token, base_url=sandbox.api_url, timeout=5, retry_handlers=handlers)


def wait_for(predicate: Callable[[], Any], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class _Recorder(BaseHTTPRequestHandler):
    """Stands in for the app: records what the driver sends and answers 200."""

    protocol_version = "HTTP/1.1"
    received: list[tuple[bytes, dict[str, str]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((body, dict(self.headers.items())))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    handler = type("Rec", (_Recorder,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/events", handler.received
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- Web API through the real client


def test_post_reply_update_history_and_replies(sandbox: SlackSandbox, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="canary failed", blocks=[{"type": "divider"}])
    reply = client.chat_postMessage(channel=CHANNEL, text="rolling back", thread_ts=parent["ts"])
    later = client.chat_postMessage(channel="#critical-incidents", text="status: mitigating")
    assert parent["ok"] and parent["channel"] == CHANNEL and later["channel"] == CHANNEL
    assert float(parent["ts"]) < float(reply["ts"]) < float(later["ts"])
    assert parent["message"]["bot_id"] == sandbox.bot_id and parent["message"]["blocks"] == [{"type": "divider"}]

    history = client.conversations_history(channel=CHANNEL)["messages"]
    assert [m["text"] for m in history] == ["status: mitigating", "canary failed"]  # no thread reply
    assert history[1]["reply_count"] == 1 and history[1]["latest_reply"] == reply["ts"]

    thread = client.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    assert [m["text"] for m in thread] == ["canary failed", "rolling back"]
    by_reply = client.conversations_replies(channel=CHANNEL, ts=reply["ts"])["messages"]
    assert [m["ts"] for m in by_reply] == [parent["ts"], reply["ts"]]

    updated = client.chat_update(channel=CHANNEL, ts=parent["ts"], text="canary failed — rolled back")
    assert updated["text"] == "canary failed — rolled back"
    stored = sandbox.message(CHANNEL, parent["ts"])
    assert stored is not None and stored["edited"]["user"] == sandbox.bot_user_id
    assert stored["blocks"] == [{"type": "divider"}]  # omitted blocks are kept, as on Slack
    assert [e["text"] for e in sandbox.edits(CHANNEL, parent["ts"])] == ["canary failed"]
    assert [m["text"] for m in sandbox.thread(CHANNEL, parent["ts"])] == ["rolling back"]

    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert err.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel=CHANNEL, text="x", thread_ts="123.456")
    assert err.value.response["error"] == "thread_not_found"
    with pytest.raises(SlackApiError) as err, pytest.warns(UserWarning):  # slack_sdk warns about no text
        client.chat_postMessage(channel=CHANNEL)
    assert err.value.response["error"] == "no_text"


def test_history_and_replies_paging(sandbox: SlackSandbox, client: WebClient) -> None:
    ts = [sandbox.add_message(CHANNEL, "U0SENA", f"m{i}")["ts"] for i in range(5)]
    page = client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["text"] for m in page["messages"]] == ["m4", "m3"] and page["has_more"]
    rest = client.conversations_history(channel=CHANNEL, cursor=page["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["m2", "m1", "m0"] and not rest["has_more"]
    window = client.conversations_history(channel=CHANNEL, oldest=ts[1], latest=ts[3])
    assert [m["text"] for m in window["messages"]] == ["m2"]
    window = client.conversations_history(channel=CHANNEL, oldest=ts[1], latest=ts[3], inclusive=True)
    assert [m["text"] for m in window["messages"]] == ["m3", "m2", "m1"]

    replies = [sandbox.add_message(CHANNEL, "U0LEMUN", f"r{i}", thread_ts=ts[0])["ts"] for i in range(3)]
    got = client.conversations_replies(channel=CHANNEL, ts=ts[0], oldest=replies[0])["messages"]
    assert [m["text"] for m in got] == ["m0", "r1", "r2"]  # parent always leads
    got = client.conversations_replies(channel=CHANNEL, ts=ts[0], limit=1)
    assert [m["text"] for m in got["messages"]] == ["m0", "r0"] and got["has_more"]


def test_files_upload_v2_end_to_end(sandbox: SlackSandbox, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="incident #7")
    content = "## Post-mortem\nroot cause: bad canary config ✓\n"
    result = client.files_upload_v2(
        channel=CHANNEL,
        thread_ts=parent["ts"],
        filename="postmortem.md",
        content=content,
        initial_comment="Draft post-mortem attached",
    )
    assert result["ok"] and result["file"]["name"] == "postmortem.md"
    [stored] = sandbox.files()
    assert stored["content"] == content.encode() and stored["filename"] == "postmortem.md"
    assert (stored["channel"], stored["thread_ts"]) == (CHANNEL, parent["ts"])
    assert stored["initial_comment"] == "Draft post-mortem attached"
    [share] = sandbox.thread(CHANNEL, parent["ts"])
    assert share["text"] == "Draft post-mortem attached" and share["files"][0]["id"] == stored["id"]
    assert [c.method for c in sandbox.calls()] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    complete = sandbox.calls("files.completeUploadExternal")[0].args
    assert complete["files"][0]["id"] == stored["id"]  # JSON-string param arrives decoded


def test_multipart_upload_keeps_binary_bytes(sandbox: SlackSandbox, client: WebClient) -> None:
    url = client.files_getUploadURLExternal(filename="dump.bin", length=4)["upload_url"]
    blob = b"\x00\xff\r\n"
    assert requests.post(url, files={"file": ("dump.bin", blob)}, timeout=5).status_code == 200
    assert sandbox.files()[0]["content"] == blob


def test_rate_limit_is_retried_after_retry_after(sandbox: SlackSandbox, client: WebClient) -> None:
    sandbox.rate_limit("chat.postMessage", retry_after=1)
    started = time.monotonic()
    assert client.chat_postMessage(channel=CHANNEL, text="hi")["ok"]
    assert time.monotonic() - started >= 1.0
    assert [c.status for c in sandbox.calls("chat.postMessage")] == [429, 200]
    assert sandbox.calls()[0].response == {"ok": False, "error": "ratelimited"}
    assert len(sandbox.messages(CHANNEL)) == 1


def test_server_error_is_retried_and_surfaces_when_exhausted(sandbox: SlackSandbox, client: WebClient) -> None:
    sandbox.fail("chat.postMessage", status=500)
    assert client.chat_postMessage(channel=CHANNEL, text="hi")["ok"]
    assert [c.status for c in sandbox.calls("chat.postMessage")] == [500, 200]

    sandbox.fail("users.info", status=503, times=2)
    with pytest.raises(SlackApiError) as err:
        client.users_info(user="U0SENA")
    assert err.value.response.status_code == 503
    assert [c.status for c in sandbox.calls("users.info")] == [503, 503]

    sandbox.fail("chat.postMessage", status=200, error="channel_not_found")
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel=CHANNEL, text="hi")
    assert err.value.response["error"] == "channel_not_found"


def test_dropped_connection_is_retried(sandbox: SlackSandbox, client: WebClient) -> None:
    sandbox.disconnect("auth.test")
    assert client.auth_test()["user_id"] == sandbox.bot_user_id
    assert [c.status for c in sandbox.calls("auth.test")] == [0, 200]


def test_slow_response_times_out_client_but_call_lands(sandbox: SlackSandbox) -> None:
    web = WebClient(token=sandbox.bot_token, base_url=sandbox.api_url, timeout=0.2)
    sandbox.slow_once("chat.postMessage", 0.6)
    with pytest.raises(TimeoutError):
        web.chat_postMessage(channel=CHANNEL, text="slow")
    assert len(sandbox.messages(CHANNEL)) == 1  # Slack did post it: retries must be idempotent
    assert web.chat_postMessage(channel=CHANNEL, text="fast")["ok"]

    sandbox.set_latency("*", 0.05)
    started = time.monotonic()
    web.auth_test()
    assert time.monotonic() - started >= 0.05
    sandbox.reset_faults()


def test_auth_errors_and_unknown_method(sandbox: SlackSandbox) -> None:
    bad = WebClient(token="xoxb-wrong", base_url=sandbox.api_url)
    with pytest.raises(SlackApiError) as err:
        bad.chat_postMessage(channel=CHANNEL, text="hi")
    assert err.value.response["error"] == "invalid_auth" and err.value.response.status_code == 200
    raw = requests.post(sandbox.api_url + "auth.test", timeout=5)
    assert raw.status_code == 200 and raw.json() == {"ok": False, "error": "not_authed"}
    assert sandbox.messages(CHANNEL) == []
    good = WebClient(token=sandbox.bot_token, base_url=sandbox.api_url)
    with pytest.raises(SlackApiError) as err:
        good.api_call("chat.frobnicate")
    assert err.value.response["error"] == "unknown_method"


@pytest.mark.serial  # times 20 keep-alive posts
def test_users_reactions_ephemeral_and_form_bodies(sandbox: SlackSandbox, client: WebClient) -> None:
    user = client.users_info(user="U0LUBIT")["user"]
    assert user["real_name"] == "Lubit" and user["tz"] == "UTC"
    with pytest.raises(SlackApiError) as err:
        client.users_info(user="U0NOBODY")
    assert err.value.response["error"] == "user_not_found"

    ts = sandbox.add_message(CHANNEL, "U0MONITOR", "ALERT: 5xx > 2%")["ts"]
    client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    with pytest.raises(SlackApiError) as err:
        client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    assert err.value.response["error"] == "already_reacted"
    assert sandbox.message(CHANNEL, ts)["reactions"] == [{"name": "eyes", "users": ["U0BOT"], "count": 1}]

    eph = client.chat_postEphemeral(channel=CHANNEL, user="U0SENA", text="only you")
    assert sandbox.ephemerals(CHANNEL, "U0SENA")[0]["ts"] == eph["message_ts"]

    # Form-encoded with JSON-string blocks, over one keep-alive session (must not stall on Nagle).
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {sandbox.bot_token}"
        started = time.monotonic()
        for i in range(20):
            form = {"channel": CHANNEL, "text": f"f{i}", "blocks": json.dumps([{"type": "divider"}])}
            assert s.post(sandbox.api_url + "chat.postMessage", data=form, timeout=5).json()["ok"]
        assert time.monotonic() - started < 1.0
    assert sandbox.messages(CHANNEL)[-1]["blocks"] == [{"type": "divider"}]


# ---------------------------------------------------------------- driver


def test_driver_signatures_verify_and_payloads_match_slack(
    sandbox: SlackSandbox, client: WebClient, recorder: tuple[str, list[tuple[bytes, dict[str, str]]]]
) -> None:
    url, received = recorder
    driver = SlackDriver(url, SECRET, sandbox)
    verifier = SignatureVerifier(SECRET)

    driver.command("/incident", "declare canary failed", user="U0GITCO")
    body, headers = received[-1]
    assert verifier.is_valid_request(body, headers)
    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert fields["command"] == "/incident" and fields["text"] == "declare canary failed"
    assert fields["user_id"] == "U0GITCO" and fields["user_name"] == "gitco"
    assert fields["response_url"] == driver.last_response_url and fields["trigger_id"]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"

    stale = driver.sign(body, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body, stale)
    assert not verifier.is_valid_request(body + b"x", driver.sign(body))

    msg, _ = driver.say(CHANNEL, "U0SENA", "on it")
    reply, _ = driver.say(CHANNEL, "U0LEMUN", "checking logs", thread_ts=msg["ts"])
    envelope = json.loads(received[-1][0])
    assert verifier.is_valid_request(received[-1][0], received[-1][1])
    assert envelope["type"] == "event_callback" and envelope["authorizations"][0]["user_id"] == "U0BOT"
    event = envelope["event"]
    assert event["thread_ts"] == msg["ts"] and event["parent_user_id"] == "U0SENA"
    assert event["channel_type"] == "channel" and event["ts"] == reply["ts"]
    assert sandbox.messages(CHANNEL)[0]["reply_count"] == 1

    driver.event({"type": "app_mention"}, retry_num=1, event_id="Ev123")
    envelope, headers = json.loads(received[-1][0]), received[-1][1]
    assert envelope["event_id"] == "Ev123"
    assert headers["X-Slack-Retry-Num"] == "1" and headers["X-Slack-Retry-Reason"] == "http_timeout"

    driver.edit(CHANNEL, msg["ts"], "on it (edited)")
    event = json.loads(received[-1][0])["event"]
    assert event["subtype"] == "message_changed" and event["previous_message"]["text"] == "on it"
    assert event["message"]["edited"]["ts"] == event["ts"]
    driver.react(CHANNEL, msg["ts"], "U0LUBIT", "white_check_mark")
    event = json.loads(received[-1][0])["event"]
    assert event["type"] == "reaction_added" and event["item_user"] == "U0SENA"
    driver.delete(CHANNEL, reply["ts"])
    event = json.loads(received[-1][0])["event"]
    assert event["subtype"] == "message_deleted" and event["deleted_ts"] == reply["ts"]
    assert sandbox.thread(CHANNEL, msg["ts"]) == []

    driver.view_submission("postmortem", {"b": {"a": {"type": "plain_text_input", "value": "x"}}})
    payload = json.loads(parse_qs(received[-1][0].decode())["payload"][0])
    assert payload["type"] == "view_submission" and payload["view"]["callback_id"] == "postmortem"

    sandbox.echo_bot_messages_to(driver)
    posted = client.chat_postMessage(channel=CHANNEL, text="bot says", thread_ts=msg["ts"])
    echoed = wait_for(lambda: [json.loads(b)["event"] for b, _ in received if b'"bot says"' in b])
    assert echoed[0]["bot_id"] == sandbox.bot_id and echoed[0]["user"] == sandbox.bot_user_id
    assert (echoed[0]["ts"], echoed[0]["thread_ts"]) == (posted["ts"], msg["ts"])
    sandbox.echo_bot_messages_to(None)


# ---------------------------------------------------------------- Bolt end to end


class _BoltAdapter(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: App

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        resp = self.app.dispatch(BoltRequest(body=body.decode(), headers=dict(self.headers.items())))
        out = resp.body.encode()
        self.send_response(resp.status)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_bolt_app_round_trip(sandbox: SlackSandbox) -> None:
    app = App(
        token=sandbox.bot_token,
        signing_secret=SECRET,
        client=WebClient(token=sandbox.bot_token, base_url=sandbox.api_url),
    )
    seen: list[dict[str, Any]] = []

    @app.command("/incident")
    def incident(ack: Any, respond: Any, say: Any, command: dict[str, Any]) -> None:
        ack()
        say(text=f"Incident declared: {command['text']}", blocks=[
            {"type": "actions", "block_id": "ack", "elements": [
                {"type": "button", "action_id": "ack_incident", "text": {"type": "plain_text", "text": "Ack"}}
            ]}
        ])
        respond(text="declared")

    @app.action("ack_incident")
    def acked(ack: Any, respond: Any, body: dict[str, Any]) -> None:
        ack()
        respond(replace_original=True, text=f"Acked by <@{body['user']['id']}>")

    @app.event("message")
    def on_message(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        if "bot_id" not in event:
            say(text="noted", thread_ts=event["ts"])

    server = ThreadingHTTPServer(("127.0.0.1", 0), type("A", (_BoltAdapter,), {"app": app}))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        driver = SlackDriver(f"http://127.0.0.1:{server.server_address[1]}/slack/events", SECRET, sandbox)
        assert driver.command("/incident", "canary 5xx").status_code == 200
        wait_for(lambda: sandbox.responses(driver.last_response_url))
        assert sandbox.responses(driver.last_response_url) == [{"text": "declared"}]
        [posted] = sandbox.messages(CHANNEL)
        assert posted["text"] == "Incident declared: canary 5xx"

        assert driver.block_action("ack_incident", "").status_code == 200
        wait_for(lambda: sandbox.messages(CHANNEL)[0]["text"].startswith("Acked"))

        forged = driver.sign(b"{}", timestamp=int(time.time()) - 600)
        assert driver.post_raw(b"{}", {**forged, "Content-Type": "application/json"}).status_code == 401

        sandbox.echo_bot_messages_to(driver)
        msg, resp = driver.say(CHANNEL, "U0SENA", "rollback done")
        assert resp.status_code == 200
        wait_for(lambda: sandbox.thread(CHANNEL, msg["ts"]))
        # The bot's echoed reply reaches Bolt, which drops self events: no reply loop.
        time.sleep(0.2)
        assert len(sandbox.calls("chat.postMessage")) == 2
    finally:
        sandbox.echo_bot_messages_to(None)
        server.shutdown()
        server.server_close()
    assert seen[0]["text"] == "rollback done"
