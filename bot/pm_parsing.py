"""Parsers for `/postmortem` content commands. Pure: any text either parses or raises UsageError, nothing else.

Text arrives as Slack sends it with `should_escape`: entities (&amp; &lt; &gt;) and markup tokens (<@U1|name>,
<#C1|name>, <https://…|label>). Stored text is what the person meant, with mentions turned into `@name`, so a
report pasted into a wiki reads naturally and can never mention anyone when it is posted back to Slack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.parsing import UsageError
from bot.render import slack_unescape

PRIORITIES = ("P0", "P1", "P2", "P3")
IMPACT_LEVELS = ("critical", "high", "medium", "low")
IMPACT_FIELDS = ("users", "error-rate", "p95", "availability")
FIELD_ALIASES = {
    "users": "users", "user": "users", "사용자": "users",
    "error-rate": "error-rate", "error_rate": "error-rate", "errors": "error-rate", "에러율": "error-rate",
    "p95": "p95", "latency": "p95", "응답시간": "p95",
    "availability": "availability", "가용성": "availability",
}

MAX_TEXT = 3000  # Slack's plain_text_input limit, so everything stays editable in the modal
MAX_NOTE = 500
MAX_TASK = 300
MAX_OWNER = 31  # owner_id is String(32); a free-text owner is stored as "@name"
MAX_DUE_DAYS = 3 * 366
MAX_WHYS = 50

_MARKUP = re.compile(r"<([^<>\n]{1,500})>")
_USER = re.compile(r"^<@([UW][A-Z0-9]{1,20})(?:\|([^<>]{0,80}))?>$")
_SUBTEAM = re.compile(r"^<!subteam\^[A-Z0-9]{1,20}(?:\|@?([^<>]{1,80}))?>$")
_PLAIN_OWNER = re.compile(r"^@([\w.\-가-힣]{1,30})$")
_ARROW = re.compile(r"\s*(?:→|->|⟶|=>)\s*")
_HEADLINE = re.compile(r"\s*(?:→|->|⟶|=>)\s*|\s+[—–]\s+")
_QUOTES = {'"': '"', "“": "”", "„": "“", "'": "'", "‘": "’"}


# --------------------------------------------------------------------------------------------- text


def _markup_to_text(match: re.Match[str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return f"@{label or target[1:]}"
    if target.startswith("#"):
        return f"#{label or target[1:]}"
    if target.startswith("!subteam^"):
        return label if label.startswith("@") else f"@{label or 'group'}"
    if target.startswith("!"):
        return f"@{label or target[1:].split('^')[0]}"
    if re.match(r"^(?:https?|mailto):", target):
        return f"{label} ({target})" if label and label != target else target
    return match.group(0)


def plain_text(text: str) -> str:
    """Slack's escaped markup → what the person typed, with mentions as `@name` (never a live mention)."""
    return slack_unescape(_MARKUP.sub(_markup_to_text, text.replace("\x00", ""))).strip()


def parse_text(rest: str, usage: str, *, limit: int = MAX_TEXT) -> str:
    text = plain_text(rest)
    if not text:
        raise UsageError("missing_text", usage)
    if len(text) > limit:
        raise UsageError("text_too_long", usage, limit=limit, length=len(text))
    return text


def parse_note(rest: str, usage: str) -> str:
    """A lesson or prevention item: one line (the modal edits them one per line)."""
    text = " ".join(parse_text(rest, usage, limit=MAX_NOTE).split())
    return text


def parse_lines(text: str, usage: str, *, limit: int = MAX_NOTE, max_items: int = 50) -> list[str]:
    """Modal fields with one item per line; blank lines are dropped."""
    lines = [" ".join(line.split()) for line in (text or "").replace("\x00", "").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > max_items:
        raise UsageError("too_many_items", usage, limit=max_items)
    for number, line in enumerate(lines, 1):
        if len(line) > limit:
            raise UsageError("line_too_long", usage, line=number, limit=limit)
    return lines


def no_arguments(rest: str, usage: str) -> None:
    if rest.strip():
        raise UsageError("unexpected_text", usage, value=plain_text(rest)[:80])


# --------------------------------------------------------------------------------------------- whys


@dataclass(frozen=True)
class WhyCommand:
    """`why <text>` appends; `why 3 <text>` replaces number 3; `why 3 -` removes it."""

    position: int | None
    text: str | None

    @property
    def remove(self) -> bool:
        return self.position is not None and self.text is None


def parse_why(rest: str) -> WhyCommand:
    cleaned = rest.strip()
    match = re.match(r"^#?(\d{1,6})(?:[.)])?(?:\s+(.*))?$", cleaned, re.DOTALL)
    if match:
        position = int(match.group(1))
        body = (match.group(2) or "").strip()
        if position < 1 or position > MAX_WHYS:
            raise UsageError("bad_why_number", "why", value=match.group(1), limit=MAX_WHYS)
        if not body:
            raise UsageError("missing_why_text", "why", position=position)
        if body in ("-", "—", "–", "delete", "remove", "삭제"):
            return WhyCommand(position, None)
        return WhyCommand(position, parse_text(body, "why"))
    return WhyCommand(None, parse_text(cleaned, "why"))


def why_parts(text: str) -> tuple[str | None, str | None]:
    """One stored why → (question, answer) for the guide's format `1. **question**\\n   - answer`.

    `question → answer` (or `->`) splits explicitly; otherwise a question mark followed by more text splits
    after the mark; a text ending in `?` is a question still unanswered; anything else is the answer alone.
    """
    text = " ".join((text or "").split())
    parts = _ARROW.split(text, maxsplit=1)
    if len(parts) == 2:
        question, answer = parts[0].strip(), parts[1].strip()
        if question and question[-1] not in "?？":
            question += "?"
        return (question or None), (answer or None)
    mark = re.search(r"[?？]\s+(?=\S)", text)
    if mark:
        return text[: mark.start() + 1].strip(), text[mark.end():].strip()
    if text.endswith(("?", "？")):
        return text, None
    return None, (text or None)


def headline_parts(text: str) -> tuple[str, str | None]:
    """A lesson `headline → detail` (or `headline — detail`) → the guide's `1. **headline**\\n   - detail`."""
    parts = _HEADLINE.split(" ".join((text or "").split()), maxsplit=1)
    if len(parts) == 2 and parts[0].strip() and parts[1].strip():
        return parts[0].strip(), parts[1].strip()
    return " ".join((text or "").split()), None


# --------------------------------------------------------------------------------------------- action items


@dataclass(frozen=True)
class ActionRequest:
    priority: str
    task: str
    owner_id: str | None = None  # a Slack user id, or "@name" for a team or person outside Slack
    owner_name: str | None = None
    due_at: datetime | None = None
    impact: str | None = None


def _tokens(text: str) -> list[tuple[str, bool]]:
    """Splits on whitespace outside quotes; (token, was_quoted). Raises UsageError on an unclosed quote."""
    tokens: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char in _QUOTES:
            close = _QUOTES[char]
            end = text.find(close, i + 1)
            if end < 0 and char in "“”„":
                end = min((p for p in (text.find(q, i + 1) for q in '"”“') if p >= 0), default=-1)
            if end < 0:
                raise UsageError("unclosed_quote", "action")
            tokens.append((text[i + 1: end], True))
            i = end + 1
            continue
        start = i
        while i < n and not text[i].isspace():
            i += 1
        tokens.append((text[start:i], False))
    return tokens


def parse_due(value: str, now: datetime, zone: ZoneInfo) -> datetime:
    """`2d`/`1w` count from now; `YYYY-MM-DD` is that day in INCIDENT_TIMEZONE, due by its end (23:59:59)."""
    cleaned = value.strip().lower()
    relative = re.fullmatch(r"(\d{1,4})\s*(d|w|일|주)", cleaned)
    if relative:
        amount = int(relative.group(1))
        days = amount * (7 if relative.group(2) in ("w", "주") else 1)
        if amount < 1 or days > MAX_DUE_DAYS:
            raise UsageError("bad_due", "action", value=value, limit=MAX_DUE_DAYS)
        return now.astimezone(UTC) + timedelta(days=days)
    absolute = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", cleaned)
    if not absolute:
        raise UsageError("bad_due", "action", value=value, limit=MAX_DUE_DAYS)
    try:
        day = date(int(absolute.group(1)), int(absolute.group(2)), int(absolute.group(3)))
    except ValueError:
        raise UsageError("bad_due", "action", value=value, limit=MAX_DUE_DAYS) from None
    today = now.astimezone(zone).date()
    if day < today:
        raise UsageError("past_due", "action", value=value)
    if (day - today).days > MAX_DUE_DAYS:
        raise UsageError("bad_due", "action", value=value, limit=MAX_DUE_DAYS)
    return datetime.combine(day, time(23, 59, 59), tzinfo=zone).astimezone(UTC)


def _owner(token: str) -> tuple[str, str | None] | None:
    """(owner_id, display name) of an owner token, or None when the token is not an owner."""
    user = _USER.match(token)
    if user:
        name = (user.group(2) or "").strip() or None
        return user.group(1), name
    team = _SUBTEAM.match(token)
    if team:
        name = (team.group(1) or "team").strip()[:MAX_OWNER - 1]
        return f"@{name}", name
    plain = _PLAIN_OWNER.match(token)
    if plain:
        return f"@{plain.group(1)}", plain.group(1)
    return None


def parse_action(rest: str, now: datetime, zone: ZoneInfo) -> ActionRequest:
    """`P0|P1|P2|P3 "<task>" [@owner] [due:2d|1w|YYYY-MM-DD] [impact:critical|high|medium|low]`.

    Options may come in any order after the priority. Without quotes, the words that are not options form the
    task; with quotes, the quoted text is the task exactly.
    """
    tokens = _tokens(rest.replace("\x00", ""))
    if not tokens:
        raise UsageError("missing_priority", "action")
    first, first_quoted = tokens[0]
    priority = first.upper()
    if first_quoted or priority not in PRIORITIES:
        raise UsageError("bad_priority", "action", value=plain_text(first)[:40])
    task_parts: list[str] = []
    quoted_task: str | None = None
    owner: tuple[str, str | None] | None = None
    due_at: datetime | None = None
    impact: str | None = None
    for token, quoted in tokens[1:]:
        if quoted:
            if quoted_task is not None:
                raise UsageError("duplicate_option", "action", name="task")
            quoted_task = token
            continue
        lowered = token.lower()
        if lowered.startswith(("due:", "기한:")):
            if due_at is not None:
                raise UsageError("duplicate_option", "action", name="due")
            due_at = parse_due(token.split(":", 1)[1], now, zone)
        elif lowered.startswith(("impact:", "영향도:")):
            if impact is not None:
                raise UsageError("duplicate_option", "action", name="impact")
            value = lowered.split(":", 1)[1]
            if value not in IMPACT_LEVELS:
                raise UsageError("bad_impact_level", "action", value=plain_text(token.split(":", 1)[1])[:40])
            impact = value
        elif (found := _owner(token)) is not None:
            if owner is not None:
                raise UsageError("duplicate_option", "action", name="owner")
            owner = found
        elif token.startswith("<@") or token.startswith("<!"):
            raise UsageError("bad_owner", "action", value=plain_text(token)[:40])
        else:
            task_parts.append(token)
    if quoted_task is not None and task_parts:
        raise UsageError("text_outside_quotes", "action", value=plain_text(" ".join(task_parts))[:80])
    task = plain_text(quoted_task if quoted_task is not None else " ".join(task_parts))
    task = " ".join(task.split())
    if not task:
        raise UsageError("missing_task", "action")
    if len(task) > MAX_TASK:
        raise UsageError("text_too_long", "action", limit=MAX_TASK, length=len(task))
    owner_id, owner_name = owner if owner else (None, None)
    if owner_name is not None:
        owner_name = plain_text(owner_name)[:80] or None
    return ActionRequest(priority, task, owner_id, owner_name, due_at, impact)


# --------------------------------------------------------------------------------------------- impact


@dataclass(frozen=True)
class Impact:
    """A parsed impact value. `before` is set for a change (`0.5%→9%`); `share` is users' share of all users."""

    field: str
    after: float
    before: float | None = None
    approx: bool = False
    share: float | None = None

    @property
    def unit(self) -> str:
        return {"users": "", "error-rate": "%", "p95": "ms", "availability": "%"}[self.field]

    @property
    def ratio(self) -> float | None:
        """How many times the value grew (after / before), when both are known and before is not zero."""
        if self.before is None or self.before <= 0:
            return None
        return self.after / self.before

    def canonical(self) -> str:
        """The stored form; parse_impact_value reads it back unchanged."""
        if self.field == "users":
            text = ("~" if self.approx else "") + number(self.after)
            return f"{text} ({number(self.share)}%)" if self.share is not None else text
        value = f"{number(self.after)}{self.unit}"
        return f"{number(self.before)}{self.unit}→{value}" if self.before is not None else value


def number(value: float | None) -> str:
    """Plain decimal without float noise: 9.0 → 9, 0.50 → 0.5, 2.666… → 2.67."""
    if value is None:
        return ""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _float(text: str, field: str, raw: str) -> float:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        raise UsageError("bad_impact_value", "impact", field=field, value=raw[:80]) from None
    if not math.isfinite(value) or value < 0:
        raise UsageError("bad_impact_value", "impact", field=field, value=raw[:80])
    return value


_NUM = r"\d{1,12}(?:\.\d{1,6})?"


def _percent(text: str, field: str, raw: str) -> float:
    match = re.fullmatch(rf"({_NUM})\s*%", text.strip())
    if not match:
        raise UsageError("bad_impact_value", "impact", field=field, value=raw[:80])
    value = _float(match.group(1), field, raw)
    if value > 100:
        raise UsageError("bad_impact_value", "impact", field=field, value=raw[:80])
    return value


def _millis(text: str, field: str, raw: str) -> float:
    match = re.fullmatch(rf"({_NUM})\s*(ms|s|초)?", text.strip().lower())
    if not match:
        raise UsageError("bad_impact_value", "impact", field=field, value=raw[:80])
    value = _float(match.group(1), field, raw) * (1 if match.group(2) in (None, "ms") else 1000)
    if value > 3_600_000:
        raise UsageError("bad_impact_value", "impact", field=field, value=raw[:80])
    return value


def parse_impact_value(field: str, value: str) -> Impact:
    """Validates one field's value form: users `500`, `~500 (1%)`; error-rate `0.5%→9%` or `9%`;
    p95 `150ms→450ms`, `450ms`, `1.2s`; availability `90.5%` (or a change `99.9%→90.5%`)."""
    raw = plain_text(value)
    text = " ".join(raw.split())
    if not text:
        raise UsageError("missing_impact_value", "impact", field=field)
    if field == "users":
        # The guide writes "약 500명 (전체의 1%)"; the report's English reads "about 500 (1% of all users)".
        match = re.fullmatch(
            r"(~|약\s*|about\s*|approx\.?\s*)?(\d{1,3}(?:,\d{3}){1,4}|\d{1,15})\s*(?:명|users?)?"
            rf"(?:\s*\(?\s*(?:전체의\s*)?({_NUM})\s*%(?:\s*of\s+(?:all\s+)?users)?\s*\)?)?",
            text, re.IGNORECASE,
        )
        if not match:
            raise UsageError("bad_impact_value", "impact", field=field, value=text[:80])
        share = _float(match.group(3), field, text) if match.group(3) else None
        if share is not None and share > 100:
            raise UsageError("bad_impact_value", "impact", field=field, value=text[:80])
        return Impact(field, _float(match.group(2), field, text), approx=bool(match.group(1)), share=share)
    if field not in ("error-rate", "p95", "availability"):
        raise UsageError("bad_impact_field", "impact", value=field[:40])
    parse = _millis if field == "p95" else _percent
    sides = _ARROW.split(text)
    if len(sides) == 1:
        return Impact(field, parse(sides[0], field, text))
    if len(sides) != 2 or not sides[0] or not sides[1]:
        raise UsageError("bad_impact_value", "impact", field=field, value=text[:80])
    return Impact(field, parse(sides[1], field, text), before=parse(sides[0], field, text))


def parse_impact(rest: str) -> Impact:
    """`<field> <value>`: users, error-rate, p95, availability (Korean aliases accepted)."""
    cleaned = rest.strip()
    if not cleaned:
        raise UsageError("missing_impact_field", "impact")
    name, _, value = cleaned.partition(" ")
    if not value.strip():
        name, value = _split_glued(name)
    field = FIELD_ALIASES.get(name.lower())
    if field is None:
        raise UsageError("bad_impact_field", "impact", value=plain_text(name)[:40])
    return parse_impact_value(field, value)


def _split_glued(token: str) -> tuple[str, str]:
    """`p95=450ms` / `users:500` typed without a space."""
    for separator in ("=", ":"):
        if separator in token:
            name, _, value = token.partition(separator)
            return name, value
    return token, ""


def read_impact(field: str, stored: str) -> Impact | None:
    """A stored value back as an Impact; None when it is not in a form we write (shown as text instead)."""
    try:
        return parse_impact_value(field, stored)
    except UsageError:
        return None
