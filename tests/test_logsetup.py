"""bot.logsetup: one Cloud Logging JSON object per stderr line, secrets never printed."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from bot.logsetup import REDACTED, OutageLog, RedactingFilter, configure_logging, log_fields

REPO = Path(__file__).resolve().parent.parent
SECRET = "sup3r-s3cret-signing-key-4711"
BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"


@pytest.fixture(autouse=True)
def _restore_logging():
    """configure_logging changes process-wide state; put it back for other tests."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    names = ["urllib3", "google.auth", "google.api_core", "apscheduler.executors"]
    saved_levels = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def _records(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    # Every line must be a JSON object by itself; json.loads raises otherwise.
    return [json.loads(line) for line in lines]


def test_each_line_is_a_structured_json_entry(capsys):
    configure_logging("INFO")
    log = logging.getLogger("incident_bot.test")

    log.info("announcement posted", extra=log_fields(incident_id="INCIDENT-20240101-1", channel="C123"))
    log.warning("canary error rate high")

    first, second = _records(capsys.readouterr().err)
    assert first["severity"] == "INFO"
    assert first["message"] == "announcement posted"
    assert first["incident_id"] == "INCIDENT-20240101-1"
    assert first["channel"] == "C123"
    assert first["logging.googleapis.com/labels"]["python_logger"] == "incident_bot.test"
    assert second["severity"] == "WARNING"
    assert second["message"] == "canary error rate high"
    assert "incident_id" not in second


def test_level_filters_and_third_party_loggers_are_quieted(capsys):
    configure_logging("WARNING")
    logging.getLogger("incident_bot.test").info("not shown")
    logging.getLogger("incident_bot.test").error("shown")
    configure_logging("DEBUG")
    logging.getLogger("urllib3.connectionpool").info("Starting new HTTPS connection")
    logging.getLogger("incident_bot.test").debug("debug shown")

    assert [r["message"] for r in _records(capsys.readouterr().err)] == ["shown", "debug shown"]


def test_configure_twice_does_not_duplicate_output(capsys):
    configure_logging("INFO", secrets=["first-secret-value"])
    configure_logging("INFO", secrets=[SECRET])
    logging.getLogger("incident_bot.test").info("once %s", SECRET)

    records = _records(capsys.readouterr().err)
    assert len(records) == 1
    assert records[0]["message"] == f"once {REDACTED}"


def test_secrets_never_reach_the_output(capsys):
    configure_logging("INFO", secrets=[SECRET])
    log = logging.getLogger("incident_bot.test")

    log.info("verifying with %s", SECRET)
    log.info(f"auth.test failed for token {BOT_TOKEN}")
    log.info("app token xapp-1-A0123456789-1234567890123-abcdef0123456789")
    log.info("bad signature v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")
    log.info(
        "posted",
        extra=log_fields(incident_id="INCIDENT-1", headers={"Authorization": f"Bearer {BOT_TOKEN}"},
                         note=SECRET),
    )

    err = capsys.readouterr().err
    records = _records(err)
    assert len(records) == 5
    for leaked in (SECRET, BOT_TOKEN, "xoxb-", "xapp-", "a2114d57b48eac39"):
        assert leaked not in err
    assert records[0]["message"] == f"verifying with {REDACTED}"
    assert records[4]["headers"] == {"Authorization": f"Bearer {REDACTED}"}
    assert records[4]["note"] == REDACTED
    assert records[4]["incident_id"] == "INCIDENT-1"


def test_secrets_in_exception_tracebacks_are_redacted(capsys):
    configure_logging("INFO", secrets=[SECRET])
    log = logging.getLogger("incident_bot.test")

    try:
        raise RuntimeError(f"slack said invalid_auth for {BOT_TOKEN} / {SECRET}")
    except RuntimeError:
        log.exception("posting failed", extra=log_fields(incident_id="INCIDENT-7"))

    err = capsys.readouterr().err
    assert BOT_TOKEN not in err
    assert "xoxb-" not in err
    assert SECRET not in err
    (record,) = _records(err)
    assert record["severity"] == "ERROR"
    assert record["incident_id"] == "INCIDENT-7"
    # The traceback is still there (Error Reporting needs it), just scrubbed.
    assert record["message"].startswith("posting failed\nTraceback (most recent call last):")
    assert f"RuntimeError: slack said invalid_auth for {REDACTED} / {REDACTED}" in record["message"]


def test_caller_json_fields_are_not_mutated(capsys):
    configure_logging("INFO", secrets=[SECRET])
    extra = log_fields(incident_id="INCIDENT-2", token=SECRET)
    logging.getLogger("incident_bot.test").info("x", extra=extra)
    assert extra == {"json_fields": {"incident_id": "INCIDENT-2", "token": SECRET}}
    assert _records(capsys.readouterr().err)[0]["token"] == REDACTED


def test_unserialisable_fields_do_not_lose_the_line(capsys):
    configure_logging("INFO")
    logging.getLogger("incident_bot.test").info("x", extra=log_fields(path=Path("/tmp/x"), obj=object()))
    (record,) = _records(capsys.readouterr().err)
    assert record["path"] == "/tmp/x"
    assert record["obj"].startswith("<object object")


def test_log_fields_leaves_out_none():
    assert log_fields() == {"json_fields": {}}
    assert log_fields(incident_id=None, step="announce", retries=0) == {
        "json_fields": {"step": "announce", "retries": 0}
    }
    assert log_fields("INCIDENT-3") == {"json_fields": {"incident_id": "INCIDENT-3"}}


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError):
        configure_logging("LOUD")


# Lowercase/digits only: "[REDACTED]" can't then rebuild a secret across a boundary.
_secret_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=6, max_size=40)


@given(secret=_secret_text, before=st.text(max_size=30), after=st.text(max_size=30))
def test_redact_removes_any_configured_secret(secret, before, after):
    redactor = RedactingFilter([secret, ""])
    assert secret not in redactor.redact(before + secret + after + secret)


@given(kind=st.sampled_from(["xoxb", "xoxp", "xoxa", "xoxo", "xoxs", "xoxr", "xapp"]),
       body=st.text(alphabet="ABCxyz0123456789-", min_size=1, max_size=60))
def test_redact_removes_any_slack_token(kind, body):
    assert RedactingFilter().redact(f"token={kind}-{body} end") == f"token={REDACTED} end"


def test_fresh_process_writes_only_json_to_stderr():
    # End to end in a clean interpreter: nothing else on the root logger, real stderr.
    script = textwrap.dedent(
        f"""
        import logging
        from bot.logsetup import configure_logging, log_fields
        configure_logging("INFO", secrets=[{SECRET!r}])
        log = logging.getLogger("incident_bot.demo")
        log.info("started", extra=log_fields(incident_id="INCIDENT-9"))
        try:
            raise ValueError({BOT_TOKEN!r})
        except ValueError:
            log.exception("boom with %s", {SECRET!r})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout == ""
    records = _records(proc.stderr)
    assert [r["severity"] for r in records] == ["INFO", "ERROR"]
    assert records[0]["incident_id"] == "INCIDENT-9"
    assert SECRET not in proc.stderr
    assert BOT_TOKEN not in proc.stderr


def test_an_outage_logs_its_traceback_once_a_minute_and_one_line_per_request_otherwise(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    outage = OutageLog(interval=60, clock=lambda: now[0])
    logger = logging.getLogger("test.outage")

    def fail(n: int) -> None:
        try:
            raise OperationalError("INSERT", None, Exception("unable to open database file"))
        except OperationalError:
            outage.error(logger, "could not store a %s event", f"message {n}")

    with caplog.at_level(logging.ERROR, logger="test.outage"):
        for n in range(50):
            fail(n)
        now[0] += 61
        fail(50)
    records = [r for r in caplog.records if r.name == "test.outage"]
    assert len(records) == 51  # every refused request is still one line
    assert [n for n, r in enumerate(records) if r.exc_info] == [0, 50]
    assert "OperationalError: (builtins.Exception) unable to open database file" in records[1].getMessage()
    assert "message 1" in records[1].getMessage()
