"""The Lark manager with stub connections: start, reload (valid, invalid, changed bots),
stop, REST clients per bot, and the default event handler."""

from __future__ import annotations

import json
import logging

import pytest

from pal.config import load_settings
from pal.errors import NotFound
from pal.lark.manager import LarkManager
from pal.server.hub import Hub
from pal.store import lark as lark_store

SECRET = "s3cr3t-VALUE-never-shown"


class StubConnection:
    def __init__(self, bot, on_event):
        self.bot = bot
        self.on_event = on_event
        self.state = "new"
        self.stops = 0

    def start(self):
        self.state = "connected"

    async def stop(self):
        self.state = "stopped"
        self.stops += 1

    def status(self):
        return {"state": self.state, "error": None, "events_received": 0, "reconnects": 0}


class StubRest:
    def __init__(self, bot):
        self.bot = bot
        self.closed = False

    async def aclose(self):
        self.closed = True


class Harness:
    def __init__(self, tmp_path, db=None):
        self.path = tmp_path / "lark.json"
        settings = load_settings({"PAL_HOME": str(tmp_path), "PAL_LARK_CONFIG": str(self.path)})
        self.made: list[StubConnection] = []
        self.hub = Hub()

        def connect(bot, on_event):
            connection = StubConnection(bot, on_event)
            self.made.append(connection)
            return connection

        self.manager = LarkManager(settings, db, self.hub, connect=connect, rest=StubRest)

    def write(self, *bots):
        self.path.write_text(json.dumps({"bots": list(bots)}))

    def live(self):
        return {c.bot.app_id: c for c in self.made if c.state == "connected"}


def bot(app_id="cli_a", agent="codex", **fields):
    return {"app_id": app_id, "app_secret": SECRET, "agent": agent, **fields}


@pytest.fixture
def harness(tmp_path):
    return Harness(tmp_path)


async def test_lark_manager_without_a_file_has_no_bots(harness):
    await harness.manager.start()
    assert harness.manager.status() == {"config": str(harness.path), "error": None, "bots": []}
    assert harness.made == []


async def test_lark_manager_corrupt_file_keeps_lark_off_until_fixed(harness, caplog):
    harness.path.write_text('{"bots": [{"app_id": "cli_a", "app_secret": 1')
    with caplog.at_level(logging.INFO, logger="pal.lark.manager"):
        await harness.manager.start()
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.action == "lark_config_invalid"
    assert record.getMessage() == (
        f"Lark is off: {harness.path} is not valid JSON (Expecting ',' delimiter at line 1 "
        "column 46); fix it, then POST /api/lark/reload"
    )
    status = harness.manager.status()
    assert status["bots"] == [] and "is not valid JSON" in status["error"]
    assert harness.made == []

    harness.write(bot())
    reloaded = await harness.manager.reload()
    assert reloaded["error"] is None
    assert [(b["app_id"], b["state"]) for b in reloaded["bots"]] == [("cli_a", "connected")]


async def test_lark_manager_status_is_redacted(harness):
    harness.write(bot(label="Main", open_id="ou_1"))
    await harness.manager.start()
    [shown] = harness.manager.status()["bots"]
    assert SECRET not in json.dumps(harness.manager.status())
    assert shown == {
        "app_id": "cli_a",
        "label": "Main",
        "agent": "codex",
        "open_id": "ou_1",
        "domain": "https://open.feishu.cn",
        "app_secret": "s3c…(redacted)",
        "state": "connected",
        "error": None,
        "connected_at": None,
        "last_frame_at": None,
        "events_received": 0,
        "reconnects": 0,
    }


async def test_lark_manager_reload_restarts_only_what_changed(harness):
    harness.write(bot("cli_same"), bot("cli_secret", agent="b"), bot("cli_gone", agent="c"))
    await harness.manager.start()
    first = harness.live()
    assert set(first) == {"cli_same", "cli_secret", "cli_gone"}

    harness.write(
        bot("cli_same", agent="moved", label="Renamed"),  # agent/label: no reconnect
        bot("cli_secret", agent="b", app_secret="another-secret"),
        bot("cli_new", agent="d"),
    )
    status = await harness.manager.reload()
    live = harness.live()
    assert live["cli_same"] is first["cli_same"] and first["cli_same"].stops == 0
    assert live["cli_secret"] is not first["cli_secret"] and first["cli_secret"].stops == 1
    assert live["cli_secret"].bot.app_secret == "another-secret"
    assert first["cli_gone"].state == "stopped" and "cli_gone" not in live
    assert "cli_new" in live
    assert [(b["app_id"], b["agent"], b["label"]) for b in status["bots"]] == [
        ("cli_same", "moved", "Renamed"),
        ("cli_secret", "b", ""),
        ("cli_new", "d", ""),
    ]


async def test_lark_manager_invalid_reload_keeps_the_running_bots(harness, caplog):
    harness.write(bot())
    await harness.manager.start()
    [connection] = harness.made
    harness.write(bot(), bot("cli_b"))  # codex bound twice
    with pytest.raises(Exception) as caught:
        await harness.manager.reload()
    assert caught.value.status == 422
    assert "agent codex is already bound to bot cli_a" in caught.value.message
    assert connection.state == "connected" and len(harness.made) == 1
    status = harness.manager.status()
    assert [b["app_id"] for b in status["bots"]] == ["cli_a"]
    assert status["error"] == caught.value.message
    assert SECRET not in caplog.text


async def test_lark_manager_reload_restarts_a_failed_bot(harness):
    harness.write(bot())
    await harness.manager.start()
    [connection] = harness.made
    connection.state = "failed"
    await harness.manager.reload()
    assert connection.stops == 1 and harness.live()["cli_a"] is not connection


async def test_lark_manager_a_connection_that_cannot_start_is_shown_failed(tmp_path, caplog):
    harness = Harness(tmp_path)

    def broken(bot, on_event):
        raise RuntimeError(f"boom {bot.app_secret}")

    harness.manager._connect = broken
    harness.write(bot())
    await harness.manager.start()
    [shown] = harness.manager.status()["bots"]
    assert (shown["state"], shown["error"]) == (
        "failed",
        "the connection could not start (RuntimeError)",
    )
    assert "Lark bot cli_a could not start" in caplog.text


async def test_lark_manager_handler_gets_the_current_bot_and_survives_errors(tmp_path, caplog):
    seen = []

    async def on_event(bot, event):
        seen.append((bot.agent, event))
        if event.get("fail"):
            raise ValueError("bad event")

    harness = Harness(tmp_path)
    harness.manager._on_event = on_event
    harness.write(bot())
    await harness.manager.start()
    [connection] = harness.made
    harness.write(bot(agent="other"))
    await harness.manager.reload()
    await connection.on_event({"n": 1})
    await connection.on_event({"fail": True})
    assert seen == [("other", {"n": 1}), ("other", {"fail": True})]
    assert "Lark event of bot cli_a could not be handled" in caplog.text


async def test_lark_manager_stop_stops_every_connection_and_rest_client(harness):
    harness.write(bot(), bot("cli_b", agent=None))
    await harness.manager.start()
    rest = harness.manager.rest("cli_a")
    await harness.manager.stop()
    assert [c.state for c in harness.made] == ["stopped", "stopped"]
    assert rest.closed


async def test_lark_manager_rest_is_per_bot_and_renewed_with_the_credentials(harness):
    harness.write(bot())
    await harness.manager.start()
    rest = harness.manager.rest("cli_a")
    assert harness.manager.rest("cli_a") is rest and rest.bot.app_id == "cli_a"
    with pytest.raises(NotFound) as caught:
        harness.manager.rest("cli_nope")
    assert caught.value.message.startswith(f"Lark bot 'cli_nope' is not in {harness.path}")
    harness.write(bot(label="only a label"))
    await harness.manager.reload()
    assert harness.manager.rest("cli_a") is rest and not rest.closed
    harness.write(bot(app_secret="rotated-secret"))
    await harness.manager.reload()
    assert rest.closed and harness.manager.rest("cli_a").bot.app_secret == "rotated-secret"


async def test_lark_manager_default_handler_records_the_event(tmp_path, database):
    harness = Harness(tmp_path, database)
    harness.write(bot())
    await harness.manager.start()
    [connection] = harness.made
    envelope = {
        "schema": "2.0",
        "header": {"event_id": "ev_1", "event_type": "im.message.receive_v1"},
        "event": {
            "sender": {"sender_id": {"open_id": "ou_x", "union_id": "on_x"}},
            "message": {"message_id": "om_1", "chat_id": "oc_1", "chat_type": "p2p"},
        },
    }
    await connection.on_event(envelope)
    [row] = await database.read(lambda conn: lark_store.list_events(conn))
    assert (row["app_id"], row["event_id"], row["message_id"], row["sender_id"]) == (
        "cli_a",
        "ev_1",
        "om_1",
        "on_x",
    )
    assert (row["outcome"], row["detail"]) == ("ignored", "no Lark bridge in this server")
    assert row["payload"] == envelope
    assert [(e["kind"], e["app_id"], e["event_id"]) for e in harness.hub.since(0)] == [
        ("lark_event", "cli_a", row["id"])
    ]
