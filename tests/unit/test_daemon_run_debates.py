"""A run's credential starting a debate through the local API: the debate is started by the
run's agent (never another), in the run's room unless the run names one."""

from __future__ import annotations

import httpx

from pal.daemon.local_api import RunCredentials
from tests.unit.test_daemon_run_credentials import (  # the fixtures too
    SCOPE,
    TOKEN,
    FakeServer,
    bearer,
    credentials,
    fake,
    local,
)

__all__ = ["credentials", "fake", "local"]  # fixtures pytest finds here


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
