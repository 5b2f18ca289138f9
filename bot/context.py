"""Everything a piece of domain logic may need, built once by app.py and passed explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy.orm import Session

from bot.clock import Clock
from bot.jobs import BackgroundJobs
from bot.ports import Messenger, Presenter
from bot.render import Renderer
from bot.settings import Settings
from bot.timefmt import TimeFormatter
from storage.db import Database, Work
from storage.models import ActionItem, Incident

P = ParamSpec("P")
T = TypeVar("T")


class Hook(Generic[P]):
    """A lifecycle moment other domains react to. Each reaction gets the Context, then the hook's arguments P,
    in registration order; what it returns is ignored."""

    def __init__(self, ctx: Context, name: str, when: str) -> None:
        self.name = name
        self.when = when
        self._ctx = ctx
        self._reactions: list[Callable[Concatenate[Context, P], object]] = []

    def register(self, reaction: Callable[Concatenate[Context, P], object]) -> None:
        self._reactions.append(reaction)

    def fire(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for reaction in list(self._reactions):
            reaction(self._ctx, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Hook({self.name})"


class Hooks:
    """Every hook there is, one typed attribute each: a misspelt name fails where it is registered (and a type
    checker checks each reaction's signature). No attribute can be added: a new hook is declared here."""

    __slots__ = ("on_action_item_added", "on_action_item_done", "on_action_item_posted", "on_action_item_reopened",
                 "on_announced", "on_announced_stale",
                 "on_closed", "on_meeting_moved", "on_open", "on_reopened", "on_report_posted", "on_role_assigned",
                 "on_start", "on_stop", "on_sweep")

    def __init__(self, ctx: Context) -> None:
        self.on_open: Hook[[Work, Incident]] = Hook(ctx, "on_open", "inside the opening transaction")
        self.on_announced: Hook[[int]] = Hook(
            ctx, "on_announced", "(incident_id) once the announcement and its thread exist")
        self.on_announced_stale: Hook[[int]] = Hook(
            ctx, "on_announced_stale", "(incident_id) once an announcement is on record that shows the incident as"
            " it was before a change committed while it was being posted")
        self.on_closed: Hook[[Session, Incident]] = Hook(
            ctx, "on_closed", "when the status becomes resolved or cancelled")
        self.on_reopened: Hook[[Session, Incident]] = Hook(ctx, "on_reopened", "when a closed incident is reopened")
        self.on_meeting_moved: Hook[[Session, Incident]] = Hook(ctx, "on_meeting_moved", "after meeting_at changed")
        self.on_action_item_added: Hook[[Session, ActionItem]] = Hook(
            ctx, "on_action_item_added", "inside the transaction that stored a new action item")
        self.on_action_item_done: Hook[[Session, ActionItem]] = Hook(
            ctx, "on_action_item_done", "inside the transaction that marked an action item done")
        self.on_action_item_posted: Hook[[int]] = Hook(
            ctx, "on_action_item_posted", "(action item id) once the item's message is in Slack, after its commit")
        self.on_action_item_reopened: Hook[[Session, ActionItem]] = Hook(
            ctx, "on_action_item_reopened", "inside the transaction that took a done action item back")
        self.on_role_assigned: Hook[[Session, Incident, str]] = Hook(
            ctx, "on_role_assigned", "(user_id) inside the transaction that gave a role to someone new")
        self.on_report_posted: Hook[[Session, Incident]] = Hook(
            ctx, "on_report_posted", "inside the transaction that recorded a posted post-mortem report")
        self.on_start: Hook[[]] = Hook(ctx, "on_start", "when the process starts its background services")
        self.on_sweep: Hook[[]] = Hook(ctx, "on_sweep", "every sweep interval: retry what Slack refused earlier")
        self.on_stop: Hook[[]] = Hook(ctx, "on_stop", "at shutdown")


@dataclass
class Context:
    settings: Settings
    db: Database
    clock: Clock
    messenger: Messenger
    renderer: Renderer
    jobs: BackgroundJobs
    presenter: Presenter  # lays out the messages with controls; handlers/ implements it
    # Per-process state of domains that have no class of their own yet, keyed "<module>.<what>".
    extras: dict[str, Any] = field(default_factory=dict)
    _shared: dict[type, Any] = field(default_factory=dict, repr=False)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    hooks: Hooks = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.hooks = Hooks(self)

    def formatter(self, locale: str | None = None) -> TimeFormatter:
        return TimeFormatter(self.settings.timezone, locale or self.settings.locale)

    @property
    def locale(self) -> str:
        return self.settings.locale

    def shared(self, kind: type[T], make: Callable[[], T]) -> T:
        """This context's one `kind` (a cache, a client), made on first use; listeners and jobs share it."""
        made: T | None = self._shared.get(kind)  # made already, the usual case: no lock (a dict read is atomic)
        if made is not None:
            return made
        with self._shared_lock:
            found = self._shared.get(kind)
            if found is None:
                found = self._shared[kind] = make()
        return found

    def say(self, key: str, locale: str | None = None, **params: Any) -> str:
        """A short localized string: `group.name` → macro `name` of templates/messages/<group>.j2."""
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
