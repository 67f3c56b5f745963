"""Executors: what the daemon does with a claimed delivery once its session exists.

An executor starts the run (``POST /api/runs``, which also acks the delivery), carries it
out and finishes it. :class:`DryRunExecutor` records a run that completes at once without
starting the runtime (``--dry-run``); :class:`pal.daemon.runner.RunExecutor` runs the
agent's runtime as a supervised process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pal.daemon.server_api import ServerApi, ServerError

T = TypeVar("T")


class Retrying(Protocol):
    """Runs a server call, retrying it with backoff while the server is unreachable."""

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T: ...


@dataclass(frozen=True)
class Job:
    """One claimed delivery, ready to run."""

    delivery: dict[str, Any]
    agent: dict[str, Any]
    session: dict[str, Any]
    daemon_id: str
    cwd: str | None

    @property
    def delivery_id(self) -> int:
        return int(self.delivery["id"])

    @property
    def attempt(self) -> int:
        return int(self.delivery["attempt"])

    @property
    def runtime(self) -> str:
        return str(self.agent.get("runtime") or "codex")


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``status`` is the run's final status (``completed``, ``failed``,
    ``killed``)."""

    run_id: int
    status: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"


class CannotStart(Exception):
    """The executor will not start a run for this job. The daemon fails the delivery with
    this message (back to pending when ``retry``)."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


class Executor(Protocol):
    async def prepare(self) -> None:
        """Before the daemon connects: clean up after a daemon that died."""
        ...

    async def execute(self, job: Job) -> Outcome:
        """Start, carry out and finish the run of ``job``; raise :class:`CannotStart` to
        refuse before starting one."""
        ...

    async def handle_actions(self, requests: list[dict[str, Any]]) -> None:
        """Carry out the kill and restart requests of a heartbeat answer."""
        ...

    async def stop_all(self) -> None:
        """The daemon is stopping: end the runs in progress."""
        ...

    async def aclose(self) -> None:
        """Wait for work still under way after the last run ended."""
        ...


class DryRunExecutor:
    """Records a run (``dry_run: true``) and finishes it as completed, exit code 0."""

    def __init__(self, api: ServerApi, retrying: Retrying) -> None:
        self._api = api
        self._retrying = retrying

    async def execute(self, job: Job) -> Outcome:
        start = {
            "delivery_id": job.delivery_id,
            "attempt": job.attempt,
            "daemon_id": job.daemon_id,
            "session_id": job.session["id"],
            "runtime": job.runtime,
            "dry_run": True,
        }
        run = await self._retrying(lambda: self._api.start_run(start))
        finish = {"status": "completed", "exit_code": 0}
        await self._retrying(lambda: self._api.finish_run(int(run["id"]), finish))
        return Outcome(run_id=int(run["id"]), status="completed")

    async def handle_actions(self, requests: list[dict[str, Any]]) -> None:
        """A dry run has ended before anyone can ask: every request fails, once."""
        for request in requests:
            run_id, action_id = request.get("run_id"), request.get("id")
            body = {"status": "failed", "error": f"run {run_id} is a dry run: it has ended"}
            try:
                await self._api.call("POST", f"/api/runs/{run_id}/actions/{action_id}", body)
            except ServerError:
                pass

    async def prepare(self) -> None:
        return None

    async def stop_all(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
