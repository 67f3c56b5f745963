"""Lark bots: lark_users, lark_events, lark_chats, lark_messages

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 05:11:21.284472
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pal.store.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lark_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("event_type", sa.String(length=128), nullable=True),
        sa.Column("message_id", sa.String(length=128), nullable=True),
        sa.Column("chat_id", sa.String(length=128), nullable=True),
        sa.Column("chat_type", sa.String(length=16), nullable=True),
        sa.Column("sender_id", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lark_events")),
    )
    with op.batch_alter_table("lark_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lark_events_app_id_id"), ["app_id", "id"], unique=False
        )

    op.create_table(
        "lark_users",
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("created_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_lark_users")),
    )
    op.create_table(
        "lark_chats",
        sa.Column("app_id", sa.String(length=100), nullable=False),
        sa.Column("chat_id", sa.String(length=128), nullable=False),
        sa.Column("room_id", sa.String(length=40), nullable=False),
        sa.Column("chat_type", sa.String(length=16), nullable=True),
        sa.Column("created_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name=op.f("fk_lark_chats_room_id_rooms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("app_id", "chat_id", name=op.f("pk_lark_chats")),
    )
    with op.batch_alter_table("lark_chats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lark_chats_room_id"), ["room_id"], unique=False)

    op.create_table(
        "lark_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=100), nullable=False),
        sa.Column("lark_message_id", sa.String(length=128), nullable=False),
        sa.Column("chat_id", sa.String(length=128), nullable=True),
        sa.Column(
            "pal_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("reaction_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", pal.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pal_message_id"],
            ["messages.id"],
            name=op.f("fk_lark_messages_pal_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lark_messages")),
        sa.UniqueConstraint(
            "app_id", "lark_message_id", name=op.f("uq_lark_messages_app_id_lark_message_id")
        ),
    )
    with op.batch_alter_table("lark_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lark_messages_pal_message_id"), ["pal_message_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("lark_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lark_messages_pal_message_id"))

    op.drop_table("lark_messages")
    with op.batch_alter_table("lark_chats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lark_chats_room_id"))

    op.drop_table("lark_chats")
    op.drop_table("lark_users")
    with op.batch_alter_table("lark_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lark_events_app_id_id"))

    op.drop_table("lark_events")
