"""The daemon's local API: bearer token on every request, /health, /api/* forwarded to the
server with the computer's credential (the server is an ``httpx.MockTransport``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.types import ASGIApp

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
    assert response.json()["error"].startswith(
        "the pal daemon cannot reach the server at http://server.test: ConnectError"
    )


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


async def raw_request(app: ASGIApp, raw_path: bytes, query: bytes = b"") -> tuple[int, bytes]:
    """One request with ``raw_path`` exactly as a client sent it (httpx would resolve
    ``..`` before sending); the path is decoded the way uvicorn decodes it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:4137"), *auth_headers()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4137),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


def auth_headers() -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {TOKEN}".encode())]


@pytest.fixture
def app(fake: FakeServer) -> ASGIApp:
    api = ServerApi("http://server.test", KEY, transport=httpx.MockTransport(fake))
    return create_local_app(api, TOKEN, lambda: dict(STATE))


@pytest.mark.parametrize(
    "raw_path",
    [b"/api/../health", b"/api/%2e%2e/health", b"/api/rooms/../../docs", b"/api/./rooms"],
)
async def test_local_api_forwards_nothing_outside_api(
    app: ASGIApp, fake: FakeServer, raw_path: bytes
) -> None:
    status, body = await raw_request(app, raw_path)
    assert status == 404 and "no '.' or '..' parts" in json.loads(body)["error"]
    assert fake.requests == []


async def test_local_api_keeps_encoded_slashes_and_repeated_query_keys(
    app: ASGIApp, fake: FakeServer
) -> None:
    status, _ = await raw_request(app, b"/api/rooms/a%2Fb/members", b"tag=1&tag=2")
    assert status == 201
    [request] = fake.requests
    assert request.url.raw_path == b"/api/rooms/a%2Fb/members?tag=1&tag=2"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>not pal</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(500, text="Internal Server Error"),
    ],
    ids=["html", "json-list", "500"],
)
async def test_local_health_survives_an_answer_that_is_not_a_pal_server(
    answer: httpx.Response,
) -> None:
    api = ServerApi("http://server.test", KEY, transport=httpx.MockTransport(lambda r: answer))
    app = create_local_app(api, TOKEN, lambda: dict(STATE))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://127.0.0.1:4137"
    ) as client:
        response = await client.get("/health", headers=auth())
    await api.aclose()
    assert response.status_code == 200
    server = response.json()["server"]
    assert isinstance(server, str) and server.startswith(f"HTTP {answer.status_code}: ")


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "POST"])
async def test_a_browser_page_gets_nothing_without_the_token(
    local: httpx.AsyncClient, fake: FakeServer, method: str
) -> None:
    """DNS rebinding or a page posting to 127.0.0.1: no CORS preflight passes, and no
    endpoint (not even /health) answers without the bearer token."""
    headers = {
        "origin": "http://evil.example",
        "host": "evil.example:4137",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization",
    }
    for path in ("/health", "/api/messages"):
        response = await local.request(method, path, headers=headers)
        assert response.status_code == 401
        assert not any(h.startswith("access-control-") for h in response.headers)
    assert fake.requests == []


async def test_a_url_too_long_to_forward_is_a_400_not_a_crash(
    app: ASGIApp, fake: FakeServer
) -> None:
    status, body = await raw_request(app, b"/api/rooms/" + b"a" * 70_000)
    assert status == 400
    assert json.loads(body) == {"error": "cannot forward this request: URL too long"}
    assert fake.requests == []
