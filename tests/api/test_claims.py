"""Claims: a daemon claims a pending delivery, then acks (a run started) or fails it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.api.computers_helpers import (
    agent_on,
    assign,
    claim,
    claimed,
    hub_events,
    make_box,
    pending_delivery,
)
from tests.helpers import invite, make_agent, post, set_delivery_status


def ack(client, box, delivery, *, attempt=None, daemon_id=None, **fields):
    return client.post(
        f"/api/deliveries/{delivery['id']}/ack",
        json={
            "daemon_id": daemon_id or box.daemon_id,
            "attempt": delivery["attempt"] if attempt is None else attempt,
            **fields,
        },
        headers=box.headers,
    )


def fail(client, box, delivery, *, attempt=None, daemon_id=None, error="boom", **fields):
    return client.post(
        f"/api/deliveries/{delivery['id']}/fail",
        json={
            "daemon_id": daemon_id or box.daemon_id,
            "attempt": delivery["attempt"] if attempt is None else attempt,
            "error": error,
            **fields,
        },
        headers=box.headers,
    )


def shown(client, delivery_id):
    return client.get(f"/api/deliveries/{delivery_id}").json()["delivery"]


def test_claim_takes_a_pending_delivery_with_a_lease(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    before = datetime.now().astimezone()
    got = claimed(client, box, delivery["id"])
    assert got["status"] == "claimed"
    assert got["attempt"] == 1
    assert got["computer_id"] == box.id
    assert got["claimed_by"] == box.daemon_id
    lease = datetime.fromisoformat(got["lease_until"])
    # the lease lasts heartbeat_grace (60 s by default)
    assert before + timedelta(seconds=59) < lease < before + timedelta(seconds=62)
    assert shown(client, delivery["id"]) == got


def test_claim_retried_by_the_same_daemon_answers_the_same_claim(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    first = claimed(client, box, delivery["id"])
    again = claimed(client, box, delivery["id"])
    assert again == first
    assert again["attempt"] == 1


def test_claim_by_another_daemon_is_409_naming_the_holder(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    claimed(client, box, delivery["id"])
    r = claim(client, box, delivery["id"], daemon_id="daemon_other")
    assert r.status_code == 409
    assert "already claimed" in r.json()["error"]
    assert box.daemon_id in r.json()["error"]
    assert shown(client, delivery["id"])["claimed_by"] == box.daemon_id


def test_claim_from_a_computer_the_agent_is_not_assigned_to_is_409(client, database):
    box = make_box(database)
    other = make_box(database, "other")
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    r = claim(client, other, delivery["id"])
    assert r.status_code == 409
    assert "not assigned to computer" in r.json()["error"]
    assert other.id in r.json()["error"]
    assert shown(client, delivery["id"])["status"] == "pending"


def test_claim_after_the_agent_is_removed_from_the_computer_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    assign(client, "codex", None)
    r = claim(client, box, delivery["id"])
    assert r.status_code == 409
    assert "not assigned" in r.json()["error"]


@pytest.mark.parametrize("status", ["acked", "failed"])
def test_claim_of_a_finished_delivery_is_409_with_its_status(client, database, status):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    set_delivery_status(database, delivery["id"], status)
    r = claim(client, box, delivery["id"])
    assert r.status_code == 409
    assert f"is {status}" in r.json()["error"]


def test_claim_of_a_muted_mention_is_409(client, database):
    box = make_box(database)
    make_agent(client, "codex")
    invite(client, "general", "codex", "muted")
    assign(client, "codex", box.id)
    delivery = post(client, "@codex look")["deliveries"][0]
    assert delivery["status"] == "muted"
    r = claim(client, box, delivery["id"])
    assert r.status_code == 409
    assert "muted" in r.json()["error"]


def test_claim_of_an_unknown_delivery_is_404(client, database):
    box = make_box(database)
    r = claim(client, box, 4242)
    assert r.status_code == 404
    assert "4242" in r.json()["error"]


def test_claim_needs_a_computer_key(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    r = client.post(f"/api/deliveries/{delivery['id']}/claim", json={"daemon_id": "daemon_1"})
    assert r.status_code == 401
    r = client.post(
        f"/api/deliveries/{delivery['id']}/claim",
        json={"daemon_id": "daemon_1"},
        headers={"Authorization": "Bearer sk_machine_wrong"},
    )
    assert r.status_code == 401
    assert shown(client, delivery["id"])["status"] == "pending"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"daemon_id": ""},
        {"daemon_id": "bad id"},
        {"daemon_id": "d" * 65},
        {"daemon_id": "worker-1"},
        {"daemon_id": "daemon_"},
        {"daemon_id": "daemon_" + "a" * 57},
        {"daemon_id": "daemon_a:b"},
    ],
    ids=str,
)
def test_claim_rejects_a_bad_daemon_id(client, database, body):
    box = make_box(database)
    r = client.post("/api/deliveries/1/claim", json=body, headers=box.headers)
    assert r.status_code == 422
    assert "daemon_id" in r.json()["error"]


# -- ack -------------------------------------------------------------------------------------


def test_ack_marks_the_claim_acked_and_a_repeat_answers_the_same(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = ack(client, box, delivery)
    assert r.status_code == 200, r.text
    acked = r.json()["delivery"]
    assert acked["status"] == "acked"
    assert acked["attempt"] == 1
    assert acked["claimed_by"] == box.daemon_id
    again = ack(client, box, delivery, run_id=7)
    assert again.status_code == 200
    assert again.json()["delivery"] == acked


def test_ack_of_a_stale_attempt_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = ack(client, box, delivery, attempt=2)
    assert r.status_code == 409
    assert "attempt 2 is stale" in r.json()["error"]
    assert shown(client, delivery["id"])["status"] == "claimed"


def test_ack_by_another_daemon_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = ack(client, box, delivery, daemon_id="daemon_other")
    assert r.status_code == 409
    assert "claimed by daemon" in r.json()["error"]


def test_ack_from_another_computer_is_409(client, database):
    box = make_box(database)
    other = make_box(database, "other")
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    # even with the holder's daemon id, another computer's key cannot ack it
    r = ack(client, other, delivery, daemon_id=box.daemon_id)
    assert r.status_code == 409
    assert shown(client, delivery["id"])["status"] == "claimed"


def test_ack_of_an_unclaimed_delivery_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = pending_delivery(client, "codex")
    r = ack(client, box, {**delivery, "attempt": 1})
    assert r.status_code == 409
    assert "it is pending" in r.json()["error"]


def test_ack_of_an_unknown_delivery_is_404(client, database):
    box = make_box(database)
    r = ack(client, box, {"id": 999, "attempt": 1})
    assert r.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"daemon_id": "daemon_1"},
        {"daemon_id": "daemon_1", "attempt": 0},
        {"daemon_id": "daemon_1", "attempt": "1"},
        {"daemon_id": "daemon_1", "attempt": 1, "run_id": 0},
        {"daemon_id": "daemon_1", "attempt": 1, "extra": True},
    ],
    ids=str,
)
def test_ack_rejects_bad_bodies(client, database, body):
    box = make_box(database)
    r = client.post("/api/deliveries/1/ack", json=body, headers=box.headers)
    assert r.status_code == 422, r.text


# -- fail ------------------------------------------------------------------------------------


def test_fail_marks_the_delivery_failed_with_its_error(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = fail(client, box, delivery, error="codex is not installed")
    assert r.status_code == 200, r.text
    failed = r.json()["delivery"]
    assert failed["status"] == "failed"
    assert failed["error"] == "codex is not installed"
    assert failed["lease_until"] is None
    again = fail(client, box, delivery, error="codex is not installed")
    assert again.status_code == 200
    assert again.json()["delivery"] == failed
    assert claim(client, box, delivery["id"]).status_code == 409


def test_fail_with_retry_returns_it_to_pending_and_wakes_daemons(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    with hub_events(client) as events:
        r = fail(client, box, delivery, error="shutting down", retry=True)
        assert r.status_code == 200, r.text
        woken = [(e["agent_key"], e["delivery_id"]) for e in events() if e["kind"] == "delivery"]
        assert woken == [("codex", delivery["id"])]
    released = r.json()["delivery"]
    assert released["status"] == "pending"
    assert released["attempt"] == 1  # kept; the next claim increments it
    assert released["computer_id"] is None
    assert released["claimed_by"] is None
    assert released["lease_until"] is None
    # a repeat of the same release is harmless
    assert fail(client, box, delivery, error="shutting down", retry=True).status_code == 200
    # any daemon of the computer may claim it again, as attempt 2
    again = claimed(client, box, delivery["id"])
    assert again["attempt"] == 2
    # the old attempt can no longer ack
    assert ack(client, box, delivery, attempt=1).status_code == 409


def test_fail_of_a_stale_attempt_or_by_another_daemon_is_409(client, database):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    assert fail(client, box, delivery, attempt=3).status_code == 409
    r = fail(client, box, delivery, daemon_id="daemon_other", retry=True)
    assert r.status_code == 409
    assert shown(client, delivery["id"])["status"] == "claimed"
    acked = ack(client, box, delivery).json()["delivery"]
    r = fail(client, box, acked)
    assert r.status_code == 409
    assert "it is acked" in r.json()["error"]


@pytest.mark.parametrize("error", ["", "x" * 10_001], ids=["empty", "too long"])
def test_fail_needs_an_error_of_1_to_10000_characters(client, database, error):
    box = make_box(database)
    agent_on(client, box)
    delivery = claimed(client, box, pending_delivery(client, "codex")["id"])
    r = fail(client, box, delivery, error=error)
    assert r.status_code == 422
    assert "error" in r.json()["error"]
    assert fail(client, box, delivery, error="x" * 10_000).status_code == 200
