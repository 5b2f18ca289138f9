"""What GitHub tells us about the issues of action items, by webhook or by the sweep's reconciliation.

An issue closed on GitHub marks its action item done (its reminders stop, its Slack message loses the Done
button), reopened takes it back, a new title is noted on the incident's timeline. Both ways in end in
`apply_remote`, which changes the item only when GitHub's state changed since we last saw it: a state GitHub
still holds while a change made in Slack is on its way there is not an echo to undo it, and a webhook for a change
we made ourselves finds the state it carries already stored and does nothing.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bot import postmortem, timeline
from bot.context import Context
from bot.jobs import after_commit
from bot.ports import IssueTracker, IssueTrackerError, MessengerError, RemoteIssue
from bot.render import linkable
from bot.sanitize import clean_text
from storage.models import ActionItem, GithubDelivery, GithubIssue, GithubRepoSync, Incident
from storage.sql import claim_lease, upsert

log = logging.getLogger(__name__)

MARKER_RE = re.compile(r"<!--\s*incident-bot:action:(\d{1,12})\s*-->")
ACTIONS = ("opened", "closed", "reopened", "edited")
RECONCILE_EVERY = timedelta(minutes=5)
RECONCILE_OVERLAP = timedelta(minutes=1)  # GitHub's `since` is to the second; re-read a little to lose nothing
RECONCILE_LEASE = timedelta(minutes=2)
DELIVERIES_KEPT = timedelta(days=30)  # GitHub offers a redelivery of the last few days' deliveries


def marker(item_id: int) -> str:
    return f"incident-bot:action:{item_id}"


# ---- the webhook's event -----------------------------------------------------------------------------------------


class NotAnIssueEvent(ValueError):
    """The body is not an `issues` event we can read; the message says why (the 400 answer)."""


@dataclass(frozen=True)
class IssueEvent:
    action: str
    repo: str
    issue: RemoteIssue
    sender: str | None


def parse_issue_event(raw: bytes) -> IssueEvent:
    """Raises NotAnIssueEvent; never anything else, whatever the bytes."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise NotAnIssueEvent("the body is not JSON in UTF-8") from None
    if not isinstance(body, dict):
        raise NotAnIssueEvent("expected a JSON object")
    issue, repository, sender = body.get("issue"), body.get("repository"), body.get("sender")
    if not isinstance(issue, dict) or not isinstance(repository, dict):
        raise NotAnIssueEvent("`issue` and `repository` must be objects")
    number, state = issue.get("number"), issue.get("state")
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**31:
        raise NotAnIssueEvent("`issue.number` must be a positive number")
    if state not in ("open", "closed"):
        raise NotAnIssueEvent("`issue.state` must be \"open\" or \"closed\"")
    return IssueEvent(
        action=_text(body.get("action"), 32),
        repo=_text(repository.get("full_name"), 140),
        issue=RemoteIssue(number=number, url=_text(issue.get("html_url"), 2000), state=state,
                          title=_text(issue.get("title"), 1000), body=_text(issue.get("body"), 70_000),
                          updated_at=_time(issue.get("updated_at"))),
        sender=_text((sender or {}).get("login") if isinstance(sender, dict) else None, 39) or None,
    )


def _text(value: Any, limit: int) -> str:
    return clean_text(value)[:limit] if isinstance(value, str) else ""


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def receive(ctx: Context, session: Session, delivery_id: str | None, event: IssueEvent) -> str:
    """Stores a delivery and what it changes, in the caller's transaction: `duplicate` when this delivery was seen
    already, else what apply_remote says (`applied`, `unchanged`, `stale`, `ignored`)."""
    if delivery_id:
        statement = upsert(session, GithubDelivery, {"delivery_id": delivery_id[:64], "event": "issues",
                                                     "received_at": ctx.clock.now()}, index_elements=["delivery_id"])
        if session.execute(statement.returning(GithubDelivery.delivery_id)).first() is None:
            return "duplicate"
    if event.action not in ACTIONS:
        return "ignored"
    return apply_remote(ctx, session, event.repo, event.issue, sender=event.sender)


# ---- applying GitHub's state ---------------------------------------------------------------------------------------


def apply_remote(ctx: Context, session: Session, repo: str, remote: RemoteIssue, *, sender: str | None) -> str:
    row = session.scalars(
        select(GithubIssue).where(GithubIssue.repo == repo, GithubIssue.number == remote.number).with_for_update()
    ).first() or _adopt(session, repo, remote)
    if row is None:
        return "ignored"  # not an action item's issue
    if remote.updated_at and row.remote_updated_at and remote.updated_at < row.remote_updated_at:
        return "stale"  # an older delivery overtaken by what we saw since
    item = session.get_one(ActionItem, row.action_item_id)
    incident = session.get_one(Incident, item.incident_id)
    now = ctx.clock.now()
    changed = False
    if row.title is not None and remote.title and remote.title != row.title:
        timeline.add_system_event(session, incident, actor=None, actor_name=sender, at=now, action="github_issue",
                                  data={"step": "retitled", "number": remote.number, "title": remote.title,
                                        "old_title": row.title, "by": sender})
        changed = True
    github_moved = remote.state != (row.state or "open")
    row.title = remote.title or row.title
    row.state = remote.state
    row.remote_updated_at = remote.updated_at or row.remote_updated_at
    wanted = "closed" if item.status == "done" else "open"
    if github_moved and remote.state != wanted:
        # Like a click on the item's button: the item's own message and done time show it, not the timeline.
        postmortem.set_action_status(ctx, session, item, "done" if remote.state == "closed" else "open")
        item_id = item.id
        after_commit(session, lambda: ctx.jobs.submit(refresh_item_message, ctx, item_id))
        changed = True
    return "applied" if changed else "unchanged"


def _adopt(session: Session, repo: str, remote: RemoteIssue) -> GithubIssue | None:
    """An issue of ours whose creation answer never arrived: its marker names the item, and the row takes it."""
    found = MARKER_RE.search(remote.body)
    if found is None:
        return None
    row = session.scalars(
        select(GithubIssue).where(GithubIssue.action_item_id == int(found.group(1)), GithubIssue.repo == repo,
                                  GithubIssue.number.is_(None)).with_for_update()
    ).first()
    if row is not None:
        row.number, row.url, row.failure = remote.number, linkable(remote.url), None
        row.next_attempt_at = None
    return row


def refresh_item_message(ctx: Context, item_id: int) -> None:
    """Redraws the item's Slack message (its status, buttons and link); the status is stored whatever Slack says."""
    with ctx.db.read() as session:
        item = session.get(ActionItem, item_id)
        incident = session.get(Incident, item.incident_id) if item is not None else None
        if item is None or incident is None or item.message_ts is None:
            return
        channel, ts = incident.channel_id, item.message_ts
    try:
        postmortem.refresh_action_item(ctx, item_id, channel, ts)
    except MessengerError as error:
        log.warning("action item message update failed: %s", error.kind, extra={"json_fields": {"item": item_id}})


# ---- reconciling without a webhook ------------------------------------------------------------------------------


def reconcile(ctx: Context, tracker: IssueTracker, repo: str) -> int:
    """Every RECONCILE_EVERY, one replica reads the repository's `incident` issues updated since its last read (one
    paged list call) and applies them as webhooks would be. Returns how many changed an item."""
    now = ctx.clock.now()
    with ctx.db.session() as session:
        session.execute(upsert(session, GithubRepoSync, {"repo": repo}, index_elements=["repo"]))
        state = session.get_one(GithubRepoSync, repo)
        if state.reconciled_at is not None and state.reconciled_at > now - RECONCILE_EVERY:
            return 0
        first = session.scalar(select(func.min(GithubIssue.created_at)).where(GithubIssue.repo == repo,
                                                                               GithubIssue.number.is_not(None)))
        if first is None:
            return 0  # no issue of ours yet
        since = (state.reconciled_at or first) - RECONCILE_OVERLAP
        if not claim_lease(session, GithubRepoSync.claimed_until, GithubRepoSync.repo == repo, now=now,
                           until=now + RECONCILE_LEASE):
            return 0
    changed = 0
    read_at: datetime | None = now  # None once the read failed
    try:
        remotes = tracker.updated_since(since, label="incident")
        for remote in remotes:
            with ctx.db.session() as session:
                changed += apply_remote(ctx, session, repo, remote, sender=None) == "applied"
    except IssueTrackerError as error:
        log.warning("GitHub issues not reconciled (%s); the next sweep tries again", error.kind)
        read_at = None  # the last successful read stays the next `since`
    with ctx.db.session() as session:
        state = session.get_one(GithubRepoSync, repo)
        state.claimed_until = None
        if read_at is not None:
            state.reconciled_at = read_at
    return changed


def forget_old_deliveries(ctx: Context) -> None:
    with ctx.db.session() as session:
        session.execute(delete(GithubDelivery).where(GithubDelivery.received_at < ctx.clock.now() - DELIVERIES_KEPT))
