"""The floor for bench/ack.py and bench/open_floor.py: an `/incident open` that does only the work an open must do.

    gunicorn --chdir bench floor_app:app   (bench/ack.py --floor starts it with serve's worker settings)

A Bolt app set up as the app's (process_before_response, the app's Slack client, database engine, renderer and
settings) whose one listener does the open's work straight through the libraries, with nothing of the app around
it: the statements the app's ack waits for, the very ones it builds, on one Core connection (the delivery's record,
the rate limits' hits, the day's number (on PostgreSQL in a statement of its own, as the app), the incident, its
first event, its reminders, the answer kept for replays); the ack naming the ID; then one background job that
renders the announcement, posts it with slack_sdk and stores its ts. What it leaves out is what the app adds: the
request guards, the replay and access checks around the listener, the hooks, the announcement's lease and its
checks, the post's retry bookkeeping and the log line. Its incidents are stored with the service `bench-floor`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from sqlalchemy import Connection, Table, bindparam, func, select, update

from bot import incidents, ratelimit, reminders, replays, timeline
from bot.context import Context
from storage.models import Incident

SERVICE = "bench-floor"
_INCIDENTS = cast(Table, Incident.__table__)
# Built once, as the app builds its statements: building one per call would put SQLAlchemy's compiler in the floor.
_ANNOUNCED = (update(_INCIDENTS).where(_INCIDENTS.c.id == bindparam("incident"))
              .values(announcement_ts=bindparam("ts"), announce_claimed_until=None, updated_at=bindparam("now")))


class FloorApp:
    def __init__(self, ctx: Context, client: Any, signing_secret: str) -> None:
        self.ctx, self.client = ctx, client
        self.jobs = ThreadPoolExecutor(8)  # as the app's BackgroundJobs
        bolt = App(client=client, signing_secret=signing_secret, process_before_response=True,
                   token_verification_enabled=False)
        bolt.command("/incident")(self.open)
        self.wsgi = SlackRequestHandler(bolt)

    def open(self, ack: Ack, body: dict[str, Any]) -> None:
        ctx, db = self.ctx, self.ctx.db
        dialect, now = db.dialect, ctx.clock.now()
        day = now.astimezone(ctx.settings.timezone).strftime("%Y%m%d")
        user, channel, trigger, title = body["user_id"], body["channel_id"], body["trigger_id"], body["text"]
        with db.work() as work:  # the app's own Core unit of work: a Connection and nothing of the ORM
            work.execute(replays._seen_insert(dialect), {
                "trigger_id": trigger, "kind": "incident open", "user_id": user, "received_at": now}).first()
            ratelimit.take(work, ratelimit.OPEN,
                           ratelimit.command_limits(ctx, ratelimit.OPEN, user, channel),
                           now=now, window=ctx.settings.rate_limit_window)
            if dialect == "postgresql":
                with db.statement() as numbering:
                    seq = numbering.execute(incidents._next_in(dialect), {"day": day, "last": 1}).scalar_one()
            else:
                seq = work.execute(incidents._next_in(dialect), {"day": day, "last": 1}).scalar_one()
            row = {"public_id": f"INCIDENT-{day}-{seq:03d}", "day": day, "seq": seq, "title": title,
                   "severity": "high", "status": "investigating", "service": SERVICE, "channel_id": channel,
                   "mode": "thread", "origin_channel_id": None, "opened_by": user, "opened_at": now,
                   "meeting_at": now + ctx.settings.postmortem_meeting_after, "detected_at": now,
                   "announce_claimed_until": now + incidents.announce_lease(ctx)}
            filled_in = work.execute(incidents._incident_insert(), row).one()
            incident = Incident(**{**row, **filled_in._asdict()})
            work.execute(timeline._system_insert(), timeline._system_row(
                incident.id, user, now, "opened", {"title": title, "severity": "high"}, "", None))
            due = [(reminders.RCA, now + ctx.settings.rca_reminder_after),
                   *((kind, at) for kind, at, _always in reminders._meeting_plan(incident))]
            work.execute(reminders._new_reminders(dialect, returning=dialect == "postgresql"), [
                {"incident_id": incident.id, "kind": kind, "action_item_id": None, "due_at": at, "attempts": 0,
                 "late": False} for kind, at in due])
            answer = ctx.say("incident.open_ack", public_id=incident.public_id)
            work.execute(replays._answer_update(), {"trigger": trigger, "kept": {"text": answer}})
        ack(response_type="ephemeral", text=answer)
        self.jobs.submit(self.announce, incident)

    def announce(self, incident: Incident) -> None:
        ctx = self.ctx
        message = ctx.renderer.message("announcement", ctx.locale, **incidents._shown(ctx, incident, ()))
        posted = self.client.chat_postMessage(
            channel=incident.channel_id, text=message.text, blocks=message.blocks, unfurl_links=False,
            unfurl_media=False, metadata=incidents.announcement_metadata(incident.public_id))
        with ctx.db.statement() as connection:  # one statement, atomic by itself, as the app stores it
            connection.execute(_ANNOUNCED, {"incident": incident.id, "ts": posted["ts"], "now": ctx.clock.now()})

    def announced(self) -> int:
        with self.ctx.db.engine.connect() as connection:
            return announced_in(connection)

    def stop(self) -> None:
        self.jobs.shutdown(wait=True)


def announced_in(connection: Connection) -> int:
    """How many of the floor's incidents are stored with their announcement's ts."""
    return int(connection.scalar(select(func.count()).select_from(Incident).where(
        Incident.service == SERVICE, Incident.announcement_ts.is_not(None))) or 0)


def __getattr__(name: str) -> Any:
    """`app`, the WSGI callable gunicorn loads, built on first use: bench/open_floor.py imports FloorApp alone."""
    if name != "app":
        raise AttributeError(name)
    import app as incident_bot
    from bot.settings import load_settings
    from storage import migrate

    settings = load_settings()
    ctx = incident_bot.build_context(settings)
    migrate.upgrade(ctx.db.engine)  # serve has migrated it already; a no-op then
    floor = FloorApp(ctx, ctx.messenger.client, settings.slack_signing_secret)
    globals()["app"] = floor.wsgi
    incident_bot.tune_for_acks()
    return floor.wsgi
