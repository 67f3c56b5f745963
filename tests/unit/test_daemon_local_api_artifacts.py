"""Artifact uploads through the daemon's local API: the file streams through with its
length and type; a run's upload is recorded as its agent's, for its run, in its room, and
cannot claim another agent or run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import httpx
import pytest

from pal.daemon.local_api import RunCredentials, RunScope, create_local_app
from pal.daemon.server_api import ServerApi

TOKEN = "local-token"
SCOPE = RunScope(run_id=7, agent_key="codex", room_id="room_1", topic_id=None, parent_id=None)


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(201, json={"artifact": {"id": "art_x"}})

    def last_query(self) -> list[tuple[str, str]]:
        return parse_qsl(self.requests[-1].url.query.decode(), keep_blank_values=True)


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


async def test_an_upload_is_forwarded_with_its_bytes_length_and_type(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"<h1>", b"report", b"</h1>"):
            yield piece

    r = await local.post(
        "/api/artifacts?title=Report",
        content=pieces(),
        headers={**bearer(TOKEN), "content-type": "text/html", "content-length": "15"},
    )
    assert r.status_code == 201, r.text
    sent = fake.requests[-1]
    assert sent.content == b"<h1>report</h1>"
    assert sent.headers["content-type"] == "text/html"
    assert sent.headers["content-length"] == "15"
    assert "transfer-encoding" not in sent.headers
    assert sent.headers["authorization"] == "Bearer sk_machine_x"
    assert fake.last_query() == [("title", "Report")]  # not a run: nothing added


async def test_a_runs_upload_is_its_agents_in_its_room(
    local: httpx.AsyncClient, fake: FakeServer, credentials: RunCredentials
) -> None:
    token = credentials.issue(SCOPE)
    r = await local.post("/api/artifacts?title=R&ttl=60", content=b"x", headers=bearer(token))
    assert r.status_code == 201, r.text
    assert fake.last_query() == [
        ("title", "R"),
        ("ttl", "60"),
        ("created_by", "codex"),
        ("run_id", "7"),
        ("room", "room_1"),
    ]
    # its own agent and run may be named; another room may be chosen
    query = "title=R&created_by=codex&run_id=7&room=reports"
    r = await local.post(f"/api/artifacts?{query}", content=b"x", headers=bearer(token))
    assert r.status_code == 201, r.text
    assert sorted(fake.last_query()) == sorted(
        [("title", "R"), ("room", "reports"), ("created_by", "codex"), ("run_id", "7")]
    )


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("created_by=reviewer", "not 'reviewer'"),
        ("created_by=codex&created_by=reviewer", "not 'reviewer'"),
        ("run_id=8", "cannot upload for run '8'"),
    ],
)
async def test_a_run_cannot_upload_for_another_agent_or_run(
    local: httpx.AsyncClient,
    fake: FakeServer,
    credentials: RunCredentials,
    query: str,
    fragment: str,
) -> None:
    token = credentials.issue(SCOPE)
    r = await local.post(f"/api/artifacts?title=R&{query}", content=b"x", headers=bearer(token))
    assert r.status_code == 403
    assert fragment in r.json()["error"]
    assert fake.requests == []
