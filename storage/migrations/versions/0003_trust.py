"""Trust: what the fault and abuse fixes need to remember (issue "Trust").

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # -- events: ack after store (items 1, 2, 11) --
    # -- commands: replayed requests and rate limits (items 6, 9) --
    # -- access: who may see an incident (items 7, 8) --
    # -- announcement: slow Slack (item 5) --
    pass


def downgrade() -> None:
    # -- announcement: slow Slack (item 5) --
    # -- access: who may see an incident (items 7, 8) --
    # -- commands: replayed requests and rate limits (items 6, 9) --
    # -- events: ack after store (items 1, 2, 11) --
    pass
