"""``kill -9`` of the server while many clients post, then a restart on the same database:
every post the server acknowledged (a 2xx reached its client) is there with all its
deliveries, nothing is half-written, and a client that retries an unanswered post with its
``client_msg_id`` never doubles it. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess
from tests.fault.helpers import every_page, sqlite_problems

pytestmark = pytest.mark.e2e

POSTERS = 24
KILL_AFTER = 300  # acknowledged posts before the kill
AGENTS = ("codex", "claude")


@dataclass
class Load:
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)  # client_msg_id -> answer
    unanswered: dict[str, dict[str, Any]] = field(default_factory=dict)  # -> request body


async def post_until_killed(server: ServerProcess) -> Load:
    """``POSTERS`` clients post as fast as the server answers; once ``KILL_AFTER`` posts are
    acknowledged the server gets SIGKILL with the others' requests in flight. Each client
    stops at its first request that gets no answer."""
    load = Load()
    numbers = itertools.count()
    limits = httpx.Limits(max_connections=POSTERS, max_keepalive_connections=POSTERS)

    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as http:

        async def poster(n: int) -> None:
            while True:
                i = next(numbers)
                client_id = f"load-{i}"
                body = {
                    "room": "general",
                    "sender": f"poster-{n}",
                    "mentions": list(AGENTS),
                    "content": f"load message {i}",
                    "client_msg_id": client_id,
                }
                try:
                    response = await http.post("/api/messages", json=body)
                except httpx.TransportError:
                    load.unanswered[client_id] = body
                    return
                assert response.status_code == 201, response.text
                load.acked[client_id] = response.json()
                if len(load.acked) == KILL_AFTER:
                    server.proc.kill()

        await asyncio.wait_for(asyncio.gather(*(poster(n) for n in range(POSTERS))), 60)
    return load


def test_every_acknowledged_message_survives_a_kill_9_with_its_deliveries(
    backend_env: dict[str, str], make_server: Any
) -> None:
    server: ServerProcess = make_server(backend_env)
    for agent in AGENTS:
        httpx.post(f"{server.url}/api/agents", json={"key": agent}).raise_for_status()

    load = asyncio.run(post_until_killed(server))
    server.proc.wait(10)
    assert server.proc.returncode == -9
    assert len(load.acked) >= KILL_AFTER

    server.restart()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        messages = every_page(http, "/api/messages", "messages", room="general")
        deliveries = [
            d for a in AGENTS for d in every_page(http, "/api/deliveries", "deliveries", agent=a)
        ]
        by_client_id = {m["client_msg_id"]: m for m in messages}
        agents_of: defaultdict[int, list[str]] = defaultdict(list)
        for d in deliveries:
            agents_of[d["message_id"]].append(d["agent_key"])
        delivery_ids = {d["id"]: d for d in deliveries}

        # Every acknowledged message is there, as acknowledged, with the deliveries it was
        # answered with.
        missing = [c for c in load.acked if c not in by_client_id]
        assert missing == [], f"{len(missing)} acknowledged messages lost"
        for client_id, answer in load.acked.items():
            assert by_client_id[client_id]["id"] == answer["message"]["id"]
            for made in answer["deliveries"]:
                found = delivery_ids[made["id"]]
                assert (found["message_id"], found["agent_key"]) == (
                    answer["message"]["id"],
                    made["agent_key"],
                )
        # Nothing half-written: each message (acknowledged or caught in flight) has all its
        # deliveries, no delivery lacks its message, and no message came from nowhere.
        assert len(messages) == len(by_client_id)
        assert {m["id"]: sorted(agents_of[m["id"]]) for m in messages} == {
            m["id"]: sorted(AGENTS) for m in messages
        }
        assert set(agents_of) == {m["id"] for m in messages}
        assert set(by_client_id) <= set(load.acked) | set(load.unanswered)
        if not backend_env:
            assert sqlite_problems(server.home / "lock.sqlite") == []

        # A client retrying what got no answer, with its client_msg_id, never doubles it.
        written_in_flight = 0
        for client_id, body in load.unanswered.items():
            retry = http.post("/api/messages", json=body)
            assert retry.status_code == (200 if client_id in by_client_id else 201), retry.text
            written_in_flight += client_id in by_client_id
        after = every_page(http, "/api/messages", "messages", room="general")
        attempted = set(load.acked) | set(load.unanswered)
        assert sorted(m["client_msg_id"] for m in after) == sorted(attempted)

    print(
        f"\n[fault] server kill -9 ({'postgresql' if backend_env else 'sqlite'}): "
        f"{len(load.acked)} messages acknowledged, {len(load.acked)} found with "
        f"{2 * len(load.acked)} deliveries; {len(load.unanswered)} unanswered "
        f"({written_in_flight} of them had been written), {len(messages)} messages in the "
        "database, 0 half-written"
    )
