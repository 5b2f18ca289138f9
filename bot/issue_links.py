"""The GitHub issue of each action item, as its Slack message and the report show it (a link, `#12`).

A leaf: bot/postmortem.py and bot/report.py read the links here, and bot/github_sync.py, which imports them both,
keeps the rows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.render import linkable
from storage.models import ActionItem, GithubIssue


@dataclass(frozen=True)
class IssueLink:
    number: int
    url: str | None  # None when GitHub's answer held no URL we would put in a link


def for_item(session: Session, item_id: int) -> IssueLink | None:
    row = session.execute(
        select(GithubIssue.number, GithubIssue.url).where(GithubIssue.action_item_id == item_id,
                                                           GithubIssue.number.is_not(None))
    ).first()
    return IssueLink(row.number, linkable(row.url)) if row is not None else None


def for_incident(session: Session, incident_id: int) -> dict[int, IssueLink]:
    """Every linked item of the incident, by action item id: one statement, whatever the number of items."""
    rows = session.execute(
        select(GithubIssue.action_item_id, GithubIssue.number, GithubIssue.url)
        .join(ActionItem, ActionItem.id == GithubIssue.action_item_id)
        .where(ActionItem.incident_id == incident_id, GithubIssue.number.is_not(None))
    ).all()
    return {row.action_item_id: IssueLink(row.number, linkable(row.url)) for row in rows}
