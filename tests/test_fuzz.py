"""Property test: whatever text follows `/incident` or `/postmortem`, the person gets an ephemeral answer
(the result, or what was wrong and the right form) and the dispatcher never raises.

It drives `handlers.commands.dispatch` directly, after `register()` has imported every subcommand module, so
subcommands added later are fuzzed too. A real Context on a temporary SQLite database; Slack is a recorder.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handlers.commands as commands
from app import build_context
from bot.clock import ManualClock
from bot.context import Context, set_current
from bot.ports import ChatMessage
from bot.settings import load_settings
from storage import migrate

CHANNEL = "C0INCIDENTS"
_triggers = itertools.count()


class RecordingMessenger:
    """Stands in for Slack: answers every call plausibly and remembers it."""

    bot_user_id = "U0BOT"
    call_budget = timedelta(seconds=1)

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._ts = 1761110000.0

    def _record(self, name: str, *args: Any, **kwargs: Any) -> str:
        with self._lock:
            self.calls.append((name, args, kwargs))
            self._ts += 1
            return f"{self._ts:.6f}"

    def post_message(self, channel: str, text: str, **kwargs: Any) -> str:
        return self._record("post_message", channel, text, **kwargs)

    def update_message(self, channel: str, ts: str, text: str, **kwargs: Any) -> None:
        self._record("update_message", channel, ts, text, **kwargs)

    def post_ephemeral(self, channel: str, user: str, text: str, **kwargs: Any) -> None:
        self._record("post_ephemeral", channel, user, text, **kwargs)

    def upload_file(self, channel: str, thread_ts: str | None, filename: str, content: bytes, **kwargs: Any) -> str:
        return "F" + self._record("upload_file", channel, thread_ts, filename, **kwargs)

    def add_reaction(self, channel: str, ts: str, name: str) -> None:
        self._record("add_reaction", channel, ts, name)

    def user_name(self, user_id: str) -> str | None:
        self._record("user_name", user_id)
        return user_id.title()

    def fetch_message(self, channel: str, ts: str) -> ChatMessage | None:
        self._record("fetch_message", channel, ts)
        return None

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        return "V" + self._record("open_view", trigger_id)

    def __getattr__(self, name: str) -> Any:
        # A port method added later: record it and answer with an ID-like string.
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._record(name, *args, **kwargs)


class _Registrar:
    """Just enough of a Bolt App for `commands.register` to import its subcommand modules."""

    def command(self, *_args: Any, **_kwargs: Any) -> Any:
        return lambda fn: fn


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "bot.db"
    settings = load_settings({
        "DATABASE_URL": f"sqlite:///{path}", "SLACK_SIGNING_SECRET": "fuzz", "SCHEDULER_ENABLED": "false",
        "INCIDENT_TIMEZONE": "Asia/Seoul",
        # Hundreds of commands by one person in one (manual) minute: the rate limits would answer them all.
        "RATE_LIMIT_OPEN_PER_USER": "0", "RATE_LIMIT_OPEN_PER_CHANNEL": "0",
        "RATE_LIMIT_POST_PER_USER": "0", "RATE_LIMIT_POST_PER_CHANNEL": "0",
    })
    context = build_context(settings, messenger=RecordingMessenger(),  # type: ignore[arg-type]
                            clock=ManualClock(datetime(2025, 10, 22, 5, 30, tzinfo=UTC)))
    migrate.upgrade(context.db.engine)
    set_current(context)
    commands.register(_Registrar(), context)  # type: ignore[arg-type]
    # Some state to act on: an open incident in the channel, with a thread.
    answer = run(context, "/incident", "open 추천 API p95 급증 sev:high")
    assert "INCIDENT-" in answer["text"]
    context.jobs.wait_idle(10)
    yield context
    context.jobs.wait_idle(10)
    context.jobs.shutdown()
    context.db.dispose()


def run(ctx: Context, command: str, text: str) -> dict[str, Any]:
    group, table = ("incident", commands.INCIDENT_SUBCOMMANDS) if command == "/incident" else (
        "postmortem", commands.POSTMORTEM_SUBCOMMANDS)
    acks: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    body = {"command": command, "text": text, "user_id": "U0SENA", "user_name": "sena", "channel_id": CHANNEL,
            "team_id": "T0SANDBOX", "response_url": "http://127.0.0.1:9/unused",
            "trigger_id": f"1.2.{next(_triggers)}"}  # Slack's trigger_id is new for every command

    def ack(**kwargs: Any) -> None:
        acks.append(kwargs)

    def respond(*args: Any, **kwargs: Any) -> None:
        responses.append(kwargs or {"text": args[0] if args else ""})

    commands.dispatch(ctx, group, table, body, ack, respond)  # type: ignore[arg-type]
    assert len(acks) == 1, acks  # acked exactly once
    [answer] = acks
    assert answer.get("response_type") == "ephemeral"
    assert isinstance(answer.get("text"), str) and answer["text"].strip()
    assert "Traceback (most recent call last)" not in answer["text"]
    return answer


# Words that steer the parsers down their interesting paths, mixed with anything at all.
_WORDS = st.sampled_from([
    "sev:critical", "sev:low", "sev:urgent", "service:ion-api", "service:Bad_Name", "P0", "P1", "P4", "due:2d",
    "due:2025-10-30", "due:yesterday", "14:35", "25:99", "2025-10-22 14:00", "2025-02-30", "<@U0LEMUN|lemun>",
    "<@U0GITCO>", "<@bad>", "<!channel>", "&lt;", "\"quoted task\"", "\"", "INCIDENT-20251022-001",
    "INCIDENT-20251022-999", "incident-20251022-001", "lead", "backend", "devops", "rollback", "recovered",
    "deployed", "started", "detected", "resolved", "investigating", "identified", "monitoring", "cancelled",
    "ko", "en", "fr", "p95", "error_rate", "users", "%", "50%", "-1", "0", "999999999999", "|", "\n", "  ",
    "\u200b", "\x00", "🚨", "ñ", "한국어",
])
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


def _commands(table: dict[str, Any]) -> st.SearchStrategy[str]:
    subs = st.sampled_from(sorted(table))
    tail = st.lists(_WORDS | _TEXT, max_size=6).map(" ".join)
    structured = st.tuples(subs, tail).map(lambda pair: f"{pair[0]} {pair[1]}")
    with_id = st.tuples(st.sampled_from(["INCIDENT-20251022-001 ", "INCIDENT-20990101-001 "]), structured).map(
        "".join)
    return st.one_of(structured, with_id, _TEXT, st.lists(_WORDS, max_size=5).map(" ".join))


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_any_incident_command_is_answered_ephemerally(ctx: Context, data: st.DataObject) -> None:
    text = data.draw(_commands(commands.INCIDENT_SUBCOMMANDS), label="text")
    run(ctx, "/incident", text)


@FUZZ
@given(data=st.data())
def test_any_postmortem_command_is_answered_ephemerally(ctx: Context, data: st.DataObject) -> None:
    text = data.draw(_commands(commands.POSTMORTEM_SUBCOMMANDS), label="text")
    run(ctx, "/postmortem", text)


def test_the_fuzz_reaches_every_registered_subcommand(ctx: Context) -> None:
    """Guards the two tests above against fuzzing an empty table (e.g. a module that failed to register)."""
    assert {"open", "help"} <= set(commands.INCIDENT_SUBCOMMANDS)
    assert {"report", "help"} <= set(commands.POSTMORTEM_SUBCOMMANDS)
    for sub in sorted(commands.INCIDENT_SUBCOMMANDS):
        run(ctx, "/incident", sub)
    for sub in sorted(commands.POSTMORTEM_SUBCOMMANDS):
        run(ctx, "/postmortem", sub)
