"""Messages are written once and their words live in catalogues: every message has a translation, a catalogue holds
nothing stale, translated sentences escape what users typed, and the two reports (one template per language, since
each follows its guide) print the same sections and the same data."""

from __future__ import annotations

import io
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from sqlalchemy import select

import app
from bot.clock import ManualClock
from bot.render import (
    SOURCE_LOCALE,
    TEMPLATE_DIR,
    Renderer,
    catalogue_locales,
    catalogue_path,
    markdown_escape,
    translations,
)
from bot.report import render_report
from bot.settings import load_settings
from sandbox.demo import run_demo
from sandbox.harness import LocalBot
from storage.models import ActionItem, Incident, Note, TimelineEvent, Why
from tests.helpers import open_incident

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
Key = tuple[str | None, str]


def extracted() -> dict[Key, list[str]]:
    """Every msgid the templates use, found by Babel's Jinja2 extractor with the project's babel.cfg (so the
    README's `pybabel extract` and this test read the templates alike) → the files using it."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found: dict[Key, list[str]] = {}
    for filename, _line, message, _comments, context in extract_from_dir(TEMPLATE_DIR, method_map, options_map):
        msgid = message if isinstance(message, str) else message[0]
        found.setdefault((context, msgid), []).append(filename)
    return found


def catalogue(locale: str) -> Catalog:
    with catalogue_path(locale).open("rb") as handle:
        return read_po(handle, locale=locale)


def entries(catalog: Catalog) -> dict[Key, Any]:
    return {(m.context, m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog if m.id}


TRANSLATED = [locale for locale in catalogue_locales() if locale != SOURCE_LOCALE]


def test_the_extractor_reads_every_template_that_has_words() -> None:
    """Guards the test below: a babel.cfg that matched no file would find no msgid and pass."""
    used = {name for names in extracted().values() for name in names}
    with_words = {str(path.relative_to(TEMPLATE_DIR)) for path in TEMPLATE_DIR.rglob("*.j2")
                  if re.search(r"\{% trans|\b_\(\"|gettext\(", path.read_text(encoding="utf-8"))}
    assert with_words and used == with_words
    assert len(extracted()) > 400


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_message_has_a_translation_and_the_catalogue_holds_no_other(locale: str) -> None:
    wanted = extracted()
    catalog = catalogue(locale)
    have = entries(catalog)
    missing = sorted((key for key in wanted if key not in have), key=str)
    assert not missing, f"{len(missing)} messages have no {locale} entry: run pybabel update (README); {missing[:5]}"
    untranslated = [key for key, m in have.items()
                    if key in wanted and (m.fuzzy or not all(m.string if isinstance(m.string, tuple) else [m.string]))]
    assert not untranslated, f"{locale}: empty or fuzzy translations: {untranslated[:5]}"
    stale = sorted((key for key in have if key not in wanted), key=str)
    obsolete = list(catalog.obsolete)
    assert not stale and not obsolete, f"{locale}: entries no template uses: {stale[:5]} {obsolete[:5]}"
    for key, m in have.items():
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        for string in strings:
            # The same values, each used as the source uses it, and a string Python can format.
            assert set(PLACEHOLDER.findall(string)) == set(PLACEHOLDER.findall(key[1])), key
            string % {name: "x" for name in PLACEHOLDER.findall(string)}


@pytest.mark.parametrize("locale", TRANSLATED)
def test_the_compiled_catalogue_is_the_po_and_is_read_once(locale: str) -> None:
    assert translations(locale) is translations(locale)  # cached: rendering never parses the .po
    compiled = translations(locale)
    for (context, msgid), m in entries(catalogue(locale)).items():
        if isinstance(m.id, str):
            got = compiled.pgettext(context, msgid) if context else compiled.gettext(msgid)
            assert got == m.string, msgid


def test_messages_are_written_once() -> None:
    """No template lives in a language folder; each language has only its own report (which follows its guide)."""
    assert not [p for p in TEMPLATE_DIR.iterdir() if p.is_dir() and p.name in catalogue_locales()]
    per_language = sorted(p.name for p in TEMPLATE_DIR.rglob("*.j2") if re.search(r"\.[a-z]{2}\.md\.j2$", p.name))
    assert per_language == sorted(f"report.{locale}.md.j2" for locale in catalogue_locales())


# -- escaping inside translated sentences ---------------------------------------------------------------------


@pytest.mark.parametrize("bot_env", [{"INCIDENT_LOCALE": "ko"}, {"INCIDENT_LOCALE": "en"}])
def test_user_text_inside_a_translated_sentence_is_escaped(bot: LocalBot, bot_env: dict[str, str]) -> None:
    open_incident(bot)
    # Slack sends a typed mention as <@U…|name>, and `&`, `<`, `>` as entities (should_escape); the bot stores
    # mentions as plain @names.
    response = bot.driver.command("/postmortem", "why <@U0EVIL|evil> &amp; <!channel> &lt;b&gt; 끝")
    assert response.status_code == 200
    answer = response.json()["text"]
    assert "@evil &amp; @channel &lt;b&gt; 끝" in answer
    assert "<@U0EVIL" not in answer and "<!channel>" not in answer
    assert ("5 Whys 1번을 기록했습니다: " if bot_env["INCIDENT_LOCALE"] == "ko" else "Recorded why #1: ") in answer
    bot.settle()

    # A mention the bot builds (Markup from |mention) stays a mention inside the translated sentence.
    response = bot.driver.command("/postmortem", 'action P0 "고치기 &lt;b&gt; &amp; x" <@U0GITCO|gitco>')
    answer = response.json()["text"]
    owner = "· 담당 <@U0GITCO>" if bot_env["INCIDENT_LOCALE"] == "ko" else "· owner <@U0GITCO>"
    assert owner in answer and "고치기 &lt;b&gt; &amp; x" in answer
    bot.settle()


@pytest.mark.parametrize("locale", ["ko", "en"])
def test_a_translated_sentence_in_the_report_escapes_by_markdowns_rules(locale: str) -> None:
    impact = Renderer().markdown_template("postmortem/_pm.j2", locale).module.impact  # type: ignore[attr-defined]
    view = {"after": "<b>&amp; 5", "field": "users", "approx": True, "share": None, "raw": ""}
    shown = str(impact(type("View", (), view)))
    assert "&lt;b>&amp;amp; 5" in shown and "<b>" not in shown
    assert shown.startswith("약 ") if locale == "ko" else shown.startswith("about ")


# -- the two reports ------------------------------------------------------------------------------------------


def _cells(row: str) -> list[str]:
    return re.findall(r"\|((?:\\.|[^\\|])*)(?=\|)", row)


def shape(document: str) -> list[tuple[str, list[str]]]:
    """Per section (its heading's level), the kind of every line: table rows with their cell count, list items,
    numbered items, checkboxes, text and blank lines. Words are left out: only the structure is compared."""
    sections: list[tuple[str, list[str]]] = []
    for line in document.split("\n"):
        heading = re.match(r"^(#+) ", line)
        if heading:
            sections.append((heading.group(1), []))
            continue
        if not sections:
            sections.append(("", []))
        if line.startswith("|"):
            kind = f"row:{len(_cells(line))}"
        elif re.match(r"^- \[[ x]\] ", line):
            kind = "checkbox"
        elif re.match(r"^\s+- ", line):
            kind = "sub-item"
        elif line.startswith("- "):
            kind = "item"
        elif re.match(r"^\d+\. ", line):
            kind = "numbered"
        elif line.strip():
            kind = "text"
        else:
            kind = "blank"
        sections[-1][1].append(kind)
    return sections


# What a report prints that is the same in every language: clock times, dates, percentages, milliseconds,
# priorities, incident IDs and revisions.
TOKENS = re.compile(r"\b\d{2}:\d{2}\b|\b\d{4}-\d{2}-\d{2}\b|\d+(?:\.\d+)?%|\d+ms\b|\bP[0-3]\b|INCIDENT-\d{8}-\d{3}")


def test_the_two_reports_print_the_same_sections_and_data(tmp_path: Path) -> None:
    """The demo's incident fills every section. Rendered from the same database at the same moment, both
    documents must have the same headings, tables of the same size, the same lists, and every value it holds."""
    assert run_demo(app.build_runtime, output_dir=str(tmp_path), out=io.StringIO()) == 0
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}", "INCIDENT_TIMEZONE": "UTC",
                              "SLACK_BOT_TOKEN": "xoxb-unused"})  # the report reads; it posts nothing
    ctx = app.build_context(settings, clock=ManualClock(datetime(2025, 10, 22, 20, 0, tzinfo=UTC)))
    try:
        with ctx.db.read() as session:
            incident = session.scalars(select(Incident)).one()
            values = [incident.public_id, incident.title, incident.service, incident.root_cause, incident.conclusion]
            values += [why.text for why in session.scalars(select(Why))]
            values += [item.task for item in session.scalars(select(ActionItem))]
            values += [note.text for note in session.scalars(select(Note))]
            replies = select(TimelineEvent).where(TimelineEvent.kind != "system")
            values += [event.text for event in session.scalars(replies)]
        korean, english = (render_report(ctx, incident.id, locale) for locale in ("ko", "en"))
    finally:
        ctx.db.dispose()
    assert shape(korean) == shape(english)
    assert len(shape(korean)) >= 12 and any(kind.startswith("row:") for _, kinds in shape(korean) for kind in kinds)
    assert Counter(TOKENS.findall(korean)) == Counter(TOKENS.findall(english))

    checked = 0
    # A why or a lesson prints as question and answer (headline and detail): each part on its own.
    parts = [part for value in values if value for part in re.split(r"\s*(?:→|->| — |\n)\s*", str(value))]
    for part in parts:
        # As the report escapes it, short enough to stay inside one table cell or list item.
        fragment = markdown_escape(part.strip())[:30].strip()
        if not fragment or re.search(r"[|*_\\`#>]", fragment):
            continue
        assert (fragment in korean) == (fragment in english), fragment
        checked += fragment in korean
    assert checked >= 15
