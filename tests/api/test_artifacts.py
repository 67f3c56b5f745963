"""Artifacts: uploads stream to disk within the size limit, are served in a sandbox at a
capability URL, answer 410 once expired or revoked, and cleanup deletes their files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pal.config import DEFAULT_ARTIFACT_TTL, load_settings
from pal.errors import Conflict
from pal.server import artifact_files
from pal.server.app import create_app
from pal.store import artifacts as artifacts_store
from pal.store.db import Database
from pal.store.tables import artifacts, utcnow
from tests.api.computers_helpers import agent_on, hub_events, make_box, running
from tests.helpers import make_agent, make_room

HTML = b"<!doctype html><h1>Report</h1><script>document.title = 'x'</script>"
LIMIT = 2048


def upload(
    client: TestClient,
    body: Any = HTML,
    *,
    content_type: str | None = "text/html",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> Any:
    params.setdefault("title", "Report")
    sent = dict(headers or {})
    if content_type is not None:
        sent["content-type"] = content_type
    return client.post("/api/artifacts", params=params, content=body, headers=sent)


def uploaded(client: TestClient, body: Any = HTML, **kwargs: Any) -> dict[str, Any]:
    r = upload(client, body, **kwargs)
    assert r.status_code == 201, r.text
    artifact: dict[str, Any] = r.json()["artifact"]
    return artifact


def files(client: TestClient) -> list[str]:
    """The names in the server's artifacts folder."""
    folder: Path = client.app.state.settings.artifacts_dir  # type: ignore[attr-defined]
    return sorted(os.listdir(folder)) if folder.exists() else []


def rows(database: Database) -> list[dict[str, Any]]:
    return database.read_sync(artifacts_store.list_artifacts)


def set_expires(database: Database, artifact_id: str, delta: timedelta) -> None:
    """Move the artifact's expiry to now + ``delta`` (negative: it has expired)."""

    def write(conn: sa.Connection) -> None:
        conn.execute(
            artifacts.update()
            .where(artifacts.c.id == artifact_id)
            .values(expires_at=utcnow() + delta)
        )

    database.write_sync(write)


@pytest.fixture
def small(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The app with PAL_ARTIFACT_MAX_BYTES = 2048."""
    settings = load_settings(
        {"PAL_HOME": str(tmp_path / "home")}, db_url=database.url, artifact_max_bytes=LIMIT
    )
    with TestClient(create_app(settings, database=database)) as test_client:
        yield test_client


# -- upload and metadata -------------------------------------------------------------------------


def test_an_upload_is_stored_and_answered_with_its_url(client: TestClient) -> None:
    with hub_events(client) as events:
        artifact = uploaded(client)
        [event] = events()
    assert artifact["id"].startswith("art_") and len(artifact["id"]) >= 26
    assert artifact["url"] == f"http://testserver/artifacts/{artifact['id']}"
    assert (artifact["title"], artifact["mime"], artifact["size"]) == (
        "Report",
        "text/html",
        len(HTML),
    )
    assert artifact["sha256"] == hashlib.sha256(HTML).hexdigest()
    assert artifact["status"] == "active" and artifact["revoked_at"] is None
    assert "path" not in artifact
    assert event["kind"] == "artifact"
    assert (event["action"], event["artifact_id"]) == ("created", artifact["id"])
    # the file is whole, under its id, and nothing else is in the folder
    assert files(client) == [artifact["id"]]
    assert client.get(f"/api/artifacts/{artifact['id']}").json()["artifact"] == artifact


def test_artifact_ids_are_random(client: TestClient) -> None:
    ids = {uploaded(client)["id"] for _ in range(5)}
    assert len(ids) == 5


def test_the_default_ttl_is_pal_artifact_ttl_and_0_means_never(client: TestClient) -> None:
    from datetime import datetime

    artifact = uploaded(client)
    created = datetime.fromisoformat(artifact["created_at"])
    expires = datetime.fromisoformat(artifact["expires_at"])
    assert expires - created == timedelta(seconds=DEFAULT_ARTIFACT_TTL)
    assert uploaded(client, ttl=0)["expires_at"] is None
    short = uploaded(client, ttl=60)
    delta = datetime.fromisoformat(short["expires_at"]) - datetime.fromisoformat(
        short["created_at"]
    )
    assert delta == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("content_type", "params", "expected"),
    [
        (None, {}, "application/octet-stream"),
        ("application/x-www-form-urlencoded", {}, "application/octet-stream"),
        ("application/json", {}, "application/json"),
        ("Text/Plain; charset=UTF-8", {}, "text/plain; charset=UTF-8"),
        ("not a type", {}, "application/octet-stream"),
        ("text/plain", {"mime": "image/svg+xml"}, "image/svg+xml"),
    ],
)
def test_the_mime_type_is_the_parameter_else_the_content_type_sent(
    client: TestClient, content_type: str | None, params: dict[str, str], expected: str
) -> None:
    artifact = uploaded(client, b"data", content_type=content_type, **params)
    assert artifact["mime"] == expected
    assert client.get(f"/artifacts/{artifact['id']}").headers["content-type"].startswith(expected)


def test_an_upload_records_its_agent_room_run_and_computer(
    client: TestClient, database: Database
) -> None:
    box = make_box(database)
    agent_on(client, box)
    run = running(client, box)
    room = make_room(client, "reports")
    artifact = uploaded(
        client, created_by="codex", room="reports", run_id=run["id"], headers=box.headers
    )
    assert (artifact["created_by"], artifact["room_id"], artifact["room"]) == (
        "codex",
        room["id"],
        "reports",
    )
    assert (artifact["run_id"], artifact["computer_id"]) == (run["id"], box.id)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"created_by": "nobody"}, "agent 'nobody' not found"),
        ({"room": "nowhere"}, "room 'nowhere' not found"),
        ({"run_id": 999}, "run 999 not found"),
    ],
)
def test_an_upload_naming_what_does_not_exist_is_404_and_stores_nothing(
    client: TestClient, database: Database, params: dict[str, Any], message: str
) -> None:
    r = upload(client, **params)
    assert r.status_code == 404, r.text
    assert r.json() == {"error": message}
    assert files(client) == [] and rows(database) == []


@pytest.mark.parametrize(
    ("params", "content_type", "status", "fragment"),
    [
        ({"title": None}, "text/html", 422, "title: is required"),
        ({"title": ""}, "text/html", 422, "title"),
        ({"title": "x" * 201}, "text/html", 422, "title"),
        ({"title": "   "}, "text/html", 422, "only whitespace"),
        ({"title": "a\nb"}, "text/html", 422, "control characters"),
        ({"mime": "html"}, "text/html", 422, "is not a media type"),
        ({"mime": "text/html; <script>"}, "text/html", 422, "is not a media type"),
        ({"ttl": -1}, "text/html", 422, "ttl"),
        ({"ttl": 10**12}, "text/html", 422, "ttl"),
        ({"ttl": "soon"}, "text/html", 422, "ttl"),
        ({"created_by": "bad key!"}, "text/html", 422, "created_by"),
        ({"run_id": 0}, "text/html", 422, "run_id"),
        ({}, "multipart/form-data; boundary=x", 415, "not a multipart form"),
    ],
)
def test_bad_upload_parameters_are_4xx_and_store_nothing(
    client: TestClient,
    database: Database,
    params: dict[str, Any],
    content_type: str,
    status: int,
    fragment: str,
) -> None:
    query = {"title": "Report", **params}
    query = {k: v for k, v in query.items() if v is not None}
    r = client.post(
        "/api/artifacts", params=query, content=HTML, headers={"content-type": content_type}
    )
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert files(client) == [] and rows(database) == []


def test_an_empty_body_is_refused(client: TestClient, database: Database) -> None:
    r = upload(client, b"")
    assert r.status_code == 422
    assert "the request body is empty" in r.json()["error"]
    assert files(client) == [] and rows(database) == []


# -- the size limit --------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    small: TestClient, database: Database
) -> None:
    def body() -> Iterator[bytes]:  # no content-length: only counting can catch it
        for _ in range(4):
            yield b"x" * 1000

    r = upload(small, body(), content_type="application/octet-stream")
    assert r.status_code == 413, r.text
    assert "PAL_ARTIFACT_MAX_BYTES" in r.json()["error"]
    assert "2,048 bytes" in r.json()["error"]
    assert files(small) == [] and rows(database) == []
    # exactly the limit is fine
    assert uploaded(small, b"y" * LIMIT)["size"] == LIMIT


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(
    small: TestClient, database: Database
) -> None:
    r = upload(small, b"x" * (LIMIT + 1), content_type="text/plain")
    assert r.status_code == 413
    assert "PAL_ARTIFACT_MAX_BYTES" in r.json()["error"]
    assert files(small) == [] and rows(database) == []


def test_receiving_stops_at_the_chunk_that_crosses_the_limit(tmp_path: Path) -> None:
    taken: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(100):
            taken.append(i)
            yield b"x" * 100

    with pytest.raises(artifact_files.TooLarge):
        asyncio.run(artifact_files.receive(chunks(), tmp_path, 250))
    assert taken == [0, 1, 2]
    assert os.listdir(tmp_path) == []


def test_a_failed_insert_leaves_no_file(
    client: TestClient, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(conn: sa.Connection, **fields: Any) -> Any:
        raise Conflict("refused by the test")

    monkeypatch.setattr(artifacts_store, "insert_artifact", refuse)
    r = upload(client)
    assert r.status_code == 409
    assert files(client) == [] and rows(database) == []


# -- the content -------------------------------------------------------------------------


def test_the_content_is_served_in_a_sandbox(client: TestClient) -> None:
    artifact = uploaded(client, title="Q3 report é")
    r = client.get(f"/artifacts/{artifact['id']}")
    assert r.status_code == 200
    assert r.content == HTML
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    policy = [p.strip() for p in r.headers["content-security-policy"].split(";")]
    sandbox = next(p for p in policy if p.startswith("sandbox"))
    assert "allow-same-origin" not in sandbox and "allow-scripts" in sandbox
    assert "connect-src 'none'" in policy and "form-action 'none'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cross-origin-resource-policy"] == "same-origin"
    assert "set-cookie" not in r.headers
    assert r.headers["content-disposition"] == (
        "inline; filename=\"Q3 report _.html\"; filename*=UTF-8''Q3%20report%20%C3%A9.html"
    )
    head = client.head(f"/artifacts/{artifact['id']}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(HTML))
    assert "sandbox" in head.headers["content-security-policy"]


def test_a_title_that_tries_to_break_the_header_is_quoted_safely(client: TestClient) -> None:
    artifact = uploaded(client, title='a";b\\c.txt', content_type="text/plain")
    disposition = client.get(f"/artifacts/{artifact['id']}").headers["content-disposition"]
    assert disposition.startswith("inline; filename=\"a__b_c.txt\"; filename*=UTF-8''")
    assert '"' not in disposition.split("filename*=")[1]


def test_an_unknown_artifact_is_404(client: TestClient) -> None:
    r = client.get("/artifacts/art_doesnotexist")
    assert r.status_code == 404
    assert r.json() == {"error": "artifact 'art_doesnotexist' not found"}
    assert client.get("/api/artifacts/art_doesnotexist").status_code == 404
    assert client.post("/api/artifacts/art_doesnotexist/revoke").status_code == 404
    assert client.get("/api/artifacts/not-an-id").status_code == 422


def test_an_expired_artifact_answers_410(client: TestClient, database: Database) -> None:
    artifact = uploaded(client)
    set_expires(database, artifact["id"], timedelta(seconds=-5))
    r = client.get(f"/artifacts/{artifact['id']}")
    assert r.status_code == 410
    body = r.json()
    assert body["status"] == "expired" and body["revoked_at"] is None
    assert body["error"].startswith(f"artifact {artifact['id']} was expired at 20")
    assert client.head(f"/artifacts/{artifact['id']}").status_code == 410
    shown = client.get(f"/api/artifacts/{artifact['id']}").json()["artifact"]
    assert shown["status"] == "expired"


def test_revoke_answers_410_and_is_idempotent(client: TestClient) -> None:
    artifact = uploaded(client)
    with hub_events(client) as events:
        first = client.post(f"/api/artifacts/{artifact['id']}/revoke")
        again = client.post(f"/api/artifacts/{artifact['id']}/revoke")
        assert [(e["kind"], e["action"]) for e in events()] == [("artifact", "revoked")]
    assert first.status_code == again.status_code == 200
    revoked = first.json()["artifact"]
    assert revoked["status"] == "revoked" and revoked["revoked_at"]
    assert again.json()["artifact"]["revoked_at"] == revoked["revoked_at"]
    r = client.get(f"/artifacts/{artifact['id']}")
    assert r.status_code == 410
    assert r.json()["status"] == "revoked"
    assert "was revoked at" in r.json()["error"]


# -- lists ---------------------------------------------------------------------------------


def test_lists_are_newest_first_and_page_with_before(client: TestClient) -> None:
    made = [uploaded(client, title=f"a{i}")["id"] for i in range(5)]
    page = client.get("/api/artifacts", params={"limit": 3}).json()
    assert [a["id"] for a in page["artifacts"]] == made[::-1][:3]
    assert page["max_bytes"] == 50 * 1024 * 1024 and page["default_ttl"] == DEFAULT_ARTIFACT_TTL
    rest = client.get("/api/artifacts", params={"before": made[2]}).json()["artifacts"]
    assert [a["id"] for a in rest] == [made[1], made[0]]
    r = client.get("/api/artifacts", params={"before": "art_gone"})
    assert r.status_code == 404


def test_the_workbench_list_shows_status_url_and_who(
    client: TestClient, database: Database
) -> None:
    make_agent(client, "codex")
    make_room(client, "reports")
    active = uploaded(client, created_by="codex", room="reports", ttl=0)
    expired = uploaded(client)
    revoked = uploaded(client)
    set_expires(database, expired["id"], timedelta(seconds=-1))
    client.post(f"/api/artifacts/{revoked['id']}/revoke")
    listed = client.get("/api/workbench/artifacts").json()["artifacts"]
    assert [(a["id"], a["status"]) for a in listed] == [
        (revoked["id"], "revoked"),
        (expired["id"], "expired"),
        (active["id"], "active"),
    ]
    shown = listed[2]
    assert (shown["created_by"], shown["room"], shown["expires_at"]) == ("codex", "reports", None)
    assert shown["url"] == active["url"] and shown["size"] == len(HTML)


# -- cleanup -------------------------------------------------------------------------------


def test_cleanup_removes_the_files_of_expired_and_revoked_artifacts(
    client: TestClient, database: Database
) -> None:
    active = uploaded(client)
    expired = uploaded(client, b"e" * 10)
    revoked = uploaded(client, b"r" * 20)
    set_expires(database, expired["id"], timedelta(seconds=-1))
    client.post(f"/api/artifacts/{revoked['id']}/revoke")
    with hub_events(client) as events:
        r = client.post("/api/artifacts/cleanup")
        assert [(e["kind"], e["action"]) for e in events()] == [("artifact", "cleanup")]
    assert r.status_code == 200
    assert r.json() == {"removed": 2, "expired": 1, "revoked": 1, "bytes_freed": 30, "leftovers": 0}
    assert files(client) == [active["id"]]
    # the rows stay, so the URLs keep saying why they are gone
    for artifact, state in ((expired, "expired"), (revoked, "revoked")):
        gone = client.get(f"/artifacts/{artifact['id']}")
        assert gone.status_code == 410 and gone.json()["status"] == state
        shown = client.get(f"/api/artifacts/{artifact['id']}").json()["artifact"]
        assert shown["removed_at"] is not None
    assert client.get(f"/artifacts/{active['id']}").content == HTML
    again = client.post("/api/artifacts/cleanup").json()
    assert (again["removed"], again["bytes_freed"]) == (0, 0)


def test_cleanup_removes_old_leftovers_of_failed_uploads(client: TestClient) -> None:
    keep = uploaded(client)
    folder: Path = client.app.state.settings.artifacts_dir  # type: ignore[attr-defined]
    old = time.time() - artifact_files.LEFTOVER_AGE - 60
    for name in (".upload-dead.part", "art_orphan"):
        (folder / name).write_bytes(b"12345")
        os.utime(folder / name, (old, old))
    (folder / ".upload-live.part").write_bytes(b"in progress")
    r = client.post("/api/artifacts/cleanup").json()
    assert (r["leftovers"], r["bytes_freed"], r["removed"]) == (2, 10, 0)
    assert files(client) == [".upload-live.part", keep["id"]]


def test_the_server_cleans_up_in_the_background(database: Database, tmp_path: Path) -> None:
    settings = load_settings({"PAL_HOME": str(tmp_path / "home")}, db_url=database.url)

    async def scenario() -> dict[str, Any]:
        folder = artifact_files.artifacts_dir(settings)
        (folder / "art_bg").write_bytes(b"abc")
        await database.write(
            lambda conn: artifacts_store.insert_artifact(
                conn,
                artifact_id="art_bg",
                title="bg",
                mime="text/plain",
                size=3,
                sha256="0" * 64,
                path="art_bg",
                expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        task = asyncio.create_task(
            artifact_files.cleanup_forever(database, settings, interval=0.01)
        )
        try:
            for _ in range(1000):  # polls a condition for at most 10 s
                artifact = await database.read(artifacts_store.get_artifact, "art_bg")
                if artifact["removed_at"] is not None:
                    return artifact
                await asyncio.sleep(0.01)
            raise AssertionError("the background cleanup did not run within 10 s")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    artifact = asyncio.run(scenario())
    assert artifact["removed_at"] is not None
    assert not (settings.artifacts_dir / "art_bg").exists()


def test_the_openapi_document_lists_the_artifact_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for method, path in [
        ("post", "/api/artifacts"),
        ("get", "/api/artifacts"),
        ("get", "/api/artifacts/{artifact_id}"),
        ("post", "/api/artifacts/{artifact_id}/revoke"),
        ("post", "/api/artifacts/cleanup"),
        ("get", "/api/workbench/artifacts"),
        ("get", "/artifacts/{artifact_id}"),
    ]:
        assert method in paths.get(path, {}), (method, path)
    body = paths["/api/artifacts"]["post"]["requestBody"]["content"]
    binary = {"type": "string", "format": "binary", "minLength": 1}
    assert body == {"application/octet-stream": {"schema": binary}}
