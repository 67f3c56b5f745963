"""A run's own credential for the local API (PAL_RUN_AUTH): it posts as the run's agent, in
the delivery's room and thread by default, never as anyone else, cannot use the daemon
protocol, and stops working when the run ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from pal.daemon.local_api import RunCredentials, RunScope, create_local_app
from pal.daemon.server_api import ServerApi

TOKEN = "local-token"
SCOPE = RunScope(run_id=7, agent_key="codex", room_id="room_1", topic_id=3, parent_id=41)


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(201, json={"ok": True})

    def last_body(self) -> dict[str, object]:
        body: dict[str, object] = json.loads(self.requests[-1].content)
        return body


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


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_run_posts_in_its_room_and_thread_as_its_agent(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    r = await local.post("/api/messages", json={"content": "done"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    assert fake.last_body() == {
        "content": "done",
        "sender": "codex",
        "sender_kind": "agent",
        "room": "room_1",
        "topic": 3,
        "parent": 41,
    }
    # the computer's key goes to the server, never the run's credential
    assert fake.requests[-1].headers["authorization"] == "Bearer sk_machine_x"


async def test_a_run_may_name_another_room_and_then_gets_no_thread_default(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    body = {"content": "fyi", "room": "general", "from": "codex"}
    r = await local.post("/api/messages", json=body, headers=bearer(token))
    assert r.status_code == 201
    assert fake.last_body() == {
        "content": "fyi",
        "room": "general",
        "sender": "codex",
        "sender_kind": "agent",
    }


@pytest.mark.parametrize("field", ["sender", "from"])
async def test_a_run_cannot_post_as_another_agent(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials, field: str
) -> None:
    token = credentials.issue(SCOPE)
    r = await local.post(
        "/api/messages", json={"content": "hi", field: "alice"}, headers=bearer(token)
    )
    assert r.status_code == 403
    assert "only post as 'codex'" in r.json()["error"]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/deliveries/5/claim"),
        ("POST", "/api/deliveries/5/ack"),
        ("POST", "/api/runs"),
        ("POST", "/api/runs/7/finish"),
        ("POST", "/api/runs/7/finish/"),
        ("POST", "/api/runs/7/output"),
        ("POST", "/api/runs/7/actions/2"),
        ("POST", "/api/computers/provision"),
        ("POST", "/api/computers/machine_1/heartbeat"),
        ("POST", "/api/sessions"),
        ("POST", "/api/sessions/1/runtime-session"),
    ],
)
async def test_a_run_cannot_use_the_daemon_protocol(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials, method: str, path: str
) -> None:
    token = credentials.issue(SCOPE)
    r = await local.request(method, path, json={}, headers=bearer(token))
    assert r.status_code == 403 and "daemon's own protocol" in r.json()["error"]
    assert fake.requests == []


async def test_a_run_may_read_and_ask_for_a_restart(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    for method, path in [
        ("GET", "/api/runs"),
        ("GET", "/api/runs/7/output"),
        ("POST", "/api/runs/9/restart"),
    ]:
        r = await local.request(method, path, headers=bearer(token))
        assert r.status_code == 201
    assert [r.url.path for r in fake.requests] == [
        "/api/runs",
        "/api/runs/7/output",
        "/api/runs/9/restart",
    ]


async def test_the_credential_ends_with_the_run(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    credentials.revoke(token)
    r = await local.post("/api/messages", json={"content": "late"}, headers=bearer(token))
    assert r.status_code == 401 and "PAL_RUN_AUTH" in r.json()["error"]
    r = await local.get("/api/runs", headers=bearer("run_guessed"))
    assert r.status_code == 401
    assert fake.requests == []


async def test_the_daemon_token_still_posts_as_anyone(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    body = {"content": "hi", "room": "general", "sender": "alice"}
    r = await local.post("/api/messages", json=body, headers=bearer(TOKEN))
    assert r.status_code == 201 and fake.last_body() == body
