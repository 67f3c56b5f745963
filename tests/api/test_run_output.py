"""Run output: the daemon appends chunks (idempotent per seq, trimmed to the run's bound),
anyone reads them back in pages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from pal.config import load_settings
from pal.server.api import runs as runs_api
from pal.server.app import create_app
from pal.store import run_output as output_store
from pal.store.db import Database
from pal.store.tables import run_output
from tests.api.computers_helpers import agent_on, hub_events, make_box, running

LIMIT = 100


@pytest.fixture
def small(database: Database, tmp_path: Path) -> Iterator[TestClient]:
    """The app with PAL_RUN_OUTPUT_LIMIT = 100 bytes."""
    settings = load_settings(
        {"PAL_HOME": str(tmp_path / "home")}, db_url=database.url, run_output_limit=LIMIT
    )
    with TestClient(create_app(settings, database=database)) as test_client:
        yield test_client


def chunk(seq, data="x", stream="stdout"):
    return {"seq": seq, "stream": stream, "data": data}


def send(client, box, run, *chunks):
    return client.post(
        f"/api/runs/{run['id']}/output", json={"chunks": list(chunks)}, headers=box.headers
    )


def sent(client, box, run, *chunks):
    r = send(client, box, run, *chunks)
    assert r.status_code == 200, r.text
    return r.json()


def read(client, run, **params):
    r = client.get(f"/api/runs/{run['id']}/output", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def seqs(page):
    return [c["seq"] for c in page["chunks"]]


def stored_rows(database, run_id):
    def query(conn):
        rows = conn.execute(
            sa.select(run_output.c.seq, run_output.c.bytes, run_output.c.data)
            .where(run_output.c.run_id == run_id)
            .order_by(run_output.c.seq)
        )
        return [tuple(r) for r in rows]

    return database.read_sync(query)


@pytest.fixture
def setup(client, database):
    box = make_box(database)
    agent_on(client, box)
    return box, running(client, box)


@pytest.fixture
def small_setup(small, database):
    box = make_box(database)
    agent_on(small, box)
    return box, running(small, box)


def test_run_output_is_stored_and_read_back_in_order(client, setup):
    box, run = setup
    with hub_events(client) as events:
        answer = sent(
            client,
            box,
            run,
            chunk(0, "hello\n"),
            chunk(1, "warn: é\n", "stderr"),
            chunk(2, "done\n"),
        )
        assert [(e["kind"], e["run_id"], e["seq"]) for e in events()] == [
            ("run_output", run["id"], 2)
        ]
    size = len("hello\n") + len("warn: é\n".encode()) + len("done\n")
    assert answer == {
        "run_id": run["id"],
        "stored": 3,
        "next_seq": 3,
        "output_bytes": size,
        "output_dropped": 0,
    }
    page = read(client, run)
    assert [(c["seq"], c["stream"], c["data"]) for c in page["chunks"]] == [
        (0, "stdout", "hello\n"),
        (1, "stderr", "warn: é\n"),
        (2, "stdout", "done\n"),
    ]
    assert all(c["created_at"].endswith("Z") for c in page["chunks"])
    assert set(page["chunks"][0]) == {"seq", "stream", "data", "created_at"}
    assert (page["next_after"], page["output_dropped"], page["more"]) == (2, 0, False)
    assert page["run"]["id"] == run["id"]
    assert (page["run"]["output_bytes"], page["run"]["output_dropped"]) == (size, 0)
    assert client.get(f"/api/runs/{run['id']}").json()["run"]["output_bytes"] == size


def test_run_output_is_idempotent_per_seq(client, database, setup):
    box, run = setup
    first = sent(client, box, run, chunk(0, "a"), chunk(1, "b"))
    with hub_events(client) as events:
        again = sent(client, box, run, chunk(0, "a"), chunk(1, "b"))
        assert events() == []  # nothing new, nothing announced
    assert again == {**first, "stored": 0}
    # an overlapping retry stores only what is new; a repeated seq in one batch: the first
    overlap = sent(client, box, run, chunk(1, "B"), chunk(2, "c"), chunk(2, "C"))
    assert (overlap["stored"], overlap["next_seq"], overlap["output_bytes"]) == (1, 3, 3)
    # out of order: a later seq first, the gap filled afterwards
    assert sent(client, box, run, chunk(5, "f"))["next_seq"] == 6
    late = sent(client, box, run, chunk(3, "d"), chunk(4, "e"))
    assert (late["stored"], late["next_seq"]) == (2, 6)
    assert [(s, d) for s, _, d in stored_rows(database, run["id"])] == list(enumerate("abcdef"))
    assert "".join(c["data"] for c in read(client, run)["chunks"]) == "abcdef"


def test_run_output_keeps_the_newest_bytes_within_the_limit(small, database, small_setup):
    box, run = small_setup
    thirty = "0123456789" * 3
    answer = sent(small, box, run, *(chunk(seq, thirty) for seq in range(3)))
    assert (answer["output_bytes"], answer["output_dropped"]) == (90, 0)
    answer = sent(small, box, run, chunk(3, thirty), chunk(4, thirty))  # 150 bytes: over
    assert answer == {
        "run_id": run["id"],
        "stored": 2,
        "next_seq": 5,
        "output_bytes": 90,
        "output_dropped": 60,
    }
    assert [s for s, _, _ in stored_rows(database, run["id"])] == [2, 3, 4]
    page = read(small, run)
    assert (seqs(page), page["output_dropped"]) == ([2, 3, 4], 60)
    assert page["run"]["output_bytes"] == 90

    # a trimmed chunk sent again, or a late one below the oldest kept, is ignored
    for old in (0, 1):
        assert sent(small, box, run, chunk(old, "late"))["stored"] == 0
    assert seqs(read(small, run)) == [2, 3, 4]

    # bytes, not characters: 20 × "é" is 40 bytes; the fewest oldest chunks go
    answer = sent(small, box, run, chunk(5, "é" * 20))
    assert (answer["output_bytes"], answer["output_dropped"]) == (100, 90)
    assert seqs(read(small, run)) == [3, 4, 5]
    rows = stored_rows(database, run["id"])
    assert sum(b for _, b, _ in rows) == 100 == sum(len(d.encode()) for _, _, d in rows)


def test_run_output_a_chunk_over_the_limit_keeps_its_tail(small, database, small_setup):
    box, run = small_setup
    sent(small, box, run, chunk(0, "old"))
    text = "€" * 50  # 150 bytes; the last 100 start inside a character
    answer = sent(small, box, run, chunk(1, text))
    assert (answer["output_bytes"], answer["output_dropped"]) == (99, 3 + 51)
    [(seq, size, data)] = stored_rows(database, run["id"])
    assert (seq, size, data) == (1, 99, "€" * 33)
    # the next chunk pushes the big one out; the count stays exact
    answer = sent(small, box, run, chunk(2, "z" * 10))
    assert (answer["output_bytes"], answer["output_dropped"], answer["next_seq"]) == (10, 153, 3)


def test_run_output_batch_bigger_than_the_limit(small, database, small_setup):
    box, run = small_setup
    answer = sent(small, box, run, *(chunk(seq, "y" * 40) for seq in range(10)))
    assert (answer["stored"], answer["output_bytes"], answer["output_dropped"]) == (10, 80, 320)
    assert [s for s, _, _ in stored_rows(database, run["id"])] == [8, 9]


def test_run_output_trims_many_small_chunks_at_once(small, database, small_setup):
    box, run = small_setup
    sent(small, box, run, *(chunk(seq, "s") for seq in range(100)))  # 100 bytes: full
    answer = sent(small, box, run, chunk(100, "L" * 90))  # 90 one-byte chunks must go
    assert (answer["output_bytes"], answer["output_dropped"]) == (100, 90)
    assert [s for s, _, _ in stored_rows(database, run["id"])] == [*range(90, 100), 100]


def test_run_output_replaces_nul_and_lone_surrogates(client, database, setup):
    box, run = setup
    answer = sent(client, box, run, chunk(0, "a\x00b"))
    assert answer["output_bytes"] == len("a\ufffdb".encode())
    raw = b'{"chunks": [{"seq": 1, "stream": "stderr", "data": "x\\ud800y"}]}'
    r = client.post(
        f"/api/runs/{run['id']}/output",
        content=raw,
        headers={**box.headers, "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text  # a lone surrogate is not text
    assert "chunks.0.data" in r.json()["error"]
    assert [c["data"] for c in read(client, run)["chunks"]] == ["a\ufffdb"]
    assert output_store.storable("x\ud800y\x00") == "x\ufffdy\ufffd"


def test_run_output_pages_with_after_limit_and_more(client, setup):
    box, run = setup
    sent(
        client,
        box,
        run,
        *(chunk(seq, str(seq), "stderr" if seq % 2 else "stdout") for seq in range(5)),
    )
    page = read(client, run, limit=2)
    assert (seqs(page), page["next_after"], page["more"]) == ([0, 1], 1, True)
    page = read(client, run, after=1, limit=2)
    assert (seqs(page), page["next_after"], page["more"]) == ([2, 3], 3, True)
    page = read(client, run, after=3, limit=2)
    assert (seqs(page), page["next_after"], page["more"]) == ([4], 4, False)
    page = read(client, run, after=4)
    assert (seqs(page), page["next_after"], page["more"]) == ([], 4, False)
    assert seqs(read(client, run, stream="stdout")) == [0, 2, 4]
    page = read(client, run, stream="stderr", limit=1)
    assert (seqs(page), page["more"]) == ([1], True)
    assert seqs(read(client, run, stream="stderr", after=1)) == [3]
    assert seqs(read(client, run, stream="")) == [0, 1, 2, 3, 4]
    assert seqs(read(client, run, limit=5000)) == [0, 1, 2, 3, 4]


def test_run_output_of_a_run_without_output(client, setup):
    _, run = setup
    page = read(client, run)
    assert (page["chunks"], page["next_after"], page["output_dropped"], page["more"]) == (
        [],
        -1,
        0,
        False,
    )


def test_run_output_after_the_finish_is_still_accepted(client, setup):
    box, run = setup
    r = client.post(
        f"/api/runs/{run['id']}/finish", json={"status": "completed"}, headers=box.headers
    )
    assert r.status_code == 200
    assert sent(client, box, run, chunk(0, "last words"))["stored"] == 1
    page = read(client, run)
    assert page["run"]["status"] == "completed" and seqs(page) == [0]


def test_run_output_of_another_computers_run_is_403(client, database, setup):
    box, run = setup
    other = make_box(database, "other")
    r = send(client, other, run, chunk(0))
    assert r.status_code == 403
    assert box.id in r.json()["error"]
    r = client.post(f"/api/runs/{run['id']}/output", json={"chunks": [chunk(0)]})
    assert r.status_code == 401
    assert read(client, run)["chunks"] == []


def test_run_output_of_an_unknown_run_is_404(client, database):
    box = make_box(database)
    r = send(client, box, {"id": 999}, chunk(0))
    assert r.status_code == 404
    assert r.json()["error"] == "run 999 not found"
    r = client.get("/api/runs/999/output")
    assert r.status_code == 404
    assert r.json()["error"] == "run 999 not found"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "chunks: is required"),
        ({"chunks": []}, "chunks"),
        ({"chunks": [chunk(i) for i in range(257)]}, "chunks"),
        ({"chunks": [chunk(-1)]}, "chunks.0.seq"),
        ({"chunks": [chunk("1")]}, "chunks.0.seq"),
        ({"chunks": [chunk(True)]}, "chunks.0.seq"),
        ({"chunks": [chunk(1.5)]}, "chunks.0.seq"),
        ({"chunks": [chunk(2**63)]}, "chunks.0.seq"),
        ({"chunks": [chunk(0, stream="stdin")]}, "chunks.0.stream"),
        ({"chunks": [chunk(0, data=None)]}, "chunks.0.data"),
        ({"chunks": [chunk(0, data="x" * (1_048_576 + 1))]}, "chunks.0.data"),
        ({"chunks": [{"seq": 0, "stream": "stdout"}]}, "chunks.0.data: is required"),
        ({"chunks": [{**chunk(0), "pid": 1}]}, "chunks.0.pid: unknown field"),
        ({"chunks": [chunk(0)], "more": True}, "more: unknown field"),
        ([chunk(0)], "must be a JSON object"),
    ],
    ids=lambda v: str(v)[:60],
)
def test_run_output_rejects_bad_bodies(client, setup, body, words):
    box, run = setup
    r = client.post(f"/api/runs/{run['id']}/output", json=body, headers=box.headers)
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]
    assert read(client, run)["chunks"] == []


@pytest.mark.parametrize("raw", [b"{bad", b"\xff\xfe", b""])
def test_run_output_malformed_json_is_400(client, setup, raw):
    box, run = setup
    r = client.post(
        f"/api/runs/{run['id']}/output",
        content=raw,
        headers={**box.headers, "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("malformed JSON body: ")


def test_run_output_over_4_mib_of_data_is_413(client, setup):
    box, run = setup
    big = "x" * 1_048_576
    r = send(client, box, run, *(chunk(seq, big) for seq in range(5)))
    assert r.status_code == 413
    assert "5,242,880 characters" in r.json()["error"]
    assert read(client, run)["chunks"] == []
    # exactly 4 MiB is taken
    assert sent(client, box, run, *(chunk(seq, big) for seq in range(4)))["stored"] == 4


def test_run_output_body_over_the_cap_is_413_before_it_is_read(client, setup, monkeypatch):
    box, run = setup
    monkeypatch.setattr(runs_api, "MAX_OUTPUT_BODY", 1000)
    body = json.dumps({"chunks": [chunk(0, "x" * 2000)]}).encode()
    url = f"/api/runs/{run['id']}/output"
    r = client.post(url, content=body, headers=box.headers)
    assert r.status_code == 413
    assert "body is 2,0" in r.json()["error"]

    def stream():  # no content-length: refused once 1000 bytes have come in
        yield body[:600]
        yield body[600:]

    r = client.post(url, content=stream(), headers=box.headers)
    assert r.status_code == 413
    assert "over 1,000 bytes" in r.json()["error"]
    assert read(client, run)["chunks"] == []


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/api/runs/1/output", {"after": -2}, "after"),
        ("/api/runs/1/output", {"after": "x"}, "after"),
        ("/api/runs/1/output", {"limit": 0}, "limit"),
        ("/api/runs/1/output", {"limit": 5001}, "limit"),
        ("/api/runs/1/output", {"stream": "stdin"}, "stream"),
        ("/api/runs/one/output", {}, "run_id"),
        (f"/api/runs/{2**63}/output", {}, "run_id"),
    ],
    ids=str,
)
def test_run_output_read_rejects_bad_parameters(client, path, params, words):
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]


def test_run_output_post_with_a_bad_run_id_is_422(client, database):
    box = make_box(database)
    r = client.post("/api/runs/one/output", json={"chunks": [chunk(0)]}, headers=box.headers)
    assert r.status_code == 422
    assert "run_id" in r.json()["error"]


def test_run_output_is_described_in_openapi(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/runs/{run_id}/output"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["chunks"]["maxItems"] == 256
    item = schema["properties"]["chunks"]["items"]
    assert item["properties"]["data"]["maxLength"] == 1_048_576
    assert "get" in spec["paths"]["/api/runs/{run_id}/output"]
    assert "post" in spec["paths"]["/api/runs/{run_id}/actions/{action_id}"]


# -- concurrency (PostgreSQL: SQLite runs one writer at a time) ------------------------------


def _append(db, run_id, computer_id, chunks, limit):
    return db.write_sync(
        lambda conn: output_store.append_output(
            conn, run_id, computer_id=computer_id, chunks=chunks, limit=limit
        )
    )


def test_run_output_concurrent_appends_keep_the_counters_exact(pg_database, tmp_path):
    """Appends racing on one run take turns on its row: no lost counter update, no chunk
    stored twice, and the bound holds."""
    with TestClient(
        create_app(
            load_settings(
                {"PAL_HOME": str(tmp_path)}, db_url=pg_database.url, run_output_limit=1000
            ),
            database=pg_database,
        )
    ) as c:
        box = make_box(pg_database)
        agent_on(c, box)
        run = running(c, box)
    size, threads, per_thread = 50, 8, 12
    answers: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                seq = i * threads + n
                batch = [chunk(seq, "z" * size)]
                if i % 3 == 0:  # and now and then the same chunk again, as a retry would
                    batch.append(chunk(seq, "z" * size))
                answers.append(_append(pg_database, run["id"], box.id, batch, 1000))
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert not errors, errors
    rows = stored_rows(pg_database, run["id"])
    final = pg_database.read_sync(lambda conn: output_store.read_output(conn, run["id"]))["run"]
    accepted = sum(a["stored"] for a in answers) * size
    assert final["output_bytes"] == sum(b for _, b, _ in rows) <= 1000
    assert final["output_bytes"] + final["output_dropped"] == accepted
    assert rows[-1][0] == threads * per_thread - 1  # the newest chunk is kept


def test_run_output_the_same_batch_twice_at_once_is_stored_once(pg_database, tmp_path):
    with TestClient(
        create_app(
            load_settings({"PAL_HOME": str(tmp_path)}, db_url=pg_database.url),
            database=pg_database,
        )
    ) as c:
        box = make_box(pg_database)
        agent_on(c, box)
        run = running(c, box)
    batch = [chunk(seq, "q" * 10) for seq in range(50)]
    answers: list[dict] = []
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        answers.append(_append(pg_database, run["id"], box.id, batch, 10_000))

    pool = [threading.Thread(target=worker) for _ in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert sorted(a["stored"] for a in answers) == [0, 0, 0, 50]
    assert len(stored_rows(pg_database, run["id"])) == 50
