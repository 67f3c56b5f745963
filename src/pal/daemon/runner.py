"""Runs: the executor that starts one agent process per claimed delivery and sees it through.

For a job (docs/runs.md): check the runtime's probe (missing or broken → the delivery fails at
once with what to install), read the message and the conversation before it (for a periodic
digest: the messages it covers), start the run (``POST /api/runs``, which acks the delivery),
then launch the runtime through its adapter with the prompt, a per-run credential for the
local API and the agent's cwd; stream its output to the server; when it exits, remember the
runtime's session id for the next delivery in the same place, and finish the run with its
status, exit code, error and usage. A resume that fails because the runtime lost the session
starts a fresh session once and says so in the room.

Kill and restart requests (heartbeat ``control_requests``) kill the run's whole process tree
(graceful signal, ``kill_grace`` seconds, then SIGKILL), finish it ``killed``, report the
action, and for a restart start a fresh run of the same delivery (``restart_of``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pal.daemon.executor import CannotStart, Job, Outcome, Retrying
from pal.daemon.local_api import RunCredentials, RunScope
from pal.daemon.orphans import RunRecords
from pal.daemon.output import OutputShipper
from pal.daemon.prompt import (
    CONTEXT_MESSAGES,
    DIGEST_MESSAGES,
    build_digest_prompt,
    build_prompt,
    is_digest,
    thread_root,
)
from pal.daemon.server_api import ApiError, ServerApi, Unreachable
from pal.daemon.supervisor import CannotSpawn, Child, Exit, LineSplitter, spawn
from pal.runtimes.base import Adapter, EventParser, LaunchError, LaunchRequest, Probe
from pal.runtimes.registry import get_adapter

log = logging.getLogger("pal.daemon")

REPROBE_AFTER = 30.0
"""Seconds after which a runtime found missing is looked for again (it may be installed)."""
FINISHED_MEMORY = 1000
"""How many finished run ids the daemon remembers, to answer late kill requests."""
# Variables of the daemon's own environment a run never sees: the computer's credentials,
# the local API token and every other pal setting (the run gets its own PAL_* below).
_HIDDEN_PREFIXES = ("PAL_", "LOCK_")
_HIDDEN = frozenset({"CLAUDECODE"})


def run_environment(
    base: Mapping[str, str],
    *,
    run_id: int,
    credential: str,
    local_url: str,
    agent_key: str,
    room: str,
    home: Path,
) -> dict[str, str]:
    """The environment of a run: the daemon's, without pal's own settings and secrets, plus
    the run's variables (names without KEY, TOKEN or SECRET: codex strips those from the
    environment of the commands it runs) and the pal executable's folder first on PATH."""
    env = {k: v for k, v in base.items() if not k.startswith(_HIDDEN_PREFIXES) and k not in _HIDDEN}
    env.update(
        PAL_RUN_ID=str(run_id),
        PAL_RUN_AUTH=credential,
        LOCK_DAEMON_URL=local_url,
        PAL_RUN_AGENT=agent_key,
        PAL_ROOM=room,
        PAL_HOME=str(home),
    )
    scripts = Path(sys.executable).parent
    if any((scripts / name).exists() for name in ("pal", "pal.exe")):
        env["PATH"] = os.pathsep.join(filter(None, [str(scripts), env.get("PATH")]))
    return env


class Probes:
    """What each runtime's binary can do on this computer, probed at start and cached; an
    agent whose config names another binary gets that one probed on first use."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None], tuple[Probe, float]] = {}
        self._locks: dict[tuple[str, str | None], asyncio.Lock] = {}

    async def probe_all(self, names: tuple[str, ...]) -> list[Probe]:
        return list(await asyncio.gather(*(self.get(name, {}) for name in names)))

    async def get(self, runtime: str, config: Mapping[str, Any]) -> Probe:
        binary = config.get("binary")
        key = (runtime, binary if isinstance(binary, str) else None)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            now = time.monotonic()
            if cached is not None and (cached[0].available or now - cached[1] < REPROBE_AFTER):
                return cached[0]
            adapter = get_adapter(runtime)
            probe = await asyncio.to_thread(adapter.probe, config)
            self._cache[key] = (probe, now)
            return probe

    def reports(self) -> list[dict[str, Any]]:
        """The default binaries' probes, as the server's ``runtimes`` field wants them."""
        return [p.report() for (_, binary), (p, _) in self._cache.items() if binary is None]


@dataclass
class Active:
    """A run in progress on this daemon."""

    run_id: int
    job: Job
    child: Child | None = None
    stopping: str | None = None  # "kill", "restart" or "shutdown"
    actions: list[int] = field(default_factory=list)  # run actions to report when it ends
    killer: asyncio.Task[Exit] | None = None


@dataclass
class Result:
    status: str
    exit_code: int | None = None
    error: str | None = None
    usage: dict[str, Any] | None = None


class RunExecutor:
    """The real executor: one supervised process per job (see the module docstring)."""

    def __init__(
        self,
        api: ServerApi,
        retrying: Retrying,
        *,
        home: Path,
        local_url: str,
        credentials: RunCredentials,
        probes: Probes,
        kill_grace: float,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._api = api
        self._retrying = retrying
        self._home = home
        self._local_url = local_url
        self._credentials = credentials
        self._probes = probes
        self._kill_grace = kill_grace
        self._environ = os.environ if environ is None else environ
        self._active: dict[int, Active] = {}
        self._finished: dict[int, str] = {}
        self._starting = 0
        self._handled: set[int] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._records = RunRecords(home)

    async def prepare(self) -> None:
        """Kill what runs of a daemon that died (same PAL_HOME) left running."""
        await asyncio.to_thread(self._records.reap_orphans, self._kill_grace)

    # -- jobs -------------------------------------------------------------------------------

    async def execute(self, job: Job) -> Outcome:
        outcome = await self._execute(job, restart_of=None)
        while outcome.status == "killed" and self._finished.get(outcome.run_id) == "restart":
            log.info(
                "run %d: restarting (a fresh run of delivery %d)",
                outcome.run_id,
                job.delivery_id,
                extra={"action": "run_restarting", "run_id": outcome.run_id},
            )
            try:
                outcome = await self._execute(job, restart_of=outcome.run_id)
            except CannotStart as exc:  # the delivery is acked: the restart is what failed
                log.error("run %d: cannot restart: %s", outcome.run_id, exc.message)
                break
        return outcome

    async def _execute(self, job: Job, *, restart_of: int | None) -> Outcome:
        config: Mapping[str, Any] = job.agent.get("config") or {}
        try:
            adapter = get_adapter(job.runtime)
        except LaunchError as exc:
            raise CannotStart(exc.message) from None
        probe = await self._probes.get(job.runtime, config)
        if not probe.available:
            refusal = f"agent {job.agent['key']!r} cannot run on this computer: {probe.error}"
            await self._notice(job, None, refusal)
            raise CannotStart(refusal)
        message, context = await self._conversation(job)
        cwd, resume_id = self._workdir(job)
        self._starting += 1
        try:
            start: dict[str, Any] = {
                "delivery_id": job.delivery_id,
                "attempt": job.attempt,
                "daemon_id": job.daemon_id,
                "session_id": job.session["id"],
                "runtime": job.runtime,
            }
            if restart_of is not None:
                start["restart_of"] = restart_of
            run = await self._retrying(lambda: self._api.start_run(start))
            run_id = int(run["id"])
            active = Active(run_id, job)
            self._active[run_id] = active
        finally:
            self._starting -= 1
        try:
            result = await self._run(active, adapter, probe, message, context, cwd, resume_id)
        except Exception as exc:  # a bug: finish the run rather than leave it running
            log.exception("run %d: unexpected error", run_id, extra={"action": "run_error"})
            result = Result("failed", error=f"the daemon hit an unexpected error: {exc!r}")
        finally:
            del self._active[run_id]
            self._finished[run_id] = active.stopping or "exit"
            while len(self._finished) > FINISHED_MEMORY:
                del self._finished[next(iter(self._finished))]
        finish: dict[str, Any] = {"status": result.status, "exit_code": result.exit_code}
        if result.error:
            finish["error"] = result.error[:4000]
        if result.usage:
            finish["usage"] = result.usage
        await self._retrying(lambda: self._api.finish_run(run_id, finish))
        for action_id in active.actions:
            await self._report_action(run_id, action_id, "done")
        return Outcome(run_id=run_id, status=result.status, error=result.error)

    async def _conversation(self, job: Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        message_id = int(job.delivery["message_id"])
        params: dict[str, Any] = {
            "room": job.delivery["room_id"],
            "before": message_id,
            "limit": CONTEXT_MESSAGES,
        }
        if job.delivery.get("topic_id"):
            params["topic"] = job.delivery["topic_id"]
        if is_digest(job.delivery):  # the newest of the messages it covers, in any topic
            params.update(after=job.delivery["digest_after"], before=message_id + 1)
            params["limit"] = DIGEST_MESSAGES
        try:
            found, earlier = await asyncio.gather(
                self._retrying(lambda: self._api.call("GET", f"/api/messages/{message_id}")),
                self._retrying(lambda: self._api.call("GET", "/api/messages", params=params)),
            )
        except ApiError as exc:
            raise CannotStart(f"cannot read message {message_id}: {exc.message}") from None
        return found["message"], list(earlier["messages"])

    def _workdir(self, job: Job) -> tuple[str, str | None]:
        """Where the run works, and the runtime session it resumes (None: a fresh one). A
        session is resumed in the folder it was made in, while that folder exists."""
        resume_id = job.session.get("runtime_session_id") or None
        stored = job.session.get("cwd")
        if resume_id and stored and Path(stored).is_dir():
            return str(stored), resume_id
        if job.cwd:
            cwd = Path(job.cwd)
        else:
            cwd = self._home / "agents" / str(job.agent["key"])
            cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        if resume_id and stored and not Path(stored).is_dir():
            resume_id = None  # its folder is gone: the runtime could not find it either
        return str(cwd), resume_id

    async def _run(
        self,
        active: Active,
        adapter: Adapter,
        probe: Probe,
        message: dict[str, Any],
        context: list[dict[str, Any]],
        cwd: str,
        resume_id: str | None,
    ) -> Result:
        job, run_id = active.job, active.run_id
        scope = RunScope(
            run_id=run_id,
            agent_key=str(job.agent["key"]),
            room_id=str(job.delivery["room_id"]),
            topic_id=job.delivery.get("topic_id") or None,
            parent_id=None if is_digest(job.delivery) else thread_root(message),
        )
        credential = self._credentials.issue(scope)
        shipper = OutputShipper(
            lambda chunks: self._api.call("POST", f"/api/runs/{run_id}/output", {"chunks": chunks}),
        )
        shipper.start()
        env = run_environment(
            self._environ,
            run_id=run_id,
            credential=credential,
            local_url=self._local_url,
            agent_key=scope.agent_key,
            room=str(message["room"]),
            home=self._home,
        )
        if is_digest(job.delivery):  # answered at the room's top level
            prompt = build_digest_prompt(
                agent=job.agent,
                room=str(message["room"]),
                messages=context,
                run_id=run_id,
                digest_after=int(job.delivery["digest_after"]),
                more=len(context) >= DIGEST_MESSAGES,
            )
        else:
            prompt = build_prompt(
                agent=job.agent,
                message=message,
                context=context,
                run_id=run_id,
                reason=job.delivery.get("reason"),
            )
        try:
            return await self._attempts(
                active, adapter, probe, prompt, cwd, env, resume_id, shipper
            )
        except BaseException:  # cancelled or a bug: the process must not outlive its run
            if active.child is not None and active.child.running:
                self._in_background(active.child.kill(self._kill_grace))
            raise
        finally:
            self._credentials.revoke(credential)
            await shipper.close()
            if shipper.dropped_bytes:
                log.warning(
                    "run %d: %d bytes of output could not be sent to the server",
                    run_id,
                    shipper.dropped_bytes,
                    extra={"action": "output_dropped", "run_id": run_id},
                )

    async def _attempts(
        self,
        active: Active,
        adapter: Adapter,
        probe: Probe,
        prompt: str,
        cwd: str,
        env: dict[str, str],
        resume_id: str | None,
        shipper: OutputShipper,
    ) -> Result:
        """Launch the runtime (resuming ``resume_id``); if the runtime lost that session,
        once more with a fresh one."""
        job, run_id = active.job, active.run_id
        config: Mapping[str, Any] = job.agent.get("config") or {}
        while True:
            request = LaunchRequest(
                prompt=prompt,
                cwd=cwd,
                env=env,
                config=config,
                resume_id=resume_id,
                run_id=run_id,
            )
            try:
                launch = adapter.launch(probe, request)
            except LaunchError as exc:
                await self._notice(job, run_id, f"run {run_id} cannot start: {exc.message}")
                return Result("failed", error=exc.message)
            parser = adapter.parser(request)
            if active.stopping:
                return Result("killed", error=self._stop_reason(active))
            stdout, stderr = LineSplitter(parser.feed), LineSplitter(parser.feed_stderr)
            child = await self._spawn(
                active, launch.argv, launch.cwd, launch.env, shipper, stdout, stderr
            )
            if isinstance(child, Result):
                await self._notice(job, run_id, f"run {run_id} cannot start: {child.error}")
                return child
            exit_ = await child.wait()
            stdout.close()
            stderr.close()
            if (
                resume_id is not None
                and active.stopping is None
                and parser.resume_missed(exit_.code)
            ):
                self._reap_later(run_id, child, forget=False)
                await self._notice(
                    job,
                    run_id,
                    f"{job.agent['key']} could not resume its {job.runtime} session "
                    f"{resume_id} (the runtime no longer has it): starting a fresh session.",
                )
                resume_id = None
                continue
            await self._remember_session(job, parser, cwd)
            self._reap_later(run_id, child, forget=True)
            return self._result(active, exit_, parser)

    async def _spawn(
        self,
        active: Active,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        shipper: OutputShipper,
        stdout: LineSplitter,
        stderr: LineSplitter,
    ) -> Child | Result:
        run_id = active.run_id

        def on_output(stream: str, data: bytes) -> None:
            shipper.write(stream, data)
            (stdout if stream == "stdout" else stderr).feed(data)

        try:
            child = await spawn(argv, cwd=cwd, env=env, on_output=on_output, marker=str(run_id))
        except CannotSpawn as exc:
            return Result("failed", error=exc.message)
        active.child = child
        self._records.add(
            run_id, child.pid, {"PAL_RUN_ID": str(run_id), "PAL_RUN_AUTH": env["PAL_RUN_AUTH"]}
        )
        log.info(
            "run %d: %s started, pid %d",
            run_id,
            active.job.runtime,
            child.pid,
            extra={"action": "run_started", "run_id": run_id, "pid": child.pid},
        )
        if active.stopping:  # asked to stop while it was starting
            self._kill(active)
        self._in_background(self._report_pid(run_id, child.pid))
        return child

    def _result(self, active: Active, exit_: Exit, parser: EventParser) -> Result:
        if active.stopping:
            return Result(
                "killed", exit_code=exit_.code, error=self._stop_reason(active), usage=parser.usage
            )
        if exit_.code == 0:
            if not parser.terminal:
                log.warning(
                    "run %d exited 0 without a final event from %s",
                    active.run_id,
                    active.job.runtime,
                    extra={"action": "run_no_terminal_event", "run_id": active.run_id},
                )
            return Result("completed", exit_code=0, usage=parser.usage)
        error = parser.error or f"{active.job.runtime} ended with {exit_.describe()}"
        said = None if parser.error else _last_error_line(parser.stderr_tail)
        if said:
            error += f": {said}"
        return Result("failed", exit_code=exit_.code, error=error, usage=parser.usage)

    @staticmethod
    def _stop_reason(active: Active) -> str:
        if active.stopping == "shutdown":
            return "killed: the daemon stopped"
        if active.stopping == "restart":
            return "killed to restart it"
        return "killed on request"

    async def _remember_session(self, job: Job, parser: EventParser, cwd: str) -> None:
        session_id = parser.session_id or None
        if session_id is None:
            return
        if session_id == job.session.get("runtime_session_id") and cwd == job.session.get("cwd"):
            return
        body = {"runtime_session_id": session_id, "cwd": cwd}
        path = f"/api/sessions/{job.session['id']}/runtime-session"
        try:
            answer = await self._retrying(lambda: self._api.call("POST", path, body))
        except ApiError as exc:
            log.warning("cannot remember the runtime session %s: %s", session_id, exc.message)
            return
        job.session.update(answer.get("session") or body)

    async def _report_pid(self, run_id: int, pid: int) -> None:
        try:
            await self._retrying(
                lambda: self._api.call("POST", f"/api/runs/{run_id}/pid", {"pid": pid})
            )
        except ApiError as exc:
            log.debug("run %d: pid report refused: %s", run_id, exc.message)

    async def _notice(self, job: Job, run_id: int | None, text: str) -> None:
        """Tell the room (a system message from the agent, which wakes no one)."""
        body: dict[str, Any] = {
            "room": job.delivery["room_id"],
            "sender": job.agent["key"],
            "sender_kind": "system",
            "content": text,
            "parent": job.delivery.get("message_id"),
        }
        try:
            await self._api.call("POST", "/api/messages", body)
        except (ApiError, Unreachable) as exc:
            log.warning("cannot post a notice in the room: %s", exc.message)

    # -- kill and restart -------------------------------------------------------------------

    async def handle_actions(self, requests: list[dict[str, Any]]) -> None:
        """Carry out the kill and restart requests of a heartbeat answer (each once)."""
        for request in requests:
            try:
                action_id, run_id = int(request["id"]), int(request["run_id"])
                action = str(request["action"])
            except (KeyError, TypeError, ValueError):
                log.debug("ignored a malformed control request: %r", request)
                continue
            if action_id in self._handled:
                continue
            active = self._active.get(run_id)
            if active is None:
                if self._starting and run_id not in self._finished:
                    continue  # perhaps the run starting now: look again next heartbeat
                self._handled.add(action_id)
                reason = (
                    f"run {run_id} had already ended"
                    if run_id in self._finished
                    else f"run {run_id} is not running on this daemon"
                )
                self._in_background(self._report_action(run_id, action_id, "failed", reason))
                continue
            self._handled.add(action_id)
            active.actions.append(action_id)
            if active.stopping is None or (active.stopping == "kill" and action == "restart"):
                active.stopping = "restart" if action == "restart" else "kill"
            log.info(
                "run %d: %s requested",
                run_id,
                action,
                extra={"action": f"run_{action}_requested", "run_id": run_id},
            )
            self._kill(active)

    def _kill(self, active: Active) -> None:
        if active.child is None or active.killer is not None:
            return  # not started yet (it will not be), or already being killed
        active.killer = asyncio.create_task(active.child.kill(self._kill_grace))

    async def _report_action(
        self, run_id: int, action_id: int, status: str, error: str | None = None
    ) -> None:
        body: dict[str, Any] = {"status": status}
        if error:
            body["error"] = error
        path = f"/api/runs/{run_id}/actions/{action_id}"
        try:
            await self._retrying(lambda: self._api.call("POST", path, body))
        except ApiError as exc:
            log.debug("run %d: action %d report refused: %s", run_id, action_id, exc.message)

    async def stop_all(self) -> None:
        """The daemon is stopping: kill every run (they finish as ``killed``)."""
        for active in list(self._active.values()):
            if active.stopping is None:
                active.stopping = "shutdown"
            self._kill(active)

    async def aclose(self) -> None:
        """Wait for the leftovers' cleanup and reports still under way."""
        if self._background:
            await asyncio.wait(self._background, timeout=self._kill_grace + 5)

    # -- background work --------------------------------------------------------------------

    def _reap_later(self, run_id: int, child: Child, *, forget: bool) -> None:
        """Kill what the process left running; with ``forget``, then drop the run's record."""

        async def reap() -> None:
            survivors = await child.reap(self._kill_grace)
            if forget:
                self._records.remove(run_id)
            if survivors:
                log.info(
                    "run %d: killed %d process(es) it left behind",
                    run_id,
                    survivors,
                    extra={"action": "run_leftovers_killed", "run_id": run_id},
                )

        self._in_background(reap())

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


def _last_error_line(lines: Iterable[str]) -> str | None:
    """What a runtime that printed no error event said last on stderr: its last line that
    mentions an error, else its last non-empty line."""
    said = [line.strip() for line in lines if line.strip()]
    for line in reversed(said):
        if "error" in line.lower():
            return line[:500]
    return said[-1][:500] if said else None


def _log_failure(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.error("background run work failed: %r", exc, extra={"action": "run_task_failed"})
