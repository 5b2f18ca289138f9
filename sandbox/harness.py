"""The tests' LocalBot: the loopback bot (sandbox/loopback.py) running the app exactly as app.py builds it."""

from __future__ import annotations

from collections.abc import Mapping

import app
from bot.clock import Clock
from sandbox import loopback
from sandbox.loopback import SIGNING_SECRET
from sandbox.slack import SlackSandbox

__all__ = ["SIGNING_SECRET", "LocalBot"]


class LocalBot(loopback.LocalBot):
    def __init__(
        self, env: Mapping[str, str] | None = None, *, clock: Clock | None = None,
        slack: SlackSandbox | None = None, database_url: str | None = None,
    ) -> None:
        super().__init__(env, build_runtime=app.build_runtime, clock=clock, slack=slack, database_url=database_url)
