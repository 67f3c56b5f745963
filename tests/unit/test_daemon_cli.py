"""``pal daemon`` flag checking: a wrong flag or a missing credential is one ``error:``
line and exit 2; a taken local port is one line and exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pal.cli.main import app

CLEAN = {
    name: None
    for name in (
        "PAL_API_KEY",
        "PAL_AGENT",
        "PAL_COMPUTER_ID",
        "PAL_COMPUTER_SECRET",
        "PAL_SERVER",
        "LOCK_SERVER_URL",
        "LOCK_DAEMON_TOKEN",
        "PAL_LOG_LEVEL",
    )
}


def daemon(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["daemon", *args], env={**CLEAN, "PAL_HOME": str(tmp_path / "home"), **env}
    )
    return result.exit_code, result.stderr


def one_error_line(stderr: str) -> str:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr.removeprefix("error: ").removesuffix("\n")


def test_daemon_without_any_credential_says_what_to_pass(tmp_path: Path) -> None:
    code, stderr = daemon(tmp_path, "--dry-run")
    assert code == 2
    message = one_error_line(stderr)
    assert "--api-key" in message and "PAL_API_KEY" in message
    assert "--computer-id and --computer-secret" in message


def test_daemon_with_half_a_legacy_credential_is_refused(tmp_path: Path) -> None:
    code, stderr = daemon(tmp_path, "--computer-id", "hm-media-demo")
    assert code == 2
    assert "no credential" in one_error_line(stderr)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--interval", "abc"], "--interval 'abc' is not a whole number: use 100-3600000 ms"),
        (["--interval", "50"], "--interval 50 is out of range: use 100-3600000 ms"),
        (["--interval", "3600001"], "--interval 3600001 is out of range: use 100-3600000 ms"),
        (["--local-port", "0"], "--local-port 0 is out of range: use 1-65535"),
        (["--local-port", "http"], "--local-port 'http' is not a whole number: use 1-65535"),
        (["--server", "127.0.0.1:4127"], "server URL '127.0.0.1:4127' must start with http://"),
    ],
)
def test_daemon_rejects_bad_flags_in_one_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    code, stderr = daemon(tmp_path, "--api-key", "sk_machine_x", *args)
    assert code == 2
    assert one_error_line(stderr).startswith(expected)


def test_daemon_cwd_must_be_an_existing_directory(tmp_path: Path) -> None:
    code, stderr = daemon(tmp_path, "--api-key", "k", "--cwd", str(tmp_path / "missing"))
    assert code == 2
    assert one_error_line(stderr) == (
        f"--cwd {str(tmp_path / 'missing')!r} does not exist: pass an existing directory for runs"
    )
    afile = tmp_path / "file"
    afile.write_text("")
    code, stderr = daemon(tmp_path, "--api-key", "k", "--cwd", str(afile))
    assert code == 2
    assert "is not a directory" in one_error_line(stderr)


def test_daemon_bad_environment_is_one_line(tmp_path: Path) -> None:
    code, stderr = daemon(tmp_path, "--api-key", "k", PAL_LOG_LEVEL="loud")
    assert code == 2
    assert "PAL_LOG_LEVEL" in one_error_line(stderr)


def test_daemon_local_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = daemon(
            tmp_path,
            "--api-key",
            "sk_machine_secret",
            "--server",
            "http://127.0.0.1:1",
            "--local-port",
            str(port),
        )
    assert code == 1
    message = one_error_line(stderr)
    assert message.startswith(f"cannot serve the local API on 127.0.0.1:{port}:")
    assert "sk_machine_secret" not in stderr


def test_daemon_start_up_does_not_load_the_server_stack() -> None:
    """An idle daemon stays small: `pal daemon` never imports the server, the store,
    SQLAlchemy or FastAPI."""
    code = (
        "import sys\n"
        "import pal.cli.main, pal.daemon.main, pal.daemon.local_api\n"
        "heavy = ('sqlalchemy', 'fastapi', 'alembic', 'psycopg', 'pydantic')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "      or m.startswith(('pal.server', 'pal.store'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_daemon_with_a_token_file_that_is_not_text_is_one_line_and_exit_1(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "daemon.token").write_bytes(b"\xff\xfe\x00garbage")
    code, stderr = daemon(tmp_path, "--api-key", "sk_machine_secret")
    assert code == 1
    assert one_error_line(stderr) == (
        f"cannot set up the local API token: {home / 'daemon.token'} is not a token "
        "(not UTF-8 text): delete it to have a new one made, or set LOCK_DAEMON_TOKEN"
    )


def test_daemon_token_must_fit_in_a_header(tmp_path: Path) -> None:
    code, stderr = daemon(tmp_path, "--api-key", "k", LOCK_DAEMON_TOKEN="tök en")
    assert code == 2
    assert one_error_line(stderr) == (
        "LOCK_DAEMON_TOKEN is not a usable token: use printable ASCII without spaces"
    )
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "daemon.token").write_text("two words\n")
    code, stderr = daemon(tmp_path, "--api-key", "k")
    assert code == 1
    assert one_error_line(stderr).startswith(
        f"cannot set up the local API token: the content of {home / 'daemon.token'} is not a "
        "usable token"
    )


@pytest.mark.parametrize("token", ["tök€n", "a\nb", "two words"])
def test_cli_with_a_token_that_cannot_be_sent_says_so(tmp_path: Path, token: str) -> None:
    result = CliRunner().invoke(
        app,
        ["cli", "health"],
        env={
            **CLEAN,
            "PAL_HOME": str(tmp_path),
            "LOCK_DAEMON_URL": "http://127.0.0.1:1",
            "LOCK_DAEMON_TOKEN": token,
        },
    )
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (
        "LOCK_DAEMON_TOKEN is not a usable token: use printable ASCII without spaces"
    )
