"""A fake Lark Open Platform on loopback that speaks the real protocol (lark.md §7).

Both the real ``lark-oapi`` SDK and pal's client talk to it with the domain
``http://127.0.0.1:PORT``. One asyncio server holds everything on one origin:

* ``POST /callback/ws/endpoint`` (discovery: a one-time ``ws://.../ws?device_id&service_id&
  ticket`` URL and a ClientConfig with all four fields), and ``GET /ws`` (the upgrade, or a
  refusal with ``handshake-status``/``handshake-msg``/``handshake-autherrcode``);
* binary ``pbbp2.Frame``s both ways: pongs (with the ClientConfig), pushed events (split into
  fragments on request), acks recorded with the time the event was sent and the time its ack
  arrived;
* the REST calls: tenant token, bot info, send, reply, reactions (add and delete), with the
  platform's codes (10014, 99991663, 230001, 230002) and response shapes;
* app registration by QR scan (lark.md §4: ``POST /oauth/v1/app/registration``, form-encoded
  ``init``/``begin``/``poll``), pending until a test approves (the app then exists), denies
  or expires it;
* test controls: apps, injected human messages (one envelope per app, with that app's own
  open_ids), silent connections (half-open: TCP stays up, nothing is read or answered, not
  even WebSocket pings), dropped connections, scripted discovery and handshake failures,
  token expiry, re-push of unacked events.

HTTP and WebSocket are served by hand (a small HTTP/1.1 reader and websockets' sans-I/O
protocol) so the fake controls what the libraries would otherwise do for it (auto-pong).

Three ways to run it: ``async with FakeLarkPlatform() as fake`` on the test's own loop;
``with ThreadedFake() as fake`` on a loop in a thread (for blocking callers such as the
SDK); ``python -m tests.fakes.lark_platform --port N --state-dir D`` with the same controls
as a small HTTP API under ``/_fake/`` (see :meth:`FakeLarkPlatform._control`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from pal.lark import frames

T = TypeVar("T")

TENANT_KEY = "tenant_fake"
RECEIVE_ID_TYPES = ("chat_id", "open_id", "union_id", "user_id", "email")
INVALID_TOKEN = {"code": 99991663, "msg": "Invalid access token for authorization."}
BAD_SECRET_CODE = 10014
EXCEED_CONN_LIMIT = 1000040350
REGISTRATION_PATH = "/oauth/v1/app/registration"
PRIVATE_FIELDS = ("app_id", "uuid", "receive_id", "receive_id_type", "reply_to", "reply_in_thread")


def _ms() -> str:
    return str(int(time.time() * 1000))


def _hash(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:16]


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Await until ``predicate()`` is truthy (polled every 10 ms); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


@dataclass
class FakeApp:
    """A self-built app with the bot capability."""

    app_id: str
    app_secret: str
    name: str
    open_id: str


@dataclass
class FakeUser:
    """A human; their open_id differs in every app (ids are app-scoped), union_id does not."""

    name: str
    union_id: str
    user_id: str

    def open_id(self, app_id: str) -> str:
        return "ou_" + _hash(app_id, self.union_id)

    def ids(self, app_id: str) -> dict[str, str]:
        return {"open_id": self.open_id(app_id), "union_id": self.union_id, "user_id": self.user_id}


@dataclass
class Pushed:
    """An event the fake sent: its transport message_id and the time its last fragment left."""

    app_id: str
    message_id: str
    event: dict[str, Any]
    parts: int
    type: str
    connection: int
    sent_at: float = 0.0  # time.perf_counter()
    acked_at: float | None = None


@dataclass
class Ack:
    """An ack the fake received."""

    app_id: str
    connection: int
    message_id: str
    seq_id: int
    headers: dict[str, str]
    payload: dict[str, Any]
    received_at: float  # time.perf_counter()


@dataclass
class FakeConnection:
    id: int
    app_id: str
    device_id: str
    service_id: int
    protocol: ServerProtocol
    writer: asyncio.StreamWriter
    silent: bool = False
    pings: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def live(self) -> bool:
        return not self.closed.is_set()

    async def send(self, data: bytes) -> None:
        if not self.live or self.silent:
            return
        async with self.lock:
            self.protocol.send_binary(data)
            await self.flush()

    async def flush(self) -> None:
        out = self.protocol.data_to_send()
        if out and not self.writer.is_closing():
            self.writer.write(b"".join(out))
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()
            if out[-1] == b"":  # the protocol's end of stream: the server closes TCP
                self.writer.close()
                self.closed.set()


@dataclass
class FakeRegistration:
    """One device-flow app registration (lark.md §4): ``status`` is ``pending`` until a test
    approves, denies or expires it; ``done`` once its credentials were handed out."""

    device_code: str
    user_code: str
    form: dict[str, str]  # what ``begin`` was sent
    expires_at: float  # time.monotonic()
    status: str = "pending"
    app_id: str | None = None
    user: str = "Alice"
    tenant_brand: str = "feishu"
    slow_down: int = 0  # the next polls answered slow_down
    polls: int = 0


class HttpError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body


class FakeLarkPlatform:
    """The fake platform; see the module docstring."""

    def __init__(
        self,
        *,
        ping_interval: float = 1,
        reconnect_interval: float = 1,
        reconnect_nonce: float = 0,
        reconnect_count: int = -1,
        max_connections: int = 50,
        token_ttl: int = 7200,
        repush_after: float | None = None,
        registration_interval: float = 5,
        registration_expires: float = 600,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.client_config: dict[str, Any] = {
            "ReconnectCount": reconnect_count,
            "ReconnectInterval": reconnect_interval,
            "ReconnectNonce": reconnect_nonce,
            "PingInterval": ping_interval,
        }
        self.max_connections = max_connections
        self.token_ttl = token_ttl
        self.repush_after = repush_after
        self.host, self.port = host, port
        self.apps: dict[str, FakeApp] = {}
        self.users: dict[str, FakeUser] = {}
        self.chats: dict[str, dict[str, Any]] = {}  # chat_id -> {chat_type, members: set}
        self.messages: list[dict[str, Any]] = []  # sent by apps (send and reply)
        self.reactions: dict[str, dict[str, dict[str, Any]]] = {}  # message_id -> id -> data
        self.reaction_log: list[tuple[str, str, str, str]] = []  # (add|delete, msg, emoji, app)
        self.pushed: dict[str, Pushed] = {}  # transport message_id -> Pushed
        self.acks: list[Ack] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        self.discoveries: list[str] = []  # app_id of every successful discovery
        self.discovery_failures: list[tuple[str, int]] = []  # ("code", 1) or ("http", 503)
        self.handshake_failures: list[tuple[int, int | None]] = []  # (status, autherrcode)
        self.connections: list[FakeConnection] = []
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (app_id, expires monotonic)
        self._tickets: dict[str, str] = {}  # one-time ticket -> app_id
        self._pending: dict[str, list[Pushed]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # app registration by QR scan (lark.md §4): see "registering apps" below
        self.registration_interval = registration_interval
        self.registration_expires = registration_expires
        self.registration_methods = ["client_secret", "private_key_jwt"]
        self.registrations: list[FakeRegistration] = []
        self.registration_forms: list[dict[str, str]] = []  # every form posted, in order

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> FakeLarkPlatform:
        await frames.aload()
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=1 << 20, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            conn.writer.close()
            conn.closed.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeLarkPlatform:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- apps, users, chats ----------------------------------------------------------------

    def add_app(self, app_id: str, app_secret: str, name: str | None = None) -> FakeApp:
        app = FakeApp(app_id, app_secret, name or f"Bot {app_id}", "ou_bot_" + _hash(app_id))
        self.apps[app_id] = app
        return app

    def user(self, name: str) -> FakeUser:
        """The human called ``name`` (made on first use, with stable ids)."""
        if name not in self.users:
            self.users[name] = FakeUser(name, "on_" + _hash("u", name), "u_" + _hash("id", name))
        return self.users[name]

    def add_chat(self, chat_id: str, chat_type: str, members: list[str]) -> None:
        chat = self.chats.setdefault(chat_id, {"chat_type": chat_type, "members": set()})
        chat["members"].update(members)

    def live_connections(self, app_id: str | None = None) -> list[FakeConnection]:
        return [c for c in self.connections if c.live and app_id in (None, c.app_id)]

    def acks_for(self, message_id: str) -> list[Ack]:
        return [a for a in self.acks if a.message_id == message_id]

    def latencies(self) -> list[float]:
        """Seconds from an event's last fragment sent to its first ack, for every acked one."""
        return [p.acked_at - p.sent_at for p in self.pushed.values() if p.acked_at is not None]

    def expire_tokens(self) -> None:
        """Every tenant token issued so far becomes invalid (99991663 on its next use)."""
        self._tokens.clear()

    def go_silent(self, app_id: str | None = None) -> list[FakeConnection]:
        """Half-open: the app's live connections stop answering and sending, TCP stays up."""
        conns = self.live_connections(app_id)
        for conn in conns:
            conn.silent = True
        return conns

    async def drop(self, app_id: str | None = None) -> int:
        """Close the app's live connections from the platform's side (a close frame, then
        TCP); returns how many."""
        conns = self.live_connections(app_id)
        for conn in conns:
            async with conn.lock:
                with contextlib.suppress(Exception):
                    conn.protocol.send_close(1001, "going away")
                    await conn.flush()
                conn.writer.close()
            conn.closed.set()
        return len(conns)

    # -- pushing events --------------------------------------------------------------------

    async def push(
        self,
        app_id: str,
        event: dict[str, Any],
        *,
        parts: int = 1,
        type: str = "event",
        connection: FakeConnection | None = None,
    ) -> Pushed:
        """Send ``event`` to one live (not silent) connection of the app, chosen at random
        (cluster mode), split into ``parts`` frames; queued until one connects."""
        pushed = Pushed(app_id, "msg_" + _hash("t", str(next(self._ids))), event, parts, type, 0)
        self.pushed[pushed.message_id] = pushed
        await self._deliver(pushed, connection)
        return pushed

    async def _deliver(self, pushed: Pushed, connection: FakeConnection | None = None) -> None:
        targets = [c for c in self.live_connections(pushed.app_id) if not c.silent]
        conn = connection or (random.choice(targets) if targets else None)
        if conn is None:
            self._pending.setdefault(pushed.app_id, []).append(pushed)
            return
        payload = json.dumps(pushed.event, ensure_ascii=False).encode()
        first = next(self._seq)
        for _ in range(pushed.parts - 1):
            next(self._seq)
        fragments = frames.data_frames(
            payload,
            message_id=pushed.message_id,
            trace_id="trace_" + pushed.message_id,
            parts=pushed.parts,
            type=pushed.type,
            seq_id=first,
            log_id=random.randrange(1, 1 << 62),
            service=conn.service_id,
            extra_headers=[("timestamp", _ms())],
        )
        pushed.connection = conn.id
        for fragment in fragments:
            await conn.send(frames.encode(fragment))
        pushed.sent_at = time.perf_counter()
        if self.repush_after is not None and pushed.type == "event":
            self._spawn(self._repush_unacked(pushed, self.repush_after))

    async def _repush_unacked(self, pushed: Pushed, after: float) -> None:
        await asyncio.sleep(after)
        if pushed.acked_at is None:
            await self.push(pushed.app_id, pushed.event, parts=pushed.parts, type=pushed.type)

    async def inject_message(
        self,
        text: str,
        *,
        sender: str = "Alice",
        chat_id: str | None = None,
        chat_type: str = "p2p",
        apps: list[str] | None = None,
        mentions: list[str] | None = None,
        parts: int = 1,
    ) -> dict[str, Any]:
        """A human writes ``text`` (lark.md §7 item 11): one ``im.message.receive_v1`` per
        receiving app (default: every app in the chat, else every app), each with that app's
        own open_ids and event_id, the shared ``message_id``. ``mentions`` are app ids whose
        bots are @-mentioned (``@_user_N`` placeholders are put before the text). Returns
        ``{"message_id", "chat_id", "events": {app_id: envelope}, "pushed": {app_id: id}}``."""
        human = self.user(sender)
        receivers = apps or sorted(self.chats.get(chat_id or "", {}).get("members") or self.apps)
        chat_id = chat_id or "oc_" + _hash("p2p", sender, *receivers)
        self.add_chat(chat_id, chat_type, receivers)
        message_id = "om_" + _hash("m", str(next(self._ids)))
        now = _ms()
        keys = [f"@_user_{i + 1}" for i in range(len(mentions or []))]
        content = " ".join([*keys, text]) if keys else text
        result: dict[str, Any] = {"message_id": message_id, "chat_id": chat_id}
        result["events"], result["pushed"] = {}, {}
        for app_id in receivers:
            mention_list = []
            for key, target in zip(keys, mentions or [], strict=True):
                bot = self.apps[target]
                mention_list.append(
                    {
                        "key": key,
                        "id": {"open_id": bot.open_id, "union_id": "", "user_id": ""},
                        "name": bot.name,
                        "tenant_key": TENANT_KEY,
                        "mentioned_type": "bot",
                    }
                )
            envelope = {
                "schema": "2.0",
                "header": {
                    "event_id": "ev_" + _hash(app_id, message_id),
                    "event_type": "im.message.receive_v1",
                    "create_time": now,
                    "token": "",
                    "app_id": app_id,
                    "tenant_key": TENANT_KEY,
                },
                "event": {
                    "sender": {
                        "sender_id": human.ids(app_id),
                        "sender_type": "user",
                        "tenant_key": TENANT_KEY,
                    },
                    "message": {
                        "message_id": message_id,
                        "root_id": "",
                        "parent_id": "",
                        "create_time": now,
                        "update_time": now,
                        "chat_id": chat_id,
                        "chat_type": chat_type,
                        "message_type": "text",
                        "content": json.dumps({"text": content}, ensure_ascii=False),
                        "mentions": mention_list,
                    },
                },
            }
            pushed = await self.push(app_id, envelope, parts=parts)
            result["events"][app_id] = envelope
            result["pushed"][app_id] = pushed.message_id
        return result

    # -- the server ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()  # stop() ends connections a client keeps open, too
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _ = lines[0].split(" ", 2)
                except ValueError:
                    return  # not HTTP
                headers = Headers()
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip()] = value.strip()
                url = urlsplit(target)
                self.requests.append((method, url.path))
                if headers.get("upgrade", "").lower() == "websocket":
                    await self._websocket(reader, writer, head, url.path, parse_qs(url.query))
                    return
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    status, answer = await self._route(method, url.path, query, headers, body)
                except HttpError as exc:
                    status, answer = exc.status, exc.body
                except Exception as exc:  # a bad control call from a test: say what
                    status, answer = 500, {"code": 500, "msg": f"{type(exc).__name__}: {exc}"}
                data = json.dumps(answer, ensure_ascii=False).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\n"
                    f"Content-Length: {len(data)}\r\nX-Tt-Logid: log_{next(self._ids)}\r\n"
                    "\r\n".encode()
                    + data
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _route(
        self, method: str, path: str, query: dict[str, str], headers: Headers, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        def parsed() -> Any:
            try:
                return json.loads(body or b"{}")
            except ValueError:
                raise HttpError(400, {"code": 230001, "msg": "body is not JSON"}) from None

        if path.startswith("/_fake/"):
            return 200, await self._control(method, path[len("/_fake/") :], parsed())
        if (method, path) == ("POST", "/callback/ws/endpoint"):
            return self._discover(parsed())
        if (method, path) == ("POST", "/open-apis/auth/v3/tenant_access_token/internal"):
            return self._token(parsed())
        if (method, path) == ("POST", REGISTRATION_PATH):
            return self._register(body)
        if path.startswith("/open-apis/"):
            app = self._authorize(headers)
            return 200, self._open_api(app, method, path, query, parsed())
        raise HttpError(404, {"code": 404, "msg": f"no such path {path}"})

    def _discover(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.discovery_failures:
            kind, value = self.discovery_failures.pop(0)
            if kind == "http":
                return value, {"code": value, "msg": "system busy"}
            return 200, {"code": value, "msg": "system busy", "data": None}
        app = self.apps.get(str(body.get("AppID")))
        if app is None or body.get("AppSecret") != app.app_secret:
            return 200, {"code": BAD_SECRET_CODE, "msg": "app secret invalid", "data": None}
        ticket = _hash("ticket", str(next(self._ids)), str(random.random()))
        self._tickets[ticket] = app.app_id
        device = "dev_" + _hash(app.app_id, ticket)
        url = f"ws://{self.host}:{self.port}/ws?device_id={device}&service_id=33554678"
        url += f"&access_key={_hash('k', ticket)}&ticket={ticket}"
        self.discoveries.append(app.app_id)
        return 200, {
            "code": 0,
            "msg": "ok",
            "data": {"URL": url, "ClientConfig": self.client_config},
        }

    def _token(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        app = self.apps.get(str(body.get("app_id")))
        if app is None:
            return 400, {"code": 10003, "msg": "invalid param app_id"}
        if body.get("app_secret") != app.app_secret:
            return 400, {"code": BAD_SECRET_CODE, "msg": "app secret invalid"}
        token = "t-" + _hash("token", app.app_id, str(next(self._ids)))
        self._tokens[token] = (app.app_id, time.monotonic() + self.token_ttl)
        return 200, {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": self.token_ttl}

    def _authorize(self, headers: Headers) -> FakeApp:
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        app_id, expires = self._tokens.get(token, ("", 0.0))
        if not app_id or time.monotonic() >= expires:
            raise HttpError(400, INVALID_TOKEN)
        return self.apps[app_id]

    def _open_api(
        self, app: FakeApp, method: str, path: str, query: dict[str, str], body: Any
    ) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if (method, path) == ("GET", "/open-apis/bot/v3/info"):
            bot = {"activate_status": 2, "app_name": app.name, "avatar_url": ""}
            return {
                "code": 0,
                "msg": "ok",
                "bot": {**bot, "ip_white_list": [], "open_id": app.open_id},
            }
        if (method, path) == ("POST", "/open-apis/im/v1/messages"):
            return self._send(app, query.get("receive_id_type", ""), body)
        if parts[:4] == ["open-apis", "im", "v1", "messages"] and len(parts) >= 6:
            target = self._message(parts[4])
            if method == "POST" and parts[5] == "reply" and len(parts) == 6:
                return self._reply(app, target, body)
            if parts[5] == "reactions":
                if method == "POST" and len(parts) == 6:
                    return self._add_reaction(app, target, body)
                if method == "DELETE" and len(parts) == 7:
                    return self._delete_reaction(app, target, parts[6])
        raise HttpError(404, {"code": 404, "msg": f"no such API {method} {path}"})

    @staticmethod
    def _bad(msg: str) -> HttpError:
        return HttpError(400, {"code": 230001, "msg": f"invalid parameter: {msg}", "error": {}})

    def _message(self, message_id: str) -> dict[str, Any]:
        """A message the apps sent, or one a human wrote (from the pushed events)."""
        for m in self.messages:
            if m["message_id"] == message_id:
                return m
        for pushed in self.pushed.values():
            msg = pushed.event.get("event", {}).get("message", {})
            if msg.get("message_id") == message_id:
                return {"message_id": message_id, "chat_id": msg.get("chat_id"), "root_id": ""}
        raise HttpError(400, {"code": 230011, "msg": "The message was not found."})

    def _content(self, body: Any) -> tuple[str, str]:
        if not isinstance(body, dict):
            raise self._bad("the body must be an object")
        msg_type, content = body.get("msg_type"), body.get("content")
        if msg_type not in ("text", "post", "interactive", "image", "file"):
            raise self._bad(f"msg_type {msg_type!r}")
        if not isinstance(content, str):
            raise self._bad("content must be a JSON string")
        try:
            parsed = json.loads(content)
        except ValueError:
            raise self._bad("content is not JSON") from None
        if msg_type == "text" and not (isinstance(parsed, dict) and "text" in parsed):
            raise self._bad("a text content needs a text field")
        return msg_type, content

    def _store(
        self, app: FakeApp, chat_id: str, msg_type: str, content: str, **extra: Any
    ) -> dict[str, Any]:
        now = _ms()
        message = {
            "message_id": "om_" + _hash("sent", str(next(self._ids))),
            "root_id": extra.pop("root_id", ""),
            "parent_id": extra.pop("parent_id", ""),
            "thread_id": extra.pop("thread_id", ""),
            "msg_type": msg_type,
            "create_time": now,
            "update_time": now,
            "deleted": False,
            "updated": False,
            "chat_id": chat_id,
            "sender": {"id": app.app_id, "id_type": "app_id", "sender_type": "app"}
            | {"tenant_key": TENANT_KEY},
            "body": {"content": content},
        }
        self.messages.append({**message, "app_id": app.app_id, **extra})
        return {"code": 0, "msg": "success", "data": message}

    def _send(self, app: FakeApp, id_type: str, body: Any) -> dict[str, Any]:
        if id_type not in RECEIVE_ID_TYPES:
            raise self._bad(
                f"receive_id_type {id_type!r}: use one of {', '.join(RECEIVE_ID_TYPES)}"
            )
        msg_type, content = self._content(body)
        receive_id = body.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            raise self._bad("ext=invalid receive_id")
        uuid = body.get("uuid")
        if uuid:
            for m in self.messages:
                if m.get("uuid") == uuid and m["app_id"] == app.app_id:
                    return {"code": 0, "msg": "success", "data": _public(m)}
        if id_type == "chat_id":
            chat = self.chats.get(receive_id)
            if chat is None or app.app_id not in chat["members"]:
                raise HttpError(
                    400,
                    {
                        "code": 230002,
                        "msg": "Bot/User can NOT be out of the chat.",
                        "error": {"log_id": f"log_{next(self._ids)}"},
                    },
                )
            chat_id = receive_id
        else:
            chat_id = "oc_" + _hash("p2p-to", app.app_id, receive_id)
            self.add_chat(chat_id, "p2p", [app.app_id])
        return self._store(
            app,
            chat_id,
            msg_type,
            content,
            uuid=uuid,
            receive_id=receive_id,
            receive_id_type=id_type,
        )

    def _reply(self, app: FakeApp, target: dict[str, Any], body: Any) -> dict[str, Any]:
        msg_type, content = self._content(body)
        # A repeated uuid (within the hour, on Lark) answers the first reply, sends nothing.
        uuid = body.get("uuid")
        if uuid:
            for m in self.messages:
                if m.get("uuid") == uuid and m["app_id"] == app.app_id:
                    return {"code": 0, "msg": "success", "data": _public(m)}
        root = target.get("root_id") or target["message_id"]
        in_thread = bool(body.get("reply_in_thread"))
        return self._store(
            app,
            target["chat_id"],
            msg_type,
            content,
            root_id=root,
            parent_id=target["message_id"],
            thread_id=("omt_" + _hash("thread", root)) if in_thread else "",
            reply_to=target["message_id"],
            reply_in_thread=in_thread,
            uuid=uuid,
        )

    def _add_reaction(self, app: FakeApp, target: dict[str, Any], body: Any) -> dict[str, Any]:
        emoji = (
            (body.get("reaction_type") or {}).get("emoji_type") if isinstance(body, dict) else None
        )
        if not isinstance(emoji, str) or not emoji:
            raise self._bad("reaction_type.emoji_type is required")
        reaction = {
            "reaction_id": "re_" + _hash("reaction", str(next(self._ids))),
            "operator": {"operator_id": app.app_id, "operator_type": "app"},
            "action_time": _ms(),
            "reaction_type": {"emoji_type": emoji},
        }
        self.reactions.setdefault(target["message_id"], {})[reaction["reaction_id"]] = reaction
        self.reaction_log.append(("add", target["message_id"], emoji, app.app_id))
        return {"code": 0, "msg": "success", "data": reaction}

    def _delete_reaction(
        self, app: FakeApp, target: dict[str, Any], reaction_id: str
    ) -> dict[str, Any]:
        reaction = self.reactions.get(target["message_id"], {}).pop(reaction_id, None)
        if reaction is None:
            raise HttpError(400, {"code": 231003, "msg": "The reaction does not exist."})
        emoji = reaction["reaction_type"]["emoji_type"]
        self.reaction_log.append(("delete", target["message_id"], emoji, app.app_id))
        return {"code": 0, "msg": "success", "data": reaction}

    # -- WebSocket -------------------------------------------------------------------------

    async def _websocket(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
        path: str,
        query: dict[str, list[str]],
    ) -> None:
        protocol = ServerProtocol(max_size=None)
        protocol.receive_data(head)
        request = next(e for e in protocol.events_received() if isinstance(e, Request))
        ticket = (query.get("ticket") or [""])[0]
        app_id = self._tickets.pop(ticket, None) if path == "/ws" else None
        refusal: tuple[int, str, int | None] | None = None
        if self.handshake_failures:
            status, auth = self.handshake_failures.pop(0)
            refusal = (status, "refused by the test", auth)
        elif app_id is None:
            refusal = (403, "invalid or used ticket: call discovery again", None)
        elif len(self.live_connections(app_id)) >= self.max_connections:
            refusal = (514, "exceed connection limit", EXCEED_CONN_LIMIT)
        if refusal is not None:
            status, msg, auth = refusal
            response = protocol.reject(403, msg)
            response.headers["handshake-status"] = str(status)
            response.headers["handshake-msg"] = msg
            if auth is not None:
                response.headers["handshake-autherrcode"] = str(auth)
            protocol.send_response(response)
            writer.write(b"".join(protocol.data_to_send()))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return
        assert app_id is not None
        protocol.send_response(protocol.accept(request))
        conn = FakeConnection(
            next(self._ids),
            app_id,
            (query.get("device_id") or [""])[0],
            int((query.get("service_id") or ["0"])[0]),
            protocol,
            writer,
        )
        await conn.flush()
        self.connections.append(conn)
        for pushed in self._pending.pop(app_id, []):
            await self._deliver(pushed, conn)
        try:
            while protocol.state is not State.CLOSED:
                data = await reader.read(65536)
                if conn.silent:
                    if not data:
                        break
                    continue  # half-open: nothing read is processed, nothing answered
                if not data:
                    protocol.receive_eof()
                    break
                async with conn.lock:
                    protocol.receive_data(data)
                    events = protocol.events_received()
                    await conn.flush()  # pongs to WebSocket pings, close replies
                for event in events:
                    if event.opcode is Opcode.BINARY:
                        await self._on_frame(conn, event.data)
        except ConnectionError:
            pass
        finally:
            conn.closed.set()

    async def _on_frame(self, conn: FakeConnection, data: bytes) -> None:
        frame = frames.decode(data)
        if frame.method == frames.CONTROL and frame.type == "ping":
            conn.pings += 1
            await conn.send(frames.encode(frames.pong(self.client_config)))
        elif frame.method == frames.DATA:
            message_id = frame.header("message_id") or ""
            try:
                payload = json.loads(frame.payload)
            except ValueError:
                payload = {"invalid": frame.payload.decode(errors="replace")}
            now = time.perf_counter()
            self.acks.append(
                Ack(
                    conn.app_id,
                    conn.id,
                    message_id,
                    frame.seq_id,
                    dict(frame.headers),
                    payload,
                    now,
                )
            )
            pushed = self.pushed.get(message_id)
            if pushed is not None and pushed.acked_at is None:
                pushed.acked_at = now

    # -- the control API (for a subprocess fake) -------------------------------------------

    async def _control(self, method: str, name: str, body: Any) -> dict[str, Any]:
        """``POST /_fake/apps {app_id, app_secret, name?}``; ``POST /_fake/inject {text,
        sender?, chat_id?, chat_type?, apps?, mentions?, parts?}``; ``POST /_fake/push {app_id,
        event, parts?, type?}``; ``POST /_fake/silent {app_id?}``; ``POST /_fake/drop
        {app_id?}``; ``POST /_fake/fail {discovery?: [[kind, n]], handshake?: [[status,
        auth]]}``; ``POST /_fake/expire-tokens``; ``POST /_fake/load {rate, duration, apps?,
        parts?}`` (paced messages, for the bench); ``GET /_fake/latencies`` (event sent to ack
        received, s);
        ``POST /_fake/latencies/reset``; ``GET /_fake/state``."""
        body = body if isinstance(body, dict) else {}
        if name.startswith("registrations"):
            return self._registration_control(method, name, body)
        if (method, name) == ("POST", "apps"):
            return asdict(self.add_app(body["app_id"], body["app_secret"], body.get("name")))
        if (method, name) == ("POST", "inject"):
            return await self.inject_message(**body)
        if (method, name) == ("POST", "push"):
            pushed = await self.push(
                body["app_id"],
                body["event"],
                parts=body.get("parts", 1),
                type=body.get("type", "event"),
            )
            return {"message_id": pushed.message_id}
        if (method, name) == ("POST", "silent"):
            return {"connections": len(self.go_silent(body.get("app_id")))}
        if (method, name) == ("POST", "drop"):
            return {"connections": await self.drop(body.get("app_id"))}
        if (method, name) == ("POST", "fail"):
            self.discovery_failures += [tuple(x) for x in body.get("discovery", [])]  # type: ignore[misc]
            self.handshake_failures += [tuple(x) for x in body.get("handshake", [])]  # type: ignore[misc]
            return {}
        if (method, name) == ("POST", "expire-tokens"):
            self.expire_tokens()
            return {}
        if (method, name) == ("POST", "latencies/reset"):
            self.pushed.clear()
            self.acks.clear()
            return {}
        if (method, name) == ("POST", "load"):
            apps = body.get("apps") or sorted(self.apps)
            count = int(body["rate"] * body["duration"])
            self._spawn(self._load(apps, count, float(body["rate"]), int(body.get("parts", 1))))
            return {"events": count}
        if (method, name) == ("GET", "latencies"):
            return {
                "latencies": self.latencies(),
                "pushed": len(self.pushed),
                "acked": sum(p.acked_at is not None for p in self.pushed.values()),
                "biz_rt_ms": [int(a.headers.get("biz_rt", -1)) for a in self.acks],
            }
        if (method, name) == ("GET", "state"):
            return self.state()
        raise HttpError(404, {"code": 404, "msg": f"no control {method} /_fake/{name}"})

    async def _load(self, apps: list[str], count: int, rate: float, parts: int) -> None:
        """``count`` messages at ``rate`` per second, to the apps in turn (paced on an
        absolute schedule, so a slow send does not slow the rate)."""
        started = time.monotonic()
        for k in range(count):
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            app_id = apps[k % len(apps)]
            await self.inject_message(
                f"load {k}", apps=[app_id], sender=f"user {app_id}", parts=parts
            )

    def state(self) -> dict[str, Any]:
        """What the fake recorded, as JSON."""
        return {
            "origin": self.origin,
            "apps": [asdict(a) for a in self.apps.values()],
            "connections": [
                {
                    "id": c.id,
                    "app_id": c.app_id,
                    "live": c.live,
                    "silent": c.silent,
                    "pings": c.pings,
                }
                for c in self.connections
            ],
            "discoveries": self.discoveries,
            "acks": [asdict(a) for a in self.acks],
            "pushed": [
                {k: v for k, v in asdict(p).items() if k != "event"} for p in self.pushed.values()
            ],
            "messages": self.messages,
            "reactions": self.reactions,
            "reaction_log": self.reaction_log,
            "registrations": [asdict(r) for r in self.registrations],
        }

    # -- registering apps (lark.md §4: init, begin, poll; the test scans) ------------------

    def registration(self, device_code: str | None = None) -> FakeRegistration:
        """The registration with ``device_code``, else the newest one."""
        found = [r for r in self.registrations if device_code in (None, r.device_code)]
        if not found:
            raise KeyError(f"no registration {device_code or '(none begun yet)'}")
        return found[-1]

    def approve_registration(
        self,
        device_code: str | None = None,
        *,
        app_id: str | None = None,
        app_secret: str | None = None,
        name: str | None = None,
        user: str = "Alice",
        tenant_brand: str = "feishu",
    ) -> FakeApp:
        """The person ``user`` scans and creates the app: it exists at once (token, bot info,
        long connection) and the next poll hands out its credentials."""
        reg = self.registration(device_code)
        app_id = app_id or "cli_" + _hash("registered", reg.device_code)
        app = self.add_app(app_id, app_secret or "sec_" + _hash("secret", app_id), name)
        reg.status, reg.app_id, reg.user, reg.tenant_brand = "approved", app_id, user, tenant_brand
        return app

    def deny_registration(self, device_code: str | None = None) -> None:
        self.registration(device_code).status = "denied"

    def expire_registration(self, device_code: str | None = None) -> None:
        self.registration(device_code).status = "expired"

    def _register(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /oauth/v1/app/registration`` with a form; errors are HTTP 400 with
        ``{"error", "error_description"}`` as on the real accounts host."""
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        self.registration_forms.append(form)
        action = form.get("action")
        if action == "init":
            nonce = _hash("nonce", str(next(self._ids)))
            return 200, {"supported_auth_methods": self.registration_methods, "nonce": nonce}
        if action == "begin":
            if form.get("auth_method") != "client_secret" or not form.get("archetype"):
                return _oauth_error("invalid_request", "archetype and auth_method are required")
            number = str(next(self._ids))
            code = _hash("user-code", number).upper()
            reg = FakeRegistration(
                device_code="dc_" + _hash("device", number, str(random.random())),
                user_code=f"{code[:4]}-{code[4:8]}",
                form=form,
                expires_at=time.monotonic() + self.registration_expires,
            )
            self.registrations.append(reg)
            return 200, {
                "device_code": reg.device_code,
                "user_code": reg.user_code,
                "verification_uri": f"{self.origin}/page/launcher",
                "verification_uri_complete": (
                    f"{self.origin}/page/launcher?user_code={reg.user_code}"
                ),
                "interval": self.registration_interval,
                "expire_in": self.registration_expires,
            }
        if action == "poll":
            return self._poll_registration(form.get("device_code") or "")
        return _oauth_error("invalid_request", f"unknown action {action!r}")

    def _poll_registration(self, device_code: str) -> tuple[int, dict[str, Any]]:
        reg = next((r for r in self.registrations if r.device_code == device_code), None)
        if reg is None or reg.status == "done":
            return _oauth_error("invalid_grant", "unknown or used device_code")
        reg.polls += 1
        if reg.status == "pending" and time.monotonic() >= reg.expires_at:
            reg.status = "expired"
        if reg.status == "expired":
            return _oauth_error("expired_token", "the device_code has expired")
        if reg.status == "denied":
            return _oauth_error("access_denied", "the user refused to create the app")
        if reg.slow_down > 0:
            reg.slow_down -= 1
            return _oauth_error("slow_down", "poll less often")
        if reg.status == "pending" or reg.app_id is None:
            return _oauth_error("authorization_pending", "waiting for the user to scan")
        app = self.apps[reg.app_id]
        reg.status = "done"
        return 200, {
            "client_id": app.app_id,
            "client_secret": app.app_secret,
            "user_info": {
                "open_id": self.user(reg.user).open_id(app.app_id),
                "tenant_brand": reg.tenant_brand,
            },
            "auth_method": ["client_secret"],
        }

    def _registration_control(self, method: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /_fake/registrations/approve {device_code?, app_id?, app_secret?, name?,
        user?}``, ``.../deny {device_code?}``, ``.../expire {device_code?}``; ``GET
        /_fake/registrations``."""
        if (method, name) == ("GET", "registrations"):
            return {"registrations": [asdict(r) for r in self.registrations]}
        if (method, name) == ("POST", "registrations/approve"):
            return asdict(self.approve_registration(**body))
        if (method, name) == ("POST", "registrations/deny"):
            self.deny_registration(body.get("device_code"))
            return {}
        if (method, name) == ("POST", "registrations/expire"):
            self.expire_registration(body.get("device_code"))
            return {}
        raise HttpError(404, {"code": 404, "msg": f"no control {method} /_fake/{name}"})


def _oauth_error(error: str, description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": error, "error_description": description}


def _public(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API returns it (without what the fake keeps for tests)."""
    return {k: v for k, v in stored.items() if k not in PRIVATE_FIELDS}


class ThreadedFake:
    """A :class:`FakeLarkPlatform` on its own loop in a thread: ``with ThreadedFake() as t``;
    ``t.fake`` is the platform, ``t.call(fn)`` runs ``await fn(fake)`` (or ``fn(fake)``) on
    its loop and returns the result."""

    def __init__(self, **kwargs: Any) -> None:
        self.fake = FakeLarkPlatform(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedFake:
        self._thread.start()
        self.call(lambda fake: fake.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(lambda fake: fake.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def origin(self) -> str:
        return self.fake.origin

    def call(self, fn: Callable[[FakeLarkPlatform], Awaitable[T] | T], timeout: float = 10) -> T:
        async def run() -> T:
            value = fn(self.fake)
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                return await value  # type: ignore[no-any-return]
            return value  # type: ignore[return-value]

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="A fake Lark Open Platform on loopback.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--state-dir", type=Path, help="writes `origin` there once listening")
    p.add_argument("--ping-interval", type=float, default=1)
    p.add_argument("--reconnect-interval", type=float, default=1)
    p.add_argument("--reconnect-nonce", type=float, default=0)
    p.add_argument("--max-connections", type=int, default=50)
    p.add_argument("--token-ttl", type=int, default=7200)
    p.add_argument("--repush-after", type=float, default=None)
    p.add_argument("--registration-interval", type=float, default=5)
    p.add_argument("--app", action="append", default=[], help="APP_ID:SECRET (repeatable)")
    args = p.parse_args(argv)

    async def serve() -> None:
        fake = FakeLarkPlatform(
            port=args.port,
            ping_interval=args.ping_interval,
            reconnect_interval=args.reconnect_interval,
            reconnect_nonce=args.reconnect_nonce,
            max_connections=args.max_connections,
            token_ttl=args.token_ttl,
            repush_after=args.repush_after,
            registration_interval=args.registration_interval,
        )
        for spec in args.app:
            app_id, secret = spec.split(":", 1)
            fake.add_app(app_id, secret)
        async with fake:
            if args.state_dir:
                args.state_dir.mkdir(parents=True, exist_ok=True)
                (args.state_dir / "origin.tmp").write_text(fake.origin)
                (args.state_dir / "origin.tmp").rename(args.state_dir / "origin")
            print(fake.origin, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
