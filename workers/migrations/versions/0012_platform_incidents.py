"""platform incidents: many connections of several companies failing on one platform at once

Revision ID: 0012
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platform_incidents",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("platform_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("platform_name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("data_types", sa.JSON(), nullable=False),
        sa.Column("opened_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("failures_since", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("closed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("affected_connections", sa.Integer(), nullable=False),
        sa.Column("failure_share", sa.Float(), nullable=False),
        sa.Column("refresh_state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("platform_incidents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_platform_incidents_platform_key"), ["platform_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_platform_incidents_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index("ix_platform_incidents_opened", ["opened_at", "id"], unique=False)
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.create_index("ix_syncs_completed", ["completed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("syncs", schema=None) as batch_op:
        batch_op.drop_index("ix_syncs_completed")
    with op.batch_alter_table("platform_incidents", schema=None) as batch_op:
        batch_op.drop_index("ix_platform_incidents_opened")
        batch_op.drop_index(batch_op.f("ix_platform_incidents_closed_at"))
        batch_op.drop_index(batch_op.f("ix_platform_incidents_platform_key"))
    op.drop_table("platform_incidents")
