"""The Lark API: status and reload (the running bots survive an invalid file), received
events, sending through a bot, and the Lark users allowed to reach agents."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.lark.manager import LarkManager
from pal.server.app import create_app
from pal.store import lark as lark_store
from pal.store.db import Database
from tests.unit.test_lark_manager import SECRET, StubConnection, bot


class StubRest:
    """Records what it was asked to send; ``fail`` makes it raise that exception."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.sent: list[tuple[str, str, str]] = []
        self.fail: Exception | None = None

    async def send(self, receive_id: str, receive_id_type: str, text: str) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        self.sent.append((receive_id, receive_id_type, text))
        return {"message_id": f"om_{len(self.sent)}", "chat_id": receive_id}

    async def aclose(self) -> None:
        pass


class LarkApp:
    def __init__(self, client: TestClient, path: Path) -> None:
        self.client = client
        self.path = path

    @property
    def manager(self) -> LarkManager:
        manager: LarkManager = self.client.app.state.lark  # type: ignore[attr-defined]
        return manager

    def write(self, *bots: dict[str, Any]) -> None:
        self.path.write_text(json.dumps({"bots": list(bots)}))


@pytest.fixture
def make_lark_app(database: Database, tmp_path: Path) -> Iterator[Callable[..., LarkApp]]:
    """``make_lark_app(content=None)``: the app with lark.json holding ``content`` (a str is
    written as is) and stub connections and REST clients."""
    stack = ExitStack()

    def make(content: Any = None) -> LarkApp:
        path = tmp_path / "lark.json"
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        settings = load_settings(
            {"PAL_HOME": str(tmp_path / "home"), "PAL_LARK_CONFIG": str(path)},
            db_url=database.url,
        )

        def manager(settings: Any, db: Any, hub: Any) -> LarkManager:
            return LarkManager(settings, db, hub, connect=StubConnection, rest=StubRest)

        app = create_app(settings, database=database, lark_manager=manager)
        return LarkApp(stack.enter_context(TestClient(app)), path)

    yield make
    stack.close()


def test_lark_status_without_a_file_has_no_bots(make_lark_app):
    lark = make_lark_app()
    r = lark.client.get("/api/lark")
    assert r.status_code == 200
    assert r.json() == {"config": str(lark.path), "error": None, "bots": []}


def test_lark_status_lists_bots_with_the_secret_redacted(make_lark_app):
    lark = make_lark_app({"bots": [bot(label="Main", open_id="ou_bot")]})
    body = lark.client.get("/api/lark").json()
    assert SECRET not in json.dumps(body)
    [shown] = body["bots"]
    assert (shown["app_id"], shown["agent"], shown["label"], shown["open_id"]) == (
        "cli_a",
        "codex",
        "Main",
        "ou_bot",
    )
    assert (shown["state"], shown["app_secret"]) == ("connected", "s3c…(redacted)")


def test_lark_corrupt_file_at_start_is_shown_and_the_server_still_serves(make_lark_app):
    lark = make_lark_app('{"bots": [}')
    assert lark.client.get("/health").status_code == 200
    body = lark.client.get("/api/lark").json()
    assert body["bots"] == []
    assert body["error"] == f"{lark.path} is not valid JSON (Expecting value at line 1 column 11)"

    lark.write(bot())
    r = lark.client.post("/api/lark/reload")
    assert r.status_code == 200, r.text
    assert r.json()["error"] is None
    assert [b["state"] for b in r.json()["bots"]] == ["connected"]


def test_lark_reload_applies_the_file_and_an_invalid_one_keeps_the_bots(make_lark_app):
    lark = make_lark_app({"bots": [bot()]})
    lark.write(bot(), bot("cli_b", agent="reviewer"))
    r = lark.client.post("/api/lark/reload")
    assert r.status_code == 200, r.text
    assert [b["app_id"] for b in r.json()["bots"]] == ["cli_a", "cli_b"]

    lark.write(bot(), bot("cli_b", agent="codex"))
    r = lark.client.post("/api/lark/reload")
    assert r.status_code == 422
    assert r.json() == {
        "error": f"{lark.path} is invalid: bots[1] (app_id cli_b): agent codex is already "
        "bound to bot cli_a; an agent may be bound to one bot only (set one of them to null)"
    }
    status = lark.client.get("/api/lark").json()
    assert [(b["app_id"], b["agent"], b["state"]) for b in status["bots"]] == [
        ("cli_a", "codex", "connected"),
        ("cli_b", "reviewer", "connected"),
    ]
    assert status["error"] == r.json()["error"]

    lark.write(bot(domain="http://open.feishu.cn"))
    r = lark.client.post("/api/lark/reload")
    assert r.status_code == 422 and "domain: uses http:// for a host" in r.json()["error"]
    assert SECRET not in r.text


def test_lark_events_newest_first_filtered_by_bot(make_lark_app, database):
    lark = make_lark_app()

    def write(conn):
        for n in range(3):
            lark_store.record_event(
                conn, "cli_a", {"header": {"event_id": f"a{n}"}}, outcome="ignored"
            )
        lark_store.record_event(
            conn,
            "cli_b",
            {"n": 1},
            outcome="unauthorized",
            detail="not a lark user",
            sender_id="on_1",
        )

    database_write(database, write)
    events = lark.client.get("/api/lark/events").json()["events"]
    assert [(e["app_id"], e["event_id"]) for e in events] == [
        ("cli_b", None),
        ("cli_a", "a2"),
        ("cli_a", "a1"),
        ("cli_a", "a0"),
    ]
    assert (events[0]["outcome"], events[0]["detail"], events[0]["sender_id"]) == (
        "unauthorized",
        "not a lark user",
        "on_1",
    )
    assert events[0]["payload"] == {"n": 1}
    page = lark.client.get("/api/lark/events", params={"app_id": "cli_a", "limit": 2})
    assert [e["event_id"] for e in page.json()["events"]] == ["a2", "a1"]
    for params in ({"limit": 0}, {"limit": 1001}, {"app_id": "a b"}):
        r = lark.client.get("/api/lark/events", params=params)
        assert r.status_code == 422 and r.json()["error"].startswith("invalid request: ")


def database_write(database: Database, fn: Callable[[Any], Any]) -> Any:
    import asyncio

    return asyncio.run(database.write(fn))


def test_lark_events_keep_the_newest_thousand_per_bot(database):
    def write(conn):
        lark_store.record_event(conn, "cli_other", {}, outcome="ignored", event_id="other")
        for n in range(lark_store.EVENTS_KEPT + 5):
            lark_store.record_event(conn, "cli_a", {}, outcome="ignored", event_id=f"e{n}")

    database_write(database, write)
    kept = database_read(database, lambda c: lark_store.list_events(c, app_id="cli_a", limit=1000))
    assert len(kept) == lark_store.EVENTS_KEPT
    assert kept[0]["event_id"] == "e1004" and kept[-1]["event_id"] == "e5"
    others = database_read(database, lambda c: lark_store.list_events(c, app_id="cli_other"))
    assert [e["event_id"] for e in others] == ["other"]


def database_read(database: Database, fn: Callable[[Any], Any]) -> Any:
    import asyncio

    return asyncio.run(database.read(fn))


def test_lark_send_goes_through_the_bots_rest_client(make_lark_app):
    lark = make_lark_app({"bots": [bot()]})
    r = lark.client.post(
        "/api/lark/send", json={"app_id": "cli_a", "to": "ou_1", "to_type": "open_id", "text": "hi"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"message": {"message_id": "om_1", "chat_id": "ou_1"}}
    r = lark.client.post("/api/lark/send", json={"app_id": "cli_a", "to": "oc_1", "text": "yo"})
    assert r.json()["message"]["message_id"] == "om_2"
    assert lark.manager.rest("cli_a").sent == [("ou_1", "open_id", "hi"), ("oc_1", "chat_id", "yo")]


def test_lark_send_to_an_unknown_bot_is_404(make_lark_app):
    lark = make_lark_app({"bots": [bot()]})
    r = lark.client.post("/api/lark/send", json={"app_id": "cli_nope", "to": "oc_1", "text": "x"})
    assert r.status_code == 404
    assert r.json()["error"].startswith(f"Lark bot 'cli_nope' is not in {lark.path}; ")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"to": "oc_1", "text": "x"}, "app_id: is required"),
        ({"app_id": "cli_a", "to": "oc_1", "text": " "}, "text: "),
        ({"app_id": "cli_a", "to": "oc_1", "text": "x", "to_type": "phone"}, "to_type: "),
        ({"app_id": "cli_a", "to": "oc 1", "text": "x"}, "to: "),
        ({"app_id": "cli_a", "to": "oc_1", "text": "x", "extra": 1}, "extra: unknown field"),
    ],
)
def test_lark_send_validates_the_body(make_lark_app, body, problem):
    lark = make_lark_app({"bots": [bot()]})
    r = lark.client.post("/api/lark/send", json=body)
    assert r.status_code == 422 and problem in r.json()["error"], r.text


def test_lark_send_refused_by_lark_is_502_with_larks_code(make_lark_app):
    rest = pytest.importorskip("pal.lark.rest")
    lark = make_lark_app({"bots": [bot()]})
    lark.manager.rest("cli_a").fail = rest.LarkApiError(
        230002, "Bot/User can NOT be out of the chat.", 400
    )
    r = lark.client.post("/api/lark/send", json={"app_id": "cli_a", "to": "oc_x", "text": "x"})
    assert r.status_code == 502
    assert r.json()["error"] == (
        "Lark refused the message (code 230002: Bot/User can NOT be out of the chat.); check "
        "--to and --to-type, and that bot cli_a is in that chat"
    )


def test_lark_users_add_list_rename_delete(make_lark_app):
    client = make_lark_app().client
    assert client.get("/api/lark-users").json() == {"users": []}
    r = client.post("/api/lark-users", json={"user_id": "on_bob", "name": "Bob"})
    assert r.status_code == 201
    assert (r.json()["user"]["user_id"], r.json()["user"]["name"], r.json()["created"]) == (
        "on_bob",
        "Bob",
        True,
    )
    client.post("/api/lark-users", json={"user_id": "ou_alice", "name": " Alice "})
    r = client.post("/api/lark-users", json={"user_id": "on_bob", "name": "Robert"})
    assert r.status_code == 200 and r.json()["created"] is False
    users = client.get("/api/lark-users").json()["users"]
    assert [(u["user_id"], u["name"]) for u in users] == [
        ("on_bob", "Robert"),
        ("ou_alice", "Alice"),
    ]

    r = client.delete("/api/lark-users/on_bob")
    assert r.status_code == 200 and r.json()["user"]["name"] == "Robert"
    r = client.delete("/api/lark-users/on_bob")
    assert r.status_code == 404 and r.json() == {"error": "Lark user 'on_bob' not found"}
    assert [u["user_id"] for u in client.get("/api/lark-users").json()["users"]] == ["ou_alice"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "Bob"}, "user_id: is required"),
        ({"user_id": "on_bob"}, "name: is required"),
        ({"user_id": "on bob", "name": "Bob"}, "user_id: "),
        ({"user_id": "on_bob", "name": "  "}, "name: "),
        ({"user_id": "x" * 101, "name": "Bob"}, "user_id: "),
        ({"user_id": "on_bob", "name": "Bob", "role": "admin"}, "role: unknown field"),
        ({"user_id": "on_bob", "name": "B\x00b"}, "must not contain NUL"),
    ],
)
def test_lark_users_add_validates_the_body(make_lark_app, body, problem):
    client = make_lark_app().client
    r = client.post("/api/lark-users", json=body)
    assert r.status_code == 422 and problem in r.json()["error"], r.text
    assert client.get("/api/lark-users").json() == {"users": []}


def test_lark_store_authorized_user_matches_any_of_the_senders_ids(database):
    database_write(database, lambda c: lark_store.add_lark_user(c, "on_bob", "Bob"))
    found = database_read(
        database, lambda c: lark_store.authorized_user(c, ["ou_other", None, "on_bob"])
    )
    assert found["name"] == "Bob"
    assert database_read(database, lambda c: lark_store.authorized_user(c, ["ou_x", None])) is None


def test_lark_store_messages_are_deduped_per_bot(database):
    first = database_write(
        database, lambda c: lark_store.add_message(c, "cli_a", "om_1", chat_id="oc")
    )
    again = database_write(database, lambda c: lark_store.add_message(c, "cli_a", "om_1"))
    other_bot = database_write(database, lambda c: lark_store.add_message(c, "cli_b", "om_1"))
    assert first["id"] and again is None and other_bot["id"] != first["id"]
    database_write(database, lambda c: lark_store.update_message(c, first["id"], reaction_id="r1"))
    stored = database_read(database, lambda c: lark_store.find_message(c, "cli_a", "om_1"))
    assert (stored["reaction_id"], stored["chat_id"]) == ("r1", "oc")
