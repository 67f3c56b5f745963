"""/openapi.json describes every HTTP endpoint (the daemon socket, a WebSocket, is not in
OpenAPI; tests/api/test_daemon_ws.py covers it)."""

from __future__ import annotations

import pytest

EXPECTED = [
    ("get", "/"),
    ("get", "/health"),
    ("get", "/api/events"),
    ("get", "/api/workbench/unread"),
    ("get", "/api/chats"),
    ("get", "/api/rooms"),
    ("post", "/api/rooms"),
    ("get", "/api/rooms/{room}"),
    ("patch", "/api/rooms/{room}"),
    ("get", "/api/rooms/{room}/members"),
    ("get", "/api/rooms/{room}/mentionables"),
    ("post", "/api/rooms/{room}/agents"),
    ("get", "/api/rooms/{room}/topics"),
    ("post", "/api/rooms/{room}/topics"),
    ("get", "/api/messages"),
    ("post", "/api/messages"),
    ("get", "/api/messages/{message_id}"),
    ("get", "/api/inbox"),
    ("get", "/api/agents"),
    ("post", "/api/agents"),
    ("post", "/api/agents/onboard"),
    ("get", "/api/agents/{key}"),
    ("patch", "/api/agents/{key}"),
    ("delete", "/api/agents/{key}"),
    ("post", "/api/agents/{key}/assignment"),
    ("get", "/api/deliveries"),
    ("post", "/api/deliveries"),
    ("get", "/api/deliveries/{delivery_id}"),
    ("post", "/api/deliveries/{delivery_id}/claim"),
    ("post", "/api/deliveries/{delivery_id}/ack"),
    ("post", "/api/deliveries/{delivery_id}/fail"),
    ("post", "/api/computers/provision"),
    ("get", "/api/computers"),
    ("get", "/api/computers/{computer_id}"),
    ("post", "/api/computers/{computer_id}/revoke"),
    ("post", "/api/computers/{computer_id}/rotate"),
    ("post", "/api/computers/connect"),
    ("post", "/api/computers/{computer_id}/heartbeat"),
    ("post", "/api/daemons"),
    ("get", "/api/runs"),
    ("post", "/api/runs"),
    ("get", "/api/runs/{run_id}"),
    ("post", "/api/runs/{run_id}/pid"),
    ("post", "/api/runs/{run_id}/output"),
    ("get", "/api/runs/{run_id}/output"),
    ("post", "/api/runs/{run_id}/actions/{action_id}"),
    ("post", "/api/runs/{run_id}/finish"),
    ("post", "/api/runs/{run_id}/kill"),
    ("post", "/api/runs/{run_id}/restart"),
    ("post", "/api/rooms/{room}/agents/{key}/restart"),
    ("get", "/api/sessions"),
    ("post", "/api/sessions"),
    ("get", "/api/sessions/{session_id}"),
    ("get", "/api/sessions/{session_id}/runs"),
    ("post", "/api/sessions/{session_id}/runtime-session"),
]


@pytest.fixture
def spec(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def test_openapi_lists_every_endpoint(spec):
    missing = [(m, p) for m, p in EXPECTED if m not in spec["paths"].get(p, {})]
    assert not missing


def test_openapi_describes_the_event_stream(spec):
    stream = spec["paths"]["/api/events"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {p["name"] for p in stream["parameters"]} == {"kinds", "after", "last-event-id"}


def test_openapi_describes_the_message_body(spec):
    schemas = spec["components"]["schemas"]
    body = schemas["MessageCreate"]
    assert {"sender", "content"} <= set(body["required"])
    assert body["properties"]["content"]["maxLength"] == 65_536
    assert {"mentions", "parent", "topic", "client_msg_id"} <= set(body["properties"])


def test_openapi_lists_the_invite_modes(spec):
    invite = spec["components"]["schemas"]["AgentInvite"]
    assert set(invite["properties"]["mode"]["enum"]) == {
        "mentions",
        "all",
        "periodic",
        "muted",
        "off",
    }


def test_openapi_names_the_api_and_version(spec):
    assert spec["info"]["title"] == "pal"
    assert spec["info"]["version"]
