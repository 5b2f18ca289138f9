"""Jinja2 rendering with escaping by default, for Slack mrkdwn and for the Markdown report.

Every `{{ value }}` passes through `finalize`, which escapes it for the output's context unless it is
already Markup (built by the filters below), so user text can never mention anyone or break a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

import templates as templates_package

TEMPLATE_DIR = Path(templates_package.__file__).resolve().parent
_SLACK_ID = re.compile(r"^[UWBC][A-Z0-9]{2,20}$")
_DIVIDER = "--"
T = TypeVar("T")


def slack_escape(value: object) -> str:
    """Slack's own three entities; quotes stay readable (Slack does not decode &#34;)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_unescape(text: str) -> str:
    """Text from Slack arrives entity-encoded; stored text is what the person typed."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# What must stay whole in escaped mrkdwn: Slack's three entities and the bot's own <@U…>, <#C…>, <url|label> tokens.
_UNBREAKABLE = re.compile(r"&(?:amp|lt|gt);|<[^<>\n]*>")
SECTION_BUDGET = 2900  # under Slack's 3,000 per section text, leaving room for a "…"


def clip_slack(text: str, limit: int, tail: str = "…") -> str:
    """At most `limit` characters of escaped mrkdwn, cut on a character boundary outside any entity or token;
    `tail` (counted in the limit) marks a cut. Measured after escaping, which is what Slack counts."""
    if len(text) <= limit:
        return text
    cut = max(limit - len(tail), 0)
    for token in _UNBREAKABLE.finditer(text):
        if token.start() >= cut:
            break
        if token.end() > cut:
            cut = token.start()
            break
    return (text[:cut].rstrip() + tail) if tail else text[:cut]


# A `&` that would start a character reference (`&lt;`, `&#60;`, `&#x3C;`); any other `&` is literal in Markdown.
_CHARACTER_REFERENCE = re.compile(r"&(?=#[0-9]{1,7};|#[xX][0-9a-fA-F]{1,6};|[A-Za-z][A-Za-z0-9]{1,31};)")
# A `>` first on a line opens a block quote.
_LEADING_QUOTE = re.compile(r"^(\s*)>")


def markdown_escape(value: object) -> str:
    """Text in a Markdown file, by Markdown's rules rather than Slack's: `<` becomes `&lt;`, so nothing typed
    opens an HTML tag or an autolink, and `&` only where it would start a character reference, so what was
    typed is what shows. `>` stays `>` (`850ms > 200ms`): it starts no HTML, and a block quote only at the
    start of a line, which `markdown_line` and `report.markdown_block` escape."""
    text = str(value)
    if "&" in text:
        text = _CHARACTER_REFERENCE.sub("&amp;", text)
    return text.replace("<", "&lt;")


def markdown_cell(value: object) -> Markup:
    """A table cell: no pipe may split the cell and no newline may end the row."""
    text = markdown_escape("" if value is None else value).replace("\\", "\\\\").replace("|", "\\|")
    text = re.sub(r"\r\n|\r|\n", "<br>", text)
    return Markup(text)


def markdown_line(value: object) -> Markup:
    """A list item or a heading: newlines would start new blocks, so they fold into spaces, and a leading `>`
    would open a block quote, so it is escaped."""
    line = re.sub(r"\s*[\r\n]+\s*", " ", markdown_escape("" if value is None else value))
    return Markup(_LEADING_QUOTE.sub("\\1\\\\>", line))


def slack_line(value: object) -> Markup:
    return Markup(re.sub(r"\s*[\r\n]+\s*", " ", slack_escape("" if value is None else value)))


def slack_clip(value: object, limit: int, tail: str = "…") -> Markup:
    """`line`, then clipped to `limit` escaped characters: the length Slack sees, never a broken entity."""
    return Markup(clip_slack(str(slack_line(value)), limit, tail))


def mention(user_id: object) -> Markup:
    """The only way a template emits a mention: for validated Slack user ids."""
    if isinstance(user_id, str) and _SLACK_ID.match(user_id):
        return Markup(f"<@{user_id}>")
    return Markup(slack_escape(user_id or ""))


def raw(value: object) -> Markup:
    """Marks text to be escaped later by its caller (macros whose output is always re-escaped)."""
    return Markup("" if value is None else str(value))


def channel_link(channel_id: object) -> Markup:
    if isinstance(channel_id, str) and re.fullmatch(r"[CG][A-Z0-9]{2,20}", channel_id):
        return Markup(f"<#{channel_id}>")
    return Markup(slack_escape(channel_id or ""))


def _finalizer(escape: Any) -> Any:
    def finalize(value: object) -> object:
        if value is None:
            return ""
        if isinstance(value, Markup):
            return value
        return escape(value)

    return finalize


def _make_env(escape: Any) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,
        finalize=_finalizer(escape),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates ship with the code: no stat() of the file on every render (it showed in the ack path).
        auto_reload=False,
    )
    env.filters.update(
        cell=markdown_cell, mdline=markdown_line, line=slack_line, mention=mention, channel=channel_link, raw=raw,
        clip=slack_clip,
    )
    return env


@dataclass
class RenderedMessage:
    """A Slack message: Block Kit blocks and the plain-text fallback Slack shows in notifications."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def text_to_blocks(text: str) -> list[dict[str, Any]]:
    """Paragraphs become mrkdwn sections and a line of `--` a divider, so templates own the layout."""
    blocks: list[dict[str, Any]] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = chunk.strip("\n").split("\n")
        current: list[str] = []
        for line in lines:
            if line.strip() == _DIVIDER:
                if current:
                    blocks.extend(_sections("\n".join(current)))
                    current = []
                blocks.append({"type": "divider"})
            else:
                current.append(line)
        if current and "".join(current).strip():
            blocks.extend(_sections("\n".join(current)))
    return blocks


def _sections(text: str) -> list[dict[str, Any]]:
    # Slack caps a section's text at 3,000 characters (Block Kit reference, section block); split on line
    # boundaries, and a line longer than that where no entity or <…> token breaks, so nothing is lost here.
    out: list[dict[str, Any]] = []
    piece = ""
    for line in text.split("\n"):
        while len(line) > SECTION_BUDGET:
            head = clip_slack(line, SECTION_BUDGET, tail="") or line[:SECTION_BUDGET]
            if piece:
                out.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
                piece = ""
            out.append({"type": "section", "text": {"type": "mrkdwn", "text": head}})
            line = line[len(head):]
        if len(piece) + len(line) + 1 > SECTION_BUDGET and piece:
            out.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
            piece = ""
        piece = f"{piece}\n{line}" if piece else line
    if piece:
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    return out


def plain_fallback(text: str) -> str:
    """Dividers become blank lines, so notifications and clients without blocks keep the paragraphs."""
    lines = ["" if line.strip() == _DIVIDER else line for line in text.strip().split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def most_that_fits(render: Callable[[int], T], most: int, fits: Callable[[T], bool]) -> T:
    """`render(n)` for the largest n ≤ `most` that `fits`, by bisection (a longer list never renders shorter),
    so a list shows as many entries as the chat platform takes and says itself how many it left out."""
    best = render(most)
    if fits(best):
        return best
    low, high = 0, most - 1
    best = render(0)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = render(middle)
        if fits(candidate):
            low, best = middle, candidate
        else:
            high = middle - 1
    return best


class Renderer:
    def __init__(self) -> None:
        self.slack = _make_env(slack_escape)
        self.markdown = _make_env(markdown_escape)

    def text(self, name: str, locale: str, **context: Any) -> str:
        return self.slack.get_template(f"{locale}/{name}.j2").render(**context)

    def message(self, name: str, locale: str, **context: Any) -> RenderedMessage:
        rendered = self.text(name, locale, **context)
        return RenderedMessage(text=plain_fallback(rendered), blocks=text_to_blocks(rendered))

    def say(self, key: str, locale: str, **params: Any) -> str:
        """`group.name` → macro `name` of templates/<locale>/messages/<group>.j2, so each domain owns a file."""
        group, _, name = key.partition(".")
        module = self.slack.get_template(f"{locale}/messages/{group}.j2").module
        return str(getattr(module, name)(**params)).strip()

    def document(self, name: str, locale: str, **context: Any) -> str:
        return self.markdown.get_template(f"{locale}/{name}.md.j2").render(**context)

