"""Issue 11 ("Trust"), the Events API path, through signed HTTP against the Slack sandbox:

- an event is acked only once it is stored, so a server killed mid-burst loses nothing Slack will not redeliver
  (item 1), and a write that fails answers 503 so that Slack does redeliver;
- slow Slack never turns a slash command into Bolt's 3-second "unhandled request" while it still runs (item 4);
- a 📌 added then removed back to back ends unpinned, on a channel message as on a thread reply (item 11);
- text with NUL and other control characters is stored cleaned, the same on SQLite and PostgreSQL (item 3).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, event, select
from sqlalchemy.exc import OperationalError

from bot.sanitize import clean_text
from sandbox.driver import SlackDriver
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import EventPin, Incident, MessageReaction, TimelineEvent
from tests.helpers import count, events, open_incident
from tests.test_serve import BIN, base_env, free_port

CHANNEL = "C0INCIDENTS"
SLACK_ACK_WINDOW = 3.0


def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def reply_event(message: dict[str, Any], thread_ts: str) -> dict[str, Any]:
    """The `message` event Slack sends for a thread reply."""
    return {"type": "message", "channel": CHANNEL, "user": message["user"], "text": message["text"],
            "ts": message["ts"], "thread_ts": thread_ts, "event_ts": message["ts"], "channel_type": "channel"}


def reaction_event(ts: str, user: str, event_ts: str, *, added: bool = True) -> dict[str, Any]:
    return {"type": "reaction_added" if added else "reaction_removed", "user": user, "reaction": "pushpin",
            "item": {"type": "message", "channel": CHANNEL, "ts": ts}, "event_ts": event_ts}


def visible_pins(bot: LocalBot) -> list[TimelineEvent]:
    return [e for e in events(bot, "pin") if e.deleted_at is None]


def event_for(bot: LocalBot, ts: str) -> TimelineEvent | None:
    return next((e for e in events(bot) if e.slack_ts == ts), None)


def timeline_text(bot: LocalBot) -> str:
    response = bot.driver.command("/incident", "timeline")
    assert response.status_code == 200
    return str(response.json()["text"])


# ---- item 1: acked means stored, even when the server is killed mid-burst --------------------------------------


class KillableServe:
    """`incident-bot serve` (gunicorn) in its own process group, so SIGKILL takes the master and its worker."""

    def __init__(self, slack: SlackSandbox, database_url: str, log: Path) -> None:
        self.port = free_port()
        secret = "signing-secret-for-the-kill-test"
        env = {**base_env(), "SLACK_API_URL": slack.api_url, "SLACK_BOT_TOKEN": slack.bot_token,
               "SLACK_SIGNING_SECRET": secret, "DATABASE_URL": database_url, "PORT": str(self.port)}
        self._log = log.open("a")
        # A file, not a pipe: a burst's log lines must never block the server on a full pipe.
        self.process = subprocess.Popen([str(BIN), "serve"], env=env, cwd="/", stdout=self._log,
                                        stderr=self._log, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.driver = SlackDriver(f"{self.url}/slack/events", secret, slack, team_id=slack.team_id)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            assert self.process.poll() is None, "serve exited"
            try:
                return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, timeout)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        self._log.close()


@pytest.fixture
def served(slack: SlackSandbox, database_url: str, tmp_path: Path) -> Iterator[Callable[[], KillableServe]]:
    started: list[KillableServe] = []

    def start() -> KillableServe:
        server = KillableServe(slack, database_url, tmp_path / "serve.log")
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow
def test_a_server_killed_mid_burst_loses_no_reply_it_acked(served: Callable[[], KillableServe],
                                                           slack: SlackSandbox, database_url: str) -> None:
    first = served()
    opened = first.driver.command("/incident", "open 답글 폭주 중 강제 종료 sev:high")
    assert opened.status_code == 200 and "INCIDENT-" in opened.json()["text"]
    wait_for(lambda: slack.messages(CHANNEL))
    thread_ts = slack.messages(CHANNEL)[0]["ts"]

    slack.set_latency("users.info", 0.3)
    senders = [f"U0SEND{n:02d}" for n in range(16)]
    for n, sender in enumerate(senders):
        slack.add_user(sender, f"Sender {n}")
    deliveries = []
    for i in range(200):
        message = slack.add_message(CHANNEL, senders[i % len(senders)], f"답글 {i:03d}", thread_ts=thread_ts)
        deliveries.append((reply_event(message, thread_ts), f"Ev0BURST{i:04d}"))

    statuses: dict[str, int | None] = {}
    lock = threading.Lock()

    def deliver(delivery: tuple[dict[str, Any], str]) -> None:
        body, event_id = delivery
        try:
            status: int | None = first.driver.event(body, event_id=event_id).status_code
        except requests.RequestException:
            status = None  # cut off by the kill: Slack would deliver it again
        with lock:
            statuses[event_id] = status
            if sum(1 for s in statuses.values() if s is not None) == len(deliveries) // 2:
                first.kill()  # at once, from the thread that saw the hundredth answer

    with ThreadPoolExecutor(max_workers=len(senders)) as pool:
        list(pool.map(deliver, deliveries))
    acked = {event_id for event_id, status in statuses.items() if status is not None and 200 <= status < 300}
    assert len(deliveries) // 2 <= len(acked) < len(deliveries)  # killed mid-burst

    second = served()
    for body, event_id in deliveries:
        if event_id not in acked:  # what Slack redelivers: everything that got no 2xx
            assert second.driver.event(body, event_id=event_id, retry_num=1).status_code == 200

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = connection.scalars(select(TimelineEvent.slack_ts).where(TimelineEvent.kind == "message")).all()
    finally:
        engine.dispose()
    assert sorted(stored) == sorted(body["ts"] for body, _ in deliveries)  # every reply, each once


# ---- a write that fails is refused, and its redelivery is stored ----------------------------------------------


class FailNextWrite:
    """Makes the next statement that starts with an armed prefix fail as a lost database connection would."""

    def __init__(self, bot: LocalBot) -> None:
        self.armed: list[str] = []
        event.listen(bot.ctx.db.engine, "before_cursor_execute", self._fail)

    def arm(self, prefix: str) -> None:
        self.armed.append(prefix)

    def _fail(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        for prefix in self.armed:
            if statement.startswith(prefix):
                self.armed.remove(prefix)
                raise OperationalError(statement, None, Exception("server closed the connection unexpectedly"))


def test_an_event_whose_write_fails_gets_a_503_and_its_redelivery_is_stored_once(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "쓰기 실패")
    failing = FailNextWrite(bot)

    failing.arm("INSERT INTO timeline_events")
    message = bot.slack.add_message(CHANNEL, "U0LEMUN", "쓰기 실패 중 답글", thread_ts=thread_ts)
    reply = reply_event(message, thread_ts)
    assert bot.driver.event(reply, event_id="Ev0WRITEREPLY").status_code == 503
    assert event_for(bot, message["ts"]) is None and failing.armed == []
    for retry in (1, 2):
        assert bot.driver.event(reply, event_id="Ev0WRITEREPLY", retry_num=retry).status_code == 200
    bot.settle()
    assert [e.text for e in events(bot, "message")] == ["쓰기 실패 중 답글"]

    failing.arm("UPDATE timeline_events SET text")
    assert bot.driver.edit(CHANNEL, message["ts"], "쓰기 실패 중 답글 (수정)").status_code == 503
    assert [e.text for e in events(bot, "message")] == ["쓰기 실패 중 답글"] and failing.armed == []
    assert bot.driver.edit(CHANNEL, message["ts"], "쓰기 실패 중 답글 (수정)").status_code == 200
    assert [e.text for e in events(bot, "message")] == ["쓰기 실패 중 답글 (수정)"]

    top, _ = bot.driver.say(CHANNEL, "U0GITCO", "채널의 알림 메시지")
    bot.slack.add_reaction(CHANNEL, top["ts"], "U0SENA", "pushpin")
    pin = reaction_event(top["ts"], "U0SENA", f"{time.time():.6f}")
    failing.arm("INSERT INTO message_reactions")
    assert bot.driver.event(pin, event_id="Ev0WRITEPIN").status_code == 503
    bot.settle()
    assert visible_pins(bot) == [] and count(bot, MessageReaction) == 0 and failing.armed == []
    for retry in (1, 2):
        assert bot.driver.event(pin, event_id="Ev0WRITEPIN", retry_num=retry).status_code == 200
    bot.settle()
    assert [e.text for e in visible_pins(bot)] == ["채널의 알림 메시지"] and count(bot, EventPin) == 1


# ---- item 4: slow Slack never starves a command ---------------------------------------------------------------


def test_commands_answer_in_time_while_slack_hangs_behind_a_burst_of_replies(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "느린 슬랙")
    bot.slack.set_latency("*", 10.0)  # every Web API method hangs 10 s
    try:
        def reply(n: int) -> tuple[int, float]:
            started = time.monotonic()
            _, response = bot.driver.say(CHANNEL, f"U0SLOW{n % 8}", f"느린 답글 {n}", thread_ts=thread_ts)
            return response.status_code, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=16) as pool:
            replies = list(pool.map(reply, range(40)))
        assert all(status == 200 and took < SLACK_ACK_WINDOW for status, took in replies), replies

        answers = {}
        for text in ("open 느린 슬랙 중 두 번째 사건", "help"):
            started = time.monotonic()
            response = bot.driver.command("/incident", text)
            answers[text] = (response, time.monotonic() - started)
        opened, took_open = answers["open 느린 슬랙 중 두 번째 사건"]
        helped, took_help = answers["help"]
        assert opened.status_code == 200 and took_open < SLACK_ACK_WINDOW
        assert opened.json()["response_type"] == "ephemeral" and "INCIDENT-" in opened.json()["text"]
        assert helped.status_code == 200 and took_help < SLACK_ACK_WINDOW
        assert "/incident open" in helped.json()["text"]
        assert count(bot, Incident) == 2  # the slow Slack made no second one
        assert len(events(bot, "message")) == 40  # stored before the acks
    finally:
        bot.slack.reset_faults()
    bot.settle(60)
    assert count(bot, Incident) == 2


# ---- item 11: 📌 added then removed back to back ---------------------------------------------------------------


def test_a_pin_added_then_removed_back_to_back_is_not_on_the_timeline(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "핀 경합")
    bot.slack.set_latency("conversations.history", 0.05)  # fetching the message is the slow part of a 📌
    channel_messages, replies = [], []
    for n in range(10):
        message, _ = bot.driver.say(CHANNEL, "U0LEMUN", f"채널 메시지 {n}")
        reply, _ = bot.driver.say(CHANNEL, "U0GITCO", f"스레드 답글 {n}", thread_ts=thread_ts)
        for ts in (message["ts"], reply["ts"]):
            assert bot.driver.react(CHANNEL, ts, "U0SENA", "pushpin").status_code == 200
            assert bot.driver.react(CHANNEL, ts, "U0SENA", "pushpin", removed=True).status_code == 200
        channel_messages.append(message["ts"])
        replies.append(reply["ts"])
    bot.settle()
    assert visible_pins(bot) == [] and count(bot, EventPin) == 0
    for ts in replies:
        recorded = event_for(bot, ts)
        assert recorded is not None and recorded.deleted_at is None and not recorded.highlighted
    shown = timeline_text(bot)
    assert not [line for line in shown.splitlines() if "📌 채널 메시지" in line or "📌 스레드 답글" in line]
    assert not any(f"채널 메시지 {n}" in shown for n in range(10))


def test_a_pin_removed_then_added_ends_pinned_whichever_event_arrives_first(bot: LocalBot) -> None:
    open_incident(bot, "핀 재추가")
    in_order, _ = bot.driver.say(CHANNEL, "U0LEMUN", "차례대로 다시 고정")
    swapped, _ = bot.driver.say(CHANNEL, "U0LEMUN", "뒤바뀌어 다시 고정")
    for message in (in_order, swapped):
        assert bot.driver.react(CHANNEL, message["ts"], "U0SENA", "pushpin").status_code == 200
    bot.settle()
    # Back to back, in the order they were made.
    assert bot.driver.react(CHANNEL, in_order["ts"], "U0SENA", "pushpin", removed=True).status_code == 200
    assert bot.driver.react(CHANNEL, in_order["ts"], "U0SENA", "pushpin").status_code == 200
    # Slack's deliveries crossed: the add made later arrives before the remove made earlier.
    earlier, later = f"{time.time():.6f}", f"{time.time() + 1:.6f}"
    assert bot.driver.event(reaction_event(swapped["ts"], "U0SENA", later)).status_code == 200
    bot.settle()
    assert bot.driver.event(reaction_event(swapped["ts"], "U0SENA", earlier, added=False)).status_code == 200
    bot.settle()
    assert sorted(e.text for e in visible_pins(bot)) == ["뒤바뀌어 다시 고정", "차례대로 다시 고정"]
    assert count(bot, EventPin) == 2


def test_a_pin_added_then_removed_ends_unpinned_even_when_the_remove_arrives_first(bot: LocalBot) -> None:
    open_incident(bot, "순서 뒤바뀐 전달")
    message, _ = bot.driver.say(CHANNEL, "U0LEMUN", "빠져야 할 핀")
    earlier, later = f"{time.time():.6f}", f"{time.time() + 1:.6f}"
    assert bot.driver.event(reaction_event(message["ts"], "U0SENA", later, added=False)).status_code == 200
    bot.settle()
    assert bot.driver.event(reaction_event(message["ts"], "U0SENA", earlier)).status_code == 200
    bot.settle()
    assert visible_pins(bot) == [] and count(bot, EventPin) == 0
    assert not bot.slack.calls("conversations.history")  # nobody pins it: no need to read it


# ---- item 3: NUL and other control characters ------------------------------------------------------------------

DIRTY = "p95\x00 850ms\x01\x07 확인\x1b[31m\r\n다음 줄\t탭\x7f"


def test_control_characters_are_cleaned_from_replies_edits_pins_and_names(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot, "제어 문자")
    bot.slack.add_user("U0CTRL", "Ctrl\x00 Name\x1b")
    reply, response = bot.driver.say(CHANNEL, "U0CTRL", DIRTY, thread_ts=thread_ts)
    assert response.status_code == 200
    bot.settle()
    stored = event_for(bot, reply["ts"])
    assert stored is not None and stored.text == clean_text(DIRTY) == "p95 850ms 확인[31m\n다음 줄\t탭"
    assert stored.author_name == "Ctrl Name"

    assert bot.driver.edit(CHANNEL, reply["ts"], f"{DIRTY} 수정\x00됨").status_code == 200
    edited = event_for(bot, reply["ts"])
    assert edited is not None and edited.text == f"{clean_text(DIRTY)} 수정됨"

    bot_reply = bot.slack.add_message(CHANNEL, "U0GITCO", "", thread_ts=thread_ts)
    alert = {"type": "message", "subtype": "bot_message", "channel": CHANNEL, "bot_id": "B0ALERTS",
             "username": "alert\x00bot\x08", "text": f"[ALERT]\x00 {DIRTY}", "ts": bot_reply["ts"],
             "thread_ts": thread_ts, "event_ts": bot_reply["ts"]}
    assert bot.driver.event(alert).status_code == 200
    from_bot = event_for(bot, bot_reply["ts"])
    assert from_bot is not None and (from_bot.author_name, from_bot.text) == ("alertbot",
                                                                              f"[ALERT] {clean_text(DIRTY)}")

    top, _ = bot.driver.say(CHANNEL, "U0LEMUN", f"채널\x00 {DIRTY}")
    assert bot.driver.react(CHANNEL, top["ts"], "U0SENA", "pushpin").status_code == 200
    bot.settle()
    [pin] = visible_pins(bot)
    assert pin.text == f"채널 {clean_text(DIRTY)}"

    assert "\x00" not in timeline_text(bot)
    assert bot.driver.command("/postmortem", "report").status_code == 200
    bot.settle()
    [document] = bot.slack.files()
    content = document["content"].decode()
    assert "p95 850ms 확인" in content and not any(c in content for c in "\x00\x01\x07\x1b\x7f\r")
