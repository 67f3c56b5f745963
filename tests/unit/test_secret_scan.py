"""The log scan of tests/secret_scan.py finds what it is for."""

from __future__ import annotations

import json
import logging

from tests import secret_scan
from tests.secret_scan import scan_files


def test_scan_names_the_file_and_line_of_each_secret(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "daemon.token").write_text("d41d8cd98f00b204e9800998ecf8427e\n")
    (tmp_path / "home" / "lark.json").write_text(
        json.dumps({"bots": [{"app_id": "cli_x", "app_secret": "lark-secret-0123456789"}]})
    )
    log = tmp_path / "server-1.log"
    log.write_text(
        "ready\n"
        "key sk_machine_abcdefghijklmnopqrstuvwxyz012345\n"
        "fine\n"
        "token d41d8cd98f00b204e9800998ecf8427e and lark-secret-0123456789\n"
    )
    try:
        found = scan_files(tmp_path)
    finally:
        log.unlink()  # planted on purpose: the session's own scan must not report it
    assert [f.split(": ")[0] for f in found] == [f"{log}:2", f"{log}:4", f"{log}:4"]
    assert all("abcdefghijklmnop" not in f for f in found)  # the report cuts secrets short


def test_scan_passes_clean_logs(tmp_path):
    (tmp_path / "server-1.log").write_text("pal server ready\nthe token is in admin.token\n")
    assert scan_files(tmp_path) == []


def test_log_records_with_a_secret_are_reported_with_the_test():
    before = len(secret_scan._leaks)
    record = logging.LogRecord(
        "pal.x", logging.INFO, __file__, 7, "key %s", ("sk_machine_" + "a" * 43,), None
    )
    secret_scan._Watch().emit(record)
    try:
        assert len(secret_scan._leaks) == before + 1
        assert "test_log_records_with_a_secret" in secret_scan._leaks[-1]
        assert "pal.x:7" in secret_scan._leaks[-1] and "a" * 20 not in secret_scan._leaks[-1]
    finally:
        del secret_scan._leaks[before:]  # the leak was made on purpose
