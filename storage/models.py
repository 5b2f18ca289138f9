"""Typed SQLAlchemy 2.x models. Every instant is stored as timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Always hands back aware UTC datetimes, including on SQLite, which keeps no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; store aware UTC instants only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    """The time a row is written: its created_at, and its updated_at when it changes."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class IncidentSequence(Base):
    """Per-day counter behind `INCIDENT-YYYYMMDD-NNN`; incremented with one atomic upsert."""

    __tablename__ = "incident_sequences"
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, nullable=False)


# The rows whose channel is the incident's own (channel mode), as find_home asks for them.
HOME_CHANNEL = "mode = 'channel' AND channel_name IS NOT NULL"


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("day", "seq", name="uq_incident_day_seq"),
        # incidents.find_home, the reply path's lookup: one index probe per kind of home, however many incidents
        # the channel has had (bot/homes.py caches what it finds).
        Index("ix_incident_home_thread", "channel_id", "announcement_ts"),
        Index("ix_incident_home_channel", "channel_id", sqlite_where=text(HOME_CHANNEL),
              postgresql_where=text(HOME_CHANNEL)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    day: Mapped[str] = mapped_column(String(8), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="investigating")
    service: Mapped[str | None] = mapped_column(String(200))
    channel_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    announcement_ts: Mapped[str | None] = mapped_column(String(32))
    opened_by: Mapped[str] = mapped_column(String(32), nullable=False)
    opened_at: Mapped[datetime] = mapped_column(nullable=False)
    meeting_at: Mapped[datetime] = mapped_column(nullable=False)
    # Milestones: the moments the post-mortem measures (never inferred from updated_at).
    deployed_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    detected_at: Mapped[datetime | None]
    rollback_at: Mapped[datetime | None]
    recovered_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    root_cause: Mapped[str | None] = mapped_column(Text)
    conclusion: Mapped[str | None] = mapped_column(Text)
    checklist_ts: Mapped[str | None] = mapped_column(String(32))
    announcement_error: Mapped[str | None] = mapped_column(Text)
    # Lease on posting the announcement, so the retry sweep and the first attempt never both post it.
    announce_claimed_until: Mapped[datetime | None]
    # A channel per incident (bot/channels.py): `mode` is fixed at open ("thread" or "channel"; back to "thread"
    # when the channel can't be made, with the reason in `channel_error`). In channel mode `channel_id` becomes
    # the incident's own channel once `channel_name` is set; `origin_channel_id` is where it was declared, which
    # holds the one line (`link_ts`) that links to it. `channel_topic` is the topic last set, not to set it twice.
    mode: Mapped[str] = mapped_column(String(8), nullable=False, default="thread", server_default="thread")
    origin_channel_id: Mapped[str | None] = mapped_column(String(32))
    channel_name: Mapped[str | None] = mapped_column(String(80))
    link_ts: Mapped[str | None] = mapped_column(String(32))
    channel_topic: Mapped[str | None] = mapped_column(String(250))
    channel_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now, onupdate=utc_now)

    events: Mapped[list[TimelineEvent]] = relationship(back_populates="incident", lazy="raise")

    @property
    def thread_ts(self) -> str | None:
        return self.announcement_ts

    @property
    def is_open(self) -> bool:
        return self.status not in ("resolved", "cancelled")

    @property
    def home_thread_ts(self) -> str | None:
        """Where the incident's posts go in `channel_id`: the announcement's thread, or top-level in its own
        channel (channel mode). Callers still check `announcement_ts` to know the incident is announced."""
        return None if self.mode == "channel" else self.announcement_ts


class TimelineEvent(Base):
    __tablename__ = "timeline_events"
    # One event per Slack message per incident: Slack retries and double pins hit this, not an in-memory set.
    __table_args__ = (
        UniqueConstraint("incident_id", "slack_channel", "slack_ts", name="uq_event_message"),
        Index("ix_event_incident_time", "incident_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # message | system | pin | milestone
    occurred_at: Mapped[datetime] = mapped_column(nullable=False)
    author_id: Mapped[str | None] = mapped_column(String(32))
    author_name: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    slack_channel: Mapped[str | None] = mapped_column(String(32))
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    highlighted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    data: Mapped[dict[str, Any] | None]
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)

    incident: Mapped[Incident] = relationship(back_populates="events", lazy="raise")


class EventPin(Base):
    """Who pinned a message, so only the last 📌 removed takes it off the timeline."""

    __tablename__ = "event_pins"
    __table_args__ = (UniqueConstraint("event_id", "user_id", name="uq_pin_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("timeline_events.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"
    __table_args__ = (UniqueConstraint("incident_id", "role", name="uq_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    role: Mapped[str] = mapped_column(String(32), nullable=False)
    user_id: Mapped[str] = mapped_column(String(32), nullable=False)
    assigned_by: Mapped[str | None] = mapped_column(String(32))
    assigned_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)


class Reminder(Base):
    """A scheduled post. Delivery claims the row atomically, so restarts and replicas never double it."""

    __tablename__ = "reminders"
    __table_args__ = (
        UniqueConstraint("incident_id", "kind", "action_item_id", name="uq_reminder_kind"),
        Index("ix_reminder_due", "sent_at", "cancelled_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    action_item_id: Mapped[int | None] = mapped_column(ForeignKey("action_items.id", ondelete="CASCADE"))
    due_at: Mapped[datetime] = mapped_column(nullable=False)
    sent_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    late: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)


class Why(Base):
    __tablename__ = "whys"
    __table_args__ = (UniqueConstraint("incident_id", "position", name="uq_why_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    author_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now, onupdate=utc_now)


class ActionItem(Base):
    __tablename__ = "action_items"
    __table_args__ = (Index("ix_action_incident", "incident_id", "priority"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    priority: Mapped[str] = mapped_column(String(2), nullable=False)
    task: Mapped[str] = mapped_column(Text, nullable=False)
    owner_id: Mapped[str | None] = mapped_column(String(32))
    due_at: Mapped[datetime | None]
    impact: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")  # open | in_progress | done
    created_by: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    # The lease on posting its message (storage.sql.claim_lease): the posting job and the sweeps post it once.
    post_claimed_until: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now, onupdate=utc_now)


class Note(Base):
    """Lessons learned and recurrence-prevention items, in the order they were given."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_note_incident", "incident_id", "kind", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # lesson | prevent
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    author_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)


class ImpactValue(Base):
    """The guide's 임팩트 numbers; `source` says whether evidence measured it or a person typed it."""

    __tablename__ = "impact_values"
    __table_args__ = (UniqueConstraint("incident_id", "field", name="uq_impact_field"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    field: Mapped[str] = mapped_column(String(32), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # manual | measured
    updated_by: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now, onupdate=utc_now)


class ChecklistItem(Base):
    __tablename__ = "checklist_items"
    __table_args__ = (UniqueConstraint("incident_id", "key", name="uq_checklist_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    checked: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    checked_by: Mapped[str | None] = mapped_column(String(32))
    checked_at: Mapped[datetime | None]


class Evidence(Base):
    """One captured piece of cloud evidence (or the record of why it could not be captured)."""

    __tablename__ = "evidence"
    __table_args__ = (Index("ix_evidence_incident", "incident_id", "captured_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    run_id: Mapped[str] = mapped_column(String(40), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # errors | metrics | config | verify
    captured_at: Mapped[datetime] = mapped_column(nullable=False)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_detail: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    locale: Mapped[str] = mapped_column(String(4), nullable=False)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    requested_by: Mapped[str | None] = mapped_column(String(32))
    requested_at: Mapped[datetime] = mapped_column(nullable=False)
    posted_at: Mapped[datetime | None]
    file_id: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)


class MessageReaction(Base):
    """A person's latest 📌 or milestone emoji on a message, stored before the event is acked; the work it
    needs (fetching the message, names, milestones) runs afterwards. The later `event_ts` wins, so an add and
    a remove apply in the order they were made whatever order the work finishes in."""

    __tablename__ = "message_reactions"
    __table_args__ = (
        UniqueConstraint("channel", "message_ts", "user_id", "emoji", name="uq_reaction_user_emoji"),
        Index("ix_reaction_pending", "applied", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    message_ts: Mapped[str] = mapped_column(String(32), nullable=False)
    user_id: Mapped[str] = mapped_column(String(32), nullable=False)
    emoji: Mapped[str] = mapped_column(String(100), nullable=False)
    added: Mapped[bool] = mapped_column(Boolean, nullable=False)
    event_ts: Mapped[str] = mapped_column(String(32), nullable=False)
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)


class SeenRequest(Base):
    """A slash command or interaction by its trigger_id, kept while a replay of its signed body is still valid:
    the insert that wins the unique constraint runs the request, and a replay gets the answer stored here."""

    __tablename__ = "seen_requests"
    __table_args__ = (UniqueConstraint("trigger_id", name="uq_seen_request_trigger"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # command | block_actions | view_submission | …
    user_id: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(nullable=False)
    # The HTTP answer of the first delivery; None while it still runs.
    answer: Mapped[dict[str, Any] | None]


class RateHit(Base):
    """One request counted against a rate limit: `source` names the budget (open, post; alerts get their own),
    `key` whom or where it limits (`user:U…`, `channel:C…`)."""

    __tablename__ = "rate_hits"
    __table_args__ = (Index("ix_rate_hits_source_key_at", "source", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    key: Mapped[str] = mapped_column(String(80), nullable=False)
    at: Mapped[datetime] = mapped_column(nullable=False)


class ChannelVisibility(Base):
    """Whether a channel is private, as Slack's conversations.info said at `checked_at`. `/incident list` shows
    a public channel's incidents to everyone; those of any other channel, or of one not checked, only to members."""

    __tablename__ = "channel_visibility"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    is_private: Mapped[bool] = mapped_column(nullable=False)
    checked_at: Mapped[datetime] = mapped_column(nullable=False)


class Alert(Base):
    """One Cloud Monitoring notification: an alert (Cloud Monitoring calls it an incident) opening or closing.
    Unique per alert and state, so a redelivery stores nothing new. The Slack side is done after the answer:
    `posted_at` is set once nothing is left to post, and `revision` runs ahead of `shown_revision` while the
    posted message has to be redrawn (declared, dismissed, closed, recovery recorded)."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("monitoring_incident_id", "state", name="uq_alert_state"),
        Index("ix_alert_pending", "posted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    monitoring_incident_id: Mapped[str] = mapped_column(String(255), nullable=False)
    state: Mapped[str] = mapped_column(String(8), nullable=False)  # open | closed
    policy_name: Mapped[str] = mapped_column(Text, nullable=False)
    condition_name: Mapped[str] = mapped_column(Text, nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    url: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(32))
    resource_type: Mapped[str | None] = mapped_column(String(100))
    resource_name: Mapped[str | None] = mapped_column(String(200))
    service: Mapped[str | None] = mapped_column(String(100))  # a Cloud Run service, only for cloud_run_revision
    revision_name: Mapped[str | None] = mapped_column(String(100))
    location: Mapped[str | None] = mapped_column(String(100))
    metric: Mapped[str | None] = mapped_column(String(200))
    observed_value: Mapped[str | None] = mapped_column(String(64))
    threshold_value: Mapped[str | None] = mapped_column(String(64))
    auto_open: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # the policy's label asks
    started_at: Mapped[datetime] = mapped_column(nullable=False)
    ended_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(nullable=False)
    # The incident it was declared as, or the open one of its service whose thread it went into.
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    declared_by: Mapped[str | None] = mapped_column(String(32))
    declared_at: Mapped[datetime | None]
    dismissed_by: Mapped[str | None] = mapped_column(String(32))
    dismissed_at: Mapped[datetime | None]
    recovery_recorded_by: Mapped[str | None] = mapped_column(String(32))
    message_channel: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    posted_at: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    shown_revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Lease on the Slack work for this row, so the job after the answer and the sweep never both post it.
    claimed_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class Rollback(Base):
    """One proposed Cloud Run rollback (traffic 100 % on `target_revision`) and what became of it.

    `status` moves proposed → requested (confirmed) → running (Cloud Run accepted the update) → done | failed; a
    proposal whose service changed meanwhile becomes stale, one replaced by a newer proposal superseded. The
    confirmation claims `claimed_until` with one conditional UPDATE, so of two clicks exactly one updates Cloud Run;
    the worker holds that lease while it waits. The verification after a finished rollback is due at
    `verify_due_at` and claimed through `verify_claimed_until`, so it runs once, after a restart too."""

    __tablename__ = "rollbacks"
    __table_args__ = (
        Index("ix_rollback_incident", "incident_id", "proposed_at"),
        Index("ix_rollback_verify_due", "verified_at", "verify_due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    service: Mapped[str] = mapped_column(String(100), nullable=False)
    target_revision: Mapped[str] = mapped_column(String(100), nullable=False)
    etag: Mapped[str] = mapped_column(String(255), nullable=False)  # of the service as the proposal showed it
    traffic_before: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    proposed_by: Mapped[str | None] = mapped_column(String(32))
    proposed_at: Mapped[datetime] = mapped_column(nullable=False)
    message_channel: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="proposed")
    confirmed_by: Mapped[str | None] = mapped_column(String(32))
    confirmed_by_name: Mapped[str | None] = mapped_column(String(255))
    confirmed_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    operation_name: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_detail: Mapped[str | None] = mapped_column(Text)
    traffic_after: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # the split found when refused as stale
    verify_due_at: Mapped[datetime | None]
    verify_claimed_until: Mapped[datetime | None]
    verified_at: Mapped[datetime | None]


class ReportCanvas(Base):
    """The Slack canvas a report is written into: one per incident and language, like the .md file, so a
    `report en` in a Korean workspace is a canvas of its own. Every report rewrites it (canvases.edit).

    `claimed_until` is the writers' lease (storage.sql.claim_lease): canvases.create has no idempotency key, so of
    two reports at once only the holder creates. Each report counts itself in `requested`; one that finds the
    lease held leaves its request to the holder, who writes again before it lets go while `written` (the count
    the canvas content is as new as) is behind."""

    __tablename__ = "report_canvases"
    __table_args__ = (UniqueConstraint("incident_id", "locale", name="uq_report_canvas_locale"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    locale: Mapped[str] = mapped_column(String(4), nullable=False)
    canvas_id: Mapped[str | None] = mapped_column(String(40))
    requested: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    written: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    claimed_until: Mapped[datetime | None]
    # A create that got no answer: Slack may hold an orphan canvas since then (no request finds it again).
    create_unanswered_at: Mapped[datetime | None]
    # The thread message with its link, once channel members may read it.
    shared_ts: Mapped[str | None] = mapped_column(String(32))
    share_attempted_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class GithubIssue(Base):
    """The GitHub issue an action item is kept in (bot/github_sync.py): one row per item, made with the item.

    `number` is None until GitHub's answer is stored. `create_attempted_at` is set, and committed, before each
    creation is sent, so any later attempt searches for the item's marker first and an answer lost after GitHub
    made the issue never makes a second one. `state`, `title` and `remote_updated_at` are the issue as GitHub last
    showed it; the item's status wants `closed` when done and `open` otherwise, and a difference is pushed.
    `claimed_until` is the lease on the row's GitHub work, `next_attempt_at` the backoff (or the rate limit's reset)
    before it is tried again. `failure` names a refusal a person must fix (bad_credentials, repo_not_found),
    reported once to whoever added the item (`reported_at`). `shown` is whether the item's Slack message shows the
    link."""

    __tablename__ = "github_issues"
    __table_args__ = (
        UniqueConstraint("action_item_id", name="uq_github_issue_item"),
        Index("ix_github_issue_number", "repo", "number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    action_item_id: Mapped[int] = mapped_column(ForeignKey("action_items.id", ondelete="CASCADE"), nullable=False)
    repo: Mapped[str] = mapped_column(String(140), nullable=False)
    number: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str | None] = mapped_column(String(8))  # open | closed, as GitHub last showed it
    title: Mapped[str | None] = mapped_column(Text)
    remote_updated_at: Mapped[datetime | None]
    assignee: Mapped[str | None] = mapped_column(String(39))
    create_attempted_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(String(32))
    reported_at: Mapped[datetime | None]
    shown: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utc_now)


class GithubLogin(Base):
    """A Slack user's GitHub login (`/incident github @user login`), the assignee of their action items' issues."""

    __tablename__ = "github_logins"

    slack_user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    login: Mapped[str] = mapped_column(String(39), nullable=False)
    set_by: Mapped[str | None] = mapped_column(String(32))
    set_at: Mapped[datetime] = mapped_column(nullable=False)


class GithubDelivery(Base):
    """A webhook delivery by its X-GitHub-Delivery GUID, stored with what it changed: a redelivery changes nothing."""

    __tablename__ = "github_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    received_at: Mapped[datetime] = mapped_column(nullable=False)


class GithubRepoSync(Base):
    """Per repository: when the sweep last read the issues changed since (`reconciled_at`), and its lease, so one
    replica reads them every few minutes."""

    __tablename__ = "github_repo_sync"

    repo: Mapped[str] = mapped_column(String(140), primary_key=True)
    reconciled_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
