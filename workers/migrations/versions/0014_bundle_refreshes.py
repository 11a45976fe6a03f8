"""bundle refreshes: each refresh of a company's bundle and whether bundle.ready followed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_refreshes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("company_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("bundle", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("data_types", sa.JSON(), nullable=False),
        sa.Column("requested_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("ready_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("as_of", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bundle_refreshes", schema=None) as batch_op:
        batch_op.create_index("ix_bundle_refreshes_company_status", ["company_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bundle_refreshes", schema=None) as batch_op:
        batch_op.drop_index("ix_bundle_refreshes_company_status")
    op.drop_table("bundle_refreshes")
