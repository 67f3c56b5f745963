"""``pal server`` and ``pal db`` as processes: start-up, storage on both backends, shutdown."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

from pal.client import ServerClient
from pal.store import migrate

pytestmark = pytest.mark.e2e


def run_pal(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pal", *args], env=env, capture_output=True, text=True, timeout=60
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))}
    return {**env, **extra}


def test_server_fresh_home_is_private_migrated_and_has_general(server):
    assert stat.S_IMODE(server.home.stat().st_mode) == 0o700
    db_file = server.home / "lock.sqlite"
    assert db_file.exists()
    assert migrate.current_revision(f"sqlite:///{db_file}") == migrate.head_revision()
    with ServerClient(server.url) as client:
        assert [r["name"] for r in client.list_rooms()["rooms"]] == ["general"]


def test_server_keeps_messages_across_a_restart(make_server):
    first = make_server()
    with ServerClient(first.url) as client:
        posted = client.post_message("general", "alice", "remember me")
    first.stop()
    assert first.proc.returncode in (0, -signal.SIGTERM)  # graceful exit on SIGTERM
    second = make_server()  # same PAL_HOME, new port
    with ServerClient(second.url) as client:
        again = client.get_message(posted["message"]["id"])
    assert again["message"]["content"] == "remember me"


def test_server_runs_on_postgresql(make_server, empty_postgres_db):
    server = make_server({"PAL_DB": empty_postgres_db})
    with ServerClient(server.url) as client:
        assert client.health()["database"] == "postgresql"
        client.create_agent("codex", display_name="Codex Agent")
        client.invite_agent("general", "codex", mode="mentions")
        posted = client.post_message("general", "alice", "hello @codex")
        assert [d["agent_key"] for d in posted["deliveries"]] == ["codex"]
        found = client.list_messages(room="general", q="hello")["messages"]
    assert [m["id"] for m in found] == [posted["message"]["id"]]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PAL_DB": "/proc/no/such/dir/pal.sqlite"}, "cannot open the database"),
        ({"PAL_DB": "postgresql://postgres@127.0.0.1:1/pal"}, "cannot open the database"),
        ({"PAL_DB": "mysql://localhost/pal"}, "is not supported"),
        ({"PAL_PORT": "http"}, "PAL_PORT='http' is not a number"),
        ({"PAL_LOG_LEVEL": "loud"}, "PAL_LOG_LEVEL='loud' is not a log level"),
    ],
)
def test_server_bad_configuration_is_one_clear_line(tmp_path, env, says):
    result = run_pal(clean_env(PAL_HOME=str(tmp_path / "home"), **env), "server")
    assert result.returncode != 0
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_migrates_pal_db_to_head(tmp_path):
    db_file = tmp_path / "elsewhere" / "pal.sqlite"
    env = clean_env(PAL_HOME=str(tmp_path / "home"), PAL_DB=str(db_file))
    first = run_pal(env, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert migrate.head_revision() in first.stdout
    assert migrate.current_revision(f"sqlite:///{db_file}") == migrate.head_revision()
    assert run_pal(env, "db", "upgrade").returncode == 0  # idempotent
