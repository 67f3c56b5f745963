"""Alembic environment: online migrations only, URL from the config pal builds."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pal.store.tables import metadata

# Objects Alembic must not compare against the metadata: search indexes created by raw SQL.
SEARCH_OBJECTS = {"messages_fts", "ix_messages_content_search"}


def include_object(obj, name, type_, reflected, compare_to):
    if name in SEARCH_OBJECTS or (name or "").startswith("messages_fts_"):
        return False
    return True


def _transactional_sqlite(engine: sa.Engine) -> None:
    """Make SQLite DDL transactional, so an upgrade interrupted half-way (Ctrl-C during the
    first start) leaves the database as it was, never with tables but no recorded revision.

    The sqlite3 driver opens transactions itself only before DML, so DDL would autocommit
    statement by statement; this is SQLAlchemy's documented recipe for taking over: no
    implicit transactions in the driver, an explicit BEGIN from SQLAlchemy.
    """

    @sa.event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "sqlite":
        _transactional_sqlite(engine)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several servers may start at once against one database: migrate one at a time.
            connection.exec_driver_sql("SELECT pg_advisory_lock(4127001)")
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                include_object=include_object,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                # One transaction for the whole upgrade on both backends (see above).
                transactional_ddl=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_unlock(4127001)")
                connection.commit()
    engine.dispose()


run_migrations_online()
