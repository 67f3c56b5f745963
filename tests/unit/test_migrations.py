"""Migrations own the schema: head matches ``tables.metadata``; search uses its index."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pal.server.routing import NewMessage, post_message
from pal.store import migrate
from pal.store import rooms as rooms_store
from pal.store.messages import list_messages
from pal.store.tables import metadata

# The same objects src/pal/store/migrations/env.py hides from autogenerate: the full-text
# search index (FTS5 table and its shadow tables on SQLite, a GIN index on PostgreSQL),
# created by raw SQL in the migration and not part of the Core metadata.
SEARCH_OBJECTS = {"messages_fts", "ix_messages_content_search"}


def include_object(obj, name, type_, reflected, compare_to):
    return not (name in SEARCH_OBJECTS or (name or "").startswith("messages_fts_"))


def schema_diff(url: str) -> list:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": include_object, "compare_type": True}
            )
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_migrations_head_matches_the_table_metadata(db_url):
    assert schema_diff(db_url) == []


def test_migrations_database_is_at_head(db_url):
    assert migrate.current_revision(db_url) == migrate.head_revision()


def test_migrations_upgrade_is_idempotent(db_url):
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == migrate.head_revision()
    assert schema_diff(db_url) == []


def test_migrations_upgrade_of_an_empty_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert schema_diff(url) == []


def test_migrations_include_object_matches_env():
    """The filter above must stay the one the migration environment uses."""
    env = (migrate.MIGRATIONS / "env.py").read_text()
    for name in sorted(SEARCH_OBJECTS) + ["messages_fts_"]:
        assert name in env


def _seed(database) -> None:
    database.write_sync(rooms_store.ensure_room, "general")
    for i in range(30):
        content = f"deploy server {i}" if i % 3 == 0 else f"unrelated chatter {i}"
        database.write_sync(post_message, NewMessage(room="general", sender="a", content=content))


def _explain_search(conn: sa.Connection, explain: str) -> str:
    """Run the store's real search query, then EXPLAIN the exact SQL it sent."""
    sent: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        sent.append((statement, parameters))

    sa.event.listen(conn, "before_cursor_execute", capture)
    try:
        found = list_messages(conn, q="Deploy server", limit=100)
    finally:
        sa.event.remove(conn, "before_cursor_execute", capture)
    assert [m["content"] for m in found] == [f"deploy server {i}" for i in range(0, 30, 3)]
    statement, parameters = sent[-1]
    rows = conn.exec_driver_sql(f"{explain} {statement}", parameters).all()
    return "\n".join(" ".join(str(col) for col in row) for row in rows)


def test_migrations_search_uses_the_full_text_index(database):
    _seed(database)
    with database.engine.connect() as conn:
        if database.dialect == "sqlite":
            plan = _explain_search(conn, "EXPLAIN QUERY PLAN")
            assert "messages_fts VIRTUAL TABLE INDEX" in plan, plan
        else:
            definition = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_content_search'"
            ).scalar_one()
            assert "gin" in definition and "to_tsvector" in definition
            # the table is tiny: forbid sequential scans so the planner shows the index it can use
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = _explain_search(conn, "EXPLAIN")
            assert "ix_messages_content_search" in plan, plan
        conn.rollback()


def test_an_upgrade_that_fails_half_way_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    """Ctrl-C (or any error) during the first start's upgrade must not leave tables without a
    recorded revision: the next start would fail with "table ... already exists"."""
    from alembic.operations import Operations

    url = f"sqlite:///{tmp_path / 'pal.sqlite'}"
    migrate.upgrade(url, "0001")
    real_create_table = Operations.create_table

    def create_table(self, name, *columns, **kw):
        if name == "sessions":  # after 0002 has created other tables
            raise KeyboardInterrupt
        return real_create_table(self, name, *columns, **kw)

    monkeypatch.setattr(Operations, "create_table", create_table)
    try:
        migrate.upgrade(url)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the patched upgrade should have been interrupted")
    monkeypatch.undo()

    assert migrate.current_revision(url) == "0001"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert "runs" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    migrate.upgrade(url)  # the next start completes it
    assert migrate.current_revision(url) == migrate.head_revision()
    assert schema_diff(url) == []
