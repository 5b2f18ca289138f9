"""A channel per incident (INCIDENT_CHANNEL_MODE=channel): making it once, filling it, keeping it current.

An incident opened in channel mode (`Incident.mode`) gets its own channel when its announcement is posted, under the
announcement's lease (bot/incidents.post_announcement): of the first attempt, its retries and the sweep, one at a time
works on it, and each step is stored as soon as it is known.
- `conversations.create` with the name `inc-YYYYMMDD-NNN-<slug>`. Slack's answer may be lost after it made the channel,
  so a `name_taken` is checked first: a channel of that name that the bot created since the incident opened is that
  earlier attempt's, and is kept. Any other holder of the name means a suffix (-2, -3, …). The channel is stored
  (`channel_id` becomes it, `origin_channel_id` keeps where the incident was declared) before anything else.
- The opener and every role holder are invited (each later holder when assigned), one call per person, so one who
  can't be invited never stops the others; those who couldn't be are listed in the channel.
- The topic says the status and severity; the announcement goes there; one line in the channel where the incident
  was declared links to it. Topic and line follow every change of the announcement (`refresh_surfaces`).

Decided here:
- A bot that may not create channels (`missing_scope`, `restricted_action`), or a name Slack refuses, and the incident
  falls back to thread mode where it was declared, with the reason stored and told to the opener (ephemeral).
- Everything the bot posts about the incident goes top-level in its channel (`Incident.home_thread_ts`): the
  channel is the home, so reminders, evidence, rollbacks, notices and the report need no thread.
- The window that remains: a channel made by an attempt whose answer was lost, and then renamed or archived before
  the retry looks for it, is not recognised, and the retry makes a second one with a suffix.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.context import Context
from bot.jobs import after_commit
from bot.ports import ChannelRef, MessengerError
from bot.render import clip_slack
from storage.models import Incident, RoleAssignment

log = logging.getLogger(__name__)

CHANNEL = "channel"
THREAD = "thread"
NAME_MAX = 80  # Slack's limit on a channel name
NAME_TRIES = 10  # names tried (the plain one, then -2 … -10) before giving up on a channel
TOPIC_MAX = 250
LINK_EVENT = "incident_channel_link"  # the message metadata that marks the line linking to an incident's channel
# A channel created this long before the incident opened can't be one of its attempts (clocks differ a little).
CREATED_SKEW = timedelta(minutes=2)
# Answers that mean "not now" rather than "never": the announcement's retry sweep tries again.
TRANSIENT = frozenset({"ratelimited", "timeout", "connection_error", "internal_error", "fatal_error",
                       "request_timeout", "service_unavailable", "history_too_long"})
# Answers that mean the channel is no longer the bot's to change: nothing left to keep current.
GONE = frozenset({"is_archived", "channel_not_found", "not_in_channel"})
_PERSON = re.compile(r"[UW][A-Z0-9]{2,}")


# ---- the name ---------------------------------------------------------------------------------------------------


def slug(title: str, room: int) -> str:
    """The title as Slack allows in a channel name, at most `room` characters: lowercase ASCII letters and digits,
    `-` and `_`, words joined by single hyphens, none at either end. Letters with accents lose them; anything
    without an ASCII form (Hangul) is dropped, so a title with none gives ""."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    words = re.sub(r"[^a-z0-9_]+", "-", ascii_title)
    words = re.sub(r"-{2,}", "-", words).strip("-_")
    return words[:max(room, 0)].rstrip("-_")


def channel_name(day: str, seq: int, title: str, attempt: int = 1) -> str:
    """`inc-YYYYMMDD-NNN-<slug>`, with `-<attempt>` after the first, never longer than NAME_MAX."""
    base = f"inc-{day}-{seq:03d}"
    suffix = f"-{attempt}" if attempt > 1 else ""
    words = slug(title, NAME_MAX - len(base) - len(suffix) - 1)
    return f"{base}-{words}{suffix}" if words else base + suffix


# ---- making it, under the announcement's lease ---------------------------------------------------------------


def is_channel_mode(incident: Incident) -> bool:
    """Opened in channel mode and its channel made: the incident's channel is its home."""
    return incident.mode == CHANNEL and incident.channel_name is not None


def home_channel(incident: Incident) -> str | None:
    """The incident's own channel when it lives in one, for answers that say where things went; None: its thread."""
    return incident.channel_id if is_channel_mode(incident) else None


def prepare(ctx: Context, incident_id: int) -> list[tuple[str, str]]:
    """Before the announcement is posted: the incident's channel (made once, or adopted), its members and topic.
    Returns who could not be invited, with Slack's reason. Raises MessengerError when Slack's answer may still
    change (the announcement's sweep tries again); a definite refusal falls back to thread mode instead."""
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        if incident.mode != CHANNEL:
            return []
        made = incident.channel_name is not None
        day, seq, title, opened_at = incident.day, incident.seq, incident.title, incident.opened_at
    if not made:
        try:
            channel = _make(ctx, day, seq, title, since=opened_at.timestamp())
        except MessengerError as error:
            if error.outcome_unknown or error.kind in TRANSIENT:
                raise
            fall_back(ctx, incident_id, error.kind)
            return []
        with ctx.db.session() as session:
            session.execute(update(Incident).where(Incident.id == incident_id, Incident.channel_name.is_(None))
                            .values(channel_id=channel.id, channel_name=channel.name))
        log.info("incident channel made", extra={"json_fields": {"incident_db_id": incident_id,
                                                                  "channel": channel.id}})
    failed = invite(ctx, incident_id)
    try:
        sync_topic(ctx, incident_id)
    except MessengerError as error:
        # Left unset, so the next refresh of the announcement sets it.
        log.warning("incident channel topic not set: %s", error.kind)
    return failed


def _make(ctx: Context, day: str, seq: int, title: str, *, since: float) -> ChannelRef:
    private = ctx.settings.channel_private
    for attempt in range(1, NAME_TRIES + 1):
        name = channel_name(day, seq, title, attempt)
        try:
            return ctx.messenger.create_channel(name, private=private)
        except MessengerError as error:
            if error.kind != "name_taken":
                raise
        found = ctx.messenger.find_channel(name)
        if (found is not None and found.creator == ctx.messenger.bot_user_id
                and found.created >= since - CREATED_SKEW.total_seconds()):
            log.warning("incident channel %s was made by an earlier attempt; keeping it", name)
            return found
    raise MessengerError("name_taken", f"{NAME_TRIES} names tried")


def fall_back(ctx: Context, incident_id: int, reason: str) -> None:
    """The incident lives in the announcement's thread where it was declared, and the opener is told why."""
    with ctx.db.session() as session:
        session.execute(update(Incident).where(Incident.id == incident_id, Incident.channel_name.is_(None))
                        .values(mode=THREAD, channel_error=reason))
        incident = session.get_one(Incident, incident_id)
        channel, opener, public_id = incident.channel_id, incident.opened_by, incident.public_id
    log.warning("no channel for the incident (%s); it runs in a thread", reason,
                extra={"json_fields": {"incident_id": public_id}})
    if not _PERSON.fullmatch(opener):
        return  # opened by an alert on its own: nobody to tell
    text = ctx.say("channels.fallback", public_id=public_id, reason=reason, private=ctx.settings.channel_private)
    try:
        ctx.messenger.post_ephemeral(channel, opener, text)
    except MessengerError as error:
        log.warning("could not tell the opener why there is no channel: %s", error.kind)


# ---- members ----------------------------------------------------------------------------------------------------


def invite(ctx: Context, incident_id: int, users: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """Invites `users` (by default the opener and every role holder), one by one; returns (user, reason) for
    each who could not be. Nothing to do before the channel is made: making it invites the role holders."""
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        if not is_channel_mode(incident):
            return []
        channel = incident.channel_id
        if users is None:
            holders = session.scalars(select(RoleAssignment.user_id).where(RoleAssignment.incident_id == incident_id))
            users = [incident.opened_by, *holders]
        wanted = list(dict.fromkeys(u for u in users if _PERSON.fullmatch(u)))
    me = ctx.messenger.bot_user_id
    failed: list[tuple[str, str]] = []
    for user in wanted:
        if user == me:
            continue
        try:
            ctx.messenger.invite(channel, user)
        except MessengerError as error:
            log.warning("could not invite a person to the incident channel: %s", error.kind,
                        extra={"json_fields": {"incident_db_id": incident_id, "user": user}})
            failed.append((user, error.kind))
    return failed


def report_failed_invites(ctx: Context, incident_id: int, failed: list[tuple[str, str]]) -> None:
    """Lists in the channel whoever could not be invited, so someone there can add them by hand."""
    if not failed:
        return
    with ctx.db.read() as session:
        channel = session.get_one(Incident, incident_id).channel_id
    try:
        ctx.messenger.post_message(channel, ctx.say("channels.invite_failed", failed=failed))
    except MessengerError as error:
        log.warning("could not list the people not invited: %s", error.kind)


def on_role_assigned(ctx: Context, session: Session, incident: Incident, user_id: str) -> None:
    if incident.mode != CHANNEL:
        return
    incident_id = incident.id
    after_commit(session, lambda: ctx.jobs.submit(_invite_holder, ctx, incident_id, user_id))


def _invite_holder(ctx: Context, incident_id: int, user_id: str) -> None:
    try:
        failed = invite(ctx, incident_id, [user_id])
    except MessengerError as error:
        failed = [(user_id, error.kind)]
    report_failed_invites(ctx, incident_id, failed)


# ---- topic and link line --------------------------------------------------------------------------------------


def topic(ctx: Context, incident: Incident) -> str:
    return clip_slack(ctx.say("channels.topic", incident=incident), TOPIC_MAX)


def sync_topic(ctx: Context, incident_id: int) -> None:
    """Sets the topic when it says something new. Raises MessengerError (the caller's retry)."""
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        if not is_channel_mode(incident):
            return
        text = topic(ctx, incident)
        if text == incident.channel_topic:
            return
        channel = incident.channel_id
    try:
        ctx.messenger.set_topic(channel, text)
    except MessengerError as error:
        if error.kind not in GONE:
            raise
        log.info("incident channel topic left as it is: %s", error.kind)
    with ctx.db.session() as session:
        session.execute(update(Incident).where(Incident.id == incident_id).values(channel_topic=text))


def link_text(ctx: Context, incident: Incident) -> str:
    return ctx.say("channels.link", incident=incident, private=ctx.settings.channel_private)


def link_metadata(public_id: str) -> dict[str, Any]:
    return {"event_type": LINK_EVENT, "event_payload": {"incident_id": public_id}}


def post_link(ctx: Context, incident_id: int, *, look_first: bool) -> str | None:
    """The one line in the channel where the incident was declared; its ts, or None when there is none (logged).
    Under the announcement's lease; `look_first` when an earlier attempt may have posted it already."""
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        if not is_channel_mode(incident) or incident.origin_channel_id is None:
            return None
        if incident.link_ts is not None:
            return incident.link_ts
        origin, text = incident.origin_channel_id, link_text(ctx, incident)
        metadata, since = link_metadata(incident.public_id), incident.opened_at.timestamp()
    try:
        found = ctx.messenger.find_posted(origin, metadata, since=since) if look_first else None
        return found or ctx.messenger.post_message(origin, text, metadata=metadata)
    except MessengerError as error:
        log.warning("the line linking to the incident channel was not posted: %s", error.kind,
                    extra={"json_fields": {"incident_db_id": incident_id}})
        with ctx.db.session() as session:
            session.execute(update(Incident).where(Incident.id == incident_id)
                            .values(channel_error=f"link: {error.kind}"))
        return None


def refresh_surfaces(ctx: Context, incident_id: int) -> None:
    """After a change: the topic and the link line say the status and severity now. Raises MessengerError, which
    the announcement's refresh keeps for the sweep."""
    sync_topic(ctx, incident_id)
    with ctx.db.read() as session:
        incident = session.get_one(Incident, incident_id)
        if incident.link_ts is None or incident.origin_channel_id is None:
            return
        origin, ts, text = incident.origin_channel_id, incident.link_ts, link_text(ctx, incident)
    ctx.messenger.update_message(origin, ts, text)


def install(ctx: Context) -> None:
    ctx.hooks.on_role_assigned.register(on_role_assigned)
