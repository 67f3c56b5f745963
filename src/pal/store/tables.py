"""Table metadata (SQLAlchemy Core). Alembic migrations own the schema; a test checks that
upgrading a fresh database to head matches this metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to UTCDateTime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # On SQLite, skip the generic DATETIME string formatting and regex parsing (a measurable
    # share of a message post): the C-implemented isoformat/fromisoformat write and read the
    # same "YYYY-MM-DD HH:MM:SS.ffffff" text SQLAlchemy uses, so stored values sort the same.

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            return None if value is None else sqlite_timestamp(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


def sqlite_timestamp(value: datetime) -> str:
    """How SQLite stores a timestamp: naive UTC text that sorts in time order."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given for a UTC timestamp")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", timespec="microseconds")


def utcnow() -> datetime:
    return datetime.now(UTC)


# Integer ids that are 64-bit on PostgreSQL and ROWID aliases on SQLite.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(80), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="room"),
    sa.Column("settings", sa.JSON, nullable=False),
    # Consecutive agent-authored messages since the last human one (the loop guard).
    sa.Column("agent_hops", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

topics = sa.Table(
    "topics",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "room_id", sa.String(40), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(80), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "room_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "room_id", sa.String(40), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("topic_id", BigId, sa.ForeignKey("topics.id", ondelete="SET NULL"), nullable=True),
    sa.Column("parent_id", BigId, sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True),
    sa.Column("sender", sa.String(80), nullable=False),
    sa.Column("sender_kind", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("mentions", sa.JSON, nullable=False),
    sa.Column("source", sa.String(32), nullable=True),
    sa.Column("client_msg_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "room_id", "id"),
    sa.Index(None, "parent_id"),
    sa.UniqueConstraint("sender", "client_msg_id"),
)

computers = sa.Table(
    "computers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=True, unique=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="offline"),
    sa.Column("last_seen_at", UTCDateTime, nullable=True),
    sa.Column("platform", sa.String(64), nullable=True),
    sa.Column("version", sa.String(32), nullable=True),
    sa.Column("runtimes", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # When a daemon last connected (``POST /api/computers/connect``).
    sa.Column("connected_at", UTCDateTime, nullable=True),
    # Set when the key is revoked (``key_hash`` is then NULL): no daemon can connect.
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("display_name", sa.String(120), nullable=False),
    sa.Column("runtime", sa.String(32), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column(
        "computer_id",
        sa.String(40),
        sa.ForeignKey("computers.id", ondelete="SET NULL"),
        nullable=True,
    ),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "computer_id"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column(
        "room_id",
        sa.String(40),
        sa.ForeignKey("rooms.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("member", sa.String(80), primary_key=True),
    sa.Column("member_kind", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    # Last message id covered by a periodic digest.
    sa.Column("cursor", BigId, nullable=False, server_default="0"),
    # When its current digest period began: its last digest, or becoming periodic.
    sa.Column("last_digest_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "member"),
    sa.Index(None, "mode"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    # Not a foreign key: finished deliveries stay as history after their agent is deleted.
    sa.Column("agent_key", sa.String(40), nullable=False),
    sa.Column(
        "message_id", BigId, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column(
        "room_id", sa.String(40), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("topic_id", BigId, nullable=True),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("computer_id", sa.String(40), nullable=True),
    # The daemon process (its ``daemon_id`` from connect) holding the claim: a retried claim
    # by the same daemon is idempotent, a claim by any other daemon is refused.
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # A periodic digest covers the room's messages after this id up to ``message_id``.
    sa.Column("digest_after", BigId, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("agent_key", "message_id"),
    sa.Index(None, "agent_key", "status", "id"),
    sa.Index(None, "status", "id"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("agent_key", sa.String(40), nullable=False),
    sa.Column(
        "room_id", sa.String(40), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    ),
    # 0 stands for "no topic" so that the unique key below holds (NULLs never collide);
    # the store turns it back into None.
    sa.Column("topic_id", BigId, nullable=False, server_default="0"),
    sa.Column("runtime", sa.String(32), nullable=False),
    sa.Column("runtime_session_id", sa.String(200), nullable=True),
    sa.Column("cwd", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("agent_key", "room_id", "topic_id"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    # Not foreign keys: a run stays as history after its delivery, message or agent goes.
    sa.Column("delivery_id", BigId, nullable=True),
    sa.Column("message_id", BigId, nullable=True),
    sa.Column("room_id", sa.String(40), nullable=True),
    sa.Column("topic_id", BigId, nullable=True),
    sa.Column("session_id", BigId, nullable=True),
    sa.Column("agent_key", sa.String(40), nullable=False),
    sa.Column("computer_id", sa.String(40), nullable=True),
    sa.Column("daemon_id", sa.String(64), nullable=True),
    # Renewed by the heartbeats of the daemon that started the run; a running run whose
    # lease ran out (its daemon died, even on a computer that is still online) is lost.
    sa.Column("lease_until", UTCDateTime, nullable=True),
    sa.Column("runtime", sa.String(32), nullable=True),
    # running → completed | failed | killed | lost
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("restart_of", BigId, nullable=True),
    sa.Column("usage", sa.JSON, nullable=True),
    # Bytes of output kept in ``run_output`` now, and bytes trimmed from it (oldest first)
    # to stay within PAL_RUN_OUTPUT_LIMIT.
    sa.Column("output_bytes", BigId, nullable=False, server_default="0"),
    sa.Column("output_dropped", BigId, nullable=False, server_default="0"),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "status", "computer_id"),
    sa.Index(None, "agent_key", "id"),
    sa.Index(None, "session_id"),
    sa.Index(None, "delivery_id"),
)

run_actions = sa.Table(
    "run_actions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("computer_id", sa.String(40), nullable=True),
    # kill | restart
    sa.Column("action", sa.String(16), nullable=False),
    # pending (not yet taken by the daemon) → sent → done | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("requested_by", sa.String(80), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index(None, "computer_id", "status"),
    sa.Index(None, "run_id"),
)

# A run's stdout and stderr, as the daemon shipped them: chunks numbered by ``seq`` from 0.
# Only the newest PAL_RUN_OUTPUT_LIMIT bytes are kept (``store/run_output.py``).
run_output = sa.Table(
    "run_output",
    metadata,
    sa.Column(
        "run_id",
        BigId,
        sa.ForeignKey("runs.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("seq", BigId, primary_key=True, autoincrement=False),
    # stdout | stderr
    sa.Column("stream", sa.String(8), nullable=False),
    # len(data.encode()): kept before ``data`` so trimming reads sizes without the text.
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Uploaded files served at ``/artifacts/<id>`` (``store/artifacts.py``). The id is the
# capability: random and unguessable. The file is ``PAL_HOME/artifacts/<path>``; cleanup
# deletes the files of expired and revoked artifacts and sets ``removed_at``, keeping the row
# so the URL keeps answering 410.
artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("mime", sa.String(255), nullable=False),
    sa.Column("size", BigId, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(200), nullable=False),
    # Not foreign keys: an artifact stays (and stays served) after its agent, room or run goes.
    sa.Column("created_by", sa.String(40), nullable=True),
    sa.Column("room_id", sa.String(40), nullable=True),
    sa.Column("run_id", BigId, nullable=True),
    sa.Column("computer_id", sa.String(40), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # NULL: served until revoked (PAL_ARTIFACT_TTL or ttl 0).
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    # When cleanup deleted the file.
    sa.Column("removed_at", UTCDateTime, nullable=True),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "expires_at"),
)

# A debate: the topic goes to ``a``, each reply to the other, until ``turns`` replies.
debates = sa.Table(
    "debates",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "room_id", sa.String(40), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    ),
    # The message that states the topic; every turn is a reply in its thread.
    sa.Column(
        "root_message_id",
        BigId,
        sa.ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("a", sa.String(40), nullable=False),
    sa.Column("b", sa.String(40), nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("turns", sa.Integer, nullable=False),
    # Replies so far (0 until a answers the topic).
    sa.Column("turn", sa.Integer, nullable=False, server_default="0"),
    # Whose reply is awaited (null once the debate has ended).
    sa.Column("next_speaker", sa.String(40), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # running|completed|stopped
    sa.Column("created_by", sa.String(80), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Index(None, "room_id", "status"),
)

# Lark senders allowed to create deliveries (``store/lark.py``): a union_id (``on_...``,
# the same person across bots), an open_id (``ou_...``, per bot) or a tenant user_id.
lark_users = sa.Table(
    "lark_users",
    metadata,
    sa.Column("user_id", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Raw events the Lark bots received and what became of each; the newest 1000 per bot are kept.
lark_events = sa.Table(
    "lark_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("app_id", sa.String(100), nullable=False),
    sa.Column("event_id", sa.String(128), nullable=True),
    sa.Column("event_type", sa.String(128), nullable=True),
    sa.Column("message_id", sa.String(128), nullable=True),
    sa.Column("chat_id", sa.String(128), nullable=True),
    sa.Column("chat_type", sa.String(16), nullable=True),
    sa.Column("sender_id", sa.String(128), nullable=True),
    # delivered|unauthorized|duplicate|ignored|error
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Index(None, "app_id", "id"),
)

# The pal room of each Lark chat a bot talks in (created on first contact).
lark_chats = sa.Table(
    "lark_chats",
    metadata,
    sa.Column("app_id", sa.String(100), primary_key=True),
    sa.Column("chat_id", sa.String(128), primary_key=True),
    sa.Column(
        "room_id", sa.String(40), sa.ForeignKey("rooms.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("chat_type", sa.String(16), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index(None, "room_id"),
)

# Lark messages a bot turned into pal messages: the unique (app_id, lark_message_id) is the
# dedupe of re-pushed events; the reaction is the "Typing" marker to take off later.
lark_messages = sa.Table(
    "lark_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("app_id", sa.String(100), nullable=False),
    sa.Column("lark_message_id", sa.String(128), nullable=False),
    sa.Column("chat_id", sa.String(128), nullable=True),
    sa.Column(
        "pal_message_id", BigId, sa.ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    ),
    # Not a foreign key: deliveries stay as history.
    sa.Column("delivery_id", BigId, nullable=True),
    sa.Column("reaction_id", sa.String(128), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("app_id", "lark_message_id"),
    sa.Index(None, "pal_message_id"),
)
