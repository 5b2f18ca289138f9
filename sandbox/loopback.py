"""The real app on loopback against the local Slack sandbox: what the demo and the tests both run.

Requests travel over real HTTP: the driver signs them like Slack, the app's WebClient calls the sandbox. The app
comes from the `build_runtime` it is given (app.build_runtime): app.py imports the demo, which runs this module,
so this module cannot import app.py back. sandbox/harness.py binds it for the tests.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bot.clock import Clock
from bot.settings import Settings, load_settings
from sandbox.driver import SlackDriver
from sandbox.slack import SlackSandbox

if TYPE_CHECKING:
    from app import Runtime

SIGNING_SECRET = "sandbox-signing-secret"


class RuntimeBuilder(Protocol):
    """app.build_runtime's shape, as far as the loopback bot calls it."""

    def __call__(self, settings: Settings, *, clock: Clock | None = None) -> Runtime: ...


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 resets bursts of concurrent Slack requests


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class LocalBot:
    """Starts sandbox + app; `driver` talks to the app like Slack, `slack` records what the app did."""

    def __init__(
        self, env: Mapping[str, str] | None = None, *, build_runtime: RuntimeBuilder, clock: Clock | None = None,
        slack: SlackSandbox | None = None, database_url: str | None = None,
    ) -> None:
        self._build_runtime = build_runtime
        self.slack = slack or SlackSandbox()
        self._owns_slack = slack is None
        self._env = dict(env or {})
        self._clock = clock
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._database_url = database_url
        self.runtime: Runtime | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.driver: SlackDriver | None = None

    def settings(self) -> Settings:
        if self._database_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="incident-bot-")
            self._database_url = f"sqlite:///{os.path.join(self._tmp.name, 'bot.db')}"
        env = {
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url,
            "DATABASE_URL": self._database_url,
            **self._env,
        }
        return load_settings(env)

    def start(self, *, background: bool = True) -> LocalBot:
        if self._owns_slack:
            self.slack.start()
        self.runtime = self._build_runtime(self.settings(), clock=self._clock)
        self._server = make_server("127.0.0.1", 0, self.runtime.wsgi, server_class=_ThreadingWSGIServer,
                                   handler_class=_QuietHandler)
        # stop() waits for the serve loop's next poll: at the default 0.5 s that was most of a short test's time.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-bot-http", daemon=True)
        self._thread.start()
        if background:
            self.runtime.start()
        self.driver = SlackDriver(self.url, SIGNING_SECRET, self.slack, team_id=self.slack.team_id)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/slack/events"

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def ctx(self) -> Any:
        assert self.runtime is not None
        return self.runtime.ctx

    def settle(self, timeout: float = 30.0) -> None:
        """Waits until the work the app started after its acks has finished."""
        assert self.runtime is not None
        self.runtime.ctx.jobs.wait_idle(timeout)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime.ctx.db.dispose()
        if self._owns_slack:
            self.slack.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalBot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
