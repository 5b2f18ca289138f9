"""The App Home: for one viewer, the open incidents they may see, their own open action items, and the last 30 days
in three numbers (bot.stats). Domain only: handlers/blocks/home.py lays the words out, handlers/home.py publishes.

A home is built for its viewer when they open it, never pushed to everyone on a change. Opens by the same person
within DEBOUNCE publish once (per process: a second instance may publish again, which is harmless). Private
incidents follow bot.access as `/incident list` does: public channels' incidents for everyone, the others for their
channels' members, asked of Slack (users.conversations, cached 60 s). When Slack cannot say, the home shows what is
public and says so. The viewer's action items are filtered the same way: an item names its incident and its task.

Links to an incident's thread are built from the workspace URL (auth.test, asked once per process) and the
announcement's ts, as Slack's permalinks are: chat.getPermalink would cost one request per incident per open.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, select
from sqlalchemy.orm import Session

from bot import access, slack_links, stats
from bot.context import Context
from bot.parsing import CLOSED_STATUSES
from bot.ports import MessengerError
from storage.models import ActionItem, ChannelVisibility, Incident, RoleAssignment

log = logging.getLogger(__name__)

DEBOUNCE = timedelta(seconds=5)
SHOWN = 15  # incidents, and action items, listed; the rest are counted
SCANNED = 60  # rows read of each before filtering by access
STATS_DAYS = 30


class Refreshes:
    """When each viewer's home was last published by this process, so that a burst of opens publishes once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, datetime] = {}

    def claim(self, user_id: str, now: datetime) -> bool:
        with self._lock:
            last = self._last.get(user_id)
            if last is not None and now - last < DEBOUNCE:
                return False
            self._last[user_id] = now
            return True

    def release(self, user_id: str) -> None:
        """A publish that failed: the next open tries again at once."""
        with self._lock:
            self._last.pop(user_id, None)


def refreshes(ctx: Context) -> Refreshes:
    return ctx.shared(Refreshes, Refreshes)


@dataclass(frozen=True)
class HomeIncident:
    public_id: str
    title: str
    severity: str
    status: str
    age: timedelta
    lead_id: str | None
    link: str | None


@dataclass(frozen=True)
class HomeItem:
    public_id: str
    priority: str
    task: str
    status: str
    due_at: datetime | None
    overdue: bool


@dataclass(frozen=True)
class HomeData:
    user_id: str
    now: datetime
    incidents: tuple[HomeIncident, ...]
    more_incidents: int
    items: tuple[HomeItem, ...]
    more_items: int
    summary: stats.Summary
    private_unknown: bool  # Slack could not say which private channels the viewer is in


@dataclass(frozen=True)
class HomeSection:
    title: str  # plain text
    lines: tuple[str, ...]  # mrkdwn, one block each
    note: str | None = None  # mrkdwn, small print under the lines


@dataclass(frozen=True)
class HomeView:
    """The home's words, in order; the platform lays them out."""

    sections: tuple[HomeSection, ...]
    footer: str


def build(ctx: Context, user_id: str) -> HomeData:
    """Reads what `user_id` may see (asking Slack, off any transaction, when their channels are not cached)."""
    workspace = slack_links.workspace_url(ctx)
    try:
        with ctx.db.read() as session:
            return _gather(ctx, session, user_id, workspace, public_only=False)
    except access.AccessPending as pending:
        try:
            access.look_up(ctx, pending)
        except MessengerError as error:
            log.warning("home of %s: channel memberships unavailable (%s); showing public incidents", user_id,
                        error.kind)
            with ctx.db.read() as session:
                return _gather(ctx, session, user_id, workspace, public_only=True)
    try:
        with ctx.db.read() as session:
            return _gather(ctx, session, user_id, workspace, public_only=False)
    except access.AccessPending:  # the answer expired in between: fail closed
        with ctx.db.read() as session:
            return _gather(ctx, session, user_id, workspace, public_only=True)


def _gather(ctx: Context, session: Session, user_id: str, workspace: str | None, *, public_only: bool
            ) -> HomeData:
    now = ctx.clock.now()
    open_rows = session.execute(
        select(Incident, RoleAssignment.user_id)
        .outerjoin(RoleAssignment, and_(RoleAssignment.incident_id == Incident.id, RoleAssignment.role == "lead"))
        .where(Incident.status.not_in(CLOSED_STATUSES))
        .order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(SCANNED)
    ).all()
    overdue = and_(ActionItem.due_at.is_not(None), ActionItem.due_at < now)
    item_rows = session.execute(
        select(ActionItem, Incident.public_id, Incident.channel_id)
        .join(Incident, Incident.id == ActionItem.incident_id)
        .where(ActionItem.owner_id == user_id, ActionItem.status != "done", Incident.status != "cancelled")
        # Overdue first, then by due date (undated last), then in the order they were given.
        .order_by(case((overdue, 0), else_=1), ActionItem.due_at.is_(None), ActionItem.due_at, ActionItem.id)
        .limit(SCANNED)
    ).all()
    zone = ctx.settings.timezone
    period = stats.last_days(STATS_DAYS, now, zone)
    stat_rows = stats.incident_rows(session, period)
    channels = ({i.channel_id for i, _ in open_rows} | {channel for _, _, channel in item_rows}
                | {row.channel_id for row in stat_rows})
    seen = (_public(session, channels) if public_only
            else access.asker(ctx, user_id, "").visible_channels(session, channels))

    incidents = [
        HomeIncident(i.public_id, i.title, i.severity, i.status, max(now - i.opened_at, timedelta(0)), lead,
                     slack_links.thread_link(workspace, i))
        for i, lead in open_rows if i.channel_id in seen
    ]
    items = [
        HomeItem(public_id, item.priority, item.task, item.status, item.due_at,
                 item.due_at is not None and item.due_at < now)
        for item, public_id, channel in item_rows if channel in seen
    ]
    return HomeData(
        user_id=user_id, now=now, incidents=tuple(incidents[:SHOWN]), more_incidents=max(len(incidents) - SHOWN, 0),
        items=tuple(items[:SHOWN]), more_items=max(len(items) - SHOWN, 0),
        summary=stats.summarize(stats.visible(stat_rows, seen), period, zone), private_unknown=public_only,
    )


def _public(session: Session, channels: set[str]) -> set[str]:
    return set(session.scalars(select(ChannelVisibility.channel_id).where(
        ChannelVisibility.channel_id.in_(channels), ChannelVisibility.is_private.is_(False))))


def view(ctx: Context, data: HomeData) -> HomeView:
    """The home's words from templates/messages/home.j2."""
    fmt = ctx.formatter()
    incidents = HomeSection(
        title=ctx.say("home.incidents_title"),
        lines=tuple(ctx.say("home.incident", i=i, fmt=fmt) for i in data.incidents)
        or (ctx.say("home.no_incidents"),),
        note=_note(ctx, data.more_incidents, data.private_unknown, "incidents"),
    )
    items = HomeSection(
        title=ctx.say("home.items_title"),
        lines=tuple(ctx.say("home.item", item=item, fmt=fmt) for item in data.items) or (ctx.say("home.no_items"),),
        note=_note(ctx, data.more_items, False, "items"),
    )
    summary = data.summary
    numbers = HomeSection(
        title=ctx.say("home.numbers_title", days=STATS_DAYS),
        lines=(ctx.say("home.numbers", incidents=summary.incidents, detect=summary.detect,
                       recover=summary.recover, fmt=fmt),),
        note=ctx.say("home.numbers_note", detect=summary.detect, recover=summary.recover),
    )
    local = fmt.local(data.now)
    footer = ctx.say("home.footer", at=f"{local:%Y-%m-%d %H:%M} {fmt.abbreviation(local)}")
    return HomeView((incidents, items, numbers), footer)


def _note(ctx: Context, more: int, private_unknown: bool, what: str) -> str | None:
    note = ctx.say("home.more", more=more, what=what) if more else ""
    if private_unknown:
        note = f"{note} {ctx.say('home.private_unknown')}".strip()
    return note or None
