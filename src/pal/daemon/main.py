"""The daemon: connect one computer, heartbeat, follow wake-up hints, claim and run.

Tasks, all on one event loop (docs/daemon.md):

- ``heartbeat``: every ``--interval`` (±20 %), or at once when woken: liveness, lease
  renewal and the assigned agents (reconciled from each answer), then a drain request.
- ``drain``: for each assigned agent, page through its pending deliveries and start
  processing each one not already in hand.
- ``socket``: the server's hints. ``deliveries`` are claimed at once; ``assignments``,
  ``run_action`` and ``resync`` wake the heartbeat; every (re)connect does too. Reconnects
  with full-jitter backoff.
- ``local-api``: 127.0.0.1:``--local-port`` for ``pal cli``.
- one task per delivery being processed (at most ``max_inflight`` at a time, never two for
  one delivery): claim → session → executor.

A 401 anywhere is fatal (:attr:`Daemon.fatal`); the server being unreachable never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import secrets
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pal
from pal.daemon import local_api
from pal.daemon.backoff import Backoff, RetryLog, jittered
from pal.daemon.executor import CannotStart, DryRunExecutor, Executor, Job
from pal.daemon.runner import Probes, RunExecutor
from pal.daemon.server_api import ApiError, Refused, ServerApi, Unreachable
from pal.runtimes.registry import RUNTIMES

log = logging.getLogger("pal.daemon")

T = TypeVar("T")

PAGE = 100
MAX_INFLIGHT = 32  # deliveries processed at once: a run holds its slot until it ends
# Deliveries handed to processing tasks (most waiting for a slot) before a drain stops
# paging; the drain resumes when they are done.
MAX_QUEUED = 1000
SHUTDOWN_GRACE = 30.0


@dataclass(frozen=True)
class Options:
    """What ``pal daemon``'s flags resolved to."""

    server_url: str
    api_key: str | None = None
    interval: float = 5.0  # seconds
    local_port: int = 4137
    dry_run: bool = False
    once: bool = False
    cwd: str | None = None
    home: Path = field(default_factory=lambda: Path("~/.pal").expanduser())
    kill_grace: float = 10.0  # seconds
    agent: str | None = None  # legacy
    computer_id: str | None = None  # legacy
    computer_secret: str | None = None  # legacy

    @property
    def legacy(self) -> bool:
        return self.api_key is None


class Stopped(Exception):
    """The daemon is stopping: give up what was about to start."""


class Rejected(Exception):
    """The server answered the connect request with an error retrying cannot fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _handle_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[int], None] | None) -> None:
    """Route SIGTERM and SIGINT to ``handler`` inside ``loop`` (None: restore defaults)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            if handler is None:
                loop.remove_signal_handler(sig)
            else:
                loop.add_signal_handler(sig, handler, sig)
        except NotImplementedError:  # Windows: no loop signal handlers
            if handler is None:
                signal.signal(sig, signal.SIG_DFL)
            else:
                signal.signal(
                    sig, lambda signum, _frame: loop.call_soon_threadsafe(handler, signum)
                )


def _platform() -> str:
    return f"{platform.system().lower()}-{platform.machine().lower()}"[:64]


def ws_url(server_url: str, daemon_id: str) -> str:
    base = "ws" + server_url.removeprefix("http")  # http → ws, https → wss
    return f"{base}/api/daemon/ws?daemon_id={daemon_id}"


class Daemon:
    """One daemon process. :meth:`run` returns the exit status."""

    def __init__(
        self,
        options: Options,
        token: str,
        *,
        api: ServerApi | None = None,
        executor: Executor | None = None,
        max_inflight: int = MAX_INFLIGHT,
        install_signal_handlers: bool = True,
    ) -> None:
        self.options = options
        self.daemon_id = "daemon_" + secrets.token_hex(8)
        self.api = api or ServerApi(options.server_url, options.api_key)
        self.credentials = local_api.RunCredentials()
        self.probes = Probes()
        self.executor: Executor = executor or (
            DryRunExecutor(self.api, self._retrying)
            if options.dry_run
            else RunExecutor(
                self.api,
                self._retrying,
                home=options.home,
                local_url=f"http://{local_api.HOST}:{options.local_port}",
                credentials=self.credentials,
                probes=self.probes,
                kill_grace=options.kill_grace,
            )
        )
        self._token = token
        self._install_signal_handlers = install_signal_handlers
        self.computer_id: str | None = None
        self.heartbeat_grace: float | None = None
        self.agents: dict[str, dict[str, Any]] = {}
        self.socket_connected = False
        self.fatal: str | None = None
        self.claimed = 0
        self.failures = 0
        self.unreachable = RetryLog(log, "server unreachable")
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_inflight)
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._drain_wanted = asyncio.Event()
        self._backlog = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- state ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The daemon's state, as the local API's ``/health`` shows it."""
        return {
            "computer_id": self.computer_id,
            "daemon_id": self.daemon_id,
            "socket": "connected" if self.socket_connected else "disconnected",
            "agents": sorted(self.agents),
            "server_url": self.options.server_url,
            "dry_run": self.options.dry_run,
        }

    def stop(self) -> None:
        """Ask the daemon to stop (idempotent): no new claims, then a graceful shutdown."""
        self._stopping.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            log.warning("%s again: stopping now", name, extra={"action": "daemon_forced"})
            self._forced.set()
            return
        log.info(
            "%s: stopping (no new claims; unstarted claims go back to pending)",
            name,
            extra={"action": "daemon_stopping"},
        )
        self.stop()

    def _refused(self, exc: Refused) -> None:
        if self.fatal is None:
            what = (
                "this computer's API key (revoked or rotated?)"
                if self.options.api_key
                else "the legacy computer id and secret"
            )
            self.fatal = f"the server refused {what}: {exc.message}"
        self.stop()

    # -- run --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until stopped (or, with ``--once``, until nothing is pending). Returns 0,
        or 1 after a fatal refusal (see :attr:`fatal`) or, with ``--once``, a failure.
        Raises :class:`local_api.PortInUse` when the local port is taken."""
        sock = local_api.bind(self.options.local_port)
        app = local_api.create_local_app(self.api, self._token, self.describe, self.credentials)
        server = local_api.local_server(app)
        loop = asyncio.get_running_loop()
        if self._install_signal_handlers:
            _handle_signals(loop, self._on_signal)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="local-api")
        log.info(
            "daemon %s starting: server %s, local API http://%s:%d%s",
            self.daemon_id,
            self.options.server_url,
            local_api.HOST,
            self.options.local_port,
            ", dry run" if self.options.dry_run else "",
            extra={"action": "daemon_starting", "daemon_id": self.daemon_id},
        )
        code = 0
        try:
            code = await self._main()
        finally:
            await self._shutdown()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            sock.close()
            await self.api.aclose()
            if self._install_signal_handlers:
                _handle_signals(loop, None)
        if self.fatal is not None:
            return 1
        return code

    async def _main(self) -> int:
        try:
            await self._unless_stopped(self.executor.prepare())
            await self._unless_stopped(self.probes.probe_all(RUNTIMES))
            await self._unless_stopped(self._connect())
            self._spawn(self._heartbeat_loop, "heartbeat")
            if self.options.once:
                return await self._unless_stopped(self._run_once())
        except Refused as exc:
            self._refused(exc)
            return 1
        except Rejected as exc:
            if self.fatal is None:
                self.fatal = exc.message
            return 1
        except Stopped:
            return 0
        self._spawn(self._drain_loop, "drain")
        self._spawn(self._socket_loop, "socket")
        self._drain_wanted.set()
        await self._stopping.wait()
        return 0

    def _spawn(self, loop: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        async def guarded() -> None:
            try:
                await loop()
            except Refused as exc:
                self._refused(exc)
            except Exception as exc:  # a bug: better stop than run without this task
                log.exception("the %s task failed", name, extra={"action": "task_failed"})
                if self.fatal is None:
                    self.fatal = f"internal error in the daemon's {name} task: {exc!r}"
                self.stop()

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def _shutdown(self) -> None:
        self.stop()
        side = [t for t in self._tasks if t.get_name() != "heartbeat"]
        for task in side:
            task.cancel()
        await self.executor.stop_all()
        if self.fatal is None and self._inflight:
            log.info(
                "waiting for %d delivery task(s) in progress",
                len(self._inflight),
                extra={"action": "daemon_draining"},
            )
            await self._wait_inflight(SHUTDOWN_GRACE)
        for task in list(self._inflight.values()):
            task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inflight.values(), return_exceptions=True)
        await self.executor.aclose()
        if self.fatal is None:
            log.info("daemon %s stopped", self.daemon_id, extra={"action": "daemon_stopped"})

    async def _wait_inflight(self, timeout: float | None = None) -> None:
        """Until no delivery task is left (or ``timeout``, or a second signal)."""
        forced = asyncio.ensure_future(self._forced.wait())
        try:
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while self._inflight and not self._forced.is_set():
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    log.warning(
                        "gave up waiting for %d delivery task(s)",
                        len(self._inflight),
                        extra={"action": "daemon_shutdown_timeout"},
                    )
                    return
                await asyncio.wait(
                    {*self._inflight.values(), forced},
                    timeout=left,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            forced.cancel()

    async def _unless_stopped(self, work: Coroutine[Any, Any, T]) -> T:
        """The result of ``work``; :class:`Stopped` (and ``work`` cancelled) as soon as the
        daemon stops, even while ``work`` waits for a server that does not answer."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Stopped):
                    await task
        if task.cancelled():
            raise Stopped
        return task.result()

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep, ending early when ``wake`` is set; :class:`Stopped` if the daemon stops."""
        events = [self._stopping] if wake is None else [self._stopping, wake]
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._stopping.is_set():
            raise Stopped

    # -- connect, heartbeat, reconcile ------------------------------------------------------

    async def _connect(self) -> None:
        """Connect (or register, for a legacy daemon), retrying while unreachable."""
        body: dict[str, Any] = {
            "daemon_id": self.daemon_id,
            "platform": _platform(),
            "version": pal.__version__,
            "runtimes": self.probes.reports(),
        }
        opts = self.options
        backoff = Backoff()
        while True:
            try:
                if opts.legacy:
                    legacy = {
                        **body,
                        "computer_id": opts.computer_id,
                        "computer_secret": opts.computer_secret,
                        "name": platform.node()[:120] or opts.computer_id,
                    }
                    if opts.agent:
                        legacy["agent"] = opts.agent
                    answer = await self.api.register_legacy(legacy)
                    self.api.credential = f"{opts.computer_id}:{opts.computer_secret}"
                else:
                    answer = await self.api.connect(body)
                break
            except Unreachable as exc:
                self.unreachable.failed(exc.message)
                await self._sleep(backoff.next_delay())
            except ApiError as exc:
                if exc.status >= 500:  # the server is there but not well: try again
                    self.unreachable.failed(f"the server answered {exc.status}: {exc.message}")
                    await self._sleep(backoff.next_delay())
                    continue
                hint = " (is --server the pal server's URL?)" if exc.status in (404, 405) else ""
                raise Rejected(
                    f"the server at {opts.server_url} answered the connect request with "
                    f"HTTP {exc.status}: {exc.message}{hint}"
                ) from None
        self.unreachable.recovered()
        self.computer_id = str(answer["computer"]["id"])
        self.heartbeat_grace = float(answer.get("heartbeat_grace") or 0) or None
        log.info(
            "connected as computer %s (daemon %s)",
            self.computer_id,
            self.daemon_id,
            extra={"action": "daemon_connected", "computer_id": self.computer_id},
        )
        if self.heartbeat_grace and opts.interval >= self.heartbeat_grace:
            log.warning(
                "--interval %.0f ms is too long for the server's heartbeat grace of %.0f s: "
                "claims may expire between heartbeats",
                opts.interval * 1000,
                self.heartbeat_grace,
                extra={"action": "interval_too_long"},
            )
        self._reconcile(answer["agents"])

    def _reconcile(self, agents: list[dict[str, Any]]) -> None:
        """Serve exactly ``agents`` (the computer's assignments) from now on."""
        new = {str(a["key"]): a for a in agents}
        added = sorted(new.keys() - self.agents.keys())
        removed = sorted(self.agents.keys() - new.keys())
        self.agents = new
        if added:
            log.info(
                "now serving agent(s): %s",
                ", ".join(added),
                extra={"action": "agents_added", "agents": added},
            )
        if removed:
            log.info(
                "no longer serving agent(s): %s",
                ", ".join(removed),
                extra={"action": "agents_removed", "agents": removed},
            )

    async def _beat(self) -> None:
        assert self.computer_id is not None
        answer = await self.api.heartbeat(self.computer_id, self.daemon_id, sorted(self.agents))
        self.unreachable.recovered()
        self._reconcile(answer["agents"])
        if answer.get("control_requests"):
            await self.executor.handle_actions(answer["control_requests"])

    async def _heartbeat_loop(self) -> None:
        """Beat every interval (jittered), sooner when woken; retry sooner while failing."""
        interval = self.options.interval
        backoff = Backoff(cap=interval)
        while True:
            try:
                await self._beat()
                backoff.reset()
                delay = jittered(interval)
                if not self._stopping.is_set() and not self.options.once:
                    self._drain_wanted.set()
            except Unreachable as exc:
                self.unreachable.failed(exc.message)
                delay = backoff.next_delay()
            except (ApiError, KeyError, TypeError) as exc:
                log.error("heartbeat failed: %s", exc, extra={"action": "heartbeat_failed"})
                delay = jittered(interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), delay)
            self._beat_now.clear()

    # -- drain and process ------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        while True:
            await self._drain_wanted.wait()
            self._drain_wanted.clear()
            if self._stopping.is_set():
                return
            try:
                await self._drain_pass()
            except Unreachable as exc:
                log.debug("drain: %s", exc.message)  # the heartbeat reports and retries
            except ApiError as exc:
                log.error("listing pending deliveries failed: %s", exc.message)

    async def _drain_pass(self) -> int:
        """Start processing every pending delivery of every assigned agent not already in
        hand; returns how many were started."""
        started = 0
        for key in list(self.agents):
            after = 0
            while key in self.agents and not self._stopping.is_set():
                if len(self._inflight) >= MAX_QUEUED:
                    self._backlog = True
                    return started
                page = await self.api.pending(key, after=after, limit=PAGE)
                started += sum(self._schedule(int(d["id"]), key) for d in page)
                if len(page) < PAGE:
                    break
                after = int(page[-1]["id"])
        return started

    async def _run_once(self) -> int:
        """Drain until a pass claims nothing, wait for the work, then 0 or 1."""
        backoff = Backoff()
        while not self._stopping.is_set():
            claimed = self.claimed
            try:
                await self._drain_pass()
            except Unreachable as exc:
                self.unreachable.failed(exc.message)
                try:
                    await self._sleep(backoff.next_delay())
                except Stopped:
                    break
                continue
            except ApiError as exc:
                log.error("listing pending deliveries failed: %s", exc.message)
                self.failures += 1
                break
            backoff.reset()
            await self._wait_inflight()
            if self.claimed == claimed and not self._backlog:
                break
            self._backlog = False
        await self._wait_inflight()
        log.info(
            "done: %d claimed, %d failed",
            self.claimed,
            self.failures,
            extra={"action": "daemon_once_done"},
        )
        return 1 if self.failures else 0

    def _schedule(self, delivery_id: int, agent_key: str) -> bool:
        """Process ``delivery_id`` unless it already is (or the daemon is stopping)."""
        if self._stopping.is_set() or delivery_id in self._inflight:
            return False
        task = asyncio.create_task(self._process(delivery_id, agent_key), name="delivery")
        self._inflight[delivery_id] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._inflight.get(delivery_id) is task:
                del self._inflight[delivery_id]
            if self._backlog and len(self._inflight) < MAX_QUEUED // 2 and not self.options.once:
                self._backlog = False
                self._drain_wanted.set()

        task.add_done_callback(done)
        return True

    async def _retrying(self, call: Callable[[], Awaitable[T]], *, until_stop: bool = False) -> T:
        """``call()``, repeated with backoff while the server is unreachable (the calls are
        idempotent). With ``until_stop``, gives up with :class:`Stopped` once stopping."""
        backoff = Backoff()
        while True:
            try:
                return await call()
            except Unreachable as exc:
                log.debug("retrying: %s", exc.message)
                delay = backoff.next_delay()
            if until_stop:
                await self._sleep(delay)
            else:
                await asyncio.sleep(delay)

    async def _process(self, delivery_id: int, agent_key: str) -> None:
        try:
            async with self._slots:
                await self._claim_and_run(delivery_id, agent_key)
        except Refused as exc:
            self._refused(exc)
        except Stopped:
            pass
        except Exception:
            self.failures += 1
            log.exception(
                "delivery %d: unexpected error",
                delivery_id,
                extra={"action": "delivery_error", "delivery_id": delivery_id},
            )

    async def _claim_and_run(self, delivery_id: int, agent_key: str) -> None:
        agent = self.agents.get(agent_key)
        if self._stopping.is_set() or agent is None:
            return
        try:
            delivery = await self._retrying(
                lambda: self.api.claim(delivery_id, self.daemon_id), until_stop=True
            )
        except ApiError as exc:
            if exc.status in (404, 409):  # someone else has it, or it is no longer for us
                log.debug("delivery %d not claimed: %s", delivery_id, exc.message)
                return
            raise
        self.claimed += 1
        attempt = int(delivery["attempt"])
        extra = {"delivery_id": delivery_id, "agent": agent_key, "attempt": attempt}
        log.debug(
            "delivery %d for %s claimed (attempt %d)",
            delivery_id,
            agent_key,
            attempt,
            extra={"action": "delivery_claimed", **extra},
        )
        try:
            await self._run_claimed(delivery, agent, extra)
        except (Stopped, Refused):
            raise
        except Exception as exc:
            # A bug or a malformed answer: never leave the claim held (heartbeats would
            # renew it for as long as this daemon lives). If a run had already started, the
            # server refuses this (409) and the run's own lease covers it.
            await self._fail(delivery_id, attempt, f"the daemon hit an unexpected error: {exc!r}")
            raise

    async def _run_claimed(
        self, delivery: dict[str, Any], agent: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """Open the session and hand the claimed ``delivery`` to the executor."""
        delivery_id, attempt, agent_key = extra["delivery_id"], extra["attempt"], extra["agent"]
        try:
            if self._stopping.is_set():
                raise Stopped
            session = await self._retrying(
                lambda: self.api.ensure_session(self._session_body(delivery, agent)),
                until_stop=True,
            )
            if self._stopping.is_set():
                raise Stopped
        except Stopped:
            await self._release(delivery_id, attempt, "the daemon stopped before starting a run")
            return
        except ApiError as exc:
            await self._fail(delivery_id, attempt, f"cannot open a session: {exc.message}")
            return
        job = Job(delivery, agent, session, self.daemon_id, self.options.cwd)
        try:
            outcome = await self.executor.execute(job)
        except CannotStart as exc:
            if exc.retry:
                await self._release(delivery_id, attempt, exc.message)
            else:
                await self._fail(delivery_id, attempt, exc.message)
            return
        except ApiError as exc:
            if exc.status == 409:  # the claim expired and went to someone else
                log.warning(
                    "delivery %d: lost the claim before the run started: %s",
                    delivery_id,
                    exc.message,
                    extra={"action": "claim_lost", **extra},
                )
                return
            await self._fail(delivery_id, attempt, f"cannot start the run: {exc.message}")
            return
        if not outcome.ok:
            self.failures += 1
        log.info(
            "delivery %d for %s: %srun %d %s",
            delivery_id,
            agent_key,
            "dry " if self.options.dry_run else "",
            outcome.run_id,
            outcome.status,
            extra={"action": "run_finished", "run_id": outcome.run_id, **extra},
        )

    def _session_body(self, delivery: dict[str, Any], agent: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "agent": delivery["agent_key"],
            "room": delivery["room_id"],
            "topic_id": delivery.get("topic_id") or None,
            "runtime": agent.get("runtime") or "codex",
        }
        if self.options.cwd:
            body["cwd"] = self.options.cwd
        return body

    async def _fail(self, delivery_id: int, attempt: int, error: str) -> None:
        """Fail the claim for good (counted as a failure)."""
        self.failures += 1
        log.warning(
            "delivery %d failed: %s",
            delivery_id,
            error,
            extra={"action": "delivery_failed", "delivery_id": delivery_id},
        )
        try:
            await self._retrying(
                lambda: self.api.fail(delivery_id, self.daemon_id, attempt, error, retry=False),
                until_stop=True,
            )
        except ApiError as exc:
            log.debug("delivery %d: fail refused: %s", delivery_id, exc.message)

    async def _release(self, delivery_id: int, attempt: int, reason: str) -> None:
        """Return an unstarted claim to pending (one try: an expired lease does the same)."""
        try:
            await self.api.fail(delivery_id, self.daemon_id, attempt, reason, retry=True)
        except (Unreachable, ApiError) as exc:
            log.debug("delivery %d: release failed: %s", delivery_id, exc.message)
            return
        log.info(
            "delivery %d returned to pending: %s",
            delivery_id,
            reason,
            extra={"action": "delivery_released", "delivery_id": delivery_id},
        )

    # -- socket -----------------------------------------------------------------------------

    async def _socket_loop(self) -> None:
        """Keep the hint socket open; reconnect with full-jitter backoff."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

        url = ws_url(self.options.server_url, self.daemon_id)
        backoff = Backoff()
        trouble = RetryLog(log, "daemon socket unavailable, reconnecting")
        while not self._stopping.is_set():
            reason: str | None = None
            try:
                async with connect(
                    url,
                    additional_headers=self.api.auth_headers(),
                    user_agent_header=f"pal-daemon/{pal.__version__}",
                    open_timeout=10,
                    close_timeout=2,
                ) as ws:
                    self.socket_connected = True
                    backoff.reset()
                    trouble.recovered()
                    log.info("socket connected", extra={"action": "socket_connected"})
                    self._beat_now.set()  # heartbeat and drain on every (re)connect
                    async for raw in ws:
                        self._on_hint(raw)
                reason = "the server closed the socket"
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401:
                    body = exc.response.body or b""
                    raise Refused(_error_text(body) or "socket handshake refused (401)") from None
                reason = f"socket handshake answered HTTP {status}"
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 4401:
                    raise Refused(exc.rcvd.reason or "the socket was closed (4401)") from None
                reason = f"socket closed: {exc}"
            except (OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self.unreachable.failures:  # the heartbeat already says so
                    reason = None
            except WebSocketException as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                if self.socket_connected:
                    log.info("socket disconnected", extra={"action": "socket_disconnected"})
                self.socket_connected = False
            if reason is not None:
                trouble.failed(reason)
            try:
                await self._sleep(backoff.next_delay())
            except Stopped:
                return

    def _on_hint(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            frame = None
        kind = frame.get("type") if isinstance(frame, dict) else None
        if not isinstance(kind, str):
            log.debug("ignored a socket frame that is not a hint")
            return
        if kind == "deliveries":
            agent, ids = frame.get("agent"), frame.get("ids")
            if not isinstance(agent, str) or not isinstance(ids, list):
                log.debug("ignored a malformed deliveries hint")
                return
            if agent not in self.agents:  # assigned just now: learn it first
                self._beat_now.set()
                return
            for delivery_id in ids:
                if isinstance(delivery_id, int) and not isinstance(delivery_id, bool):
                    self._schedule(delivery_id, agent)
        elif kind in ("assignments", "run_action", "resync"):
            self._beat_now.set()


def _error_text(body: bytes | bytearray) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:200] or None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])
    return None
