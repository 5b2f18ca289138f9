"""`incident-bot demo`: the guide's failed canary, replayed offline against the local Slack and Google Cloud
sandboxes, with the real app in between over loopback HTTP. Prints what the channel would show and writes
the finished post-mortem.

Where the guide's team noticed the alarm 20 minutes late and gathered the evidence by hand, here Cloud Monitoring's
webhook posts the alarm, one click declares the incident with its evidence, and the rollback is confirmed and
verified from the thread. Time is compressed: the app and the sandboxes read one clock, which the script moves
from 14:00 on 2025-10-22 (the guide's example day) through the +2h post-mortem meeting, firing what falls due
(reminders, the check after the rollback) as it goes.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import requests
from sqlalchemy import select

from bot import reminders, rollback
from bot.checklist import GROUPS
from bot.clock import ManualClock
from bot.render import slack_unescape
from handlers.alerts_webhook import ROUTE as ALERT_ROUTE
from handlers.blocks import alerts as alert_buttons
from handlers.blocks import evidence as evidence_buttons
from handlers.blocks import rollback as rollback_buttons
from handlers.github_webhook import ROUTE as GITHUB_ROUTE
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.github import GithubSandbox
from sandbox.loopback import LocalBot, RuntimeBuilder
from sandbox.slack import JSONDict, SlackSandbox
from storage.models import Incident

CHANNEL = "C0INCIDENTS"
DAY = datetime(2025, 10, 22, tzinfo=UTC)
SENA, LEMUN, GITCO, LUBIT = "U0SENA", "U0LEMUN", "U0GITCO", "U0LUBIT"
INCIDENT_ID = "INCIDENT-20251022-001"
# Cloud Monitoring's webhook channel (webhook_tokenauth): the token travels in the URL it was created with.
ALERT_TOKEN = "demo-alert-token-20251022"
# The repository's webhook secret: GitHub signs each delivery with it.
GITHUB_SECRET = "demo-github-webhook-secret-20251022"
EDIT_LINES_SHOWN = 40  # of the lines an edit changed: enough for a whole evidence summary
DATABASE_FILE = "demo.db"  # kept beside the report, so `incident-bot report` can read it afterwards
# What a run writes besides the files uploaded to Slack. A new run removes these and the files listed by the last
# run's demo.json, and nothing else: the output directory may be one the user also keeps other files in.
OWN_FILES = (
    "transcript.txt", "demo.json", DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm",
    f"{DATABASE_FILE}.migrate-lock",
    f"{INCIDENT_ID}-postmortem.md", f"{INCIDENT_ID}-postmortem.ko.md", f"{INCIDENT_ID}-postmortem.en.md",
)


def at(hhmm: str, days_later: int = 0) -> datetime:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return DAY + timedelta(days=days_later, hours=hours, minutes=minutes)


class Transcript:
    """Prints what Slack shows, step by step: people's messages, the bot's posts, edits, files, ephemerals."""

    def __init__(self, bot: LocalBot, out: TextIO, github: GithubSandbox | None = None) -> None:
        self.bot = bot
        self.out = out
        self.github = github
        self._issues_seen = 0
        self.lines: list[str] = []
        self._calls_seen = 0
        self._responses_seen = 0
        self._shown: dict[tuple[str, str], list[str]] = {}  # each bot message's lines as last posted or edited
        self.names = {SENA: "Sena", LEMUN: "Lemun", GITCO: "Gitco", LUBIT: "Lubit",
                      bot.slack.bot_user_id: "incident-bot"}

    def say(self, key: str, **params: Any) -> str:
        """The frame's words in the bot's language (templates/messages/demo.j2 and its catalogue), as plain text."""
        return slack_unescape(self.bot.ctx.renderer.say(f"demo.{key}", self.bot.ctx.settings.locale, **params))

    def emit(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, file=self.out)

    def heading(self, clock: ManualClock, scene: str) -> None:
        self.emit()
        title = self.say(scene)
        now = clock.now()
        stamp = now.strftime("%H:%M") if now.date() == DAY.date() else now.strftime("%Y-%m-%d %H:%M")
        self.emit(f"── {stamp} UTC · {title} " + "─" * max(0, 60 - len(title)))

    def person(self, user: str, text: str, where: str = "") -> None:
        place = f" {where}" if where else ""
        self.emit(f"👤 {self.names.get(user, user)}{place}: {text}")

    def excerpt(self, channel: str, ts: str, limit: int = 48) -> tuple[str, str]:
        """(author, first line clipped) of a message, so a reaction says which message it was on."""
        message = self.bot.slack.message(channel, ts) or {}
        author = self.names.get(str(message.get("user", "")), str(message.get("user", "?")))
        first = (slack_unescape(str(message.get("text", ""))).strip().splitlines() or [""])[0]
        return author, first if len(first) <= limit else first[: limit - 1].rstrip() + "…"

    def block(self, prefix: str, text: str) -> None:
        body = slack_unescape(text).strip()
        if not body:  # a file without a comment: no dangling ": " caption
            self.emit(prefix.rstrip().removesuffix(":"))
            return
        lines = body.splitlines()
        self.emit(f"{prefix}{lines[0]}")
        indent = " " * (len(prefix) - len(prefix.lstrip()) + 4)
        for line in lines[1:]:
            self.emit(f"{indent}{line}" if line.strip() else "")

    def buttons(self, blocks: Any) -> None:
        """A message's buttons, as the channel shows them under it."""
        if isinstance(blocks, str):  # a form-encoded call carries its blocks as JSON text
            blocks = json.loads(blocks)
        labels = [f"[{element['text']['text']}]" for block in blocks or [] if block.get("type") == "actions"
                  for element in block.get("elements", []) if element.get("type") == "button"]
        if labels:
            self.emit(f"    {'  '.join(labels)}")

    def edited(self, channel: str, ts: str, text: str, blocks: Any) -> None:
        """An edit: its first line, then the lines it changed, so the transcript shows what became different."""
        lines = [line for line in slack_unescape(text).strip().splitlines() if line.strip()]
        before = self._shown.get((channel, ts), [])
        self._shown[(channel, ts)] = lines
        self.emit(f"✏️  {self.say('bot_edited', first_line=lines[0] if lines else '')}")
        changed = [line for line in lines[1:] if line not in before]
        for line in changed[:EDIT_LINES_SHOWN]:
            self.emit(f"    {line}")
        if len(changed) > EDIT_LINES_SHOWN:
            self.emit("    …")
        self.buttons(blocks)

    def ack(self, response: Any) -> None:
        try:
            text = response.json().get("text", "")
        except ValueError:
            text = response.text
        if text:
            self.block(f"   ↳ {self.say('only_you')} ", text)

    def flush(self) -> None:
        """Prints what the app did since the last flush, in the order Slack saw it."""
        self.bot.settle()
        calls = self.bot.slack.calls()
        for call in calls[self._calls_seen:]:
            if call.status != 200 or not (call.response or {}).get("ok"):
                continue
            args = call.args
            if call.method == "chat.postMessage":
                where = self.say("thread") if args.get("thread_ts") else "#critical-incidents"
                text = args.get("text", "")
                self.block(f"🤖 incident-bot ({where}): ", text)
                self.buttons(args.get("blocks"))
                posted = (call.response or {}).get("ts")
                if posted:
                    self._shown[(str(args.get("channel")), str(posted))] = slack_unescape(text).strip().splitlines()
            elif call.method == "chat.update":
                self.edited(str(args.get("channel")), str(args.get("ts")), args.get("text", ""), args.get("blocks"))
            elif call.method == "chat.postEphemeral":
                self.block(f"   ↳ {self.say('only_you')} ", args.get("text", ""))
            elif call.method == "reactions.add":
                self.emit(f"   ↳ {self.say('bot_reacted', emoji=args.get('name'))}")
            elif call.method == "files.completeUploadExternal":
                files = args.get("files")
                titles = [f.get("title") for f in files] if isinstance(files, list) else [files]
                comment = args.get("initial_comment") or ""
                where = self.say("thread")
                self.block(f"📎 {self.say('bot_file', where=where, names=', '.join(map(str, titles)))}: ", comment)
            elif call.method == "views.open":
                self.emit(f"🪟 {self.say('bot_opened_form')}")
        self._calls_seen = len(calls)
        responses = self.bot.slack.responses()
        for response in responses[self._responses_seen:]:
            if response.get("text"):
                self.block(f"   ↳ {self.say('only_you')} ", response["text"])
        self._responses_seen = len(responses)
        self.new_issues()

    def new_issues(self) -> None:
        """The issues GitHub holds since the last look: what the action items became on the other side."""
        if self.github is None:
            return
        issues = self.github.issues()
        for issue in issues[self._issues_seen:]:
            labels = ", ".join(label["name"] for label in issue["labels"])
            assignees = ", ".join(a["login"] for a in issue["assignees"]) or self.say("github_unassigned")
            line = self.say("github_issue", repo=self.github.repo, number=issue["number"], title=issue["title"],
                            labels=labels, assignees=assignees)
            self.emit(f"🐙 {line}")
        self._issues_seen = len(issues)


class Scenario:
    def __init__(self, bot: LocalBot, clock: ManualClock, gcp: GcpSandbox, transcript: Transcript,
                 github: GithubSandbox) -> None:
        self.bot = bot
        self.clock = clock
        self.gcp = gcp
        self.github = github
        self.t = transcript
        self.thread_ts = ""

    @property
    def driver(self) -> Any:
        return self.bot.driver

    def at(self, hhmm: str, scene: str, days_later: int = 0) -> None:
        self.clock.set(at(hhmm, days_later))
        self.t.heading(self.clock, scene)

    def command(self, user: str, command: str, text: str) -> Any:
        self.t.person(user, f"{command} {text}")
        response = self.driver.command(command, text, user=user, channel=CHANNEL)
        self.t.ack(response)
        self.t.flush()
        return response

    def say(self, user: str, text: str, *, thread: bool = True) -> str:
        self.t.person(user, text, f"({self.t.say('thread')})" if thread else "(#critical-incidents)")
        message, _ = self.driver.say(CHANNEL, user, text, thread_ts=self.thread_ts if thread else None)
        self.t.flush()
        return str(message["ts"])

    def react(self, user: str, ts: str, emoji: str) -> None:
        author, excerpt = self.t.excerpt(CHANNEL, ts)
        self.t.person(user, self.t.say("reacted", emoji=emoji, author=author, excerpt=excerpt))
        self.driver.react(CHANNEL, ts, user, emoji)
        self.t.flush()

    def alert(self, notification: JSONDict) -> None:
        """Cloud Monitoring's webhook delivery: a plain HTTP POST, the channel's token in the URL, no Slack in it."""
        incident = notification["incident"]
        line = self.t.say("webhook", route=ALERT_ROUTE, version=notification["version"], state=incident["state"],
                          policy=incident["policy_name"])
        self.t.emit(f"📡 {line}")
        response = requests.post(f"{self.bot.base_url}{ALERT_ROUTE}?auth_token={ALERT_TOKEN}", json=notification,
                                 headers={"User-Agent": "Google-Alerts"}, timeout=30)
        self.t.emit(f"   ↳ HTTP {response.status_code} {response.text.strip()}")
        self.t.flush()

    def close_on_github(self, login: str, number: int) -> None:
        """Someone closes an issue on github.com; the repository's webhook tells the app, signed."""
        title = self.github.issue(number)["title"]
        self.t.emit(f"🐙 {self.t.say('github_closes', login=login, number=number, title=title)}")
        delivery = self.github.close_issue(number, by=login)
        assert delivery is not None
        self.t.emit(f"📡 {self.t.say('github_webhook', route=GITHUB_ROUTE, action=delivery.action, number=number)}")
        self.t.emit(f"   ↳ HTTP {delivery.status}")
        self.t.flush()

    def click(self, user: str, action_id: str) -> None:
        """A person presses the button on the newest message that carries it, as Slack sends the click."""
        message, button = self._button(action_id)
        author, excerpt = self.t.excerpt(CHANNEL, str(message["ts"]))
        label = button["text"]["text"]
        self.t.person(user, self.t.say("clicked", label=label, author=author, excerpt=excerpt))
        dialog = button.get("confirm")
        if dialog:  # Slack asks first; the click reaches the app only once the person confirms
            self.t.emit(f"🪟 {self.t.say('dialog', title=dialog['title']['text'], text=dialog['text']['text'])}")
            self.t.person(user, self.t.say("confirmed", label=dialog["confirm"]["text"]))
        response = self.driver.block_action(action_id, button["value"], user=user, channel=CHANNEL,
                                            message_ts=str(message["ts"]))
        if response.status_code != 200:
            self.t.emit(self.t.say("click_failed", status=response.status_code))
        self.t.flush()

    def _button(self, action_id: str) -> tuple[JSONDict, JSONDict]:
        slack = self.bot.slack
        messages = list(slack.messages(CHANNEL))
        for top in slack.messages(CHANNEL):
            if top.get("reply_count"):
                messages.extend(slack.thread(CHANNEL, top["ts"]))
        for message in sorted(messages, key=lambda m: float(m["ts"]), reverse=True):
            for block in message.get("blocks") or []:
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if element.get("action_id") == action_id:
                        return message, element
        raise RuntimeError(f"no message carries the button {action_id}")

    def follow_incident(self) -> None:
        """From here on people reply in the incident's thread: the announcement the declaration posted."""
        with self.bot.ctx.db.read() as session:
            self.thread_ts = session.scalars(select(Incident.announcement_ts)).one() or ""

    def remind(self, when_nothing: str | None = None) -> None:
        """Delivers what has fallen due on the scenario clock (reminders, the check after a rollback), as the
        scheduler would in real time; `when_nothing` says why a scene where nothing is posted is there."""
        before = len(self.t.lines)
        reminders.deliver_due(self.bot.ctx)
        rollback.run_due_verifications(self.bot.ctx)
        self.t.flush()
        if when_nothing and len(self.t.lines) == before:
            self.t.emit(f"ℹ️  {self.t.say(when_nothing)}")


def other_locale(locale: str) -> str:
    return "en" if locale == "ko" else "ko"


def clear_previous_run(output_dir: Path) -> None:
    names = set(OWN_FILES)
    try:
        previous = json.loads((output_dir / "demo.json").read_text(encoding="utf-8"))
        names.update(Path(path).name for path in previous.get("files", []))
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # no earlier run, or a manifest that is not ours: only the fixed names go
    for name in names:
        (output_dir / name).unlink(missing_ok=True)


def report_command(database: Path, locale: str) -> str:
    """The command line that renders the demo's report again from its database, from any directory."""
    installed = Path(sys.prefix) / "bin" / "incident-bot"  # the demo's own venv, active or not
    program = str(installed) if installed.exists() else "incident-bot"
    url = f"sqlite:///{database.resolve()}"
    return f"DATABASE_URL={shlex.quote(url)} {shlex.quote(program)} report {INCIDENT_ID} --locale {locale}"


def run_demo(build_runtime: RuntimeBuilder, output_dir: str = "out", locale: str | None = None,
             out: TextIO | None = None) -> int:
    """Runs the scenario against the app `build_runtime` makes (app.py passes its own)."""
    out = out or sys.stdout
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    clear_previous_run(output)
    database = (output / DATABASE_FILE).resolve()
    clock = ManualClock(at("13:55"))
    # The canary serves well for 14 minutes (the guide's "first metrics normal" at 14:05), then fails until the
    # rollback at 14:35.
    scenario_data = CanaryScenario(deployed_at=at("14:00"), onset=timedelta(minutes=14),
                                   duration=timedelta(minutes=35), stable_revision="ion-api-00041-kav", seed=20251022)
    env = {
        "INCIDENT_LOCALE": locale or os.environ.get("INCIDENT_LOCALE", "ko"),
        "INCIDENT_TIMEZONE": "UTC",
        "GCP_PROJECT": scenario_data.project,
        "CLOUD_RUN_REGION": scenario_data.region,
        "SCHEDULER_ENABLED": "false",  # the script fires what falls due itself, in compressed time
        "ALERT_WEBHOOK_TOKEN": ALERT_TOKEN,
        "ALERT_CHANNEL": CHANNEL,
        "ROLLBACK_ENABLED": "true",  # Sena confirms as the incident's lead
        "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,  # action items become issues in the GitHub sandbox's repository
    }
    slack = SlackSandbox(clock=lambda: clock.now().timestamp()).start()
    with GcpSandbox(scenario_data) as gcp, GithubSandbox(clock=lambda: clock.now().timestamp()) as github:
        env.update(github.env())
        env["CLOUD_LOGGING_API_URL"] = gcp.base_url
        env["CLOUD_RUN_API_URL"] = gcp.base_url
        env["CLOUD_MONITORING_API_URL"] = gcp.monitoring.address
        bot = LocalBot(env, build_runtime=build_runtime, clock=clock, slack=slack,
                       database_url=f"sqlite:///{database}")
        bot.start(background=False)
        github.connect_webhook(f"{bot.base_url}{GITHUB_ROUTE}", GITHUB_SECRET)
        try:
            transcript = Transcript(bot, out, github)
            play(Scenario(bot, clock, gcp, transcript, github))
            return write_outputs(bot, transcript, output, database, out)
        finally:
            bot.stop()
            slack.stop()


def cloud_monitoring_alert(sc: CanaryScenario, started: datetime) -> JSONDict:
    """The notification Cloud Monitoring sends (webhook schema 1.2) when the canary's p95 has stayed over 200 ms for
    the condition's one-minute duration: `started_at` is that moment, a minute after the latency rose."""
    incident_id = "0.nv4k2h7q1c3x"
    return {"version": "1.2", "incident": {
        "incident_id": incident_id,
        "scoping_project_id": sc.project,
        "url": f"https://console.cloud.google.com/monitoring/alerting/incidents/{incident_id}?project={sc.project}",
        "started_at": int(started.timestamp()),
        "ended_at": None,
        "state": "open",
        "summary": f"Request Latencies for {sc.canary_revision} is above the threshold of 200 with a value of 850.",
        "severity": "Error",
        "resource_name": f"{sc.project} {sc.canary_revision}",
        "resource_display_name": sc.canary_revision,
        "resource_type_display_name": "Cloud Run Revision",
        "resource": {"type": "cloud_run_revision", "labels": {
            "project_id": sc.project, "service_name": sc.service, "revision_name": sc.canary_revision,
            "location": sc.region, "configuration_name": sc.service}},
        "metric": {"type": "run.googleapis.com/request_latencies", "displayName": "Request Latencies", "labels": {}},
        "policy_name": f"{sc.service} p95 latency",
        "policy_user_labels": {"team": "ion"},
        "condition_name": "p95 > 200ms for 1 min",
        "condition": {"name": f"projects/{sc.project}/alertPolicies/4021/conditions/1",
                      "displayName": "p95 > 200ms for 1 min"},
        "threshold_value": "200",
        "observed_value": "850",
        "documentation": {"content": "Canary latency: check the canary revision and roll back with /incident rollback.",
                          "mime_type": "text/markdown"},
    }}


def play(s: Scenario) -> None:
    s.t.emit(s.t.say("title"))
    s.at("14:00", "scene_deploy")
    deploy = s.say(SENA, "Phase 4 canary 배포 시작합니다 (ion-api-00042-xyz, 트래픽 10%)", thread=False)
    s.at("14:05", "scene_initial_metrics")
    s.say(LEMUN, "초기 메트릭 정상입니다", thread=False)

    s.at("14:15", "scene_alert")
    s.alert(cloud_monitoring_alert(s.gcp.scenario, started=at("14:15")))
    s.at("14:16", "scene_declare")
    s.click(LEMUN, alert_buttons.action_id("declare"))
    s.follow_incident()

    s.at("14:18", "scene_roles")
    s.react(SENA, deploy, "pushpin")
    s.command(SENA, "/incident", "milestone deployed 14:00")
    s.say(SENA, "증거 요약을 보니 14:14부터 canary 5xx가 급증했습니다. 이상 발생 시점을 14:14로 기록합니다")
    s.command(SENA, "/incident", "milestone started 14:14")
    s.command(SENA, "/incident", f"role lead <@{SENA}|sena>")
    s.command(SENA, "/incident", f"role backend <@{GITCO}|gitco>")
    s.command(SENA, "/incident", f"role devops <@{LUBIT}|lubit>")
    s.command(SENA, "/incident", f"role monitoring <@{LEMUN}|lemun>")

    s.at("14:34", "scene_evidence_again")
    s.command(LEMUN, "/incident", "evidence")  # what the canary did since the deploy, before the rollback ends it
    s.say(LEMUN, "p95 850ms, 에러율 9% 확인. canary 리비전에서만 발생하고 있습니다")

    s.at("14:35", "scene_rollback")
    s.say(SENA, "롤백 결정합니다. 트래픽 100% legacy로 돌립니다")
    s.command(SENA, "/incident", "rollback")
    s.click(SENA, rollback_buttons.CONFIRM)
    s.command(SENA, "/incident", "status identified")
    s.at("14:38", "scene_verify")
    s.remind()  # the check VERIFY_AFTER_ROLLBACK (3 min) after the rollback finished
    s.say(GITCO, "롤백 완료, 메트릭 정상화 확인")
    s.click(GITCO, evidence_buttons.CONFIRM_RECOVERED)
    s.command(SENA, "/incident", "status monitoring")

    s.at("14:46", "scene_rca")
    s.remind()
    s.at("16:06", "scene_meeting_pre")
    s.remind()
    s.at("16:16", "scene_meeting_start")
    s.remind()
    s.command(SENA, "/incident", "status resolved")
    s.command(SENA, "/postmortem", "checklist")

    s.at("16:30", "scene_five_whys")
    for why in (
        "왜 응답 시간이 증가했나? → 데이터베이스 쿼리 시간이 400ms 소요",
        "왜 쿼리 시간이 길어졌나? → 400번의 개별 쿼리 발생 (N+1 문제)",
        "왜 N+1 문제가 있었나? → 추천 엔진 코드에 조인 대신 루프 쿼리 사용",
        "왜 그런 코드가 배포되었나? → 테스트 데이터가 100행만 있어서 문제 미발견",
        "왜 테스트 데이터가 작았나? → 프로덕션 데이터 크기(50M행)를 고려하지 않음",
    ):
        s.command(GITCO, "/postmortem", f"why {why}")
    s.command(
        GITCO, "/postmortem",
        "root-cause 추천 엔진의 N+1 쿼리 문제로 인해 응답 시간이 과도하게 증가했습니다. "
        "단일 추천 요청 시 400번의 개별 데이터베이스 쿼리가 발생했습니다.",
    )
    s.at("17:00", "scene_actions")
    # Whose issues go to whom on GitHub; Lemun has no login here, so hers stays unassigned and names her.
    s.command(SENA, "/incident", f"github <@{GITCO}|gitco> gitco-dev")
    s.command(SENA, "/incident", f"github <@{LUBIT}|lubit> lubit-ops")
    s.command(SENA, "/postmortem", f'action P0 "N+1 쿼리 수정 (조인으로 변경)" <@{GITCO}|gitco> due:2d impact:critical')
    s.command(SENA, "/postmortem", f'action P1 "추천 엔진 성능 테스트 추가" <@{GITCO}|gitco> due:1w impact:high')
    s.command(
        SENA, "/postmortem", f'action P1 "Staging 데이터 크기 프로덕션 동기화" <@{LUBIT}|lubit> due:1w impact:high'
    )
    s.command(SENA, "/postmortem", f'action P2 "데이터베이스 모니터링 강화" <@{LEMUN}|lemun> due:1w impact:medium')
    s.command(LEMUN, "/postmortem", "impact users 약 500명 (전체의 1%)")
    s.command(LEMUN, "/postmortem", "impact availability 90.5%")
    for lesson in (
        "테스트 데이터 크기가 중요하다 — 프로덕션 데이터 크기를 반영한 테스트 필수",
        "성능 테스트는 선택이 아니라 필수다 — 부하 테스트 없이 배포하면 안 됨",
        "Canary 배포는 실제 효과가 있다 — 문제를 감지하고 3분 만에 복구",
        "모니터링 임계값 설정이 중요하다 — P95 > 200ms 임계값이 좋은 조기 경보 역할",
    ):
        s.command(SENA, "/postmortem", f"lesson {lesson}")
    for prevent in (
        "Staging 환경을 프로덕션과 동일한 데이터 크기로 유지",
        "배포 전 필수적으로 부하 테스트 실행 (1000+ 사용자 시뮬레이션)",
        "ORM 쿼리 분석 자동화 (N+1 감지 도구 도입)",
        "성능 회귀 테스트 추가",
    ):
        s.command(SENA, "/postmortem", f"prevent {prevent}")
    write_conclusion(s)
    tick_checklist(s)

    s.at("17:46", "scene_report")
    s.command(SENA, "/postmortem", "report")  # in the configured language: <ID>-postmortem.md
    s.command(SENA, "/postmortem", f"report {other_locale(s.bot.ctx.settings.locale)}")
    s.at("17:51", "scene_after_meeting")
    s.remind(when_nothing="nudge_skipped")
    s.at("09:00", "scene_action_due", days_later=2)
    s.remind()
    s.at("09:00", "scene_action_overdue", days_later=3)
    s.remind()
    s.at("11:00", "scene_github_close", days_later=3)
    s.close_on_github("gitco-dev", 1)  # the N+1 fix is merged: its issue closes, and the action item with it


def write_conclusion(s: Scenario) -> None:
    """The longer text goes through `/postmortem edit`: the modal opens prefilled and Sena adds the conclusion."""
    s.command(SENA, "/postmortem", "edit")
    view = s.bot.slack.views()[-1]
    values = {
        b["block_id"]: {"value": {"type": "plain_text_input", "value": b["element"].get("initial_value") or ""}}
        for b in view["blocks"] if b["type"] == "input"
    }
    values["conclusion"]["value"]["value"] = (
        "이번 사건은 **프로덕션 데이터 크기를 고려한 테스트의 중요성**을 명확히 보여주었습니다.\n"
        "앞으로는 테스트 환경과 프로덕션 환경의 차이를 최소화하여 이런 문제를 예방하겠습니다."
    )
    response = s.driver.view_submission(
        "postmortem.edit", values, user=SENA, private_metadata=view["private_metadata"], view_id=view["id"]
    )
    if response.status_code != 200:
        s.t.emit(s.t.say("edit_failed", status=response.status_code))
    s.bot.settle()
    s.t.person(SENA, s.t.say("wrote_conclusion"))
    s.t.flush()


def tick_checklist(s: Scenario) -> None:
    """Ticks what the team has done by the end of the meeting, as people would click the checkboxes."""
    done_groups = {"basic", "analysis", "meeting"}
    for group, _, _, items in GROUPS:
        if group not in done_groups:
            continue
        selected = [f"{group}.{key}" for key, _, _ in items]
        response = s.driver.block_action(
            f"postmortem.checklist.{group}", None, user=SENA, channel=CHANNEL, action_type="checkboxes",
            selected_options=[{"value": value} for value in selected],
        )
        if response.status_code != 200:
            s.t.emit(s.t.say("click_failed", status=response.status_code))
    s.t.person(SENA, s.t.say("ticked_checklist"))
    s.t.flush()


def write_outputs(bot: LocalBot, transcript: Transcript, output_dir: Path, database: Path, out: TextIO) -> int:
    written: list[Path] = []
    for file in bot.slack.files():
        name = str(file["filename"])
        if name.endswith((".md", ".json", ".png")):
            path = output_dir / name
            path.write_bytes(file["content"])  # a later upload of a name (the report's chart) replaces it
            if path not in written:
                written.append(path)
    transcript_path = output_dir / "transcript.txt"
    transcript_path.write_text("\n".join(transcript.lines) + "\n", encoding="utf-8")
    reports = [p for p in written if p.name.endswith("-postmortem.md")]
    print("", file=out)
    print(f"── {transcript.say('results')} " + "─" * 60, file=out)
    for path in [transcript_path, *written, output_dir / DATABASE_FILE]:
        print(f"  {path}", file=out)
    if not reports:
        print("incident-bot demo: no report was produced", file=sys.stderr)
        return 1
    print("", file=out)
    print(textwrap.indent(reports[0].read_text(encoding="utf-8"), "  "), file=out)
    command = report_command(database, bot.ctx.settings.locale)
    print(transcript.say("report_command"), file=out)
    print(f"  {command}", file=out)
    summary = {"report": str(reports[0]), "files": [str(p) for p in written],
               "database": str(output_dir / DATABASE_FILE), "report_command": command}
    (output_dir / "demo.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0
