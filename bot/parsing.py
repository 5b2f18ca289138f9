"""Parsers for slash-command text. Pure: each input either parses or raises UsageError, never anything else."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.render import slack_unescape
from bot.timefmt import parse_clock_time

SEVERITIES = ("critical", "high", "medium", "low")
INCIDENT_ID_RE = re.compile(r"\bINCIDENT-(\d{8})-(\d{3,6})\b", re.IGNORECASE)
MAX_TITLE = 200
# Cloud Run's rule for a service name: lowercase letters, digits and hyphens, a letter first, at most 63.
SERVICE_NAME_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class UsageError(ValueError):
    """Bad input. `code` picks the localized explanation; `usage` names the subcommand whose form to show."""

    def __init__(self, code: str, usage: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.usage = usage
        self.params = params


@dataclass(frozen=True)
class CommandText:
    sub: str
    rest: str
    incident_id: str | None = None
    raw: str = ""


@dataclass(frozen=True)
class OpenRequest:
    title: str
    severity: str = "high"
    service: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def split_command(text: str) -> CommandText:
    """`[INCIDENT-…] sub rest…` or `sub [INCIDENT-…] rest…` → its parts; `rest` is the user's text, verbatim.

    An incident ID counts only as the first word or as the word right after the subcommand: an ID anywhere else is
    part of the free text (`why same failure as INCIDENT-…`) and neither retargets the command nor is cut out of
    it. `open` names no incident, so its title keeps an ID it starts with. Slack's entities stay encoded here.
    """
    raw = (text or "").replace("\x00", "")
    words = raw.split(None, 1)
    incident_id = _incident_id(words[0]) if words else None
    if incident_id is not None:
        words = words[1].split(None, 1) if len(words) > 1 else []
    sub = words[0].lower() if words else ""
    rest = words[1].strip() if len(words) > 1 else ""
    if incident_id is None and sub != "open":
        head = rest.split(None, 1)
        if head and (named := _incident_id(head[0])) is not None:
            incident_id, rest = named, head[1].strip() if len(head) > 1 else ""
    return CommandText(sub=sub, rest=rest, incident_id=incident_id, raw=raw)


def _incident_id(word: str) -> str | None:
    match = INCIDENT_ID_RE.fullmatch(word)
    return f"INCIDENT-{match.group(1)}-{match.group(2)}" if match else None


def decode(text: str) -> str:
    return slack_unescape(text)


def parse_open(rest: str) -> OpenRequest:
    """`<title> [sev:critical|high|medium|low] [service:<name>]`, options anywhere in the text."""
    severity = "high"
    service: str | None = None
    title_words: list[str] = []
    for word in rest.split(" "):
        lowered = word.lower()
        if lowered.startswith(("sev:", "severity:")):
            value = lowered.split(":", 1)[1].strip()
            if value not in SEVERITIES:
                raise UsageError("bad_severity", "open", value=word.split(":", 1)[1])
            severity = value
        elif lowered.startswith("service:"):
            value = word.split(":", 1)[1].strip()
            if not SERVICE_NAME_RE.fullmatch(value):
                raise UsageError("bad_service", "open", value=value)
            service = value
        else:
            title_words.append(word)
    title = decode(" ".join(w for w in title_words if w).strip())
    if not title:
        raise UsageError("missing_title", "open")
    if len(title) > MAX_TITLE:
        raise UsageError("title_too_long", "open", limit=MAX_TITLE)
    return OpenRequest(title=title, severity=severity, service=service)


# ---- lifecycle: status, severity, role, milestone ------------------------------------------------------------

STATUSES = ("investigating", "identified", "monitoring", "resolved", "cancelled")
CLOSED_STATUSES = ("resolved", "cancelled")
MILESTONE_NAMES = ("deployed", "started", "detected", "rollback", "recovered", "resolved")
MENTION_RE = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|([^>]*))?>$")
# The guide's Korean words (and a few natural English ones) for the default roles and milestones.
ROLE_ALIASES = {
    "배포리더": "lead", "리더": "lead", "deploylead": "lead", "백엔드": "backend", "백엔드엔지니어": "backend",
    "데브옵스": "devops", "devops엔지니어": "devops", "모니터링": "monitoring", "모니터링담당": "monitoring",
    "매니저": "manager", "qa담당자": "qa", "qa담당": "qa",
}
MILESTONE_ALIASES = {
    "배포": "deployed", "발생": "started", "이상발생": "started", "감지": "detected", "롤백": "rollback",
    "롤백결정": "rollback", "복구": "recovered", "롤백완료": "recovered", "해결": "resolved",
}


@dataclass(frozen=True)
class RoleRequest:
    role: str
    user_id: str
    user_name: str | None


@dataclass(frozen=True)
class MilestoneRequest:
    name: str
    time_text: str | None  # None means now; the caller reads it in INCIDENT_TIMEZONE


def _word(text: str) -> str:
    return slack_unescape(text).strip().lower()


def parse_status(rest: str) -> str:
    value = _word(rest)
    if not value:
        raise UsageError("missing_status", "status")
    if value not in STATUSES:
        raise UsageError("bad_status", "status", value=decode(rest.strip())[:40])
    return value


def parse_severity(rest: str) -> str:
    value = _word(rest)
    if value.startswith(("sev:", "severity:")):
        value = value.split(":", 1)[1].strip()
    if not value:
        raise UsageError("missing_severity", "severity")
    if value not in SEVERITIES:
        raise UsageError("bad_severity", "severity", value=decode(rest.strip())[:40])
    return value


def parse_mention(token: str) -> tuple[str, str | None] | None:
    """`<@U123|name>` → (`U123`, `name`); `<@U123>` → (`U123`, None)."""
    match = MENTION_RE.match(token.strip())
    if not match:
        return None
    name = (match.group(2) or "").strip() or None
    return match.group(1), name


def _role_key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", text.lower())


def parse_role(rest: str, roles: tuple[str, ...]) -> RoleRequest:
    """`<role> @user` (either order). The role is one of `roles`, or the guide's Korean name for one of them."""
    words = rest.split()
    mentions = [m for m in (parse_mention(w) for w in words) if m is not None]
    # `@name` as plain text is a mention Slack could not resolve (the person was not picked from the list).
    loose = [w for w in words if w.startswith("@") and parse_mention(w) is None]
    others = [w for w in words if parse_mention(w) is None and w not in loose]
    role_text = decode(" ".join(others)).strip()
    if not role_text:
        raise UsageError("missing_role", "role", roles=list(roles))
    key = _role_key(role_text)
    by_key = {_role_key(r): r for r in roles}
    role = by_key.get(key)
    if role is None and ROLE_ALIASES.get(key) in roles:
        role = ROLE_ALIASES[key]
    if role is None:
        raise UsageError("bad_role", "role", value=role_text[:40], roles=list(roles))
    if not mentions and loose:
        raise UsageError("unknown_user", "role", value=decode(loose[0])[:40])
    if not mentions:
        raise UsageError("missing_user", "role", roles=list(roles))
    if len(mentions) > 1:
        raise UsageError("one_user", "role", roles=list(roles))
    user_id, name = mentions[0]
    return RoleRequest(role=role, user_id=user_id, user_name=name)


def parse_milestone_name(text: str) -> str:
    value = _role_key(_word(text))
    name = value if value in MILESTONE_NAMES else MILESTONE_ALIASES.get(value)
    if name is None:
        raise UsageError("bad_milestone", "milestone", value=decode(text.strip())[:40])
    return name


def parse_milestone(rest: str) -> MilestoneRequest:
    """`<milestone> [HH:MM | YYYY-MM-DD HH:MM]`; the time is checked by `milestone_time`."""
    name_text, _, time_text = decode(rest).strip().partition(" ")
    if not name_text:
        raise UsageError("missing_milestone", "milestone")
    name = parse_milestone_name(name_text)
    cleaned = " ".join(time_text.split())
    return MilestoneRequest(name=name, time_text=cleaned or None)


def milestone_time(text: str | None, now: datetime, zone: ZoneInfo) -> datetime:
    """None → now; `HH:MM` → its latest occurrence not in the future; `YYYY-MM-DD HH:MM` → that local time.

    A moment in the future is refused: a milestone records something that already happened.
    """
    if text is None:
        return now
    if len(text) > 40:
        raise UsageError("bad_time", "milestone", value=text[:40])
    try:
        at = parse_clock_time(text, now, zone)
    except (ValueError, OverflowError):
        raise UsageError("bad_time", "milestone", value=text) from None
    if at > now:
        raise UsageError("future_time", "milestone", value=text)
    return at
