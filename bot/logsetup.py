"""Structured JSON logging for Cloud Run, with secret redaction.

Every record becomes one JSON object per line on stderr in Cloud Logging's
structured form (``severity``, ``message``, ``logging.googleapis.com/...``),
so Cloud Run's log agent picks up severity and fields without a client.

Call sites attach fields with ``extra=log_fields(...)``::

    log.info("announcement posted", extra=log_fields(incident_id="INCIDENT-42"))
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

import google.cloud.logging_v2
from google.cloud.logging.handlers import StructuredLogHandler
from gunicorn import glogging

REDACTED = "[REDACTED]"

# Slack bot/user/app/config tokens and request signatures. Matched anywhere, not
# only on word boundaries, so "token=xoxb-..." or "Bearer xoxp-..." are caught too.
_TOKEN_PATTERNS = (
    re.compile(r"xox[abposre]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"v0=[0-9a-fA-F]+"),
)

# Third-party loggers that are chatty at INFO/DEBUG, and the least level they get.
_NOISY_LOGGERS = {
    "urllib3": logging.WARNING,
    "google.auth": logging.WARNING,
    "google.api_core": logging.WARNING,
    "apscheduler.executors": logging.INFO,
}


class _JSONEncoder(json.JSONEncoder):
    """Never lose a log line because a field isn't JSON-serialisable."""

    def default(self, o: Any) -> Any:
        return str(o)


class RedactingFilter(logging.Filter):
    """Scrub secrets from a record before the handler formats it.

    It rewrites the record in place (message with its args merged, the rendered
    traceback and stack, and ``json_fields``) so whatever the formatter builds
    from it is already clean. It sits on the handler rather than a logger because
    logger filters don't see records propagated from child loggers.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._exc_formatter = logging.Formatter()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub(v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, Mapping):
            record.msg = self._scrub(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:
                # Bad %-args: logging's own error report would echo the raw args,
                # secrets included, so log the unformatted pieces instead.
                message = f"{record.msg} {record.args!r}"
            record.msg, record.args = self.redact(message), ()
        # Always re-render: an earlier handler may have cached an unredacted exc_text.
        if record.exc_info:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        json_fields = getattr(record, "json_fields", None)
        if isinstance(json_fields, Mapping):
            # A new dict: the caller may reuse theirs for the next call.
            record.json_fields = self._scrub(json_fields)
        return True


class _StderrStructuredLogHandler(StructuredLogHandler):
    """StructuredLogHandler that looks up ``sys.stderr`` at write time.

    Binding the stream once would keep writing to whatever stderr was when
    logging was configured (e.g. a test's replaced stream that is long gone).
    """

    _incident_bot_handler = False  # True on the one configure_logging installs

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(json_encoder_cls=_JSONEncoder, **kwargs)
        self._stream: TextIO | None = None

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO | None) -> None:
        # StreamHandler.__init__ assigns sys.stderr; __init__ above resets it to "live".
        self._stream = value

    def emit_instrumentation_info(self) -> None:
        # The library's one-off diagnostic entry is usage telemetry, not ours, and it
        # is printed twice once this handler sits on the root logger: skip it.
        google.cloud.logging_v2._instrumentation_emitted = True


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Send all logging to stderr as Cloud Logging structured JSON.

    Idempotent: a second call replaces the handler installed by the first one
    (picking up the new level and secrets) instead of adding another.
    """
    numeric_level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level: {level!r}")

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_incident_bot_handler", False):
            root.removeHandler(handler)
            handler.close()

    handler = _StderrStructuredLogHandler()
    handler._incident_bot_handler = True
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name, floor in _NOISY_LOGGERS.items():
        # max(): never make a library louder than the root level asked for.
        logging.getLogger(name).setLevel(max(floor, numeric_level))


def log_fields(incident_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Build the ``extra`` dict that puts fields at the top level of the JSON line.

    ``None`` values are left out, so callers can pass optional ids unconditionally.
    """
    json_fields = {k: v for k, v in {"incident_id": incident_id, **fields}.items() if v is not None}
    return {"json_fields": json_fields}


class GunicornJSONLogger(glogging.Logger):
    """gunicorn's own lines (boot, workers, request errors) in the same structured JSON as ours.

    gunicorn gives ``gunicorn.error`` a plain-text stderr handler and stops it propagating; here it
    propagates to the root handler instead. The access log stays off: Cloud Run logs requests itself.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
        self.error_log.propagate = True
        self.access_log.propagate = False
        root = logging.getLogger()
        if not any(getattr(h, "_incident_bot_handler", False) for h in root.handlers):
            # Used without `incident-bot serve` (which configures the secrets first): at least be JSON.
            configure_logging(cfg.loglevel)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


class OutageLog:
    """Logs a failure that repeats on every request during an outage (the database down): its traceback at most
    once per `interval` seconds per message, and one line without it in between. Without this an outage wrote a
    ~6 KB traceback per refused request, a flood in Cloud Logging at the moment someone needs to read it."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def error(self, logger: logging.Logger, message: str, *args: Any) -> None:
        """Call from an `except` block, like logger.exception."""
        now = self.clock()
        with self._lock:
            last = self._last.get(message)
            full = last is None or now - last >= self.interval
            if full:
                self._last[message] = now
        if full:
            logger.exception(message, *args)
        else:
            error = sys.exc_info()[1]
            reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}" if error else "unknown"
            logger.error(message + " (%s; traceback logged at most once a minute)", *args, reason)


outage_log = OutageLog()
