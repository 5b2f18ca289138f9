"""Action items kept in GitHub Issues, both ways, through the real app and PyGithub against the GitHub sandbox:
one issue per item whatever fails, rate limits honoured, refusals told once, and a closed or reopened issue and
its item following each other without an echo."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from bot import github_events, github_sync
from bot.clock import ManualClock
from bot.logsetup import configure_logging
from bot.report import render_report
from bot.settings import SettingsError, load_settings
from sandbox.github import GithubSandbox, sign
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import ActionItem, GithubIssue, GithubLogin, Incident, Reminder, TimelineEvent
from tests.helpers import count

START = datetime(2025, 10, 22, 17, 0, tzinfo=UTC)
SECRET = "github-webhook-secret-0123456789"
CHANNEL = "C0INCIDENTS"
SENA, GITCO, LUBIT = "U0SENA", "U0GITCO", "U0LUBIT"


@contextmanager
def github_bot(database_url: str, *, webhook: bool = True, env: dict[str, str] | None = None
               ) -> Iterator[tuple[LocalBot, ManualClock, GithubSandbox]]:
    """The app with GitHub on, its clock shared by the Slack and GitHub sandboxes. Its background sweep is off:
    each test runs the sweep itself, at the moments it means."""
    clock = ManualClock(START)
    with SlackSandbox(clock=lambda: clock.now().timestamp()) as slack, \
            GithubSandbox(clock=lambda: clock.now().timestamp()) as github:
        settings = {**github.env(), "GITHUB_WEBHOOK_SECRET": SECRET, "SCHEDULER_ENABLED": "false",
                    "INCIDENT_LOCALE": "en", **(env or {})}
        bot = LocalBot(settings, clock=clock, slack=slack, database_url=database_url).start(background=False)
        try:
            if webhook:
                github.connect_webhook(f"{bot.base_url}/github/webhook", SECRET)
            yield bot, clock, github
        finally:
            github.wait_deliveries()
            bot.stop()


def command(bot: LocalBot, name: str, text: str, user: str = SENA) -> str:
    assert bot.driver is not None
    response = bot.driver.command(name, text, user=user, channel=CHANNEL)
    assert response.status_code == 200, response.text
    bot.settle()
    return str(response.json().get("text", ""))


def open_incident(bot: LocalBot) -> Incident:
    command(bot, "/incident", "open 추천 API p95 급증 sev:high")
    with bot.ctx.db.read() as session:
        return session.scalars(select(Incident)).one()


def add_item(bot: LocalBot, text: str, user: str = SENA) -> ActionItem:
    command(bot, "/postmortem", f"action {text}", user=user)
    with bot.ctx.db.read() as session:
        return session.scalars(select(ActionItem).order_by(ActionItem.id.desc())).first()  # type: ignore[return-value]


def row(bot: LocalBot, item_id: int) -> GithubIssue:
    with bot.ctx.db.read() as session:
        return session.scalars(select(GithubIssue).where(GithubIssue.action_item_id == item_id)).one()


def item(bot: LocalBot, item_id: int) -> ActionItem:
    with bot.ctx.db.read() as session:
        return session.get_one(ActionItem, item_id)


def sweep_at(bot: LocalBot, clock: ManualClock, when: datetime) -> None:
    clock.set(when)
    github_sync.sweep(bot.ctx)
    bot.settle()


def item_message(bot: LocalBot, item_id: int) -> dict[str, Any]:
    ts = item(bot, item_id).message_ts
    assert ts is not None
    message = bot.slack.message(CHANNEL, ts)
    assert message is not None
    return message


def buttons(message: dict[str, Any]) -> list[str]:
    return [e["action_id"] for b in message.get("blocks") or [] if b.get("type") == "actions"
            for e in b.get("elements", [])]


def creates(github: GithubSandbox) -> int:
    return len(github.requests("POST", "/repos/"))


# ---- creating -----------------------------------------------------------------------------------------------------


def test_an_action_item_becomes_one_issue_with_labels_assignee_marker_and_link(database_url: str) -> None:
    with github_bot(database_url) as (bot, _clock, github):
        incident = open_incident(bot)
        command(bot, "/incident", f"github <@{GITCO}|gitco> gitco-dev")
        command(bot, "/postmortem", "impact error-rate 0.5%→9%")
        task = "N+1 쿼리 수정 (조인으로 변경) @octocat"
        added = add_item(bot, f'P0 "{task}" <@{GITCO}|gitco> due:2025-10-24 impact:critical')

        [issue] = github.issues()
        assert issue["title"] == "[P0] N+1 쿼리 수정 (조인으로 변경) @octocat"
        assert [label["name"] for label in issue["labels"]] == ["incident", "P0"]
        assert [a["login"] for a in issue["assignees"]] == ["gitco-dev"]
        body = issue["body"]
        assert body.rstrip().endswith(f"<!-- incident-bot:action:{added.id} -->")
        assert incident.public_id in body and "2025-10-24" in body and "CRITICAL" in body
        assert "0.5% → 9%" in body  # the incident's impact
        assert incident.announcement_ts is not None
        thread = f"{bot.slack.team_name}.slack.com/archives/{CHANNEL}/p{incident.announcement_ts.replace('.', '')}"
        assert f"](https://{thread})" in body
        assert "@\u200docto" in body and "@octo" not in body  # typed text never notifies anyone on GitHub
        stored = row(bot, added.id)
        assert (stored.number, stored.state, stored.assignee) == (1, "open", "gitco-dev")
        # The item's Slack message shows the link; the report has it in its own column.
        assert "<https://github.com/ion-team/ion-api/issues/1|#1>" in item_message(bot, added.id)["text"]
        report = render_report(bot.ctx, incident.id, "en")
        assert "| Issue |" in report and "[#1](https://github.com/ion-team/ion-api/issues/1)" in report
        assert creates(github) == 1


def test_an_unmapped_owner_or_a_login_github_refuses_gives_an_unassigned_issue_naming_the_owner(
        database_url: str) -> None:
    with github_bot(database_url) as (bot, _clock, github):
        open_incident(bot)
        add_item(bot, f'P1 "Staging 데이터 크기 동기화" <@{LUBIT}|lubit> due:1w')
        command(bot, "/incident", f"github <@{GITCO}|gitco> gone-from-the-org")
        add_item(bot, f'P2 "성능 테스트 추가" <@{GITCO}|gitco>')

        unmapped, refused = github.issues()
        assert unmapped["assignees"] == [] and "(no GitHub login mapped)" in unmapped["body"]
        assert "Lubit" in unmapped["body"] or LUBIT in unmapped["body"]
        assert refused["assignees"] == [] and "GitHub could not assign gone-from-the-org" in refused["body"]
        # GitHub's 422 made nothing, so the second creation was sent without searching.
        assert [r.status for r in github.requests("POST", "/repos/")] == [201, 422, 201]
        assert github.requests("GET", "/search/") == []


# ---- exactly one issue whatever fails --------------------------------------------------------------------------


@pytest.mark.parametrize("found_by", ["search", "list", "opened-webhook"])
def test_a_lost_create_response_is_found_by_its_marker_and_never_makes_a_second_issue(
        database_url: str, found_by: str) -> None:
    with github_bot(database_url, webhook=found_by == "opened-webhook") as (bot, clock, github):
        open_incident(bot)
        github.lose_next_create()
        github.hide_from_search(found_by == "list")  # GitHub's search index lags behind its issues
        added = add_item(bot, 'P0 "N+1 쿼리 수정"')
        github.wait_deliveries()
        assert len(github.issues()) == 1  # GitHub made it; the app never heard
        lost = row(bot, added.id)
        assert lost.create_attempted_at is not None and lost.last_error
        # With a webhook, the `opened` delivery carries the marker and the row takes its number at once.
        assert lost.number == (1 if found_by == "opened-webhook" else None)

        sweep_at(bot, clock, START + timedelta(minutes=5))
        assert len(github.issues()) == 1 and creates(github) == 1
        listed = [r for r in github.requests("GET", "/repos/ion-team/ion-api/issues") if "sort=created" in r.query]
        looked = github.requests("GET", "/search/issues") + listed
        assert bool(looked) == (found_by != "opened-webhook")  # looked before creating again
        assert bool(listed) == (found_by == "list")
        assert row(bot, added.id).number == 1
        assert "issues/1|#1>" in item_message(bot, added.id)["text"]
        sweep_at(bot, clock, START + timedelta(hours=1))
        assert creates(github) == 1


def test_a_5xx_is_retried_after_a_backoff_and_makes_one_issue(database_url: str) -> None:
    with github_bot(database_url) as (bot, clock, github):
        open_incident(bot)
        github.fail_next(1, 502)
        added = add_item(bot, 'P1 "추천 엔진 성능 테스트 추가"')
        failed = row(bot, added.id)
        assert failed.number is None and failed.attempts == 1 and failed.next_attempt_at is not None
        assert "server_error" in (failed.last_error or "")
        sent = len(github.requests())
        sweep_at(bot, clock, failed.next_attempt_at - timedelta(seconds=1))
        assert len(github.requests()) == sent  # the backoff holds
        sweep_at(bot, clock, failed.next_attempt_at)
        assert len(github.issues()) == 1 and row(bot, added.id).number == 1 and row(bot, added.id).attempts == 0
        assert not bot.slack.ephemerals(user=SENA)  # a passing fault is nobody's to fix


@pytest.mark.parametrize("limit", ["primary", "secondary"])
def test_a_rate_limit_is_honoured_until_github_allows_the_next_request(database_url: str, limit: str) -> None:
    with github_bot(database_url) as (bot, clock, github):
        open_incident(bot)
        if limit == "primary":
            github.exhaust_rate_limit(reset_in=600, status=403)
            allowed = START + timedelta(seconds=601)
        else:
            github.secondary_limit(retry_after=120, status=429)
            allowed = START + timedelta(seconds=120)
        added = add_item(bot, 'P2 "데이터베이스 모니터링 강화"')
        limited = row(bot, added.id)
        assert limited.number is None and limited.next_attempt_at is not None
        assert limited.next_attempt_at >= allowed
        sent = len(github.requests())
        sweep_at(bot, clock, allowed - timedelta(seconds=30))
        assert len(github.requests()) == sent  # nothing is sent before GitHub allows it
        sweep_at(bot, clock, limited.next_attempt_at + timedelta(seconds=1))
        assert len(github.issues()) == 1 and row(bot, added.id).number == 1


@pytest.mark.parametrize("fault", ["bad_token", "missing_repo"])
def test_a_refusal_a_person_must_fix_is_told_once_to_whoever_added_the_item(database_url: str, fault: str) -> None:
    env = {"GITHUB_REPO": "ion-team/no-such-repo"} if fault == "missing_repo" else {}
    with github_bot(database_url, env=env) as (bot, clock, github):
        open_incident(bot)
        if fault == "bad_token":
            github.revoke_token()
        added = add_item(bot, 'P0 "N+1 쿼리 수정"', user=GITCO)
        [told] = bot.slack.ephemerals(user=GITCO)
        assert ("401 Bad credentials" if fault == "bad_token" else "404") in told["text"]
        assert "[P0] N+1 쿼리 수정" in told["text"]
        assert not bot.slack.ephemerals(user=SENA)
        assert item(bot, added.id).message_ts is not None  # the item stays in Slack
        failed = row(bot, added.id)
        assert failed.failure == ("bad_credentials" if fault == "bad_token" else "not_found")
        assert failed.next_attempt_at is not None and failed.next_attempt_at >= START + timedelta(hours=1)
        sweep_at(bot, clock, START + timedelta(hours=2))  # refused again: not told again
        assert row(bot, added.id).attempts == 2
        assert len(bot.slack.ephemerals(user=GITCO)) == 1
        assert github.issues() == [] and count(bot, ActionItem) == 1


# ---- both directions ----------------------------------------------------------------------------------------------


def test_closed_and_reopened_follow_each_other_both_ways_without_an_echo(database_url: str) -> None:
    with github_bot(database_url) as (bot, clock, github):
        open_incident(bot)
        added = add_item(bot, f'P0 "N+1 쿼리 수정" <@{GITCO}|gitco> due:2d')
        with bot.ctx.db.read() as session:
            assert session.scalars(select(Reminder).where(Reminder.action_item_id == added.id,
                                                          Reminder.cancelled_at.is_(None))).all()

        clock.set(START + timedelta(hours=20))
        closed = github.close_issue(1, by="gitco-dev")  # on GitHub
        assert closed is not None and closed.status == 200
        bot.settle()
        assert item(bot, added.id).status == "done"
        with bot.ctx.db.read() as session:  # its reminders stop
            assert not session.scalars(select(Reminder).where(Reminder.action_item_id == added.id,
                                                              Reminder.cancelled_at.is_(None))).all()
        assert "postmortem.action.done" not in buttons(item_message(bot, added.id))
        assert "postmortem.action.reopen" in buttons(item_message(bot, added.id))

        clock.set(START + timedelta(hours=21))
        github.reopen_issue(1, by="gitco-dev")
        bot.settle()
        assert item(bot, added.id).status == "open"
        assert "postmortem.action.done" in buttons(item_message(bot, added.id))
        assert github.requests("PATCH") == []  # GitHub's own changes were not sent back to it

        # From Slack: the buttons close and reopen the issue, and GitHub's webhooks for those change nothing.
        assert bot.driver is not None
        for step, (transition, state) in enumerate((("done", "closed"), ("reopen", "open")), start=22):
            clock.set(START + timedelta(hours=step))
            message = item_message(bot, added.id)
            response = bot.driver.block_action(f"postmortem.action.{transition}", str(added.id), user=SENA,
                                               channel=CHANNEL, message_ts=message["ts"])
            assert response.status_code == 200
            bot.settle()
            github.wait_deliveries()
            bot.settle()
            assert github.issue(1)["state"] == state
        assert [r.body["state"] for r in github.requests("PATCH")] == ["closed", "open"]
        assert item(bot, added.id).status == "open"
        echoes = [d for d in github.deliveries() if d.action in ("closed", "reopened")]
        assert [json.loads(r.decode())["sender"]["login"] for r in (d.body for d in echoes)] == [
            "gitco-dev", "gitco-dev", "incident-bot", "incident-bot"]
        assert all(d.status == 200 for d in echoes)
        assert item(bot, added.id).done_at is None


def test_a_slack_change_waiting_for_github_is_not_undone_by_what_github_still_shows(database_url: str) -> None:
    with github_bot(database_url, webhook=False) as (bot, clock, github):
        open_incident(bot)
        added = add_item(bot, 'P1 "추천 엔진 성능 테스트 추가"')
        github.fail_next(1, 503)  # the close from Slack does not reach GitHub yet
        assert bot.driver is not None
        bot.driver.block_action("postmortem.action.done", str(added.id), user=SENA, channel=CHANNEL,
                                message_ts=item_message(bot, added.id)["ts"])
        bot.settle()
        assert github.issue(1)["state"] == "open" and row(bot, added.id).next_attempt_at is not None
        github.retitle_issue(1, "[P1] 추천 엔진 부하 테스트 추가")  # GitHub's copy changes meanwhile, still open
        clock.set(START + timedelta(minutes=6))
        github_events_reconcile(bot)  # reads the issue open, as GitHub still has it
        assert item(bot, added.id).status == "done"  # not reopened: GitHub's state never changed
        sweep_at(bot, clock, START + timedelta(minutes=7))  # the close reaches GitHub
        assert github.issue(1)["state"] == "closed" and item(bot, added.id).status == "done"


def github_events_reconcile(bot: LocalBot) -> None:
    tracker = github_sync.tracker_of(bot.ctx)
    assert tracker is not None
    github_events.reconcile(bot.ctx, tracker, "ion-team/ion-api")
    bot.settle()


def test_a_duplicate_delivery_changes_nothing_and_an_edited_title_is_noted(database_url: str) -> None:
    with github_bot(database_url) as (bot, clock, github):
        open_incident(bot)
        added = add_item(bot, 'P1 "추천 엔진 성능 테스트 추가"')
        closed = github.close_issue(1)
        assert closed is not None
        bot.settle()
        assert item(bot, added.id).status == "done"
        clock.set(START + timedelta(minutes=10))
        assert bot.driver is not None
        bot.driver.block_action("postmortem.action.reopen", str(added.id), user=SENA, channel=CHANNEL,
                                message_ts=item_message(bot, added.id)["ts"])
        bot.settle()
        github.wait_deliveries()
        assert item(bot, added.id).status == "open"
        # GitHub's "Redeliver": the same body and X-GitHub-Delivery, validly signed.
        again = requests.post(f"{bot.base_url}/github/webhook", data=closed.body, headers=closed.headers, timeout=10)
        assert again.status_code == 200 and again.json() == {"status": "duplicate"}
        bot.settle()
        assert item(bot, added.id).status == "open"  # the redelivery of the old close changed nothing

        github.retitle_issue(1, "[P1] 추천 엔진 부하 테스트 추가")
        bot.settle()
        with bot.ctx.db.read() as session:
            [note] = [e for e in session.scalars(select(TimelineEvent)).all()
                      if (e.data or {}).get("step") == "retitled"]
        assert note.data is not None and note.data["old_title"] == "[P1] 추천 엔진 성능 테스트 추가"
        assert row(bot, added.id).title == "[P1] 추천 엔진 부하 테스트 추가"


def test_without_a_webhook_the_sweep_reconciles_within_a_few_minutes(database_url: str) -> None:
    with github_bot(database_url, webhook=False) as (bot, clock, github):
        open_incident(bot)
        added = add_item(bot, 'P1 "Staging 데이터 크기 동기화"')
        clock.set(START + timedelta(minutes=1))
        github.close_issue(1)  # no webhook: nobody tells the app
        sweep_at(bot, clock, START + timedelta(minutes=2))
        assert item(bot, added.id).status == "done"
        listed = github.requests("GET", "/repos/ion-team/ion-api/issues")
        assert len(listed) == 1 and "labels=incident" in listed[0].query and "state=all" in listed[0].query
        sweep_at(bot, clock, START + timedelta(minutes=4))  # within RECONCILE_EVERY: no second read
        assert len(github.requests("GET", "/repos/ion-team/ion-api/issues")) == 1
        assert github.requests("PATCH") == []


def test_a_wrong_or_missing_signature_gets_401_and_changes_nothing(database_url: str) -> None:
    with github_bot(database_url) as (bot, _clock, github):
        open_incident(bot)
        added = add_item(bot, 'P0 "N+1 쿼리 수정"')
        body = json.dumps({"action": "closed", "issue": {**github.issue(1), "state": "closed"},
                           "repository": {"full_name": github.repo}, "sender": {"login": "mallory"}}).encode()
        assert github.send_raw("issues", body, signature=sign("not-the-secret-000000", body)) == 401
        assert github.send_raw("issues", body, signature=None) == 401
        assert github.send_raw("issues", body, signature=sign(SECRET, body + b" ")) == 401
        bot.settle()
        assert item(bot, added.id).status == "open" and row(bot, added.id).state == "open"
        assert github.send_raw("ping", b'{"zen": "Design for failure.", "hook_id": 4021}',
                               signature=sign(SECRET, b'{"zen": "Design for failure.", "hook_id": 4021}')) == 200
        assert github.send_raw("issues", body, signature=sign(SECRET, body)) == 200  # the same body, signed
        bot.settle()
        assert item(bot, added.id).status == "done"


def test_without_a_webhook_secret_the_route_refuses_everything(database_url: str) -> None:
    with github_bot(database_url, webhook=False, env={"GITHUB_WEBHOOK_SECRET": ""}) as (bot, _clock, _github):
        body = b'{"zen": "x"}'
        answer = requests.post(f"{bot.base_url}/github/webhook", data=body, timeout=10,
                               headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(SECRET, body)})
        assert answer.status_code == 404


# ---- the mapping command -------------------------------------------------------------------------------------------


def test_the_mapping_command_sets_shows_and_removes_and_refuses_bad_input_storing_nothing(database_url: str) -> None:
    with github_bot(database_url) as (bot, _clock, _github):
        assert "gitco-dev" in command(bot, "/incident", f"github <@{GITCO}|gitco> @gitco-dev")
        with bot.ctx.db.read() as session:
            assert session.get_one(GithubLogin, GITCO).login == "gitco-dev"
        assert "gitco-dev" in command(bot, "/incident", f"github <@{GITCO}|gitco>")
        mention = f"<@{GITCO}|gitco>"
        for bad, says in ((f"{mention} -gitco", "is not a GitHub login"), (f"{mention} gitco--dev", "is not a GitHub"),
                          (f"{mention} {'a' * 40}", "is not a GitHub login"), ("", "Say whose GitHub login"),
                          ("gitco-dev", "Say whose GitHub login"), ("@nobody gitco", "I can't tell which Slack user"),
                          (f"<@{GITCO}|gitco> <@{LUBIT}|lubit> x", "One person")):
            text = command(bot, "/incident", f"github {bad}".strip())
            assert says in text and "/incident github @user" in text, (bad, text)
        with bot.ctx.db.read() as session:
            assert [(m.slack_user_id, m.login) for m in session.scalars(select(GithubLogin))] == [(GITCO, "gitco-dev")]
        assert "no GitHub login" in command(bot, "/incident", f"github <@{GITCO}|gitco> -")
        assert count(bot, GithubLogin) == 0


# ---- settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env, names", [
    ({"GITHUB_REPO": "ion-team/ion-api"}, "GITHUB_TOKEN"),
    ({"GITHUB_TOKEN": "github_pat_x"}, "GITHUB_REPO"),
    ({"GITHUB_REPO": "ion-api", "GITHUB_TOKEN": "t"}, "GITHUB_REPO"),
    ({"GITHUB_REPO": "-ion/ion-api", "GITHUB_TOKEN": "t"}, "GITHUB_REPO"),
    ({"GITHUB_REPO": "ion/api", "GITHUB_TOKEN": "t t"}, "GITHUB_TOKEN"),
    ({"GITHUB_REPO": "ion/api", "GITHUB_TOKEN": "t", "GITHUB_API_URL": "api.github.com"}, "GITHUB_API_URL"),
    ({"GITHUB_WEBHOOK_SECRET": "short"}, "GITHUB_WEBHOOK_SECRET"),
])
def test_malformed_github_settings_stop_the_start_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert str(raised.value).startswith(names) and "t t" not in str(raised.value)


def test_the_token_and_the_webhook_secret_are_never_logged(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings({"GITHUB_REPO": "ion/api", "GITHUB_TOKEN": "github_pat_11AAsecret0123",
                              "GITHUB_WEBHOOK_SECRET": SECRET})
    assert settings.github_enabled
    configure_logging("INFO", secrets=settings.secrets())
    try:
        logging.getLogger("incident_bot.test").info("GitHub said no to %s with %s", "github_pat_11AAsecret0123", SECRET)
        err = capsys.readouterr().err
    finally:
        configure_logging("WARNING")
    assert "GitHub said no" in err and "github_pat_11AAsecret0123" not in err and SECRET not in err
