"""Agents: the coding agents people mention, and where (which computer) they run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pal.errors import NotFound
from pal.store import computers as computers_store
from pal.store import deliveries as deliveries_store
from pal.store import rooms as rooms_store
from pal.store.cache import routing_cache
from pal.store.rows import as_dict, as_dicts
from pal.store.tables import agents, utcnow


def list_agents(conn: Connection) -> list[dict[str, Any]]:
    return as_dicts(conn.execute(sa.select(agents).order_by(agents.c.key)))


def find_agent(conn: Connection, key: str) -> dict[str, Any] | None:
    if "\x00" in key:  # no agent has one, and PostgreSQL refuses NUL in a query
        return None
    row = conn.execute(sa.select(agents).where(agents.c.key == key)).first()
    return as_dict(row) if row else None


def get_agent(conn: Connection, key: str) -> dict[str, Any]:
    agent = find_agent(conn, key)
    if agent is None:
        raise NotFound("agent", key)
    return agent


_ALL_KEYS = sa.select(agents.c.key)
_EXISTING_KEYS = sa.select(agents.c.key).where(
    agents.c.key.in_(sa.bindparam("keys", expanding=True))
)


def existing_keys(conn: Connection, keys: Iterable[str]) -> set[str]:
    """The subset of ``keys`` that are agent keys."""
    wanted = set(keys)
    if not wanted:
        return set()
    cache = routing_cache(conn)
    if cache is not None:
        if cache.agent_keys is None:
            cache.agent_keys = set(conn.execute(_ALL_KEYS).scalars())
        return wanted & cache.agent_keys
    return set(conn.execute(_EXISTING_KEYS, {"keys": sorted(wanted)}).scalars())


def upsert_agent(
    conn: Connection,
    key: str,
    *,
    display_name: str | None = None,
    runtime: str | None = None,
    description: str | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create the agent ``key`` or update the given fields. Returns (agent, created)."""
    now = utcnow()
    existing = find_agent(conn, key)
    if existing is None:
        row = {
            "key": key,
            "display_name": display_name or key,
            "runtime": runtime or "codex",
            "description": description or "",
            "computer_id": None,
            "config": config or {},
            "created_at": now,
            "updated_at": now,
        }
        try:
            with conn.begin_nested():
                conn.execute(agents.insert().values(**row))
            return row, True
        except sa.exc.IntegrityError:  # created concurrently (PostgreSQL): update it instead
            existing = get_agent(conn, key)
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("display_name", display_name),
            ("runtime", runtime),
            ("description", description),
            ("config", config),
        )
        if value is not None
    }
    changes["updated_at"] = now
    conn.execute(agents.update().where(agents.c.key == key).values(**changes))
    return {**existing, **changes}, False


def assign_agent(conn: Connection, key: str, computer_id: str | None) -> dict[str, Any]:
    """Assign the agent to a computer (or unassign with ``None``)."""
    agent = get_agent(conn, key)
    if computer_id is not None:
        computers_store.get_computer(conn, computer_id)
    now = utcnow()
    conn.execute(
        agents.update().where(agents.c.key == key).values(computer_id=computer_id, updated_at=now)
    )
    return {**agent, "computer_id": computer_id, "updated_at": now}


def delete_agent(conn: Connection, key: str) -> dict[str, Any]:
    """Delete the agent with its assignment, memberships (its room subscriptions) and
    active (pending or claimed) deliveries. Finished deliveries stay as history."""
    agent = get_agent(conn, key)
    removed = {
        "memberships": rooms_store.delete_memberships_of(conn, key),
        "deliveries": deliveries_store.delete_active_deliveries_of(conn, key),
    }
    conn.execute(agents.delete().where(agents.c.key == key))
    return {"agent": agent, "removed": removed}
