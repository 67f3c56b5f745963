"""A pytest plugin: no secret the suite makes ever shows up in a log (issue 8, docs/security.md).

Log records of the in-process apps are checked as they are emitted; at the end of the session
every ``*.log`` file under the session's temporary folder (the server and daemon processes'
output) is read. A secret is anything shaped like an admin token, a computer API key or a
run credential, and every daemon token and Lark app secret written under that folder. A leak
fails the run with the file (or test) and the line.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

SHAPES = re.compile(
    r"pal_admin_[A-Za-z0-9_-]{20,}|sk_machine_[A-Za-z0-9_-]{20,}|run_[A-Za-z0-9_-]{40,}"
)
REPORT = "secret-leaks.txt"
_leaks: list[str] = []
_current = ["(outside a test)"]


def known_secrets(root: Path) -> set[str]:
    """Daemon tokens and Lark app secrets written under ``root``."""
    found: set[str] = set()
    for path in root.rglob("daemon.token"):  # tests also write broken ones
        try:
            found.add(path.read_text(encoding="utf-8", errors="replace").strip())
        except OSError:
            continue
    for path in root.rglob("lark.json"):
        try:
            bots = json.loads(path.read_bytes()).get("bots", [])
        except (ValueError, AttributeError, OSError):
            continue
        for bot in bots if isinstance(bots, list) else []:
            if isinstance(bot, dict) and isinstance(bot.get("app_secret"), str):
                found.add(bot["app_secret"])
    return {s for s in found if len(s) >= 12 and s.isprintable() and " " not in s}


def leaks_in(text: str, secrets: set[str]) -> list[str]:
    """The secrets in ``text``, each cut to its first 12 characters."""
    hits = [m[:12] + "..." for m in SHAPES.findall(text)]
    return hits + [s[:12] + "..." for s in secrets if s in text]


def scan_files(root: Path) -> list[str]:
    """``file:line: secret`` for every secret in a ``*.log`` file under ``root``."""
    secrets = known_secrets(root)
    found = []
    for path in sorted(root.rglob("*.log")):
        with open(path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                for hit in leaks_in(line, secrets):
                    found.append(f"{path}:{number}: {hit}")
    return found


class _Watch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            return
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        for hit in leaks_in(text, set()):
            _leaks.append(f"{_current[0]}: log {record.name}:{record.lineno}: {hit}")


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_Watch(level=logging.DEBUG))


def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[0] = item.nodeid


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    root = factory.getbasetemp()
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller reports
        (root / REPORT).write_text("".join(f"{leak}\n" for leak in _leaks))
        return
    leaks = list(_leaks) + scan_files(root)
    for report in root.rglob(REPORT):
        leaks += report.read_text().splitlines()
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n".join(leaks[:50])
        message = f"secrets found in logs ({len(leaks)}):\n{lines}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
