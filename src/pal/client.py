"""A typed, synchronous HTTP client for the server API (used by the console and the daemon).

Each method is one endpoint and returns the server's JSON payload as is, typed with the
``TypedDict`` shapes below. A non-2xx answer raises :class:`ApiError` with the server's
``{"error": ...}`` message; a server that cannot be reached raises :class:`ServerUnreachable`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, BinaryIO, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

import httpx

import pal
from pal.errors import PalError

Runtime = Literal["neeko", "coco", "codex", "claude", "command"]
Mode = Literal["mentions", "all", "periodic", "muted", "off"]
DeliveryStatus = Literal["pending", "claimed", "acked", "failed", "muted"]
RunStatus = Literal["running", "completed", "failed", "killed", "lost"]
RunActionName = Literal["kill", "restart"]
OutputStream = Literal["stdout", "stderr"]


class ClientError(PalError):
    """Base class for what can go wrong talking to the server."""


class ApiError(ClientError):
    """The server answered with a non-2xx status; ``message`` is its ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(ClientError):
    """No HTTP answer at all: connection refused, unknown host, timeout, ..."""

    status = 503

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the pal server at {base_url} ({reason}); "
            "is `pal server` running? set --server or PAL_SERVER"
        )
        self.base_url = base_url
        self.reason = reason


class DaemonUnreachable(ClientError):
    """The daemon's local API gave no HTTP answer (``pal cli`` talks only to the daemon)."""

    status = 503

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the pal daemon at {base_url}; is `pal daemon` running? "
            f"({reason}; set LOCK_DAEMON_URL if it listens elsewhere)"
        )
        self.base_url = base_url
        self.reason = reason


# -- payload shapes (timestamps are ISO 8601 UTC strings ending in "Z") ----------------------


class Health(TypedDict):
    ok: bool
    version: str
    database: str


class Room(TypedDict):
    id: str
    name: str
    kind: str
    settings: dict[str, Any]
    agent_hops: int
    created_at: str
    last_message_id: NotRequired[int | None]
    member_count: NotRequired[int]


class Member(TypedDict):
    member: str
    member_kind: str
    mode: str
    created_at: str
    display_name: str | None
    runtime: str | None


class Mentionable(TypedDict):
    key: str
    name: str
    kind: str
    member: bool
    mode: str | None


class Membership(TypedDict):
    room_id: str
    room: str
    member: str
    member_kind: str
    mode: str
    cursor: int
    last_digest_at: str | None
    created_at: str


class Topic(TypedDict):
    id: int
    room_id: str
    title: str
    created_by: str | None
    created_at: str


class Message(TypedDict):
    id: int
    room_id: str
    room: str
    topic_id: int | None
    parent_id: int | None
    sender: str
    sender_kind: str
    content: str
    mentions: list[str]
    source: str | None
    client_msg_id: str | None
    created_at: str


class InboxMessage(Message):
    delivery_id: int
    delivery_reason: str
    delivery_status: str


class Delivery(TypedDict):
    id: int
    agent_key: str
    message_id: int
    room_id: str
    topic_id: int | None
    reason: str
    status: str
    computer_id: str | None
    attempt: int
    error: str | None
    created_at: str
    updated_at: str
    claimed_at: str | None
    lease_until: str | None
    digest_after: int | None


class Agent(TypedDict):
    key: str
    display_name: str
    runtime: str
    description: str
    computer_id: str | None
    config: dict[str, Any]
    created_at: str
    updated_at: str


class Computer(TypedDict):
    id: str
    name: str
    status: str
    last_seen_at: str | None
    connected_at: str | None
    platform: str | None
    version: str | None
    runtimes: list[dict[str, Any]]
    created_at: str
    revoked_at: str | None
    agents: NotRequired[list[str]]


class Run(TypedDict):
    id: int
    delivery_id: int
    message_id: int
    room_id: str
    topic_id: int | None
    session_id: int | None
    agent_key: str
    computer_id: str | None
    daemon_id: str | None
    runtime: str | None
    status: str
    dry_run: bool
    pid: int | None
    exit_code: int | None
    error: str | None
    restart_of: int | None
    usage: dict[str, Any] | None
    output_bytes: int
    output_dropped: int
    started_at: str
    finished_at: str | None


class OutputChunk(TypedDict):
    seq: int
    stream: OutputStream
    data: str
    created_at: str


class RunAction(TypedDict):
    id: int
    run_id: int
    computer_id: str | None
    action: str
    status: str
    requested_by: str | None
    error: str | None
    created_at: str
    updated_at: str


class Session(TypedDict):
    id: int
    agent_key: str
    room_id: str
    topic_id: int | None
    runtime: str
    runtime_session_id: str | None
    cwd: str | None
    created_at: str
    updated_at: str


class RoomList(TypedDict):
    rooms: list[Room]


class RoomCreated(TypedDict):
    room: Room


class MemberList(TypedDict):
    room: str
    members: list[Member]


class MentionableList(TypedDict):
    room: str
    mentionables: list[Mentionable]


class Invitation(TypedDict):
    membership: Membership
    created: bool


class TopicCreated(TypedDict):
    topic: Topic


class MessageList(TypedDict):
    messages: list[Message]


class MessageShown(TypedDict):
    message: Message


class DebateTurn(TypedDict):
    """What a posted message did to a debate (it was the awaited reply)."""

    id: int
    a: str
    b: str
    turn: int
    turns: int
    status: Literal["running", "completed"]
    next_speaker: str | None
    notice: Message | None


class Posted(TypedDict):
    message: Message
    deliveries: list[Delivery]
    duplicate: bool
    suppressed: str | None
    debate: NotRequired[DebateTurn | None]


class Inbox(TypedDict):
    agent: str
    messages: list[InboxMessage]


class AgentList(TypedDict):
    agents: list[Agent]


class AgentShown(TypedDict):
    agent: Agent


class AgentSaved(TypedDict):
    agent: Agent
    created: bool


class Removed(TypedDict):
    memberships: int
    deliveries: int


class AgentDeleted(TypedDict):
    agent: Agent
    removed: Removed


class DeliveryList(TypedDict):
    deliveries: list[Delivery]


class DeliveryCreated(TypedDict):
    delivery: Delivery


class ComputerList(TypedDict):
    computers: list[Computer]


class ComputerShown(TypedDict):
    computer: Computer


class ComputerKey(TypedDict):
    """A computer with its API key: the only answers that ever show the key."""

    computer: Computer
    api_key: str
    daemon_command: str
    source_command: str


class Connected(TypedDict):
    computer: Computer
    daemon_id: str
    agents: list[dict[str, Any]]
    heartbeat_grace: float
    lease_seconds: float


class RunList(TypedDict):
    runs: list[Run]


class RunShown(TypedDict):
    run: Run
    actions: list[RunAction]


class ActionRequested(TypedDict):
    action: RunAction


class AgentRestart(TypedDict):
    action: RunAction
    run: Run


class RunOutput(TypedDict):
    """``GET /api/runs/<id>/output``: one page of the run's kept output, oldest first."""

    run: Run
    chunks: list[OutputChunk]
    next_after: int
    output_dropped: int
    more: bool


class OutputAppended(TypedDict):
    run_id: int
    stored: int
    next_seq: int
    output_bytes: int
    output_dropped: int


class ActionReported(TypedDict):
    action: RunAction


class SessionList(TypedDict):
    sessions: list[Session]


class Artifact(TypedDict):
    """An uploaded file; ``url`` serves it until it expires or is revoked (then 410)."""

    id: str
    title: str
    mime: str
    size: int
    sha256: str
    created_by: str | None
    room_id: str | None
    room: str | None
    run_id: int | None
    computer_id: str | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    removed_at: str | None
    status: Literal["active", "expired", "revoked"]
    url: str


class ArtifactShown(TypedDict):
    artifact: Artifact


class ArtifactList(TypedDict):
    artifacts: list[Artifact]
    max_bytes: int
    default_ttl: int


class ArtifactCleanup(TypedDict):
    removed: int
    expired: int
    revoked: int
    bytes_freed: int
    leftovers: int


DebateStatus = Literal["running", "completed", "stopped"]


class Debate(TypedDict):
    """Two agents answering each other in the thread of ``root_message_id``."""

    id: int
    room_id: str
    room: str
    root_message_id: int | None
    a: str
    b: str
    topic: str
    turns: int
    turn: int
    next_speaker: str | None
    status: DebateStatus
    created_by: str | None
    created_at: str
    updated_at: str
    ended_at: str | None


class DebateShown(TypedDict):
    debate: Debate


class DebateList(TypedDict):
    debates: list[Debate]


class DebateStarted(TypedDict):
    debate: Debate
    message: Message
    deliveries: list[Delivery]


class DaemonState(TypedDict):
    computer_id: str | None
    daemon_id: str | None
    socket: str
    agents: list[str]
    server_url: str
    dry_run: bool


class DaemonHealth(TypedDict):
    """``GET /health`` on a daemon's local API: its state, and its server's health (or why
    the server could not be reached)."""

    ok: bool
    daemon: DaemonState
    server: Health | str


class LarkBot(TypedDict):
    """A bot of lark.json and its connection (``app_secret`` is redacted)."""

    app_id: str
    label: str
    agent: str | None
    open_id: str | None
    domain: str
    app_secret: str
    state: str | None
    error: str | None
    connected_at: Any
    last_frame_at: Any
    events_received: int | None
    reconnects: int | None


class LarkStatus(TypedDict):
    config: str
    error: str | None
    bots: list[LarkBot]


class LarkEvent(TypedDict):
    id: int
    app_id: str
    event_id: str | None
    event_type: str | None
    message_id: str | None
    chat_id: str | None
    chat_type: str | None
    sender_id: str | None
    outcome: str
    detail: str | None
    payload: dict[str, Any]
    received_at: str


class LarkEventList(TypedDict):
    events: list[LarkEvent]


class LarkSent(TypedDict):
    message: dict[str, Any]


class LarkUser(TypedDict):
    user_id: str
    name: str
    created_at: str


class LarkUserList(TypedDict):
    users: list[LarkUser]


class LarkUserSaved(TypedDict):
    user: LarkUser
    created: bool


class LarkUserDeleted(TypedDict):
    user: LarkUser


# -- the client ------------------------------------------------------------------------------


def _segment(value: str) -> str:
    """One URL path segment, so a name like ``a/b`` cannot address another endpoint."""
    return quote(value, safe="")


def _given(**fields: Any) -> dict[str, Any]:
    """The fields that are not ``None`` (the server leaves omitted fields unchanged)."""
    return {name: value for name, value in fields.items() if value is not None}


def _transport_reason(exc: httpx.TransportError, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g}s"
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip()
    return text[:1].lower() + text[1:] if text else type(exc).__name__


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    snippet = " ".join(response.text.split())[:200]
    return f"HTTP {response.status_code} {response.reason_phrase}" + (
        f": {snippet}" if snippet else ""
    )


class ServerClient:
    """The server API over HTTP. Use as a context manager, or call :meth:`close`.

    ``token`` is sent as ``Authorization: Bearer <token>`` on every request: a computer's API
    key for the daemon endpoints, or the daemon's local API token when ``base_url`` is a
    daemon (which forwards ``/api/*`` to its server unchanged).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"user-agent": f"pal/{pal.__version__}"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, headers=headers
        )

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method, path, params=params, json=json, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.base_url, _transport_reason(exc, self.timeout)) from exc
        if not response.is_success:
            raise ApiError(response.status_code, _error_message(response))
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                f"{method} {path} answered with something that is not JSON; "
                f"is {self.base_url} a pal server?",
            ) from None

    # -- health and rooms --------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /health``: liveness, version and database backend."""
        return cast(Health, self._request("GET", "/health"))

    def list_rooms(self) -> RoomList:
        """``GET /api/rooms``: every room with its newest message id and member count."""
        return cast(RoomList, self._request("GET", "/api/rooms"))

    def create_room(
        self, name: str, *, kind: str = "room", settings: dict[str, Any] | None = None
    ) -> RoomCreated:
        """``POST /api/rooms``."""
        body = {"name": name, "kind": kind, "settings": settings or {}}
        return cast(RoomCreated, self._request("POST", "/api/rooms", json=body))

    def update_room_settings(self, room: str, **settings: Any) -> RoomCreated:
        """``PATCH /api/rooms/<room>``: change settings (``hop_limit``, ``digest_period``);
        ``None`` resets one to its default."""
        path = f"/api/rooms/{_segment(room)}"
        return cast(RoomCreated, self._request("PATCH", path, json={"settings": settings}))

    def room_members(self, room: str) -> MemberList:
        """``GET /api/rooms/<room>/members``; ``room`` is an id or a name."""
        return cast(MemberList, self._request("GET", f"/api/rooms/{_segment(room)}/members"))

    def mentionables(self, room: str) -> MentionableList:
        """``GET /api/rooms/<room>/mentionables``: agents, then recent human senders."""
        path = f"/api/rooms/{_segment(room)}/mentionables"
        return cast(MentionableList, self._request("GET", path))

    def invite_agent(self, room: str, agent: str, *, mode: Mode = "mentions") -> Invitation:
        """``POST /api/rooms/<room>/agents``: invite an agent, or change its delivery mode."""
        path = f"/api/rooms/{_segment(room)}/agents"
        return cast(Invitation, self._request("POST", path, json={"agent": agent, "mode": mode}))

    def create_topic(self, room: str, title: str, *, created_by: str | None = None) -> TopicCreated:
        """``POST /api/rooms/<room>/topics``."""
        path = f"/api/rooms/{_segment(room)}/topics"
        body = _given(title=title, created_by=created_by)
        return cast(TopicCreated, self._request("POST", path, json=body))

    # -- messages ----------------------------------------------------------------------------

    def list_messages(
        self,
        room: str | None = None,
        *,
        topic: int | None = None,
        parent: int | None = None,
        after: int = 0,
        before: int | None = None,
        limit: int = 50,
        q: str | None = None,
    ) -> MessageList:
        """``GET /api/messages``: messages in id order, filtered by every argument given."""
        params = _given(
            room=room, topic=topic, parent=parent, after=after, before=before, limit=limit, q=q
        )
        return cast(MessageList, self._request("GET", "/api/messages", params=params))

    def get_message(self, message_id: int) -> MessageShown:
        """``GET /api/messages/<id>``."""
        return cast(MessageShown, self._request("GET", f"/api/messages/{message_id}"))

    def post_message(
        self,
        room: str | None,
        sender: str | None,
        content: str,
        *,
        mentions: Iterable[str] = (),
        parent: int | None = None,
        topic: int | None = None,
        client_msg_id: str | None = None,
    ) -> Posted:
        """``POST /api/messages``: post, and get the deliveries it created. ``room`` and
        ``sender`` may be None only inside a run (the daemon's local API fills them in).

        With ``client_msg_id`` a retried post is idempotent: the answer has
        ``duplicate: true`` and the original message.
        """
        body = _given(
            room=room,
            sender=sender,
            content=content,
            mentions=list(mentions),
            parent=parent,
            topic=topic,
            client_msg_id=client_msg_id,
        )
        return cast(Posted, self._request("POST", "/api/messages", json=body))

    def inbox(self, agent: str, *, after: int = 0, limit: int = 50) -> Inbox:
        """``GET /api/inbox``: messages addressed to ``agent``, with their deliveries."""
        params = {"agent": agent, "after": after, "limit": limit}
        return cast(Inbox, self._request("GET", "/api/inbox", params=params))

    # -- agents ------------------------------------------------------------------------------

    def list_agents(self) -> AgentList:
        """``GET /api/agents``, ordered by key."""
        return cast(AgentList, self._request("GET", "/api/agents"))

    def get_agent(self, key: str) -> AgentShown:
        """``GET /api/agents/<key>``."""
        return cast(AgentShown, self._request("GET", f"/api/agents/{_segment(key)}"))

    def create_agent(
        self,
        key: str,
        *,
        display_name: str | None = None,
        runtime: Runtime | None = None,
        description: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> AgentSaved:
        """``POST /api/agents``: create the agent, or update the fields given."""
        body = _given(
            key=key,
            display_name=display_name,
            runtime=runtime,
            description=description,
            config=config,
        )
        return cast(AgentSaved, self._request("POST", "/api/agents", json=body))

    def onboard_agent(
        self,
        key: str,
        *,
        display_name: str | None = None,
        runtime: Runtime | None = None,
        description: str | None = None,
        computer_id: str | None = None,
    ) -> AgentSaved:
        """``POST /api/agents/onboard``: create or update, and assign to ``computer_id`` if
        given, all or nothing."""
        body = _given(
            key=key,
            display_name=display_name,
            runtime=runtime,
            description=description,
            computer_id=computer_id,
        )
        return cast(AgentSaved, self._request("POST", "/api/agents/onboard", json=body))

    def update_agent(
        self,
        key: str,
        *,
        display_name: str | None = None,
        runtime: Runtime | None = None,
        description: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> AgentShown:
        """``PATCH /api/agents/<key>``: change the fields given; the agent must exist."""
        body = _given(
            display_name=display_name, runtime=runtime, description=description, config=config
        )
        path = f"/api/agents/{_segment(key)}"
        return cast(AgentShown, self._request("PATCH", path, json=body))

    def delete_agent(self, key: str) -> AgentDeleted:
        """``DELETE /api/agents/<key>``, with its memberships and active deliveries."""
        return cast(AgentDeleted, self._request("DELETE", f"/api/agents/{_segment(key)}"))

    def assign_agent(self, key: str, computer_id: str | None) -> AgentShown:
        """``POST /api/agents/<key>/assignment``; ``None`` unassigns."""
        path = f"/api/agents/{_segment(key)}/assignment"
        return cast(AgentShown, self._request("POST", path, json={"computer_id": computer_id}))

    # -- deliveries --------------------------------------------------------------------------

    def list_deliveries(
        self,
        *,
        agent: str | None = None,
        status: DeliveryStatus | None = None,
        after: int = 0,
        limit: int = 50,
    ) -> DeliveryList:
        """``GET /api/deliveries``, filtered by agent and status."""
        params = _given(agent=agent, status=status, after=after, limit=limit)
        return cast(DeliveryList, self._request("GET", "/api/deliveries", params=params))

    def create_delivery(
        self, agent: str, message_id: int, *, reason: str = "manual"
    ) -> DeliveryCreated:
        """``POST /api/deliveries``: ask ``agent`` to act on an existing message."""
        body = {"agent": agent, "message_id": message_id, "reason": reason}
        return cast(DeliveryCreated, self._request("POST", "/api/deliveries", json=body))

    # -- computers ---------------------------------------------------------------------------

    def provision_computer(self, name: str, *, server_url: str | None = None) -> ComputerKey:
        """``POST /api/computers/provision``: a new computer and its API key (shown only
        here); ``server_url`` is the URL its daemon uses (default: the server's own)."""
        body = _given(name=name, server_url=server_url)
        return cast(ComputerKey, self._request("POST", "/api/computers/provision", json=body))

    def list_computers(self) -> ComputerList:
        """``GET /api/computers``: every computer with its status and assigned agents."""
        return cast(ComputerList, self._request("GET", "/api/computers"))

    def get_computer(self, computer_id: str) -> ComputerShown:
        """``GET /api/computers/<id>``."""
        path = f"/api/computers/{_segment(computer_id)}"
        return cast(ComputerShown, self._request("GET", path))

    def revoke_computer(self, computer_id: str) -> ComputerShown:
        """``POST /api/computers/<id>/revoke``: its key stops working at once."""
        path = f"/api/computers/{_segment(computer_id)}/revoke"
        return cast(ComputerShown, self._request("POST", path))

    def rotate_computer(self, computer_id: str) -> ComputerKey:
        """``POST /api/computers/<id>/rotate``: a new key; the old one stops working."""
        path = f"/api/computers/{_segment(computer_id)}/rotate"
        return cast(ComputerKey, self._request("POST", path))

    def connect_computer(
        self, *, daemon_id: str | None = None, platform: str | None = None
    ) -> Connected:
        """``POST /api/computers/connect`` with this client's ``token`` as the computer's
        key: the computer it names (:class:`ApiError` 401 for a wrong or revoked key)."""
        body = _given(daemon_id=daemon_id, platform=platform)
        return cast(Connected, self._request("POST", "/api/computers/connect", json=body))

    # -- runs and sessions -------------------------------------------------------------------

    def list_runs(
        self,
        *,
        agent: str | None = None,
        status: RunStatus | None = None,
        computer: str | None = None,
        room: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> RunList:
        """``GET /api/runs``: runs newest first, filtered by every argument given."""
        params = _given(
            agent=agent, status=status, computer=computer, room=room, before=before, limit=limit
        )
        return cast(RunList, self._request("GET", "/api/runs", params=params))

    def get_run(self, run_id: int) -> RunShown:
        """``GET /api/runs/<id>``: the run and the kill/restart actions asked for it."""
        return cast(RunShown, self._request("GET", f"/api/runs/{run_id}"))

    def run_action(
        self, run_id: int, action: RunActionName, *, requested_by: str | None = None
    ) -> ActionRequested:
        """``POST /api/runs/<id>/kill`` or ``/restart``: record the request for the run's
        daemon (409 unless the run is running)."""
        if action not in ("kill", "restart"):
            raise ValueError(f"run action must be kill or restart, not {action!r}")
        path = f"/api/runs/{run_id}/{action}"
        body = _given(requested_by=requested_by)
        return cast(ActionRequested, self._request("POST", path, json=body))

    def run_output(
        self,
        run_id: int,
        *,
        after: int = -1,
        limit: int = 1000,
        stream: OutputStream | None = None,
    ) -> RunOutput:
        """``GET /api/runs/<id>/output``: the run and up to ``limit`` of its output chunks
        with ``seq > after``; ask again with ``after=next_after`` while ``more``."""
        params = _given(after=after, limit=limit, stream=stream)
        return cast(RunOutput, self._request("GET", f"/api/runs/{run_id}/output", params=params))

    def append_run_output(self, run_id: int, chunks: list[dict[str, Any]]) -> OutputAppended:
        """``POST /api/runs/<id>/output`` (computer key): store ``[{seq, stream, data}]``;
        chunks already stored are ignored."""
        path = f"/api/runs/{run_id}/output"
        return cast(OutputAppended, self._request("POST", path, json={"chunks": chunks}))

    def complete_run_action(
        self,
        run_id: int,
        action_id: int,
        status: Literal["done", "failed"],
        error: str | None = None,
    ) -> ActionReported:
        """``POST /api/runs/<id>/actions/<action_id>`` (computer key): report a kill or
        restart ``done`` or ``failed`` (409 if it was reported otherwise before)."""
        path = f"/api/runs/{run_id}/actions/{action_id}"
        body = {"status": status, **_given(error=error)}
        return cast(ActionReported, self._request("POST", path, json=body))

    def restart_agent(
        self, room: str, agent: str, *, requested_by: str | None = None
    ) -> AgentRestart:
        """``POST /api/rooms/<room>/agents/<key>/restart``: restart the agent's newest
        running run in the room (404 if it has none)."""
        path = f"/api/rooms/{_segment(room)}/agents/{_segment(agent)}/restart"
        body = _given(requested_by=requested_by)
        return cast(AgentRestart, self._request("POST", path, json=body))

    def list_sessions(self, *, agent: str | None = None, room: str | None = None) -> SessionList:
        """``GET /api/sessions``: agent sessions, filtered by agent and room."""
        params = _given(agent=agent, room=room)
        return cast(SessionList, self._request("GET", "/api/sessions", params=params))

    # -- artifacts ---------------------------------------------------------------------------

    def upload_artifact(
        self,
        content: BinaryIO | Iterable[bytes] | bytes,
        *,
        title: str,
        mime: str,
        ttl: int | None = None,
        created_by: str | None = None,
        room: str | None = None,
        size: int | None = None,
    ) -> ArtifactShown:
        """``POST /api/artifacts``: ``content`` (a file opened for reading is sent in pieces,
        never read whole) becomes an artifact; ``ttl`` seconds (0: until revoked, default:
        the server's PAL_ARTIFACT_TTL). ``size`` is sent as the content-length."""
        params = _given(title=title, mime=mime, ttl=ttl, created_by=created_by, room=room)
        headers = {"content-type": mime}
        if size is not None:
            headers["content-length"] = str(size)
        answer = self._request(
            "POST", "/api/artifacts", params=params, content=content, headers=headers
        )
        return cast(ArtifactShown, answer)

    def list_artifacts(self, *, before: str | None = None, limit: int = 50) -> ArtifactList:
        """``GET /api/artifacts``: newest first, and the server's ``max_bytes`` and
        ``default_ttl``."""
        params = _given(before=before, limit=limit)
        return cast(ArtifactList, self._request("GET", "/api/artifacts", params=params))

    def get_artifact(self, artifact_id: str) -> ArtifactShown:
        """``GET /api/artifacts/<id>``."""
        return cast(ArtifactShown, self._request("GET", f"/api/artifacts/{_segment(artifact_id)}"))

    def revoke_artifact(self, artifact_id: str) -> ArtifactShown:
        """``POST /api/artifacts/<id>/revoke``: its URL answers 410 from now on."""
        path = f"/api/artifacts/{_segment(artifact_id)}/revoke"
        return cast(ArtifactShown, self._request("POST", path))

    def cleanup_artifacts(self) -> ArtifactCleanup:
        """``POST /api/artifacts/cleanup``: delete the files of expired and revoked
        artifacts now."""
        return cast(ArtifactCleanup, self._request("POST", "/api/artifacts/cleanup"))

    # -- debates -------------------------------------------------------------------------------

    def start_debate(
        self,
        room: str | None,
        a: str,
        b: str,
        topic: str,
        *,
        turns: int | None = None,
        created_by: str | None = None,
    ) -> DebateStarted:
        """``POST /api/debates``: post the topic in ``room`` and start the debate (``a``
        speaks first). ``room`` may be None only inside a run (the daemon's local API fills in
        the run's room, and the run's agent as ``created_by``)."""
        body = _given(room=room, a=a, b=b, topic=topic, turns=turns, created_by=created_by)
        return cast(DebateStarted, self._request("POST", "/api/debates", json=body))

    def list_debates(
        self, *, room: str | None = None, status: DebateStatus | None = None, limit: int = 50
    ) -> DebateList:
        """``GET /api/debates``: newest first, by room and status."""
        params = _given(room=room, status=status, limit=limit)
        return cast(DebateList, self._request("GET", "/api/debates", params=params))

    def get_debate(self, debate_id: int) -> DebateShown:
        """``GET /api/debates/<id>``."""
        return cast(DebateShown, self._request("GET", f"/api/debates/{debate_id}"))

    def stop_debate(self, debate_id: int, *, stopped_by: str | None = None) -> DebateShown:
        """``POST /api/debates/<id>/stop``: no further turn counts (an ended debate is
        answered as it is)."""
        path = f"/api/debates/{debate_id}/stop"
        return cast(DebateShown, self._request("POST", path, json=_given(stopped_by=stopped_by)))

    # -- Lark ----------------------------------------------------------------------------------

    def lark_status(self) -> LarkStatus:
        """``GET /api/lark``: the bots of lark.json and their connections (secrets redacted)."""
        return cast(LarkStatus, self._request("GET", "/api/lark"))

    def reload_lark(self) -> LarkStatus:
        """``POST /api/lark/reload``: apply lark.json again (422 if it is invalid; the running
        bots are kept)."""
        return cast(LarkStatus, self._request("POST", "/api/lark/reload"))

    def lark_events(self, *, app_id: str | None = None, limit: int = 20) -> LarkEventList:
        """``GET /api/lark/events``: received events, newest first."""
        params = _given(app_id=app_id, limit=limit)
        return cast(LarkEventList, self._request("GET", "/api/lark/events", params=params))

    def lark_send(self, app_id: str, to: str, text: str, *, to_type: str = "chat_id") -> LarkSent:
        """``POST /api/lark/send``: a text message through bot ``app_id``."""
        body = {"app_id": app_id, "to": to, "to_type": to_type, "text": text}
        return cast(LarkSent, self._request("POST", "/api/lark/send", json=body))

    def list_lark_users(self) -> LarkUserList:
        """``GET /api/lark-users``: the Lark users whose messages reach agents."""
        return cast(LarkUserList, self._request("GET", "/api/lark-users"))

    def add_lark_user(self, user_id: str, name: str) -> LarkUserSaved:
        """``POST /api/lark-users``: authorize a Lark user (or rename one)."""
        body = {"user_id": user_id, "name": name}
        return cast(LarkUserSaved, self._request("POST", "/api/lark-users", json=body))

    def delete_lark_user(self, user_id: str) -> LarkUserDeleted:
        """``DELETE /api/lark-users/<user_id>``."""
        path = f"/api/lark-users/{_segment(user_id)}"
        return cast(LarkUserDeleted, self._request("DELETE", path))


class DaemonClient(ServerClient):
    """The server API through a daemon's local API, which forwards ``/api/*`` to its server
    with the computer's credential; ``token`` is the local API's bearer token.

    Errors name the daemon: :class:`DaemonUnreachable` when nothing answers, and a 401 says
    which token to fix (``token_file`` is where the daemon keeps it).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        token_file: str,
        timeout: float = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout, transport=transport, token=token)
        self.token_file = token_file

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            return super()._request(
                method, path, params=params, json=json, content=content, headers=headers
            )
        except ServerUnreachable as exc:
            raise DaemonUnreachable(self.base_url, exc.reason) from None
        except ApiError as exc:
            if exc.status != 401:
                raise
            raise ApiError(
                401,
                f"the daemon refused the token: set LOCK_DAEMON_TOKEN or check {self.token_file}",
            ) from None

    def daemon_health(self) -> DaemonHealth:
        """``GET /health``: the daemon's own state, and its server's health. :class:`ApiError`
        when something else answers there (LOCK_DAEMON_URL pointing at the server, say)."""
        answer = self._request("GET", "/health")
        state = answer.get("daemon") if isinstance(answer, dict) else None
        if not (isinstance(state, dict) and "server" in answer and "daemon_id" in state):
            raise ApiError(
                200,
                f"{self.base_url} answered /health, but not as a pal daemon: is it the "
                "pal server? set LOCK_DAEMON_URL to the daemon's local API "
                "(default http://127.0.0.1:4137)",
            )
        return cast(DaemonHealth, answer)
