"""Parsing and formatting of times and durations, shared by settings, commands and templates."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_DURATION_RE = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1h30m`, `2d` → timedelta. Raises ValueError on anything else."""
    cleaned = text.strip().lower()
    match = _DURATION_RE.match(cleaned)
    if not cleaned or not match or not any(match.groupdict().values()):
        raise ValueError(f"not a duration: {text!r} (use forms like 90s, 30m, 2h, 1h30m)")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    return timedelta(
        days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0)
    )


def total_minutes(delta: timedelta) -> int:
    """Whole minutes of a duration; days included (never `timedelta.seconds`)."""
    return int(delta.total_seconds() // 60)


def format_duration(delta: timedelta, locale: str) -> str:
    """`20분`, `1시간 5분`, `2일 3시간` / `20 min`, `1 h 5 min`, `2 d 3 h`; seconds only under a minute."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = {"ko": ("일", "시간", "분", "초"), "en": (" d", " h", " min", " s")}[locale]
    parts: list[str] = []
    if days:
        parts.append(f"{days}{units[0]}")
    if hours:
        parts.append(f"{hours}{units[1]}")
    if minutes or (not parts and not secs):
        parts.append(f"{minutes}{units[2]}")
    if secs and not parts:
        parts.append(f"{secs}{units[3]}")
    return sign + " ".join(parts)


def ensure_utc(value: datetime) -> datetime:
    """Databases without time zones (SQLite) hand back naive datetimes that we stored as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def slack_ts_to_datetime(ts: str) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)


class TimeFormatter:
    """Formats UTC instants in the incident's display zone, adding the date when a span crosses days."""

    def __init__(self, zone: ZoneInfo, locale: str) -> None:
        self.zone = zone
        self.locale = locale
        self.zone_label = "UTC" if zone.key in ("UTC", "Etc/UTC") else zone.key

    def local(self, value: datetime) -> datetime:
        return ensure_utc(value).astimezone(self.zone)

    def local_date(self, value: datetime) -> date:
        return self.local(value).date()

    def spans_days(self, values: list[datetime | None]) -> bool:
        return len({self.local_date(v) for v in values if v is not None}) > 1

    def time(self, value: datetime | None, *, with_date: bool = False, with_zone: bool = True) -> str:
        if value is None:
            return ""
        local = self.local(value)
        text = local.strftime("%Y-%m-%d %H:%M") if with_date else local.strftime("%H:%M")
        if with_zone:
            text += f" {self.abbreviation(local)}"
        return text

    def abbreviation(self, local: datetime) -> str:
        if self.zone_label == "UTC":
            return "UTC"
        name = local.tzname() or self.zone_label
        # Zones without a letter abbreviation report "+09" style names; the IANA key reads better.
        return self.zone_label if name.startswith(("+", "-")) else name

    def duration(self, delta: timedelta | None) -> str:
        return "" if delta is None else format_duration(delta, self.locale)


def parse_clock_time(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """`HH:MM` → its latest occurrence not in the future; `YYYY-MM-DD HH:MM` → that local time. Returns UTC."""
    cleaned = " ".join(text.split())
    local_now = ensure_utc(now).astimezone(zone)
    full = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})", cleaned)
    if full:
        y, mo, d, h, mi = (int(g) for g in full.groups())
        local = datetime(y, mo, d, h, mi, tzinfo=zone)
        return local.astimezone(UTC)
    short = re.fullmatch(r"(\d{1,2}):(\d{2})", cleaned)
    if not short:
        raise ValueError(f"not a time: {text!r} (use HH:MM or YYYY-MM-DD HH:MM)")
    h, mi = int(short.group(1)), int(short.group(2))
    if h > 23 or mi > 59:
        raise ValueError(f"not a time: {text!r}")
    # Compared as UTC instants: aware datetimes sharing a tzinfo compare by wall clock, which is wrong in the
    # repeated hour of a DST fall-back. Both folds of today and yesterday are candidates.
    now_utc = ensure_utc(now)
    candidates = [
        datetime(day.year, day.month, day.day, h, mi, tzinfo=zone, fold=fold).astimezone(UTC)
        for day in (local_now.date(), local_now.date() - timedelta(days=1))
        for fold in (0, 1)
    ]
    return max(c for c in candidates if c <= now_utc)


def parse_future_clock_time(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """For scheduling (the meeting): `HH:MM` is its next occurrence not in the past."""
    cleaned = " ".join(text.split())
    if re.fullmatch(r"\d{1,2}:\d{2}", cleaned):
        past = parse_clock_time(cleaned, now, zone)
        return past if past >= ensure_utc(now) else _add_local_day(past, zone)
    return parse_clock_time(cleaned, now, zone)


def _add_local_day(value: datetime, zone: ZoneInfo) -> datetime:
    local = value.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), local.time(), tzinfo=zone).astimezone(UTC)
