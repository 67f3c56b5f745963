"""What schemathesis (tests/fuzz/) found, pinned: each answer matches /openapi.json."""

from __future__ import annotations

from typing import Any

import pytest

from pal.server.api.fields import MAX_ID


@pytest.fixture
def spec(client) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def test_405_lists_every_method_of_the_path(client):
    # Starlette named only the methods of the first route at the path (GET /api/messages
    # and POST /api/messages are two routes).
    r = client.request("OPTIONS", "/api/messages")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"
    assert "it takes GET, POST" in r.json()["error"]


def test_get_on_the_artifact_cleanup_is_a_405_not_a_bad_id(client):
    r = client.get("/api/artifacts/cleanup")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert client.get("/api/artifacts/not-an-id").status_code == 422


def test_errors_are_declared_with_their_shape(spec):
    post = spec["paths"]["/api/messages"]["post"]["responses"]
    assert {"200", "201", "400", "404", "409", "422"} <= set(post)
    assert post["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    upload = spec["paths"]["/api/artifacts"]["post"]["responses"]
    assert {"413", "415"} <= set(upload)


def test_creates_that_may_update_declare_200(spec):
    for path in ("/api/agents", "/api/rooms/{room}/agents", "/api/sessions", "/api/lark-users"):
        assert "200" in spec["paths"][path]["post"]["responses"], path


def test_room_names_keep_their_pattern_in_the_schema(spec):
    name = spec["components"]["schemas"]["RoomCreate"]["properties"]["name"]
    assert name["pattern"].startswith("^(?!room_)")


def test_whole_numbers_written_as_floats_are_accepted(client):
    posted = client.post(
        "/api/messages", json={"room": "general", "sender": "alice", "content": "hi"}
    ).json()["message"]
    r = client.post(
        "/api/messages",
        json={"room": "general", "sender": "bob", "content": "re", "parent": float(posted["id"])},
    )
    assert r.status_code == 201, r.text
    assert r.json()["message"]["parent_id"] == posted["id"]
    r = client.post("/api/rooms", json={"name": "floats", "settings": {"hop_limit": 3.0}})
    assert r.status_code == 201, r.text
    assert r.json()["room"]["settings"]["hop_limit"] == 3


def test_booleans_must_be_booleans(client):
    r = client.post("/api/deliveries/1/fail", json={"retry": 0})
    assert r.status_code in (401, 422)  # no computer key here: 401 comes first
    r = client.post(
        "/api/daemons",
        json={"name": "x", "runtimes": [{"name": "codex", "available": 0}]},
    )
    assert r.status_code == 422 and "available" in r.json()["error"]


def test_ids_stop_at_64_bits(client):
    assert client.get("/api/messages", params={"before": MAX_ID}).status_code == 200
    assert client.get("/api/messages", params={"before": MAX_ID + 1}).status_code == 422


def test_an_unread_position_past_the_last_id_counts_as_all_read(client):
    client.post("/api/messages", json={"room": "general", "sender": "alice", "content": "hi"})
    r = client.get("/api/workbench/unread", params={"read": "general:9631101847687518684"})
    assert r.status_code == 200
    assert r.json()["unread"].get("general", 0) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/{}/output",
        "/api/runs/{}",
        "/api/deliveries/{}",
        "/api/messages/{}",
        "/api/sessions/{}",
        "/api/debates/{}",
    ],
)
@pytest.mark.parametrize("number", [-(2**63) - 1, -1, 0])
def test_ids_below_one_are_a_422_not_a_500(client, path, number):
    # -2**63 - 1 reached SQLite and failed there: "Python int too large to convert".
    r = client.get(path.format(number))
    assert r.status_code == 422, r.text
    assert "greater than or equal to 1" in r.json()["error"]
