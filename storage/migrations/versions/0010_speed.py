"""The reply path's lookup, incidents.find_home, as index probes: a thread's incident by (channel, announcement),
and a channel's own incident (channel mode) by a partial index, so a channel with many incidents costs no scan.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

HOME_CHANNEL = "mode = 'channel' AND channel_name IS NOT NULL"  # as storage.models.HOME_CHANNEL


def upgrade() -> None:
    op.create_index("ix_incident_home_thread", "incidents", ["channel_id", "announcement_ts"])
    op.create_index("ix_incident_home_channel", "incidents", ["channel_id"], sqlite_where=sa.text(HOME_CHANNEL),
                    postgresql_where=sa.text(HOME_CHANNEL))


def downgrade() -> None:
    op.drop_index("ix_incident_home_channel", table_name="incidents")
    op.drop_index("ix_incident_home_thread", table_name="incidents")
