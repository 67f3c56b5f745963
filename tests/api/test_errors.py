"""Bad input of every shape gets a JSON ``{"error": ...}`` that says what to fix — never a 500.

The ``client`` fixture re-raises server exceptions, so any 500 fails these tests loudly.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pal.server import auth
from tests.api.computers_helpers import (
    agent_on,
    claimed,
    make_box,
    pending_delivery,
    running,
)
from tests.helpers import make_agent, post

# (method, path, a valid body) for every endpoint that takes a JSON body.
BODY_ENDPOINTS = [
    ("POST", "/api/rooms", {"name": "ops"}),
    ("POST", "/api/rooms/general/agents", {"agent": "codex"}),
    ("POST", "/api/rooms/general/topics", {"title": "T"}),
    ("POST", "/api/messages", {"room": "general", "sender": "alice", "content": "hi"}),
    ("POST", "/api/agents", {"key": "codex"}),
    ("POST", "/api/agents/onboard", {"key": "codex"}),
    ("PATCH", "/api/agents/codex", {"display_name": "X"}),
    ("POST", "/api/agents/codex/assignment", {"computer_id": "machine_x"}),
    ("POST", "/api/deliveries", {"agent": "codex", "message_id": 1}),
]
ENDPOINT_IDS = [f"{m} {p}" for m, p, _ in BODY_ENDPOINTS]


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]


@pytest.mark.parametrize(("method", "path", "valid"), BODY_ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("raw", [b"{bad", b"\xff\xfe"])
def test_errors_malformed_json_is_400(client, method, path, valid, raw):
    r = client.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed JSON")


@pytest.mark.parametrize(("method", "path", "valid"), BODY_ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("raw", [b"[]", b"42", b"null"])
def test_errors_non_object_body_is_422(client, method, path, valid, raw):
    r = client.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert_error(r, r.status_code)
    if raw != b"null":
        assert "JSON object" in r.json()["error"]


@pytest.mark.parametrize(("method", "path", "valid"), BODY_ENDPOINTS, ids=ENDPOINT_IDS)
def test_errors_unknown_field_is_422_naming_it(client, method, path, valid):
    r = client.request(method, path, json={**valid, "colour": "blue"})
    assert_error(r, 422, "colour", "unknown field")


@pytest.mark.parametrize(("method", "path", "valid"), BODY_ENDPOINTS, ids=ENDPOINT_IDS)
def test_errors_unknown_field_writes_nothing(client, method, path, valid):
    make_agent(client, "codex")
    before = {
        "rooms": client.get("/api/rooms").json(),
        "agents": client.get("/api/agents").json(),
        "messages": client.get("/api/messages").json(),
        "members": client.get("/api/rooms/general/members").json(),
    }
    client.request(method, path, json={**valid, "colour": "blue"})
    after = {
        "rooms": client.get("/api/rooms").json(),
        "agents": client.get("/api/agents").json(),
        "messages": client.get("/api/messages").json(),
        "members": client.get("/api/rooms/general/members").json(),
    }
    assert after == before


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/rooms", {"name": 5}, "name"),
        ("POST", "/api/rooms", {"name": "ops", "settings": []}, "settings"),
        ("POST", "/api/rooms", {"name": "ops", "settings": "hop_limit=2"}, "settings"),
        ("POST", "/api/rooms/general/agents", {"agent": ["codex"]}, "agent"),
        ("POST", "/api/rooms/general/topics", {"title": {"t": 1}}, "title"),
        ("POST", "/api/messages", {"room": 1, "sender": "a", "content": "x"}, "room"),
        ("POST", "/api/messages", {"room": "general", "sender": "a", "content": 1}, "content"),
        (
            "POST",
            "/api/messages",
            {"room": "general", "sender": "a", "content": "x", "client_msg_id": 5},
            "client_msg_id",
        ),
        (
            "POST",
            "/api/messages",
            {"room": "general", "sender": "a", "content": "x", "topic": "one"},
            "topic",
        ),
        ("POST", "/api/agents", {"key": "codex", "config": "x"}, "config"),
        ("POST", "/api/agents", {"key": "codex", "description": 1}, "description"),
        ("POST", "/api/agents/onboard", {"key": "codex", "computer_id": 7}, "computer_id"),
        ("POST", "/api/deliveries", {"agent": "codex", "message_id": 1.5}, "message_id"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_errors_wrong_types_are_422_naming_the_field(client, method, path, body, field):
    r = client.request(method, path, json=body)
    assert_error(r, 422, field)


@pytest.mark.parametrize(("method", "path", "valid"), BODY_ENDPOINTS, ids=ENDPOINT_IDS)
def test_errors_nul_characters_are_rejected_not_a_crash(client, method, path, valid):
    make_agent(client, "codex")
    post(client, "x")
    field = next(k for k, v in valid.items() if isinstance(v, str))
    r = client.request(method, path, json={**valid, field: valid[field] + "\u0000"})
    assert_error(r, 422, field)


@pytest.mark.parametrize(
    "extra",
    [
        {"mentions": ["co\u0000dex"]},
        {"client_msg_id": "a\u0000"},
        {"source": "\u0000"},
        {"sender": "al\u0000ice"},
    ],
    ids=str,
)
def test_errors_nul_in_message_fields_is_422(client, extra):
    body = {"room": "general", "sender": "alice", "content": "x", **extra}
    assert_error(client.post("/api/messages", json=body), 422, next(iter(extra)))
    assert client.get("/api/messages").json()["messages"] == []


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/api/rooms/a%00b"),
        ("GET", "/api/rooms/a%00b/members"),
        ("GET", "/api/rooms/a%00b/mentionables"),
        ("POST", "/api/rooms/a%00b/topics"),
        ("GET", "/api/agents/a%00b"),
        ("PATCH", "/api/agents/a%00b"),
        ("DELETE", "/api/agents/a%00b"),
        ("POST", "/api/agents/a%00b/assignment"),
        ("GET", "/api/messages?room=a%00b"),
        ("GET", "/api/inbox?agent=a%00b"),
        ("GET", "/api/computers/a%00b"),
        ("POST", "/api/computers/a%00b/revoke"),
        ("POST", "/api/computers/a%00b/rotate"),
        ("GET", "/api/runs?room=a%00b"),
        ("GET", "/api/sessions?room=a%00b"),
        ("POST", "/api/rooms/a%00b/agents/codex/restart"),
    ],
)
def test_errors_nul_in_paths_and_queries_is_404_not_a_crash(client, method, url):
    bodies = {"topics": {"title": "x"}, "assignment": {"computer_id": None}}
    body = next((b for k, b in bodies.items() if url.endswith(k)), {})
    r = client.request(method, url, json=body if method in ("POST", "PATCH") else None)
    assert_error(r, 404, "not found")


@pytest.mark.parametrize(
    "url",
    [
        "/api/deliveries?agent=a%00b",
        "/api/messages?q=a%00b",
        "/api/messages?q=%ff%fe",
        "/api/runs?agent=a%00b",
        "/api/runs?computer=a%00b",
        "/api/sessions?agent=a%00b",
    ],
)
def test_errors_odd_bytes_in_filters_are_not_a_crash(client, url):
    r = client.get(url)
    assert r.status_code in (200, 422), r.text


@pytest.mark.parametrize(
    "url",
    [
        "/api/messages/9223372036854775808",
        "/api/messages?after=99999999999999999999",
        "/api/messages?before=99999999999999999999",
        "/api/messages?topic=99999999999999999999",
        "/api/messages?parent=99999999999999999999",
        "/api/deliveries/99999999999999999999",
        "/api/deliveries?after=99999999999999999999",
        "/api/inbox?agent=codex&after=99999999999999999999",
        "/api/runs/9223372036854775808",
        "/api/runs?before=99999999999999999999",
        "/api/sessions/9223372036854775808",
        "/api/sessions/99999999999999999999/runs",
    ],
)
def test_errors_ids_beyond_64_bits_are_422(client, url):
    make_agent(client, "codex")
    assert_error(client.get(url), 422, "less than or equal")


@pytest.mark.parametrize(
    "body",
    [{"parent": 2**63}, {"topic": 2**64}, {"parent": -1}, {"topic": 0}],
    ids=str,
)
def test_errors_out_of_range_ids_in_message_body_are_422(client, body):
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "a", "content": "x", **body}
    )
    assert_error(r, 422, next(iter(body)))


def test_errors_missing_fields_say_required(client):
    r = client.post("/api/rooms", json={})
    assert_error(r, 422, "name", "required")


@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", "/api/nope"), ("GET", "/nope"), ("POST", "/api/messages/1/reactions")],
)
def test_errors_unknown_endpoint_is_404_json(client, method, url):
    assert_error(client.request(method, url), 404, "openapi.json")


@pytest.mark.parametrize(
    ("method", "url"),
    [("PUT", "/api/agents"), ("DELETE", "/api/rooms"), ("POST", "/health")],
)
def test_errors_wrong_method_is_405_naming_method_and_path(client, method, url):
    assert_error(client.request(method, url), 405, f"method {method} is not allowed on {url}")


@pytest.mark.parametrize(
    ("method", "url", "kind", "ident"),
    [
        ("GET", "/api/rooms/ghost-room", "room", "ghost-room"),
        ("GET", "/api/agents/ghost", "agent", "ghost"),
        ("GET", "/api/messages/424242", "message", "424242"),
        ("GET", "/api/deliveries/424242", "delivery", "424242"),
        ("GET", "/api/inbox?agent=ghost", "agent", "ghost"),
        ("GET", "/api/messages?room=ghost-room", "room", "ghost-room"),
    ],
)
def test_errors_404_names_the_missing_thing(client, method, url, kind, ident):
    error = assert_error(client.request(method, url), 404)
    assert error.startswith(kind) and ident in error


def test_errors_404_for_missing_topic_and_computer_name_them(client):
    make_agent(client, "codex")
    r = client.post(
        "/api/messages", json={"room": "general", "sender": "a", "content": "x", "topic": 31337}
    )
    assert assert_error(r, 404) == "topic 31337 not found"
    r = client.post("/api/agents/codex/assignment", json={"computer_id": "machine_zzz"})
    assert assert_error(r, 404) == "computer 'machine_zzz' not found"


@pytest.mark.parametrize(
    "headers",
    [{}, {"content-type": "application/x-www-form-urlencoded"}],
    ids=["no-content-type", "curl-default-form"],
)
def test_errors_json_body_without_json_content_type_is_read_as_json(client, headers):
    raw = b'{"room": "general", "sender": "alice", "content": "curl -d"}'
    r = client.post("/api/messages", content=raw, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["message"]["content"] == "curl -d"


def test_errors_failed_post_leaves_no_partial_state(client):
    make_agent(client, "codex")
    client.post("/api/rooms/general/agents", json={"agent": "codex", "mode": "all"})
    r = client.post(
        "/api/messages",
        json={"room": "general", "sender": "a", "content": "@codex x", "parent": 99},
    )
    assert_error(r, 404, "message 99")
    assert client.get("/api/messages").json()["messages"] == []
    assert client.get("/api/deliveries").json()["deliveries"] == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize(("method", "path", "valid"), BODY_ENDPOINTS, ids=ENDPOINT_IDS)
def test_errors_fuzzed_field_values_never_crash(client, method, path, valid, data):
    """Any JSON value in any field gets an answer below 500 (the client raises on a 500)."""
    client.post("/api/agents", json={"key": "codex"})  # 201 first, 200 in later examples
    field = data.draw(st.sampled_from([*sorted(valid), "settings", "config", "mentions"]))
    body = {**valid, field: data.draw(JSON_VALUES)}
    raw = json.dumps(body).encode()  # Python writes NaN/Infinity; the server must cope
    r = client.request(method, path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.json()["error"]


QUERY_ENDPOINTS = [
    ("/api/messages", ["room", "chat", "topic", "parent", "after", "before", "limit", "q"]),
    ("/api/deliveries", ["agent", "status", "after", "limit"]),
    ("/api/inbox", ["agent", "after", "limit"]),
]
PARAM_VALUES = st.text(max_size=30) | st.integers().map(str) | st.floats().map(str)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize(("path", "names"), QUERY_ENDPOINTS, ids=[p for p, _ in QUERY_ENDPOINTS])
def test_errors_fuzzed_query_parameters_never_crash(client, path, names, data):
    params = data.draw(st.dictionaries(st.sampled_from(names), PARAM_VALUES, max_size=4))
    r = client.get(path, params=params)
    assert r.status_code < 500


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ref=st.text(min_size=1, max_size=100).filter(lambda s: s not in (".", "..")))
@pytest.mark.parametrize(
    "template",
    [
        "/api/rooms/{}/members",
        "/api/agents/{}",
        "/api/messages/{}",
        "/api/deliveries/{}",
        "/api/computers/{}",
        "/api/runs/{}",
        "/api/sessions/{}",
    ],
)
def test_errors_fuzzed_path_ids_never_crash(client, template, ref):
    r = client.get(template.format(quote(ref, safe="")), follow_redirects=False)
    # "%2F" decodes to a trailing slash, which the router answers with a redirect
    assert r.status_code in (404, 422) or (r.status_code == 307 and "/" in ref), r.text


def test_errors_restart_of_an_agent_key_with_nul_is_404_not_a_crash(client):
    r = client.post("/api/rooms/general/agents/a%00b/restart", json={})
    assert_error(r, 404, "no running run")


# -- the daemon's endpoints (computer credential) --------------------------------------------


@pytest.fixture
def daemon_world(client, database) -> dict[str, Any]:
    """A computer with an agent, a claimed delivery, a running run and a session: the ids
    the daemon endpoints' fuzz tests aim at (each test starts from a fresh database)."""
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex", "claimed")["id"])
    run = running(client, box)
    session = client.post("/api/sessions", json={"agent": "codex", "room": "general"})
    return {
        "box": box,
        "headers": box.headers,
        "d": box.daemon_id,
        "delivery": delivery["id"],
        "attempt": delivery["attempt"],
        "run": run["id"],
        "session": session.json()["session"]["id"],
    }


RUNTIMES = [{"name": "codex", "available": True, "version": "1", "path": "/bin/codex"}]
# (method, path, a valid body, whether it takes the computer credential); {box}, {delivery},
# {run} and {session} name the daemon_world's rows, "{d}" in a body its daemon id.
DAEMON_ENDPOINTS = [
    ("POST", "/api/computers/provision", {"name": "box", "server_url": "http://h:1"}, False),
    ("POST", "/api/computers/connect", {"daemon_id": "{d}", "runtimes": RUNTIMES}, True),
    (
        "POST",
        "/api/computers/{box}/heartbeat",
        {"daemon_id": "{d}", "agents": ["codex"], "runtimes": RUNTIMES},
        True,
    ),
    (
        "POST",
        "/api/daemons",
        {"computer_id": "old-box", "computer_secret": "pw", "agent": "codex", "name": "Old"},
        False,
    ),
    ("POST", "/api/deliveries/{delivery}/claim", {"daemon_id": "{d}"}, True),
    ("POST", "/api/deliveries/{delivery}/ack", {"daemon_id": "{d}", "attempt": "{attempt}"}, True),
    (
        "POST",
        "/api/deliveries/{delivery}/fail",
        {"daemon_id": "{d}", "attempt": "{attempt}", "error": "no", "retry": True},
        True,
    ),
    (
        "POST",
        "/api/runs",
        {
            "delivery_id": "{delivery}",
            "attempt": "{attempt}",
            "daemon_id": "{d}",
            "session_id": "{session}",
            "pid": 7,
        },
        True,
    ),
    ("POST", "/api/runs/{run}/pid", {"pid": 42}, True),
    (
        "POST",
        "/api/runs/{run}/finish",
        {"status": "completed", "exit_code": 0, "usage": {"tokens": 1}},
        True,
    ),
    ("POST", "/api/runs/{run}/kill", {"requested_by": "alice"}, False),
    ("POST", "/api/runs/{run}/restart", {"requested_by": "alice"}, False),
    ("POST", "/api/rooms/general/agents/codex/restart", {"requested_by": "alice"}, False),
    ("POST", "/api/sessions", {"agent": "codex", "room": "general", "cwd": "/tmp"}, False),
    (
        "POST",
        "/api/sessions/{session}/runtime-session",
        {"runtime_session_id": "thread-1", "cwd": "/tmp"},
        False,
    ),
]
DAEMON_IDS = [f"{m} {p}" for m, p, _, _ in DAEMON_ENDPOINTS]


def _aim(world: dict[str, Any], path: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL and body aimed at ``world``'s rows: ``{name}`` in the path, and a body value
    ``"{name}"``, become ``world[name]``."""
    names = {k: v for k, v in world.items() if k != "box"}
    aimed = {
        k: names[v[1:-1]] if isinstance(v, str) and v[1:-1] in names else v for k, v in body.items()
    }
    return path.format(box=world["box"].id, **names), aimed


@pytest.mark.parametrize(("method", "path", "valid", "keyed"), DAEMON_ENDPOINTS, ids=DAEMON_IDS)
def test_errors_daemon_endpoints_answer_their_valid_body(
    client, daemon_world, method, path, valid, keyed
):
    """The valid bodies the fuzz starts from really are valid (so the fuzz reaches the
    handlers, not only the validation)."""
    url, body = _aim(daemon_world, path, valid)
    r = client.request(method, url, json=body, headers=daemon_world["headers"])
    assert r.status_code < 300 or r.status_code in (404, 409), r.text


@pytest.mark.parametrize(("method", "path", "valid", "keyed"), DAEMON_ENDPOINTS, ids=DAEMON_IDS)
def test_errors_daemon_endpoints_refuse_unknown_fields_and_nul(
    client, daemon_world, method, path, valid, keyed
):
    url, body = _aim(daemon_world, path, valid)
    headers = daemon_world["headers"]
    r = client.request(method, url, json={**body, "colour": "blue"}, headers=headers)
    assert_error(r, 422, "colour", "unknown field")
    field = next((k for k, v in body.items() if isinstance(v, str)), None)
    if field is not None:
        nul = {**body, field: body[field] + "\u0000"}
        assert_error(client.request(method, url, json=nul, headers=headers), 422, field)
    if keyed:
        r = client.request(method, url, json=body)
        assert_error(r, 401, "Bearer")


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize(("method", "path", "valid", "keyed"), DAEMON_ENDPOINTS, ids=DAEMON_IDS)
def test_errors_daemon_endpoints_fuzzed_field_values_never_crash(
    client, daemon_world, method, path, valid, keyed, data
):
    """Any JSON value in any field of a daemon endpoint gets an answer below 500."""
    url, body = _aim(daemon_world, path, valid)
    fields = sorted({*body, "runtimes", "usage", "agents"})
    field = data.draw(st.sampled_from(fields))
    value = data.draw(JSON_VALUES | DEEP_JSON)
    body = {**body, field: value}
    raw = json.dumps(body).encode()
    if isinstance(value, Deep):  # nested past what json.dumps would write
        raw = raw.replace(b'"DEEP"', b"[" * value.depth + b"]" * value.depth)
    headers = {**daemon_world["headers"], "content-type": "application/json"}
    r = client.request(method, url, content=raw, headers=headers)
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.json()["error"]


class Deep(str):
    """Stands for JSON arrays nested ``depth`` deep (written into the raw body)."""

    depth: int


def _deep(depth: int) -> Deep:
    value = Deep("DEEP")
    value.depth = depth
    return value


# Deeply nested JSON (usage, runtimes): refused with a message, never a crash.
DEEP_JSON = st.integers(min_value=30, max_value=5000).map(_deep)

CREDENTIALS = (
    st.sampled_from(["", "Bearer", "Bearer ", "Bearer  ", "Basic eDp5", "bearer :", "Bearer a:"])
    | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=60).map(
        lambda t: "Bearer " + t
    )
    | st.integers(min_value=1000, max_value=100_000).map(lambda n: "Bearer " + "k" * n)
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(credential=CREDENTIALS)
@pytest.mark.parametrize(
    "path",
    ["/api/computers/connect", "/api/deliveries/1/claim", "/api/runs/1/finish"],
)
def test_errors_fuzzed_credentials_are_401_never_a_crash(client, path, credential):
    """Any Authorization header without a valid credential is a 401 whose message never
    depends on (so never echoes) what was sent."""
    body = {"status": "completed"} if path.endswith("finish") else {"daemon_id": "daemon_1"}
    r = client.post(path, json=body, headers={"Authorization": credential.encode()})
    assert assert_error(r, 401) in (auth.MISSING, auth.REFUSED)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ref=st.text(min_size=1, max_size=60).filter(lambda s: s not in (".", "..")))
@pytest.mark.parametrize(
    "template",
    [
        "/api/computers/{}/revoke",
        "/api/computers/{}/heartbeat",
        "/api/deliveries/{}/claim",
        "/api/runs/{}/finish",
        "/api/runs/{}/kill",
        "/api/sessions/{}/runtime-session",
        "/api/rooms/general/agents/{}/restart",
    ],
)
def test_errors_fuzzed_path_ids_of_daemon_endpoints_never_crash(
    client, daemon_world, template, ref
):
    bodies = {
        "heartbeat": {"daemon_id": daemon_world["d"]},
        "claim": {"daemon_id": daemon_world["d"]},
        "finish": {"status": "completed"},
        "runtime-session": {"runtime_session_id": "t"},
    }
    body = next((b for k, b in bodies.items() if template.endswith(k)), {})
    url = template.format(quote(ref, safe=""))
    r = client.post(url, json=body, headers=daemon_world["headers"], follow_redirects=False)
    assert r.status_code in (403, 404, 422) or (r.status_code == 307 and "/" in ref), r.text


def test_json_nested_past_the_parsers_limit_gets_a_400_that_says_so(client):
    body = b'{"room": "general", "sender": "alice", "content": ' + b"[" * 100_000 + b"]" * 100_000
    r = client.post(
        "/api/messages", content=body + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "nested too deeply" in r.json()["error"]
