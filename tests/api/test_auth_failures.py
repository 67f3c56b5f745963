"""Failed authentication is limited per client address: 429 with Retry-After once an
address has failed too often; requests that authenticate are never counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.server.app import create_app
from pal.server.auth_failures import AuthFailures
from pal.store.db import Database
from tests.api.computers_helpers import make_box

TOKEN = "pal_admin_test-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer pal_admin_wrong-wrong-wrong"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _app(database: Database, tmp_path: Path, clock: Clock, auth: str) -> TestClient:
    env = {"PAL_HOME": str(tmp_path / "home"), "PAL_AUTH": auth}
    app = create_app(load_settings(env, db_url=database.url), database=database, admin_token=TOKEN)
    app.state.auth_failures = AuthFailures(limit=3, window=30.0, clock=clock)
    return TestClient(app)


@pytest.fixture
def guarded(database: Database, tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    with _app(database, tmp_path, clock, "token") as client:
        yield client


@pytest.fixture
def open_server(database: Database, tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    """A loopback server (no admin token asked): daemon endpoints check keys themselves."""
    with _app(database, tmp_path, clock, "auto") as client:
        yield client


def test_wrong_admin_tokens_end_in_429_with_retry_after(guarded, clock):
    for _ in range(3):
        assert guarded.get("/api/rooms", headers=WRONG).status_code == 401
    r = guarded.get("/api/rooms", headers=WRONG)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "10"  # one try comes back every 30 / 3 s
    assert "too many failed authentications" in r.json()["error"]
    assert "wrong-wrong" not in r.text
    # While it waits, the address gets no try at all: not even the right token is checked.
    assert guarded.get("/api/rooms", headers=ADMIN).status_code == 429
    clock.now += 10
    assert guarded.get("/api/rooms", headers=ADMIN).status_code == 200


def test_successful_requests_are_never_counted(guarded):
    for _ in range(20):
        assert guarded.get("/api/rooms", headers=ADMIN).status_code == 200
    assert guarded.get("/api/rooms", headers=WRONG).status_code == 401


def test_requests_without_a_credential_are_not_counted(guarded):
    for _ in range(10):
        assert guarded.get("/api/rooms").status_code == 401
    assert guarded.get("/api/rooms", headers=ADMIN).status_code == 200


def test_other_addresses_are_not_affected(database, tmp_path, clock):
    app = create_app(
        load_settings({"PAL_HOME": str(tmp_path / "h"), "PAL_AUTH": "token"}, db_url=database.url),
        database=database,
        admin_token=TOKEN,
    )
    app.state.auth_failures = AuthFailures(limit=3, window=30.0, clock=clock)
    with TestClient(app, client=("203.0.113.9", 5000)) as attacker:
        for _ in range(4):
            attacker.get("/api/rooms", headers=WRONG)
        assert attacker.get("/api/rooms", headers=WRONG).status_code == 429
        daemon = TestClient(app, client=("198.51.100.7", 5000))  # the same running app
        assert daemon.get("/api/rooms", headers=ADMIN).status_code == 200


def test_wrong_computer_keys_are_limited_on_an_open_server(open_server, database):
    box = make_box(database)
    bad = {"Authorization": "Bearer sk_machine_not-a-key"}
    for _ in range(3):
        r = open_server.post(f"/api/computers/{box.id}/heartbeat", json={}, headers=bad)
        assert r.status_code == 401
    r = open_server.post(f"/api/computers/{box.id}/heartbeat", json={}, headers=bad)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_wrong_workbench_sign_ins_are_limited(guarded, clock):
    for _ in range(3):
        assert guarded.post("/api/workbench/login", json={"token": "guess"}).status_code == 401
    r = guarded.post("/api/workbench/login", json={"token": "guess"})
    assert r.status_code == 429 and r.headers["retry-after"] == "10"
    clock.now += 10
    assert guarded.post("/api/workbench/login", json={"token": TOKEN}).status_code == 204


def test_the_limiter_forgets_the_oldest_addresses_past_its_bound():
    failures = AuthFailures(limit=1, window=60.0, clock=lambda: 0.0, max_addresses=2)
    for address in ("a", "b", "c"):
        failures.record(address)
    assert failures.retry_after("a") is None  # forgotten
    assert failures.retry_after("c") == 60
