"""The post-mortem report as a Slack canvas: the Markdown document, converted to the subset canvases accept.

Slack documents what `document_content` markdown may hold (docs.slack.dev/reference/methods/canvases.create and
docs.slack.dev/surfaces/canvases): headings h1-h3, bold, italic, strikethrough, code spans and blocks, bulleted,
ordered and checklist items, links, quote blocks, dividers, markdown tables of at most 300 cells (whose cells may
hold `<br>` line breaks, lists and checkboxes), images by URL, and mentions written `![](@U…)` / `![](#C…)`; at most
1 MiB in all. Nothing else is listed, HTML included. The report (bot/report.py) is written for any Markdown
reader, so this keeps what the canvas supports and converts the rest:

- headings deeper than `###` become bold lines;
- a table over 300 cells is split into consecutive tables of at most 300 cells, each under the same header row;
- an action item's status cell (`[  ]`, `[~] …`, `[x] …`) becomes a checkbox, as the docs allow in a cell;
- an image whose target is not a URL (the evidence chart, uploaded beside the .md under that name) becomes a line
  naming the file;
- the report's HTML escaping goes: `&lt;` and `&amp;` become the characters typed, with a backslash escape only
  where the character would open markup (`\\<b`, `\\&amp;`); table escapes (`\\|`, `\\\\`) stay, being GFM's own;
- Slack's tokens in what people wrote (`<@U…|name>`, `<#C…|name>`, `<!here>`, `<https://…|label>`) become plain
  `@name`, `#name`, `@here` and `[label](https://…)`: a canvas mention notifies the person, and user text never
  mentions anyone;
- past 1 MiB, the longest table keeps its first rows and says how many more the .md file holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

CANVAS_MAX_CHARS = 1_048_576  # "The markdown content is limited to 1 MiB (1,048,576 characters)."
TABLE_MAX_CELLS = 300  # "Canvas tables have a limit of 300 cells per table"
MAX_HEADING_DEPTH = 3

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(rf"^(#{{{MAX_HEADING_DEPTH + 1},}})\s+(.*?)\s*#*\s*$")
_IMAGE_LINE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]*)\)\s*$")
_URL = re.compile(r"^https?://", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# What the report's HTML escaping left in text people wrote: Slack's own tokens (`&lt;@U1|name>`, `&lt;https://…>`;
# in a table cell their `|` is escaped) and the two entities markdown_escape writes.
_ESCAPED = re.compile(
    r"&lt;(?P<target>[@#!][^|>\s\\]*|(?:https?|mailto):[^|>\s\\]+)(?:\\?\|(?P<label>[^>\n]*))?>"
    r"|&(?P<entity>lt|amp);"
)
# A `<` before these would open an HTML tag or an autolink in Markdown.
_OPENS_MARKUP = re.compile(r"[A-Za-z/!?]")
_STATUS_CELL = re.compile(r"^\[(?P<mark>[ x~])\s*\]\s*(?P<label>.*)$")


@dataclass
class _Table:
    header: list[str]
    separator: list[str]
    rows: list[list[str]]
    omitted: int = 0
    note: str = field(default="", repr=False)

    @property
    def rows_per_table(self) -> int:
        return max(TABLE_MAX_CELLS // max(len(self.header), 1) - 1, 1)

    def render(self) -> str:
        head = _row(self.header) + _row(self.separator)
        step = self.rows_per_table
        chunks = [head + "".join(_row(r) for r in self.rows[i:i + step]) for i in range(0, len(self.rows), step)]
        text = "\n".join(chunks) if chunks else head  # a blank line between tables keeps them apart
        return text + (f"\n{self.note}\n" if self.omitted else "")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |\n"


def split_row(line: str) -> list[str]:
    """A table row's cells: split on the pipes that are not escaped (an even run of backslashes before them)."""
    cells: list[str] = []
    current: list[str] = []
    backslashes = 0
    for char in line.strip():
        if char == "|" and backslashes % 2 == 0:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        backslashes = backslashes + 1 if char == "\\" else 0
    cells.append("".join(current).strip())
    # The outer pipes leave an empty first and last cell.
    if cells and cells[0] == "":
        cells = cells[1:]
    if cells and cells[-1] == "":
        cells = cells[:-1]
    return cells


def _token(match: re.Match[str]) -> str:
    """A Slack token in what someone wrote, as plain text (a link stays a link)."""
    target, label = match.group("target"), _plain(match.group("label") or "")
    if target.startswith(("http://", "https://")):
        shown = (label or target).replace("[", "\\[").replace("]", "\\]")
        return f"[{shown}]({target.replace('(', '%28').replace(')', '%29')})"
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    if target.startswith("@"):
        return "@" + (label.lstrip("@") or target[1:])
    if target.startswith("#"):
        return "#" + (label.lstrip("#") or target[1:])
    # <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>: never a live mention here.
    if label:
        return label if target.startswith("!date") else "@" + label.lstrip("@")
    return "@" + target[1:].split("^", 1)[0]


def _plain(text: str) -> str:
    """Outside code spans: Slack tokens and the two entities back to what was typed, escaped only where needed."""

    def replace(match: re.Match[str]) -> str:
        if match.group("target") is not None:
            return _token(match)
        if match.group("entity") == "amp":
            return "\\&"  # markdown_escape wrote &amp; only before a character reference: keep it from decoding
        following = text[match.end():match.end() + 1]
        return "\\<" if _OPENS_MARKUP.match(following) else "<"

    return _ESCAPED.sub(replace, text)


def _inline(text: str) -> str:
    """Converts text outside code spans; a code span shows its content as it is, so it stays untouched."""
    out: list[str] = []
    last = 0
    for span in _CODE_SPAN.finditer(text):
        out.append(_plain(text[last:span.start()]))
        out.append(span.group(0))
        last = span.end()
    out.append(_plain(text[last:]))
    return "".join(out)


def _status_columns(rows: list[list[str]]) -> set[int]:
    """The columns whose every cell is an action item's status (`[  ]`, `[~] …`, `[x] …`)."""
    if not rows:
        return set()
    width = min(len(r) for r in rows)
    return {c for c in range(width) if all(_STATUS_CELL.match(r[c]) for r in rows)}


def _checkbox(cell: str) -> str:
    status = _STATUS_CELL.match(cell)
    assert status is not None
    box = "x" if status.group("mark") == "x" else " "
    return f"- [{box}] {_inline(status.group('label'))}".rstrip()


def _line(line: str) -> str:
    heading = _HEADING.match(line)
    if heading is not None:
        return f"**{_inline(heading.group(2))}**"
    image = _IMAGE_LINE.match(line)
    if image is not None and not _URL.match(image.group(2)) and not image.group(2).startswith(("@", "#")):
        alt, target = image.groups()
        return f"_{_inline(alt)}_: `{target}`" if alt else f"`{target}`"
    return _inline(line)


def _pieces(markdown: str) -> list[str | _Table]:
    pieces: list[str | _Table] = []
    lines = markdown.split("\n")
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = _FENCE.match(line)
        if fence is not None or opening is not None:
            pieces.append(line + "\n")
            if opening is not None:
                fence = None if fence == opening.group(1) else (fence or opening.group(1))
            i += 1
            continue
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|\s*:?-", lines[i + 1]):
            header, separator = split_row(line), split_row(lines[i + 1])
            rows: list[list[str]] = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            boxes = _status_columns(rows)
            rows = [[_checkbox(c) if n in boxes else _inline(c) for n, c in enumerate(r)] for r in rows]
            pieces.append(_Table([_inline(h) for h in header], separator, rows))
            continue
        pieces.append(_line(line) + ("\n" if i < len(lines) - 1 else ""))
        i += 1
    return pieces


def _render(pieces: list[str | _Table]) -> str:
    return "".join(p if isinstance(p, str) else p.render() for p in pieces)


def to_canvas(markdown: str, *, more_in_file: Callable[[int], str], max_chars: int = CANVAS_MAX_CHARS) -> str:
    """The canvas markdown for a report. Past `max_chars`, the longest table keeps the rows that fit, and
    `more_in_file(n)` words the line that says n more rows are in the .md file."""
    pieces = _pieces(markdown)
    text = _render(pieces)
    tables = [p for p in pieces if isinstance(p, _Table)]
    if len(text) > max_chars and tables:
        longest = max(tables, key=lambda t: len(t.rows))
        _trim(longest, max_chars - (len(text) - len(longest.render())), more_in_file)
        text = _render(pieces)
    if len(text) > max_chars:  # the rest alone is too long: cut whole lines, and say where they are
        lines = text.split("\n")
        budget, kept = max_chars - len(more_in_file(len(lines))) - 2, 0
        for line in lines:
            budget -= len(line) + 1
            if budget < 0:
                break
            kept += 1
        text = "\n".join(lines[:kept]) + "\n" + more_in_file(len(lines) - kept) + "\n"
    return text


def _trim(table: _Table, budget: int, more_in_file: Callable[[int], str]) -> None:
    """Keeps the first rows of `table` that fit in `budget` characters, with the note about the others."""
    rows = table.rows
    table.rows, table.omitted, table.note = [], len(rows), more_in_file(len(rows))
    used = len(table.render())
    header_cost = len(_row(table.header) + _row(table.separator)) + 1
    kept = 0
    for row in rows:
        cost = len(_row(row)) + (header_cost if kept and kept % table.rows_per_table == 0 else 0)
        if used + cost > budget:
            break
        used += cost
        kept += 1
    table.rows, table.omitted = rows[:kept], len(rows) - kept
    table.note = more_in_file(table.omitted)
