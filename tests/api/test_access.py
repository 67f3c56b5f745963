"""The admin token (DESIGN.md section 9): a server other hosts can reach, or one with
PAL_AUTH=token, lets through only the admin token, a computer API key (not for admin-only
endpoints) or a workbench session; a loopback server stays open."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.server import access
from pal.server.app import create_app
from pal.store.db import Database
from tests.api.computers_helpers import make_box

TOKEN = "pal_admin_test-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html"}
SAME_ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def guarded(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The app with PAL_AUTH=token and a known admin token."""
    settings = load_settings(
        {"PAL_HOME": str(tmp_path / "home"), "PAL_AUTH": "token"}, db_url=database.url
    )
    with TestClient(create_app(settings, database=database, admin_token=TOKEN)) as test_client:
        yield test_client


def signed_in(client: TestClient) -> TestClient:
    r = client.post("/api/workbench/login", json={"token": TOKEN})
    assert r.status_code == 204, r.text
    return client


# -- who gets in ------------------------------------------------------------------------------


def test_without_a_credential_the_api_asks_for_the_admin_token(guarded):
    r = guarded.get("/api/rooms")
    assert r.status_code == 401
    error = r.json()["error"]
    assert "admin token" in error and "PAL_AUTH=token" in error and "admin.token" in error
    assert (
        guarded.post(
            "/api/messages", json={"room": "general", "sender": "alice", "content": "x"}
        ).status_code
        == 401
    )


def test_the_admin_token_opens_everything(guarded):
    assert guarded.get("/api/rooms", headers=ADMIN).status_code == 200
    r = guarded.post(
        "/api/messages", json={"room": "general", "sender": "alice", "content": "hi"}, headers=ADMIN
    )
    assert r.status_code == 201
    r = guarded.post("/api/computers/provision", json={"name": "box"}, headers=ADMIN)
    assert r.status_code == 201, r.text


def test_a_wrong_bearer_is_refused_and_not_echoed(guarded):
    r = guarded.get("/api/rooms", headers={"Authorization": "Bearer pal_admin_guess-guess-guess"})
    assert r.status_code == 401
    assert "not valid" in r.json()["error"]
    assert "guess" not in r.text


def test_public_paths_need_nothing(guarded):
    assert guarded.get("/health").status_code == 200
    assert guarded.get("/openapi.json").status_code == 200
    assert guarded.get("/").json()["health"] == "/health"  # the JSON index
    assert guarded.get("/static/js/app.js").status_code == 200


def test_a_computer_key_does_agent_work_but_not_admin_work(guarded, database):
    box = make_box(database)
    assert guarded.get("/api/rooms", headers=box.headers).status_code == 200
    assert guarded.get("/api/agents", headers=box.headers).status_code == 200
    r = guarded.post(
        "/api/messages",
        json={"room": "general", "sender": "alice", "content": "x"},
        headers=box.headers,
    )
    assert r.status_code == 201
    r = guarded.post(
        f"/api/computers/{box.id}/heartbeat",
        json={"daemon_id": box.daemon_id, "agents": []},
        headers=box.headers,
    )
    assert r.status_code == 200, r.text
    for method, path, body in [
        ("POST", "/api/agents", {"key": "a", "name": "A", "runtime": "codex"}),
        ("POST", "/api/agents/onboard", {"key": "a", "name": "A"}),
        ("PATCH", "/api/agents/a", {"name": "B"}),
        ("DELETE", "/api/agents/a", None),
        ("POST", "/api/agents/a/assignment", {"computer_id": box.id}),
        ("POST", "/api/computers/provision", {"name": "other"}),
        ("POST", f"/api/computers/{box.id}/rotate", None),
        ("POST", f"/api/computers/{box.id}/revoke", None),
        ("GET", "/api/lark/anything", None),
    ]:
        r = guarded.request(method, path, json=body, headers=box.headers)
        assert r.status_code == 403, (method, path, r.text)
        assert "needs the admin token" in r.json()["error"]


def test_a_revoked_computer_key_is_refused(guarded, database):
    box = make_box(database)
    assert guarded.post(f"/api/computers/{box.id}/revoke", headers=ADMIN).status_code == 200
    assert guarded.get("/api/rooms", headers=box.headers).status_code == 401


# -- the workbench session --------------------------------------------------------------------


def test_the_page_shows_the_sign_in_form_until_signed_in(guarded):
    page = guarded.get("/", headers=HTML)
    assert page.status_code == 200
    assert 'id="login"' in page.text and "PAL_AUTH=token" in page.text
    assert "js/app.js" not in page.text
    signed_in(guarded)
    page = guarded.get("/", headers=HTML)
    assert "js/app.js" in page.text and "Sign out" in page.text


def test_a_wrong_token_does_not_sign_in(guarded):
    r = guarded.post("/api/workbench/login", json={"token": "pal_admin_nope-nope-nope"})
    assert r.status_code == 401
    assert "admin.token" in r.json()["error"]
    assert "set-cookie" not in r.headers
    assert guarded.post("/api/workbench/login", json={}).status_code == 422


def test_the_session_cookie_is_httponly_strict_and_secure_over_https(guarded):
    r = guarded.post("/api/workbench/login", json={"token": TOKEN})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{access.SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=604800" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert TOKEN not in cookie
    r = guarded.post(
        "/api/workbench/login", json={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in r.headers["set-cookie"]


def test_a_session_reads_and_writes_from_its_own_page_only(guarded):
    signed_in(guarded)
    assert guarded.get("/api/rooms").status_code == 200
    message = {"room": "general", "sender": "alice", "content": "from the page"}
    assert guarded.post("/api/messages", json=message, headers=SAME_ORIGIN).status_code == 201
    r = guarded.post("/api/messages", json=message, headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201
    for headers in (
        {},
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
    ):
        r = guarded.post("/api/messages", json=message, headers=headers)
        assert r.status_code == 403, headers
        assert "own page" in r.json()["error"]


def test_a_tampered_or_expired_session_is_refused(guarded):
    expired = access.sign_session(TOKEN, now=time.time() - access.SESSION_SECONDS - 1)
    forged = access.sign_session("pal_admin_another-token-000000")
    good = access.sign_session(TOKEN)
    for value in (expired, forged, good[:-2] + "xx", "nonsense", f"99999999999999.{good}"):
        guarded.cookies.set(access.SESSION_COOKIE, value)
        assert guarded.get("/api/rooms").status_code == 401, value
        assert 'id="login"' in guarded.get("/", headers=HTML).text
    guarded.cookies.set(access.SESSION_COOKIE, good)
    assert guarded.get("/api/rooms").status_code == 200


def test_signing_out_clears_the_cookie(guarded):
    signed_in(guarded)
    r = guarded.post("/api/workbench/logout", headers=SAME_ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "Max-Age=0" in r.headers["set-cookie"] or "expires=" in r.headers["set-cookie"]
    assert guarded.get("/api/rooms").status_code == 401


# -- when the token is asked for --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "auth", "required"),
    [
        ("127.0.0.1", "auto", False),
        ("localhost", "auto", False),
        ("::1", "auto", False),
        ("127.0.0.2", "auto", False),
        ("0.0.0.0", "auto", True),
        ("::", "auto", True),
        ("192.168.1.20", "auto", True),
        ("pal.example.com", "auto", True),
        ("127.0.0.1", "token", True),
    ],
)
def test_the_token_is_required_off_loopback_or_with_pal_auth_token(host, auth, required):
    settings = load_settings({"PAL_HOST": host, "PAL_AUTH": auth})
    assert settings.token_required is required


def test_a_loopback_server_stays_open(client):
    assert client.get("/api/rooms").status_code == 200
    r = client.post("/api/messages", json={"room": "general", "sender": "alice", "content": "open"})
    assert r.status_code == 201
    assert "js/app.js" in client.get("/", headers=HTML).text


def test_a_non_loopback_server_asks_for_the_token(database, tmp_path):
    settings = load_settings(
        {"PAL_HOME": str(tmp_path / "home"), "PAL_HOST": "0.0.0.0"}, db_url=database.url
    )
    with TestClient(create_app(settings, database=database)) as test_client:
        r = test_client.get("/api/rooms")
        assert r.status_code == 401
        assert "0.0.0.0" in r.json()["error"]
        token = settings.admin_token_file.read_text().strip()
        assert test_client.get(
            "/api/rooms", headers={"Authorization": f"Bearer {token}"}
        ).is_success
