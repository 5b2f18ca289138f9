"""Reading the times people type (HH:MM = its latest occurrence not in the future) and writing durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.timefmt import format_duration, parse_clock_time, total_minutes

UTC_ZONE = ZoneInfo("UTC")
SEOUL = ZoneInfo("Asia/Seoul")  # no DST
NEW_YORK = ZoneInfo("America/New_York")  # DST: 2025-03-09 02:00 → 03:00, 2025-11-02 02:00 → 01:00


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("14:35", utc(2025, 10, 22, 14, 40), utc(2025, 10, 22, 14, 35)),
        ("14:40", utc(2025, 10, 22, 14, 40), utc(2025, 10, 22, 14, 40)),  # now itself is not the future
        ("14:41", utc(2025, 10, 22, 14, 40), utc(2025, 10, 21, 14, 41)),  # still to come today → yesterday
        ("23:50", utc(2025, 10, 23, 0, 10), utc(2025, 10, 22, 23, 50)),  # across midnight
        ("0:05", utc(2025, 10, 23, 0, 10), utc(2025, 10, 23, 0, 5)),
        ("  14:35 ", utc(2025, 10, 22, 14, 40), utc(2025, 10, 22, 14, 35)),
    ],
)
def test_hh_mm_in_utc(text: str, now: datetime, expected: datetime) -> None:
    assert parse_clock_time(text, now, UTC_ZONE) == expected


def test_hh_mm_is_read_in_the_display_zone() -> None:
    # 23:30 KST on the 22nd is 14:30 UTC; at 14:40 UTC (23:40 KST) "23:30" is ten minutes ago.
    assert parse_clock_time("23:30", utc(2025, 10, 22, 14, 40), SEOUL) == utc(2025, 10, 22, 14, 30)
    # At 00:10 KST on the 23rd, "23:30" is yesterday evening local time.
    assert parse_clock_time("23:30", utc(2025, 10, 22, 15, 10), SEOUL) == utc(2025, 10, 22, 14, 30)
    # "09:00" KST at 08:00 KST is still to come: the previous local day's 09:00.
    assert parse_clock_time("09:00", utc(2025, 10, 22, 23, 0), SEOUL) == utc(2025, 10, 22, 0, 0)


def test_full_date_form() -> None:
    now = utc(2025, 10, 22, 14, 40)
    assert parse_clock_time("2025-10-20 09:15", now, UTC_ZONE) == utc(2025, 10, 20, 9, 15)
    assert parse_clock_time("2025-10-20 09:15", now, SEOUL) == utc(2025, 10, 20, 0, 15)
    assert parse_clock_time("2025-10-20T09:15", now, UTC_ZONE) == utc(2025, 10, 20, 9, 15)
    # The full form is taken as written, even in the future; callers decide whether that is allowed.
    assert parse_clock_time("2025-10-23 09:15", now, UTC_ZONE) == utc(2025, 10, 23, 9, 15)


def test_dst_zone_summer_and_winter_offsets() -> None:
    # 10:00 EDT (UTC-4) in July, 10:00 EST (UTC-5) in December.
    assert parse_clock_time("10:00", utc(2025, 7, 1, 15, 0), NEW_YORK) == utc(2025, 7, 1, 14, 0)
    assert parse_clock_time("10:00", utc(2025, 12, 1, 16, 0), NEW_YORK) == utc(2025, 12, 1, 15, 0)


def test_dst_spring_forward_yesterday_has_the_other_offset() -> None:
    # 2025-03-09 07:30 EDT = 11:30 UTC. "08:00" is still to come, so it is 08:00 EST on the 8th = 13:00 UTC.
    assert parse_clock_time("08:00", utc(2025, 3, 9, 11, 30), NEW_YORK) == utc(2025, 3, 8, 13, 0)
    # "01:30" happened before the jump, at EST.
    assert parse_clock_time("01:30", utc(2025, 3, 9, 11, 30), NEW_YORK) == utc(2025, 3, 9, 6, 30)


def test_dst_fall_back_repeated_hour_takes_the_latest_past_occurrence() -> None:
    # 2025-11-02: 01:00-02:00 happens twice (EDT 05:00-06:00 UTC, then EST 06:00-07:00 UTC).
    # At 06:20 UTC (01:20 EST, second pass), "01:50" last happened at 01:50 EDT = 05:50 UTC, not yesterday.
    assert parse_clock_time("01:50", utc(2025, 11, 2, 6, 20), NEW_YORK) == utc(2025, 11, 2, 5, 50)
    # At 06:55 UTC (01:55 EST), the second 01:50 (EST) has just happened.
    assert parse_clock_time("01:50", utc(2025, 11, 2, 6, 55), NEW_YORK) == utc(2025, 11, 2, 6, 50)


@pytest.mark.parametrize("text", ["", "14", "1435", "24:00", "14:60", "14:5", "2025-13-01 10:00",
                                  "2025-02-30 10:00", "yesterday", "14:35 UTC", "-1:00"])
def test_bad_times_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_clock_time(text, utc(2025, 10, 22, 14, 40), UTC_ZONE)


@pytest.mark.parametrize(
    ("delta", "ko", "en"),
    [
        (timedelta(minutes=20), "20분", "20 min"),
        (timedelta(minutes=3), "3분", "3 min"),
        (timedelta(hours=2), "2시간", "2 h"),
        (timedelta(hours=1, minutes=5), "1시간 5분", "1 h 5 min"),
        (timedelta(days=2, hours=3), "2일 3시간", "2 d 3 h"),
        (timedelta(days=1, minutes=1), "1일 1분", "1 d 1 min"),
        (timedelta(seconds=45), "45초", "45 s"),
        (timedelta(0), "0분", "0 min"),
        (timedelta(minutes=3, seconds=59), "3분", "3 min"),  # whole minutes, never rounded up
        (timedelta(minutes=-5), "-5분", "-5 min"),
    ],
)
def test_format_duration(delta: timedelta, ko: str, en: str) -> None:
    assert format_duration(delta, "ko") == ko
    assert format_duration(delta, "en") == en


def test_total_minutes_counts_days() -> None:
    assert total_minutes(timedelta(days=2, minutes=5)) == 2 * 24 * 60 + 5
