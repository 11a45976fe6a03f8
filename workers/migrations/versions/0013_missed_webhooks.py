"""missed webhooks: results reconciliation folded that no webhook reported, and targeted reconciliations

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "missed_webhooks",
        sa.Column("dataset_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("data_type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("completed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("found_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("source_type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id"),
    )
    with op.batch_alter_table("missed_webhooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_missed_webhooks_company_id"), ["company_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_missed_webhooks_connection_id"), ["connection_id"], unique=False)
        batch_op.create_index("ix_missed_webhooks_found", ["found_at", "dataset_id"], unique=False)
    op.create_table(
        "reconcile_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("requested_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reconcile_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reconcile_requests_company_id"), ["company_id"], unique=False)
    op.create_table(
        "overdue_reconciles",
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("reconciled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("company_id"),
    )


def downgrade() -> None:
    op.drop_table("overdue_reconciles")
    with op.batch_alter_table("reconcile_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconcile_requests_company_id"))
    op.drop_table("reconcile_requests")
    with op.batch_alter_table("missed_webhooks", schema=None) as batch_op:
        batch_op.drop_index("ix_missed_webhooks_found")
        batch_op.drop_index(batch_op.f("ix_missed_webhooks_connection_id"))
        batch_op.drop_index(batch_op.f("ix_missed_webhooks_company_id"))
    op.drop_table("missed_webhooks")
