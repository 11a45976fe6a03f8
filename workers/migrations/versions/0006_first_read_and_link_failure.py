"""connections: when the first read finished, and why the latest link attempt failed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("initial_read_completed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_link_failure_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_link_failure", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("last_link_failure_stamp", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("last_link_failure_stamp")
        batch_op.drop_column("last_link_failure")
        batch_op.drop_column("last_link_failure_at")
        batch_op.drop_column("initial_read_completed_at")
