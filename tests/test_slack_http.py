"""Slack over HTTPS, as in production (issue "Speed"). The app verifies the sandbox's certificate against the CA
bundle OpenSSL's default paths name (SSL_CERT_FILE), builds its TLS context once rather than once per call (a
default context loads the whole CA bundle again: tens of milliseconds of CPU with OpenSSL 3), and keeps its
connections open between calls (handlers/slack_http.py) without ever sending on one Slack has closed."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError

from handlers.messenger import make_web_client, tls_context
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from sandbox.tls import LoopbackCA
from tests.helpers import open_incident

LEAD = "U0LEMUN"


@pytest.fixture(scope="module")
def loopback_ca() -> LoopbackCA:
    return LoopbackCA()


@pytest.fixture
def trusted(loopback_ca: LoopbackCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoopbackCA:
    """The sandbox's CA trusted beside the system's roots, the way a deployment would add one."""
    monkeypatch.setenv("SSL_CERT_FILE", str(loopback_ca.write_bundle(tmp_path / "trust.pem")))
    return loopback_ca


@pytest.fixture
def slack(trusted: LoopbackCA) -> Iterator[SlackSandbox]:
    with SlackSandbox(tls=trusted.server_context()) as sandbox:
        yield sandbox


@pytest.fixture
def bundle_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every time a TLS context loads the CA bundle, from here on (a spy: the real method still runs)."""
    loads: list[object] = []
    real = ssl.SSLContext.load_default_certs

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", counted)
    return loads


def test_the_app_calls_slack_over_https_with_the_context_it_built_once(bot: LocalBot,
                                                                       bundle_loads: list[object]) -> None:
    assert bot.slack.api_url.startswith("https://")
    assert bot.driver is not None
    open_incident(bot)
    assert bot.driver.command("/incident", f"role lead <@{LEAD}|lemun>").status_code == 200
    assert bot.driver.command("/incident", "sev critical").status_code == 200
    bot.settle()

    calls = bot.slack.calls()
    announcements = [c for c in calls if c.method == "chat.postMessage" and c.args.get("thread_ts") is None]
    assert len(announcements) == 1 and announcements[0].status == 200
    assert len(calls) >= 4, [c.method for c in calls]
    # None of those calls loaded the CA bundle again, and they shared connections (each had one of its own before;
    # how many depends on how many ran at once).
    assert bundle_loads == []
    assert bot.slack.connections_opened < len(calls)


def test_a_connection_slack_closed_while_idle_is_not_sent_on(slack: SlackSandbox) -> None:
    """A post on a connection the server has closed could only fail after sending: Slack's answer lost, the post
    maybe made. The pool sees the close first and opens a new connection; the post is made once, at the first
    attempt (no retries allowed here: a failed send would be retried and hide it)."""
    client = make_web_client(slack.bot_token, slack.api_url, retries=0)
    assert client.chat_postMessage(channel="C0INCIDENTS", text="first")["ok"]
    slack.close_idle_connections()
    assert client.chat_postMessage(channel="C0INCIDENTS", text="second")["ok"]
    assert [m["text"] for m in slack.messages("C0INCIDENTS")] == ["first", "second"]
    assert [c.method for c in slack.calls()] == ["chat.postMessage", "chat.postMessage"]
    assert slack.connections_opened == 2
    client.close()


def test_slack_errors_keep_their_shape_on_kept_connections(slack: SlackSandbox) -> None:
    """An HTTP error comes back as slack_sdk reads it from urllib, and the connection serves the next call."""
    client = make_web_client(slack.bot_token, slack.api_url, retries=0)
    slack.fail("chat.postMessage", status=500, times=1)
    with pytest.raises(SlackApiError) as failure:
        client.chat_postMessage(channel="C0INCIDENTS", text="lost")
    assert failure.value.response.status_code == 500
    assert client.chat_postMessage(channel="C0INCIDENTS", text="kept")["ok"]
    slack.fail("chat.postMessage", status=200, error="channel_not_found")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.chat_postMessage(channel="C0INCIDENTS", text="nowhere")
    assert slack.connections_opened == 1
    client.close()


def test_a_client_of_slack_over_https_verifies_the_certificate(slack: SlackSandbox, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The one context still verifies: with only the system's roots, the sandbox's certificate is refused."""
    assert make_web_client(slack.bot_token, slack.api_url).auth_test()["ok"]
    monkeypatch.setenv("SSL_CERT_FILE", str(LoopbackCA().write_bundle(tmp_path / "another.pem")))
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        make_web_client(slack.bot_token, slack.api_url, retries=0).auth_test()


def test_plain_http_needs_no_tls_context() -> None:
    assert tls_context("http://127.0.0.1:9/api/") is None
    context = tls_context("https://slack.com/api/")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
