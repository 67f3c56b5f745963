"""Make a ``running`` run on a real server the way a daemon would, without a daemon: a
computer is provisioned, an agent assigned to it, and a message's delivery is claimed and
started over HTTP. Kill and restart requests for such a run stay recorded (nobody acts on
them), which is what console and cli tests want to see."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from pal.client import ServerClient


@dataclass
class RunningRun:
    run_id: int
    computer_id: str
    message_id: int


def start_running_run(
    url: str, agent: str = "manual", room: str = "general", text: str = "work on it"
) -> RunningRun:
    with ServerClient(url) as client:
        made = client.provision_computer(f"{agent} box")
        computer_id = made["computer"]["id"]
        client.onboard_agent(agent, display_name=agent, runtime="codex", computer_id=computer_id)
        posted = client.post_message(room, "alice", text, mentions=[agent])
    [delivery] = posted["deliveries"]
    daemon_id = "daemon_" + secrets.token_hex(6)
    headers = {"authorization": f"Bearer {made['api_key']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        claim = http.post(f"/api/deliveries/{delivery['id']}/claim", json={"daemon_id": daemon_id})
        assert claim.status_code == 200, claim.text
        body = {
            "delivery_id": delivery["id"],
            "attempt": claim.json()["delivery"]["attempt"],
            "daemon_id": daemon_id,
            "pid": 4242,
        }
        started = http.post("/api/runs", json=body)
        assert started.status_code == 201, started.text
    return RunningRun(started.json()["run"]["id"], computer_id, posted["message"]["id"])
