"""incident-bot: builds the app from settings, and is the entry point (`incident-bot serve|socket|demo|...`)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import App
from sqlalchemy.exc import SQLAlchemyError

import handlers
from bot import (
    access,
    alerts,
    channel_archive,
    channels,
    github_sync,
    homes,
    incidents,
    lifecycle,
    postmortem,
    reminders,
    report,
    reports,
    rollback,
)
from bot.clock import Clock, SystemClock
from bot.context import Context, set_current
from bot.evidence import service as evidence
from bot.jobs import BackgroundJobs
from bot.logsetup import configure_logging
from bot.ports import Messenger
from bot.render import shared_renderer
from bot.settings import Settings, SettingsError, load_settings
from handlers import alerts_webhook, github_webhook, guards
from handlers.blocks import SlackPresenter
from handlers.github_client import GithubIssueTracker
from handlers.messenger import SlackMessenger, make_web_client
from storage import migrate
from storage.db import Database

log = logging.getLogger("incident_bot")

MAX_BODY_BYTES = 1024 * 1024
SWEEP_INTERVAL_SECONDS = 30.0
CHECKPOINT_INTERVAL_SECONDS = 1.0
ACK_SWITCH_INTERVAL_SECONDS = 0.001


@dataclass
class Runtime:
    """One running bot: the Bolt app, its WSGI entry, and the background services it owns."""

    ctx: Context
    bolt: App
    wsgi: Callable[..., Iterable[bytes]]
    sweep_interval: float = SWEEP_INTERVAL_SECONDS
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.ctx.hooks.on_start.fire()
        self._every("incident-bot-sweep", self.sweep_interval, self.sweep)
        if self.ctx.db.dialect == "sqlite":
            self._every("incident-bot-checkpoint", CHECKPOINT_INTERVAL_SECONDS, self.ctx.db.checkpoint)

    def sweep(self) -> None:
        """Retries what Slack refused earlier; the database holds what is pending, so nothing is lost."""
        incidents.retry_pending_announcements(self.ctx)
        self.ctx.hooks.on_sweep.fire()

    def _every(self, name: str, interval: float, work: Callable[[], None]) -> None:
        """Runs `work` every `interval` seconds on its own daemon thread until stop(); a failure waits for the next."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    work()
                except Exception:  # the checkpoint's raw DB-API connection raises sqlite3 errors, not SQLAlchemy's
                    log.exception("%s failed; the next run retries", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.ctx.hooks.on_stop.fire()
        self.ctx.jobs.wait_idle(timeout=10)
        self.ctx.jobs.shutdown()
        evidence.clients(self.ctx).close()
        if isinstance(self.ctx.messenger, SlackMessenger):
            self.ctx.messenger.close()


def build_context(settings: Settings, *, clock: Clock | None = None, messenger: Messenger | None = None,
                  db: Database | None = None) -> Context:
    renderer = shared_renderer()
    if messenger is None:
        if not settings.slack_bot_token:
            raise SettingsError("SLACK_BOT_TOKEN is required but not set")
        messenger = SlackMessenger(make_web_client(settings.slack_bot_token, settings.slack_api_url),
                                   overflow_note=renderer.say("limits.truncated", settings.locale))
    ctx = Context(
        settings=settings,
        db=db or Database(settings.database_url),
        clock=clock or SystemClock(),
        messenger=messenger,
        renderer=renderer,
        jobs=BackgroundJobs(workers=8),
        presenter=SlackPresenter(),
    )
    for install in _feature_installers():
        install(ctx)
    if settings.github_repo and settings.github_token:
        github_sync.install(ctx, GithubIssueTracker(settings.github_repo, settings.github_token,
                                                    settings.github_api_url, ctx.clock.now))
    return ctx


def _feature_installers() -> list[Callable[[Context], None]]:
    """Domains that hook into open/announce/start/sweep register themselves here."""
    return [access.install, reminders.install, lifecycle.install, postmortem.install, evidence.install, alerts.install,
            rollback.install, channels.install, channel_archive.install, homes.install]


def build_bolt_app(ctx: Context) -> App:
    messenger = ctx.messenger
    client = messenger.client if isinstance(messenger, SlackMessenger) else None
    # Each listener runs in the request's own thread and Bolt answers when it returns: an event is acked only
    # once stored, and no listener can wait in a shared pool while Slack's 3 s pass. Listeners only parse,
    # store and answer; every Slack call goes to ctx.jobs, which start once the response is written.
    app = App(
        # Named, so Bolt does not call inspect.stack() to name it after its caller's file (it reads every frame's
        # source: a few ms per build, which every test pays).
        name="incident-bot",
        client=client,
        signing_secret=ctx.settings.slack_signing_secret,
        process_before_response=True,
        token_verification_enabled=False,
    )
    handlers.register(app, ctx)
    return app


def _json_response(start_response: Callable[..., Any], status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def make_wsgi(ctx: Context, bolt: App) -> Callable[..., Iterable[bytes]]:
    slack_handler = guards.GuardedRequestHandler(bolt, ctx.settings.slack_signing_secret, MAX_BODY_BYTES)
    alert_webhook = alerts_webhook.make_webhook(ctx)
    github_hook = github_webhook.make_webhook(ctx)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method == "GET":
            try:
                ctx.db.check_writable()  # what the app needs is writes: SELECT 1 works on a read-only file
            except SQLAlchemyError as error:
                return _json_response(start_response, "503 Service Unavailable",
                                      {"status": "unavailable", "database": f"down: {ctx.db.describe_outage(error)}"})
            return _json_response(start_response, "200 OK", {"status": "ok", "database": "ok"})
        if path == "/slack/events" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if length < 0:
                return _json_response(start_response, "400 Bad Request", {"error": "bad content length"})
            if length > MAX_BODY_BYTES:
                return _json_response(start_response, "413 Content Too Large", {"error": "body over 1 MiB"})
            return slack_handler(environ, start_response)
        if path == alerts_webhook.ROUTE:
            return alert_webhook(environ, start_response)
        if path == github_webhook.ROUTE:
            return github_hook(environ, start_response)
        return _json_response(start_response, "404 Not Found", {"error": "not found"})

    return wsgi


def build_runtime(settings: Settings, *, clock: Clock | None = None, messenger: Messenger | None = None,
                  apply_migrations: bool = True) -> Runtime:
    ctx = build_context(settings, clock=clock, messenger=messenger)
    if apply_migrations:
        migrate.upgrade(ctx.db.engine)
    set_current(ctx)
    bolt = build_bolt_app(ctx)
    return Runtime(ctx=ctx, bolt=bolt, wsgi=make_wsgi(ctx, bolt))


# ---- commands -------------------------------------------------------------------------------------------------


def tune_for_acks() -> None:
    """Process settings for a long-running server, once everything is loaded."""
    # Listener threads mostly wait on the database and the network. At Python's default 5 ms switch interval
    # each return from a database call could wait that long for the GIL behind a background thread (rendering,
    # pickling a scheduler job); 1 ms cut `/incident open`'s p99 in bench/ack.py.
    sys.setswitchinterval(ACK_SWITCH_INTERVAL_SECONDS)
    # What is loaded by now (Bolt, the Google clients, templates) lives as long as the process. Left to the
    # collector, each full collection walked all of it and stalled acks by ~190 ms.
    gc.freeze()


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication  # the server is needed by `serve` only

    # In the master too, so migrations and gunicorn's own lines are JSON; the worker inherits it.
    configure_logging(settings.log_level, secrets=settings.secrets())
    db = Database(settings.database_url)
    migrate.upgrade(db.engine)  # once, in the master, before any worker starts
    db.dispose()

    class Server(BaseApplication):
        runtime: Runtime | None = None

        def load_config(self) -> None:
            self.cfg.set("bind", f"0.0.0.0:{settings.port}")
            # One process per instance: the scheduler and background jobs live beside the listeners.
            self.cfg.set("workers", 1)
            # Requests are read on an event loop under deadlines, so slow clients cannot hold the WSGI threads.
            self.cfg.set("worker_class", "handlers.server.BufferedWSGIWorker")
            # libuv's loop under that worker: 0.3-0.8 ms less CPU per request than asyncio's (README, round 12).
            self.cfg.set("asgi_loop", "uvloop")
            self.cfg.set("threads", max(8, settings.listener_threads))
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)
            self.cfg.set("loglevel", settings.log_level.lower())
            self.cfg.set("logger_class", "bot.logsetup.GunicornJSONLogger")
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn ≥ 25.1's control socket lives in $HOME, shared by every server on the machine; unused.
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("worker_exit", _stop_runtime)

        def load(self) -> Callable[..., Iterable[bytes]]:
            configure_logging(settings.log_level, secrets=settings.secrets())
            runtime = build_runtime(settings, apply_migrations=False)
            Server.runtime = runtime
            runtime.start()
            tune_for_acks()
            return runtime.wsgi

    def _stop_runtime(_arbiter: Any, _worker: Any) -> None:
        if Server.runtime is not None:
            Server.runtime.stop()

    Server().run()
    return 0


def cmd_socket(settings: Settings, _args: argparse.Namespace) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler  # its WebSocket client is needed by `socket` only

    runtime = build_runtime(settings)
    runtime.start()
    tune_for_acks()
    SocketModeHandler(runtime.bolt, settings.slack_app_token).start()
    return 0


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    db = Database(settings.database_url)
    migrate.upgrade(db.engine)
    print(f"database at head: {db.engine.url.render_as_string(hide_password=True)}")
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    """Reads only: it never creates or migrates a database, so it cannot leave an empty one behind."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    class _Offline:
        """The report reads only the database; nothing here may talk to Slack."""

        bot_user_id = ""

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"offline report cannot call Slack ({name})")

    url = make_url(settings.database_url)
    where = url.render_as_string(hide_password=True)
    path = url.database or ""
    sqlite_file = url.get_backend_name() == "sqlite" and path not in ("", ":memory:") and not path.startswith("file:")
    if sqlite_file and not os.path.isfile(path):  # SQLite's first connect would create it
        print(f"incident-bot: no database at {where} (set DATABASE_URL)", file=sys.stderr)
        return 1
    ctx = build_context(settings, messenger=_Offline())
    try:
        with ctx.db.engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
        head = set(ScriptDirectory.from_config(migrate.alembic_config(ctx.db.engine)).get_heads())
        if current != head:
            print(f"incident-bot: the database at {where} is not at the current schema "
                  "(run `incident-bot migrate` first)", file=sys.stderr)
            return 1
        with ctx.db.read() as session:
            incident = incidents.find_by_public_id(session, args.incident_id)
            if incident is None:
                print(f"incident-bot: no incident {args.incident_id}", file=sys.stderr)
                return 1
            incident_id = incident.id
        locale = args.locale or settings.locale
        # The evidence chart goes beside a written file, under the name the document embeds; stdout has no beside.
        picture = reports.report_chart(ctx, incident_id, locale) if args.output else None
        text = report.render_report(ctx, incident_id, locale, chart_file=picture.filename if picture else None)
    except SQLAlchemyError as error:
        print(f"incident-bot: cannot read the database at {where} ({type(error).__name__})", file=sys.stderr)
        return 1
    finally:
        ctx.db.dispose()
    if args.output:
        if picture is not None and picture.png is not None:
            with open(os.path.join(os.path.dirname(os.path.abspath(args.output)), picture.filename), "wb") as image:
                image.write(picture.png)
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    # Imported here, not to dodge a circle (sandbox never imports app), but so that `serve` never loads the
    # sandbox's fake Slack and Google servers: the demo is a development tool, not part of production start-up.
    from sandbox.demo import run_demo

    return run_demo(build_runtime, output_dir=args.output_dir, locale=args.locale)


def parser() -> argparse.ArgumentParser:
    # One line of help each: argparse wraps at 80 columns with the help column at 24, so at most 56 characters.
    root = argparse.ArgumentParser(prog="incident-bot",
                                   description="Slack bot for failed Cloud Run canary deployments.",
                                   epilog="Settings come from the environment; see the README.")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="serve Slack over HTTP (production, port $PORT)",
                   description="Serve /slack/events and /healthz with gunicorn on $PORT; migrates first.")
    sub.add_parser("socket", help="Socket Mode for local use (needs SLACK_APP_TOKEN)",
                   description="Connect to Slack over Socket Mode (local development).")
    sub.add_parser("migrate", help="apply the database migrations",
                   description="Bring the database at DATABASE_URL to the current schema.")
    demo = sub.add_parser("demo", help="replay the guide's incident offline, write a report",
                          description="Replay the guide's failed canary against local sandboxes, offline.")
    demo.add_argument("--output-dir", default="out", metavar="DIR",
                      help="where the report, transcript and database go")
    demo.add_argument("--locale", choices=("ko", "en"), default=None,
                      help="language of the run (default: $INCIDENT_LOCALE)")
    rep = sub.add_parser("report", help="print an incident's post-mortem from the database",
                         description="Render a post-mortem from the database at DATABASE_URL (read only).")
    rep.add_argument("incident_id", metavar="INCIDENT_ID", help="the incident's ID, e.g. INCIDENT-20251022-001")
    rep.add_argument("--locale", choices=("ko", "en"), default=None,
                     help="language of the report (default: $INCIDENT_LOCALE)")
    rep.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE instead of stdout")
    return root


REQUIRED = {
    "serve": ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"),
    "socket": ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"),
}
COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": cmd_serve, "socket": cmd_socket, "migrate": cmd_migrate, "report": cmd_report, "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(require=REQUIRED.get(args.command, ()))
    except SettingsError as error:
        print(f"incident-bot: {error}", file=sys.stderr)
        return 2
    # The token lives in `settings` from here on. Bolt's App reads SLACK_BOT_TOKEN from the environment by itself
    # and, beside the client build_bolt_app hands it, warns that the token "will be unused".
    os.environ.pop("SLACK_BOT_TOKEN", None)
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
