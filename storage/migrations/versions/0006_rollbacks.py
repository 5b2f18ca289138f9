"""Rollbacks: Cloud Run traffic rollbacks proposed, confirmed and carried out from Slack.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollbacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=100), nullable=False),
        sa.Column("target_revision", sa.String(length=100), nullable=False),
        sa.Column("etag", sa.String(length=255), nullable=False),
        sa.Column("traffic_before", sa.JSON(), nullable=False),
        sa.Column("proposed_by", sa.String(length=32), nullable=True),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_channel", sa.String(length=32), nullable=True),
        sa.Column("message_ts", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("confirmed_by", sa.String(length=32), nullable=True),
        sa.Column("confirmed_by_name", sa.String(length=255), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operation_name", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("traffic_after", sa.JSON(), nullable=True),
        sa.Column("verify_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verify_claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollback_incident", "rollbacks", ["incident_id", "proposed_at"], unique=False)
    op.create_index("ix_rollback_verify_due", "rollbacks", ["verified_at", "verify_due_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rollback_verify_due", table_name="rollbacks")
    op.drop_index("ix_rollback_incident", table_name="rollbacks")
    op.drop_table("rollbacks")
