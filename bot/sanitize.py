"""Text from outside (Slack, Google Cloud) is cleaned the same way at every way in, on every database."""

from __future__ import annotations

import re

# C0 controls except tab and newline, and DEL. PostgreSQL refuses NUL in text; the others have no business in a
# timeline or a report and can corrupt what a terminal or an editor shows.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(value: str) -> str:
    """Removes NUL and the other C0 control characters but tab and newline; a carriage return becomes newline."""
    if not value:
        return value
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", value)


def clean_optional(value: str | None) -> str | None:
    return None if value is None else clean_text(value)
