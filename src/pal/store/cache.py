"""The routing cache: what every message post reads, kept on the SQLite writer's connection.

Posting a message reads the room, the room's agent members and which names are agents (and,
for an agent's reply in a thread, the room's running debates: ``store/debates.py``). On
SQLite every write runs on one writer connection (``store/db.py``), so that connection can
keep those answers between posts. The writer keeps the cache coherent:

* it clears it after any write job that is not marked with :func:`keeps_cache` (creating a
  room, inviting an agent, editing an agent, ...), so a change is seen by the next post;
* it clears it when a batch rolls back, so nothing that was not committed stays cached;
* it clears it when ``PRAGMA data_version`` shows that another connection (another process)
  changed the database.

Store functions find the cache with :func:`routing_cache`; it is ``None`` on every other
connection (readers, PostgreSQL), where they simply query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.engine import Connection

CACHE_KEY = "pal_routing_cache"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RoutingCache:
    room_ids: dict[str, str] = field(default_factory=dict)  # id or name -> id
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> room row
    agent_modes: dict[str, dict[str, str]] = field(default_factory=dict)  # room id -> modes
    agent_keys: set[str] | None = None  # every agent key, once loaded
    debates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # room id -> running

    def clear(self) -> None:
        self.room_ids.clear()
        self.rooms.clear()
        self.agent_modes.clear()
        self.agent_keys = None
        self.debates.clear()


def routing_cache(conn: Connection) -> RoutingCache | None:
    cache: RoutingCache | None = conn.info.get(CACHE_KEY)
    return cache


def keeps_cache(fn: F) -> F:
    """Mark a write job that changes nothing the routing cache holds, except through the
    store functions that update the cache themselves (the loop-guard counter)."""
    fn.__dict__["keeps_routing_cache"] = True
    return fn


def job_keeps_cache(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "keeps_routing_cache", False))
