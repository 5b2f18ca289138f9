"""Scheduler: drop APScheduler's job table; reminder timers now live in memory, rebuilt from `reminders`.

Earlier versions let APScheduler's SQLAlchemyJobStore create `scheduler_jobs` outside Alembic. Its rows only
repeated what `reminders` holds, so dropping them loses nothing. The downgrade recreates nothing: the code of
revision 0003 creates the table itself when its scheduler starts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_JOB_TABLE = "scheduler_jobs"


def upgrade() -> None:
    # Only databases that ran the scheduler have it; a fresh one never did.
    if sa.inspect(op.get_bind()).has_table(OLD_JOB_TABLE):
        op.drop_table(OLD_JOB_TABLE)


def downgrade() -> None:
    pass
