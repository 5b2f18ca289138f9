"""Declaring from a form: `/incident open` without a title, and the "Declare incident" global shortcut.

Driven as Slack drives the app: the command or the shortcut (with a trigger_id the sandbox handed out), the modal
the app opens through views.open, and its view_submission with the state Slack sends (handlers/blocks/declare.py
owns the ids). Then what the sandbox recorded and what the database holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.add_to_timeline import Candidate, ChooseForm
from bot.declare import MAX_DESCRIPTION, Choice, DeclareForm, Submitted
from handlers.blocks import add_to_timeline as chooser_blocks
from handlers.blocks import declare as declare_blocks
from handlers.blocks.declare import DECLARE_SHORTCUT, FORM_CALLBACK, block_id
from sandbox.driver import form_state
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from sandbox.slack_views import modal_problems
from storage.models import Incident, RateHit, Reminder, RoleAssignment, SeenRequest, TimelineEvent
from tests.helpers import clocked_bot, count, events
from tests.test_blocks import assert_owned

CHANNEL = "C0INCIDENTS"
ALERTS = "C0ALERTS"
START = datetime(2025, 10, 22, 5, 16, tzinfo=UTC)


def form(bot: LocalBot) -> dict[str, Any]:
    views = bot.slack.views()
    assert views, "no modal was opened"
    return views[-1]


def fields(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {block["block_id"]: block["element"] for block in view["blocks"] if block["type"] == "input"}


def submit(bot: LocalBot, user: str = "U0SENA", trigger_id: str | None = None, **values: Any) -> Any:
    return bot.driver.submit_view(form(bot)["id"], {block_id(k): v for k, v in values.items()}, user=user,
                                  trigger_id=trigger_id)


def incidents(bot: LocalBot) -> list[Incident]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)).all())


def nothing_stored(bot: LocalBot) -> None:
    for model in (Incident, TimelineEvent, RoleAssignment, Reminder, RateHit):
        assert count(bot, model) == 0, model.__name__
    assert bot.slack.calls("chat.postMessage") == []


def say(bot: LocalBot, key: str, **params: Any) -> str:
    return str(bot.ctx.say(key, **params))


@pytest.fixture
def alerts_slack() -> Iterator[SlackSandbox]:
    with SlackSandbox() as slack:
        slack.add_channel(ALERTS, "alerts")  # public, everyone in it
        yield slack


@pytest.fixture
def shortcut_bot(alerts_slack: SlackSandbox, database_url: str) -> Iterator[LocalBot]:
    with LocalBot({"ALERT_CHANNEL": ALERTS}, slack=alerts_slack, database_url=database_url) as local:
        yield local


# ---- the form opens at once, and opening it stores nothing -------------------------------------------------------


def test_open_without_a_title_opens_the_form_first_and_stores_nothing(bot: LocalBot) -> None:
    trigger = bot.driver.new_trigger_id()
    response = bot.driver.command("/incident", "open", trigger_id=trigger)
    assert response.status_code == 200 and not response.content.strip()  # no usage: the form is the answer
    first = next(c for c in bot.slack.calls() if c.method != "auth.test")
    assert (first.method, first.args["trigger_id"]) == ("views.open", trigger)
    view = form(bot)
    assert view["callback_id"] == FORM_CALLBACK and view["private_metadata"] == CHANNEL
    assert view["title"]["text"] == "사건 등록"
    inputs = fields(view)
    assert list(inputs) == [block_id(f) for f in ("title", "severity", "service", "lead", "description")]
    assert inputs[block_id("severity")]["initial_option"]["value"] == "high"  # as `/incident open` defaults
    assert inputs[block_id("lead")] == {"type": "users_select", "action_id": block_id("lead"),
                                        "initial_user": "U0SENA"}
    bot.settle()
    nothing_stored(bot)
    assert count(bot, SeenRequest) == 0  # not even the replay guard: nothing touches the database

    # The same signed command again: Slack's trigger is spent, nothing else happens.
    again = bot.driver.command("/incident", "open", trigger_id=trigger)
    assert "exchanged_trigger_id" in again.json()["text"] and len(bot.slack.views()) == 1


def test_open_with_a_title_is_unchanged_and_without_a_trigger_gives_the_usage(bot: LocalBot) -> None:
    assert "INCIDENT-" in bot.driver.command("/incident", "open 추천 API 장애").json()["text"]
    assert bot.slack.calls("views.open") == []
    bot.settle()
    body = "command=%2Fincident&text=open&user_id=U0SENA&channel_id=C0INCIDENTS&team_id=T0SANDBOX"
    headers = {**bot.driver.sign(body.encode()), "Content-Type": "application/x-www-form-urlencoded"}
    answer = bot.driver.post_raw(body.encode(), headers).json()["text"]  # no trigger_id: no modal possible
    assert say(bot, "incident.error", code="missing_title", params={}) in answer
    assert bot.slack.calls("views.open") == [] and len(incidents(bot)) == 1


# ---- a submission does what `/incident open` does ----------------------------------------------------------------


def test_the_form_declares_exactly_as_open_does_with_the_lead_and_the_description(database_url: str) -> None:
    with clocked_bot(database_url, START) as (bot, _clock):
        typed = bot.driver.command("/incident", "open 추천 API p95 급증 sev:critical service:ion-api")
        assert "INCIDENT-20251022-001" in typed.json()["text"]
        bot.driver.command("/incident", "role lead <@U0LEMUN|lemun>")
        bot.settle()
        assert bot.driver.command("/incident", "open").status_code == 200
        response = submit(bot, title=" 추천 API p95 급증\x00 ", severity="critical", service="ion-api",
                          lead="U0LEMUN", description="p95 850ms, 에러율 9%\n카나리 10%")
        assert response.status_code == 200 and not response.content.strip()  # the form closes
        bot.settle()
        command_made, form_made = incidents(bot)
        assert form_made.public_id == "INCIDENT-20251022-002"  # the same ID allocation

        def shape(incident: Incident) -> tuple[Any, ...]:
            return (incident.title, incident.severity, incident.status, incident.service, incident.channel_id,
                    incident.opened_by, incident.opened_at, incident.detected_at, incident.meeting_at)

        assert shape(form_made) == shape(command_made)
        with bot.ctx.db.session() as session:
            def reminders(incident: Incident) -> list[tuple[str, datetime]]:
                rows = session.execute(select(Reminder.kind, Reminder.due_at)
                                       .where(Reminder.incident_id == incident.id)).all()
                return sorted((kind, due) for kind, due in rows)

            assert reminders(form_made) == reminders(command_made) != []
            lead = session.scalars(select(RoleAssignment.user_id).where(
                RoleAssignment.incident_id == form_made.id, RoleAssignment.role == "lead")).one()
        assert lead == "U0LEMUN"
        # The same announcement, word for word, but for the ID.
        texts = [bot.slack.message(CHANNEL, i.announcement_ts or "")["text"] for i in (command_made, form_made)]
        assert texts[1] == texts[0].replace(command_made.public_id, form_made.public_id)
        # Posted with its lead at once (the open hands the roles it assigned to the post), not updated after.
        assert not [c for c in bot.slack.calls("chat.update") if c.args.get("ts") == form_made.announcement_ts]
        # The description is on the timeline, right after the opening, in the declarer's words.
        actions = [(e.data or {}).get("action") for e in events(bot) if e.incident_id == form_made.id]
        assert actions == ["opened", "description", "role"]
        [described] = [e for e in events(bot) if (e.data or {}).get("action") == "description"]
        assert described.text == "p95 850ms, 에러율 9%\n카나리 10%" and described.author_id == "U0SENA"
        assert described.occurred_at == form_made.opened_at
        # The person is told in the channel, as the command tells them.
        told = [e["text"] for e in bot.slack.ephemerals(CHANNEL, "U0SENA")]
        assert say(bot, "incident.open_ack", public_id=form_made.public_id) in told


def test_the_global_shortcut_asks_for_the_channel_and_declares_there(shortcut_bot: LocalBot) -> None:
    bot = shortcut_bot
    response = bot.driver.global_shortcut(DECLARE_SHORTCUT)
    assert response.status_code == 200 and not response.content.strip()
    bot.settle()
    methods = [c.method for c in bot.slack.calls() if c.method != "auth.test"]
    # The form first; only then Slack is asked who is in which channel, for the submission's check.
    assert methods[0] == "views.open" and methods.count("users.conversations") == 2
    view = form(bot)
    assert view.get("private_metadata", "") == ""
    channel = fields(view)[block_id("channel")]
    assert channel["type"] == "conversations_select" and channel["initial_conversation"] == ALERTS
    assert submit(bot, title="결제 API 타임아웃").status_code == 200
    bot.settle()
    [incident] = incidents(bot)
    assert (incident.channel_id, incident.title, incident.severity) == (ALERTS, "결제 API 타임아웃", "high")
    assert incident.announcement_ts and bot.slack.message(ALERTS, incident.announcement_ts)
    assert any(incident.public_id in e["text"] for e in bot.slack.ephemerals(ALERTS, "U0SENA"))


# ---- bad input: errors on the field concerned, nothing stored ----------------------------------------------------


@pytest.mark.parametrize(("field", "value", "key", "params"), [
    ("title", "\x00 \x07  ", "incident.error", {"code": "missing_title", "params": {}}),
    ("title", "가" * 201, "incident.error", {"code": "title_too_long", "params": {"limit": 200}}),
    ("severity", "urgent", "declare.bad_severity", {}),
    ("service", "Bad_Name", "declare.bad_service", {}),
    ("service", "a" * 64, "declare.bad_service", {}),
    ("lead", "sena", "declare.bad_lead", {}),
    ("description", "x" * (MAX_DESCRIPTION + 1), "declare.description_too_long", {"limit": MAX_DESCRIPTION}),
])
def test_each_bad_field_is_answered_on_that_field_and_nothing_is_stored(
    bot: LocalBot, field: str, value: str, key: str, params: dict[str, Any]
) -> None:
    bot.driver.command("/incident", "open")
    values = {"title": "멀쩡한 제목", field: value}
    body = submit(bot, **values).json()
    assert body == {"response_action": "errors", "errors": {block_id(field): say(bot, key, **params)}}
    bot.settle()
    nothing_stored(bot)


@pytest.mark.parametrize(("channel", "key"), [
    (None, "declare.missing_channel"),
    ("C0NOBOT", "declare.bot_not_in_channel"),
    ("C0OTHERS", "declare.not_member"),
])
def test_a_channel_the_bot_or_the_person_is_not_in_is_refused_on_the_channel_field(
    bot: LocalBot, channel: str | None, key: str
) -> None:
    bot.slack.add_channel("C0NOBOT", "no-bot", members=["U0SENA"], bot_member=False)
    bot.slack.add_channel("C0OTHERS", "others", members=["U0GITCO"])
    bot.driver.global_shortcut(DECLARE_SHORTCUT)
    bot.settle()  # Slack's answers on who is where are in by now
    assert block_id("channel") in fields(form(bot))  # without ALERT_CHANNEL the field starts empty
    body = submit(bot, title="장애", channel=channel).json()
    assert body == {"response_action": "errors", "errors": {block_id("channel"): say(bot, key)}}
    bot.settle()
    nothing_stored(bot)


@pytest.mark.parametrize("bot_env", [{"RATE_LIMIT_OPEN_PER_USER": "1"}])
def test_a_spent_open_budget_is_answered_on_the_form_and_stores_nothing(bot: LocalBot) -> None:
    bot.driver.command("/incident", "open 첫 번째 장애")
    bot.settle()
    hits = count(bot, RateHit)
    bot.driver.command("/incident", "open")
    body = submit(bot, title="두 번째 장애").json()
    assert body["response_action"] == "errors" and list(body["errors"]) == [block_id("title")]
    assert "⏳" in body["errors"][block_id("title")]
    bot.settle()
    assert len(incidents(bot)) == 1 and count(bot, RateHit) == hits


# ---- once means once -----------------------------------------------------------------------------------------------


def test_a_replayed_submission_and_the_same_form_submitted_again_open_one_incident(bot: LocalBot) -> None:
    bot.driver.command("/incident", "open")
    trigger = bot.driver.new_trigger_id()
    first = submit(bot, trigger_id=trigger, title="한 번만 열리는 장애")
    replay = submit(bot, trigger_id=trigger, title="한 번만 열리는 장애")  # the same signed body again
    assert first.status_code == replay.status_code == 200 and first.content == replay.content
    bot.settle()
    # Slack timed out on the first press and the person pressed Declare again: the same view, a new trigger.
    assert submit(bot, title="한 번만 열리는 장애").status_code == 200
    bot.settle()
    [incident] = incidents(bot)
    assert len(bot.slack.calls("chat.postMessage")) == 1  # one announcement
    told = [e["text"] for e in bot.slack.ephemerals(CHANNEL, "U0SENA")]
    assert told == [say(bot, "incident.open_ack", public_id=incident.public_id),
                    say(bot, "declare.already_declared", public_id=incident.public_id)]


def test_an_expired_trigger_opens_nothing_stores_nothing_and_says_why(shortcut_bot: LocalBot) -> None:
    bot = shortcut_bot
    stale = bot.slack.issue_trigger(bot.driver.new_trigger_id(), issued_at=time.time() - 10)
    answer = bot.driver.command("/incident", "open", trigger_id=stale).json()
    assert answer["text"] == say(bot, "declare.modal_failed", reason="expired_trigger_id")
    stale = bot.slack.issue_trigger(bot.driver.new_trigger_id(), issued_at=time.time() - 10)
    assert bot.driver.global_shortcut(DECLARE_SHORTCUT, trigger_id=stale).status_code == 200
    bot.settle()
    assert bot.slack.views() == [] and [c.args.get("trigger_id") for c in bot.slack.calls("views.open")] != []
    assert bot.slack.calls("users.conversations") == []  # no form: nothing to prepare for
    nothing_stored(bot)


def test_stale_answers_on_channel_membership_are_asked_again_before_declaring(database_url: str) -> None:
    with clocked_bot(database_url, START, {"ALERT_CHANNEL": CHANNEL}) as (bot, clock):
        bot.driver.global_shortcut(DECLARE_SHORTCUT)
        bot.settle()
        clock.advance(timedelta(seconds=61))  # the person took a while over the form
        body = submit(bot, title="느린 입력").json()
        assert body == {"response_action": "errors",
                        "errors": {block_id("channel"): say(bot, "declare.checking_access")}}
        bot.settle()
        assert len(incidents(bot)) == 0 and len(bot.slack.calls("users.conversations")) == 4
        assert submit(bot, title="느린 입력").status_code == 200
        bot.settle()
        assert [i.title for i in incidents(bot)] == ["느린 입력"]


@pytest.mark.serial
def test_slack_slow_to_open_the_form_never_makes_the_ack_late(bot: LocalBot) -> None:
    bot.slack.slow_once("views.open", 3.5)
    started = time.monotonic()
    answer = bot.driver.command("/incident", "open").json()
    assert time.monotonic() - started < 2.9  # Slack's 3 s for the ack
    assert answer["text"] == say(bot, "declare.modal_slow")
    bot.settle()
    assert len(bot.slack.views()) == 1  # Slack did open it, late
    nothing_stored(bot)


# ---- the Block Kit surface round-trips (handlers/blocks/declare.py) ----------------------------------------------


def test_the_form_parses_back_what_slack_sends_for_it_and_owns_its_ids() -> None:
    names = ("title", "severity", "service", "lead", "description", "channel")
    severities = tuple(Choice(s, s.upper()) for s in ("critical", "high", "medium", "low"))
    shown = DeclareForm("사건 등록", "등록", "취소", {f: f"label {f}" for f in names}, {"title": "hint"}, severities,
                        "high", "U0SENA", None, ALERTS)
    view = declare_blocks.declare_modal(shown)
    assert modal_problems(view) == []  # Slack would open it
    assert_owned(view, declare_blocks)
    state = form_state(view, {block_id("title"): "장애 \x00제목", block_id("service"): "ion-api",
                              block_id("severity"): "low"})
    assert declare_blocks.submitted({**view, "state": {"values": state}}) == Submitted(
        title="장애 제목", severity="low", service="ion-api", lead="U0SENA", description="", channel=ALERTS)
    assert declare_blocks.fixed_channel(view) is None
    assert declare_blocks.fixed_channel({"private_metadata": CHANNEL}) == CHANNEL
    assert declare_blocks.submitted({"state": {"values": {block_id("title"): {"x": {"value": "y"}}}}}) == Submitted()


def test_the_chooser_parses_back_the_choice_and_refuses_what_it_never_offered() -> None:
    candidates = (Candidate(7, "INCIDENT-20251022-002", "두 번째 " + "가" * 80),
                  Candidate(3, "INCIDENT-20251022-001", "첫"))
    ts, url = "1761110000.000100", "https://hooks.slack.test/r/1"
    view = chooser_blocks.chooser_modal(ChooseForm("타임라인에 추가", "추가", "취소", "추가할 사건", "hint", candidates,
                                                   CHANNEL, ts, url))
    assert modal_problems(view) == []  # option texts clipped to Slack's 75
    assert_owned(view, chooser_blocks)
    state = form_state(view, {"add-to-timeline:incident": "3"})
    chosen = chooser_blocks.parse_choice({**view, "state": {"values": state}})
    assert chosen == chooser_blocks.Chosen(3, CHANNEL, ts, url)
    for broken in ({**view, "private_metadata": "not json"}, {**view, "state": {"values": {}}}):
        assert chooser_blocks.parse_choice(broken) is None


def test_the_sandbox_exchanges_a_trigger_once_within_3_s_and_refuses_a_view_slack_would_refuse() -> None:
    """What the fake's views.open does is what docs.slack.dev documents for views.open and modal views."""
    with SlackSandbox() as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.api_url, timeout=5)
        view = {"type": "modal", "title": {"type": "plain_text", "text": "사건 등록"}, "blocks": []}

        def refused(trigger_id: str, sent: dict[str, Any]) -> dict[str, Any]:
            with pytest.raises(SlackApiError) as caught:
                client.views_open(trigger_id=trigger_id, view=sent)
            return dict(caught.value.response.data)

        assert refused("12345.98765.abcd", view)["error"] == "invalid_trigger_id"  # never handed out
        fresh = slack.issue_trigger("12345.98765.fresh")
        assert client.views_open(trigger_id=fresh, view=view)["ok"] is True
        assert refused(fresh, view)["error"] == "exchanged_trigger_id"
        old = slack.issue_trigger("12345.98765.old", issued_at=time.time() - 3.5)
        assert refused(old, view)["error"] == "expired_trigger_id"
        bad = {**view, "title": {"type": "plain_text", "text": "x" * 25},
               "blocks": [{"type": "input", "label": {"type": "plain_text", "text": "제목"},
                           "element": {"type": "plain_text_input", "action_id": "a"}}]}
        answer = refused(slack.issue_trigger("12345.98765.bad"), bad)
        assert answer["error"] == "invalid_arguments"
        assert answer["response_metadata"]["messages"] == [
            "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]",
            "[ERROR] submit is required when an input block is present [json-pointer:/view/submit]"]
        assert len(slack.views()) == 1
