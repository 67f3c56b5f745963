"""ServerClient against httpx.MockTransport: requests sent, payloads and error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest

from pal import client as client_module
from pal.client import ApiError, DaemonClient, DaemonUnreachable, ServerClient, ServerUnreachable
from pal.config import ConfigError, resolve_server_url
from pal.errors import PalError
from pal.server.api import deliveries, fields
from pal.store import run_actions, runs

URL = "http://127.0.0.1:4127"
DAEMON_URL = "http://127.0.0.1:4137"
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


def test_client_sends_the_token_as_a_bearer_credential() -> None:
    recorder = Recorder({"computers": []})
    make_client(recorder, token="sk_machine_abc").list_computers()
    assert recorder.requests[-1].headers["authorization"] == "Bearer sk_machine_abc"
    make_client(recorder).list_computers()
    assert "authorization" not in recorder.requests[-1].headers


def test_client_computer_endpoints() -> None:
    recorder = Recorder({"computer": {}})
    client = make_client(recorder)
    client.provision_computer("Build box")
    assert recorder.last == ("POST", "/api/computers/provision", {}, {"name": "Build box"})
    client.provision_computer("Laptop", server_url="http://10.0.0.2:4127")
    assert recorder.last[3] == {"name": "Laptop", "server_url": "http://10.0.0.2:4127"}
    client.list_computers()
    assert recorder.last[:2] == ("GET", "/api/computers")
    client.get_computer("machine_1")
    assert recorder.last[:2] == ("GET", "/api/computers/machine_1")
    client.revoke_computer("machine_1")
    assert recorder.last[:2] == ("POST", "/api/computers/machine_1/revoke")
    client.rotate_computer("machine_1")
    assert recorder.last[:2] == ("POST", "/api/computers/machine_1/rotate")
    client.connect_computer(platform="linux")
    assert recorder.last == ("POST", "/api/computers/connect", {}, {"platform": "linux"})
    client.get_computer("a/b")
    assert recorder.requests[-1].url.raw_path == b"/api/computers/a%2Fb"


def test_client_run_endpoints_send_only_the_filters_given() -> None:
    recorder = Recorder({"runs": []})
    client = make_client(recorder)
    client.list_runs()
    assert recorder.last == ("GET", "/api/runs", {"limit": "50"}, None)
    client.list_runs(agent="codex", status="running", computer="machine_1", room="general")
    assert recorder.last[2] == {
        "agent": "codex",
        "status": "running",
        "computer": "machine_1",
        "room": "general",
        "limit": "50",
    }
    client.list_runs(before=9, limit=5)
    assert recorder.last[2] == {"before": "9", "limit": "5"}
    client.get_run(7)
    assert recorder.last[:2] == ("GET", "/api/runs/7")
    client.run_action(7, "kill")
    assert recorder.last == ("POST", "/api/runs/7/kill", {}, {})
    client.run_action(7, "restart", requested_by="alice")
    assert recorder.last == ("POST", "/api/runs/7/restart", {}, {"requested_by": "alice"})
    client.restart_agent("general", "codex")
    assert recorder.last == ("POST", "/api/rooms/general/agents/codex/restart", {}, {})
    client.list_sessions(agent="codex")
    assert recorder.last == ("GET", "/api/sessions", {"agent": "codex"}, None)
    client.list_sessions(room="general")
    assert recorder.last[2] == {"room": "general"}


def test_client_refuses_an_unknown_run_action_without_a_request() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="kill or restart"):
        make_client(recorder).run_action(7, "stop")  # type: ignore[arg-type]
    assert recorder.requests == []


def test_client_restart_agent_quotes_room_and_agent() -> None:
    recorder = Recorder({"action": {}, "run": {}})
    make_client(recorder).restart_agent("a/b", "c d")
    assert recorder.requests[-1].url.raw_path == b"/api/rooms/a%2Fb/agents/c%20d/restart"


def test_client_run_literals_match_the_store() -> None:
    assert set(get_args(client_module.RunStatus)) == set(runs.STATUSES)
    assert set(get_args(client_module.RunActionName)) == set(run_actions.ACTIONS)


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


def make_daemon_client(handler: Handler, token: str | None = "tok") -> DaemonClient:
    return DaemonClient(
        DAEMON_URL,
        token=token,
        token_file="/home/me/.pal/daemon.token",
        transport=httpx.MockTransport(handler),
    )


def test_daemon_client_sends_the_token_and_forwards_api_paths_unchanged() -> None:
    recorder = Recorder({"rooms": [], "daemon": {"daemon_id": "daemon_1"}, "server": "down"})
    make_daemon_client(recorder).list_rooms()
    request = recorder.requests[-1]
    assert str(request.url) == f"{DAEMON_URL}/api/rooms"
    assert request.headers["authorization"] == "Bearer tok"
    make_daemon_client(recorder, token=None).daemon_health()
    assert recorder.requests[-1].url.path == "/health"
    assert "authorization" not in recorder.requests[-1].headers


def test_daemon_client_401_names_the_token_to_fix() -> None:
    client = make_daemon_client(Recorder({"error": "missing or wrong token"}, status=401))
    with pytest.raises(ApiError) as raised:
        client.list_runs()
    assert raised.value.status == 401
    assert raised.value.message == (
        "the daemon refused the token: set LOCK_DAEMON_TOKEN or check /home/me/.pal/daemon.token"
    )


def test_daemon_client_passes_other_errors_through() -> None:
    client = make_daemon_client(Recorder({"error": "room 'nope' not found"}, status=404))
    with pytest.raises(ApiError, match="^room 'nope' not found$"):
        client.room_members("nope")


def test_daemon_client_unreachable_names_the_daemon() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(DaemonUnreachable) as raised:
        make_daemon_client(handler).daemon_health()
    assert str(raised.value) == (
        f"cannot reach the pal daemon at {DAEMON_URL}; is `pal daemon` running? "
        "(connection refused; set LOCK_DAEMON_URL if it listens elsewhere)"
    )


@pytest.mark.parametrize(
    "payload", [{"ok": True, "version": "0.1.0", "database": "sqlite"}, [], {"daemon": "x"}]
)
def test_daemon_health_from_something_that_is_not_a_daemon_says_so(payload: Any) -> None:
    """LOCK_DAEMON_URL pointing at the pal server: its /health is not the daemon's."""
    with pytest.raises(ApiError) as raised:
        make_daemon_client(Recorder(payload)).daemon_health()
    assert raised.value.message.startswith(
        f"{DAEMON_URL} answered /health, but not as a pal daemon: is it the pal server?"
    )


def test_daemon_health_answers_the_daemon_state() -> None:
    state = {"computer_id": None, "daemon_id": "daemon_1", "socket": "disconnected"}
    payload = {"ok": True, "daemon": state, "server": "cannot reach the server"}
    assert make_daemon_client(Recorder(payload)).daemon_health() == payload
