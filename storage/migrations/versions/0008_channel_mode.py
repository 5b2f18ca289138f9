"""A channel per incident: the mode each incident was opened in, its own channel and the line linking to it.

Existing incidents get `mode` "thread", the mode they were opened in.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, never a batch copy: on SQLite that drops and recreates `incidents`, and with foreign keys on
# the drop cascades into every table that refers to it.
COLUMNS = ("mode", "origin_channel_id", "channel_name", "link_ts", "channel_topic", "channel_error")


def upgrade() -> None:
    op.add_column("incidents", sa.Column("mode", sa.String(length=8), nullable=False, server_default="thread"))
    op.add_column("incidents", sa.Column("origin_channel_id", sa.String(length=32), nullable=True))
    op.add_column("incidents", sa.Column("channel_name", sa.String(length=80), nullable=True))
    op.add_column("incidents", sa.Column("link_ts", sa.String(length=32), nullable=True))
    op.add_column("incidents", sa.Column("channel_topic", sa.String(length=250), nullable=True))
    op.add_column("incidents", sa.Column("channel_error", sa.Text(), nullable=True))


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("incidents", column)
