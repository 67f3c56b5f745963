"""artifacts: uploaded files served at a capability URL

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pal.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("mime", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("room_id", sa.String(length=40), nullable=True),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("computer_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", pal.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", pal.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("removed_at", pal.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_artifacts_created_at_id"), ["created_at", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_artifacts_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifacts_expires_at"))
        batch_op.drop_index(batch_op.f("ix_artifacts_created_at_id"))

    op.drop_table("artifacts")
