"""Helpers for daemon-side API tests: computers made straight in the store, with keys.

Claims, runs and liveness tests need a provisioned computer and an agent assigned to it;
these helpers make them without depending on the provisioning endpoint.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from starlette.testclient import TestClient

from pal.store import computers as computers_store
from pal.store.db import Database
from pal.store.tables import computers, utcnow
from tests.helpers import invite, make_agent, post


@dataclass
class Box:
    """A provisioned computer: its id, API key and the headers that authenticate as it."""

    id: str
    key: str
    daemon_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_box(
    database: Database,
    name: str = "box",
    *,
    status: str = "online",
    last_seen_at: datetime | None = None,
) -> Box:
    """Insert a computer with a fresh API key (``online``, last seen now, by default)."""
    key = computers_store.new_api_key()
    box = Box(computers_store.new_computer_id(), key, "daemon_" + secrets.token_hex(6))
    now = utcnow()

    def write(conn: sa.Connection) -> None:
        conn.execute(
            computers.insert().values(
                id=box.id,
                name=name,
                key_hash=computers_store.key_hash(key),
                status=status,
                last_seen_at=last_seen_at or now,
                runtimes=[],
                created_at=now,
            )
        )

    database.write_sync(write)
    return box


def set_last_seen(database: Database, computer_id: str, when: datetime) -> None:
    def write(conn: sa.Connection) -> None:
        conn.execute(
            computers.update().where(computers.c.id == computer_id).values(last_seen_at=when)
        )

    database.write_sync(write)


def computer_row(database: Database, computer_id: str) -> dict[str, Any]:
    return database.read_sync(computers_store.get_computer, computer_id)


def assign(client: TestClient, agent: str, computer_id: str | None) -> None:
    r = client.post(f"/api/agents/{agent}/assignment", json={"computer_id": computer_id})
    assert r.status_code == 200, r.text


def agent_on(client: TestClient, box: Box, key: str = "codex", **fields: Any) -> str:
    """An agent assigned to ``box`` that gets every message in ``general``."""
    make_agent(client, key, **fields)
    invite(client, "general", key, "all")
    assign(client, key, box.id)
    return key


def pending_delivery(client: TestClient, agent: str, content: str = "hi") -> dict[str, Any]:
    """Post a message in ``general`` and return ``agent``'s new pending delivery."""
    body = post(client, content)
    delivery: dict[str, Any] = next(d for d in body["deliveries"] if d["agent_key"] == agent)
    assert delivery["status"] == "pending"
    return delivery


def claim(client: TestClient, box: Box, delivery_id: int, daemon_id: str | None = None) -> Any:
    return client.post(
        f"/api/deliveries/{delivery_id}/claim",
        json={"daemon_id": daemon_id or box.daemon_id},
        headers=box.headers,
    )


def claimed(
    client: TestClient, box: Box, delivery_id: int, daemon_id: str | None = None
) -> dict[str, Any]:
    r = claim(client, box, delivery_id, daemon_id)
    assert r.status_code == 200, r.text
    delivery: dict[str, Any] = r.json()["delivery"]
    return delivery


def start_run(client: TestClient, box: Box, delivery: dict[str, Any], **fields: Any) -> Any:
    return client.post(
        "/api/runs",
        json={
            "delivery_id": delivery["id"],
            "attempt": delivery["attempt"],
            "daemon_id": box.daemon_id,
            **fields,
        },
        headers=box.headers,
    )


def running(client: TestClient, box: Box, agent: str = "codex", **fields: Any) -> dict[str, Any]:
    """Post, claim and start: a running run of ``agent`` (already assigned to ``box``)."""
    delivery = claimed(client, box, pending_delivery(client, agent)["id"])
    r = start_run(client, box, delivery, **fields)
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()["run"]
    return run


@contextmanager
def hub_events(client: TestClient) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Subscribe to the app's hub; the yielded function returns the events published since
    the last call (each request publishes before it answers)."""
    with client.app.state.hub.subscribe() as queue:  # type: ignore[attr-defined]

        def drain() -> list[dict[str, Any]]:
            items = []
            while not queue.empty():
                item = queue.get_nowait()
                assert item is not None, "the test's hub queue overflowed"
                items.append(item)
            return items

        yield drain
