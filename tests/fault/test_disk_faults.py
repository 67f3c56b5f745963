"""SQLite on a disk that fills up or turns read-only under the server: writes answer a clean
503 saying what is wrong (never a 500 or a traceback), reads keep working, nothing refused is
half-written, the file stays sound, and the server works again once the disk is fixed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerProcess, free_port
from tests.fault.disks import ext4_disk, fill, tmpfs
from tests.fault.helpers import every_page, sqlite_problems

pytestmark = pytest.mark.e2e

STOPPED = (0, -signal.SIGTERM)  # how a server exits on SIGTERM (uvicorn re-raises it)


class Poster:
    """Posts to ``general`` and remembers what was acknowledged and what was refused."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=15)
        self.acked: list[str] = []
        self.refused: list[httpx.Response] = []
        self.refused_texts: list[str] = []

    def post(self, text: str) -> int:
        body = {"room": "general", "sender": "alice", "content": text}
        answer = self.http.post("/api/messages", json=body)
        assert answer.status_code in (201, 503), f"{answer.status_code} {answer.text}"
        if answer.status_code == 201:
            self.acked.append(text)
        else:
            self.refused.append(answer)
            self.refused_texts.append(text)
        return answer.status_code

    def post_until_refused(self, prefix: str, most: int = 200) -> None:
        """Post ~4 KB messages until five in a row are refused."""
        in_a_row = 0
        for i in range(most):
            in_a_row = in_a_row + 1 if self.post(f"{prefix} {i} " + "x" * 4000) == 503 else 0
            if in_a_row == 5:
                return
        raise AssertionError(f"{most} posts and still no five 503s in a row")

    def stored(self) -> list[str]:
        return [
            m["content"] for m in every_page(self.http, "/api/messages", "messages", room="general")
        ]

    def close(self) -> None:
        self.http.close()


def assert_clean_503s(refused: list[httpx.Response], says: str) -> None:
    for answer in refused:
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.headers["retry-after"] == "5"
        error = answer.json()["error"]
        assert says in error and "retry" in error, error


def test_a_full_disk_answers_503_and_the_server_works_again_when_space_returns(
    make_server: Any, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        db = disk / "pal.sqlite"
        server: ServerProcess = make_server({"PAL_DB": str(db)})
        poster = Poster(server)
        for i in range(20):
            assert poster.post(f"before {i}") == 201

        filler = fill(disk)
        poster.post_until_refused("while full")
        assert_clean_503s(poster.refused, says="database or disk is full")
        assert poster.stored() == poster.acked  # reads still work; nothing refused was kept
        assert httpx.get(f"{server.url}/health").status_code == 200

        filler.unlink()  # space returns: the running server writes again
        for i in range(5):
            assert poster.post(f"after {i}") == 201
        assert poster.stored() == poster.acked
        assert sqlite_problems(db) == []

        poster.close()
        server.stop()
        assert server.proc.returncode in STOPPED  # not killed after hanging
        assert sqlite_problems(db) == []
        log = server.log.read_text()
        assert "Traceback" not in log, log
    print(
        f"\n[fault] full disk: {len(poster.acked)} posts acknowledged, {len(poster.refused)} "
        f"refused with 503 ({poster.refused[0].json()['error']!r}), 0 500s, 0 tracebacks; "
        "integrity_check ok; writes resumed without a restart once space returned"
    )


def test_a_disk_turned_read_only_answers_503_and_keeps_the_file_sound(
    make_server: Any, tmp_path: Path
) -> None:
    with ext4_disk(tmp_path) as disk:
        db = disk.path / "pal.sqlite"
        server: ServerProcess = make_server({"PAL_DB": str(db)})
        poster = Poster(server)
        for i in range(20):
            assert poster.post(f"before {i}") == 201
        # What the kernel had written before the failure survives it (with synchronous=NORMAL
        # the last commits may still be in its cache: docs/reliability.md).
        subprocess.run(["sync", "-f", str(db)], check=True)

        disk.fail()
        poster.post_until_refused("read-only", most=20)
        assert poster.refused_texts == [f"read-only {i} " + "x" * 4000 for i in range(5)]
        assert_clean_503s(poster.refused, says="disk I/O error")
        assert poster.stored() == poster.acked  # reads still work
        server.stop()
        assert server.proc.returncode in STOPPED  # not killed after hanging

        # Started again on the read-only disk, the server serves reads and refuses writes.
        server.restart()
        assert poster.stored() == poster.acked
        assert poster.post("still read-only") == 503
        assert_clean_503s(poster.refused[-1:], says="readonly database")
        poster.close()
        server.stop()

        disk.repair()
        assert sqlite_problems(db) == []
        server.restart()
        after = Poster(server)
        assert after.stored() == poster.acked
        assert after.post("the disk is back") == 201
        after.close()
        log = server.log.read_text()
        assert "Traceback" not in log, log
        server.stop()
    print(
        f"\n[fault] read-only disk: {len(poster.acked)} posts acknowledged before it failed, "
        f"all found after e2fsck; {len(poster.refused)} refused with 503 "
        f"({poster.refused[0].json()['error']!r}), 0 500s, 0 tracebacks; integrity_check ok"
    )


def test_a_server_started_on_a_read_only_disk_exits_saying_so(
    sqlite_template: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk") as disk:
        shutil.copy(sqlite_template, disk / "pal.sqlite")  # closed cleanly: no -wal, no -shm
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PAL_", "LOCK_"))},
            "PAL_HOME": str(tmp_path / "home"),
            "PAL_DB": str(disk / "pal.sqlite"),
            "PAL_PORT": str(free_port()),
        }
        started = subprocess.run(
            [sys.executable, "-m", "pal", "server"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert started.returncode == 1, started.stderr
    errors = [line for line in started.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot open the database {disk / 'pal.sqlite'}: unable to open database file "
        f"(its folder {disk} is read-only: SQLite writes the database and its -wal and -shm "
        "files there; make it writable or set PAL_DB to a writable place)"
    ], started.stderr
    assert "Traceback" not in started.stderr
