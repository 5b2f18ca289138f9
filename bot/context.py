"""Everything a piece of domain logic may need, built once by app.py and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.clock import Clock
from bot.jobs import BackgroundJobs
from bot.ports import Messenger
from bot.render import Renderer
from bot.settings import Settings
from bot.timefmt import TimeFormatter
from storage.db import Database

# Lifecycle moments other domains react to, and what each hook receives after the Context:
HOOKS = {
    "on_open": "(session, incident) inside the opening transaction",
    "on_announced": "(incident_id) once the announcement and its thread exist",
    "on_closed": "(session, incident) when the status becomes resolved or cancelled",
    "on_reopened": "(session, incident) when a closed incident is reopened",
    "on_meeting_moved": "(session, incident) after meeting_at changed",
    "on_start": "() when the process starts its background services",
    "on_sweep": "() every sweep interval: retry what Slack refused earlier",
    "on_stop": "() at shutdown",
}


@dataclass
class Context:
    settings: Settings
    db: Database
    clock: Clock
    messenger: Messenger
    renderer: Renderer
    jobs: BackgroundJobs
    extras: dict[str, Any] = field(default_factory=dict)

    def formatter(self, locale: str | None = None) -> TimeFormatter:
        return TimeFormatter(self.settings.timezone, locale or self.settings.locale)

    @property
    def locale(self) -> str:
        return self.settings.locale

    def hook(self, name: str, fn: Any) -> None:
        """Registers a domain's reaction to a lifecycle moment (see HOOKS)."""
        self.extras.setdefault(name, []).append(fn)

    def fire(self, name: str, *args: Any) -> None:
        for fn in self.extras.get(name, []):
            fn(self, *args)

    def say(self, key: str, locale: str | None = None, **params: Any) -> str:
        """A short localized string: `group.name` → macro `name` of templates/<locale>/messages/<group>.j2."""
        return self.renderer.say(key, locale or self.locale, **params)


_current: Context | None = None


def set_current(context: Context | None) -> None:
    """Scheduler jobs get ids, not objects; they find the live context here."""
    global _current
    _current = context


def current() -> Context:
    if _current is None:
        raise RuntimeError("incident-bot context is not initialised")
    return _current
