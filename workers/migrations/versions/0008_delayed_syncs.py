"""delayed syncs: an active sync Codat says is still running, and when to ask Codat again

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delayed", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("codat_status", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("next_check_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("check_wait_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.drop_column("check_wait_seconds")
        batch_op.drop_column("next_check_at")
        batch_op.drop_column("codat_status")
        batch_op.drop_column("delayed")
