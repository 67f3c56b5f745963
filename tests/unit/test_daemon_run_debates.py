"""A run's credential starting a debate through the local API: the debate is started by the
run's agent (never another), in the run's room unless the run names one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from pal.daemon.local_api import RunCredentials, create_local_app
from pal.daemon.server_api import ServerApi
from tests.unit.test_daemon_run_credentials import SCOPE, TOKEN, FakeServer, bearer


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
def credentials() -> RunCredentials:
    return RunCredentials()


@pytest.fixture
async def local(fake: FakeServer, credentials: RunCredentials) -> AsyncIterator[httpx.AsyncClient]:
    api = ServerApi("http://server.test", "sk_machine_x", transport=httpx.MockTransport(fake))
    app = create_local_app(api, TOKEN, lambda: {}, credentials)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:4137"
    ) as client:
        yield client
    await api.aclose()


DEBATE = {"a": "codex", "b": "reviewer", "topic": "t"}


async def test_a_run_starts_a_debate_as_its_agent_in_its_room(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    r = await local.post("/api/debates", json=DEBATE, headers=bearer(token))
    assert r.status_code == 201, r.text
    assert fake.last_body() == {**DEBATE, "created_by": "codex", "room": "room_1"}
    r = await local.post("/api/debates", json={**DEBATE, "chat": "design"}, headers=bearer(token))
    assert fake.last_body() == {**DEBATE, "chat": "design", "created_by": "codex"}


async def test_a_run_cannot_start_a_debate_as_another_agent(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    body = {**DEBATE, "created_by": "alice"}
    r = await local.post("/api/debates", json=body, headers=bearer(token))
    assert r.status_code == 403
    assert "started by 'codex', not 'alice'" in r.json()["error"]
    assert fake.requests == []
    r = await local.post("/api/debates", content=b"[1]", headers=bearer(token))
    assert r.status_code == 422 and fake.requests == []


async def test_the_daemon_token_starts_a_debate_as_given(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    body = {**DEBATE, "room": "general", "created_by": "alice"}
    r = await local.post("/api/debates", json=body, headers=bearer(TOKEN))
    assert r.status_code == 201 and fake.last_body() == body
