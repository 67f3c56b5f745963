"""``pal console computers | runs | run-action`` against a real server process."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from pal.client import ApiError, ServerClient
from tests.conftest import wait_until
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
    assert header == [
        "ID",
        "Agent",
        "Status",
        "Room",
        "Computer",
        "Started",
        "Duration",
        "Usage",
    ]
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


# -- output ----------------------------------------------------------------------------------


def started_run(url: str, agent: str = "worker") -> tuple[int, ServerClient]:
    """A running run of a new computer, and a client with that computer's key to ship
    output and finish the run as its daemon would."""
    with ServerClient(url) as client:
        made = client.provision_computer(f"{agent} box")
        client.onboard_agent(
            agent, display_name=agent, runtime="codex", computer_id=made["computer"]["id"]
        )
        [delivery] = client.post_message("general", "alice", "go", mentions=[agent])["deliveries"]
    daemon_id = "daemon_" + secrets.token_hex(6)
    headers = {"authorization": f"Bearer {made['api_key']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        claim = http.post(f"/api/deliveries/{delivery['id']}/claim", json={"daemon_id": daemon_id})
        assert claim.status_code == 200, claim.text
        body = {"delivery_id": delivery["id"], "attempt": 1, "daemon_id": daemon_id}
        started = http.post("/api/runs", json=body)
        assert started.status_code == 201, started.text
    return started.json()["run"]["id"], ServerClient(url, token=made["api_key"])


def finish(daemon: ServerClient, run_id: int, **body: object) -> None:
    """``POST /api/runs/<id>/finish`` with the computer's key (the client has no method:
    only daemons finish runs)."""
    r = daemon._http.post(f"/api/runs/{run_id}/finish", json=body)
    assert r.status_code == 200, r.text


def chunk(seq: int, data: str, stream: str = "stdout") -> dict[str, object]:
    return {"seq": seq, "stream": stream, "data": data}


def test_console_runs_output_prints_each_stream_raw(server: ServerProcess) -> None:
    run_id, daemon = started_run(server.url)
    with daemon:
        daemon.append_run_output(
            run_id,
            [
                chunk(0, "line one\n"),
                chunk(1, "oops\n", "stderr"),
                chunk(2, "[bold]x[/bold] é \x1b[31mred\x1b[0m"),
                chunk(3, "no newline at the end", "stderr"),
            ],
        )
        shown = console(server, "runs", "--output", str(run_id))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == "line one\n[bold]x[/bold] é \x1b[31mred\x1b[0m"
        assert shown.stderr == "oops\nno newline at the end"

        answer = as_json(console(server, "runs", "--output", str(run_id), "--json"))
        assert [c["seq"] for c in answer["chunks"]] == [0, 1, 2, 3]
        assert (answer["run"]["id"], answer["more"], answer["output_dropped"]) == (
            run_id,
            False,
            0,
        )

    assert error_line(console(server, "runs", "--output", "999")) == "run 999 not found"
    both = console(server, "runs", "--output", str(run_id), "--follow", str(run_id))
    assert both.returncode == 2
    assert "--output and --follow cannot be combined" in both.stderr
    assert console(server, "runs", "--output", "0").returncode == 2


def test_console_runs_output_says_when_older_output_was_trimmed(make_server) -> None:
    server = make_server({"PAL_RUN_OUTPUT_LIMIT": "65536"})
    run_id, daemon = started_run(server.url)
    with daemon:
        daemon.append_run_output(run_id, [chunk(0, "a" * 40_000), chunk(1, "b" * 40_000)])
    shown = console(server, "runs", "--output", str(run_id))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "b" * 40_000
    assert shown.stderr == "[pal: 1 chunk of earlier output not kept]\n"


def follow(
    server: ServerProcess, run_id: int, out: Path
) -> tuple[subprocess.Popen[bytes], Callable[[], str], Callable[[], str]]:
    stdout, stderr = out / "stdout", out / "stderr"
    with stdout.open("wb") as out_file, stderr.open("wb") as err_file:  # the child has them
        proc = subprocess.Popen(
            [sys.executable, "-m", "pal", "console", "runs", "--follow", str(run_id)],
            env=server.env,
            stdout=out_file,
            stderr=err_file,
        )
    return proc, lambda: stdout.read_text(), lambda: stderr.read_text()


@pytest.mark.parametrize(("status", "code"), [("completed", 0), ("failed", 1), ("killed", 1)])
def test_console_runs_follow_prints_output_until_the_run_finishes(
    server: ServerProcess, tmp_path: Path, status: str, code: int
) -> None:
    run_id, daemon = started_run(server.url)
    proc, out, err = follow(server, run_id, tmp_path)
    try:
        with daemon:
            daemon.append_run_output(run_id, [chunk(0, "starting\n")])
            wait_until(lambda: out() == "starting\n", timeout=15)
            daemon.append_run_output(run_id, [chunk(1, "warning\n", "stderr"), chunk(2, "work\n")])
            wait_until(lambda: err() == "warning\n" and out().endswith("work\n"), timeout=15)
            assert proc.poll() is None  # still following a running run
            # the final flush comes just before the finish: all of it is printed
            daemon.append_run_output(run_id, [chunk(3, "bye\n"), chunk(4, "last\n", "stderr")])
            finish(daemon, run_id, status=status, exit_code=0 if status == "completed" else 1)
        assert proc.wait(timeout=15) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out() == "starting\nwork\nbye\n"
    assert err() == "warning\nlast\n"


def test_console_runs_follow_of_a_finished_run_prints_it_and_exits(
    server: ServerProcess, tmp_path: Path
) -> None:
    run_id, daemon = started_run(server.url)
    with daemon:
        for first in range(0, 1500, 250):
            batch = [chunk(seq, f"{seq}\n") for seq in range(first, first + 250)]
            daemon.append_run_output(run_id, batch)
        usage = {"input_tokens": 1234, "output_tokens": 340, "cost_usd": 0.031, "scope": "run"}
        finish(daemon, run_id, status="completed", exit_code=0, usage=usage)
    done = console(server, "runs", "--follow", str(run_id))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(f"{seq}\n" for seq in range(1500))  # two pages
    lines = console(server, "runs", "--follow", str(run_id), "--json").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1500))
    wide = subprocess.run(
        [sys.executable, "-m", "pal", "console", "runs"],
        env={**server.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "in 1.2k / out 340, $0.03" in ok(wide)
    assert error_line(console(server, "runs", "--follow", "999")) == "run 999 not found"
