"""Settings read from the environment, as listed in the interface contract.

A missing or malformed value raises SettingsError naming the variable; the entry point turns it into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.timefmt import parse_duration

LOCALES = ("ko", "en")
DEFAULT_ROLES = ("lead", "backend", "devops", "monitoring", "manager", "qa")
DEFAULT_MILESTONE_EMOJI = {"rotating_light": "detected", "rewind": "rollback", "white_check_mark": "recovered"}


RATE_LIMITS = (
    ("RATE_LIMIT_OPEN_PER_USER", "open_limit_per_user"),
    ("RATE_LIMIT_OPEN_PER_CHANNEL", "open_limit_per_channel"),
    ("RATE_LIMIT_POST_PER_USER", "post_limit_per_user"),
    ("RATE_LIMIT_POST_PER_CHANNEL", "post_limit_per_channel"),
)


class SettingsError(ValueError):
    """One clear line: which variable, and what it should look like."""


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_team_id: str | None = None
    database_url: str = "sqlite:///incident-bot.db"
    locale: str = "ko"
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    rca_reminder_after: timedelta = timedelta(minutes=30)
    postmortem_meeting_after: timedelta = timedelta(hours=2)
    scheduler_enabled: bool = True
    gcp_project: str | None = None
    cloud_run_region: str | None = None
    cloud_run_service: str | None = None
    cloud_logging_api_url: str | None = None
    cloud_run_api_url: str | None = None
    error_rate_max: float = 0.005
    p95_max_ms: float = 200.0
    memory_max: float = 0.70
    verify_window: timedelta = timedelta(minutes=10)
    health_url: str | None = None
    port: int = 3000
    roles: tuple[str, ...] = DEFAULT_ROLES
    milestone_emoji: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MILESTONE_EMOJI))
    listener_threads: int = 16
    log_level: str = "INFO"
    # Rate limits (hits per window; 0 = no limit): `open`, and the commands that post to the channel.
    rate_limit_window: timedelta = timedelta(minutes=1)
    open_limit_per_user: int = 5
    open_limit_per_channel: int = 20
    post_limit_per_user: int = 20
    post_limit_per_channel: int = 60
    # Cloud Monitoring alerts (POST /alerts/cloud-monitoring): off without a token.
    alert_webhook_token: str | None = None
    alert_channel: str | None = None
    alert_auto_open: bool = False
    # Rollback from Slack (/incident rollback): off unless asked for, since it changes production traffic.
    rollback_enabled: bool = False
    rollback_allowed_users: tuple[str, ...] = ()
    verify_after_rollback: timedelta = timedelta(minutes=3)
    cloud_monitoring_api_url: str | None = None  # host:port of a plain-gRPC emulator; Google's endpoint when None
    # A channel per incident (INCIDENT_CHANNEL_MODE=channel); each incident keeps the mode it was opened in.
    channel_mode: str = "thread"
    channel_private: bool = False
    channel_archive_after: timedelta | None = None  # None: incident channels are never archived by the bot

    # /postmortem report also writes the report into a Slack canvas (REPORT_CANVAS); off: the .md file only.
    report_canvas: bool = False

    # Action items kept in GitHub Issues: on with GITHUB_REPO and GITHUB_TOKEN (both or neither).
    github_repo: str | None = None
    github_token: str | None = None
    github_api_url: str = "https://api.github.com"
    github_webhook_secret: str | None = None

    @property
    def github_enabled(self) -> bool:
        return bool(self.github_repo and self.github_token)

    def secrets(self) -> list[str]:
        """Values that must never reach a log line."""
        return [s for s in (self.slack_bot_token, self.slack_signing_secret, self.slack_app_token,
                            self.alert_webhook_token, self.github_token, self.github_webhook_secret) if s]


def _percent(name: str, raw: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", raw)
    if not match:
        raise SettingsError(f"{name}: expected a percentage such as 0.5%, got {raw!r}")
    return float(match.group(1)) / 100.0


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number such as 200, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: expected a positive number, got {raw!r}")
    return value


def _duration(name: str, raw: str) -> timedelta:
    try:
        value = parse_duration(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a duration such as 90s, 30m, 2h or 1h30m, got {raw!r}") from None
    if value <= timedelta(0):
        raise SettingsError(f"{name}: expected a duration greater than zero, got {raw!r}")
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}: expected true or false, got {raw!r}")


def _url(name: str, raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+", raw):
        raise SettingsError(f"{name}: expected an http:// or https:// URL, got {raw!r}")
    return raw


def _emoji_map(name: str, raw: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        emoji, _, milestone = pair.partition("=")
        if not emoji or milestone not in ("deployed", "started", "detected", "rollback", "recovered", "resolved"):
            raise SettingsError(f"{name}: expected emoji=milestone pairs such as rewind=rollback, got {pair!r}")
        mapping[emoji.strip(":")] = milestone
    return mapping


def load_settings(env: Mapping[str, str] | None = None, *, require: tuple[str, ...] = ()) -> Settings:
    """Reads settings; `require` names the variables this process cannot start without."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    for name in require:
        if get(name) is None:
            raise SettingsError(f"{name} is required but not set")

    kwargs: dict[str, object] = {}
    if (v := get("SLACK_BOT_TOKEN")) is not None:
        if not v.startswith("xoxb-"):
            raise SettingsError("SLACK_BOT_TOKEN: expected a bot token starting with xoxb-")
        kwargs["slack_bot_token"] = v
    if (v := get("SLACK_SIGNING_SECRET")) is not None:
        kwargs["slack_signing_secret"] = v
    if (v := get("SLACK_APP_TOKEN")) is not None:
        if not v.startswith("xapp-"):
            raise SettingsError("SLACK_APP_TOKEN: expected an app-level token starting with xapp-")
        kwargs["slack_app_token"] = v
    if (v := get("SLACK_API_URL")) is not None:
        kwargs["slack_api_url"] = _url("SLACK_API_URL", v if v.endswith("/") else v + "/")
    if (v := get("SLACK_TEAM_ID")) is not None:
        kwargs["slack_team_id"] = v
    if (v := get("DATABASE_URL")) is not None:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise SettingsError("DATABASE_URL: expected sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        if v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v.removeprefix("postgresql://")
        kwargs["database_url"] = v
    if (v := get("INCIDENT_LOCALE")) is not None:
        if v not in LOCALES:
            raise SettingsError(f"INCIDENT_LOCALE: expected ko or en, got {v!r}")
        kwargs["locale"] = v
    if (v := get("INCIDENT_TIMEZONE")) is not None:
        try:
            kwargs["timezone"] = ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"INCIDENT_TIMEZONE: expected an IANA zone such as Asia/Seoul, got {v!r}") from None
    for name, key in (("RCA_REMINDER_AFTER", "rca_reminder_after"),
                      ("POSTMORTEM_MEETING_AFTER", "postmortem_meeting_after"),
                      ("VERIFY_WINDOW", "verify_window")):
        if (v := get(name)) is not None:
            kwargs[key] = _duration(name, v)
    if (v := get("SCHEDULER_ENABLED")) is not None:
        kwargs["scheduler_enabled"] = _bool("SCHEDULER_ENABLED", v)
    for name, key in (("GCP_PROJECT", "gcp_project"), ("CLOUD_RUN_REGION", "cloud_run_region"),
                      ("CLOUD_RUN_SERVICE", "cloud_run_service")):
        if (v := get(name)) is not None:
            kwargs[key] = v
    for name, key in (("CLOUD_LOGGING_API_URL", "cloud_logging_api_url"), ("CLOUD_RUN_API_URL", "cloud_run_api_url"),
                      ("HEALTH_URL", "health_url")):
        if (v := get(name)) is not None:
            kwargs[key] = _url(name, v)
    if (v := get("ERROR_RATE_MAX")) is not None:
        kwargs["error_rate_max"] = _percent("ERROR_RATE_MAX", v)
    if (v := get("P95_MAX_MS")) is not None:
        kwargs["p95_max_ms"] = _number("P95_MAX_MS", v)
    if (v := get("MEMORY_MAX")) is not None:
        kwargs["memory_max"] = _percent("MEMORY_MAX", v)
    if (v := get("PORT")) is not None:
        if not v.isdigit() or not 0 < int(v) < 65536:
            raise SettingsError(f"PORT: expected a TCP port number, got {v!r}")
        kwargs["port"] = int(v)
    if (v := get("INCIDENT_ROLES")) is not None:
        roles = tuple(r.strip().lower() for r in v.split(",") if r.strip())
        if not roles or not all(re.fullmatch(r"[a-z0-9_-]+", r) for r in roles):
            raise SettingsError("INCIDENT_ROLES: expected comma-separated role names such as lead,backend,devops")
        kwargs["roles"] = roles
    if (v := get("MILESTONE_EMOJI")) is not None:
        kwargs["milestone_emoji"] = _emoji_map("MILESTONE_EMOJI", v)
    if (v := get("LISTENER_THREADS")) is not None:
        if not v.isdigit() or not 1 <= int(v) <= 256:
            raise SettingsError(f"LISTENER_THREADS: expected a number from 1 to 256, got {v!r}")
        kwargs["listener_threads"] = int(v)
    if (v := get("LOG_LEVEL")) is not None:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {v!r}")
        kwargs["log_level"] = v.upper()
    if (v := get("RATE_LIMIT_WINDOW")) is not None:
        kwargs["rate_limit_window"] = _duration("RATE_LIMIT_WINDOW", v)
    for name, key in RATE_LIMITS:
        if (v := get(name)) is not None:
            if not re.fullmatch(r"[0-9]{1,6}", v.strip()) or int(v) > 100_000:
                raise SettingsError(f"{name}: expected a whole number of requests from 0 (no limit) to 100000, "
                                    f"got {v!r}")
            kwargs[key] = int(v)
    kwargs.update(_alert_settings(get))
    kwargs.update(_rollback_settings(get))
    kwargs.update(_github_settings(get))
    kwargs.update(_channel_settings(get))
    if (v := get("REPORT_CANVAS")) is not None:
        kwargs["report_canvas"] = _bool("REPORT_CANVAS", v)
    return Settings(**kwargs)  # type: ignore[arg-type]  # each value is parsed above to its field's type


ALERT_TOKEN_MIN_LENGTH = 16


def _alert_settings(get: Callable[[str], str | None]) -> dict[str, object]:
    """ALERT_WEBHOOK_TOKEN turns the webhook on; it is useless without ALERT_CHANNEL, so that is an error."""
    kwargs: dict[str, object] = {}
    token = get("ALERT_WEBHOOK_TOKEN")
    if token is not None:
        # It travels in a URL or a basic-auth header: guessable or mangled values would open the route to anyone.
        if len(token) < ALERT_TOKEN_MIN_LENGTH or not re.fullmatch(r"[\x21-\x7e]+", token):
            raise SettingsError(f"ALERT_WEBHOOK_TOKEN: expected at least {ALERT_TOKEN_MIN_LENGTH} printable "
                                "characters without spaces (e.g. from `openssl rand -hex 32`)")
        kwargs["alert_webhook_token"] = token
    if (v := get("ALERT_CHANNEL")) is not None:
        if not re.fullmatch(r"[CG][A-Z0-9]{2,20}", v):
            raise SettingsError(f"ALERT_CHANNEL: expected a Slack channel ID such as C0123ABCD, got {v!r}")
        kwargs["alert_channel"] = v
    elif token is not None:
        raise SettingsError("ALERT_CHANNEL is required when ALERT_WEBHOOK_TOKEN is set (the Slack channel ID "
                            "where alerts are posted)")
    if (v := get("ALERT_AUTO_OPEN")) is not None:
        kwargs["alert_auto_open"] = _bool("ALERT_AUTO_OPEN", v)
    return kwargs


def _rollback_settings(get: Callable[[str], str | None]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    if (v := get("ROLLBACK_ENABLED")) is not None:
        kwargs["rollback_enabled"] = _bool("ROLLBACK_ENABLED", v)
    if (v := get("ROLLBACK_ALLOWED_USERS")) is not None:
        users = tuple(u.strip() for u in v.split(",") if u.strip())
        if not all(re.fullmatch(r"[UW][A-Z0-9]{2,20}", u) for u in users):
            raise SettingsError(f"ROLLBACK_ALLOWED_USERS: expected comma-separated Slack user IDs such as "
                                f"U0123ABCD,U0456EFGH, got {v!r}")
        kwargs["rollback_allowed_users"] = users
    if (v := get("VERIFY_AFTER_ROLLBACK")) is not None:
        kwargs["verify_after_rollback"] = _duration("VERIFY_AFTER_ROLLBACK", v)
    if (v := get("CLOUD_MONITORING_API_URL")) is not None:
        # gRPC takes host:port, not a URL: a scheme here is a mistake worth stopping for.
        if not re.fullmatch(r"[A-Za-z0-9.\-]+:[0-9]{1,5}|\[[0-9A-Fa-f:]+\]:[0-9]{1,5}", v):
            raise SettingsError(f"CLOUD_MONITORING_API_URL: expected host:port such as 127.0.0.1:8085, got {v!r}")
        kwargs["cloud_monitoring_api_url"] = v
    return kwargs


CHANNEL_MODES = ("thread", "channel")


def _channel_settings(get: Callable[[str], str | None]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    if (v := get("INCIDENT_CHANNEL_MODE")) is not None:
        if v.strip().lower() not in CHANNEL_MODES:
            raise SettingsError(f"INCIDENT_CHANNEL_MODE: expected thread or channel, got {v!r}")
        kwargs["channel_mode"] = v.strip().lower()
    if (v := get("INCIDENT_CHANNEL_PRIVATE")) is not None:
        kwargs["channel_private"] = _bool("INCIDENT_CHANNEL_PRIVATE", v)
    if (v := get("INCIDENT_CHANNEL_ARCHIVE_AFTER")) is not None and v.strip().lower() not in ("off", "never"):
        kwargs["channel_archive_after"] = _duration("INCIDENT_CHANNEL_ARCHIVE_AFTER", v)
    return kwargs


# GitHub's rules: a login is 1-39 letters, digits or single inner hyphens; a repository name letters, digits, ., _, -.
GITHUB_LOGIN = r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"
GITHUB_REPO_NAME = r"[A-Za-z0-9._-]{1,100}"
GITHUB_SECRET_MIN_LENGTH = 16


def _github_settings(get: Callable[[str], str | None]) -> dict[str, object]:
    """GITHUB_REPO and GITHUB_TOKEN turn the sync on; one without the other is a mistake worth stopping for."""
    kwargs: dict[str, object] = {}
    repo, token = get("GITHUB_REPO"), get("GITHUB_TOKEN")
    if repo is not None:
        if not re.fullmatch(rf"{GITHUB_LOGIN}/{GITHUB_REPO_NAME}", repo) or repo.split("/")[1] in (".", ".."):
            raise SettingsError(f"GITHUB_REPO: expected owner/name such as ion-team/ion-api, got {repo!r}")
        kwargs["github_repo"] = repo
    if token is not None:
        if not re.fullmatch(r"[\x21-\x7e]+", token):  # never echoed: it is a secret
            raise SettingsError("GITHUB_TOKEN: expected a token without spaces (a fine-grained personal access token)")
        kwargs["github_token"] = token
    if (repo is None) != (token is None):
        missing = "GITHUB_TOKEN" if token is None else "GITHUB_REPO"
        raise SettingsError(f"{missing} is required when {'GITHUB_REPO' if token is None else 'GITHUB_TOKEN'} is set "
                            "(both turn the GitHub issue sync on)")
    if (v := get("GITHUB_API_URL")) is not None:
        kwargs["github_api_url"] = _url("GITHUB_API_URL", v.rstrip("/"))
    if (v := get("GITHUB_WEBHOOK_SECRET")) is not None:
        if len(v) < GITHUB_SECRET_MIN_LENGTH or not re.fullmatch(r"[\x21-\x7e]+", v):
            raise SettingsError(f"GITHUB_WEBHOOK_SECRET: expected at least {GITHUB_SECRET_MIN_LENGTH} printable "
                                "characters without spaces (e.g. from `openssl rand -hex 32`)")
        kwargs["github_webhook_secret"] = v
    return kwargs
