"""debates, and what periodic digests need (memberships.last_digest_at, deliveries.digest_after)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 04:56:07.139048
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pal.store.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "debates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("room_id", sa.String(length=40), nullable=False),
        sa.Column(
            "root_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("a", sa.String(length=40), nullable=False),
        sa.Column("b", sa.String(length=40), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("turn", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_speaker", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=True),
        sa.Column("created_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", pal.store.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name=op.f("fk_debates_room_id_rooms"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["root_message_id"],
            ["messages.id"],
            name=op.f("fk_debates_root_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_debates")),
    )
    with op.batch_alter_table("debates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_debates_room_id_status"), ["room_id", "status"], unique=False
        )

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "digest_after", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )

    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_digest_at", pal.store.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(batch_op.f("ix_memberships_mode"), ["mode"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memberships_mode"))
        batch_op.drop_column("last_digest_at")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("digest_after")

    with op.batch_alter_table("debates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_debates_room_id_status"))

    op.drop_table("debates")
