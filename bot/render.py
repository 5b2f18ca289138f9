"""Jinja2 rendering with escaping by default, for Slack mrkdwn and for the Markdown report.

Every `{{ value }}` passes through `finalize`, which escapes it for the output's context unless it is
already Markup (built by the filters below), so user text can never mention anyone or break a table.

A template is written once, in English; `{% trans %}` and `_()` look its words up in the language's catalogue
(templates/locale/<lang>/LC_MESSAGES/messages.po), and the values in a translated sentence are escaped the same way.
"""

from __future__ import annotations

import functools
import gettext
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

import templates as templates_package

TEMPLATE_DIR = Path(templates_package.__file__).resolve().parent
# Templates are written once, in English; every other language's words are in LOCALE_DIR/<lang>/LC_MESSAGES/.
SOURCE_LOCALE = "en"
LOCALE_DIR = TEMPLATE_DIR / "locale"
DOMAIN = "messages"
# What the Environment does to whitespace changes the msgids a template yields: babel.cfg repeats these.
TEMPLATE_OPTIONS: dict[str, Any] = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
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


# A URL from outside (GitHub's issue URL, Slack's permalink) goes into Slack's `<url|label>` and a Markdown link
# `[label](url)`, in a table cell too: nothing that could end either.
LINKABLE = re.compile(r"https?://[^\s<>|()\[\]]+")


def linkable(url: object) -> str | None:
    return url if isinstance(url, str) and LINKABLE.fullmatch(url) else None


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


def catalogue_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def catalogue_locales() -> tuple[str, ...]:
    """The source language and every language with a catalogue."""
    found = sorted(path.name for path in LOCALE_DIR.iterdir() if catalogue_path(path.name).is_file())
    return (SOURCE_LOCALE, *found)


@functools.cache
def translations(locale: str) -> gettext.NullTranslations:
    """The locale's catalogue, compiled from its .po once per process (renderers share it): no build step, and
    no .mo that could disagree with the .po. Fuzzy entries are left out, as msgfmt would."""
    if locale == SOURCE_LOCALE:
        return gettext.NullTranslations()
    with catalogue_path(locale).open("rb") as handle:
        catalog = read_po(handle, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def _translators(catalogue: gettext.NullTranslations, escape: Any) -> dict[str, Callable[..., Markup]]:
    """The i18n extension's callables, newstyle: `{% trans name=value %}…{{ name }}…{% endtrans %}` and
    `_("…%(name)s", name=value)` pass their values here. The catalogue's words are ours and stay as written, like
    a template's own text; each value is escaped as `{{ value }}` would be (Markup passes, None is empty)."""
    finalize = _finalizer(escape)

    def fill(text: str, values: dict[str, Any]) -> Markup:
        # Numbers stay numbers so a catalogue may write %(num)d.
        return Markup(text % {
            name: value if isinstance(value, int | float) and not isinstance(value, bool) else finalize(value)
            for name, value in values.items()
        })

    @functools.cache
    def label(message: str) -> Markup:
        # A message without values is the same every time: labels are looked up once (renders are on the ack path).
        return Markup(catalogue.gettext(message) % {})

    def gettext_(message: str, **values: Any) -> Markup:
        return fill(catalogue.gettext(message), values) if values else label(message)

    def ngettext_(singular: str, plural: str, count: int, **values: Any) -> Markup:
        values.setdefault("num", count)
        return fill(catalogue.ngettext(singular, plural, count), values)

    def pgettext_(context: str, message: str, **values: Any) -> Markup:
        return fill(catalogue.pgettext(context, message), values)

    def npgettext_(context: str, singular: str, plural: str, count: int, **values: Any) -> Markup:
        values.setdefault("num", count)
        return fill(catalogue.npgettext(context, singular, plural, count), values)

    return {"gettext": gettext_, "_": gettext_, "ngettext": ngettext_, "pgettext": pgettext_,
            "npgettext": npgettext_}


def _make_env(escape: Any, catalogue: gettext.NullTranslations) -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,
        finalize=_finalizer(escape),
        undefined=StrictUndefined,
        # Templates ship with the code: no stat() of the file on every render (it showed in the ack path).
        auto_reload=False,
        extensions=["jinja2.ext.i18n", "jinja2.ext.do"],
        **TEMPLATE_OPTIONS,
    )
    env.filters.update(
        cell=markdown_cell, mdline=markdown_line, line=slack_line, mention=mention, channel=channel_link, raw=raw,
        clip=slack_clip, url=linkable,
    )
    # Our own callables rather than install_gettext_translations: Jinja's newstyle ones escape values only
    # under autoescape, and then by HTML's rules, not by this output's `escape`.
    env.globals.update(_translators(catalogue, escape))
    env.newstyle_gettext = True  # type: ignore[attr-defined]  # the i18n extension's switch, set by Environment.extend
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
    """Renders templates/ in a language: one Environment per language and output (Slack mrkdwn, Markdown), so
    concurrent renders in different languages never share a switched catalogue."""

    def __init__(self) -> None:
        self.locales = catalogue_locales()
        self._slack = {locale: _make_env(slack_escape, translations(locale)) for locale in self.locales}
        self._markdown = {locale: _make_env(markdown_escape, translations(locale)) for locale in self.locales}
        self._said: dict[tuple[str, str], str] = {}  # (key, locale) → the text of a message without values

    def _env(self, envs: dict[str, Environment], locale: str) -> Environment:
        try:
            return envs[locale]
        except KeyError:
            raise LookupError(f"no messages in {locale!r}: the languages are {', '.join(self.locales)}") from None

    def text(self, name: str, locale: str, **context: Any) -> str:
        return self._env(self._slack, locale).get_template(f"{name}.j2").render(**context)

    def message(self, name: str, locale: str, **context: Any) -> RenderedMessage:
        rendered = self.text(name, locale, **context)
        return RenderedMessage(text=plain_fallback(rendered), blocks=text_to_blocks(rendered))

    def say(self, key: str, locale: str, **params: Any) -> str:
        """`group.name` → macro `name` of templates/messages/<group>.j2, so each domain owns a file. A message
        without values is the same every time: rendered once (a note like "limits.truncated" goes with every ack)."""
        if not params:
            said = self._said.get((key, locale))
            if said is None:
                said = self._said[(key, locale)] = self._say(key, locale)
            return said
        return self._say(key, locale, **params)

    def _say(self, key: str, locale: str, **params: Any) -> str:
        group, _, name = key.partition(".")
        module = self._env(self._slack, locale).get_template(f"messages/{group}.j2").module
        return str(getattr(module, name)(**params)).strip()

    def markdown_template(self, path: str, locale: str) -> Template:
        """A template (`_events.j2`) escaped by Markdown's rules, for the report's own streaming."""
        return self._env(self._markdown, locale).get_template(path)

    def document_template(self, name: str, locale: str) -> Template:
        """The language's own document: templates/<name>.<locale>.md.j2 (the report follows each guide's shape)."""
        return self.markdown_template(f"{name}.{locale}.md.j2", locale)

    def document(self, name: str, locale: str, **context: Any) -> str:
        return self.document_template(name, locale).render(**context)


@functools.cache
def shared_renderer() -> Renderer:
    """The process's Renderer. Its templates and catalogues ship with the code, so every app built in one process
    (the tests build hundreds) shares it and compiles each template once: compiling was a fifth of a test's CPU."""
    return Renderer()
