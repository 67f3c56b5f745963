"""ServerClient against httpx.MockTransport: requests sent, payloads and error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest

from pal import client as client_module
from pal.client import ApiError, ServerClient, ServerUnreachable
from pal.config import ConfigError, resolve_server_url
from pal.errors import PalError
from pal.server.api import deliveries, fields

URL = "http://127.0.0.1:4127"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers ``payload`` and keeps every request."""

    def __init__(self, payload: Any = None, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.payload = {} if payload is None else payload
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.payload)

    @property
    def last(self) -> tuple[str, str, dict[str, str], Any]:
        """(method, path, query, JSON body) of the newest request."""
        request = self.requests[-1]
        body = json.loads(request.content) if request.content else None
        return request.method, request.url.path, dict(request.url.params), body


def make_client(handler: Handler, **kwargs: Any) -> ServerClient:
    return ServerClient(URL, transport=httpx.MockTransport(handler), **kwargs)


def test_client_returns_the_server_payload() -> None:
    payload = {"ok": True, "version": "0.1.0", "database": "sqlite"}
    with make_client(Recorder(payload)) as client:
        assert client.health() == payload


def test_client_sends_only_the_filters_given() -> None:
    recorder = Recorder({"messages": []})
    client = make_client(recorder)
    client.list_messages("general", parent=3, q="deploy failed")
    assert recorder.last == (
        "GET",
        "/api/messages",
        {"room": "general", "parent": "3", "after": "0", "limit": "50", "q": "deploy failed"},
        None,
    )
    client.inbox("codex", after=7, limit=5)
    assert recorder.last[2] == {"agent": "codex", "after": "7", "limit": "5"}


def test_client_post_message_body() -> None:
    recorder = Recorder({"message": {}, "deliveries": [], "duplicate": False, "suppressed": None})
    make_client(recorder).post_message(
        "general", "alice", "hello", mentions=("codex",), topic=2, client_msg_id="m-1"
    )
    assert recorder.last[:2] == ("POST", "/api/messages")
    assert recorder.last[3] == {
        "room": "general",
        "sender": "alice",
        "content": "hello",
        "mentions": ["codex"],
        "topic": 2,
        "client_msg_id": "m-1",
    }


def test_client_update_sends_only_changed_fields_and_unassign_sends_null() -> None:
    recorder = Recorder({"agent": {}})
    client = make_client(recorder)
    client.update_agent("codex", runtime="claude")
    assert recorder.last == ("PATCH", "/api/agents/codex", {}, {"runtime": "claude"})
    client.assign_agent("codex", None)
    assert recorder.last == ("POST", "/api/agents/codex/assignment", {}, {"computer_id": None})


def test_client_quotes_names_into_one_path_segment() -> None:
    recorder = Recorder({"room": "x", "members": []})
    make_client(recorder).room_members("a/../b")
    assert recorder.requests[-1].url.raw_path == b"/api/rooms/a%2F..%2Fb/members"


def test_client_raises_api_error_with_the_servers_message() -> None:
    client = make_client(Recorder({"error": "room 'nope' not found"}, status=404))
    with pytest.raises(ApiError) as raised:
        client.list_messages("nope")
    assert raised.value.status == 404
    assert raised.value.message == "room 'nope' not found"
    assert str(raised.value) == "room 'nope' not found"
    assert isinstance(raised.value, PalError)


def test_client_describes_an_error_without_a_json_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n<b>Bad gateway</b>\n</html>")

    with pytest.raises(ApiError) as raised:
        make_client(handler).list_rooms()
    assert raised.value.status == 502
    assert raised.value.message == "HTTP 502 Bad Gateway: <html> <b>Bad gateway</b> </html>"


def test_client_rejects_a_success_that_is_not_json() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>hello</html>")

    with pytest.raises(ApiError, match="not JSON; is http://127.0.0.1:4127 a pal server"):
        make_client(handler).health()


def test_client_connection_refused_is_one_clear_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ServerUnreachable) as raised:
        make_client(handler).health()
    assert str(raised.value) == (
        "cannot reach the pal server at http://127.0.0.1:4127 (connection refused); "
        "is `pal server` running? set --server or PAL_SERVER"
    )


def test_client_timeout_names_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ServerUnreachable, match=r"\(no answer within 2.5s\)"):
        make_client(handler, timeout=2.5).list_agents()


def test_client_literals_match_the_server() -> None:
    assert set(get_args(client_module.Runtime)) == set(get_args(fields.Runtime))
    assert set(get_args(client_module.Mode)) == set(get_args(fields.Mode))
    assert set(get_args(client_module.DeliveryStatus)) == set(get_args(deliveries.Status))


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (
            "http://flag:1/",
            {"LOCK_SERVER_URL": "http://lock:2", "PAL_SERVER": "http://pal:3"},
            "http://flag:1",
        ),
        (None, {"LOCK_SERVER_URL": "http://lock:2", "PAL_SERVER": "http://pal:3"}, "http://lock:2"),
        (None, {"PAL_SERVER": "http://pal:3"}, "http://pal:3"),
        (None, {"LOCK_SERVER_URL": "", "PAL_SERVER": ""}, "http://127.0.0.1:4127"),
    ],
)
def test_server_url_precedence(flag: str | None, env: dict[str, str], expected: str) -> None:
    assert resolve_server_url(flag, env) == expected


def test_server_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        resolve_server_url("127.0.0.1:4127", {})
