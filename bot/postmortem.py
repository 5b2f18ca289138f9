"""Post-mortem content: the 5 Whys, root cause, action items, impact, lessons, prevention, the checklist.

Storage first, Slack second: every command stores its content in one transaction, and the Slack messages that
show it (action items with buttons, the checklist) are posted afterwards and can be re-posted from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.orm import Session

from bot import checklist, incidents, issue_links, leases, timeline
from bot.context import Context
from bot.parsing import UsageError
from bot.pm_parsing import (
    IMPACT_FIELDS,
    MAX_WHYS,
    ActionRequest,
    Impact,
    number,
    parse_impact_value,
    parse_lines,
    read_impact,
)
from bot.ports import ActionItemView, ChecklistView, MessengerError, Transition
from storage.models import ActionItem, ChecklistItem, ImpactValue, Incident, Note, TimelineEvent, Why
from storage.sql import claim_lease, upsert

log = logging.getLogger(__name__)

STATUSES = ("open", "in_progress", "done")
# A transition people can choose on an item's message → the status it sets.
TRANSITIONS = {"start": "in_progress", "done": "done", "reopen": "open"}
MAX_NOTES = 50
MAX_ACTIONS = 500
UNPOSTED_RETRY_AFTER = timedelta(minutes=2)
ACTION_ITEM_EVENT = "incident_action_item"  # the message metadata that marks an action item's message
UNPOSTED_GIVE_UP_AFTER = timedelta(days=1)


def _lock(session: Session, incident: Incident) -> None:
    """Serialises position numbering per incident (row lock on PostgreSQL; SQLite's writes are serial already)."""
    session.execute(select(Incident.id).where(Incident.id == incident.id).with_for_update())


# --------------------------------------------------------------------------------------------- 5 Whys


def add_why(session: Session, incident: Incident, text: str, author: str | None) -> int:
    _lock(session, incident)
    last = session.scalar(select(func.max(Why.position)).where(Why.incident_id == incident.id)) or 0
    if last >= MAX_WHYS:
        raise UsageError("too_many_whys", "why", limit=MAX_WHYS)
    session.add(Why(incident_id=incident.id, position=last + 1, text=text, author_id=author))
    return last + 1


def _why_count(session: Session, incident: Incident) -> int:
    return int(session.scalar(select(func.count()).select_from(Why).where(Why.incident_id == incident.id)) or 0)


def edit_why(session: Session, incident: Incident, position: int, text: str, author: str | None) -> None:
    _lock(session, incident)
    # Session.execute is typed as Result; an UPDATE without RETURNING gives a CursorResult, which has rowcount.
    result = cast(CursorResult[Any], session.execute(
        update(Why).where(Why.incident_id == incident.id, Why.position == position).values(text=text, author_id=author)
    ))
    if result.rowcount == 0:
        raise UsageError("no_such_why", "why", position=position, count=_why_count(session, incident))


def remove_why(session: Session, incident: Incident, position: int) -> int:
    """Deletes number `position` and renumbers the later ones, so the chain stays 1..n. Returns the new n."""
    _lock(session, incident)
    result = cast(CursorResult[Any],
                  session.execute(delete(Why).where(Why.incident_id == incident.id, Why.position == position)))
    if result.rowcount == 0:
        raise UsageError("no_such_why", "why", position=position, count=_why_count(session, incident))
    # Two steps through negative numbers: the unique (incident, position) constraint is checked row by row.
    later = (Why.incident_id == incident.id, Why.position > position)
    session.execute(update(Why).where(*later).values(position=-(Why.position - 1)))
    session.execute(update(Why).where(Why.incident_id == incident.id, Why.position < 0).values(position=-Why.position))
    return _why_count(session, incident)


# --------------------------------------------------------------------------------------------- free text


def set_root_cause(session: Session, incident: Incident, text: str | None) -> None:
    incident.root_cause = text or None


def set_conclusion(session: Session, incident: Incident, text: str | None) -> None:
    incident.conclusion = text or None


def add_note(session: Session, incident: Incident, kind: str, text: str, author: str | None) -> int:
    assert kind in ("lesson", "prevent")
    _lock(session, incident)
    last = session.scalar(
        select(func.max(Note.position)).where(Note.incident_id == incident.id, Note.kind == kind)
    ) or 0
    count = session.scalar(
        select(func.count()).select_from(Note).where(Note.incident_id == incident.id, Note.kind == kind)
    ) or 0
    if count >= MAX_NOTES:
        raise UsageError("too_many_items", kind, limit=MAX_NOTES)
    session.add(Note(incident_id=incident.id, kind=kind, position=last + 1, text=text, author_id=author))
    return int(count) + 1


def replace_notes(session: Session, incident: Incident, kind: str, lines: list[str], author: str | None) -> None:
    """The modal edits a whole list at once: what it submits is the list, in its order."""
    _lock(session, incident)
    current = session.execute(
        select(Note.text, Note.author_id).where(Note.incident_id == incident.id, Note.kind == kind)
        .order_by(Note.position, Note.id)
    ).all()
    if [text for text, _ in current] == lines:
        return
    authors = {text: who for text, who in current}
    session.execute(delete(Note).where(Note.incident_id == incident.id, Note.kind == kind))
    for position, line in enumerate(lines, 1):
        session.add(Note(incident_id=incident.id, kind=kind, position=position, text=line,
                         author_id=authors.get(line, author)))


def notes(session: Session, incident_id: int, kind: str) -> list[str]:
    return list(session.scalars(
        select(Note.text).where(Note.incident_id == incident_id, Note.kind == kind).order_by(Note.position, Note.id)
    ).all())


# --------------------------------------------------------------------------------------------- action items


def add_action_item(
    ctx: Context, session: Session, incident: Incident, request: ActionRequest, *, user_id: str,
    user_name: str | None = None,
) -> ActionItem:
    count = session.scalar(select(func.count()).select_from(ActionItem).where(ActionItem.incident_id == incident.id))
    if (count or 0) >= MAX_ACTIONS:
        raise UsageError("too_many_items", "action", limit=MAX_ACTIONS)
    now = ctx.clock.now()
    item = ActionItem(
        incident_id=incident.id, priority=request.priority, task=request.task, owner_id=request.owner_id,
        due_at=request.due_at, impact=request.impact, status="open", created_by=user_id, created_at=now,
        updated_at=now,
    )
    session.add(item)
    session.flush()
    # The timeline keeps who agreed to what, and the owner's name for the report (ids are not for readers).
    timeline.add_system_event(
        session, incident, actor=user_id, actor_name=user_name, at=now, action="action_item",
        data={"item": item.id, "priority": item.priority, "task": item.task, "owner": item.owner_id,
              "owner_name": request.owner_name, "due": item.due_at.isoformat() if item.due_at else None},
    )
    ctx.hooks.on_action_item_added.fire(session, item)  # reminders schedule its due date
    return item


def set_action_status(ctx: Context, session: Session, item: ActionItem, status: str) -> bool:
    """Moves an item to `status`; False when it is there already (a double click changes nothing)."""
    assert status in STATUSES
    if item.status == status:
        return False
    was_done = item.status == "done"
    item.status = status
    item.done_at = ctx.clock.now() if status == "done" else None
    item.updated_at = ctx.clock.now()
    if status == "done":
        ctx.hooks.on_action_item_done.fire(session, item)
    elif was_done:
        ctx.hooks.on_action_item_reopened.fire(session, item)
    return True


def list_actions(session: Session, incident_id: int) -> list[ActionItem]:
    order = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}
    items = session.scalars(select(ActionItem).where(ActionItem.incident_id == incident_id)).all()
    return sorted(items, key=lambda a: (a.status == "done", order.get(a.priority, 9), a.id))


def action_item_view(
    ctx: Context, item: ActionItem, incident: Incident, *, locale: str | None = None, changed_by: str | None = None,
    issue: issue_links.IssueLink | None = None,
) -> ActionItemView:
    locale = locale or ctx.locale
    body = ctx.renderer.message(
        "postmortem/action_item", locale, item=item, incident=incident, fmt=ctx.formatter(locale),
        now=ctx.clock.now(), changed_by=changed_by, issue=issue,
    )
    transitions = tuple(
        Transition(name, ctx.say(f"postmortem.button_{name}", locale))
        for name, target in TRANSITIONS.items() if target != item.status
    )
    return ActionItemView(item.id, body, transitions)


def post_action_item(ctx: Context, item_id: int) -> str | None:
    """Posts the item into the incident thread once; None while the thread does not exist yet, or while someone
    else holds the item's posting lease.

    The lease is taken by one conditional UPDATE and renewed while Slack is being asked, so the posting job and
    any instance's sweep never post one item twice, however slow Slack is. Taken after an earlier claim, whose post
    may have landed although Slack's answer never came, it searches the thread for the item's metadata first."""
    lease = incidents.announce_lease(ctx)  # the same bound: one post and one search, each with all its retries
    with ctx.db.session() as session:
        item = session.get_one(ActionItem, item_id)
        incident = session.get_one(Incident, item.incident_id)
        if item.message_ts:
            return item.message_ts
        if incident.announcement_ts is None:
            return None
        now, seen = ctx.clock.now(), item.post_claimed_until
        until = now + lease
        if not claim_lease(session, ActionItem.post_claimed_until, ActionItem.id == item_id,
                           ActionItem.message_ts.is_(None), now=now, until=until, seen=seen):
            return None
        message = ctx.presenter.action_item(action_item_view(ctx, item, incident,
                                                             issue=issue_links.for_item(session, item_id)))
        channel, thread_ts = incident.channel_id, incident.home_thread_ts
        metadata = {"event_type": ACTION_ITEM_EVENT, "event_payload": {"action_item_id": item.id}}
        since = item.created_at.timestamp()

    with leases.holding_row(ctx, lease, ActionItem.post_claimed_until, ActionItem.id == item_id,
                            ActionItem.message_ts.is_(None), held=until):
        ts = ctx.messenger.find_posted(channel, metadata, since=since, thread_ts=thread_ts) if seen else None
        if ts is None:
            ts = ctx.messenger.post_message(channel, message.text, blocks=message.blocks, thread_ts=thread_ts,
                                            metadata=metadata)
        with ctx.db.session() as session:
            session.execute(
                update(ActionItem).where(ActionItem.id == item_id, ActionItem.message_ts.is_(None))
                .values(message_ts=ts)
            )
    ctx.hooks.on_action_item_posted.fire(item_id)
    return ts


def refresh_action_item(ctx: Context, item_id: int, channel: str, ts: str, changed_by: str | None = None) -> None:
    with ctx.db.session() as session:
        item = session.get_one(ActionItem, item_id)
        incident = session.get_one(Incident, item.incident_id)
        message = ctx.presenter.action_item(action_item_view(ctx, item, incident, changed_by=changed_by,
                                                             issue=issue_links.for_item(session, item_id)))
    ctx.messenger.update_message(channel, ts, message.text, blocks=message.blocks)


def retry_unposted_action_items(ctx: Context) -> int:
    """The sweep: items whose message failed to post (or whose thread did not exist yet) are posted now."""
    now = ctx.clock.now()
    with ctx.db.session() as session:
        pending = session.scalars(
            select(ActionItem.id)
            .join(Incident, Incident.id == ActionItem.incident_id)
            .where(
                ActionItem.message_ts.is_(None),
                Incident.announcement_ts.is_not(None),
                or_(ActionItem.post_claimed_until.is_(None), ActionItem.post_claimed_until < now),
                ActionItem.created_at < now - UNPOSTED_RETRY_AFTER,
                ActionItem.created_at > now - UNPOSTED_GIVE_UP_AFTER,
            )
            .order_by(ActionItem.id)
            .limit(20)
        ).all()
    posted = 0
    for item_id in pending:
        try:
            if post_action_item(ctx, item_id):
                posted += 1
        except MessengerError as error:
            log.warning("action item %s still not posted: %s", item_id, error.kind)
            break  # Slack is refusing; the next sweep tries again
    return posted


def install(ctx: Context) -> None:
    ctx.hooks.on_sweep.register(retry_unposted_action_items)


# --------------------------------------------------------------------------------------------- impact


def _upsert_impact(session: Session, incident_id: int, impact: Impact, source: str, user: str | None,
                   now: datetime) -> bool:
    values = {"incident_id": incident_id, "field": impact.field, "value": impact.canonical(), "source": source,
              "updated_by": user, "updated_at": now}
    # A measurement never overwrites what a person typed: the condition is part of the one statement.
    statement = upsert(
        session, ImpactValue, values, index_elements=["incident_id", "field"],
        set_=lambda new: {k: new[k] for k in ("value", "source", "updated_by", "updated_at")},
        where=None if source == "manual" else ImpactValue.source != "manual",
    )
    # RETURNING names the row only when it was inserted or updated (rowcount is not exact here on psycopg).
    return session.execute(statement.returning(ImpactValue.id)).first() is not None


@dataclass(frozen=True)
class ImpactView:
    """One impact figure ready for words: numbers formatted, the change worked out (`trend`, `factor`, `change`)."""

    field: str
    source: str | None = None  # manual | measured; None when nobody has given it
    raw: str | None = None  # the stored text, shown as is when it is not in a form we write
    after: str | None = None
    before: str | None = None
    unit: str = ""
    approx: bool = False
    share: str | None = None
    trend: str | None = None  # up | down | same
    factor: str | None = None  # "18" when the value grew at least twofold (18배 / 18×)
    change: str | None = None  # "33" percent up or down otherwise

    @property
    def missing(self) -> bool:
        return self.source is None


def _ratio_text(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else number(round(value, 1))


def impact_view(field: str, stored: ImpactValue | None) -> ImpactView:
    if stored is None:
        return ImpactView(field)
    impact = read_impact(field, stored.value)
    if impact is None:
        return ImpactView(field, stored.source, stored.value)
    after = f"{int(impact.after):,}" if field == "users" and impact.after.is_integer() else number(impact.after)
    view = ImpactView(
        field, stored.source, stored.value, after=after, unit=impact.unit, approx=impact.approx,
        share=number(impact.share) if impact.share is not None else None,
    )
    if impact.before is None:
        return view
    before = number(impact.before)
    ratio = impact.ratio
    if ratio is None:
        return replace(view, before=before)
    if abs(ratio - 1) < 0.005:
        return replace(view, before=before, trend="same")
    if ratio >= 2:
        return replace(view, before=before, trend="up", factor=_ratio_text(ratio))
    if ratio > 1:
        return replace(view, before=before, trend="up", change=f"{(ratio - 1) * 100:.0f}")
    return replace(view, before=before, trend="down", change=f"{(1 - ratio) * 100:.0f}")


def impact_views(session: Session, incident_id: int) -> list[ImpactView]:
    """The guide's four figures in its order, each present or marked missing."""
    stored = {row.field: row for row in session.scalars(
        select(ImpactValue).where(ImpactValue.incident_id == incident_id)
    )}
    return [impact_view(field, stored.get(field)) for field in IMPACT_FIELDS]


def record_manual_impact(ctx: Context, session: Session, incident: Incident, impact: Impact, user: str) -> None:
    _upsert_impact(session, incident.id, impact, "manual", user, ctx.clock.now())


def record_measured_impact(ctx: Context, session: Session, incident: Incident, field: str, value: str) -> bool:
    """For the evidence domain: stores a measured impact value unless a person has set that field.

    `field` is one of users, error-rate, p95, availability; `value` is written as the command takes it
    (`0.5%→9%`, `150ms→450ms`, `90.5%`, `500`). Raises ValueError (a UsageError) on a malformed value.
    Returns True when the value was stored, False when a manual value wins.
    """
    if field not in IMPACT_FIELDS:
        raise UsageError("bad_impact_field", "impact", value=field)
    impact = parse_impact_value(field, value)
    return _upsert_impact(session, incident.id, impact, "measured", None, ctx.clock.now())


# --------------------------------------------------------------------------------------------- checklist


def checked_keys(session: Session, incident_id: int) -> set[str]:
    return set(session.scalars(
        select(ChecklistItem.key).where(ChecklistItem.incident_id == incident_id, ChecklistItem.checked.is_(True))
    ).all())


def set_checklist(
    ctx: Context, session: Session, incident_id: int, changes: dict[str, bool], user: str | None
) -> int:
    """Ticks or unticks the given keys; unknown keys are ignored. Returns how many were applied."""
    now = ctx.clock.now()
    applied = 0
    for key, checked in changes.items():
        if key not in checklist.ALL_KEYS:
            continue
        session.execute(upsert(
            session, ChecklistItem,
            {"incident_id": incident_id, "key": key, "checked": checked, "checked_by": user if checked else None,
             "checked_at": now if checked else None},
            index_elements=["incident_id", "key"],
            set_=lambda new: {k: new[k] for k in ("checked", "checked_by", "checked_at")},
        ))
        applied += 1
    return applied


def checklist_view(ctx: Context, incident: Incident, checked: Iterable[str], locale: str | None = None
                   ) -> ChecklistView:
    locale = locale or ctx.locale
    groups = checklist.build(checked, locale)
    body = ctx.renderer.message("postmortem/checklist", locale, incident=incident, groups=groups)
    return ChecklistView(incident.id, body, tuple(groups))


def post_checklist(ctx: Context, incident_id: int) -> str:
    """Posts the checklist into the thread (a fresh copy each time) and remembers the newest message."""
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        if incident.announcement_ts is None:
            raise MessengerError("announcement_not_posted", "the incident thread does not exist yet")
        message = ctx.presenter.checklist(checklist_view(ctx, incident, checked_keys(session, incident_id)))
        channel, thread_ts = incident.channel_id, incident.home_thread_ts
    ts = ctx.messenger.post_message(channel, message.text, blocks=message.blocks, thread_ts=thread_ts)
    with ctx.db.session() as session:
        session.execute(update(Incident).where(Incident.id == incident_id).values(checklist_ts=ts))
    return ts


def refresh_checklist(ctx: Context, incident_id: int, channel: str, ts: str) -> None:
    with ctx.db.session() as session:
        incident = session.get_one(Incident, incident_id)
        message = ctx.presenter.checklist(checklist_view(ctx, incident, checked_keys(session, incident_id)))
    ctx.messenger.update_message(channel, ts, message.text, blocks=message.blocks)


# --------------------------------------------------------------------------------------------- the edit modal

# The fields `/postmortem edit` offers, in order: (name, label macro, hint macro or None).
EDIT_FIELDS = (
    ("root_cause", "modal_root_cause", "modal_root_cause_hint"),
    ("lessons", "modal_lessons", "modal_lessons_hint"),
    ("prevention", "modal_prevention", "modal_prevention_hint"),
    ("conclusion", "modal_conclusion", None),
)
EDIT_FIELD_NAMES = tuple(name for name, _, _ in EDIT_FIELDS)


@dataclass(frozen=True)
class EditField:
    name: str  # what save_edit reads it as
    label: str
    hint: str | None
    value: str  # what is stored now; "" when nothing is


@dataclass(frozen=True)
class EditForm:
    """The post-mortem's free text as one form, each field holding what is stored now."""

    incident_id: int
    header: str
    title: str
    submit: str
    close: str
    fields: tuple[EditField, ...]


def edit_values(session: Session, incident: Incident) -> dict[str, str]:
    return {
        "root_cause": incident.root_cause or "",
        "lessons": "\n".join(notes(session, incident.id, "lesson")),
        "prevention": "\n".join(notes(session, incident.id, "prevent")),
        "conclusion": incident.conclusion or "",
    }


def edit_form(ctx: Context, session: Session, incident: Incident, locale: str | None = None) -> EditForm:
    locale = locale or ctx.locale
    values = edit_values(session, incident)
    return EditForm(
        incident_id=incident.id,
        header=ctx.renderer.text("postmortem/edit_header", locale, incident=incident),
        title=ctx.say("postmortem.modal_title", locale),
        submit=ctx.say("postmortem.modal_submit", locale),
        close=ctx.say("postmortem.modal_close", locale),
        fields=tuple(
            EditField(name, ctx.say(f"postmortem.{label}", locale),
                      ctx.say(f"postmortem.{hint}", locale) if hint else None, values.get(name, ""))
            for name, label, hint in EDIT_FIELDS
        ),
    )


def save_edit(session: Session, incident: Incident, values: dict[str, str], user: str | None) -> None:
    """Stores a submitted modal. `values` must have been validated (see handlers/views/postmortem.py)."""
    set_root_cause(session, incident, values["root_cause"].strip() or None)
    set_conclusion(session, incident, values["conclusion"].strip() or None)
    replace_notes(session, incident, "lesson", parse_lines(values["lessons"], "edit"), user)
    replace_notes(session, incident, "prevent", parse_lines(values["prevention"], "edit"), user)


# --------------------------------------------------------------------------------------------- names


def remember_owner_name(ctx: Context, item_id: int) -> None:
    """Replaces the @handle Slack sent with the owner's display name on the item's timeline entry (a nicety:
    a failed lookup keeps the handle)."""
    with ctx.db.session() as session:
        item = session.get_one(ActionItem, item_id)
        owner, incident_id = item.owner_id, item.incident_id
    if not owner or owner.startswith("@"):
        return
    name = ctx.messenger.user_name(owner)
    if not name:
        return
    with ctx.db.session() as session:
        events = session.scalars(
            select(TimelineEvent).where(
                TimelineEvent.incident_id == incident_id, TimelineEvent.kind == "system",
                TimelineEvent.data["action"].as_string() == "action_item",
                TimelineEvent.data["item"].as_integer() == item_id,
            )
        ).all()
        for event in events:
            if (event.data or {}).get("owner_name") != name:
                event.data = {**(event.data or {}), "owner_name": name}
