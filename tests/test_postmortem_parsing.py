"""The `/postmortem` content parsers: the forms they take, the errors they give, and a fuzz that they never raise
anything but UsageError on arbitrary text."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import pm_parsing as p
from bot.parsing import UsageError

NOW = datetime(2025, 10, 22, 14, 40, tzinfo=UTC)
SEOUL = ZoneInfo("Asia/Seoul")


def code_of(fn, *args):  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError) as raised:
        fn(*args)
    return raised.value.code


# --------------------------------------------------------------------------------------------- whys


def test_why_forms() -> None:
    assert p.parse_why("왜 느려졌나? 쿼리 400ms") == p.WhyCommand(None, "왜 느려졌나? 쿼리 400ms")
    assert p.parse_why("3 새 내용") == p.WhyCommand(3, "새 내용")
    assert p.parse_why("3 -").remove and p.parse_why("#2 -").position == 2
    assert p.parse_why("3. 고친 답").text == "고친 답"
    assert code_of(p.parse_why, "") == "missing_text"
    assert code_of(p.parse_why, "3") == "missing_why_text"
    assert code_of(p.parse_why, "0 x") == "bad_why_number"
    assert code_of(p.parse_why, "51 x") == "bad_why_number"


def test_why_parts_follow_the_guides_question_and_answer() -> None:
    assert p.why_parts("왜 응답 시간이 증가했나? → 쿼리 400ms") == ("왜 응답 시간이 증가했나?", "쿼리 400ms")
    assert p.why_parts("왜 응답 시간이 증가했나 -> 쿼리 400ms") == ("왜 응답 시간이 증가했나?", "쿼리 400ms")
    assert p.why_parts("Why was it slow? 400 queries") == ("Why was it slow?", "400 queries")
    assert p.why_parts("왜 테스트 데이터가 작았나?") == ("왜 테스트 데이터가 작았나?", None)
    assert p.why_parts("프로덕션 데이터 크기를 고려하지 않음") == (None, "프로덕션 데이터 크기를 고려하지 않음")
    assert p.headline_parts("테스트 데이터 크기가 중요하다 → 프로덕션 크기 반영") == (
        "테스트 데이터 크기가 중요하다", "프로덕션 크기 반영")
    assert p.headline_parts("성능 테스트는 필수다 — 부하 테스트 없이 배포하면 안 됨") == (
        "성능 테스트는 필수다", "부하 테스트 없이 배포하면 안 됨")
    assert p.headline_parts("성능 테스트는 필수다") == ("성능 테스트는 필수다", None)
    assert p.headline_parts("N+1—감지") == ("N+1—감지", None)  # a dash inside a word is not a separator


def test_plain_text_turns_slack_markup_into_words() -> None:
    assert p.plain_text("<@U0GITCO|gitco> &amp; <#C1|ops> see <https://x.io/a|docs> &lt;b&gt;") == (
        "@gitco & #ops see docs (https://x.io/a) <b>")
    assert p.plain_text("<!channel> <!subteam^S1|@devops> <https://x.io>") == "@channel @devops https://x.io"


# --------------------------------------------------------------------------------------------- actions


def test_action_with_every_option() -> None:
    request = p.parse_action('p0 "N+1 쿼리 수정 (조인으로 변경)" <@U0GITCO|gitco> due:2d impact:Critical', NOW, SEOUL)
    assert request == p.ActionRequest("P0", "N+1 쿼리 수정 (조인으로 변경)", "U0GITCO", "gitco",
                                      NOW + timedelta(days=2), "critical")


def test_action_due_forms() -> None:
    assert p.parse_action("P1 x due:1w", NOW, SEOUL).due_at == NOW + timedelta(days=7)
    # A date is that day in INCIDENT_TIMEZONE, due by its end.
    due = p.parse_action("P1 x due:2025-10-24", NOW, SEOUL).due_at
    assert due == datetime(2025, 10, 24, 23, 59, 59, tzinfo=SEOUL)
    # "Today" is the incident's zone's today: 15:10 UTC is already 10-23 in Seoul, so 10-22 is past there.
    late = datetime(2025, 10, 22, 15, 10, tzinfo=UTC)
    assert code_of(p.parse_action, "P1 x due:2025-10-22", late, SEOUL) == "past_due"
    assert p.parse_action("P1 x due:2025-10-22", late, ZoneInfo("UTC")).due_at == datetime(
        2025, 10, 22, 23, 59, 59, tzinfo=UTC)
    for bad in ("due:2025-02-30", "due:tomorrow", "due:0d", "due:9999d", "due:2031-01-01"):
        assert code_of(p.parse_action, f"P1 x {bad}", NOW, SEOUL) == "bad_due", bad


def test_action_owners_and_unquoted_tasks() -> None:
    team = p.parse_action("P2 데이터베이스 모니터링 강화 @DevOps", NOW, SEOUL)
    assert (team.task, team.owner_id, team.owner_name) == ("데이터베이스 모니터링 강화", "@DevOps", "DevOps")
    assert p.parse_action("P2 x <!subteam^S1|@sre>", NOW, SEOUL).owner_id == "@sre"
    curly = p.parse_action("P3 “팀 교육 프로그램” <@U0SENA>", NOW, SEOUL)
    assert (curly.task, curly.owner_id, curly.owner_name) == ("팀 교육 프로그램", "U0SENA", None)
    # Mentions inside the task become words: the stored task can never mention anyone.
    assert p.parse_action('P1 "ask <@U0LEMUN|lemun> & co"', NOW, SEOUL).task == "ask @lemun & co"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "missing_priority"),
        ("P5 x", "bad_priority"),
        ('"P0" x', "bad_priority"),
        ("P0", "missing_task"),
        ('P0 ""', "missing_task"),
        ('P0 "unclosed', "unclosed_quote"),
        ('P0 "a" b', "text_outside_quotes"),
        ('P0 "a" "b"', "duplicate_option"),
        ("P0 x @a @b", "duplicate_option"),
        ("P0 x due:2d due:1w", "duplicate_option"),
        ("P0 x impact:urgent", "bad_impact_level"),
        ("P0 x <@nope>", "bad_owner"),
        ("P0 " + "x" * 301, "text_too_long"),
    ],
)
def test_action_errors(text: str, code: str) -> None:
    assert code_of(p.parse_action, text, NOW, SEOUL) == code


# --------------------------------------------------------------------------------------------- impact


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("users 500", "500"),
        ("users ~500 (1%)", "~500 (1%)"),
        ("users 약 1,200명", "~1200"),
        ("users 약 500명 (전체의 1%)", "~500 (1%)"),  # the guide's own wording
        ("users about 500 (1% of all users)", "~500 (1%)"),
        ("error-rate 0.5%→9%", "0.5%→9%"),
        ("error-rate 0.5% -> 9.0%", "0.5%→9%"),
        ("에러율 9%", "9%"),
        ("p95 150ms→450ms", "150ms→450ms"),
        ("p95 1.2s", "1200ms"),
        ("latency 450", "450ms"),
        ("availability 90.5%", "90.5%"),
        ("p95=450ms", "450ms"),
    ],
)
def test_impact_forms(text: str, canonical: str) -> None:
    impact = p.parse_impact(text)
    assert impact.canonical() == canonical
    assert p.parse_impact_value(impact.field, impact.canonical()) == impact  # the stored form reads back


def test_impact_ratio() -> None:
    assert p.parse_impact("error-rate 0.5%→9%").ratio == pytest.approx(18)
    assert p.parse_impact("p95 150ms→450ms").ratio == pytest.approx(3)
    assert p.parse_impact("error-rate 0%→9%").ratio is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "missing_impact_field"),
        ("mood 5", "bad_impact_field"),
        ("users", "missing_impact_value"),
        ("users many", "bad_impact_value"),
        ("users -5", "bad_impact_value"),
        ("error-rate 9", "bad_impact_value"),
        ("error-rate 120%", "bad_impact_value"),
        ("error-rate 0.5%→", "bad_impact_value"),
        ("error-rate 1%→2%→3%", "bad_impact_value"),
        ("p95 fast", "bad_impact_value"),
        ("p95 5h", "bad_impact_value"),
        ("availability nan%", "bad_impact_value"),
    ],
)
def test_impact_errors(text: str, code: str) -> None:
    assert code_of(p.parse_impact, text) == code


def test_notes_and_modal_lines() -> None:
    assert p.parse_note("  배운 점\n두 줄 ", "lesson") == "배운 점 두 줄"
    assert p.parse_lines("a\n\n  b  \n", "edit") == ["a", "b"]
    assert code_of(p.parse_lines, "x" * 501, "edit") == "line_too_long"
    assert code_of(p.parse_lines, "\n".join("x" * 51), "edit") == "too_many_items"
    assert code_of(p.no_arguments, "foo", "actions") == "unexpected_text"


# --------------------------------------------------------------------------------------------- fuzz

_ALPHABET = st.characters(codec="utf-8") | st.sampled_from(
    [*"<>@|!#&;:\"'“”→-~%.,()0123456789 \n\tPpdwms", "&lt;", "&gt;", "&amp;", "<@U1|a>", "due:", "impact:"]
)
_TEXT = st.lists(_ALPHABET, max_size=60).map("".join) | st.text(max_size=200)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_parsers_raise_only_usage_errors(text: str) -> None:
    zone = ZoneInfo("Pacific/Kiritimati")
    for parse in (
        p.parse_why, p.parse_impact,
        lambda t: p.parse_action(t, NOW, zone), lambda t: p.parse_action(f"P1 {t}", NOW, zone),
        lambda t: p.parse_text(t, "why"), lambda t: p.parse_note(t, "lesson"), lambda t: p.parse_lines(t, "edit"),
        lambda t: p.parse_impact(f"error-rate {t}"), lambda t: p.parse_impact(f"users {t}"),
        lambda t: p.parse_impact(f"p95 {t}"), lambda t: p.parse_due(t, NOW, zone),
    ):
        with contextlib.suppress(UsageError):  # anything else fails the test
            parse(text)
    assert isinstance(p.why_parts(text), tuple) and isinstance(p.headline_parts(text), tuple)
    assert "<@" not in p.plain_text(text.replace("&", "")) or "<@" in text.replace("&", "")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(p.IMPACT_FIELDS), _TEXT)
def test_impact_values_round_trip_when_they_parse(field: str, text: str) -> None:
    try:
        impact = p.parse_impact_value(field, text)
    except UsageError:
        return
    assert p.parse_impact_value(field, impact.canonical()).canonical() == impact.canonical()
