"""Slack-native surfaces: the canvas each report is written into, one per incident and language.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_canvases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("locale", sa.String(length=4), nullable=False),
        sa.Column("canvas_id", sa.String(length=40), nullable=True),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_unanswered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shared_ts", sa.String(length=32), nullable=True),
        sa.Column("share_attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "locale", name="uq_report_canvas_locale"),
    )


def downgrade() -> None:
    op.drop_table("report_canvases")
