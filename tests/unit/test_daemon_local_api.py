"""The daemon's local API: bearer token on every request, /health, /api/* forwarded to the
server with the computer's credential (the server is an ``httpx.MockTransport``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from pal.daemon.local_api import PortInUse, bind, create_local_app
from pal.daemon.server_api import ServerApi

TOKEN = "local-token"
KEY = "sk_machine_test"
STATE = {"computer_id": "machine_1", "daemon_id": "daemon_1", "socket": "connected"}

Handler = Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """Answers like the pal server and records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        if request.url.path == "/health":
            return httpx.Response(200, json={"ok": True, "database": "sqlite"})
        if request.url.path == "/api/text":
            return httpx.Response(418, text="short and stout", headers={"content-type": "text/x"})
        return httpx.Response(
            201,
            json={"echo": request.url.path, "query": request.url.query.decode()},
        )


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
async def local(fake: FakeServer) -> AsyncIterator[httpx.AsyncClient]:
    api = ServerApi("http://server.test", KEY, transport=httpx.MockTransport(fake))
    app = create_local_app(api, TOKEN, lambda: dict(STATE))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:4137"
    ) as client:
        yield client
    await api.aclose()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [{}, auth("wrong"), {"authorization": TOKEN}, {"authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
@pytest.mark.parametrize("path", ["/health", "/api/rooms", "/elsewhere"])
async def test_local_api_refuses_requests_without_the_token(
    local: httpx.AsyncClient, fake: FakeServer, headers: dict[str, str], path: str
) -> None:
    response = await local.get(path, headers=headers)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["error"]
    assert fake.requests == []  # nothing reached the server


async def test_local_health_reports_the_daemon_and_the_server(local: httpx.AsyncClient) -> None:
    response = await local.get("/health", headers=auth())
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "daemon": STATE,
        "server": {"ok": True, "database": "sqlite"},
    }


async def test_local_health_says_why_the_server_is_unreachable(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    fake.down = True
    body = (await local.get("/health", headers=auth())).json()
    assert body["ok"] is True and body["daemon"] == STATE
    assert "cannot reach the server at http://server.test" in body["server"]


async def test_local_api_forwards_with_the_computer_credential(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    payload = {"room": "general", "content": "hi"}
    response = await local.post(
        "/api/messages?x=1&y=a%20b",
        headers=auth(),
        content=json.dumps(payload),
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"echo": "/api/messages", "query": "x=1&y=a%20b"}
    [request] = fake.requests
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {KEY}"  # never the local token
    assert json.loads(request.content) == payload


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_local_api_forwards_every_method(
    local: httpx.AsyncClient, fake: FakeServer, method: str
) -> None:
    response = await local.request(method, "/api/things/7", headers=auth())
    assert response.status_code == 201
    assert [(r.method, r.url.path) for r in fake.requests] == [(method, "/api/things/7")]


async def test_local_api_relays_status_body_and_content_type_as_they_are(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    sent = await local.post(
        "/api/text", headers={**auth(), "content-type": "text/plain"}, content=b"raw"
    )
    assert (sent.status_code, sent.text, sent.headers["content-type"]) == (
        418,
        "short and stout",
        "text/x",
    )
    [request] = fake.requests
    assert (request.headers["content-type"], request.content) == ("text/plain", b"raw")


async def test_local_api_answers_503_when_the_server_is_unreachable(
    local: httpx.AsyncClient, fake: FakeServer
) -> None:
    fake.down = True
    response = await local.get("/api/rooms", headers=auth())
    assert response.status_code == 503
    assert "cannot reach the server" in response.json()["error"]


async def test_local_api_unknown_path_is_a_json_404(local: httpx.AsyncClient) -> None:
    response = await local.get("/nope", headers=auth())
    assert response.status_code == 404
    assert "use /health or /api/" in response.json()["error"]


def test_bind_refuses_a_taken_port() -> None:
    taken = bind(0)
    taken.listen()
    try:
        with pytest.raises(PortInUse, match="pick another --local-port"):
            bind(taken.getsockname()[1])
    finally:
        taken.close()
