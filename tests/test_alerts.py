"""Cloud Monitoring alerts end to end: notifications POSTed to the served app as Cloud Monitoring sends them (a
webhook with the token in the URL or as the basic-auth password), buttons clicked as Slack sends them (signed), and
the results checked in what the Slack sandbox recorded and what the database holds.

Payloads follow Google's documented example of the webhook schema 1.2 (`incident` with `incident_id`, `state`,
`started_at`/`ended_at` in epoch seconds, `policy_name`, `condition_name`, `summary`, `url`, `resource`,
`metric`, `observed_value`/`threshold_value` as strings, `severity`, `policy_user_labels`; `version` "1.2").
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import app
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import Alert, EventPin, Incident, Reminder, RoleAssignment, TimelineEvent
from tests.helpers import count, open_incident, posted_texts

TOKEN = "alert-token-0123456789abcdef"
ALERTS = "C0ALERTS"
ROUTE = "/alerts/cloud-monitoring"
ENV = {"ALERT_WEBHOOK_TOKEN": TOKEN, "ALERT_CHANNEL": ALERTS}
# A minute boundary well in the past, so `detected` (kept to the minute) is exact and never in the future.
STARTED = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)


def notification(incident_id: str = "0.lj2va6zdkemq", state: str = "open", *, service: str = "ion-api",
                 resource_type: str = "cloud_run_revision", severity: str | None = "CRITICAL",
                 started: datetime = STARTED, ended: datetime | None = None, summary: str | None = None,
                 labels: dict[str, str] | None = None) -> dict[str, Any]:
    resource_labels = (
        {"service_name": service, "revision_name": f"{service}-00042-xyz", "location": "us-central1",
         "project_id": "ion-project", "configuration_name": service}
        if resource_type == "cloud_run_revision" else {"instance_id": "11223344", "zone": "us-central1-c"}
    )
    incident: dict[str, Any] = {
        "incident_id": incident_id,
        "scoping_project_id": "ion-project",
        "scoping_project_number": 12345,
        "url": f"https://console.cloud.google.com/monitoring/alerting/incidents/{incident_id}?project=ion-project",
        "started_at": int(started.timestamp()),
        "ended_at": int(ended.timestamp()) if ended else None,
        "state": state,
        "resource_id": "",
        "resource_name": f"ion-project {service}",
        "resource_display_name": service,
        "resource_type_display_name": "Cloud Run Revision",
        "resource": {"type": resource_type, "labels": resource_labels},
        "metric": {"type": "run.googleapis.com/request_latencies", "displayName": "Request Latencies",
                   "labels": {}},
        "metadata": {"system_labels": {}, "user_labels": {}},
        "policy_name": "p95 latency",
        "policy_user_labels": labels or {"team": "ion"},
        "condition_name": "Cloud Run Revision - Request Latencies [95TH PERCENTILE]",
        "threshold_value": "200",
        "observed_value": "450.5",
        "condition": {"name": "projects/ion-project/alertPolicies/1/conditions/2",
                      "displayName": "Cloud Run Revision - Request Latencies [95TH PERCENTILE]"},
        "documentation": {"content": "Roll back the canary.", "mime_type": "text/markdown"},
        "summary": summary if summary is not None else
        f"Request Latencies for ion-project {service} is above the threshold of 200 with a value of 450.5.",
    }
    if severity is not None:
        incident["severity"] = severity
    return {"incident": incident, "version": "1.2"}


def post(bot: LocalBot, body: dict[str, Any] | bytes, *, auth: str | None = "query", token: str = TOKEN,
         headers: dict[str, str] | None = None) -> requests.Response:
    """POSTs as Cloud Monitoring does: `query` is webhook_tokenauth, `basic` webhook_basicauth."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = bot.base_url + ROUTE
    sent = {"Content-Type": "application/json", "User-Agent": "Google-Alerts", **(headers or {})}
    if auth == "query":
        url += f"?auth_token={token}"
    elif auth == "basic":
        sent["Authorization"] = "Basic " + base64.b64encode(f"monitoring:{token}".encode()).decode()
    return requests.post(url, data=data, headers=sent, timeout=30)


def delivered(bot: LocalBot, body: dict[str, Any] | bytes, **kw: Any) -> requests.Response:
    response = post(bot, body, **kw)
    assert response.status_code == 200, response.text
    bot.settle()
    return response


def alert_rows(bot: LocalBot) -> list[Alert]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)).all())


def incidents(bot: LocalBot) -> list[Incident]:
    with bot.ctx.db.session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)).all())


def actions(message: dict[str, Any]) -> list[str]:
    return [element["action_id"] for block in message.get("blocks") or [] if block.get("type") == "actions"
            for element in block["elements"]]


def alert_message(bot: LocalBot) -> dict[str, Any]:
    [message] = bot.slack.messages(ALERTS)
    return message


def click(bot: LocalBot, choice: str, *, user: str = "U0LEMUN", message: dict[str, Any] | None = None,
          channel: str = ALERTS, value: str | None = None) -> requests.Response:
    assert bot.driver is not None
    message = message or alert_message(bot)
    found = value or next(element["value"] for block in message["blocks"] if block.get("type") == "actions"
                          for element in block["elements"] if element["action_id"] == f"alerts.{choice}")
    response = bot.driver.block_action(f"alerts.{choice}", found, user=user, channel=channel,
                                       message_ts=message["ts"])
    assert response.status_code == 200, response.text
    return response


def ephemeral_answers(bot: LocalBot) -> list[str]:
    return [str(r.get("text", "")) for r in bot.slack.responses()]


@pytest.fixture
def bot_env() -> dict[str, str]:
    return dict(ENV)


@pytest.fixture
def abot(bot: LocalBot) -> LocalBot:
    bot.slack.add_channel(ALERTS, "alerts")
    return bot


# ---- the route: authentication, size, shape ----------------------------------------------------------------------


def test_open_alert_is_stored_answered_and_posted_with_declare_and_dismiss(abot: LocalBot) -> None:
    response = delivered(abot, notification())
    assert response.json()["status"] == "stored"
    [row] = alert_rows(abot)
    assert (row.monitoring_incident_id, row.state, row.service, row.revision_name) == (
        "0.lj2va6zdkemq", "open", "ion-api", "ion-api-00042-xyz")
    assert row.started_at == STARTED and row.posted_at is not None
    message = alert_message(abot)
    assert actions(message) == ["alerts.declare", "alerts.dismiss"]
    text = json.dumps(message["blocks"], ensure_ascii=False)
    assert "[ALERT] p95 latency" in text and "450.5" in text and "200" in text
    assert "ion-api-00042-xyz" in text and "<https://console.cloud.google.com/monitoring/alerting/incidents/" in text
    assert (row.message_channel, row.message_ts) == (ALERTS, message["ts"])
    assert incidents(abot) == []


@pytest.mark.parametrize("auth", ["query", "basic"])
def test_the_token_is_accepted_in_the_url_and_as_the_basic_auth_password(abot: LocalBot, auth: str) -> None:
    assert delivered(abot, notification(), auth=auth).json()["status"] == "stored"
    assert len(alert_rows(abot)) == 1 and len(abot.slack.messages(ALERTS)) == 1


@pytest.mark.parametrize("auth, token, headers", [
    (None, TOKEN, {}),
    ("query", "wrong-token-0123456789abcdef", {}),
    ("query", TOKEN[:-1], {}),
    ("query", "", {}),
    ("basic", "wrong-token-0123456789abcdef", {}),
    (None, TOKEN, {"Authorization": f"Bearer {TOKEN}"}),
    (None, TOKEN, {"Authorization": "Basic not-base64!"}),
    (None, TOKEN, {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()}),  # no colon
    (None, TOKEN, {"X-Auth-Token": TOKEN}),
])
def test_a_missing_or_wrong_secret_gets_401_and_leaves_no_trace(abot: LocalBot, auth: str | None, token: str,
                                                                 headers: dict[str, str]) -> None:
    response = post(abot, notification(), auth=auth, token=token, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert TOKEN not in response.text
    abot.settle()
    assert alert_rows(abot) == [] and abot.slack.calls("chat.postMessage") == []


def test_a_slack_signed_request_is_no_substitute_for_the_token(abot: LocalBot) -> None:
    assert abot.driver is not None
    body = json.dumps(notification()).encode()
    response = requests.post(abot.base_url + ROUTE, data=body, timeout=10,
                             headers={"Content-Type": "application/json", **abot.driver.sign(body)})
    assert response.status_code == 401 and alert_rows(abot) == []


@pytest.mark.parametrize("bot_env", [{}], indirect=False)
def test_without_a_token_the_route_is_off(bot: LocalBot, bot_env: dict[str, str]) -> None:
    for auth in ("query", "basic", None):
        assert post(bot, notification(), auth=auth).status_code == 404
    assert requests.get(bot.base_url + ROUTE, timeout=10).status_code == 404
    assert count(bot, Alert) == 0


def test_only_post_is_served(abot: LocalBot) -> None:
    response = requests.get(f"{abot.base_url}{ROUTE}?auth_token={TOKEN}", timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


@pytest.mark.parametrize("env, named", [
    ({"ALERT_WEBHOOK_TOKEN": TOKEN}, "ALERT_CHANNEL"),
    ({"ALERT_WEBHOOK_TOKEN": "short", "ALERT_CHANNEL": ALERTS}, "ALERT_WEBHOOK_TOKEN"),
    ({"ALERT_WEBHOOK_TOKEN": TOKEN, "ALERT_CHANNEL": "#alerts"}, "ALERT_CHANNEL"),
    ({"ALERT_WEBHOOK_TOKEN": TOKEN, "ALERT_CHANNEL": ALERTS, "ALERT_AUTO_OPEN": "maybe"}, "ALERT_AUTO_OPEN"),
])
def test_a_token_without_a_channel_and_other_bad_alert_settings_stop_the_process_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any, env: dict[str, str],
    named: str,
) -> None:
    for name in ("ALERT_WEBHOOK_TOKEN", "ALERT_CHANNEL", "ALERT_AUTO_OPEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    assert app.main(["migrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and TOKEN not in err[0]
    assert not (tmp_path / "never.db").exists()


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    body = notification()
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = notification()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


BAD_BODIES: dict[str, bytes] = {
    "not json": b"incident=1",
    "bad utf-8": b'{"version": "1.2", "incident": {"incident_id": "\xff"}}',
    "a list": b"[]",
    "nested too deep": b"[" * 100_000,
    "no version": json.dumps(_without(("version",))).encode(),
    "version 1.1": json.dumps(_with(("version",), "1.1")).encode(),
    "version as a number": json.dumps(_with(("version",), 1.2)).encode(),
    "no incident": json.dumps(_without(("incident",))).encode(),
    "incident a string": json.dumps(_with(("incident",), "0.abc")).encode(),
    "no incident_id": json.dumps(_without(("incident", "incident_id"))).encode(),
    "empty incident_id": json.dumps(_with(("incident", "incident_id"), "")).encode(),
    "incident_id a number": json.dumps(_with(("incident", "incident_id"), 42)).encode(),
    "unknown state": json.dumps(_with(("incident", "state"), "acknowledged")).encode(),
    "no started_at": json.dumps(_without(("incident", "started_at"))).encode(),
    "started_at a string": json.dumps(_with(("incident", "started_at"), "2025-10-22T14:15:00Z")).encode(),
    "started_at a boolean": json.dumps(_with(("incident", "started_at"), True)).encode(),
    "started_at out of range": json.dumps(_with(("incident", "started_at"), 10**20)).encode(),
    "summary a number": json.dumps(_with(("incident", "summary"), 7)).encode(),
    "resource a list": json.dumps(_with(("incident", "resource"), [])).encode(),
    "labels not strings": json.dumps(_with(("incident", "resource", "labels"), {"service_name": 1})).encode(),
    "observed_value an object": json.dumps(_with(("incident", "observed_value"), {"v": 1})).encode(),
    "user labels a list": json.dumps(_with(("incident", "policy_user_labels"), ["a"])).encode(),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_body_that_is_not_a_notification_gets_400_with_a_reason_and_leaves_no_trace(abot: LocalBot,
                                                                                     name: str) -> None:
    response = post(abot, BAD_BODIES[name])
    assert response.status_code == 400, (name, response.status_code, response.text)
    reason = response.json()["reason"]
    assert isinstance(reason, str) and reason
    abot.settle()
    assert alert_rows(abot) == [] and abot.slack.calls("chat.postMessage") == []


def test_a_body_over_one_mebibyte_gets_413_and_leaves_no_trace(abot: LocalBot) -> None:
    big = notification(summary="x" * (1024 * 1024))
    assert post(abot, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is found by reading, at most 1 MiB + 1
        data = json.dumps(big).encode()
        for start in range(0, len(data), 65536):
            yield data[start:start + 65536]

    response = requests.post(f"{abot.base_url}{ROUTE}?auth_token={TOKEN}", data=chunks(), timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    # Just under the limit is read and handled (the summary is stored clipped).
    fits = notification(summary="y" * (1024 * 1024 - 3000))
    assert len(json.dumps(fits)) <= 1024 * 1024
    assert delivered(abot, fits).status_code == 200
    [row] = alert_rows(abot)
    assert len(row.summary) <= 2000


@pytest.mark.parametrize("length", ["-5", "many"])
def test_a_content_length_that_is_not_a_size_gets_400(abot: LocalBot, length: str) -> None:
    body = json.dumps(notification()).encode()
    connection = http.client.HTTPConnection("127.0.0.1", int(abot.base_url.rsplit(":", 1)[1]), timeout=10)
    try:
        connection.request("POST", f"{ROUTE}?auth_token={TOKEN}", body=body,
                           headers={"Content-Type": "application/json", "Content-Length": length})
        assert connection.getresponse().status == 400
    finally:
        connection.close()
    assert alert_rows(abot) == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.text(min_size=250, max_size=400),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ("incident_id", "state", "started_at", "ended_at", "policy_name", "condition_name", "summary", "url",
          "resource", "metric", "observed_value", "threshold_value", "severity", "policy_user_labels")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON_VALUES, top=st.one_of(st.none(), JSON_VALUES),
       raw=st.binary(max_size=64))
def test_fuzzed_payloads_never_get_a_500(abot: LocalBot, field: str, value: Any, top: Any, raw: bytes) -> None:
    """Any field of a real notification replaced by any JSON value, any whole body, any bytes: 200 or 400."""
    body = notification(incident_id=f"fuzz-{field}")
    body["incident"][field] = value
    for sent in (json.dumps(body).encode(), json.dumps(top).encode(), raw):
        response = post(abot, sent)
        assert response.status_code in (200, 400), (sent[:200], response.status_code, response.text)
        if response.status_code == 400:
            assert response.json()["reason"]
    abot.settle()
    for row in alert_rows(abot):
        assert row.posted_at is not None, row.last_error


# ---- exactly once -------------------------------------------------------------------------------------------------


def test_redeliveries_in_sequence_store_and_post_once(abot: LocalBot) -> None:
    answers = [delivered(abot, notification(), auth=auth).json() for auth in ("query", "basic", "query")]
    assert [a["status"] for a in answers] == ["stored", "duplicate", "duplicate"]
    assert len({a["alert"] for a in answers}) == 1
    assert len(alert_rows(abot)) == 1 and len(abot.slack.messages(ALERTS)) == 1
    assert len(abot.slack.calls("chat.postMessage")) == 1


def _post_at_once(bot: LocalBot, body: dict[str, Any], copies: int) -> list[int]:
    barrier = threading.Barrier(copies)
    statuses: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        status = post(bot, body).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=send) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bot.settle()
    return statuses


def test_concurrent_redeliveries_store_and_post_once(abot: LocalBot) -> None:
    assert _post_at_once(abot, notification(), 8) == [200] * 8
    assert len(alert_rows(abot)) == 1 and len(abot.slack.messages(ALERTS)) == 1
    abot.runtime.sweep()
    abot.settle()
    assert len(abot.slack.calls("chat.postMessage")) == 1


@pytest.mark.parametrize("bot_env", [{**ENV, "ALERT_AUTO_OPEN": "true"}])
def test_concurrent_redeliveries_with_auto_open_open_one_incident(abot: LocalBot) -> None:
    assert _post_at_once(abot, notification(), 8) == [200] * 8
    [incident] = incidents(abot)
    assert incident.announcement_ts is not None
    announcement_posts = [c for c in abot.slack.calls("chat.postMessage") if "[INCIDENT]" in c.args.get("text", "")]
    assert len(announcement_posts) == 1
    assert len(abot.slack.thread(ALERTS, incident.announcement_ts)) >= 1


# ---- declaring, dismissing ---------------------------------------------------------------------------------------


def test_declare_opens_the_incident_as_incident_open_does(abot: LocalBot) -> None:
    delivered(abot, notification())
    click(abot, "declare", user="U0LEMUN")
    abot.settle()
    [incident] = incidents(abot)
    assert incident.title == "p95 latency: Cloud Run Revision - Request Latencies [95TH PERCENTILE]"
    assert (incident.severity, incident.service, incident.channel_id, incident.opened_by) == (
        "critical", "ion-api", ALERTS, "U0LEMUN")
    assert incident.detected_at == STARTED and incident.opened_at > STARTED
    with abot.ctx.db.session() as session:
        roles = session.execute(select(RoleAssignment.role, RoleAssignment.user_id)).all()
        reminders = session.scalars(select(Reminder.kind).where(Reminder.incident_id == incident.id)).all()
        pinned = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "pin")).one()
        pinners = session.scalars(select(EventPin.user_id).where(EventPin.event_id == pinned.id)).all()
    assert roles == [("lead", "U0LEMUN")]
    assert len(reminders) == 4  # as `/incident open` schedules them
    top = abot.slack.messages(ALERTS)
    assert [m["ts"] for m in top] == sorted(m["ts"] for m in top) and len(top) == 2  # the alert, the announcement
    alert = top[0]
    assert (pinned.slack_channel, pinned.slack_ts, pinned.highlighted) == (ALERTS, alert["ts"], True)
    assert pinned.text.startswith("[ALERT] p95 latency: Request Latencies") and pinners == ["cloud-monitoring"]
    assert top[1]["ts"] == incident.announcement_ts and "[INCIDENT]" in top[1]["text"]
    # The alert's message says who declared it, as what, and offers nothing more.
    assert actions(alert) == []
    shown = json.dumps(alert["blocks"], ensure_ascii=False)
    assert incident.public_id in shown and "<@U0LEMUN>" in shown
    assert ephemeral_answers(abot) == []


def test_two_people_declaring_at_once_get_one_incident_and_the_second_is_told_which(abot: LocalBot) -> None:
    delivered(abot, notification())
    message = alert_message(abot)
    barrier = threading.Barrier(2)

    def press(user: str) -> None:
        barrier.wait()
        click(abot, "declare", user=user, message=message)

    threads = [threading.Thread(target=press, args=(user,)) for user in ("U0LEMUN", "U0GITCO")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    abot.settle()
    [incident] = incidents(abot)
    [told] = ephemeral_answers(abot)
    assert incident.public_id in told and f"<@{incident.opened_by}>" in told
    assert len([c for c in abot.slack.calls("chat.postMessage") if "[INCIDENT]" in c.args.get("text", "")]) == 1
    # A third click, later, on the stale button: told as well, nothing opened.
    click(abot, "declare", user="U0SENA", message=message)
    abot.settle()
    assert len(incidents(abot)) == 1 and incident.public_id in ephemeral_answers(abot)[-1]


def test_dismiss_records_who_and_the_message_says_so(abot: LocalBot) -> None:
    delivered(abot, notification())
    message = alert_message(abot)
    click(abot, "dismiss", user="U0GITCO")
    abot.settle()
    [row] = alert_rows(abot)
    assert row.dismissed_by == "U0GITCO" and row.dismissed_at is not None
    updated = alert_message(abot)
    assert actions(updated) == [] and "<@U0GITCO>" in json.dumps(updated["blocks"])
    click(abot, "declare", user="U0SENA", message=message)  # the stale button
    abot.settle()
    assert incidents(abot) == [] and "<@U0GITCO>" in ephemeral_answers(abot)[-1]


def test_a_click_from_another_message_or_a_forged_value_changes_nothing(abot: LocalBot) -> None:
    delivered(abot, notification())
    [row] = alert_rows(abot)
    _, thread_ts = open_incident(abot, "다른 사건 sev:low")
    other = abot.slack.message("C0INCIDENTS", thread_ts)
    assert other is not None
    click(abot, "declare", message=other, channel="C0INCIDENTS", value=str(row.id))
    click(abot, "declare", value="999999")
    abot.settle()
    assert len(incidents(abot)) == 1  # only the one opened by command
    assert len(ephemeral_answers(abot)) >= 2


# ---- where an alert goes ---------------------------------------------------------------------------------------


def test_an_alert_for_a_service_with_an_open_incident_goes_into_its_thread_and_timeline(abot: LocalBot) -> None:
    public_id, thread_ts = open_incident(abot)  # service:ion-api
    delivered(abot, notification())
    assert abot.slack.messages(ALERTS) == []
    replies = [m for m in abot.slack.thread("C0INCIDENTS", thread_ts) if "[ALERT]" in m.get("text", "")]
    assert len(replies) == 1 and actions(replies[0]) == []
    [row] = alert_rows(abot)
    assert row.incident_id is not None and row.declared_at is None
    with abot.ctx.db.session() as session:
        event = session.scalars(select(TimelineEvent).where(TimelineEvent.slack_ts == replies[0]["ts"])).one()
    assert (event.kind, event.highlighted, event.author_name) == ("message", True, "Cloud Monitoring")
    assert public_id in json.dumps(replies[0]["blocks"])
    assert len(incidents(abot)) == 1


def test_an_alert_not_on_cloud_run_is_posted_and_declares_an_incident_without_a_service(abot: LocalBot) -> None:
    delivered(abot, notification(resource_type="gce_instance", severity="WARNING"))
    text = json.dumps(alert_message(abot)["blocks"])
    assert "gce_instance" in text
    click(abot, "declare")
    abot.settle()
    [incident] = incidents(abot)
    assert incident.service is None and incident.severity == "medium"


@pytest.mark.parametrize("severity, expected", [("CRITICAL", "critical"), ("Error", "high"), ("WARNING", "medium"),
                                                ("No severity", "high"), (None, "high")])
def test_the_alert_severity_maps_to_the_incident_severity(abot: LocalBot, severity: str | None,
                                                          expected: str) -> None:
    delivered(abot, notification(severity=severity))
    click(abot, "declare")
    abot.settle()
    assert [i.severity for i in incidents(abot)] == [expected]


@pytest.mark.parametrize("bot_env", [{**ENV, "ALERT_AUTO_OPEN": "true"}, ENV])
def test_auto_open_by_the_setting_or_the_policy_label(abot: LocalBot, bot_env: dict[str, str]) -> None:
    labels = None if "ALERT_AUTO_OPEN" in bot_env else {"incident_bot_auto_open": "true"}
    delivered(abot, notification(labels=labels))
    [incident] = incidents(abot)
    assert incident.opened_by == "cloud-monitoring" and incident.detected_at == STARTED
    [announcement] = abot.slack.messages(ALERTS)  # no separate alert message with buttons
    assert announcement["ts"] == incident.announcement_ts and "[INCIDENT]" in announcement["text"]
    [posted] = [m for m in abot.slack.thread(ALERTS, incident.announcement_ts) if "[ALERT]" in m.get("text", "")]
    assert actions(posted) == []
    with abot.ctx.db.session() as session:
        event = session.scalars(select(TimelineEvent).where(TimelineEvent.slack_ts == posted["ts"])).one()
        roles = session.scalars(select(RoleAssignment)).all()
    assert event.highlighted and event.text.startswith("[ALERT] p95 latency")
    assert roles == []  # nobody clicked: no lead is made up


@pytest.mark.parametrize("bot_env", [{**ENV, "ALERT_AUTO_OPEN": "true"}])
def test_auto_open_with_an_open_incident_for_the_service_joins_it_instead(abot: LocalBot) -> None:
    public_id, thread_ts = open_incident(abot)
    delivered(abot, notification())
    assert [i.public_id for i in incidents(abot)] == [public_id]
    assert any("[ALERT]" in m.get("text", "") for m in abot.slack.thread("C0INCIDENTS", thread_ts))


def test_a_label_set_to_anything_but_true_does_not_open(abot: LocalBot) -> None:
    delivered(abot, notification(labels={"incident_bot_auto_open": "yes please"}))
    assert incidents(abot) == [] and actions(alert_message(abot)) == ["alerts.declare", "alerts.dismiss"]


# ---- closing ---------------------------------------------------------------------------------------------------


def test_a_closed_alert_that_never_became_an_incident_updates_its_message(abot: LocalBot) -> None:
    delivered(abot, notification())
    ended = STARTED + timedelta(minutes=22)
    delivered(abot, notification(state="closed", ended=ended))
    assert len(abot.slack.messages(ALERTS)) == 1 and incidents(abot) == []
    message = alert_message(abot)
    assert message["text"].startswith("✅") and actions(message) == ["alerts.declare", "alerts.dismiss"]
    assert abot.ctx.formatter().duration(timedelta(minutes=22)) in message["text"]
    # Declared afterwards: the new thread gets the note, with the recovery proposal.
    click(abot, "declare")
    abot.settle()
    [incident] = incidents(abot)
    notes = [m for m in abot.slack.thread(ALERTS, incident.announcement_ts) if actions(m) == ["alerts.recovered"]]
    assert len(notes) == 1


def test_a_closed_alert_whose_opening_never_arrived_is_posted_as_cleared(abot: LocalBot) -> None:
    delivered(abot, notification(state="closed", ended=STARTED + timedelta(minutes=5)))
    message = alert_message(abot)
    assert message["text"].startswith("✅") and actions(message) == [] and incidents(abot) == []


def test_a_closed_alert_is_noted_in_the_thread_and_recovery_is_recorded_by_a_person(abot: LocalBot) -> None:
    delivered(abot, notification())
    click(abot, "declare")
    abot.settle()
    [incident] = incidents(abot)
    ended = STARTED + timedelta(minutes=22, seconds=40)
    delivered(abot, notification(state="closed", ended=ended))
    assert incidents(abot)[0].recovered_at is None  # nothing is set without a person
    [note] = [m for m in abot.slack.thread(ALERTS, incident.announcement_ts) if "alerts.recovered" in actions(m)]
    assert abot.ctx.formatter().time(ended) in note["text"]
    click(abot, "recovered", user="U0GITCO", message=note)
    abot.settle()
    assert incidents(abot)[0].recovered_at == ended.replace(second=0)
    redrawn = abot.slack.message(ALERTS, note["ts"])
    assert redrawn is not None and actions(redrawn) == [] and "<@U0GITCO>" in redrawn["text"]
    assert "✅" in alert_message_of(abot, incident)["text"]
    click(abot, "recovered", user="U0SENA", message=note)  # the stale button
    abot.settle()
    assert incidents(abot)[0].recovered_at == ended.replace(second=0) and ephemeral_answers(abot)


def alert_message_of(bot: LocalBot, incident: Incident) -> dict[str, Any]:
    [row] = [r for r in alert_rows(bot) if r.state == "open" and r.incident_id == incident.id]
    assert row.message_channel is not None and row.message_ts is not None
    message = bot.slack.message(row.message_channel, row.message_ts)
    assert message is not None
    return message


def test_a_closed_alert_after_recovery_is_recorded_offers_no_button(abot: LocalBot) -> None:
    assert abot.driver is not None
    delivered(abot, notification())
    click(abot, "declare")
    abot.settle()
    [incident] = incidents(abot)
    recovered = STARTED + timedelta(minutes=20)
    at = abot.ctx.formatter().time(recovered, with_zone=False)
    response = abot.driver.command("/incident", f"milestone recovered {at}", channel=ALERTS)
    assert response.status_code == 200
    abot.settle()
    assert incidents(abot)[0].recovered_at == recovered
    delivered(abot, notification(state="closed", ended=STARTED + timedelta(minutes=25)))
    notes = [m for m in abot.slack.thread(ALERTS, incident.announcement_ts) if "✅" in m.get("text", "")
             and "[INCIDENT]" not in m.get("text", "")]
    assert notes and all(actions(m) == [] for m in notes)
    assert incidents(abot)[0].recovered_at == recovered


# ---- what the payload says stays text ---------------------------------------------------------------------------


def test_payload_text_is_escaped_clipped_and_never_mentions_anyone(abot: LocalBot) -> None:
    hostile = "<!channel> <@U0SENA> <!here|here> & <https://evil.example|click> " + "긴" * 5000
    body = notification(summary=hostile)
    body["incident"]["policy_name"] = "<!everyone> policy"
    body["incident"]["url"] = "javascript:alert(1)"
    delivered(abot, body)
    texts = posted_texts(abot)
    assert texts
    for text in texts:
        assert "<!channel>" not in text and "<@U0SENA>" not in text and "<!here" not in text
        assert "<!everyone>" not in text and "<https://evil" not in text and "javascript:" not in text
    message = alert_message(abot)
    assert "&lt;!channel&gt;" in message["text"] and len(message["text"]) < 4000
    # Declared: the title, the announcement and the timeline carry the policy's text, escaped all the same.
    click(abot, "declare", user="U0LEMUN")
    abot.settle()
    [incident] = incidents(abot)
    assert incident.title.startswith("<!everyone> policy")  # stored as sent, escaped where it is shown
    assert abot.slack.message(ALERTS, incident.announcement_ts or "") is not None
    for text in posted_texts(abot):
        assert "<!channel>" not in text and "<@U0SENA>" not in text and "<!everyone>" not in text


# ---- never lost ----------------------------------------------------------------------------------------------------


def test_an_alert_slack_refused_is_posted_later_by_the_sweep_once(database_url: str) -> None:
    from bot.clock import ManualClock

    clock = ManualClock(datetime.now(UTC))
    with SlackSandbox(clock=lambda: clock.now().timestamp()) as slack:
        slack.add_channel(ALERTS, "alerts")
        bot = LocalBot(ENV, clock=clock, slack=slack, database_url=database_url)
        bot.start()
        try:
            slack.fail("chat.postMessage", status=200, error="channel_not_found", times=1)
            delivered(bot, notification())
            [row] = alert_rows(bot)
            assert row.posted_at is None and row.attempts == 1 and slack.messages(ALERTS) == []
            bot.runtime.sweep()  # its retry is not due yet
            bot.settle()
            assert slack.messages(ALERTS) == []
            clock.advance(timedelta(minutes=1))
            bot.runtime.sweep()
            bot.settle()
            bot.runtime.sweep()
            bot.settle()
            assert len(slack.messages(ALERTS)) == 1 and alert_rows(bot)[0].posted_at is not None
        finally:
            bot.stop()


def test_an_alert_stored_before_a_crash_is_posted_by_the_sweep(abot: LocalBot) -> None:
    """A process that died after answering and before posting left the row behind: the sweep finishes it."""
    _store_as_if_crashed(abot, notification())
    assert abot.slack.messages(ALERTS) == []
    abot.runtime.sweep()
    abot.settle()
    assert len(abot.slack.messages(ALERTS)) == 1
    abot.runtime.sweep()
    abot.settle()
    assert len(abot.slack.calls("chat.postMessage")) == 1


def _store_as_if_crashed(bot: LocalBot, body: dict[str, Any]) -> None:
    """The row a process that died after answering, before posting, leaves behind."""
    from bot import alerts as domain

    parsed = domain.parse_notification(json.dumps(body).encode())
    with bot.ctx.db.session() as session:
        values = {name: getattr(parsed, name) for name in parsed.__dataclass_fields__}
        session.add(Alert(**values, received_at=datetime.now(UTC), revision=0, shown_revision=0, attempts=0))


def test_two_instances_sweeping_a_slow_slack_post_an_alert_once(slack: SlackSandbox, database_url: str) -> None:
    slack.add_channel(ALERTS, "alerts")
    first = LocalBot(ENV, slack=slack, database_url=database_url)
    first.start()
    second = LocalBot(ENV, slack=slack, database_url=database_url)
    second.start()
    try:
        _store_as_if_crashed(first, notification())
        slack.set_latency("chat.postMessage", 1.0)
        sweeps = [threading.Thread(target=bot.runtime.sweep) for bot in (first, second, first, second)]
        for sweep in sweeps:
            sweep.start()
        for sweep in sweeps:
            sweep.join()
        first.settle()
        second.settle()
        assert len(slack.messages(ALERTS)) == 1 and len(slack.calls("chat.postMessage")) == 1
    finally:
        second.stop()
        first.stop()


# ---- evidence: from alarm to evidence -----------------------------------------------------------------------------


@pytest.fixture
def gcp() -> Iterator[GcpSandbox]:
    with GcpSandbox(CanaryScenario()) as sandbox:
        yield sandbox


def test_an_auto_opened_alert_has_its_evidence_in_the_thread(gcp: GcpSandbox, slack: SlackSandbox,
                                                             database_url: str) -> None:
    sc = gcp.scenario
    env = {**ENV, "ALERT_AUTO_OPEN": "true", "GCP_PROJECT": sc.project, "CLOUD_RUN_REGION": sc.region,
           "CLOUD_LOGGING_API_URL": gcp.base_url, "CLOUD_RUN_API_URL": gcp.base_url, "SCHEDULER_ENABLED": "false",
           "CLOUD_MONITORING_API_URL": gcp.monitoring.address}
    from bot.clock import ManualClock

    clock = ManualClock(sc.window_end)
    slack.add_channel(ALERTS, "alerts")
    bot = LocalBot(env, clock=clock, slack=slack, database_url=database_url)
    bot.start()
    try:
        started = sc.deployed_at + timedelta(minutes=15)
        delivered(bot, notification(service=sc.service, started=started))
        [incident] = incidents(bot)
        assert incident.service == sc.service and incident.detected_at == started
        thread = slack.thread(ALERTS, incident.announcement_ts or "")
        assert any("[ALERT]" in m.get("text", "") for m in thread)
        names = {f["filename"] for f in slack.files()}
        assert any(name.startswith("evidence_errors_") for name in names)
        summary = [m for m in thread if "evidence_errors_" in json.dumps(m.get("blocks"))]
        assert summary, [m.get("text", "")[:80] for m in thread]
    finally:
        bot.stop()
