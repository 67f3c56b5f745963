"""schemathesis against /openapi.json: every operation, authenticated, no 5xx and no
response that breaks the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi

from pal.config import load_settings
from pal.server import auth
from pal.server.api.fields import MAX_ID
from pal.server.app import ROUTERS, create_app
from pal.server.auth_failures import AuthFailures

TOKEN = "pal_admin_fuzz-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
BASE = "http://testserver"


def _uses_computer(dependant: Dependant) -> bool:
    return any(d.call is auth._computer or _uses_computer(d) for d in dependant.dependencies)


def daemon_operations() -> set[tuple[str, str]]:
    """(METHOD, path) of the operations that take a computer API key."""
    found = set()
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute) and _uses_computer(route.dependant):
                found.update((m, route.path_format) for m in route.methods)
    assert ("POST", "/api/deliveries/{delivery_id}/claim") in found
    return found


def make_app(home: Path) -> FastAPI:
    settings = load_settings(
        {"PAL_HOME": str(home), "PAL_AUTH": "token"}, db_url=f"sqlite:///{home / 'pal.sqlite'}"
    )
    return create_app(settings, admin_token=TOKEN)


# The schema is the app's own (no lifespan needed to describe it); the test checks it is the
# one the running server serves.
DESCRIBED = make_app(Path("/nonexistent"))
# The API refuses NUL in every string (PostgreSQL text cannot hold it; docs/api.md), a rule
# the schema does not spell out field by field.
CONFIG = schemathesis.Config.from_dict({"generation": {"allow-x00": False}})
schema = schemathesis.openapi.from_dict(DESCRIBED.openapi(), config=CONFIG)
DAEMON = daemon_operations()


class Fuzzed:
    """The app in-process (lifespan run once) and a computer API key for daemon calls."""

    def __init__(self, client: asgi.ASGIClient) -> None:
        self.client = client
        self.key = ""
        self.provision()

    def provision(self) -> None:
        """A new computer and key: the fuzzer may revoke or rotate the last one (it reuses
        ids it saw in answers)."""
        r = self.client.post("/api/computers/provision", json={"name": "fuzzbox"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        self.key = r.json()["api_key"]

    def check(self, case: schemathesis.Case) -> None:
        """Send the case with the credential its operation takes, and run every check."""
        daemon = (case.method.upper(), case.path) in DAEMON
        response = case.call(session=self.client, base_url=BASE, headers=self.headers(daemon))
        if daemon and response.status_code == 401:
            self.provision()
            response = case.call(session=self.client, base_url=BASE, headers=self.headers(daemon))
        headers = self.headers(daemon)
        refused = response.status_code in (400, 422)
        if refused and _past_64_bits([case.body, case.query, case.path_parameters]):
            # The schema validator reads numbers as doubles, in which 2**63 - 1 (the largest
            # id) and numbers a little past it are equal, so it may call such a request
            # valid; the server rightly refuses it.
            return
        case.validate_response(
            response,
            headers=headers,
            transport_kwargs={"session": self.client, "base_url": BASE, "headers": headers},
        )

    def headers(self, daemon: bool) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if daemon else ADMIN


def _past_64_bits(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value <= MAX_ID
    if isinstance(value, dict):
        return any(_past_64_bits(v) for v in value.values())
    if isinstance(value, list):
        return any(_past_64_bits(v) for v in value)
    return False


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    app = make_app(tmp_path_factory.mktemp("fuzz") / "home")
    # Some checks send wrong credentials on purpose; the limit on them has its own tests
    # (tests/api/test_auth_failures.py) and would answer 429 here.
    app.state.auth_failures = AuthFailures(limit=10**9)
    with asgi.get_client(app) as client:
        assert client.get("/openapi.json").json() == DESCRIBED.openapi()
        yield Fuzzed(client)
    asgi.shutdown_lifespans()


@schema.parametrize()
@settings(max_examples=20, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    if case.path == "/api/debates" and isinstance(case.body, dict):
        # What the schema cannot say: a debate needs two different agents (a 422 otherwise).
        if case.body.get("a") == case.body.get("b"):
            return
    fuzzed.check(case)
