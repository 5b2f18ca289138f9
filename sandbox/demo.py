"""`incident-bot demo`: the guide's failed canary, replayed offline against the local Slack and Google Cloud
sandboxes, with the real app in between over loopback HTTP. Prints what the channel would show and writes
the finished post-mortem.

Time is compressed: the app and both sandboxes read one clock, which the script moves from 14:00 on
2025-10-22 (the guide's example day) through the +2h post-mortem meeting, firing the reminders as it goes.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from bot.clock import ManualClock
from bot.render import slack_unescape
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox

CHANNEL = "C0INCIDENTS"
DAY = datetime(2025, 10, 22, tzinfo=UTC)
SENA, LEMUN, GITCO, LUBIT, MONITOR = "U0SENA", "U0LEMUN", "U0GITCO", "U0LUBIT", "U0MONITOR"


def at(hhmm: str, days_later: int = 0) -> datetime:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return DAY + timedelta(days=days_later, hours=hours, minutes=minutes)


class Transcript:
    """Prints what Slack shows, step by step: people's messages, the bot's posts, edits, files, ephemerals."""

    def __init__(self, bot: LocalBot, out: TextIO) -> None:
        self.bot = bot
        self.out = out
        self.lines: list[str] = []
        self._calls_seen = 0
        self._responses_seen = 0
        self.names = {SENA: "Sena", LEMUN: "Lemun", GITCO: "Gitco", LUBIT: "Lubit", MONITOR: "Monitoring"}

    def emit(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, file=self.out)

    def heading(self, clock: ManualClock, title: str) -> None:
        self.emit()
        now = clock.now()
        stamp = now.strftime("%H:%M") if now.date() == DAY.date() else now.strftime("%Y-%m-%d %H:%M")
        self.emit(f"── {stamp} UTC · {title} " + "─" * max(0, 60 - len(title)))

    def person(self, user: str, text: str, where: str = "") -> None:
        place = f" {where}" if where else ""
        self.emit(f"👤 {self.names.get(user, user)}{place}: {text}")

    def block(self, prefix: str, text: str) -> None:
        body = slack_unescape(text).strip()
        lines = body.splitlines() or [""]
        self.emit(f"{prefix}{lines[0]}")
        indent = " " * (len(prefix) - len(prefix.lstrip()) + 4)
        for line in lines[1:]:
            self.emit(f"{indent}{line}" if line.strip() else "")

    def ack(self, response: Any) -> None:
        try:
            text = response.json().get("text", "")
        except ValueError:
            text = response.text
        if text:
            self.block("   ↳ (나에게만 보임) ", text)

    def flush(self) -> None:
        """Prints what the app did since the last flush, in the order Slack saw it."""
        self.bot.settle()
        calls = self.bot.slack.calls()
        for call in calls[self._calls_seen:]:
            if call.status != 200 or not (call.response or {}).get("ok"):
                continue
            args = call.args
            if call.method == "chat.postMessage":
                where = "스레드" if args.get("thread_ts") else "#critical-incidents"
                self.block(f"🤖 incident-bot ({where}): ", args.get("text", ""))
            elif call.method == "chat.update":
                first = slack_unescape(args.get("text", "")).strip().splitlines()[0:1]
                self.emit(f"✏️  incident-bot이 메시지를 고쳤습니다: {first[0] if first else ''}")
            elif call.method == "chat.postEphemeral":
                self.block("   ↳ (나에게만 보임) ", args.get("text", ""))
            elif call.method == "reactions.add":
                self.emit(f"   ↳ incident-bot 반응 :{args.get('name')}:")
            elif call.method == "files.completeUploadExternal":
                files = args.get("files")
                titles = [f.get("title") for f in files] if isinstance(files, list) else [files]
                comment = args.get("initial_comment") or ""
                self.block(f"📎 incident-bot (스레드) 파일 {', '.join(map(str, titles))}: ", comment)
            elif call.method == "views.open":
                self.emit("🪟 incident-bot이 입력 창을 열었습니다")
        self._calls_seen = len(calls)
        responses = self.bot.slack.responses()
        for response in responses[self._responses_seen:]:
            if response.get("text"):
                self.block("   ↳ (나에게만 보임) ", response["text"])
        self._responses_seen = len(responses)


class Scenario:
    def __init__(self, bot: LocalBot, clock: ManualClock, gcp: GcpSandbox, transcript: Transcript) -> None:
        self.bot = bot
        self.clock = clock
        self.gcp = gcp
        self.t = transcript
        self.thread_ts = ""

    @property
    def driver(self) -> Any:
        return self.bot.driver

    def at(self, hhmm: str, title: str, days_later: int = 0) -> None:
        self.clock.set(at(hhmm, days_later))
        self.t.heading(self.clock, title)

    def command(self, user: str, command: str, text: str) -> Any:
        self.t.person(user, f"{command} {text}")
        response = self.driver.command(command, text, user=user, channel=CHANNEL)
        self.t.ack(response)
        self.t.flush()
        return response

    def say(self, user: str, text: str, *, thread: bool = True) -> str:
        self.t.person(user, text, "(스레드)" if thread else "(#critical-incidents)")
        message, _ = self.driver.say(CHANNEL, user, text, thread_ts=self.thread_ts if thread else None)
        self.t.flush()
        return str(message["ts"])

    def react(self, user: str, ts: str, emoji: str) -> None:
        self.t.person(user, f":{emoji}: 반응")
        self.driver.react(CHANNEL, ts, user, emoji)
        self.t.flush()

    def remind(self) -> None:
        """Delivers what has fallen due on the scenario clock, as the scheduler would in real time."""
        from bot import reminders

        reminders.deliver_due(self.bot.ctx)
        self.t.flush()


def run_demo(output_dir: str = "out", locale: str | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    clock = ManualClock(at("13:55"))
    scenario_data = CanaryScenario(deployed_at=at("14:00"), duration=timedelta(minutes=38), seed=20251022)
    env = {
        "INCIDENT_LOCALE": locale or os.environ.get("INCIDENT_LOCALE", "ko"),
        "INCIDENT_TIMEZONE": "UTC",
        "GCP_PROJECT": scenario_data.project,
        "CLOUD_RUN_REGION": scenario_data.region,
        "SCHEDULER_ENABLED": "false",  # the script fires reminders itself, in compressed time
    }
    slack = SlackSandbox(clock=lambda: clock.now().timestamp()).start()
    with GcpSandbox(scenario_data) as gcp:
        env["CLOUD_LOGGING_API_URL"] = gcp.base_url
        env["CLOUD_RUN_API_URL"] = gcp.base_url
        bot = LocalBot(env, clock=clock, slack=slack)
        bot.start(background=False)
        try:
            transcript = Transcript(bot, out)
            play(Scenario(bot, clock, gcp, transcript))
            return write_outputs(bot, transcript, Path(output_dir), out)
        finally:
            bot.stop()
            slack.stop()


def play(s: Scenario) -> None:
    s.t.emit("incident-bot demo — Phase 4 Canary 배포 실패 (가이드의 시나리오, 2025-10-22)")
    s.at("14:00", "canary 배포")
    s.say(SENA, "Phase 4 canary 배포 시작합니다 (ion-api-00042-xyz, 트래픽 10%)", thread=False)
    s.at("14:05", "초기 메트릭")
    s.say(LEMUN, "초기 메트릭 정상입니다", thread=False)
    s.at("14:15", "모니터링 알림")
    alert_ts = s.say(MONITOR, "[ALERT] ion-api p95 응답시간 850ms > 200ms (canary ion-api-00042-xyz)", thread=False)

    s.at("14:35", "사람이 이상 신호 확인 → 사건 등록")
    s.command(LEMUN, "/incident", "open Phase 4 Canary 배포 실패 (응답시간 증가) sev:high service:ion-api")
    s.thread_ts = s.bot.slack.messages(CHANNEL)[-1]["ts"]
    s.react(LEMUN, alert_ts, "pushpin")
    s.command(SENA, "/incident", "milestone deployed 14:00")
    s.command(SENA, "/incident", "milestone started 14:15")
    s.command(SENA, "/incident", f"role lead <@{SENA}|sena>")
    s.command(SENA, "/incident", f"role backend <@{GITCO}|gitco>")
    s.command(SENA, "/incident", f"role devops <@{LUBIT}|lubit>")
    s.command(SENA, "/incident", f"role monitoring <@{LEMUN}|lemun>")
    s.say(LEMUN, "p95 850ms, 에러율 9% 확인. canary 리비전에서만 발생하고 있습니다")
    s.at("14:35", "롤백 결정")
    decision = s.say(SENA, "롤백 결정합니다. 트래픽 100% legacy로 돌립니다")
    s.react(SENA, decision, "rewind")
    s.command(SENA, "/incident", "status identified")
    s.at("14:38", "롤백 완료")
    done = s.say(GITCO, "롤백 완료, 메트릭 정상화 확인")
    s.gcp.set_rolled_back()
    s.react(GITCO, done, "white_check_mark")

    s.at("14:48", "롤백 완료 확인 (Phase 1 Step 1)")
    s.command(LUBIT, "/incident", "verify")
    s.command(SENA, "/incident", "status monitoring")

    s.at("15:05", "RCA 시작 알림 (+30분)")
    s.remind()
    s.at("16:25", "Post-Mortem 회의 10분 전")
    s.remind()
    s.at("16:35", "Post-Mortem 회의 시작")
    s.remind()
    s.command(SENA, "/incident", "status resolved")
    s.command(SENA, "/postmortem", "checklist")

    s.at("16:50", "근본 원인 분석 (5 Whys)")
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
    s.at("17:15", "개선사항 도출 · 액션 아이템 정리")
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

    s.at("18:05", "보고")
    s.command(SENA, "/postmortem", "report")
    s.command(SENA, "/postmortem", "report en")
    s.at("18:10", "회의 이후")
    s.remind()
    s.at("09:00", "액션 아이템 기한 (P0, 2일)", days_later=2)
    s.remind()
    s.at("09:00", "기한이 지난 액션 아이템", days_later=3)
    s.remind()


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
        s.t.emit(f"(edit submission failed: HTTP {response.status_code})")
    s.bot.settle()
    s.t.person(SENA, "편집 창에서 결론을 작성하고 저장")
    s.t.flush()


def tick_checklist(s: Scenario) -> None:
    """Ticks what the team has done by the end of the meeting, as people would click the checkboxes."""
    from bot.checklist import GROUPS

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
            s.t.emit(f"(checklist click failed: HTTP {response.status_code})")
    s.t.person(SENA, "체크리스트에서 기본 · 분석 · Post-Mortem 회의 항목을 체크")
    s.t.flush()


def write_outputs(bot: LocalBot, transcript: Transcript, output_dir: Path, out: TextIO) -> int:
    output_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file in bot.slack.files():
        name = str(file["filename"])
        if name.endswith(".md") or name.endswith(".json"):
            path = output_dir / name
            path.write_bytes(file["content"])
            written.append(path)
    transcript_path = output_dir / "transcript.txt"
    transcript_path.write_text("\n".join(transcript.lines) + "\n", encoding="utf-8")
    reports = [p for p in written if p.name.endswith("-postmortem.md")]
    print("", file=out)
    print("── 결과 " + "─" * 60, file=out)
    for path in [transcript_path, *written]:
        print(f"  {path}", file=out)
    if not reports:
        print("incident-bot demo: no report was produced", file=sys.stderr)
        return 1
    print("", file=out)
    print(textwrap.indent(reports[0].read_text(encoding="utf-8"), "  "), file=out)
    summary = {"report": str(reports[0]), "files": [str(p) for p in written]}
    (output_dir / "demo.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0
