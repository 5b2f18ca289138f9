"""Issue 11, items 10 and 3 (evidence): Slack's size limits are measured after rendering and escaping, and log
text from Google loses its NUL and C0 controls before it is summarised or stored.

The sandbox refuses what Slack refuses (msg_too_long, invalid_blocks for > 50 blocks or a section over 3,000
characters), so an over-limit post fails loudly anywhere; the ack answers are checked here directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.clock import ManualClock
from bot.render import clip_slack
from handlers.slack_limits import fit_message
from sandbox.gcp import CanaryScenario, GcpSandbox
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox, _block_within_limits
from storage.models import ActionItem, Evidence, Incident
from tests.helpers import open_incident

CHANNEL = "C0INCIDENTS"
AMP = "&amp;"  # how Slack delivers a typed "&"
# An "&" that does not start one of Slack's three entities: an entity cut in half.
BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
# Escaped mrkdwn has "&", "<" and ">" only inside these; one left after removing them is half a token.
WHOLE_TOKEN = re.compile(r"&(?:amp|lt|gt);|<[^<>\n]*>")
BROKEN_TOKEN = re.compile(r"[&<>]")
C0 = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def block_texts(blocks: list[dict[str, Any]] | None) -> list[str]:
    return [b["text"]["text"] for b in blocks or [] if b.get("type") == "section" and b.get("text")]


def assert_within_slack_limits(text: str, blocks: list[dict[str, Any]] | None) -> None:
    assert len(text) <= 40_000
    assert len(blocks or []) <= 50
    for section in block_texts(blocks):
        assert len(section) <= 3_000
    for piece in [text, *block_texts(blocks)]:
        assert not BROKEN_ENTITY.search(piece), "an entity was cut"


# -- the three reproductions, through signed HTTP ---------------------------------------------------


def test_timeline_after_120_replies_of_300_ampersands_fits_one_answer(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    for _ in range(120):
        assert bot.driver.say(CHANNEL, "U0LEMUN", AMP * 300, thread_ts=thread_ts)[1].status_code == 200
    bot.settle()

    answer = bot.driver.command("/incident", "timeline").json()

    assert_within_slack_limits(answer["text"], answer.get("blocks"))
    # The newest events are shown; the answer counts the left-out ones and points to the full report.
    assert "생략했습니다" in answer["text"] and "/postmortem report" in answer["text"]
    assert answer["text"].count("— _Lemun_") >= 90


def test_actions_with_110_long_tasks_shows_the_open_ones_first_and_counts_the_rest(bot: LocalBot) -> None:
    public_id, _ = open_incident(bot)
    with bot.ctx.db.session() as session:
        incident = session.scalars(select(Incident).where(Incident.public_id == public_id)).one()
        # Seeded in bulk (the posting of each item is covered elsewhere); message_ts keeps the sweep from posting.
        for n in range(110):
            session.add(ActionItem(
                incident_id=incident.id, priority="P0" if n == 109 else "P2", task=f"#{n} " + "&<>" * 99,
                status="done" if n == 0 else "open", message_ts=f"1.{n:06d}",
            ))

    answer = bot.driver.command("/postmortem", "actions").json()

    assert_within_slack_limits(answer["text"], answer.get("blocks"))
    first_item = answer["text"].splitlines()[1]
    assert "[P0]" in first_item and "#109 " in first_item  # the most relevant page: open items, by priority
    shown = answer["text"].count("*[P")
    assert 0 < shown < 110
    assert f"…외 {110 - shown}개" in answer["text"] and "/postmortem report" in answer["text"]


def test_root_cause_of_3000_ampersands_is_cut_whole_in_the_announcement(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)

    response = bot.driver.command("/postmortem", "root-cause " + AMP * 3000)
    assert response.status_code == 200
    bot.settle()

    announcement = bot.slack.message(CHANNEL, thread_ts)
    assert announcement is not None
    assert_within_slack_limits(announcement["text"], announcement.get("blocks"))
    cause = next(line for line in announcement["text"].splitlines() if line.startswith("• 원인:"))
    assert cause.startswith("• 원인: &amp;&amp;") and cause.endswith("… (전체 내용은 `/postmortem report`)")
    assert [c for c in bot.slack.calls("chat.update") if c.response and not c.response.get("ok")] == []


def test_an_over_limit_post_is_cut_by_the_messenger_not_refused_by_slack(bot: LocalBot) -> None:
    text = "<@U0SENA> " + AMP * 9000
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": AMP * 700}} for _ in range(60)]

    ts = bot.ctx.messenger.post_message(CHANNEL, text, blocks=blocks)

    posted = bot.slack.message(CHANNEL, ts)
    assert posted is not None
    assert_within_slack_limits(posted["text"], posted["blocks"])
    assert len(posted["blocks"]) == 50 and "/postmortem report" in posted["blocks"][-1]["text"]["text"]
    assert posted["text"].startswith("<@U0SENA> &amp;") and "/postmortem report" in posted["text"]


def test_the_sandbox_refuses_what_slack_refuses(slack: SlackSandbox) -> None:
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    button = {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b" * 76},
                                                "action_id": "a"}]}
    cases = [
        ("chat_postMessage", {"text": "x" * 40_001}, "msg_too_long"),
        ("chat_postMessage", {"text": "x", "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ("chat_postMessage", {"text": "x", "blocks": [section]}, "invalid_blocks"),
        ("chat_postMessage", {"text": "x", "blocks": [button]}, "invalid_blocks"),
        ("chat_postEphemeral", {"user": "U0SENA", "text": "x" * 40_001}, "msg_too_long"),
        ("chat_postEphemeral", {"user": "U0SENA", "text": "x", "blocks": [section]}, "invalid_blocks"),
    ]
    for method, args, error in cases:
        with pytest.raises(SlackApiError) as raised:
            getattr(client, method)(channel=CHANNEL, **args)
        assert raised.value.response["error"] == error, (method, args)

    url = slack.new_response_url(channel=CHANNEL, user="U0SENA")
    assert requests.post(url, json={"text": "x" * 40_001}, timeout=5).status_code == 400
    assert requests.post(url, json={"text": "x", "blocks": [section]}, timeout=5).status_code == 400
    assert slack.responses(url) == []


# -- the fitting function ----------------------------------------------------------------------------------

# Pieces of escaped mrkdwn: what must stay whole, and single characters that may be cut anywhere.
TOKENS = ["&amp;", "&lt;", "&gt;", "<@U0SENA>", "<#C0INCIDENTS>", "<https://example.com/a?b=1&amp;c=2|로그>", "<!here>"]
PIECES = st.lists(st.sampled_from([*TOKENS, "a", "가", " ", "\n", "*", "😀"]), max_size=400)


def boundaries(pieces: list[str]) -> set[int]:
    out, at = {0}, 0
    for piece in pieces:
        at += len(piece)
        out.add(at)
    return out


@settings(max_examples=300, deadline=None)
@given(pieces=PIECES, limit=st.integers(min_value=1, max_value=600), tail=st.sampled_from(["…", "", "… (보고서)"]))
def test_clip_never_breaks_an_entity_or_token_and_never_exceeds_the_limit(
    pieces: list[str], limit: int, tail: str
) -> None:
    text = "".join(pieces)
    clipped = clip_slack(text, limit, tail)
    assert len(clipped) <= max(limit, len(tail)) if len(text) > limit else clipped == text
    if clipped != text:
        kept = clipped[: len(clipped) - len(tail)] if tail else clipped
        assert text.startswith(kept) and len(kept) in boundaries(pieces)
        assert clipped.endswith(tail)


BLOCK = st.one_of(
    st.builds(lambda p, k: {"type": "section", "text": {"type": "mrkdwn", "text": "".join(p) * k}},
              st.lists(st.sampled_from([*TOKENS, "a"]), min_size=1, max_size=100), st.integers(1, 200)),
    st.just({"type": "divider"}),
    st.builds(lambda n: {"type": "header", "text": {"type": "plain_text", "text": "제목" * n}}, st.integers(1, 120)),
    st.builds(lambda n: {"type": "actions", "elements": [
        {"type": "button", "action_id": f"b{i}", "text": {"type": "plain_text", "text": "버튼" * n}} for i in range(30)
    ]}, st.integers(1, 60)),
)


@settings(max_examples=100, deadline=None)
@given(pieces=PIECES, repeat=st.integers(1, 150), blocks=st.lists(BLOCK, max_size=70))
def test_fit_message_output_is_always_within_slack_limits(
    pieces: list[str], repeat: int, blocks: list[dict[str, Any]]
) -> None:
    text = "".join(pieces) * repeat
    fitted_text, fitted_blocks = fit_message(text, blocks, note="… `/postmortem report`")
    assert len(fitted_text) <= 40_000 and len(fitted_blocks or []) <= 50
    assert all(_block_within_limits(b) for b in fitted_blocks or [])
    for piece in [fitted_text, *block_texts(fitted_blocks)]:
        assert not BROKEN_TOKEN.search(WHOLE_TOKEN.sub("", piece)), "an entity or a <…> token was cut"
    if len(text) <= 40_000 and len(blocks) <= 50 and all(_block_within_limits(b) for b in blocks):
        assert (fitted_text, fitted_blocks) == (text, blocks)  # what fits is left alone


# -- item 3: control characters in log text from Google ----------------------------------------------------


class ControlCharScenario(CanaryScenario):
    """Every stderr line carries a NUL and a bell in the middle of its message, as a broken logger writes them."""

    def _stderr(self, rng: Any, ids: Any, revision: str, ts: Any, *, canary: bool) -> dict[str, Any]:
        entry = super()._stderr(rng, ids, revision, ts, canary=canary)
        for holder, key in ((entry, "textPayload"), (entry.get("jsonPayload") or {}, "message")):
            if key in holder:
                holder[key] = holder[key][:5] + "\x00\x07" + holder[key][5:]
        return entry


@pytest.fixture
def nul_bot(slack: SlackSandbox, database_url: str) -> Iterator[LocalBot]:
    scenario = ControlCharScenario(request_count=600, error_count=60, post_request_count=100)
    with GcpSandbox(scenario) as gcp:
        env = {
            "GCP_PROJECT": scenario.project, "CLOUD_RUN_REGION": scenario.region,
            "CLOUD_LOGGING_API_URL": gcp.base_url, "CLOUD_RUN_API_URL": gcp.base_url, "SCHEDULER_ENABLED": "false",
            "CLOUD_MONITORING_API_URL": gcp.monitoring.address,
        }
        local = LocalBot(env, clock=ManualClock(scenario.window_end), slack=slack, database_url=database_url)
        local.start()
        try:
            yield local
        finally:
            local.stop()


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def test_log_lines_with_nul_leave_no_control_characters_in_the_summary_or_the_stored_evidence(
    nul_bot: LocalBot,
) -> None:
    open_incident(nul_bot, "추천 API p95 급증 sev:high service:ion-api")
    nul_bot.settle()

    with nul_bot.ctx.db.session() as session:
        rows = session.scalars(select(Evidence)).all()
        assert {r.kind for r in rows if r.ok} >= {"errors", "config"}
        stored = [s for r in rows for s in strings_in(r.payload)]
    thread_ts = nul_bot.slack.messages(CHANNEL)[0]["ts"]
    posted = [json.dumps(m, ensure_ascii=False) for m in nul_bot.slack.thread(CHANNEL, thread_ts)]
    posted += [json.dumps(c.args, ensure_ascii=False) for c in nul_bot.slack.calls("chat.update")]
    uploaded = [bytes(f["content"]).decode("utf-8") for f in nul_bot.slack.files() if f["filename"].endswith(".json")]
    assert any("TimeoutError" in s for s in stored), "the log messages were captured, cleaned"
    assert any("TimeoutError" in s for s in posted) and any("TimeoutError" in s for s in uploaded)
    for piece in [*stored, *posted, *uploaded]:
        # json.dumps writes a control character as a \u escape; the raw ones are searched for as well.
        assert not C0.search(piece) and not re.search(r"\\u00(?:0[0-8]|0[bcef]|1[0-9a-f])|\\u007f", piece)
