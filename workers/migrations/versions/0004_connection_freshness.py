"""connection_freshness: the freshness last announced per connection

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connection_freshness",
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("freshness", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("expected_by", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("overdue_data_types", sa.JSON(), nullable=False),
        sa.Column("changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id"),
    )
    with op.batch_alter_table("connection_freshness", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connection_freshness_company_id"), ["company_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_connection_freshness_freshness"), ["freshness"], unique=False)
        batch_op.create_index(batch_op.f("ix_connection_freshness_expected_by"), ["expected_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("connection_freshness", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connection_freshness_expected_by"))
        batch_op.drop_index(batch_op.f("ix_connection_freshness_freshness"))
        batch_op.drop_index(batch_op.f("ix_connection_freshness_company_id"))
    op.drop_table("connection_freshness")
