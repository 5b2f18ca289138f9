"""The IssueTracker port (bot/ports.py) on PyGithub: one repository's issues over GitHub's REST API.

It lives beside the Slack messenger (handlers/messenger.py), the other adapter of a port the domain talks through,
so bot/ never imports a platform client. PyGithub is synchronous on `requests`, which the project already uses,
and follows GitHub's REST API closely; it talks to GITHUB_API_URL (the sandbox in tests and the demo) over HTTP.

No call is retried inside the client (`retry=None`): a creation resent after a lost answer could make a second
issue, and a rate limit's wait can be an hour, too long to hold a worker. Each failure becomes an
IssueTrackerError that says when GitHub allows the next request (`Retry-After`, else `X-RateLimit-Reset` when
`X-RateLimit-Remaining` is 0, else a minute for a secondary limit, as GitHub's rate-limit guide asks), and the
domain retries from the database. Until then this client refuses every call without sending it. PyGithub's own
spacing of writes (one second apart, GitHub's advice against secondary limits) is kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from github import Auth, Github, GithubException
from github.Issue import Issue

from bot.ports import IssueTrackerError, RemoteIssue
from bot.sanitize import clean_text

log = logging.getLogger(__name__)
T = TypeVar("T")

TIMEOUT_SECONDS = 10
SECONDARY_LIMIT_WAIT = timedelta(minutes=1)
RECENT_PAGES = 3  # pages of recently updated issues read when the search index has not caught up yet


class GithubIssueTracker:
    def __init__(self, repo: str, token: str, api_url: str, now: Callable[[], datetime]) -> None:
        self.repo = repo
        self._now = now
        self._github = Github(base_url=api_url, auth=Auth.Token(token), timeout=TIMEOUT_SECONDS, retry=None,
                              per_page=100, lazy=True)
        self._paused_until: datetime | None = None
        self._lock = threading.Lock()

    # ---- the port -------------------------------------------------------------------------------------------------

    def create_issue(self, title: str, body: str, *, labels: list[str], assignee: str | None) -> RemoteIssue:
        def create() -> Issue:
            repo = self._github.get_repo(self.repo)
            if assignee:
                return repo.create_issue(title=title, body=body, labels=labels, assignees=[assignee])
            return repo.create_issue(title=title, body=body, labels=labels)

        return self._call(lambda: _remote(create()), write=True)

    def find_by_marker(self, marker: str, *, created_since: datetime) -> RemoteIssue | None:
        def search() -> RemoteIssue | None:
            query = f'is:issue repo:{self.repo} "{marker}" in:body'
            for found in self._github.search_issues(query):
                if marker in (found.body or ""):
                    return _remote(found)
            # Search answers from an index that lags behind the issues; the list of issues is exact.
            repo = self._github.get_repo(self.repo)
            recent = repo.get_issues(state="all", since=created_since - timedelta(minutes=1), sort="created",
                                     direction="desc")
            for page in range(RECENT_PAGES):
                for issue in recent.get_page(page):
                    if marker in (issue.body or ""):
                        return _remote(issue)
            return None

        return self._call(search, write=False)

    def set_state(self, number: int, state: str) -> RemoteIssue:
        def edit() -> Issue:
            issue = self._github.get_repo(self.repo).get_issue(number)
            issue.edit(state=state, state_reason="completed" if state == "closed" else "reopened")
            return issue

        return self._call(lambda: _remote(edit()), write=True)

    def updated_since(self, since: datetime, *, label: str) -> list[RemoteIssue]:
        def listed() -> list[RemoteIssue]:
            repo = self._github.get_repo(self.repo)
            issues: Iterable[Issue] = repo.get_issues(state="all", labels=[label], since=since, sort="updated",
                                                      direction="asc")
            # Pull requests are issues too; theirs is a /pull/ page (the key marking them is absent on issues,
            # and reading an absent key would make PyGithub fetch each issue again).
            return [_remote(issue) for issue in issues if "/pull/" not in (issue.html_url or "")]

        return self._call(listed, write=False)

    # ---- errors and limits ----------------------------------------------------------------------------------------

    def _call(self, work: Callable[[], T], *, write: bool) -> T:
        with self._lock:
            paused = self._paused_until
        if paused is not None and self._now() < paused:
            raise IssueTrackerError("rate_limited", "waiting for GitHub's rate limit to reset", retry_at=paused)
        try:
            return work()
        except GithubException as error:
            raised = self._error(error, write=write)
        except requests.RequestException as error:
            # No answer: a write may have been carried out all the same.
            raised = IssueTrackerError("unreachable", type(error).__name__, outcome_unknown=write)
        if raised.kind == "rate_limited" and raised.retry_at is not None:
            with self._lock:
                self._paused_until = max(raised.retry_at, self._paused_until or raised.retry_at)
        raise raised

    def _error(self, error: GithubException, *, write: bool) -> IssueTrackerError:
        status = error.status
        headers = {k.lower(): v for k, v in (error.headers or {}).items()}
        data = error.data if isinstance(error.data, dict) else {}
        message = str(error.message or data.get("message") or "")
        detail = clean_text(f"{status} {message}".strip())[:200]
        if status == 401:
            return IssueTrackerError("bad_credentials", detail)
        if status in (403, 429):
            retry_at = self._retry_at(headers, message)
            if retry_at is not None:
                return IssueTrackerError("rate_limited", detail, retry_at=retry_at)
            return IssueTrackerError("forbidden", detail)
        if status == 404:
            # GitHub answers 404 as well for a repository the token may not see.
            return IssueTrackerError("not_found", detail)
        if status == 422 and _invalid_field(error.data, "assignees", "assignee"):
            return IssueTrackerError("invalid_assignee", detail)
        if status >= 500:
            return IssueTrackerError("server_error", detail, outcome_unknown=write)
        return IssueTrackerError("rejected", detail)

    def _retry_at(self, headers: dict[str, str], message: str) -> datetime | None:
        """When GitHub allows the next request after a 403 or 429, or None when it is no rate limit at all."""
        now = self._now()
        retry_after = headers.get("retry-after", "")
        if retry_after.strip().isdigit():
            return now + timedelta(seconds=int(retry_after))
        reset = headers.get("x-ratelimit-reset", "")
        if headers.get("x-ratelimit-remaining") == "0" and reset.strip().isdigit():
            return max(now, datetime.fromtimestamp(int(reset), UTC)) + timedelta(seconds=1)
        if "rate limit" in message.lower():
            return now + SECONDARY_LIMIT_WAIT
        return None


def _invalid_field(data: Any, *fields: str) -> bool:
    errors = data.get("errors") if isinstance(data, dict) else None
    return any(isinstance(e, dict) and e.get("field") in fields for e in errors or [])


def _remote(issue: Any) -> RemoteIssue:
    return RemoteIssue(number=int(issue.number), url=str(issue.html_url or ""), state=str(issue.state or "open"),
                       title=clean_text(issue.title or ""), body=issue.body or "", updated_at=issue.updated_at)
