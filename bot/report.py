"""The post-mortem document: one query per section, whatever the size of the incident (no N+1).

The timeline is streamed as column rows (never ORM objects) straight into the template, and the document is
assembled piece by piece, so memory follows the size of the output, not of the incident's history.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import Integer, String, func, select, type_coerce
from sqlalchemy.orm import Session

from bot import checklist, durations, issue_links, postmortem, timeline
from bot.context import Context
from bot.pm_parsing import headline_parts, why_parts
from bot.render import linkable, markdown_escape
from bot.timefmt import TimeFormatter
from storage.models import ActionItem, ChecklistItem, Incident, Note, RoleAssignment, TimelineEvent, Why

PRIORITY_ORDER = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}
# System events whose data names people by id, and the keys that hold (id, display name).
_NAMED_ACTIONS = {"role": ("new", "new_name"), "action_item": ("owner", "owner_name")}


def report_filename(public_id: str, locale: str, default_locale: str) -> str:
    return f"{public_id}-postmortem.md" if locale == default_locale else f"{public_id}-postmortem.{locale}.md"


_NEWLINES = re.compile(r"\r\n|\r|\n")


def _cell(text: str) -> str:
    """render.markdown_cell with its newline regex only for a row that has a newline (this runs once per timeline
    row); tests hold them equal. Chained str.replace is a C-speed scan per character class, several times faster
    than str.translate."""
    text = markdown_escape(text).replace("\\", "\\\\").replace("|", "\\|")
    return _NEWLINES.sub("<br>", text) if ("\n" in text or "\r" in text) else text


@dataclass(frozen=True, slots=True)
class _Event:
    """What `_events.j2`'s describe() reads of an event."""

    kind: str
    text: str
    data: dict[str, Any] | None
    edited_at: datetime | None
    author_name: str | None


def _utc(value: Any) -> datetime | None:
    """A timestamp column read raw: SQLite hands back ISO text, PostgreSQL an aware datetime."""
    if value is None:
        return None
    when: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _json(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else None


def _timeline_rows(
    ctx: Context, session: Session, incident_id: int, locale: str, *, fmt: TimeFormatter, with_date: bool,
    names: dict[str, str],
) -> Iterator[Markup]:
    """The timeline table's rows (`| time | event | who |`, escaped for Markdown cells), streamed in time
    order and handed to the template one fetched batch (2,000 rows) at a time.

    Column rows in batches on the Core connection (yield_per): 50,000 events never exist as ORM objects at
    once. Timestamps, JSON and the highlight flag are read raw (SQLAlchemy's per-row conversions cost more than
    the query) and converted here; only system or edited events go through the
    template's describe() macro (a plain reply is described by its own text); per-minute times and
    per-person names are cached.
    """
    events_module = ctx.renderer.markdown_template("_events.j2", locale).module
    describe = events_module.describe  # type: ignore[attr-defined]  # Jinja2 makes macros attributes at run time
    source_label = _cell(str(events_module.source_label()).strip())  # type: ignore[attr-defined]
    query = timeline.timeline_rows_query(incident_id).with_only_columns(
        TimelineEvent.kind, type_coerce(TimelineEvent.occurred_at, String), TimelineEvent.author_id,
        TimelineEvent.author_name, TimelineEvent.text, type_coerce(TimelineEvent.highlighted, Integer),
        type_coerce(TimelineEvent.data, String), type_coerce(TimelineEvent.edited_at, String),
        maintain_column_froms=True,
    )
    times: dict[Any, str] = {}
    people: dict[tuple[str | None, str | None, bool], str] = {}
    cell = _cell
    result = session.connection().execute(query.execution_options(yield_per=2000))
    for batch in result.partitions():
        lines: list[str] = []
        append = lines.append
        for kind, occurred, author_id, author_name, text, highlighted, data, edited in batch:
            # SQLite stores "YYYY-MM-DD HH:MM:SS.ffffff" in UTC: its first 16 characters name the minute.
            minute = occurred[:16] if occurred.__class__ is str else int(occurred.timestamp()) // 60
            time_cell = times.get(minute)
            if time_cell is None:
                time_cell = times[minute] = fmt.time(_utc(occurred), with_date=with_date, with_zone=False)
            system = kind == "system"
            if system or edited is not None:
                event = _Event(kind, text or "", _json(data), _utc(edited), author_name)
                description = cell(str(describe(event)).strip())
            else:
                description = cell((text or "").strip())
            if data is not None and "permalink" in data:  # a message added from its menu: link to where it was
                source = linkable((_json(data) or {}).get("permalink"))
                if source:
                    description = f"{description} ([{source_label}]({source}))"
            if highlighted or kind == "pin":
                description = "📌 " + description
            who = people.get((author_id, author_name, system))
            if who is None:  # the person's best-known name, so a handle from a command reads like the rest
                label = names.get(author_id or "") or author_name or author_id or ("incident-bot" if system else "-")
                who = people[(author_id, author_name, system)] = cell(label)
            append(f"| {time_cell} | {description} | {who} |\n")
        yield Markup("".join(lines))


def _names(session: Session, incident_id: int) -> dict[str, str]:
    """Display names for every id the report shows (owners, roles, the timeline's "who"): two queries, whatever
    the size of the timeline.

    Precedence: the names people had on their own thread replies (their Slack profile's display name), then
    names recorded with role and action-item events, then the handles Slack sends with slash commands.
    """
    data_names: dict[str, str] = {}
    data_rows = session.scalars(
        select(TimelineEvent.data).where(
            TimelineEvent.incident_id == incident_id, TimelineEvent.kind == "system",
            TimelineEvent.data["action"].as_string().in_(tuple(_NAMED_ACTIONS)),
        )
    )
    for data in data_rows:
        action = (data or {}).get("action")
        id_key, name_key = _NAMED_ACTIONS.get(action, ("", "")) if isinstance(action, str) else ("", "")
        user_id, name = (data or {}).get(id_key), (data or {}).get(name_key)
        if isinstance(user_id, str) and isinstance(name, str) and name:
            data_names[user_id] = name
    is_command = TimelineEvent.kind == "system"
    rows = session.execute(
        select(TimelineEvent.author_id, is_command, func.max(TimelineEvent.author_name))
        .where(TimelineEvent.incident_id == incident_id, TimelineEvent.author_name.is_not(None))
        .group_by(TimelineEvent.author_id, is_command)
    ).all()
    handles = {author: name for author, command, name in rows if command and author and name}
    profiles = {author: name for author, command, name in rows if not command and author and name}
    return {**handles, **data_names, **profiles}


# --------------------------------------------------------------------------------------------- Markdown


# `>` too: a quote typed first on a line stays text, as it always read, rather than absorbing the lines after it.
_BLOCK_START = re.compile(r"^(\s{0,3})(#{1,6}(?=\s|$)|={3,}\s*$|-{3,}\s*$|_{3,}\s*$|\*{3,}\s*$|`{3,}|~{3,}|>)")


def markdown_block(text: str | None) -> Markup:
    """Free text (root cause, conclusion) as Markdown paragraphs: lists and emphasis pass, but nothing can
    open a heading, a rule, a code fence or a block quote that would swallow the rest of the document; HTML
    is escaped."""
    lines = []
    for line in markdown_escape(text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        lines.append(_BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line.rstrip()))
    return Markup(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip())


def markdown_strong(text: str | None) -> Markup:
    """One line inside **…**: asterisks and underscores escaped so the emphasis cannot break open."""
    line = re.sub(r"\s*[\r\n]+\s*", " ", markdown_escape(text or ""))
    return Markup(line.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_"))


# --------------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class WhyRow:
    position: int
    question: str | None
    answer: str | None


@dataclass(frozen=True)
class LessonRow:
    headline: str
    detail: str | None


def build_context(ctx: Context, session: Session, incident: Incident, locale: str) -> dict[str, Any]:
    fmt = ctx.formatter(locale)
    actions = sorted(
        session.scalars(select(ActionItem).where(ActionItem.incident_id == incident.id)).all(),
        key=lambda a: (PRIORITY_ORDER.get(a.priority, 9), a.id),
    )
    notes = session.execute(
        select(Note.kind, Note.text).where(Note.incident_id == incident.id).order_by(Note.kind, Note.position, Note.id)
    ).all()
    checked = session.scalars(
        select(ChecklistItem.key).where(ChecklistItem.incident_id == incident.id, ChecklistItem.checked.is_(True))
    ).all()
    has_checklist = incident.checklist_ts is not None or bool(checked)
    first_event, last_event = session.execute(
        select(func.min(TimelineEvent.occurred_at), func.max(TimelineEvent.occurred_at)).where(
            TimelineEvent.incident_id == incident.id
        )
    ).one()
    milestone_values = [
        first_event, last_event, incident.deployed_at, incident.started_at, incident.detected_at,
        incident.rollback_at, incident.recovered_at, incident.resolved_at, incident.opened_at,
    ]
    roles = dict(session.execute(
        select(RoleAssignment.role, RoleAssignment.user_id).where(RoleAssignment.incident_id == incident.id)
    ).all())
    names = _names(session, incident.id)
    spans_days = fmt.spans_days([*milestone_values, ctx.clock.now() if incident.is_open else None])
    whys = session.execute(
        select(Why.position, Why.text).where(Why.incident_id == incident.id).order_by(Why.position)
    ).all()
    groups = checklist.build(checked, locale) if has_checklist else []

    def owner(owner_id: str | None) -> str | None:
        if not owner_id:
            return None
        return owner_id[1:] if owner_id.startswith("@") else names.get(owner_id, owner_id)

    return {
        "incident": incident,
        "fmt": fmt,
        "now": ctx.clock.now(),
        "durations": durations.compute(incident),
        "spans_days": spans_days,
        "roles": roles,
        "role_order": ctx.settings.roles,
        "names": names,
        "owner": owner,
        "impact": postmortem.impact_views(session, incident.id),
        "whys": [WhyRow(position, *why_parts(text)) for position, text in whys],
        "actions": actions,
        "impact_column": any(a.impact for a in actions),
        "issues": issue_links.for_incident(session, incident.id),  # action item id → its GitHub issue
        "lessons": [LessonRow(*headline_parts(text)) for kind, text in notes if kind == "lesson"],
        "prevention": [text for kind, text in notes if kind == "prevent"],
        "checklist": groups,
        "checklist_done": sum(g.done for g in groups),
        "checklist_total": sum(g.total for g in groups),
        "block": markdown_block,
        "strong": markdown_strong,
        "timeline": _timeline_rows(ctx, session, incident.id, locale, fmt=fmt, with_date=spans_days, names=names),
    }


def render_report(ctx: Context, incident_id: int, locale: str, *, chart_file: str | None = None) -> str:
    """`chart_file`: the evidence chart that travels with the document, embedded under that name."""
    # A read-only unit of work: rendering a large incident never holds SQLite's write lock.
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        template = ctx.renderer.document_template("report", locale)
        # generate() yields pieces as the timeline streams; writing them into one buffer avoids holding
        # a list of every piece (render() joins them all at the end).
        out = io.StringIO()
        for piece in template.generate(**build_context(ctx, session, incident, locale), chart_file=chart_file):
            out.write(piece)
        return out.getvalue()
