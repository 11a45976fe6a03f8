"""health: when a connection last became Linked, the health last announced, and the timeline of announced changes

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_linked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table("connection_freshness", schema=None) as batch_op:
        batch_op.add_column(sa.Column("health", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("health_changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_connection_freshness_health"), ["health"], unique=False)
    op.create_table(
        "connection_state_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("previous", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("current", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("connection_state_changes", schema=None) as batch_op:
        batch_op.create_index("ix_connection_state_changes_connection_at", ["connection_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("connection_state_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_connection_state_changes_connection_at")
    op.drop_table("connection_state_changes")
    with op.batch_alter_table("connection_freshness", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connection_freshness_health"))
        batch_op.drop_column("health_changed_at")
        batch_op.drop_column("health")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("last_linked_at")
