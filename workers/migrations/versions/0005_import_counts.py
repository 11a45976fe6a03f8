"""per-company counts of an import: connections listed, syncs folded

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("import_companies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("connections", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("syncs", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("import_companies", schema=None) as batch_op:
        batch_op.drop_column("syncs")
        batch_op.drop_column("connections")
