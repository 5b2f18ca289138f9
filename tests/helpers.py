"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.clock import ManualClock
from bot.evidence.gcp import LiveVerification, verify_rollback_live
from bot.evidence.service import GcpClients
from bot.settings import load_settings
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Incident, TimelineEvent


def posted_texts(bot: LocalBot) -> list[str]:
    """Every piece of text the app sent to Slack: message texts, blocks, updates, uploads' comments, responses."""
    texts: list[str] = []
    for call in bot.slack.calls():
        args = call.args
        for key in ("text", "initial_comment"):
            if isinstance(args.get(key), str):
                texts.append(args[key])
        if args.get("blocks") is not None:
            texts.append(json.dumps(args["blocks"], ensure_ascii=False))
    for response in bot.slack.responses():
        texts.append(json.dumps(response, ensure_ascii=False))
    return texts


def count(bot: LocalBot, model: Any) -> int:
    with bot.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def open_incident(
    bot: LocalBot, text: str = "추천 API p95 급증 sev:high service:ion-api", **kw: Any
) -> tuple[str, str]:
    """Opens an incident through Slack; returns (public_id, thread_ts)."""
    assert bot.driver is not None
    response = bot.driver.command("/incident", f"open {text}", **kw)
    assert response.status_code == 200, response.text
    bot.settle()
    with bot.ctx.db.session() as session:
        incident = session.scalars(select(Incident).order_by(Incident.id.desc())).first()
        assert incident is not None and incident.announcement_ts is not None
        return incident.public_id, incident.announcement_ts


def events(bot: LocalBot, kind: str | None = None) -> list[TimelineEvent]:
    with bot.ctx.db.session() as session:
        query = select(TimelineEvent).order_by(TimelineEvent.occurred_at, TimelineEvent.id)
        if kind:
            query = query.where(TimelineEvent.kind == kind)
        return list(session.scalars(query).all())


@contextmanager
def clocked_bot(
    database_url: str, start: datetime, env: dict[str, str] | None = None
) -> Iterator[tuple[LocalBot, ManualClock]]:
    """A bot whose clock the test moves; the Slack sandbox stamps messages from the same clock."""
    clock = ManualClock(start)
    with SlackSandbox(clock=lambda: clock.now().timestamp()) as slack:
        bot = LocalBot(env or {}, clock=clock, slack=slack, database_url=database_url)
        bot.start()
        try:
            yield bot, clock
        finally:
            bot.stop()


def slack_ts(value: datetime) -> str:
    """The Slack ts of a message posted at `value`."""
    return f"{value.timestamp():.6f}"


# ---- Google Cloud: the GCP sandbox shared by a test module ------------------------------------------------------


def shared_gcp_sandbox(scenario: Callable[[], CanaryScenario], *, rolled_back: bool = False,
                       name: str = "gcp") -> tuple[Any, Any]:
    """Two fixtures for a test module, assigned at its top level (`module_gcp_fixture, gcp_fixture =
    shared_gcp_sandbox(CanaryScenario)`): `module_<name>`, one sandbox per module, so its scenario's log data is
    generated once; and `<name>`, that sandbox as if new for each test: no faults, no recorded requests, the
    traffic rolled back or not as asked, put back to its defaults afterwards."""

    @pytest.fixture(scope="module", name=f"module_{name}")
    def module_sandbox() -> Iterator[GcpSandbox]:
        with GcpSandbox(scenario()) as sandbox:
            yield sandbox

    @pytest.fixture(name=name)
    def fresh_sandbox(request: pytest.FixtureRequest) -> Iterator[GcpSandbox]:
        sandbox: GcpSandbox = request.getfixturevalue(f"module_{name}")
        sandbox.reset_faults()  # also the health URL's answer
        sandbox.set_rolled_back(rolled_back)
        sandbox.clear_requests()
        yield sandbox
        sandbox.reset_faults()
        sandbox.set_rolled_back(False)

    return module_sandbox, fresh_sandbox


def gcp_env(gcp: GcpSandbox) -> dict[str, str]:
    """The settings that point the app's Google clients at the sandbox."""
    sc = gcp.scenario
    return {"GCP_PROJECT": sc.project, "CLOUD_RUN_REGION": sc.region,
            "CLOUD_LOGGING_API_URL": gcp.base_url, "CLOUD_RUN_API_URL": gcp.base_url,
            "CLOUD_MONITORING_API_URL": gcp.monitoring.address}


@contextmanager
def evidence_bot(gcp: GcpSandbox, clock: ManualClock, slack: SlackSandbox, database_url: str,
                 extra_env: dict[str, str] | None = None) -> Iterator[LocalBot]:
    """The app pointed at the Google sandbox, its scheduler off (reminders would add their own posts to the
    thread). A "" in `extra_env` removes that setting."""
    env = {**gcp_env(gcp), "SCHEDULER_ENABLED": "false", **(extra_env or {})}
    with LocalBot({k: v for k, v in env.items() if v != ""}, clock=clock, slack=slack,
                  database_url=database_url) as local:
        yield local


def verify_live(gcp: GcpSandbox, *, error_rate_max: float = 0.005, p95_max_ms: float = 200.0,
                env: dict[str, str] | None = None) -> LiveVerification:
    """The production verification over the window after the failure, with the app's own client holder built
    from settings (`env`, by default the sandbox's)."""
    sc = gcp.scenario
    clients = GcpClients(load_settings(env or gcp_env(gcp)))
    return verify_rollback_live(clients=clients, project=sc.project, region=sc.region, service=sc.service,
                                now=sc.post_end, since=sc.window_end, error_rate_max=error_rate_max,
                                p95_max_ms=p95_max_ms)
