"""Action items kept in GitHub Issues (GITHUB_REPO, GITHUB_TOKEN): one issue per item, whatever fails.

- Adding an item stores its `github_issues` row in the same transaction. The issue is created after the ack, once
  the item's message is in Slack (on_action_item_posted), and by the sweep for whatever a crash, Slack, GitHub or a
  rate limit left undone.
- Each attempt claims the row's lease (storage.sql.claim_lease) and commits `create_attempted_at` before GitHub is
  asked, so every later attempt first looks for the item's marker (`<!-- incident-bot:action:<id> -->`, by the
  search API, then the list of recent issues): an answer lost after GitHub made the issue never makes a second one.
- Done or reopened in Slack pushes the issue's state; closed or reopened on GitHub comes back through
  bot/github_events.py. A 5xx, a dropped connection or a rate limit waits in `next_attempt_at` (the reset GitHub
  names, or a doubling backoff). A bad token or a repository the token can't see is told once to whoever added the
  item, and retried hourly; the item stays in Slack.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from bot import github_events, postmortem, slack_links
from bot.context import Context
from bot.jobs import after_commit
from bot.parsing import UsageError, decode, parse_mention
from bot.ports import IssueTracker, IssueTrackerError, MessengerError, RemoteIssue
from bot.reminders import retry_delay
from bot.render import linkable
from bot.settings import GITHUB_LOGIN
from storage.models import ActionItem, GithubIssue, GithubLogin, Incident
from storage.sql import claim_lease, upsert

log = logging.getLogger(__name__)

TRACKER = "github_sync.tracker"
LABEL = "incident"
LEASE = timedelta(minutes=2)  # one attempt at its worst: the search, the list and the creation, 10 s each
NEEDS_A_PERSON = ("bad_credentials", "not_found", "forbidden")
FAILURE_RETRY = timedelta(hours=1)
PENDING_LIMIT = 20
TITLE_LIMIT = 256  # a title line, not the task's whole text
MAX_STEPS = 4  # create, push, show: a step never repeats unless something changed meanwhile


def install(ctx: Context, tracker: IssueTracker) -> None:
    ctx.extras[TRACKER] = tracker
    ctx.hooks.on_action_item_added.register(_on_added)
    ctx.hooks.on_action_item_posted.register(advance)
    ctx.hooks.on_action_item_done.register(_on_status_changed)
    ctx.hooks.on_action_item_reopened.register(_on_status_changed)
    ctx.hooks.on_sweep.register(sweep)


def tracker_of(ctx: Context) -> IssueTracker | None:
    found: IssueTracker | None = ctx.extras.get(TRACKER)
    return found


def _on_added(ctx: Context, session: Session, item: ActionItem) -> None:
    assert ctx.settings.github_repo is not None
    # Created once the item's message is in Slack (on_action_item_posted), so the link is added to a message
    # that exists; when Slack refuses the post, the sweep creates it.
    session.add(GithubIssue(action_item_id=item.id, repo=ctx.settings.github_repo, attempts=0, shown=False,
                            created_at=ctx.clock.now()))


def _on_status_changed(ctx: Context, session: Session, item: ActionItem) -> None:
    item_id = item.id
    after_commit(session, lambda: ctx.jobs.submit(advance, ctx, item_id))


# ---- the work one item's issue needs ----------------------------------------------------------------------------


def _wanted(item: ActionItem) -> str:
    return "closed" if item.status == "done" else "open"


def _work(row: GithubIssue, item: ActionItem) -> str | None:
    if row.number is None:
        return "create"
    if row.state is not None and row.state != _wanted(item):
        return "push"
    if not row.shown and item.message_ts is not None:
        return "show"
    return None


def advance(ctx: Context, item_id: int) -> None:
    """Whatever the item's issue still needs: safe to call any number of times, anywhere (the lease decides)."""
    for _ in range(MAX_STEPS):
        if not _step(ctx, item_id):
            return


@dataclass(frozen=True)
class _Creation:
    item: ActionItem
    incident: Incident
    impact: list[postmortem.ImpactView]
    assignee: str | None
    since: datetime | None  # an earlier attempt's start: look for its issue before making one


def _step(ctx: Context, item_id: int) -> bool:
    tracker = tracker_of(ctx)
    if tracker is None:
        return False
    now = ctx.clock.now()
    with ctx.db.session() as session:
        row = session.scalars(select(GithubIssue).where(GithubIssue.action_item_id == item_id)).first()
        item = session.get(ActionItem, item_id)
        if row is None or item is None:
            return False
        work = _work(row, item)
        if work is None:
            return False
        row_id, number, wanted = row.id, row.number, _wanted(item)
        if work != "show":
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                return False
            if not claim_lease(session, GithubIssue.claimed_until, GithubIssue.id == row_id, now=now,
                               until=now + LEASE):
                return False
        creation = None
        if work == "create":
            owner = item.owner_id
            creation = _Creation(
                item=item, incident=session.get_one(Incident, item.incident_id),
                impact=[v for v in postmortem.impact_views(session, item.incident_id) if not v.missing],
                assignee=session.scalar(select(GithubLogin.login).where(GithubLogin.slack_user_id == owner))
                if owner else None,
                since=row.create_attempted_at,
            )
            if row.create_attempted_at is None:
                row.create_attempted_at = now  # committed before GitHub is asked
    if work == "show":
        return _show(ctx, row_id, item_id)
    assignee = None
    try:
        if creation is not None:
            remote, assignee = _create(ctx, tracker, creation)
        else:
            remote = tracker.set_state(_known(number), wanted)
    except IssueTrackerError as error:
        _failed(ctx, row_id, error)
        return False
    _record(ctx, row_id, remote, assignee=assignee)
    log.info("GitHub issue %s", "created" if creation else f"set {wanted}",
             extra={"json_fields": {"item": item_id, "issue": remote.number}})
    return True


def _known(number: int | None) -> int:
    assert number is not None  # only an issue that exists is pushed
    return number


def _show(ctx: Context, row_id: int, item_id: int) -> bool:
    """The item's Slack message, posted before its issue existed, gets the link."""
    with ctx.db.read() as session:
        item = session.get_one(ActionItem, item_id)
        channel, ts = session.get_one(Incident, item.incident_id).channel_id, item.message_ts
    if ts is None:
        return False
    try:
        postmortem.refresh_action_item(ctx, item_id, channel, ts)
    except MessengerError as error:
        log.warning("action item message not redrawn with its issue (%s); the sweep retries", error.kind)
        return False
    with ctx.db.session() as session:
        session.execute(update(GithubIssue).where(GithubIssue.id == row_id).values(shown=True))
    return True


def _create(ctx: Context, tracker: IssueTracker, creation: _Creation) -> tuple[RemoteIssue, str | None]:
    """The issue (found by its marker, or made) and whom it was assigned to, as far as we know."""
    item = creation.item
    if creation.since is not None:
        found = tracker.find_by_marker(github_events.marker(item.id), created_since=creation.since)
        if found is not None:
            return found, None
    title = f"[{item.priority}] {item.task}"
    title = title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"
    labels = [LABEL, item.priority]
    try:
        made = tracker.create_issue(title, _body(ctx, creation, creation.assignee), labels=labels,
                                    assignee=creation.assignee)
        return made, creation.assignee
    except IssueTrackerError as error:
        if error.kind != "invalid_assignee" or creation.assignee is None:
            raise
    # GitHub refused the login (no access to the repository, or a typo): unassigned, and the body says so. Nothing
    # was created, so nothing is looked for.
    made = tracker.create_issue(title, _body(ctx, creation, None, refused=creation.assignee), labels=labels,
                                assignee=None)
    return made, None


def _body(ctx: Context, creation: _Creation, assignee: str | None, *, refused: str | None = None) -> str:
    item, incident = creation.item, creation.incident
    thread = slack_links.thread_link(slack_links.workspace_url(ctx), incident)
    body = ctx.renderer.markdown_template("github/issue_body.md.j2", ctx.locale).render(
        item=item, incident=incident, marker=github_events.marker(item.id), assignee=assignee, refused=refused,
        owner_name=_owner_name(ctx, item.owner_id), thread=thread, fmt=ctx.formatter(),
        impact=creation.impact,
    )
    return _defuse_mentions(body)


def _owner_name(ctx: Context, owner: str | None) -> str | None:
    if not owner:
        return None
    if owner.startswith("@"):
        return owner[1:]  # a team, as typed
    try:
        return ctx.messenger.user_name(owner) or owner
    except MessengerError:
        return owner


def _defuse_mentions(text: str) -> str:
    """Text typed in Slack never notifies anyone on GitHub: `@name` gets a zero-width joiner after the `@`."""
    return re.sub(r"@(?=[A-Za-z0-9])", "@\u200d", text)


def _record(ctx: Context, row_id: int, remote: RemoteIssue, *, assignee: str | None) -> None:
    with ctx.db.session() as session:
        row = session.get_one(GithubIssue, row_id, with_for_update=True, populate_existing=True)
        if row.number is None:  # else the `opened` webhook told us first
            row.number, row.url = remote.number, linkable(remote.url)
        row.assignee = assignee or row.assignee
        if row.remote_updated_at is None or remote.updated_at is None or remote.updated_at >= row.remote_updated_at:
            row.state, row.title = remote.state, remote.title
            row.remote_updated_at = remote.updated_at or row.remote_updated_at
        row.claimed_until, row.next_attempt_at, row.attempts = None, None, 0
        row.last_error, row.failure = None, None


def _failed(ctx: Context, row_id: int, error: IssueTrackerError) -> None:
    now = ctx.clock.now()
    with ctx.db.session() as session:
        row = session.get_one(GithubIssue, row_id, with_for_update=True, populate_existing=True)
        row.attempts += 1
        wait_until = error.retry_at or now + retry_delay(row.attempts)
        if error.kind in NEEDS_A_PERSON:
            row.failure = error.kind
            wait_until = max(wait_until, now + FAILURE_RETRY)
        row.next_attempt_at, row.claimed_until, row.last_error = wait_until, None, str(error)[:500]
        report = error.kind in NEEDS_A_PERSON and row.reported_at is None
        item_id = row.action_item_id
    log.warning("GitHub issue not synced (%s); retrying at %s", error.kind, wait_until.isoformat(),
                extra={"json_fields": {"item": item_id}})
    if report:
        _report(ctx, row_id, error.kind)


def _report(ctx: Context, row_id: int, kind: str) -> None:
    """Tells whoever added the item, once, that GitHub refused and a person must fix it; the item stays in Slack."""
    now = ctx.clock.now()
    with ctx.db.session() as session:
        taken = session.execute(
            update(GithubIssue).where(GithubIssue.id == row_id, GithubIssue.reported_at.is_(None))
            .values(reported_at=now).returning(GithubIssue.action_item_id)
        ).first()
        if taken is None:
            return
        item = session.get_one(ActionItem, taken.action_item_id)
        incident = session.get_one(Incident, item.incident_id)
        if not item.created_by:
            return
        text = ctx.say("github.sync_failed", item=item, reason=kind, repo=ctx.settings.github_repo)
        channel, user, thread = incident.channel_id, item.created_by, incident.home_thread_ts
    try:
        ctx.messenger.post_ephemeral(channel, user, text, thread_ts=thread)
    except MessengerError as error:
        log.warning("could not tell %s that GitHub refused (%s)", user, error.kind)
        with ctx.db.session() as session:  # the next refusal tells them
            session.execute(update(GithubIssue).where(GithubIssue.id == row_id).values(reported_at=None))


# ---- the sweep ----------------------------------------------------------------------------------------------------


def sweep(ctx: Context) -> None:
    """Items whose issue a crash, GitHub or a rate limit left behind; then, every few minutes, GitHub's side."""
    tracker = tracker_of(ctx)
    if tracker is None:
        return
    now = ctx.clock.now()
    with ctx.db.read() as session:
        wanted_other = or_(and_(ActionItem.status == "done", GithubIssue.state == "open"),
                           and_(ActionItem.status != "done", GithubIssue.state == "closed"))
        due = or_(GithubIssue.next_attempt_at.is_(None), GithubIssue.next_attempt_at <= now)
        free = or_(GithubIssue.claimed_until.is_(None), GithubIssue.claimed_until < now)
        item_ids = session.scalars(
            select(GithubIssue.action_item_id).join(ActionItem, ActionItem.id == GithubIssue.action_item_id).where(
                or_(and_(or_(GithubIssue.number.is_(None), wanted_other), due, free),
                    and_(GithubIssue.number.is_not(None), GithubIssue.shown.is_(False),
                         ActionItem.message_ts.is_not(None))),
            ).order_by(GithubIssue.id).limit(PENDING_LIMIT)
        ).all()
    for item_id in item_ids:
        try:
            advance(ctx, item_id)
        except Exception:  # one item's bug must not keep the others waiting
            log.exception("GitHub issue of action item %s not synced", item_id)
    assert ctx.settings.github_repo is not None
    github_events.reconcile(ctx, tracker, ctx.settings.github_repo)
    github_events.forget_old_deliveries(ctx)


# ---- `/incident github @user login` -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginRequest:
    user_id: str
    login: str | None  # None: show the mapping; "" (written `-`): remove it


def parse_login_request(rest: str) -> LoginRequest:
    words = rest.split()
    mentions = [m for m in (parse_mention(w) for w in words) if m is not None]
    others = [w for w in words if parse_mention(w) is None]
    if not mentions:
        loose = next((w for w in others if w.startswith("@")), None)
        if loose:  # `@name` as plain text: Slack could not resolve it to a person
            raise UsageError("unknown_user", "github", value=decode(loose)[:40])
        raise UsageError("github_missing_user", "github")
    if len(mentions) > 1 or len(others) > 1:
        raise UsageError("github_one_login", "github")
    login = decode(others[0]).removeprefix("@") if others else None
    if login is not None and login != "-" and not re.fullmatch(GITHUB_LOGIN, login):
        raise UsageError("github_bad_login", "github", value=login[:40])
    return LoginRequest(mentions[0][0], "" if login == "-" else login)


def set_login(ctx: Context, session: Session, request: LoginRequest, set_by: str) -> str | None:
    """Stores (or with "" removes) the mapping; returns the login now mapped. Items added later are assigned."""
    if request.login:
        session.execute(upsert(
            session, GithubLogin, {"slack_user_id": request.user_id, "login": request.login, "set_by": set_by,
                                   "set_at": ctx.clock.now()},
            index_elements=["slack_user_id"], set_=lambda new: {k: new[k] for k in ("login", "set_by", "set_at")},
        ))
    elif request.login == "":
        found = session.get(GithubLogin, request.user_id)
        if found is not None:
            session.delete(found)
    else:
        return session.scalar(select(GithubLogin.login).where(GithubLogin.slack_user_id == request.user_id))
    return request.login or None
