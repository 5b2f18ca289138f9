"""A local fake of the GitHub REST API parts incident-bot uses, served over loopback (stdlib, threaded).

As GitHub documents them (docs.github.com/rest, "Issues", "Search", "Rate limits for the REST API", "Webhook events
and payloads"):
* ``POST /repos/{owner}/{repo}/issues`` (201; 422 "Validation Failed" for an assignee who can't be assigned, or
  no title), ``GET`` and ``PATCH /repos/{owner}/{repo}/issues/{number}`` (state, state_reason, title), and
  ``GET /repos/{owner}/{repo}/issues`` with ``state``, ``labels``, ``since``, ``sort``, ``direction``, ``per_page``
  and ``page`` (pages linked by a ``Link`` header).
* ``GET /search/issues?q=…`` for the qualifiers the bot sends: ``is:issue``, ``repo:owner/name``, ``in:body`` and a
  quoted phrase.
* Every answer carries ``X-RateLimit-Limit/Remaining/Reset/Used/Resource`` (``core``, or ``search`` with its own
  smaller budget). A wrong or missing token gets 401 "Bad credentials", an unknown repository 404 "Not Found".
* Knobs: fail the next N requests with a 5xx, exhaust the primary rate limit (403 or 429 with remaining 0 until the
  reset) or hit a secondary one (``Retry-After``), create an issue and then drop the connection without answering,
  and change an issue "on GitHub" (close, reopen, retitle) the way a person would, which delivers a signed
  ``issues`` webhook to the URL it was given. Changes through the API deliver their webhooks too, after the answer,
  as GitHub does, so an echo would show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import requests

from sandbox.json_server import Answer, JsonServer, RecordedRequest

JSONDict = dict[str, Any]
DOCS = "https://docs.github.com/rest"
CORE_LIMIT = 5000
SEARCH_LIMIT = 30  # per minute, GitHub's authenticated search budget


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: str
    action: str | None
    number: int | None
    status: int  # what the app answered (0: it could not be reached)
    body: bytes
    headers: dict[str, str]


@dataclass
class _Budget:
    limit: int
    window: float  # seconds
    used: int = 0
    reset: float = 0.0


@dataclass
class _Knobs:
    fail_status: int = 502
    fail_remaining: int = 0
    lose_creates: int = 0
    limited_until: float = 0.0  # primary limit exhausted until this epoch
    limited_status: int = 403
    secondary_until: float = 0.0
    secondary_status: int = 429
    hidden_from_search: bool = False  # GitHub's search index lags behind the issue store


@dataclass
class _Issue:
    number: int
    title: str
    body: str
    labels: list[str]
    assignees: list[str]
    state: str = "open"
    state_reason: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    closed_at: float | None = None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str, **extra: Any) -> bytes:
    return json.dumps({"message": message, **extra, "documentation_url": DOCS, "status": str(status)}).encode()


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends: HMAC-SHA256 of the raw body, hex, prefixed."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class _Webhook:
    url: str
    secret: str
    hook_id: int = 4021


@dataclass
class GithubSandbox:
    """One repository (`repo`, owner/name) reachable with `token`; `assignable` are the logins that may be assigned.
    `clock` gives epoch seconds (the tests' and the demo's manual clock), for issue times and rate-limit resets."""

    repo: str = "ion-team/ion-api"
    token: str = "github_pat_sandbox_0123456789"
    assignable: tuple[str, ...] = ("gitco-dev", "lubit-ops", "sena-kim")
    clock: Callable[[], float] = time.time
    host: str = "127.0.0.1"
    bot_login: str = "incident-bot"
    _issues: dict[int, _Issue] = field(default_factory=dict, init=False)
    _requests: list[RecordedRequest] = field(default_factory=list, init=False)
    _deliveries: list[Delivery] = field(default_factory=list, init=False)
    _knobs: _Knobs = field(default_factory=_Knobs, init=False)
    _budgets: dict[str, _Budget] = field(default_factory=dict, init=False)
    _webhook: _Webhook | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _sending: list[threading.Thread] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._budgets = {"core": _Budget(CORE_LIMIT, 3600.0), "search": _Budget(SEARCH_LIMIT, 60.0)}
        self._server = JsonServer(self._respond, host=self.host, name="github-sandbox")

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def env(self) -> dict[str, str]:
        """The settings that point the app at this sandbox."""
        return {"GITHUB_REPO": self.repo, "GITHUB_TOKEN": self.token, "GITHUB_API_URL": self.base_url}

    def close(self) -> None:
        self.wait_deliveries()
        self._server.close()

    def __enter__(self) -> GithubSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- what the tests look at -----------------------------------------------------------------------------------

    def issues(self) -> list[JSONDict]:
        with self._lock:
            return [self._issue_json(issue) for issue in sorted(self._issues.values(), key=lambda i: i.number)]

    def issue(self, number: int) -> JSONDict:
        with self._lock:
            return self._issue_json(self._issues[number])

    def requests(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if (method is None or r.method == method)
                    and r.path.startswith(path_prefix)]

    def deliveries(self) -> list[Delivery]:
        self.wait_deliveries()
        with self._lock:
            return list(self._deliveries)

    def wait_deliveries(self, timeout: float = 10.0) -> None:
        """Waits until the webhooks already due have been delivered (GitHub sends them after the API answers)."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [t for t in self._sending if t.is_alive()]
                self._sending = pending
            if not pending or time.monotonic() > end:
                return
            pending[0].join(timeout=max(0.0, end - time.monotonic()))

    # ---- knobs ----------------------------------------------------------------------------------------------------

    def fail_next(self, times: int = 1, status: int = 502) -> None:
        """The next `times` requests get `status` (a 5xx: GitHub had trouble) and change nothing."""
        with self._lock:
            self._knobs.fail_remaining, self._knobs.fail_status = times, status

    def lose_next_create(self, times: int = 1) -> None:
        """The next `times` issue creations happen, but their answers never arrive: the connection is dropped."""
        with self._lock:
            self._knobs.lose_creates = times

    def exhaust_rate_limit(self, reset_in: float = 600.0, status: int = 403) -> None:
        """The primary limit is used up: every request gets `status` with X-RateLimit-Remaining: 0 until the reset."""
        with self._lock:
            budget = self._budgets["core"]
            now = self.clock()
            budget.used, budget.reset = budget.limit, now + reset_in
            self._knobs.limited_until, self._knobs.limited_status = now + reset_in, status

    def secondary_limit(self, retry_after: int = 60, status: int = 429) -> None:
        """A secondary rate limit: requests get `status` with Retry-After for `retry_after` seconds."""
        with self._lock:
            self._knobs.secondary_until, self._knobs.secondary_status = self.clock() + retry_after, status

    def hide_from_search(self, hidden: bool = True) -> None:
        """New issues are not in the search index yet (GitHub's index lags behind the issue store)."""
        with self._lock:
            self._knobs.hidden_from_search = hidden

    def revoke_token(self) -> None:
        """The app's token no longer works: every request gets 401 Bad credentials."""
        with self._lock:
            self.token = "revoked-" + uuid.uuid4().hex

    def connect_webhook(self, url: str, secret: str) -> None:
        """Where the repository's webhook delivers `issues` events, signed with `secret`."""
        with self._lock:
            self._webhook = _Webhook(url, secret)

    # ---- a person on GitHub ---------------------------------------------------------------------------------------

    def close_issue(self, number: int, *, by: str = "gitco-dev", reason: str = "completed") -> Delivery | None:
        return self._change(number, by, state="closed", state_reason=reason)

    def reopen_issue(self, number: int, *, by: str = "gitco-dev") -> Delivery | None:
        return self._change(number, by, state="open", state_reason="reopened")

    def retitle_issue(self, number: int, title: str, *, by: str = "gitco-dev") -> Delivery | None:
        return self._change(number, by, title=title)

    def _change(self, number: int, by: str, **changes: Any) -> Delivery | None:
        """A change made on github.com, and its webhook delivered at once (returned; None without a webhook)."""
        with self._lock:
            payloads = self._apply(self._issues[number], changes, sender=by)
        delivered = [self._deliver(payload) for payload in payloads]
        return delivered[-1] if delivered else None

    def send_raw(self, event: str, body: bytes, *, signature: str | None) -> int:
        """A request that claims to be a delivery: the signature given as is (None: no header)."""
        assert self._webhook is not None
        headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
                   "X-GitHub-Delivery": str(uuid.uuid4())}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        return requests.post(self._webhook.url, data=body, headers=headers, timeout=30).status_code

    # ---- the API --------------------------------------------------------------------------------------------------

    def _respond(self, method: str, raw_path: str, raw: bytes, request_headers: Message) -> Answer:
        authorization = request_headers.get("Authorization", "")
        path, _, query = raw_path.partition("?")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        resource = "search" if path.startswith("/search/") else "core"
        webhooks: list[JSONDict] = []
        lost = False
        with self._lock:
            status, payload, extra, lost = self._answer(method, path, query, body, raw, authorization, resource,
                                                        webhooks)
            headers = {**self._rate_headers(resource), **extra}
            self._requests.append(RecordedRequest(method, path, query, body, 0 if lost else status))
        for hook in webhooks:  # after the answer, as GitHub does
            thread = threading.Thread(target=self._deliver, args=(hook,), daemon=True, name="github-webhook")
            with self._lock:
                self._sending.append(thread)
            thread.start()
        return None if lost else (status, payload, headers)

    def _answer(self, method: str, path: str, query: str, body: Any, raw: bytes, authorization: str, resource: str,
                webhooks: list[JSONDict]) -> tuple[int, bytes, dict[str, str], bool]:
        now = self.clock()
        scheme, _, presented = authorization.partition(" ")
        known = hmac.compare_digest(presented.encode(), self.token.encode())
        if scheme.lower() not in ("token", "bearer") or not known:
            return 401, _error(401, "Bad credentials"), {}, False
        knobs = self._knobs
        if now < knobs.secondary_until:
            wait = max(1, int(knobs.secondary_until - now + 0.999))
            return knobs.secondary_status, _error(
                knobs.secondary_status, "You have exceeded a secondary rate limit. Please wait a few minutes before "
                "you try again."), {"Retry-After": str(wait)}, False
        budget = self._budget(resource, now)
        if budget.used >= budget.limit:
            status = knobs.limited_status if resource == "core" else 403
            return status, _error(status, "API rate limit exceeded for user ID 1. If you reach out to GitHub "
                                  "Support for help, please include the request ID."), {}, False
        budget.used += 1
        if knobs.fail_remaining > 0:
            knobs.fail_remaining -= 1
            return knobs.fail_status, _error(knobs.fail_status, "Server Error"), {}, False
        if body is None and raw:
            return 400, _error(400, "Problems parsing JSON"), {}, False
        if path == "/search/issues" and method == "GET":
            return 200, json.dumps(self._search(parse_qs(query).get("q", [""])[0])).encode(), {}, False
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)/issues(?:/(\d+))?", path)
        if not match or f"{unquote(match.group(1))}/{unquote(match.group(2))}" != self.repo:
            return 404, _error(404, "Not Found"), {}, False
        number = int(match.group(3)) if match.group(3) else None
        if number is None and method == "POST":
            return self._create(body or {}, now, webhooks)
        if number is None and method == "GET":
            return self._list(parse_qs(query), path)
        issue = self._issues.get(number or 0)
        if issue is None:
            return 404, _error(404, "Not Found"), {}, False
        if method == "GET":
            return 200, json.dumps(self._issue_json(issue)).encode(), {}, False
        if method == "PATCH":
            changes = {k: v for k, v in (body or {}).items() if k in ("state", "state_reason", "title")}
            if changes.get("state") not in (None, "open", "closed"):
                return 422, _error(422, "Validation Failed", errors=[
                    {"resource": "Issue", "field": "state", "code": "invalid"}]), {}, False
            webhooks.extend(self._apply(issue, changes, sender=self.bot_login))
            return 200, json.dumps(self._issue_json(issue)).encode(), {}, False
        return 404, _error(404, "Not Found"), {}, False

    def _budget(self, resource: str, now: float) -> _Budget:
        budget = self._budgets[resource]
        if now >= budget.reset:
            budget.used, budget.reset = 0, now + budget.window
        return budget

    def _rate_headers(self, resource: str) -> dict[str, str]:
        budget = self._budget(resource, self.clock())
        remaining = max(0, budget.limit - budget.used)
        return {"X-RateLimit-Limit": str(budget.limit), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(int(budget.reset)), "X-RateLimit-Used": str(budget.used),
                "X-RateLimit-Resource": resource}

    def _create(self, body: JSONDict, now: float, webhooks: list[JSONDict]) -> tuple[int, bytes, dict[str, str], bool]:
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            return 422, _error(422, "Validation Failed", errors=[
                {"resource": "Issue", "field": "title", "code": "missing_field"}]), {}, False
        assignees = list(body.get("assignees") or ([body["assignee"]] if body.get("assignee") else []))
        for login in assignees:
            if login not in self.assignable:
                return 422, _error(422, "Validation Failed", errors=[
                    {"value": login, "resource": "Issue", "field": "assignees", "code": "invalid"}]), {}, False
        issue = _Issue(number=max(self._issues, default=0) + 1, title=title, body=str(body.get("body") or ""),
                       labels=[str(label) for label in body.get("labels") or []], assignees=assignees,
                       created_at=now, updated_at=now)
        self._issues[issue.number] = issue
        webhooks.extend(self._payloads("opened", issue, self.bot_login))
        lost = self._knobs.lose_creates > 0
        if lost:
            self._knobs.lose_creates -= 1
        location = f"{self.base_url}/repos/{self.repo}/issues/{issue.number}"
        return 201, json.dumps(self._issue_json(issue)).encode(), {"Location": location}, lost

    def _list(self, query: dict[str, list[str]], path: str) -> tuple[int, bytes, dict[str, str], bool]:
        state = query.get("state", ["open"])[0]
        labels = [label for label in query.get("labels", [""])[0].split(",") if label]
        since = query.get("since", [None])[0]
        since_epoch = datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp() if since else None
        sort, direction = query.get("sort", ["created"])[0], query.get("direction", ["desc"])[0]
        per_page = min(100, int(query.get("per_page", ["30"])[0]))
        page = int(query.get("page", ["1"])[0])
        found = [i for i in self._issues.values()
                 if (state == "all" or i.state == state) and all(label in i.labels for label in labels)
                 and (since_epoch is None or i.updated_at >= since_epoch)]
        key = (lambda i: i.updated_at) if sort == "updated" else (lambda i: i.created_at)
        found.sort(key=lambda i: (key(i), i.number), reverse=direction == "desc")
        chunk = found[(page - 1) * per_page: page * per_page]
        headers: dict[str, str] = {}
        if page * per_page < len(found):
            params = {k: v[0] for k, v in query.items()}
            params["page"] = str(page + 1)
            link = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
            headers["Link"] = f'<{self.base_url}{path}?{link}>; rel="next"'
        return 200, json.dumps([self._issue_json(i) for i in chunk]).encode(), headers, False

    def _search(self, q: str) -> JSONDict:
        phrases = re.findall(r'"([^"]*)"', q)
        words = re.sub(r'"[^"]*"', " ", q).split()
        repo = next((w.removeprefix("repo:") for w in words if w.startswith("repo:")), None)
        hits = [] if self._knobs.hidden_from_search or repo != self.repo else [
            i for i in self._issues.values() if all(p in i.body or p in i.title for p in phrases)]
        return {"total_count": len(hits), "incomplete_results": False,
                "items": [{**self._issue_json(i), "score": 1.0} for i in sorted(hits, key=lambda i: i.number)]}

    def _apply(self, issue: _Issue, changes: JSONDict, *, sender: str) -> list[JSONDict]:
        """Applies a change and returns the webhook payloads it causes (an unchanged field causes none)."""
        now = self.clock()
        payloads: list[JSONDict] = []
        title = changes.get("title")
        if isinstance(title, str) and title != issue.title:
            old, issue.title, issue.updated_at = issue.title, title, now
            payloads += self._payloads("edited", issue, sender, changes={"title": {"from": old}})
        state = changes.get("state")
        if state in ("open", "closed") and state != issue.state:
            issue.state, issue.updated_at = state, now
            issue.state_reason = changes.get("state_reason") or ("completed" if state == "closed" else "reopened")
            issue.closed_at = now if state == "closed" else None
            payloads += self._payloads("closed" if state == "closed" else "reopened", issue, sender)
        return payloads

    def _payloads(self, action: str, issue: _Issue, sender: str, **extra: Any) -> list[JSONDict]:
        if self._webhook is None:
            return []
        owner = self.repo.split("/")[0]
        return [{"action": action, "issue": self._issue_json(issue), **extra,
                 "repository": {"id": 1296269, "name": self.repo.split("/")[1], "full_name": self.repo,
                                "private": True, "owner": self._user(owner),
                                "html_url": f"https://github.com/{self.repo}"},
                 "sender": self._user(sender)}]

    def _deliver(self, payload: JSONDict) -> Delivery:
        return self._send("issues", json.dumps(payload).encode(), str(uuid.uuid4()))

    def _send(self, event: str, body: bytes, delivery_id: str) -> Delivery:
        with self._lock:
            hook = self._webhook
        assert hook is not None
        headers = {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/sandbox",
                   "X-GitHub-Event": event, "X-GitHub-Delivery": delivery_id, "X-GitHub-Hook-ID": str(hook.hook_id),
                   "X-Hub-Signature-256": sign(hook.secret, body)}
        try:
            status = requests.post(hook.url, data=body, headers=headers, timeout=30).status_code
        except requests.RequestException:
            status = 0
        payload = json.loads(body)
        delivery = Delivery(delivery_id, event, payload.get("action"), (payload.get("issue") or {}).get("number"),
                            status, body, headers)
        with self._lock:
            self._deliveries.append(delivery)
        return delivery

    def _user(self, login: str) -> JSONDict:
        return {"login": login, "id": zlib.crc32(login.encode()) % 10_000_000, "type": "User",
                "html_url": f"https://github.com/{login}", "url": f"{self.base_url}/users/{login}"}

    def _issue_json(self, issue: _Issue) -> JSONDict:
        api = f"{self.base_url}/repos/{self.repo}/issues/{issue.number}"
        return {
            "id": 1_000_000 + issue.number, "node_id": f"I_sandbox{issue.number}", "url": api,
            "repository_url": f"{self.base_url}/repos/{self.repo}", "html_url": f"https://github.com/{self.repo}/issues/"
            f"{issue.number}", "number": issue.number, "state": issue.state, "state_reason": issue.state_reason,
            "title": issue.title, "body": issue.body, "user": self._user(self.bot_login),
            "labels": [{"id": zlib.crc32(name.encode()) % 10_000_000, "name": name, "color": "ededed", "default": False,
                        "url": f"{self.base_url}/repos/{self.repo}/labels/{quote(name)}"} for name in issue.labels],
            "assignee": self._user(issue.assignees[0]) if issue.assignees else None,
            "assignees": [self._user(login) for login in issue.assignees], "milestone": None, "locked": False,
            "comments": 0, "created_at": _iso(issue.created_at), "updated_at": _iso(issue.updated_at),
            "closed_at": _iso(issue.closed_at) if issue.closed_at is not None else None,
            "author_association": "OWNER",
        }
