"""Parsers for slash-command text. Pure: each input either parses or raises UsageError, never anything else."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.render import slack_unescape

SEVERITIES = ("critical", "high", "medium", "low")
INCIDENT_ID_RE = re.compile(r"\bINCIDENT-(\d{8})-(\d{3,6})\b", re.IGNORECASE)
USER_RE = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
MAX_TITLE = 200


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
    """`[INCIDENT-…] sub rest…` → its parts. Slack's entities are decoded; mentions stay `<@U…>` tokens."""
    raw = (text or "").replace("\x00", "")
    cleaned = raw.strip()
    incident_id = None
    match = INCIDENT_ID_RE.search(cleaned)
    if match:
        incident_id = f"INCIDENT-{match.group(1)}-{match.group(2)}"
        cleaned = (cleaned[: match.start()] + cleaned[match.end():]).strip()
    sub, _, rest = cleaned.partition(" ")
    if "\n" in sub:
        sub, _, more = sub.partition("\n")
        rest = f"{more} {rest}".strip()
    return CommandText(sub=sub.lower(), rest=rest.strip(), incident_id=incident_id, raw=raw)


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
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", value):
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


def parse_user(token: str) -> str | None:
    """`<@U123|name>` (Slack's escaped form) → `U123`."""
    match = USER_RE.match(token.strip())
    return match.group(1) if match else None
