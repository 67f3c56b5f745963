"""``pal console computers | runs | run-action`` against a real server process."""

from __future__ import annotations

import pytest

from pal.client import ApiError, ServerClient
from tests.e2e.conftest import ServerProcess
from tests.e2e.runs_helpers import start_running_run
from tests.e2e.test_console import as_json, console, error_line, ok

pytestmark = pytest.mark.e2e


def test_console_provisions_lists_rotates_and_revokes_computers(server: ServerProcess) -> None:
    assert ok(console(server, "computers", "list")).startswith("no computers yet")

    text = ok(console(server, "computers", "provision", "--name", "Build box"))
    [computer] = as_json(console(server, "computers", "list", "--json"))["computers"]
    computer_id = computer["id"]
    assert (computer["name"], computer["status"], computer["agents"]) == (
        "Build box",
        "offline",
        [],
    )
    key = text.split("api key (shown only now; keep it secret): ")[1].split("\n")[0]
    assert key.startswith("sk_machine_")
    assert f"pal daemon --server {server.url} --api-key {key}\n" in text
    assert f"make install && .venv/bin/pal daemon --server {server.url} --api-key {key}" in text
    assert text.startswith(f"provisioned computer {computer_id} (Build box)\n")

    made = as_json(
        console(
            server,
            "computers",
            "provision",
            "--name",
            "Laptop",
            "--server-url",
            "http://10.0.0.7:4127",
            "--json",
        )
    )
    assert (
        made["daemon_command"]
        == f"pal daemon --server http://10.0.0.7:4127 --api-key {made['api_key']}"
    )
    table = ok(console(server, "computers", "list"))
    assert "Build box" in table and "Laptop" in table and computer_id in table

    rotated = as_json(console(server, "computers", "rotate", "--id", computer_id, "--json"))
    assert rotated["computer"]["id"] == computer_id and rotated["api_key"] not in (key, "")
    with (
        ServerClient(server.url, token=key) as old,
        ServerClient(server.url, token=rotated["api_key"]) as new,
    ):
        assert new.connect_computer()["computer"]["id"] == computer_id
        with pytest.raises(ApiError) as refused:
            old.connect_computer()
        assert refused.value.status == 401

    revoked = ok(console(server, "computers", "revoke", "--id", computer_id))
    assert revoked == f"revoked computer {computer_id} (Build box); its key no longer works\n"
    [shown] = [
        c
        for c in as_json(console(server, "computers", "list", "--json"))["computers"]
        if c["id"] == computer_id
    ]
    assert shown["status"] == "revoked"

    assert error_line(console(server, "computers", "revoke", "--id", "machine_nope")) == (
        "computer 'machine_nope' not found"
    )
    assert console(server, "computers", "provision").returncode == 2  # --name is required


def test_console_lists_runs_and_records_run_actions(server: ServerProcess) -> None:
    assert ok(console(server, "runs")) == "no runs\n"
    run = start_running_run(server.url, agent="manual")

    [listed] = as_json(console(server, "runs", "--json"))["runs"]
    assert (listed["id"], listed["agent_key"], listed["status"]) == (
        run.run_id,
        "manual",
        "running",
    )
    assert listed["computer_id"] == run.computer_id
    table = ok(console(server, "runs"))
    header = table.splitlines()[0].split()
    assert header == ["ID", "Agent", "Status", "Room", "Computer", "Started", "Duration"]
    assert "manual" in table and "running" in table and "general" in table  # room by name

    assert as_json(console(server, "runs", "--agent", "nobody", "--json"))["runs"] == []
    assert as_json(console(server, "runs", "--status", "completed", "--json"))["runs"] == []
    assert len(as_json(console(server, "runs", "--status", "running", "--json"))["runs"]) == 1
    bad_status = console(server, "runs", "--status", "sleeping")
    assert bad_status.returncode == 2 and "'sleeping' is not one of" in bad_status.stderr

    killed = ok(console(server, "run-action", str(run.run_id), "kill"))
    assert killed.startswith(f"kill requested for run {run.run_id} (action ")
    assert killed.endswith(", pending)\n")
    restart = as_json(console(server, "run-action", str(run.run_id), "restart", "--json"))
    assert (restart["action"]["action"], restart["action"]["run_id"]) == ("restart", run.run_id)
    with ServerClient(server.url) as client:
        actions = client.get_run(run.run_id)["actions"]
    assert [a["action"] for a in actions] == ["kill", "restart"]

    invalid = console(server, "run-action", str(run.run_id), "stop")
    assert invalid.returncode == 2
    assert "console run-action [OPTIONS] {RUN_ID} {ACTION}" in invalid.stderr  # the usage
    assert "'stop' is not one of" in invalid.stderr
    assert error_line(console(server, "run-action", "999", "kill")) == "run 999 not found"
