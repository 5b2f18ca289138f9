"""Issue "Trust", items 6, 9 and 3 for commands and interactions: a replayed signed body runs once and gets the
same answer; rate limits per user and per channel refuse (and store nothing) past their budget; NUL and other
C0 controls are removed from command text and modal input; `/incident meeting` echoes its argument escaped once.
Everything goes through signed HTTP to the served app."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

import app
from bot.settings import SettingsError, load_settings
from sandbox.harness import LocalBot
from storage.models import ActionItem, Incident, RateHit, Reminder, SeenRequest
from tests.helpers import clocked_bot, count, open_incident

CHANNEL = "C0INCIDENTS"
START = datetime(2025, 10, 22, 5, 0, tzinfo=UTC)


def captured(
    bot: LocalBot, send: Callable[[], requests.Response | None], *, deliver: bool = True
) -> tuple[requests.Response | None, bytes, dict[str, str]]:
    """Keeps the exact signed body and headers of one request the driver makes (and delivers it, unless told
    not to), so that it can be posted again."""
    assert bot.driver is not None
    sent: list[tuple[bytes, dict[str, str]]] = []
    post_raw = bot.driver.post_raw

    def keep(body: bytes, headers: dict[str, str]) -> requests.Response | None:
        sent.append((body, headers))
        return post_raw(body, headers) if deliver else None

    bot.driver.post_raw = keep  # type: ignore[method-assign]
    try:
        response = send()
    finally:
        del bot.driver.post_raw
    [(body, headers)] = sent
    return response, body, headers


def replay(bot: LocalBot, body: bytes, headers: dict[str, str]) -> requests.Response:
    assert bot.driver is not None
    return bot.driver.post_raw(body, headers)


def announcements(bot: LocalBot, channel: str = CHANNEL) -> list[Any]:
    return [c for c in bot.slack.calls("chat.postMessage")
            if c.args.get("channel") == channel and not c.args.get("thread_ts")]


def together(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    barrier = threading.Barrier(len(calls))
    results: list[requests.Response | None] = [None] * len(calls)

    def run(n: int) -> None:
        barrier.wait()
        results[n] = calls[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.fixture
def clocked(database_url: str) -> Iterator[tuple[LocalBot, Any]]:
    with clocked_bot(database_url, START) as pair:
        yield pair


# --------------------------------------------------------------------------------------------- replays (item 6)


def test_a_signed_open_posted_three_times_opens_one_incident_with_the_same_answer(bot: LocalBot) -> None:
    assert bot.driver is not None
    first, body, headers = captured(bot, lambda: bot.driver.command("/incident", "open 재전송 시험 sev:high"))
    assert first is not None
    again = [replay(bot, body, headers) for _ in range(2)]
    bot.settle()
    assert [r.status_code for r in [first, *again]] == [200, 200, 200]
    assert "INCIDENT-" in first.json()["text"]
    assert [r.json() for r in again] == [first.json(), first.json()]
    assert count(bot, Incident) == 1
    assert len(announcements(bot)) == 1
    with bot.ctx.db.session() as session:
        assert len(session.scalars(select(Reminder)).all()) == 4  # one open's reminders, not three


def test_one_signed_open_posted_from_eight_threads_at_once_runs_once(bot: LocalBot) -> None:
    assert bot.driver is not None
    _, body, headers = captured(bot, lambda: bot.driver.command("/incident", "open 동시 재전송"), deliver=False)
    responses = together([lambda: replay(bot, body, headers) for _ in range(8)])
    bot.settle()
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1 and "INCIDENT-" in responses[0].json()["text"]
    assert count(bot, Incident) == 1 and len(announcements(bot)) == 1


def test_a_replayed_button_click_does_not_act_again(bot: LocalBot) -> None:
    assert bot.driver is not None
    open_incident(bot)
    bot.driver.command("/postmortem", 'action P2 "캐시 만료 점검" <@U0GITCO|gitco>')
    bot.settle()
    with bot.ctx.db.session() as session:
        item = session.scalars(select(ActionItem)).one()

    def click(name: str) -> requests.Response:
        assert bot.driver is not None
        return bot.driver.block_action(f"postmortem.action.{name}", str(item.id), user="U0GITCO",
                                       message_ts=item.message_ts)

    first, body, headers = captured(bot, lambda: click("start"))
    assert first is not None and first.status_code == 200
    bot.settle()
    assert click("done").status_code == 200
    bot.settle()
    updates = len(bot.slack.calls("chat.update"))
    # The old "start" click posted again: acked as before, but neither the status nor the message moves back.
    again = replay(bot, body, headers)
    bot.settle()
    assert again.status_code == 200 and again.text == first.text
    with bot.ctx.db.session() as session:
        assert session.get_one(ActionItem, item.id).status == "done"
    assert len(bot.slack.calls("chat.update")) == updates


def test_trigger_ids_are_forgotten_after_the_signature_window(clocked: tuple[LocalBot, Any]) -> None:
    bot, clock = clocked
    assert bot.driver is not None
    trigger = bot.driver.new_trigger_id()
    assert bot.driver.command("/incident", "open 창 시험", trigger_id=trigger).status_code == 200
    bot.settle()
    clock.advance(timedelta(minutes=9))
    bot.runtime.sweep()  # type: ignore[union-attr]
    assert bot.driver.command("/incident", "open 창 시험", trigger_id=trigger).status_code == 200
    bot.settle()
    assert count(bot, Incident) == 1  # a body signed 5 minutes ahead is still valid 9 minutes on
    clock.advance(timedelta(minutes=2))
    bot.runtime.sweep()  # type: ignore[union-attr]
    assert count(bot, SeenRequest) == 0 and count(bot, RateHit) == 0
    assert bot.driver.command("/incident", "open 창 시험", trigger_id=trigger).status_code == 200
    bot.settle()
    assert count(bot, Incident) == 2


# --------------------------------------------------------------------------------------------- rate limits (item 9)


def test_a_sixth_open_in_a_minute_is_refused_and_stores_nothing(clocked: tuple[LocalBot, Any]) -> None:
    bot, clock = clocked
    assert bot.driver is not None
    for n in range(5):
        open_incident(bot, f"폭주 {n}")
        clock.advance(timedelta(seconds=2))
    reminders, posts = count(bot, Reminder), len(bot.slack.calls("chat.postMessage"))
    response, body, headers = captured(bot, lambda: bot.driver.command("/incident", "open 여섯 번째"))
    assert response is not None
    bot.settle()
    answer = response.json()
    assert response.status_code == 200 and answer["response_type"] == "ephemeral"
    # The first open was at 14:00:00 and the clock now reads 14:00:10: room again in 50 s, at 05:01:00 UTC.
    assert "한 사람이 1분에 5건까지" in answer["text"] and "50초 뒤(05:01:00 UTC 이후)" in answer["text"]
    assert "아무것도 저장하지 않았습니다" in answer["text"]
    assert count(bot, Incident) == 5 and count(bot, Reminder) == reminders
    assert len(bot.slack.calls("chat.postMessage")) == posts
    # Someone else may still open one, and so may the same person once the window has moved on.
    open_incident(bot, "다른 사람", user="U0LEMUN")
    clock.advance(timedelta(seconds=50))
    # The refused request posted again once there is room: still the same refusal, never a late open.
    assert replay(bot, body, headers).json() == answer
    bot.settle()
    assert count(bot, Incident) == 6
    open_incident(bot, "여섯 번째 다시")
    assert count(bot, Incident) == 7


def test_concurrent_opens_by_one_user_never_pass_the_limit(bot: LocalBot) -> None:
    assert bot.driver is not None
    responses = together([lambda n=n: bot.driver.command("/incident", f"open 동시 폭주 {n}") for n in range(8)])
    bot.settle()
    texts = [r.json()["text"] for r in responses]
    assert sum("INCIDENT-" in t for t in texts) == 5 and sum("다시 시도해 주세요" in t for t in texts) == 3
    assert count(bot, Incident) == 5 and len(announcements(bot)) == 5


def test_the_channel_limit_holds_across_users_and_channels_count_apart(database_url: str) -> None:
    env = {"RATE_LIMIT_OPEN_PER_CHANNEL": "3", "INCIDENT_LOCALE": "en"}
    with clocked_bot(database_url, START, env) as (bot, _clock):
        assert bot.driver is not None
        for user in ("U0SENA", "U0LEMUN", "U0GITCO"):
            open_incident(bot, f"channel burst {user}", user=user)
        refused = bot.driver.command("/incident", "open one too many", user="U0NEWBIE").json()["text"]
        assert "This channel takes at most 3 new incidents per 1 min." in refused
        assert "Try again in 60 s (after 05:01:00 UTC)" in refused and "nothing was saved" in refused
        # The person's own budget had room, and the refusal counted nothing against it either.
        with bot.ctx.db.read() as session:
            assert session.scalars(select(RateHit.key).where(RateHit.key == "user:U0NEWBIE")).all() == []
        open_incident(bot, "elsewhere", user="U0NEWBIE", channel="C0OTHER", channel_name="other")
        bot.settle()
        assert count(bot, Incident) == 4


def test_commands_that_post_have_their_own_budget(database_url: str) -> None:
    env = {"RATE_LIMIT_POST_PER_USER": "3"}
    with clocked_bot(database_url, START, env) as (bot, _clock):
        assert bot.driver is not None
        open_incident(bot)
        for n in range(3):
            response = bot.driver.command("/postmortem", f'action P3 "점검 {n}" <@U0GITCO|gitco>')
            assert response.status_code == 200 and "다시 시도" not in response.json()["text"]
        # Bad input spends nothing, and commands that only answer the person are never limited.
        assert bot.driver.command("/postmortem", "action P9 잘못된 우선순위").status_code == 200
        assert bot.driver.command("/incident", "timeline").status_code == 200
        bot.settle()
        pings = len([c for c in bot.slack.calls("chat.postMessage") if "<@U0GITCO>" in c.args.get("text", "")])
        refused = bot.driver.command("/postmortem", 'action P3 "네 번째" <@U0GITCO|gitco>').json()["text"]
        bot.settle()
        assert "채널에 글을 남기는 명령은 한 사람이 1분에 3번까지" in refused
        assert count(bot, ActionItem) == 3 and pings == 3
        assert len([c for c in bot.slack.calls("chat.postMessage") if "<@U0GITCO>" in c.args.get("text", "")]) == 3
        # Opens count apart from posts.
        open_incident(bot, "또 다른 사건")


def test_rate_limits_come_from_the_environment() -> None:
    defaults = load_settings({})
    assert (defaults.open_limit_per_user, defaults.open_limit_per_channel) == (5, 20)
    assert (defaults.post_limit_per_user, defaults.post_limit_per_channel) == (20, 60)
    assert defaults.rate_limit_window == timedelta(minutes=1)
    custom = load_settings({"RATE_LIMIT_OPEN_PER_USER": "0", "RATE_LIMIT_POST_PER_CHANNEL": "100",
                            "RATE_LIMIT_WINDOW": "5m"})
    assert (custom.open_limit_per_user, custom.post_limit_per_channel) == (0, 100)
    assert custom.rate_limit_window == timedelta(minutes=5)
    for name, value in (("RATE_LIMIT_OPEN_PER_USER", "five"), ("RATE_LIMIT_POST_PER_USER", "-1"),
                        ("RATE_LIMIT_OPEN_PER_CHANNEL", "2.5"), ("RATE_LIMIT_WINDOW", "0s")):
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})


def test_a_malformed_rate_limit_stops_the_process_with_exit_code_2(monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RATE_LIMIT_OPEN_PER_USER", "lots")
    assert app.main(["migrate"]) == 2
    assert "RATE_LIMIT_OPEN_PER_USER" in capsys.readouterr().err


def test_zero_turns_a_limit_off(database_url: str) -> None:
    with clocked_bot(database_url, START, {"RATE_LIMIT_OPEN_PER_USER": "0"}) as (bot, _clock):
        for n in range(7):
            open_incident(bot, f"제한 없음 {n}")
        assert count(bot, Incident) == 7


# --------------------------------------------------------------------------------------------- control characters


def test_nul_and_controls_in_command_text_are_removed_before_storing(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot, "DB\x00 풀\x07 고갈\x1b[31m sev:high")
    assert bot.driver is not None
    response = bot.driver.command("/postmortem", "root-cause 커넥션\x00 누수\x0b")
    assert response.status_code == 200
    bot.settle()
    with bot.ctx.db.session() as session:
        stored = session.scalars(select(Incident)).one()
        assert stored.public_id == public_id
        assert stored.title == "DB 풀 고갈[31m" and stored.root_cause == "커넥션 누수"


def test_nul_and_controls_in_modal_input_are_removed_before_storing(bot: LocalBot) -> None:
    assert bot.driver is not None
    open_incident(bot)
    assert bot.driver.command("/postmortem", "edit").status_code == 200
    [view] = bot.slack.views()
    values = {"root_cause": "N+1\x00 쿼리\x08", "lessons": "작은\x00 데이터\r\n큰 데이터", "prevention": "",
              "conclusion": "끝\x1f"}
    state = {key: {"value": {"type": "plain_text_input", "value": value}} for key, value in values.items()}
    response = bot.driver.view_submission("postmortem.edit", state, private_metadata=view["private_metadata"],
                                          view_id=view["id"])
    assert response.status_code == 200
    bot.settle()
    with bot.ctx.db.session() as session:
        stored = session.scalars(select(Incident)).one()
        assert (stored.root_cause, stored.conclusion) == ("N+1 쿼리", "끝")
        from bot import postmortem

        assert postmortem.notes(session, stored.id, "lesson") == ["작은 데이터", "큰 데이터"]


# --------------------------------------------------------------------------------------------- meeting echo


@pytest.mark.parametrize("typed", ["&lt;!channel&gt;", "<!channel>"])
def test_meeting_echoes_a_bad_time_escaped_once(bot: LocalBot, typed: str) -> None:
    # Slack sends a typed `<!channel>` as entities, and `@channel` as the special mention itself.
    assert bot.driver is not None
    answer = bot.driver.command("/incident", f"meeting {typed}").json()["text"]
    assert "`&lt;!channel&gt;` 는 시간으로 읽을 수 없습니다" in answer
    assert "&amp;" not in answer and "<!channel>" not in answer
