"""py-spy helpers: sample the server under load and summarise where its time goes.

``py-spy record --format raw --threads`` writes collapsed stacks, one line per distinct stack:
``thread (TID): NAME;frame;frame;... COUNT`` with each frame ``function (file:line)``. Frames
are grouped by function (line numbers dropped) to give, per function:

* **self**: samples where it was the innermost frame (time spent in its own code);
* **total**: samples where it was anywhere on the stack (time in it and what it called).

Self time is also summed by *layer* (the top-level package of the file: pal, sqlalchemy,
starlette...; the database driver's C code and the event loop's C code are named as such).

Percentages are of all samples of all threads. py-spy leaves idle threads out (blocked on a
lock, a socket or the GIL), so the figures approximate CPU time; the few waits it still
samples (an idle thread-pool worker waiting for work...) are counted apart as idle.

Run as a script to summarise a file again: ``python bench/hotspots.py PROFILE.txt``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load import MeasurementError

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_THREAD = re.compile(r"^thread \(\w+\): ?(?P<name>.*)$")
_LINENO = re.compile(r":\d+\)$")
RATE = 100  # samples per second

# Innermost frames that mean "waiting", which py-spy does not always see as idle.
IDLE_LEAVES = {
    "_worker (concurrent/futures/thread.py)",
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Queue.get (queue.py)",
    "WorkerThread.run (anyio/_backends/_asyncio.py)",
}
# Innermost frames whose time is C code below them rather than their own Python code.
DRIVER_LEAVES = re.compile(
    r"^DefaultDialect\.do_(execute|executemany|execute_no_params|commit|rollback|begin)\b"
    r"|^CursorFetchStrategy\.fetch"
)
_ENTRY = re.compile(r"\(pal/(__main__\.py|cli/)")
LOOP_LEAVES = {"Runner.run (asyncio/runners.py)"}


def ensure_py_spy() -> str:
    """The path of ``py-spy``; installs it into this interpreter's environment when missing."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.exists() else shutil.which("py-spy")
    if found:
        return found
    print("py-spy not found: installing it with pip into this environment...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    if here.exists():
        return str(here)
    raise MeasurementError("py-spy is missing and `pip install py-spy` failed")


def start_recording(
    pid: int, output: Path, duration: int, *, gil: bool = False
) -> subprocess.Popen[str]:
    """Start ``py-spy record`` on ``pid`` for ``duration`` seconds (raw collapsed stacks)."""
    command = [
        ensure_py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--threads",
        "--output",
        str(output),
    ]
    if gil:
        command.append("--gil")
    if os.geteuid() != 0:
        print("note: py-spy needs ptrace rights (root, or kernel.yama.ptrace_scope=0)")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_recording(proc: subprocess.Popen[str], output: Path) -> None:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0 or not output.exists():
        raise MeasurementError(f"py-spy record failed (exit {proc.returncode}):\n{out}")


@dataclass
class Profile:
    samples: int = 0  # busy samples, all threads
    idle: int = 0  # samples whose innermost frame is a wait (IDLE_LEAVES), left out
    # Samples a thread could have had: duration x rate (0 when unknown).
    slots: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    layers: Counter[str] = field(default_factory=Counter)
    total_time: Counter[str] = field(default_factory=Counter)
    thread_total: dict[str, Counter[str]] = field(default_factory=dict)

    def pct(self, n: int) -> float:
        return 100.0 * n / self.samples if self.samples else 0.0

    def busy(self, thread: str) -> float | None:
        """Share of the wall time the thread was sampled busy (running, or holding the GIL)."""
        return 100.0 * self.threads[thread] / self.slots if self.slots else None

    def main_threads(self, share: float = 5.0) -> list[str]:
        return [t for t, n in self.threads.most_common() if self.pct(n) >= share]

    def pal_top(self, thread: str, n: int) -> list[tuple[str, int]]:
        """pal's own functions on the thread's stacks, by total time (without the command
        line entry chain, ``python -m pal server``, which is under everything)."""
        return [
            (frame, count)
            for frame, count in self.thread_total[thread].most_common()
            if "(pal/" in frame and not _ENTRY.search(frame)
        ][:n]

    def as_json(self, n: int = 25) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "idle_samples_left_out": self.idle,
            "slots_per_thread": self.slots,
            "threads": {
                t: {"share_pct": round(self.pct(c), 1), "busy_pct": _round(self.busy(t))}
                for t, c in self.threads.most_common()
            },
            "self_by_layer": [(k, round(self.pct(v), 1)) for k, v in self.layers.most_common()],
            "self": [(k, round(self.pct(v), 1)) for k, v in self.self_time.most_common(n)],
            "pal_total_by_thread": {
                t: [(k, round(self.pct(v), 1)) for k, v in self.pal_top(t, n)]
                for t in self.main_threads()
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _frame(raw: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (path/to/file.py)``."""
    return _LINENO.sub(")", raw.strip())


def layer(frame: str) -> str:
    """The layer a frame's own time belongs to: its top-level package, or the C code it
    stands for (database driver, event loop)."""
    if DRIVER_LEAVES.search(frame):
        return "database driver (C, called from sqlalchemy)"
    if frame in LOOP_LEAVES:
        return "event loop (uvloop C code: polling, parsing, writing)"
    if "(psycopg/" in frame:
        return "psycopg (PostgreSQL driver; includes waiting for the database's answers)"
    match = re.search(r"\(([^()]*)\)$", frame)
    path = match.group(1) if match else ""
    if path.startswith("<frozen"):
        return "python stdlib"
    if path.startswith("<"):
        return "generated code (<string>: dataclass and SQLAlchemy-made functions)"
    top = re.split(r"[/.]", path, maxsplit=1)[0]
    return "python stdlib" if top in sys.stdlib_module_names else top or "?"


def parse(path: Path, *, duration: float = 0, rate: int = RATE) -> Profile:
    """Read a raw py-spy profile; ``duration`` (s) lets it tell how busy each thread was."""
    profile = Profile(slots=int(duration * rate))
    for line in path.read_text(errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match["count"])
        parts = match["stack"].split(";")
        thread = "?"
        head = _THREAD.match(parts[0])
        if head:
            # ThreadPoolExecutor names its threads pal-db_0, pal-db_1...: count them as one.
            thread = re.sub(r"_\d+$", "", head["name"]) or "?"
            parts = parts[1:]
        frames = [_frame(p) for p in parts if p]
        if not frames:
            continue
        if frames[-1] in IDLE_LEAVES:
            profile.idle += count
            continue
        profile.samples += count
        profile.threads[thread] += count
        profile.self_time[frames[-1]] += count
        profile.layers[layer(frames[-1])] += count
        per_thread = profile.thread_total.setdefault(thread, Counter())
        for frame in set(frames):
            profile.total_time[frame] += count
            per_thread[frame] += count
    return profile


def format_profile(profile: Profile, n: int = 20, title: str = "py-spy") -> str:
    lines = [f"{title}: {profile.samples} busy samples ({profile.idle} idle-wait samples left out)"]
    if profile.slots:
        lines.append(
            f"  all threads together: {100.0 * profile.samples / profile.slots:.0f} % of the wall "
            "time (100 % = one thread busy all the time)"
        )
    for thread, count in profile.threads.most_common():
        busy = profile.busy(thread)
        extra = f", busy {busy:.0f} % of the wall time" if busy is not None else ""
        lines.append(f"  thread {thread}: {profile.pct(count):.1f} % of the samples{extra}")
    lines.append("self time by layer, % of all samples:")
    lines += [f"  {profile.pct(v):5.1f} %  {k}" for k, v in profile.layers.most_common()]
    lines.append(f"top {n} functions by self time (innermost frame), % of all samples:")
    lines += [f"  {profile.pct(v):5.1f} %  {k}" for k, v in profile.self_time.most_common(n)]
    for thread in profile.main_threads():
        top = profile.pal_top(thread, n)
        if top:
            lines.append(f"pal functions by total time in thread {thread}, % of all samples:")
            lines += [f"  {profile.pct(v):5.1f} %  {k}" for k, v in top]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python bench/hotspots.py PROFILE.txt [TOP_N]")
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    print(format_profile(parse(Path(sys.argv[1])), top_n))
