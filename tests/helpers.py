"""Small helpers for API tests: make agents, rooms, memberships and messages in one line.

Each helper asserts the status it expects, so a broken setup step fails where it happens.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from starlette.testclient import TestClient

from pal.store.db import Database
from pal.store.tables import computers, deliveries, utcnow


def make_agent(client: TestClient, key: str, **fields: Any) -> dict[str, Any]:
    r = client.post("/api/agents", json={"key": key, **fields})
    assert r.status_code == 201, r.text
    agent: dict[str, Any] = r.json()["agent"]
    return agent


def make_room(client: TestClient, name: str, **fields: Any) -> dict[str, Any]:
    r = client.post("/api/rooms", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    room: dict[str, Any] = r.json()["room"]
    return room


def invite(client: TestClient, room: str, agent: str, mode: str = "mentions") -> dict[str, Any]:
    r = client.post(f"/api/rooms/{room}/agents", json={"agent": agent, "mode": mode})
    assert r.status_code in (200, 201), r.text
    membership: dict[str, Any] = r.json()["membership"]
    return membership


def post(
    client: TestClient, content: str, *, room: str = "general", sender: str = "alice", **fields: Any
) -> dict[str, Any]:
    """POST /api/messages; returns the whole response body (message, deliveries, ...)."""
    r = client.post(
        "/api/messages", json={"room": room, "sender": sender, "content": content, **fields}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def routed(body: dict[str, Any]) -> dict[str, str]:
    """``{agent_key: reason}`` of the deliveries a post created."""
    return {d["agent_key"]: d["reason"] for d in body["deliveries"]}


def make_computer(database: Database, computer_id: str = "machine_test1") -> str:
    """Insert a computer row directly (the computers API is not part of this core)."""

    def write(conn: sa.Connection) -> None:
        conn.execute(
            computers.insert().values(
                id=computer_id, name="Test box", runtimes=[], created_at=utcnow()
            )
        )

    database.write_sync(write)
    return computer_id


def set_delivery_status(database: Database, delivery_id: int, status: str) -> None:
    def write(conn: sa.Connection) -> None:
        conn.execute(
            deliveries.update().where(deliveries.c.id == delivery_id).values(status=status)
        )

    database.write_sync(write)
