"""Slack over HTTPS, as in production: the app verifies the sandbox's certificate against the CA bundle OpenSSL's
default paths name (SSL_CERT_FILE), and builds its TLS context once, not once per call (issue "Speed": a default
context loads the whole CA bundle again, tens of milliseconds of CPU with OpenSSL 3)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    # Each of those calls was a TLS connection of its own; none of them loaded the CA bundle again.
    assert bundle_loads == []


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
