"""`/incident stats [30d|90d|YYYY-MM]` (issue 16): counts by severity, median and p90 of time to detect and time to
recover from milestones only (an incident without them named, never a zero), total impact, action items, a weekly
series and its chart in the asker's DM, over the incidents the asker may see, in a constant number of statements.

The history spans months, so it is written straight into the database (the app's commands cannot open an incident
in the past); everything else goes through signed HTTP to the served app.
"""

from __future__ import annotations

import itertools
import math
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from bot import access, stats, stats_chart
from bot.clock import ManualClock
from sandbox.harness import LocalBot
from storage.models import ActionItem, Base, ChannelVisibility, Incident
from tests.helpers import clocked_bot

SEOUL = "Asia/Seoul"
NOW = datetime(2025, 11, 3, 3, 0, tzinfo=UTC)  # 12:00 on 3 November in Seoul
CHANNEL = "C0INCIDENTS"
PRIVATE, PRIVATE_NAME = "G0PRIVATE", "incident-secret"
RANDOM, RANDOM_NAME = "C0RANDOM", "random"
_seq = itertools.count(1)


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def seed(session: Session, opened_at: datetime, *, severity: str = "high", status: str = "investigating",
         channel: str = CHANNEL, **milestones: datetime) -> Incident:
    """An incident as the app stores one, opened at `opened_at`, with the milestones given (`detected=…`)."""
    number = next(_seq)
    incident = Incident(
        public_id=f"INCIDENT-{opened_at:%Y%m%d}-{number:03d}", day=f"{opened_at:%Y%m%d}", seq=number,
        title=f"incident {number}", severity=severity, status=status, channel_id=channel, opened_by="U0SENA",
        opened_at=opened_at, meeting_at=opened_at + timedelta(hours=2),
        **{f"{name}_at": value for name, value in milestones.items()},
    )
    session.add(incident)
    session.flush()
    return incident


def item(session: Session, incident: Incident, status: str, due_at: datetime | None = None) -> None:
    session.add(ActionItem(incident_id=incident.id, priority="P1", task=f"task of {incident.public_id}",
                           owner_id="U0SENA", due_at=due_at, status=status,
                           done_at=NOW - timedelta(days=1) if status == "done" else None))


def october(session: Session) -> dict[str, Incident]:
    """October 2025 in Seoul, each incident's spans in minutes (detect / recover / impact):
    a 2/1/11, b 4/3/18 (started = deployed), c 6/5/15, d 10/15/35, e 30/–/50, f –/–/–, j –/–/– (no milestones);
    not counted: g cancelled, h in September, i on 1 November in Seoul (still 31 October in UTC)."""
    found = {
        "a": seed(session, at(9, 30, 15, 30), severity="critical",  # 00:30 on 1 October in Seoul
                  started=at(9, 30, 15, 0), detected=at(9, 30, 15, 2), rollback=at(9, 30, 15, 10),
                  recovered=at(9, 30, 15, 11)),
        "b": seed(session, at(10, 5, 10), deployed=at(10, 5, 9, 50), detected=at(10, 5, 9, 54),
                  rollback=at(10, 5, 10, 5), recovered=at(10, 5, 10, 8)),
        "c": seed(session, at(10, 12, 3), started=at(10, 12, 2, 50), detected=at(10, 12, 2, 56),
                  rollback=at(10, 12, 3), recovered=at(10, 12, 3, 5)),
        "d": seed(session, at(10, 20, 7), severity="medium", started=at(10, 20, 6, 40), detected=at(10, 20, 6, 50),
                  rollback=at(10, 20, 7), recovered=at(10, 20, 7, 15)),
        "e": seed(session, at(10, 25, 12), severity="low", started=at(10, 25, 11), detected=at(10, 25, 11, 30),
                  recovered=at(10, 25, 11, 50)),
        "f": seed(session, at(10, 28, 8), detected=at(10, 28, 7, 58), rollback=at(10, 28, 8, 5)),
        "j": seed(session, at(10, 31, 14, 50), severity="medium"),  # 23:50 on 31 October in Seoul
        "g": seed(session, at(10, 15, 1), status="cancelled", started=at(10, 15, 0, 50), detected=at(10, 15, 0, 51)),
        "h": seed(session, at(9, 29, 1), started=at(9, 29, 0, 50), detected=at(9, 29, 0, 51)),
        "i": seed(session, at(10, 31, 15, 10), started=at(10, 31, 15), detected=at(10, 31, 15, 1)),
    }
    item(session, found["b"], "done")
    item(session, found["b"], "done")
    item(session, found["d"], "open", due_at=NOW - timedelta(days=1))  # overdue
    item(session, found["d"], "in_progress", due_at=NOW + timedelta(days=1))
    item(session, found["g"], "open", due_at=NOW - timedelta(days=1))  # a cancelled incident's: not counted
    item(session, found["h"], "open")  # September's: not counted
    return found


@pytest.fixture
def stats_bot(database_url: str) -> Iterator[tuple[LocalBot, ManualClock]]:
    env = {"INCIDENT_TIMEZONE": SEOUL, "INCIDENT_LOCALE": "en", "SCHEDULER_ENABLED": "false"}
    with clocked_bot(database_url, NOW, env) as running:
        yield running


def ask(bot: LocalBot, text: str, *, user: str = "U0SENA", channel: str = CHANNEL,
        channel_name: str = "critical-incidents", trigger_id: str | None = None) -> str:
    assert bot.driver is not None
    response = bot.driver.command("/incident", f"stats {text}".strip(), user=user, channel=channel,
                                  channel_name=channel_name, trigger_id=trigger_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response_type"] == "ephemeral"
    return str(body["text"])


def minutes(value: float) -> timedelta:
    return timedelta(minutes=value)


def test_a_month_gives_known_medians_and_p90s_and_names_the_incomplete(
        stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    with bot.ctx.db.session() as session:
        seeded = {key: incident.public_id for key, incident in october(session).items()}

    with bot.ctx.db.read() as session:
        period = stats.parse_period("2025-10", NOW, bot.ctx.settings.timezone)
        result = stats.compute(session, access.asker(bot.ctx, "U0SENA", CHANNEL), period, NOW,
                               bot.ctx.settings.timezone)
    summary = result.summary
    assert summary.incidents == 7
    assert summary.by_severity == (("critical", 1), ("high", 3), ("medium", 2), ("low", 1))
    assert sorted(summary.detect.values) == [minutes(v) for v in (2, 4, 6, 10, 30)]
    assert (summary.detect.median, summary.detect.p90) == (minutes(6), minutes(22))  # 10 + 0.6 × (30 − 10)
    assert summary.detect.incomplete == (seeded["f"], seeded["j"])
    assert (summary.recover.median, summary.recover.p90) == (minutes(4), minutes(12))  # of 1, 3, 5, 15
    assert summary.recover.incomplete == (seeded["e"], seeded["f"], seeded["j"])
    assert summary.impact.total == minutes(11 + 18 + 15 + 35 + 50)
    assert summary.impact.incomplete == (seeded["f"], seeded["j"])
    assert result.actions == stats.ActionCounts(done=2, open=2, overdue=1)
    # 7-day weeks from 1 October in Seoul; each incident in the week it was opened, there.
    assert [(w.incidents, w.detect_median, w.recover_median) for w in summary.weeks] == [
        (2, minutes(3), minutes(2)), (1, minutes(6), minutes(5)), (1, minutes(10), minutes(15)),
        (2, minutes(30), None), (1, None, None)]

    answer = ask(bot, "2025-10")
    assert "📊 *Incident stats, 2025-10* (2025-10-01 – 2025-10-31 KST)" in answer
    assert "• *Incidents*: 7 — CRITICAL 1 · HIGH 3 · MEDIUM 2 · LOW 1" in answer
    assert "• *Time to detect* (impact start → detected): median 6 min · p90 22 min (n = 5)" in answer
    assert f"↳ Incomplete (no impact start or no detection): `{seeded['f']}`, `{seeded['j']}`" in answer
    assert "• *Time to recover* (rollback → recovered): median 4 min · p90 12 min (n = 4)" in answer
    assert f"↳ Incomplete (no rollback or no recovery): `{seeded['e']}`, `{seeded['f']}`, `{seeded['j']}`" in answer
    assert "• *Total impact time* (impact start → recovered, added up): 2 h 9 min (n = 5)" in answer
    assert "• *Action items*: 2 done · 2 open, 1 of them overdue" in answer
    assert "• 10-01 – 10-07: incidents 2 · detect 3 min · recover 2 min" in answer
    assert "• 10-29 – 10-31: incidents 1 · detect — · recover —" in answer
    for key in ("g", "h", "i"):
        assert seeded[key] not in answer

    # The chart's series: a week without a complete incident is a gap in its line, never a zero.
    data = stats_chart.chart_data(bot.ctx, summary)
    assert data.weeks == ("10-01", "10-08", "10-15", "10-22", "10-29") and data.incidents == (2, 1, 1, 2, 1)
    assert data.detect_minutes[:4] == (3.0, 6.0, 10.0, 30.0) and math.isnan(data.detect_minutes[4])
    assert data.recover_minutes[:3] == (2.0, 5.0, 15.0) and all(map(math.isnan, data.recover_minutes[3:]))


def test_30d_and_90d_reach_back_whole_days_from_today(stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    with bot.ctx.db.session() as session:
        october(session)
    # 30 days: 5 October to today, 3 November, in Seoul: a is older, h older still; i (1 November) counts.
    thirty = ask(bot, "")
    assert "*Incident stats, the last 30 days* (2025-10-05 – 2025-11-03 KST)" in thirty
    assert "• *Incidents*: 7 — HIGH 4 · MEDIUM 2 · LOW 1" in thirty
    assert ask(bot, "30d") == thirty
    ninety = ask(bot, "90d")
    assert "(2025-08-06 – 2025-11-03 KST)" in ninety
    assert "• *Incidents*: 9 — CRITICAL 1 · HIGH 5 · MEDIUM 2 · LOW 1" in ninety


def row_counts(bot: LocalBot) -> dict[str, int]:
    with bot.ctx.db.read() as session:
        return {table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
                for table in Base.metadata.sorted_tables}


@pytest.mark.parametrize("typed", ["2025-13", "last-week", "7d", "2025-10 extra", "2026-01",
                                   "INCIDENT-20251022-001", "&lt;@U0LUBIT&gt;"])
def test_a_bad_period_gets_the_usage_and_stores_nothing(stats_bot: tuple[LocalBot, ManualClock], typed: str) -> None:
    bot, _ = stats_bot
    with bot.ctx.db.session() as session:
        october(session)
    before = row_counts(bot)
    answer = ask(bot, typed)
    bot.settle()
    assert "Usage: `/incident stats [30d|90d|YYYY-MM]`" in answer and "a calendar month in Asia/Seoul" in answer
    if typed == "2026-01":
        assert "2026-01 hasn't begun yet" in answer
    else:
        assert "is not a period I know" in answer
    assert "<@U0LUBIT>" not in answer  # typed text is shown escaped, never as a mention
    assert row_counts(bot) == before
    assert not bot.slack.files() and not bot.slack.calls("conversations.open")


def count_statements(bot: LocalBot, channels: int = 0) -> int:
    """The statements one computation of the 30 days sends, its transaction's own BEGIN aside."""
    engine = bot.ctx.db.engine
    me = threading.get_ident()
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == me:
            seen.append(statement)

    with bot.ctx.db.read() as session:
        session.connection()  # begin first: SQLite's read transactions start with a BEGIN of their own
        event.listen(engine, "before_cursor_execute", record)
        try:
            result = stats.compute(session, access.asker(bot.ctx, "U0SENA", CHANNEL),
                                   stats.parse_period("30d", NOW, bot.ctx.settings.timezone), NOW,
                                   bot.ctx.settings.timezone)
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert result.summary.incidents == channels
    return len(seen)


def test_the_statement_count_is_three_whatever_the_number_of_incidents(
        stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot

    def add(count: int) -> None:
        with bot.ctx.db.session() as session:
            for n in range(count):
                opened = NOW - timedelta(days=n % 25, hours=1)
                incident = seed(session, opened, started=opened - timedelta(minutes=9),
                                detected=opened - timedelta(minutes=5), rollback=opened, recovered=opened
                                + timedelta(minutes=n % 7), channel=CHANNEL if n % 2 else RANDOM)
                item(session, incident, "open" if n % 3 else "done", due_at=NOW - timedelta(hours=n))

    bot.slack.add_channel(RANDOM, RANDOM_NAME)
    add(3)
    with bot.ctx.db.session() as session:  # #random is known to be public, as its announcement would have recorded
        session.add(ChannelVisibility(channel_id=RANDOM, is_private=False, checked_at=NOW))
    few = count_statements(bot, channels=3)
    add(57)
    many = count_statements(bot, channels=60)
    # The incidents' rows, the channels' visibility, the action items' aggregate.
    assert few == many == 3


def test_a_private_incident_counts_only_for_the_members_of_its_channel(
        stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    assert bot.driver is not None
    bot.slack.add_channel(RANDOM, RANDOM_NAME)
    bot.slack.add_channel(PRIVATE, PRIVATE_NAME, private=True, members=["U0SENA"])
    with bot.ctx.db.session() as session:
        seed(session, NOW - timedelta(days=2), severity="critical", channel=PRIVATE)
        seed(session, NOW - timedelta(days=3))

    def final(user: str) -> str:
        first = ask(bot, "30d", user=user, channel=RANDOM, channel_name=RANDOM_NAME)
        bot.settle()
        later = bot.slack.responses(bot.driver.last_response_url)  # type: ignore[union-attr]
        assert "checking" in first.lower() and later
        return str(later[-1]["text"])

    assert "• *Incidents*: 1 — HIGH 1" in final("U0LUBIT")  # Slack says Lubit is not in the private channel
    assert "• *Incidents*: 2 — CRITICAL 1 · HIGH 1" in final("U0SENA")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_the_weekly_chart_goes_to_the_askers_dm_once_per_command(stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    assert bot.driver is not None
    with bot.ctx.db.session() as session:
        october(session)
    trigger = bot.driver.new_trigger_id()
    answer = ask(bot, "2025-10", trigger_id=trigger)
    assert "weekly chart is on its way to your direct messages" in answer
    bot.settle()
    assert [c.args["users"] for c in bot.slack.calls("conversations.open")] == ["U0SENA"]
    dm = bot.slack.app_homes.dm_channel("U0SENA")
    files = bot.slack.files()
    assert [(f["filename"], f["channel"]) for f in files] == [("incident_stats_2025-10.png", dm)]
    assert png_size(files[0]["content"]) == (1200, 675)
    shared = bot.slack.messages(dm)
    assert len(shared) == 1 and "Incidents week by week, 2025-10" in shared[0]["text"]
    assert not bot.slack.messages(CHANNEL)  # nothing in the channel the command was typed in

    # The same signed command again (a replay): the same answer, and no second chart.
    assert ask(bot, "2025-10", trigger_id=trigger) == answer
    bot.settle()
    assert len(bot.slack.files()) == 1
    # Asked again (a new command), it is sent again.
    ask(bot, "2025-10")
    bot.settle()
    assert len(bot.slack.files()) == 2


@pytest.mark.serial  # times the answer against a slow Slack
def test_the_numbers_are_answered_without_waiting_for_slack_and_the_chart_follows(
        stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    with bot.ctx.db.session() as session:
        october(session)
    ask(bot, "2025-08")  # no incidents, so no chart; and Bolt's own auth.test is behind us
    bot.slack.set_latency("*", 3.0)
    try:
        started = time.monotonic()
        answer = ask(bot, "2025-10")
        took = time.monotonic() - started
    finally:
        bot.slack.reset_faults()
    assert "• *Incidents*: 7" in answer and took < 1.5, took
    bot.settle()
    assert [f["filename"] for f in bot.slack.files()] == ["incident_stats_2025-10.png"]


def test_a_period_without_incidents_says_so_and_sends_no_chart(stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    answer = ask(bot, "2025-09")
    bot.settle()
    assert "No incident was opened in this period." in answer and "weekly chart" not in answer
    assert not bot.slack.files()


def test_a_chart_that_cannot_be_sent_is_reported_to_the_asker(stats_bot: tuple[LocalBot, ManualClock]) -> None:
    bot, _ = stats_bot
    assert bot.driver is not None
    with bot.ctx.db.session() as session:
        october(session)
    bot.slack.fail("conversations.open", status=200, error="user_disabled")
    answer = ask(bot, "2025-10")
    bot.settle()
    assert "• *Incidents*: 7" in answer  # the numbers were answered in full
    told = [r["text"] for r in bot.slack.responses(bot.driver.last_response_url)]
    assert told == ["⚠️ I couldn't send the weekly chart to your direct messages (user_disabled). "
                    "The numbers above are complete."]
    assert not bot.slack.files()
