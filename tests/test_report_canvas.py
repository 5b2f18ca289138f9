"""The report as a Slack canvas (REPORT_CANVAS=true), end to end through signed HTTP and the Slack sandbox: one
canvas per incident and language, created once and rewritten by every report, shared in the thread once; the .md
file goes out whatever happens to the canvas; concurrent and replayed reports make one canvas; the canvas
markdown keeps to the subset Slack documents (the sandbox refuses the rest, as Slack does)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

import app
from bot.canvas import TABLE_MAX_CELLS, split_row, to_canvas
from sandbox.canvases import Canvas, markdown_problems
from sandbox.harness import LocalBot
from sandbox.slack import SlackSandbox
from storage.models import ActionItem, ReportCanvas
from tests.helpers import count, open_incident
from tests.test_trust_commands import captured, replay, together

CHANNEL = "C0INCIDENTS"
LINK = re.compile(r"<(https://sandbox\.slack\.com/docs/T0SANDBOX/(F\w+))\|([^>]+)>")


@pytest.fixture
def bot_env() -> dict[str, str]:
    return {"REPORT_CANVAS": "true"}


def command(bot: LocalBot, name: str, text: str, **kw: Any) -> None:
    assert bot.driver is not None
    assert bot.driver.command(name, text, **kw).status_code == 200
    bot.settle()


def report(bot: LocalBot, text: str = "report") -> None:
    command(bot, "/postmortem", text)


def uploads(bot: LocalBot, filename: str) -> list[str]:
    return [bytes(f["content"]).decode("utf-8") for f in bot.slack.files() if f["filename"] == filename
            and f["completed"]]


def canvases(bot: LocalBot) -> list[Canvas]:
    return bot.slack.canvases.all()


def calls(bot: LocalBot, method: str) -> int:
    return len([c for c in bot.slack.calls(method) if c.status == 200])


def shares(bot: LocalBot, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in bot.slack.thread(CHANNEL, thread_ts) if LINK.search(m.get("text") or "")]


def told(bot: LocalBot) -> list[str]:
    return [r.get("text", "") for r in bot.slack.responses()]


def canvas_row(bot: LocalBot, locale: str = "ko") -> ReportCanvas:
    with bot.ctx.db.read() as session:
        row: ReportCanvas = session.scalars(select(ReportCanvas).where(ReportCanvas.locale == locale)).one()
        session.expunge(row)
        return row


def expected(bot: LocalBot, md: str, filename: str, locale: str = "ko") -> str:
    return to_canvas(md, more_in_file=lambda n: bot.ctx.say("canvas.rows_omitted", locale, count=n,
                                                             filename=filename))


def fill(bot: LocalBot) -> None:
    """The guide's content: whys, action items (one done), impact, lessons, prevention and the checklist."""
    for text in ("why 왜 응답 시간이 증가했나? → 쿼리 시간이 400ms 소요", "root-cause 추천 엔진의 N+1 쿼리",
                 'action P0 "N+1 쿼리 수정" <@U0GITCO|gitco> due:2d impact:critical',
                 'action P1 "성능 테스트 추가" <@U0LUBIT|lubit> due:1w', "impact users 약 500명 (전체의 1%)",
                 "impact error-rate 0.5%→9%", "lesson 테스트 데이터 크기가 중요하다 → 프로덕션 크기 반영",
                 "prevent Staging 데이터 크기 확인", "checklist"):
        command(bot, "/postmortem", text)
    with bot.ctx.db.read() as session:
        first = session.scalars(select(ActionItem).order_by(ActionItem.id)).first()
        assert first is not None
        item_id, message_ts = first.id, first.message_ts
    assert bot.driver is not None
    bot.driver.block_action("postmortem.action.done", str(item_id), user="U0GITCO", message_ts=message_ts)
    bot.settle()


# ---- end to end ------------------------------------------------------------------------------------------------


def test_a_report_written_twice_edits_one_canvas_and_the_md_goes_out_both_times(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot)
    fill(bot)
    filename = f"{public_id}-postmortem.md"
    report(bot)
    [canvas] = canvases(bot)
    [md] = uploads(bot, filename)
    assert canvas.title == f"{public_id} Post-Mortem" and canvas.markdown == expected(bot, md, filename)
    assert markdown_problems(canvas.markdown) == []
    assert canvas.access == {CHANNEL: "read"}  # the channel's members may read it
    [shared] = shares(bot, thread_ts)
    url, linked_id, label = LINK.search(shared["text"]).groups()  # type: ignore[union-attr]
    # The canvas link Slack's docs show: the workspace's URL, /docs/, the team and the canvas.
    assert url == f"https://sandbox.slack.com/docs/T0SANDBOX/{canvas.id}" and label == canvas.title
    assert linked_id == canvas.id
    assert shared["metadata"]["event_payload"] == {"incident_id": public_id, "canvas_id": canvas.id}
    assert told(bot) == []

    command(bot, "/postmortem", "lesson 캔버스도 같이 고친다 → 두 번째 보고서")
    report(bot)
    [again] = canvases(bot)
    assert again.id == canvas.id and len(again.versions) == 2
    first_md, second_md = uploads(bot, filename)
    assert "캔버스도 같이 고친다" in second_md and "캔버스도 같이 고친다" not in first_md
    assert again.markdown == expected(bot, second_md, filename) and again.versions[0] == canvas.markdown
    assert calls(bot, "canvases.create") == 1 and calls(bot, "canvases.edit") == 1
    assert len(shares(bot, thread_ts)) == 1 and told(bot) == []
    row = canvas_row(bot)
    assert (row.canvas_id, row.requested, row.written, row.claimed_until, row.last_error) == (
        canvas.id, 2, 2, None, None)


def test_the_canvas_renders_the_guides_sections_tables_and_checklists_in_both_languages(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot)
    fill(bot)
    # What people write passes as text: Slack's tokens, HTML, entities and pipes never become markup or mentions.
    assert bot.driver is not None
    # Slack's own escaping, as it sends what was typed: 확인 @Gitco & 그래프 | a<b>c</b> &lt;x&gt; @here
    bot.driver.say(CHANNEL, "U0LEMUN", "확인 <@U0GITCO> &amp; <https://example.com/graph|그래프> | "
                   "a&lt;b&gt;c&lt;/b&gt; &amp;lt;x&amp;gt; <!here>", thread_ts=thread_ts)
    bot.settle()
    report(bot)
    report(bot, "report en")
    by_title = {c.title: c for c in canvases(bot)}
    assert set(by_title) == {f"{public_id} Post-Mortem", f"{public_id} Post-Mortem (en)"}
    for locale, title, filename in (("ko", f"{public_id} Post-Mortem", f"{public_id}-postmortem.md"),
                                    ("en", f"{public_id} Post-Mortem (en)", f"{public_id}-postmortem.en.md")):
        canvas = by_title[title].markdown
        [md] = uploads(bot, filename)
        assert canvas == expected(bot, md, filename, locale) and markdown_problems(canvas) == []
        assert markdown_problems(md) != []  # as it is, the .md would be refused
        headings = [line for line in md.split("\n") if line.startswith("#")]
        assert len(headings) == 12 and all(h in canvas.split("\n") for h in headings)
        tables = [line for line in canvas.split("\n") if line.startswith("|")]
        assert {len(split_row(row)) for row in tables} >= {3, 6}  # the timeline and the improvements
        assert "| - [x] " in canvas and "| - [ ]" in canvas  # the action items' status, as checkboxes
        assert re.search(r"^- \[ \] ", canvas, re.MULTILINE)  # the checklist and the next deployment's items
        assert "![](" not in canvas and "<@" not in canvas  # nobody is mentioned
        assert "확인 @U0GITCO & [그래프](https://example.com/graph) \\| a\\<b>c\\</b> \\&lt;x\\&gt; @here" in canvas
    assert len(shares(bot, thread_ts)) == 2  # one link per language
    assert told(bot) == []


def test_with_report_canvas_off_no_canvas_is_made(slack: SlackSandbox, database_url: str) -> None:
    bot = LocalBot({}, slack=slack, database_url=database_url)
    bot.start()
    try:
        public_id, _ = open_incident(bot)
        report(bot)
        report(bot)
        assert len(uploads(bot, f"{public_id}-postmortem.md")) == 2
        assert [c for c in slack.calls() if c.method.startswith("canvases.")] == []
        assert count(bot, ReportCanvas) == 0 and told(bot) == []
    finally:
        bot.stop()


@pytest.mark.parametrize(("refuse", "said"), [
    (lambda s: setattr(s.canvases, "granted", False), "canvases:write"),
    (lambda s: setattr(s.canvases, "free_team", True), "free_teams_cannot_create_standalone_canvases"),
    (lambda s: setattr(s.canvases, "enabled", False), "canvas_disabled_user_team"),
    (lambda s: s.fail("canvases.create", 200, error="not_allowed_token_type"), "not_allowed_token_type"),
    (lambda s: s.fail("canvases.create", 200, error="canvas_creation_failed"), "canvas_creation_failed"),
], ids=["missing_scope", "free_team", "disabled", "token_type", "creation_failed"])
def test_a_canvas_failure_keeps_the_md_and_tells_the_person_once(bot: LocalBot, refuse: Any, said: str) -> None:
    public_id, thread_ts = open_incident(bot)
    refuse(bot.slack)
    report(bot)
    assert len(uploads(bot, f"{public_id}-postmortem.md")) == 1
    [message] = told(bot)
    assert said in message and ("/postmortem report" in message or "REPORT_CANVAS" in message)
    assert canvases(bot) == [] and shares(bot, thread_ts) == []
    row = canvas_row(bot)
    assert row.canvas_id is None and row.claimed_until is None and row.last_error and row.written == 0

    # Once Slack allows it, the next report makes the canvas and shares it.
    bot.slack.canvases.granted, bot.slack.canvases.free_team, bot.slack.canvases.enabled = True, False, True
    bot.slack.reset_faults()
    report(bot)
    assert len(canvases(bot)) == 1 and len(shares(bot, thread_ts)) == 1 and len(told(bot)) == 1


def test_concurrent_and_replayed_reports_make_one_canvas_with_the_latest_content(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot)
    fill(bot)
    # The first holds the canvas until the others have asked for it.
    bot.slack.slow_once("canvases.create", 8.0, until=lambda: _requests(bot) >= 4)
    assert bot.driver is not None
    first, body, headers = captured(bot, lambda: bot.driver.command("/postmortem", "report"))  # type: ignore[union-attr]
    others = together([lambda: bot.driver.command("/postmortem", "report") for _ in range(3)]  # type: ignore[union-attr]
                      + [lambda: replay(bot, body, headers) for _ in range(2)])
    bot.settle()
    assert first is not None and {r.status_code for r in others} == {200}
    filename = f"{public_id}-postmortem.md"
    assert len(uploads(bot, filename)) == 4  # the replays ran nothing
    [canvas] = canvases(bot)
    assert calls(bot, "canvases.create") == 1 and len(shares(bot, thread_ts)) == 1
    row = canvas_row(bot)
    assert row.requested == 4 and row.written == 4 and row.claimed_until is None  # every request was written
    # The last write was drawn after the last request: it holds the last report's own line on the timeline.
    assert canvas.markdown.count("Post-Mortem 보고서 게시") >= 3 and markdown_problems(canvas.markdown) == []
    assert told(bot) == []


def _requests(bot: LocalBot) -> int:
    with bot.ctx.db.read() as session:
        return int(session.scalar(select(ReportCanvas.requested)) or 0)


def test_a_lost_create_answer_is_never_sent_again_blind_and_the_person_is_told(bot: LocalBot) -> None:
    public_id, thread_ts = open_incident(bot)
    bot.slack.lose_response("canvases.create")  # Slack makes it, the answer never arrives
    report(bot)
    assert len(bot.slack.calls("canvases.create")) == 1  # the client did not send it again
    [orphan] = canvases(bot)
    [message] = told(bot)
    assert "/postmortem report" in message and "connection_error" in message
    row = canvas_row(bot)
    assert row.canvas_id is None and row.create_unanswered_at is not None and shares(bot, thread_ts) == []

    # The window that remains (README): the next report cannot find the orphan, so it makes the canvas anew. The
    # orphan was never shared: nobody but the bot can open it.
    report(bot)
    made = {c.id: c for c in canvases(bot)}
    assert len(made) == 2 and made[orphan.id].access == {}
    [shared] = shares(bot, thread_ts)
    assert LINK.search(shared["text"]).group(2) == canvas_row(bot).canvas_id != orphan.id  # type: ignore[union-attr]
    assert len(uploads(bot, f"{public_id}-postmortem.md")) == 2


def test_a_deleted_canvas_is_made_again_and_transient_errors_are_retried(bot: LocalBot) -> None:
    _, thread_ts = open_incident(bot)
    report(bot)
    [canvas] = canvases(bot)
    bot.slack.canvases.delete(canvas.id)  # someone removed it in Slack
    report(bot)
    [remade] = canvases(bot)
    assert remade.id != canvas.id and len(shares(bot, thread_ts)) == 2 and told(bot) == []

    bot.slack.fail("canvases.edit", 200, error="internal_error")  # "likely due to a transient issue"
    report(bot)
    assert len(bot.slack.calls("canvases.edit")) == 3 and told(bot) == []  # refused, then deleted, then retried
    assert len(bot.slack.canvases.get(remade.id).versions) == 2  # type: ignore[union-attr]


def test_report_canvas_must_be_true_or_false(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Any) -> None:
    monkeypatch.setenv("REPORT_CANVAS", "sometimes")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    assert app.main(["migrate"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "REPORT_CANVAS" in line and "true or false" in line


# ---- the conversion ----------------------------------------------------------------------------------------------


def note(n: int) -> str:
    return f"_… {n} more rows are in `x.md`._"


def test_headings_images_and_tokens_are_converted_and_code_spans_left_alone() -> None:
    md = ("# T\n#### deep\n![chart](evidence_chart_1.png)\n![](https://example.com/a.png)\n"
          "- `&lt;내용>` and &lt;@U1|sena> &lt;#C1> &lt;!subteam^S1|@oncall> 2 &lt; 3, a &amp;amp; b\n")
    out = to_canvas(md, more_in_file=note)
    assert out.split("\n") == [
        "# T", "**deep**", "_chart_: `evidence_chart_1.png`", "![](https://example.com/a.png)",
        "- `&lt;내용>` and @sena #C1 @oncall 2 < 3, a \\&amp; b", ""]
    assert markdown_problems(out) == []


def test_a_table_over_300_cells_is_split_under_its_header_and_statuses_become_checkboxes() -> None:
    rows = "".join(f"| {n:03d} | event \\| {n} | [x] Done |\n" for n in range(150))
    out = to_canvas("| time | event | status |\n|---|---|---|\n" + rows, more_in_file=note)
    tables = out.strip().split("\n\n")
    assert [t.count("\n") + 1 for t in tables] == [101, 53]  # header, separator, 99 rows; then the other 51
    assert all(t.startswith("| time | event | status |") for t in tables)
    assert all(len(t.split("\n")) * 3 <= TABLE_MAX_CELLS + 3 for t in tables)  # the separator is no cell
    assert "| 149 | event \\| 149 | - [x] Done |" in out and markdown_problems(out) == []
    assert markdown_problems("| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 150) != []  # the sandbox would refuse


def test_past_one_mib_the_longest_table_keeps_its_first_rows_and_names_the_file() -> None:
    rows = "".join(f"| {n} | {'x' * 90} |\n" for n in range(2000))
    md = "## Timeline\n\n| t | e |\n|---|---|\n" + rows + "\n## Next\n- [ ] keep me\n"
    out = to_canvas(md, more_in_file=note, max_chars=50_000)
    assert len(out) <= 50_000 and out.endswith("- [ ] keep me\n") and markdown_problems(out) == []
    kept = len(re.findall(r"^\| \d+ \|", out, re.MULTILINE))
    assert 400 < kept < 2000 and note(2000 - kept) in out


# ---- the sandbox follows Slack's documented behaviour ----------------------------------------------------------


def test_the_sandbox_refuses_what_the_canvas_docs_leave_out(slack: SlackSandbox) -> None:
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)

    def refused(method: str, **kwargs: Any) -> dict[str, Any]:
        with pytest.raises(SlackApiError) as caught:
            getattr(client, method)(**kwargs)
        return dict(caught.value.response.data)

    def content(markdown: str) -> dict[str, str]:
        return {"type": "markdown", "markdown": markdown}

    for bad, problem in (("#### four", "heading depth (4)"), ("> - a list", "(List) within block quote"),
                         ("a <b>tag</b>", "HTML"), ("&lt;", "character reference"), ("![c](c.png)", "image")):
        answer = refused("canvases_create", title="t", document_content=content(f"ok\n{bad}"))
        assert answer["error"] == "canvas_creation_failed" and answer["detail"].startswith("'content' error: line 2:")
        assert problem in answer["detail"]
    canvas_id = client.canvases_create(title="t", document_content=content("| a |\n|---|\n| x<br>y |"))["canvas_id"]
    assert refused("canvases_edit", canvas_id=canvas_id, changes=[
        {"operation": "replace", "document_content": content("#### no")}])["error"] == "canvas_editing_failed"
    assert refused("canvases_edit", canvas_id="F0NONE", changes=[
        {"operation": "replace", "document_content": content("x")}])["error"] == "canvas_not_found"
    assert refused("canvases_edit", canvas_id=canvas_id, changes=[
        {"operation": "replace", "document_content": content("x")}] * 2)["error"] == "invalid_arguments"
    assert refused("canvases_access_set", canvas_id=canvas_id, access_level="read", channel_ids=[CHANNEL],
                   user_ids=["U0SENA"])["error"] == "invalid_parameters"
    assert refused("canvases_access_set", canvas_id=canvas_id, access_level="read",
                   channel_ids=["D0DIRECT"])["error"] == "channel_not_found"
    client.canvases_edit(canvas_id=canvas_id, changes=[{"operation": "replace", "document_content": content("new")}])
    assert slack.canvases.get(canvas_id).versions == ["| a |\n|---|\n| x<br>y |", "new"]  # type: ignore[union-attr]
    slack.canvases.free_team = True
    assert refused("canvases_create", title="t")["error"] == "free_teams_cannot_create_standalone_canvases"
    slack.canvases.granted = False
    answer = refused("canvases_create", title="t")
    assert answer["error"] == "missing_scope" and answer["needed"] == "canvases:write"
