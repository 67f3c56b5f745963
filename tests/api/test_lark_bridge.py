"""The Lark bridge in-process (stub connections and REST): which events reach an agent,
who is authorized, dedupe, rooms, the reaction's life, replies and sends, and recovery of
reactions left on while the server was down."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.lark.bridge import bridged_manager
from pal.lark.manager import LarkManager
from pal.lark.rest import LarkApiError
from pal.server.app import create_app
from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import lark as lark_store
from pal.store import rooms as rooms_store
from pal.store.db import Database
from pal.store.tables import deliveries
from tests.api.computers_helpers import assign, claimed, make_box, start_run
from tests.conftest import wait_until
from tests.helpers import make_agent, post
from tests.unit.test_lark_manager import SECRET, StubConnection

BOT_OPEN_ID = "ou_bot_a"
ALICE = {"union_id": "on_alice", "open_id": "ou_alice_a", "user_id": "u_alice"}


class RecordingRest:
    """A bot's REST client that records every call; ``fail`` makes add_reaction raise."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.calls: list[tuple[Any, ...]] = []
        self.fail: Exception | None = None

    async def add_reaction(self, message_id: str, emoji: str) -> str:
        if self.fail:
            raise self.fail
        self.calls.append(("add_reaction", message_id, emoji))
        return f"re_{message_id}"

    async def delete_reaction(self, message_id: str, reaction_id: str) -> None:
        self.calls.append(("delete_reaction", message_id, reaction_id))

    async def reply(self, message_id: str, text: str, uuid: str | None = None) -> dict[str, Any]:
        self.calls.append(("reply", message_id, text, uuid))
        return {"message_id": "om_reply"}

    async def send(
        self, receive_id: str, receive_id_type: str, text: str, uuid: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("send", receive_id, receive_id_type, text, uuid))
        return {"message_id": "om_sent"}

    async def aclose(self) -> None:
        pass


class Bridge:
    def __init__(self, client: TestClient, database: Database) -> None:
        self.client = client
        self.database = database

    @property
    def manager(self) -> LarkManager:
        manager: LarkManager = self.client.app.state.lark  # type: ignore[attr-defined]
        return manager

    @property
    def rest(self) -> RecordingRest:
        rest: RecordingRest = self.manager.rest("cli_a")
        return rest

    def receive(self, event: dict[str, Any], app_id: str = "cli_a") -> None:
        """Hand ``event`` to the bot's handler, as its connection does after the ack."""
        connection = self.manager._connections[app_id]
        assert isinstance(connection, StubConnection)
        self.client.portal.call(connection.on_event, event)  # type: ignore[union-attr]

    def events(self) -> list[dict[str, Any]]:
        return self.database.read_sync(lambda conn: lark_store.list_events(conn, limit=100))

    def calls(self, kind: str, count: int = 1) -> list[tuple[Any, ...]]:
        def found() -> list[tuple[Any, ...]] | None:
            made = [c for c in self.rest.calls if c[0] == kind]
            return made if len(made) >= count else None

        result: list[tuple[Any, ...]] = wait_until(found, timeout=5)
        return result


def message_event(
    text: str = "hello",
    *,
    message_id: str = "om_1",
    chat_id: str = "oc_p2p_alice",
    chat_type: str = "p2p",
    sender: dict[str, str] | None = None,
    sender_type: str = "user",
    mentions: list[dict[str, Any]] | None = None,
    message_type: str = "text",
    content: str | None = None,
    event_type: str = "im.message.receive_v1",
) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {"event_id": f"ev_{message_id}", "event_type": event_type, "app_id": "cli_a"},
        "event": {
            "sender": {"sender_id": sender or ALICE, "sender_type": sender_type},
            "message": {
                "message_id": message_id,
                "chat_id": chat_id,
                "chat_type": chat_type,
                "message_type": message_type,
                "content": content if content is not None else json.dumps({"text": text}),
                "mentions": mentions or [],
            },
        },
    }


def mention(key: str, open_id: str, name: str) -> dict[str, Any]:
    return {"key": key, "id": {"open_id": open_id}, "name": name}


@pytest.fixture
def make_bridge(database: Database, tmp_path: Path) -> Iterator[Callable[..., Bridge]]:
    """``make_bridge(agent="codex", users=True)``: the app with one bot cli_a bound to
    ``agent`` (created), Alice authorized unless ``users`` is false."""
    stack = ExitStack()

    def make(agent: str | None = "codex", users: bool = True, before: Any = None) -> Bridge:
        path = tmp_path / "lark.json"
        bot = {"app_id": "cli_a", "app_secret": SECRET, "agent": agent, "open_id": BOT_OPEN_ID}
        path.write_text(json.dumps({"bots": [bot]}))
        settings = load_settings(
            {"PAL_HOME": str(tmp_path / "home"), "PAL_LARK_CONFIG": str(path)},
            db_url=database.url,
        )
        if before is not None:
            before()

        def manager(settings: Any, db: Any, hub: Any) -> LarkManager:
            return bridged_manager(settings, db, hub, connect=StubConnection, rest=RecordingRest)

        client = stack.enter_context(
            TestClient(create_app(settings, database=database, lark_manager=manager))
        )
        if agent is not None and client.get(f"/api/agents/{agent}").status_code == 404:
            make_agent(client, agent)
        if users:
            r = client.post("/api/lark-users", json={"user_id": "on_alice", "name": "Alice"})
            assert r.status_code in (200, 201), r.text
        return Bridge(client, database)

    yield make
    stack.close()


def room_messages(bridge: Bridge, room: str) -> list[dict[str, Any]]:
    r = bridge.client.get("/api/messages", params={"room": room})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["messages"]
    return found


def test_bridge_p2p_message_becomes_a_lark_room_message_delivery_and_reaction(make_bridge):
    bridge = make_bridge()
    bridge.receive(message_event("please look at the build"))

    [event] = bridge.events()
    assert event["outcome"] == "delivered"
    rooms = [r for r in bridge.client.get("/api/rooms").json()["rooms"] if r["kind"] == "lark"]
    [room] = rooms
    assert room["name"].startswith("lark-codex-alice-")
    [message] = room_messages(bridge, room["name"])
    assert (message["sender"], message["sender_kind"], message["content"]) == (
        "Alice",
        "lark",
        "please look at the build",
    )
    deliveries = bridge.client.get("/api/deliveries", params={"agent": "codex"}).json()
    [delivery] = deliveries["deliveries"]
    assert (delivery["message_id"], delivery["reason"]) == (message["id"], "lark_mention")
    members = bridge.client.get(f"/api/rooms/{room['name']}/members").json()["members"]
    assert [m["member"] for m in members] == ["codex"]
    assert bridge.calls("add_reaction") == [("add_reaction", "om_1", "Typing")]
    row = bridge.database.read_sync(lambda conn: lark_store.find_message(conn, "cli_a", "om_1"))
    assert (
        wait_until(
            lambda: bridge.database.read_sync(
                lambda conn: lark_store.find_message(conn, "cli_a", "om_1")
            )["reaction_id"]
        )
        == "re_om_1"
    )
    assert (row["pal_message_id"], row["delivery_id"]) == (message["id"], delivery["id"])

    # A second message in the same chat lands in the same room.
    bridge.receive(message_event("and the tests", message_id="om_2"))
    assert [m["content"] for m in room_messages(bridge, room["name"])] == [
        "please look at the build",
        "and the tests",
    ]


def test_bridge_unauthorized_sender_makes_nothing_and_says_how_to_allow(make_bridge):
    bridge = make_bridge(users=False)
    bridge.receive(message_event("hi"))
    [event] = bridge.events()
    assert event["outcome"] == "unauthorized"
    assert "union_id on_alice" in event["detail"]
    assert "`pal console lark-users add --user-id on_alice --name NAME`" in event["detail"]
    assert bridge.client.get("/api/deliveries").json()["deliveries"] == []
    assert all(r["kind"] != "lark" for r in bridge.client.get("/api/rooms").json()["rooms"])
    assert bridge.rest.calls == []


def test_bridge_open_id_of_this_bot_authorizes_too(make_bridge):
    bridge = make_bridge(users=False)
    bridge.client.post("/api/lark-users", json={"user_id": "ou_alice_a", "name": "Al"})
    bridge.receive(message_event("hi"))
    assert bridge.events()[0]["outcome"] == "delivered"


def test_bridge_repushed_message_is_a_duplicate_with_one_delivery(make_bridge):
    bridge = make_bridge()
    bridge.receive(message_event("once"))
    bridge.receive(message_event("once"))
    outcomes = [e["outcome"] for e in reversed(bridge.events())]
    assert outcomes == ["delivered", "duplicate"]
    assert len(bridge.client.get("/api/deliveries").json()["deliveries"]) == 1


def test_bridge_group_needs_a_mention_of_this_bot(make_bridge):
    bridge = make_bridge()
    group = {"chat_id": "oc_team", "chat_type": "group"}
    bridge.receive(message_event("chatter", message_id="om_g1", **group))
    others = [mention("@_user_1", "ou_bot_other", "Other bot")]
    bridge.receive(message_event("@_user_1 ping", message_id="om_g2", mentions=others, **group))
    both = [mention("@_user_1", BOT_OPEN_ID, "Codex bot"), mention("@_user_2", "ou_bob", "Bob")]
    text = "@_user_1 review this with @_user_2"
    bridge.receive(message_event(text, message_id="om_g3", mentions=both, **group))

    events = list(reversed(bridge.events()))
    assert [e["outcome"] for e in events] == ["ignored", "ignored", "delivered"]
    assert events[0]["detail"] == "a group message that does not @-mention this bot"
    [room] = [r for r in bridge.client.get("/api/rooms").json()["rooms"] if r["kind"] == "lark"]
    assert room["name"].startswith("lark-codex-group-")
    [message] = room_messages(bridge, room["name"])
    assert message["content"] == "review this with @Bob"
    assert len(bridge.client.get("/api/deliveries").json()["deliveries"]) == 1


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"event_type": "im.chat.member.bot.added_v1"}, "event type im.chat.member.bot.added_v1"),
        ({"sender_type": "app"}, "sent by a app, not a user"),
    ],
)
def test_bridge_ignores_other_events_and_bots(make_bridge, changes, detail):
    bridge = make_bridge()
    bridge.receive(message_event("x", **changes))
    [event] = bridge.events()
    assert event["outcome"] == "ignored" and event["detail"].startswith(detail)
    assert bridge.client.get("/api/deliveries").json()["deliveries"] == []


def test_bridge_unbound_bot_says_how_to_bind(make_bridge):
    bridge = make_bridge(agent=None)
    bridge.receive(message_event("x"))
    [event] = bridge.events()
    assert event["outcome"] == "ignored"
    assert (
        "bot cli_a is not bound to an agent; bind it with `pal console agents update"
        in (event["detail"])
    )


def test_bridge_non_text_gets_a_placeholder(make_bridge):
    bridge = make_bridge()
    bridge.receive(message_event(message_type="image", content='{"image_key": "img_1"}'))
    [room] = [r for r in bridge.client.get("/api/rooms").json()["rooms"] if r["kind"] == "lark"]
    assert [m["content"] for m in room_messages(bridge, room["name"])] == ["[image]"]


def test_bridge_failed_reaction_keeps_the_message_and_is_logged(make_bridge, caplog):
    bridge = make_bridge()
    bridge.rest.fail = LarkApiError(230002, "Bot/User can NOT be out of the chat.", 400)
    with caplog.at_level(logging.WARNING, logger="pal.lark.bridge"):
        bridge.receive(message_event("hi"))
        wait_until(lambda: any(r.action == "lark_call_failed" for r in caplog.records))
    assert "230002" in caplog.text and SECRET not in caplog.text
    assert len(bridge.client.get("/api/deliveries").json()["deliveries"]) == 1
    assert bridge.events()[0]["outcome"] == "delivered"


def test_bridge_agent_reply_goes_to_lark_as_a_reply_and_run_end_removes_the_reaction(
    make_bridge, database
):
    bridge = make_bridge()
    box = make_box(database)
    assign(bridge.client, "codex", box.id)
    bridge.receive(message_event("build it", message_id="om_9"))
    bridge.calls("add_reaction")
    [delivery] = bridge.client.get("/api/deliveries").json()["deliveries"]
    run = start_run(bridge.client, box, claimed(bridge.client, box, delivery["id"])).json()["run"]
    room = run["room_id"]

    reply = post(bridge.client, "built", room=room, sender="codex", parent=delivery["message_id"])
    [call] = bridge.calls("reply")
    assert call == ("reply", "om_9", "built", f"pal-{room}-{reply['message']['id']}")

    human = post(bridge.client, "thanks all", room=room, sender="bob")
    [sent] = bridge.calls("send")
    assert sent == (
        "send",
        "oc_p2p_alice",
        "chat_id",
        "bob: thanks all",
        f"pal-{room}-{human['message']['id']}",
    )

    r = bridge.client.post(
        f"/api/runs/{run['id']}/finish", json={"status": "completed"}, headers=box.headers
    )
    assert r.status_code == 200, r.text
    assert bridge.calls("delete_reaction") == [("delete_reaction", "om_9", "re_om_9")]
    # Lark's own messages are never sent back, and the reaction comes off once.
    bridge.receive(message_event("more", message_id="om_10"))
    bridge.calls("add_reaction", 2)
    assert [c[0] for c in bridge.rest.calls].count("reply") == 1
    assert [c[0] for c in bridge.rest.calls].count("send") == 1
    assert [c[0] for c in bridge.rest.calls].count("delete_reaction") == 1


def test_bridge_start_removes_reactions_of_runs_that_ended_while_down(make_bridge, database):
    def seed() -> None:
        """What a server that went down left: two Lark messages with the reaction on, one
        whose delivery failed meanwhile and one still pending."""

        def write(conn: Any) -> None:
            agents_store.upsert_agent(conn, "codex", display_name="codex", runtime="codex")
            room = rooms_store.create_room(conn, "lark-codex-alice-old", kind="lark")
            lark_store.add_chat(conn, "cli_a", "oc_old", room["id"], "p2p")
            for lark_id, status in (("om_done", "failed"), ("om_wait", "pending")):
                new = NewMessage(
                    room=room["id"],
                    sender="Alice",
                    content=lark_id,
                    mentions=["codex"],
                    sender_kind="lark",
                )
                posted = post_message(conn, new)
                [delivery] = posted["deliveries"]
                if status == "failed":
                    conn.execute(
                        sa.update(deliveries)
                        .where(deliveries.c.id == delivery["id"])
                        .values(status="failed")
                    )
                row = lark_store.add_message(conn, "cli_a", lark_id, chat_id="oc_old")
                assert row is not None
                lark_store.update_message(
                    conn,
                    row["id"],
                    pal_message_id=posted["message"]["id"],
                    delivery_id=delivery["id"],
                    reaction_id=f"re_{lark_id}",
                )

        database.write_sync(write)

    bridge = make_bridge(before=seed)
    assert bridge.calls("delete_reaction") == [("delete_reaction", "om_done", "re_om_done")]
    rows = {
        lark_id: database.read_sync(
            lambda conn, i=lark_id: lark_store.find_message(conn, "cli_a", i)
        )["reaction_id"]
        for lark_id in ("om_done", "om_wait")
    }
    assert wait_until(
        lambda: (
            database.read_sync(lambda conn: lark_store.find_message(conn, "cli_a", "om_done"))[
                "reaction_id"
            ]
            is None
        )
    )
    assert rows["om_wait"] == "re_om_wait"


def test_bridge_concurrent_insert_conflict_is_retried_once(make_bridge, monkeypatch):
    bridge = make_bridge()
    real = lark_store.add_message
    conflicts = []

    def add_message(conn: Any, *args: Any, **kwargs: Any) -> Any:
        if not conflicts:  # another server stored it first: this transaction fails
            conflicts.append(args)
            raise sa.exc.IntegrityError("INSERT INTO lark_messages", {}, Exception("unique"))
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(lark_store, "add_message", add_message)
    bridge.receive(message_event("hi"))
    assert [e["outcome"] for e in bridge.events()] == ["delivered"]
    assert len(conflicts) == 1
    assert len(bridge.client.get("/api/deliveries").json()["deliveries"]) == 1
