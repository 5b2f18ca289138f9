"""The `incident-bot` command line as a new user meets it: its help, and `report`, which only ever reads."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url, text

import app
from sandbox.slack import SlackSandbox
from storage import migrate

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin" / "incident-bot"


def clean_env(**settings: str) -> dict[str, str]:
    """The parent's environment minus every setting, so only what a test passes reaches the process."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **settings}


def schema_of(database_url: str) -> tuple[set[str], list[str]]:
    """(tables, alembic revision rows): what `report` must leave exactly as it found."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            versions = (sorted(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
                        if "alembic_version" in tables else [])
        return tables, versions
    finally:
        engine.dispose()


# ---- help ---------------------------------------------------------------------------------------------------


def test_every_subcommand_and_option_has_one_line_of_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal; 80 is the narrowest one we promise
    root = app.parser()
    subcommands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {"incident-bot": root, **subcommands.choices}
    assert set(subcommands.choices) == {"serve", "socket", "migrate", "demo", "report"}
    root_help = root.format_help()
    for choice in subcommands._choices_actions:
        assert choice.help, f"subcommand {choice.dest} has no help"
        assert any(line.strip().endswith(choice.help) for line in root_help.splitlines()), choice.help
    # The description is a sentence on one line, not the module docstring wrapped mid-word.
    assert root.description and "\n" not in root.description and root.description in root_help
    for name, command in parsers.items():
        rendered = command.format_help()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help, f"{name} {label} has no help"
            assert any(line.rstrip().endswith(action.help) for line in rendered.splitlines()), (
                f"{name} {label}: help wraps over lines:\n{rendered}")


# ---- report only reads --------------------------------------------------------------------------------------


def report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str,
           database_url: str | None = None) -> tuple[int, str, str]:
    """`incident-bot report ARGS` in this process, configured only by DATABASE_URL (or its default)."""
    for name in ("DATABASE_URL", "INCIDENT_LOCALE", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if database_url is not None:
        monkeypatch.setenv("DATABASE_URL", database_url)
    code = app.main(["report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_without_a_database_creates_nothing_and_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # No DATABASE_URL: the default sqlite:///incident-bot.db in the current directory, which does not exist.
    monkeypatch.chdir(tmp_path)
    code, out, err = report(monkeypatch, capsys, "INCIDENT-20251022-001")
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("incident-bot: no database at sqlite:///incident-bot.db"), lines
    assert list(tmp_path.iterdir()) == []  # no incident-bot.db, -wal or -shm left behind


def test_report_refuses_a_database_not_at_the_current_schema_and_migrates_nothing(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:  # an empty database (on SQLite, its file now exists)
            connection.execute(text("SELECT 1"))
        script = ScriptDirectory.from_config(migrate.alembic_config(engine))
        older = script.get_revision(script.get_current_head()).down_revision
    finally:
        engine.dispose()
    assert isinstance(older, str)
    for prepare in (None, older):  # empty, then one migration behind
        if prepare is not None:
            engine = create_engine(database_url)
            migrate.upgrade(engine, prepare)
            engine.dispose()
        before = schema_of(database_url)
        code, out, err = report(monkeypatch, capsys, "INCIDENT-20251022-001", "-o", str(tmp_path / "report.md"),
                                database_url=database_url)
        assert code == 1 and out == "", err
        lines = err.splitlines()
        assert len(lines) == 1 and "not at the current schema" in lines[0] and "incident-bot migrate" in lines[0]
        password = make_url(database_url).password
        assert not password or str(password) not in lines[0]
        assert schema_of(database_url) == before  # nothing created, nothing migrated
        assert not (tmp_path / "report.md").exists()


# ---- start-up ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_starts_without_bolts_token_will_be_unused_warning(tmp_path: Path, database_url: str) -> None:
    # SLACK_BOT_TOKEN in the environment is how the README (and Cloud Run) configures serve; Bolt reads it too.
    with SlackSandbox() as slack, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET="signing-secret-of-this-test",
                        SLACK_API_URL=slack.api_url, DATABASE_URL=database_url, PORT=str(port),
                        SCHEDULER_ENABLED="false")
        process = subprocess.Popen([str(BIN), "serve"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:  # the app is built once /healthz answers
                assert process.poll() is None, process.communicate()[1]
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=60)
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert records, "serve logged nothing at all"
    bolt_warnings = [r["message"] for r in records if r.get("logging.googleapis.com/labels", {}).get(
        "python_logger", "").startswith("slack_bolt") and r.get("severity") in ("WARNING", "ERROR", "CRITICAL")]
    assert bolt_warnings == []
    assert "will be unused" not in stderr
