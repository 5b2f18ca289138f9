"""Slack canvases in the sandbox: `canvases.create`, `canvases.edit` and `canvases.access.set` as Slack documents
them (docs.slack.dev/reference/methods/canvases.*), and a check of the markdown against the subset the docs list
(docs.slack.dev/surfaces/canvases), so a test fails on markup a canvas would refuse or show broken.

Slack answers content it cannot take with `canvas_creation_failed` / `canvas_editing_failed` and a `detail` such as
"'content' error: line 28: Unsupported block type (List) within block quote"; the sandbox does the same for what
the docs leave out: headings deeper than h3, a list inside a quote, a table over 300 cells or with ragged rows, raw
HTML or autolinks (a `<br>` inside a table cell is the docs' own example), HTML character references, an image
or mention whose target is neither a URL nor `@U…` / `#C…`, and content over 1 MiB. Each canvas keeps every
version of its content and who may read it, for the tests.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]

MAX_MARKDOWN = 1_048_576
TABLE_MAX_CELLS = 300
ACCESS_LEVELS = ("read", "write", "owner")
CONTENT_OPERATIONS = ("insert_after", "insert_before", "insert_at_start", "insert_at_end", "replace", "delete")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,})\s")
_QUOTED_LIST = re.compile(r"^\s*>\s*(?:[-*+]|\d+[.)])\s")
_CODE_SPAN = re.compile(r"(`+).+?\1")
_HTML = re.compile(r"(?<!\\)<(?=[A-Za-z/!?])")
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_REFERENCE = re.compile(r"(?<!\\)&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]*)\)")
_IMAGE_TARGET = re.compile(r"^(?:https?://\S+|@[UW][A-Z0-9]+|#C[A-Z0-9]+)$")


def _cells(line: str) -> int:
    """Cells in a table row: the pipes not escaped by a backslash, less the outer ones."""
    count, backslashes = 0, 0
    for char in line.strip():
        if char == "|" and backslashes % 2 == 0:
            count += 1
        backslashes = backslashes + 1 if char == "\\" else 0
    return max(count - 1, 1)


def markdown_problems(markdown: str) -> list[tuple[int, str]]:
    """(line number, problem) for each piece of markup outside the documented canvas subset."""
    problems: list[tuple[int, str]] = []
    if len(markdown) > MAX_MARKDOWN:
        problems.append((0, f"Content exceeds {MAX_MARKDOWN} characters"))
    lines = markdown.split("\n")
    fence: str | None = None
    table: tuple[int, int, int] | None = None  # first line, header cells, rows so far (header included)
    for number, line in enumerate(lines, start=1):
        opening = _FENCE.match(line)
        if fence is not None or opening is not None:
            if opening is not None:
                fence = None if fence == opening.group(1) else (fence or opening.group(1))
            continue
        in_table = line.startswith("|")
        if in_table:
            if table is None:
                table = (number, _cells(line), 0)
            start, width, rows = table
            is_separator = number == start + 1
            if not is_separator:
                rows += 1
                if _cells(line) != width:
                    problems.append((number, f"Table row has {_cells(line)} cells, the header {width}"))
                if rows * width > TABLE_MAX_CELLS >= (rows - 1) * width:  # said once, where it is crossed
                    problems.append((start, f"Table exceeds {TABLE_MAX_CELLS} cells"))
            table = (start, width, rows)
        else:
            table = None
        heading = _HEADING.match(line)
        if heading is not None and len(heading.group(1)) > 3:
            problems.append((number, f"Unsupported heading depth ({len(heading.group(1))})"))
        if _QUOTED_LIST.match(line):
            problems.append((number, "Unsupported block type (List) within block quote"))
        text = _CODE_SPAN.sub("", line)
        if in_table:
            text = _BREAK.sub("", text)
        if _HTML.search(text):
            problems.append((number, "Unsupported input: HTML"))
        if _REFERENCE.search(text):
            problems.append((number, "Unsupported input: character reference"))
        for target in _IMAGE.findall(text):
            if not _IMAGE_TARGET.match(target):
                problems.append((number, f"Unsupported image source ({target})"))
    return problems


@dataclass
class Canvas:
    id: str
    title: str | None
    owner: str
    channel_id: str | None  # the channel it is tabbed in, when created with one
    versions: list[str] = field(default_factory=list)  # every content it had, oldest first
    access: dict[str, str] = field(default_factory=dict)  # channel or user id → read | write | owner

    @property
    def markdown(self) -> str:
        return self.versions[-1] if self.versions else ""


class _Refused(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.response: JSONDict = {"ok": False, "error": error, **extra}


def _content(value: Any) -> str:
    """A document_content argument's markdown; JSON text when it came form-encoded."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Refused("invalid_arguments") from None
    if not isinstance(value, dict) or value.get("type") != "markdown" or not isinstance(value.get("markdown"), str):
        raise _Refused("invalid_arguments")
    return str(value["markdown"])


def _id_list(value: Any) -> list[str]:
    """channel_ids / user_ids: a JSON array, or the comma-separated string slack_sdk sends."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Refused("invalid_arguments")
    return [v.strip() for v in value]


class CanvasWorkspace:
    """The workspace's canvases. `free_team` (no standalone canvases), `enabled` (canvases turned off) and
    `granted` (the token has `canvases:write`) set the refusals a real workspace would give."""

    def __init__(self, *, lock: threading.RLock, new_id: Callable[[], str], bot_user_id: str,
                 channel_known: Callable[[str], bool]) -> None:
        self._lock = lock
        self._new_id = new_id
        self._bot_user_id = bot_user_id
        self._channel_known = channel_known
        self._canvases: dict[str, Canvas] = {}
        self.free_team = False
        self.enabled = True
        self.granted = True

    def methods(self) -> dict[str, Callable[[JSONDict], JSONDict]]:
        return {name: self._answering(handler) for name, handler in (
            ("canvases.create", self._create), ("canvases.edit", self._edit),
            ("canvases.access.set", self._access_set),
        )}

    # ---- what tests read ------------------------------------------------------------------------------------

    def all(self) -> list[Canvas]:
        with self._lock:
            return copy.deepcopy(list(self._canvases.values()))

    def get(self, canvas_id: str) -> Canvas | None:
        with self._lock:
            found = self._canvases.get(canvas_id)
            return copy.deepcopy(found)

    def delete(self, canvas_id: str) -> None:
        """Someone removed the canvas in Slack."""
        with self._lock:
            self._canvases.pop(canvas_id, None)

    # ---- the methods ----------------------------------------------------------------------------------------

    def _answering(self, handler: Callable[[JSONDict], JSONDict]) -> Callable[[JSONDict], JSONDict]:
        def answer(p: JSONDict) -> JSONDict:
            if not self.granted:
                return {"ok": False, "error": "missing_scope", "needed": "canvases:write",
                        "provided": "commands,chat:write"}
            if not self.enabled:
                return {"ok": False, "error": "canvas_disabled_user_team"}
            try:
                with self._lock:
                    return handler(p)
            except _Refused as refused:
                return refused.response

        return answer

    def _check(self, markdown: str, error: str) -> None:
        problems = markdown_problems(markdown)
        if problems:
            line, problem = problems[0]
            raise _Refused(error, detail=f"'content' error: line {line}: {problem}")

    def _create(self, p: JSONDict) -> JSONDict:
        title = p.get("title")
        if title is not None and not isinstance(title, str):
            raise _Refused("invalid_arguments")
        channel_id = p.get("channel_id") or None
        if channel_id is not None and not self._channel_known(str(channel_id)):
            raise _Refused("channel_not_found")
        if self.free_team and channel_id is None:
            raise _Refused("free_teams_cannot_create_standalone_canvases")
        markdown = _content(p["document_content"]) if p.get("document_content") is not None else ""
        self._check(markdown, "canvas_creation_failed")
        canvas = Canvas(self._new_id(), title, self._bot_user_id, channel_id, [markdown])
        if channel_id is not None:  # "added to a channel tab with write permissions"
            canvas.access[str(channel_id)] = "write"
        self._canvases[canvas.id] = canvas
        return {"ok": True, "canvas_id": canvas.id}

    def _edit(self, p: JSONDict) -> JSONDict:
        canvas = self._canvases.get(str(p.get("canvas_id") or ""))
        if canvas is None:
            raise _Refused("canvas_not_found")
        if self.free_team and canvas.channel_id is None:
            raise _Refused("free_teams_cannot_edit_standalone_canvases")
        changes = p.get("changes")
        if isinstance(changes, str):
            changes = json.loads(changes)
        # "Only one operation per API call is currently supported."
        if not isinstance(changes, list) or len(changes) != 1 or not isinstance(changes[0], dict):
            raise _Refused("invalid_arguments")
        change = changes[0]
        operation = change.get("operation")
        if operation == "rename":
            canvas.title = _content(change.get("title_content"))
            return {"ok": True}
        if operation not in CONTENT_OPERATIONS:
            raise _Refused("invalid_arguments")
        if change.get("section_id") is not None:
            # The sandbox keeps no sections (nothing here uses canvases.sections.lookup to find one).
            raise _Refused("canvas_editing_failed", detail="section not found")
        if operation in ("insert_after", "insert_before", "delete"):
            raise _Refused("invalid_arguments")  # these need a section_id
        markdown = _content(change.get("document_content"))
        self._check(markdown, "canvas_editing_failed")
        if operation == "insert_at_start":
            markdown = markdown + "\n" + canvas.markdown
        elif operation == "insert_at_end":
            markdown = canvas.markdown + "\n" + markdown
        self._check(markdown, "canvas_editing_failed")
        canvas.versions.append(markdown)
        return {"ok": True}

    def _access_set(self, p: JSONDict) -> JSONDict:
        canvas = self._canvases.get(str(p.get("canvas_id") or ""))
        level = p.get("access_level")
        channels = _id_list(p["channel_ids"]) if p.get("channel_ids") else []
        users = _id_list(p["user_ids"]) if p.get("user_ids") else []
        if level not in ACCESS_LEVELS:
            raise _Refused("invalid_arguments")
        if bool(channels) == bool(users):  # "One of user_ids or channel_ids must be defined, but not both."
            raise _Refused("invalid_parameters")
        if len(channels) > 20 or len(users) > 20 or (level == "owner" and channels):
            raise _Refused("invalid_arguments")
        if canvas is None:
            raise _Refused("canvas_not_found")
        # Only regular channels: a DM or group DM is refused like an unknown one.
        if any(not self._channel_known(c) or not c.startswith(("C", "G")) for c in channels):
            raise _Refused("channel_not_found")
        for entity in channels + users:
            canvas.access[entity] = str(level)
        return {"ok": True}
