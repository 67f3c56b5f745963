"""A fake ``codex`` CLI: ``codex exec --json`` as codex-cli 0.171.0 behaves, as far as the
daemon can see (../shared/reference/codex-offline.md has the real events).

Run it through the shim that :func:`tests.fakes.install_fakes` writes. What it mirrors:

- **argv, strictly** (clap-like): exec flags, ``-c key=value`` (repeatable), ``--sandbox
  read-only|workspace-write|danger-full-access``, ``--dangerously-bypass-approvals-and-sandbox``,
  ``-m``; an unknown flag, a value missing, a flag given twice, or an exec-level flag after
  ``resume`` (``--sandbox``, ``-C``, ...) is a usage error, exit 2. ``--version`` prints
  ``codex-cli 0.171.0``.
- **start-up checks**: CODEX_HOME (default ``~/.codex``) must exist when set; ``-c`` needs
  ``=``; outside a git repository ``--skip-git-repo-check`` is required (exit 1 otherwise).
- **stdin**: read to EOF before any work when it is not a TTY (so a daemon that leaves it
  open hangs this fake as it hangs the real codex); its text is appended to the prompt.
- **events**: ``thread.started``, ``turn.started``, ``item.started``/``item.completed`` of a
  ``command_execution`` for the reply command, ``item.completed`` ``agent_message``,
  ``turn.completed`` with usage summed over the thread (:data:`TURN_USAGE` per turn).
- **the reply**: runs ``pal cli send "<text>"`` (``pal`` from PATH, this process's
  environment plus ``CODEX_THREAD_ID``); a failing command gives a ``failed`` item with its
  exit code and output, and the turn still completes. With the sandbox's network off
  (``read-only``, or ``workspace-write`` without ``-c
  sandbox_workspace_write.network_access=true``) the command fails as the real sandbox
  makes it fail (loopback is blocked too) and is not run.
- **sessions**: ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<ts>-<thread_id>.jsonl``; ``resume
  <id>`` finds it in any date folder, appends, and reuses the thread id; an unknown id prints
  :data:`RESUME_MISS_MESSAGE` on stderr and exits 1 with no JSONL. A resume id that is not a
  UUID is a thread name to codex; with no such name it starts a new thread, as codex does.
- **signals**: SIGTERM is not handled (the process dies) unless ``[fake:ignore_sigterm]``;
  SIGINT ends it with exit code 1 and no further JSONL (what codex 0.171.0 did when
  interrupted during a command).

Scenario directives in the prompt (the message body reaches it): ``[fake:sleep=SECONDS]``,
``[fake:exit=N]`` (exit N after the reply, with no ``turn.completed``: a turn that ends
without a terminal event), ``[fake:ignore_sigterm]``, ``[fake:grandchild]`` (a grandchild in
its own session that ignores SIGTERM and sleeps; its pid as a ``{"grandchild_pid": N}`` stdout
line and in ``$FAKE_RECORD_DIR/grandchild-<PAL_RUN_ID>.pid``), ``[fake:flood=BYTES]`` (exactly
BYTES bytes of text lines on stdout), ``[fake:stderr_flood=BYTES]`` (the same on stderr),
``[fake:long_line=BYTES]`` (one stdout line of exactly BYTES bytes, then a newline),
``[fake:non_utf8]`` (a line with invalid UTF-8 on stdout and on stderr), ``[fake:no_reply]``,
``[fake:reply=TEXT]`` (TEXT up to ``]``). Default reply: ``fake codex: done (run
<PAL_RUN_ID>)``. With ``$FAKE_RECORD_DIR`` set, each process records ``{argv, cwd, env,
stdin}`` in ``$FAKE_RECORD_DIR/<PAL_RUN_ID>-<n>.json`` (n = 001, 002, ...; argv without the
program name). Nothing sleeps unless a scenario asks.

The helpers above ``# -- codex`` are shared with tests/fakes/claude.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

GRANDCHILD_SLEEP = 300  # seconds; a test that does not kill it still gets rid of it
_DIRECTIVE = re.compile(r"\[fake:([a-z0-9_]+)(?:=([^\]]*))?\]")


class Exit(Exception):
    """End the fake with this exit code (after its messages are written)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def directives(prompt: str) -> dict[str, str]:
    """The ``[fake:name=value]`` directives of a prompt (value "" when there is none)."""
    return {m.group(1): m.group(2) or "" for m in _DIRECTIVE.finditer(prompt)}


def say(stream: Any, data: bytes) -> None:
    """Write to a binary stream and flush: the daemon sees every event as it happens."""
    try:
        stream.write(data)
        stream.flush()
    except BrokenPipeError:
        raise Exit(141) from None  # the reader went away, as SIGPIPE would end a CLI


def emit(event: dict[str, Any]) -> None:
    """One JSON line on stdout, compact as the real CLIs print it."""
    say(
        sys.stdout.buffer,
        json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n",
    )


def error(text: str) -> None:
    say(sys.stderr.buffer, text.encode() + b"\n")


def stdin_is_pipe() -> bool:
    """True when stdin is open and not a terminal (then the real CLIs read it to EOF)."""
    try:
        return sys.stdin is not None and not sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def read_stdin() -> str:
    """All of stdin when it is not a terminal (blocks until EOF, like the real CLIs)."""
    if not stdin_is_pipe():
        return ""
    try:
        return sys.stdin.buffer.read().decode(errors="replace")
    except (OSError, ValueError):
        return ""


def record(extra: dict[str, Any] | None = None, *, stdin: str) -> None:
    """``{argv, cwd, env, stdin}`` to ``$FAKE_RECORD_DIR/<PAL_RUN_ID>-<n>.json``."""
    folder = os.environ.get("FAKE_RECORD_DIR")
    if not folder:
        return
    data = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "stdin": stdin,
        **(extra or {}),
    }
    run = os.environ.get("PAL_RUN_ID", "none")
    for n in range(1, 1000):
        path = Path(folder, f"{run}-{n:03d}.json")
        try:
            with open(path, "x", encoding="utf-8") as file:
                json.dump(data, file)
            return
        except FileExistsError:
            continue


def filler(size: int, label: bytes) -> bytes:
    """Exactly ``size`` bytes of text lines (each ends with a newline when size allows)."""
    line = (label + b" " + b"x" * 100)[:99] + b"\n"
    whole, rest = divmod(size, len(line))
    tail = b"x" * (rest - 1) + b"\n" if rest else b""
    return line * whole + tail


def spawn_grandchild() -> int:
    """A process in its own session that ignores SIGTERM and sleeps (it keeps PAL_RUN_ID in
    its environment); its pid is printed and recorded."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"time.sleep({GRANDCHILD_SLEEP})"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = os.environ.get("FAKE_RECORD_DIR")
    if folder:
        run = os.environ.get("PAL_RUN_ID", "none")
        Path(folder, f"grandchild-{run}.pid").write_text(str(child.pid))
    emit({"grandchild_pid": child.pid})
    return child.pid


def noisy_scenarios(wanted: dict[str, str], name: str) -> None:
    """The scenarios that only make output or wait, in a fixed order."""
    if "grandchild" in wanted:
        spawn_grandchild()
    if "non_utf8" in wanted:
        bad = f"{name}: invalid utf-8 follows: ".encode() + b"\xff\xfe\xc3( end\n"
        say(sys.stdout.buffer, bad)
        say(sys.stderr.buffer, bad)
    if "flood" in wanted:
        say(sys.stdout.buffer, filler(int(wanted["flood"]), f"{name} flood".encode()))
    if "stderr_flood" in wanted:
        say(sys.stderr.buffer, filler(int(wanted["stderr_flood"]), f"{name} noise".encode()))
    if "long_line" in wanted:
        say(sys.stdout.buffer, b"L" * int(wanted["long_line"]) + b"\n")
    if "sleep" in wanted:
        time.sleep(float(wanted["sleep"]))


def reply_text(wanted: dict[str, str], name: str) -> str | None:
    """What the agent answers in the room, or None for ``[fake:no_reply]``."""
    if "no_reply" in wanted:
        return None
    if wanted.get("reply"):
        return wanted["reply"]
    return f"fake {name}: done (run {os.environ.get('PAL_RUN_ID', '?')})"


def run_reply(text: str, env: dict[str, str]) -> tuple[int, str]:
    """``pal cli send TEXT`` with ``pal`` from PATH: (exit code, stdout and stderr)."""
    pal = shutil.which("pal", path=env.get("PATH"))
    if pal is None:
        return 127, "/bin/bash: line 1: pal: command not found\n"
    done = subprocess.run(
        [pal, "cli", "send", text],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    return done.returncode, done.stdout.decode(errors="replace")


def quote(word: str) -> str:
    """Quote a word as codex shows commands (Rust shlex: bare, '...', or "...")."""
    if word and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    if "'" not in word:
        return f"'{word}'"
    return '"' + re.sub(r'([\\"$`])', r"\\\1", word) + '"'


def uuid7() -> str:
    """A time-ordered UUID (version 7), the kind codex uses for thread ids."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


# -- codex ---------------------------------------------------------------------------------

VERSION = "codex-cli 0.171.0"
EXEC_VERSION = "codex-cli-exec 0.171.0"
RESUME_MISS_MESSAGE = (
    "Error: thread/resume: thread/resume failed: no rollout found for thread id {thread_id} "
    "(code -32600)"
)
"""What codex 0.171.0 prints (stderr, exit 1, no JSONL) when ``resume`` names a thread that
CODEX_HOME does not have; pal.runtimes.codex.RESUME_MISS_PATTERN must match it."""
NOT_TRUSTED = "Not inside a trusted directory and --skip-git-repo-check was not specified."
TURN_USAGE = {
    "input_tokens": 20,
    "cached_input_tokens": 0,
    "cache_write_input_tokens": 0,
    "output_tokens": 10,
    "reasoning_output_tokens": 0,
}
"""Usage of one turn (two model requests of 10 in / 5 out, as with tests/fakes/model_server)."""
NO_NETWORK = "pal cli cannot reach the daemon (loopback is blocked too)"
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
EXEC_USAGE = "Usage: codex exec [OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND> [ARGS]"
RESUME_USAGE = "Usage: codex exec resume [OPTIONS] [SESSION_ID] [PROMPT]"

# Options: name -> (aliases, takes a value, repeatable). Exec-level options come first; the
# `resume` subcommand takes only RESUME_OPTIONS (codex 0.171.0 `codex exec resume --help`).
OPTIONS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "--config": (("-c",), True, True),
    "--enable": ((), True, True),
    "--disable": ((), True, True),
    "--model": (("-m",), True, False),
    "--image": (("-i",), True, True),
    "--dangerously-bypass-approvals-and-sandbox": (("--yolo",), False, False),
    "--skip-git-repo-check": ((), False, False),
    "--ephemeral": ((), False, False),
    "--ignore-user-config": ((), False, False),
    "--ignore-rules": ((), False, False),
    "--strict-config": ((), False, False),
    "--json": ((), False, False),
    "--output-last-message": (("-o",), True, False),
    "--help": (("-h",), False, False),
    # exec only
    "--sandbox": (("-s",), True, False),
    "--profile": (("-p",), True, False),
    "--cd": (("-C",), True, False),
    "--add-dir": ((), True, True),
    "--color": ((), True, False),
    "--oss": ((), False, False),
    "--version": (("-V",), False, False),
    # resume only
    "--last": ((), False, False),
    "--all": ((), False, False),
}
EXEC_ONLY = {"--sandbox", "--profile", "--cd", "--add-dir", "--color", "--oss", "--version"}
RESUME_ONLY = {"--last", "--all"}
CHOICES = {"--sandbox": SANDBOXES, "--color": ("always", "never", "auto")}
VALUE_NAMES = {
    "--config": "<key=value>",
    "--sandbox": "<SANDBOX_MODE>",
    "--model": "<MODEL>",
    "--color": "<COLOR>",
}


@dataclass
class Args:
    """The parsed command line of one level (exec, or exec resume)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)

    def flag(self, name: str) -> bool:
        return name in self.values

    def one(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[-1] if found else None

    def many(self, name: str) -> list[str]:
        return self.values.get(name, [])


def usage_error(message: str, usage: str | None, *, tip: str | None = None) -> NoReturn:
    text = f"error: {message}\n"
    if tip:
        text += f"\n  tip: {tip}\n"
    if usage:
        text += f"\n{usage}\n"
    text += "\nFor more information, try '--help'."
    error(text)
    raise Exit(2)


def _lookup(word: str, level: str) -> str | None:
    for name, (aliases, _, _) in OPTIONS.items():
        if word == name or word in aliases:
            if level == "exec" and name in RESUME_ONLY:
                return None
            if level == "resume" and name in EXEC_ONLY:
                return None
            return name
    return None


def parse_level(words: list[str], level: str) -> tuple[Args, list[str] | None]:
    """Parse one level; returns its args and, for exec, the words after ``resume``."""
    usage = EXEC_USAGE if level == "exec" else RESUME_USAGE
    limit = 1 if level == "exec" else 2
    args = Args()
    index = 0
    only_positionals = False
    while index < len(words):
        word = words[index]
        index += 1
        if not only_positionals and word == "--":
            only_positionals = True
            continue
        if not only_positionals and word.startswith("-") and word != "-":
            value: str | None = None
            if word.startswith("--") and "=" in word:
                word, value = word.split("=", 1)
            elif not word.startswith("--") and len(word) > 2:
                word, value = word[:2], word[2:]
            name = _lookup(word, level)
            if name is None:
                usage_error(
                    f"unexpected argument '{word}' found",
                    usage,
                    tip=f"to pass '{word}' as a value, use '-- {word}'",
                )
            _, takes_value, repeatable = OPTIONS[name]
            label = f"{name} {VALUE_NAMES.get(name, '<' + name[2:].upper() + '>')}"
            if name in args.values and not repeatable:
                shown = label if takes_value else name
                usage_error(f"the argument '{shown}' cannot be used multiple times", usage)
            if takes_value and value is None:
                if index >= len(words):
                    usage_error(f"a value is required for '{label}' but none was supplied", None)
                value = words[index]
                index += 1
            if name in CHOICES and value not in CHOICES[name]:
                usage_error(
                    f"invalid value '{value}' for '{label}'\n"
                    f"  [possible values: {', '.join(CHOICES[name])}]",
                    None,
                )
            args.values.setdefault(name, []).append(value if value is not None else "")
            continue
        if level == "exec" and not only_positionals and word == "resume":
            return args, words[index:]
        if level == "exec" and not only_positionals and word in ("fork", "review", "help"):
            error(f"the fake codex does not implement `codex exec {word}`")
            raise Exit(2)
        if len(args.positionals) >= limit:
            usage_error(f"unexpected argument '{word}' found", usage)
        args.positionals.append(word)
    return args, None


def parse(argv: list[str]) -> tuple[Args, Args | None]:
    """``codex exec ...``: the exec-level args and, for a resume, the resume-level ones."""
    if not argv or argv[0] not in ("exec", "e"):
        if argv and argv[0] in ("--version", "-V"):
            say(sys.stdout.buffer, f"{VERSION}\n".encode())
            raise Exit(0)
        error("the fake codex implements only `codex exec ...` and `codex --version`")
        raise Exit(2)
    exec_args, rest = parse_level(argv[1:], "exec")
    if exec_args.flag("--version"):
        say(sys.stdout.buffer, f"{EXEC_VERSION}\n".encode())
        raise Exit(0)
    if exec_args.flag("--help"):
        say(sys.stdout.buffer, f"Run Codex non-interactively (fake)\n\n{EXEC_USAGE}\n".encode())
        raise Exit(0)
    if rest is None:
        return exec_args, None
    resume_args, _ = parse_level(rest, "resume")
    return exec_args, resume_args


def codex_home() -> Path:
    given = os.environ.get("CODEX_HOME")
    if given:
        if not Path(given).is_dir():
            said = f'CODEX_HOME points to "{given}", but that path does not exist'
            error(f"Error finding codex home: {said}")
            raise Exit(1)
        return Path(given)
    home = Path.home() / ".codex"
    home.mkdir(parents=True, exist_ok=True)
    return home


def in_git_repo(folder: Path) -> bool:
    """Inside a git work tree: a ``.git`` folder with a HEAD, or a ``gitdir:`` file, here or
    above (an empty ``.git`` folder, like the mount point codex's sandbox leaves in /tmp, is
    not a repository)."""
    for parent in (folder, *folder.parents):
        dot_git = parent / ".git"
        if (dot_git / "HEAD").is_file():
            return True
        if dot_git.is_file() and dot_git.read_text(errors="replace").startswith("gitdir:"):
            return True
    return False


def toml_value(text: str) -> Any:
    """A ``-c`` value: TOML when it parses, else the raw string (as codex does)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def settings(home: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The few settings the fake uses: config.toml, then the ``-c`` overrides."""
    found: dict[str, Any] = {}
    try:
        config = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        config = {}
    found["sandbox_mode"] = config.get("sandbox_mode")
    found["sandbox_workspace_write.network_access"] = (
        config.get("sandbox_workspace_write") or {}
    ).get("network_access")
    found.update(overrides)
    return found


def sandbox_of(settings: dict[str, Any], exec_args: Args, rest: Args | None) -> tuple[str, bool]:
    """(sandbox mode, network reachable from commands): flags, ``-c``, config.toml."""
    bypass = exec_args.flag("--dangerously-bypass-approvals-and-sandbox") or (
        rest is not None and rest.flag("--dangerously-bypass-approvals-and-sandbox")
    )
    if bypass:
        return "danger-full-access", True
    mode = exec_args.one("--sandbox") or settings.get("sandbox_mode") or "read-only"
    network = settings.get("sandbox_workspace_write.network_access") is True
    return mode, mode == "danger-full-access" or (mode == "workspace-write" and network)


@dataclass
class Thread:
    """A codex thread: its id and rollout file, and the usage summed over its turns."""

    thread_id: str
    rollout: Path
    usage: dict[str, int]

    @classmethod
    def new(cls, home: Path, cwd: str, sandbox: str) -> Thread:
        now = dt.datetime.now()
        thread_id = uuid7()
        folder = home / "sessions" / now.strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        rollout = folder / f"rollout-{now.strftime('%Y-%m-%dT%H-%M-%S')}-{thread_id}.jsonl"
        thread = cls(thread_id, rollout, {k: 0 for k in TURN_USAGE})
        meta = {
            "id": thread_id,
            "session_id": thread_id,
            "cwd": cwd,
            "originator": "codex_exec",
            "cli_version": VERSION.split()[-1],
            "source": "exec",
            "sandbox": sandbox,
        }
        thread.append("session_meta", meta)
        return thread

    @classmethod
    def find(cls, home: Path, thread_id: str) -> Thread | None:
        found = sorted(home.glob(f"sessions/*/*/*/rollout-*-{thread_id}.jsonl"))
        if not found:
            return None
        usage = {k: 0 for k in TURN_USAGE}
        for entry in _entries(found[-1]):
            payload = entry.get("payload") or {}
            if entry.get("type") == "event_msg" and payload.get("type") == "token_count":
                usage = dict(payload["info"]["total_token_usage"])
        return cls(thread_id, found[-1], usage)

    @classmethod
    def last(cls, home: Path, cwd: str | None) -> Thread | None:
        """The newest thread (started in ``cwd`` unless it is None)."""
        rollouts = sorted(home.glob("sessions/*/*/*/rollout-*.jsonl"), key=os.path.getmtime)
        for rollout in reversed(rollouts):
            meta = next(iter(_entries(rollout)), {}).get("payload") or {}
            if cwd is None or meta.get("cwd") == cwd:
                return cls.find(home, str(meta.get("id")))
        return None

    def append(self, kind: str, payload: dict[str, Any]) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        entry = {"timestamp": stamp.replace("+00:00", "Z"), "type": kind, "payload": payload}
        with self.rollout.open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry, separators=(",", ":")) + "\n")


def _entries(rollout: Path) -> list[dict[str, Any]]:
    """The rollout file's entries (lines that are not JSON objects are skipped)."""
    entries = []
    for line in rollout.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def on_sigint(signum: int, frame: Any) -> None:
    raise Exit(1)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, on_sigint)
    exec_args, resume_args = parse(argv)
    both = [exec_args] + ([resume_args] if resume_args else [])
    home = codex_home()
    overrides: dict[str, Any] = {}
    for item in [v for a in both for v in a.many("--config")]:
        if "=" not in item:
            error(f"Error parsing -c overrides: Invalid override (missing '='): {item}")
            raise Exit(1)
        key, value = item.split("=", 1)
        overrides[key.strip()] = toml_value(value.strip())
    if exec_args.one("--cd"):
        os.chdir(exec_args.one("--cd") or ".")
    positionals = resume_args.positionals if resume_args else exec_args.positionals
    prompt_index = 1 if resume_args and not resume_args.flag("--last") else 0
    prompt = positionals[prompt_index] if len(positionals) > prompt_index else None
    if prompt in (None, "-"):
        error("Reading prompt from stdin...")
        stdin = read_stdin()
        if not stdin.strip():
            error("No prompt provided via stdin.")
            raise Exit(1)
        prompt = stdin
    else:
        if stdin_is_pipe():
            error("Reading additional input from stdin...")
        stdin = read_stdin()
        if stdin.strip():
            prompt = f"{prompt}\n\n<stdin>\n{stdin}\n</stdin>"
    record(stdin=stdin)
    wanted = directives(prompt)
    if "ignore_sigterm" in wanted:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    skip_check = any(
        a.flag("--skip-git-repo-check") or a.flag("--dangerously-bypass-approvals-and-sandbox")
        for a in both
    )
    if not skip_check and not in_git_repo(Path.cwd()):
        error(NOT_TRUSTED)
        raise Exit(1)
    sandbox, network = sandbox_of(settings(home, overrides), exec_args, resume_args)
    thread = None
    if resume_args is not None and resume_args.flag("--last"):
        thread = Thread.last(home, None if resume_args.flag("--all") else os.getcwd())
    elif resume_args is not None:
        wanted_id = positionals[0] if positionals else None
        if wanted_id is not None and is_uuid(wanted_id):
            thread = Thread.find(home, wanted_id)
            if thread is None:
                error(RESUME_MISS_MESSAGE.format(thread_id=wanted_id))
                raise Exit(1)
    if thread is None:
        thread = Thread.new(home, os.getcwd(), sandbox)
    turn(thread, prompt, wanted, sandbox=sandbox, network=network)
    last = exec_args.one("--output-last-message") or (
        resume_args.one("--output-last-message") if resume_args else None
    )
    if last:
        Path(last).write_text(thread_last_message(thread))
    return 0


def thread_last_message(thread: Thread) -> str:
    text = ""
    for entry in _entries(thread.rollout):
        payload = entry.get("payload") or {}
        if payload.get("type") == "agent_message":
            text = payload.get("message", "")
    return text


def turn(
    thread: Thread, prompt: str, wanted: dict[str, str], *, sandbox: str, network: bool
) -> None:
    """One turn: the events codex prints, the reply command, the rollout entries."""
    emit({"type": "thread.started", "thread_id": thread.thread_id})
    emit({"type": "turn.started"})
    thread.append("turn_context", {"cwd": os.getcwd(), "sandbox_policy": {"type": sandbox}})
    thread.append(
        "response_item",
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
    )
    noisy_scenarios(wanted, "codex")
    text = reply_text(wanted, "codex")
    items = 0
    if text is not None:
        command = f"/bin/bash -c {quote('pal cli send ' + quote_double(text))}"
        item = {"id": "item_0", "type": "command_execution", "command": command}
        emit(
            {
                "type": "item.started",
                "item": {
                    **item,
                    "aggregated_output": "",
                    "exit_code": None,
                    "status": "in_progress",
                },
            }
        )
        if network:
            code, output = run_reply(text, {**os.environ, "CODEX_THREAD_ID": thread.thread_id})
        else:  # the sandbox blocks the network, loopback included: pal cli cannot connect
            code, output = 1, f"fake codex: the {sandbox} sandbox has no network: {NO_NETWORK}\n"
        status = "completed" if code == 0 else "failed"
        emit(
            {
                "type": "item.completed",
                "item": {**item, "aggregated_output": output, "exit_code": code, "status": status},
            }
        )
        items = 1
    message = text if text is not None else "fake codex: done"
    emit(
        {
            "type": "item.completed",
            "item": {"id": f"item_{items}", "type": "agent_message", "text": message},
        }
    )
    thread.append("event_msg", {"type": "agent_message", "message": message})
    if "exit" in wanted:
        raise Exit(int(wanted["exit"]))
    thread.usage = {k: thread.usage.get(k, 0) + v for k, v in TURN_USAGE.items()}
    thread.append("event_msg", {"type": "token_count", "info": {"total_token_usage": thread.usage}})
    emit({"type": "turn.completed", "usage": thread.usage})


def quote_double(text: str) -> str:
    """``"text"`` for a shell, as the prompt tells the agent to write its reply."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def run(main_function: Any) -> NoReturn:
    """Run a fake's ``main(argv)`` and exit with its code."""
    try:
        code = main_function(sys.argv[1:])
    except Exit as end:
        code = end.code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    run(main)
