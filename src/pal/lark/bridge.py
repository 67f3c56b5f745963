"""The bridge between Lark chats and pal rooms (docs/lark.md "The bridge").

Inbound, :meth:`LarkBridge.handle_event` (the manager's event handler; the connection has
acked the event already): the decision of :func:`pal.lark.inbound.read_event`, then the
sender must be an authorized Lark user, the message new (dedupe by ``(app_id,
message_id)``), and the bot bound to an existing agent. One write transaction records the
event and its outcome, the Lark message, the chat's room (made on first contact, with the
agent a member) and the pal message, posted through :func:`pal.server.routing.post_message`
as the HTTP API posts one (sender kind ``lark``, the agent mentioned, reasons
``lark_...``); its hub events follow.

Every Lark REST call runs off that path, in one worker task per bot that takes jobs in
order (so a reaction is added before it is removed, and replies keep their order): the
"Typing" reaction on a message whose delivery exists, its removal when the run ends (or the
delivery fails), and the outbound messages. A failed call is logged and dropped; the pal
side is never undone.

Outbound, from the hub's ``message`` events in rooms linked to a Lark chat: the bound
agent's messages are replies to the Lark message that woke it (the thread's root, else its
running run's message, else the chat's newest), a human's are sent to the chat with their
name; messages that came from Lark are never sent back. Each call carries an idempotency
``uuid`` made from the room and pal message ids, so a retry never posts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from pal.config import Settings
from pal.errors import Conflict
from pal.lark.config import BotConfig
from pal.lark.inbound import Ignored, Inbound, read_event
from pal.lark.manager import LarkManager
from pal.server.api.messages import publish_posted
from pal.server.hub import Hub
from pal.server.routing import NewMessage, post_message
from pal.store import agents as agents_store
from pal.store import deliveries as deliveries_store
from pal.store import lark as lark_store
from pal.store import messages as messages_store
from pal.store import rooms as rooms_store
from pal.store import runs as runs_store
from pal.store.cache import routing_cache
from pal.store.db import Database

log = logging.getLogger(__name__)

RUN_ENDED = frozenset({"completed", "failed", "killed", "lost"})
HUB_KINDS = frozenset({"message", "run", "delivery"})
STOP_GRACE = 2.0
Job = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Chat:
    app_id: str
    chat_id: str


@dataclass(frozen=True)
class Reaction:
    """A Lark message with (or about to get) the reaction: ``row_id`` in lark_messages."""

    app_id: str
    row_id: int
    message_id: str


def _slug(text: str, size: int = 24) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:size].strip("-")


def room_name(bot: BotConfig, agent: str, chat: Inbound, sender: str) -> str:
    """``lark-<bot>-<who>-<chat>``: the bot's label (else its agent), the sender for a p2p
    chat (``group`` otherwise) and the end of the chat id."""
    who = (_slug(sender, 16) or "user") if chat.chat_type == "p2p" else "group"
    tail = _slug(chat.chat_id[-8:], 8) or "chat"
    return f"lark-{_slug(bot.label) or _slug(agent)}-{who}-{tail}"


def unauthorized_detail(ids: dict[str, str]) -> str:
    shown = ", ".join(f"{k} {v}" for k, v in ids.items()) or "no ids"
    best = ids.get("union_id") or ids.get("open_id") or ids.get("user_id") or "ID"
    return (
        f"sender ({shown}) is not an authorized Lark user; allow them with "
        f"`pal console lark-users add --user-id {best} --name NAME`"
    )


class LarkBridge:
    """See the module docstring. :meth:`start` and :meth:`stop` go with the manager's."""

    def __init__(self, settings: Settings, db: Database, hub: Hub) -> None:
        self.db = db
        self.hub = hub
        self.emoji = settings.reaction_emoji
        self.manager: LarkManager | None = None
        self._rooms: dict[str, list[Chat]] = {}  # room_id -> the Lark chats it is
        self._open: dict[int, Reaction] = {}  # delivery_id -> its Lark message's reaction
        self._queues: dict[str, asyncio.Queue[Job | None]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._consumer: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the linked chats, follow the hub, and take off reactions whose runs ended
        while the server was down (best effort, in the bots' workers)."""
        chats, reactions = await self.db.read(
            lambda conn: (lark_store.list_chats(conn), lark_store.open_reactions(conn))
        )
        for chat in chats:
            self._link(chat["room_id"], Chat(chat["app_id"], chat["chat_id"]))
        self._consumer = asyncio.create_task(self._follow_hub(), name="lark_bridge_hub")
        for row in reactions:
            reaction = Reaction(row["app_id"], row["id"], row["lark_message_id"])
            if row["ended"]:
                self._remove_reaction(reaction)
            elif row["delivery_id"] is not None:
                self._open[row["delivery_id"]] = reaction

    async def stop(self) -> None:
        """Stop following the hub; the queued Lark calls get up to :data:`STOP_GRACE`
        seconds, then are dropped."""
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        for queue in self._queues.values():
            queue.put_nowait(None)
        workers = list(self._workers.values())
        if workers:
            _, pending = await asyncio.wait(workers, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._queues.clear()
        self._workers.clear()

    def _link(self, room_id: str, chat: Chat) -> None:
        chats = self._rooms.setdefault(room_id, [])
        if chat not in chats:
            chats.append(chat)

    # -- inbound ---------------------------------------------------------------------------

    async def handle_event(self, bot: BotConfig, event: dict[str, Any]) -> None:
        """One event of ``bot`` (its current configuration): recorded with its outcome and,
        for an authorized user's new message, posted to the chat's room."""
        decision = read_event(event, bot.open_id)
        try:
            result = await self.db.write(self._receive, bot, event, decision)
        except IntegrityError:
            # Another server took the same message (or made the same chat's room) meanwhile:
            # once more, which finds it a duplicate (or uses that room).
            try:
                result = await self.db.write(self._receive, bot, event, decision)
            except IntegrityError:
                detail = "the message could not be stored (a conflicting concurrent write)"
                result = await self.db.write(self._record, bot, event, "error", detail)
        self.hub.publish("lark_event", app_id=bot.app_id, event_id=result["event_id"])
        posted = result.get("posted")
        if posted is None:
            return
        self._link(posted["message"]["room_id"], Chat(bot.app_id, result["chat_id"]))
        publish_posted(self.hub, posted)
        delivery_id = result["delivery_id"]
        if delivery_id is not None and self.emoji:
            reaction = Reaction(bot.app_id, result["row_id"], result["message_id"])
            self._open[delivery_id] = reaction
            self._enqueue(bot.app_id, lambda: self._add_reaction(reaction))

    def _record(
        self,
        conn: Connection,
        bot: BotConfig,
        event: dict[str, Any],
        outcome: str,
        detail: str | None,
    ) -> dict[str, Any]:
        row = lark_store.record_event(conn, bot.app_id, event, outcome=outcome, detail=detail)
        return {"event_id": row["id"]}

    def _receive(
        self, conn: Connection, bot: BotConfig, event: dict[str, Any], decision: Any
    ) -> dict[str, Any]:
        """The inbound decision and its writes, in one transaction."""
        if isinstance(decision, Ignored):
            return self._record(conn, bot, event, "ignored", decision.detail)
        assert isinstance(decision, Inbound)
        user = lark_store.authorized_user(conn, decision.sender_ids.values())
        if user is None:
            detail = unauthorized_detail(decision.sender_ids)
            return self._record(conn, bot, event, "unauthorized", detail)
        agent = bot.agent
        if agent is None:
            detail = (
                f"bot {bot.app_id} is not bound to an agent; bind it with `pal console agents "
                f"update --key AGENT --lark-app-id {bot.app_id} --lark-app-secret ...`"
            )
            return self._record(conn, bot, event, "ignored", detail)
        if agents_store.find_agent(conn, agent) is None:
            detail = (
                f"bot {bot.app_id} is bound to agent {agent}, which does not exist; create it "
                f"(`pal console agents create --key {agent}`) or bind the bot to another"
            )
            return self._record(conn, bot, event, "ignored", detail)
        row = lark_store.add_message(
            conn, bot.app_id, decision.message_id, chat_id=decision.chat_id
        )
        if row is None:
            detail = f"message {decision.message_id} was received before (a re-pushed event)"
            return self._record(conn, bot, event, "duplicate", detail)
        room_id = self._room_of(conn, bot, agent, decision, user["name"])
        new = NewMessage(
            room=room_id,
            sender=user["name"],
            content=decision.text,
            mentions=[agent],
            sender_kind="lark",
            source="lark",
        )
        posted = post_message(conn, new)
        delivery = next((d for d in posted["deliveries"] if d["agent_key"] == agent), None)
        delivery_id = delivery["id"] if delivery is not None else None
        lark_store.update_message(
            conn, row["id"], pal_message_id=posted["message"]["id"], delivery_id=delivery_id
        )
        detail = (
            f"message {posted['message']['id']} in room {posted['message']['room']}, delivery "
            f"{delivery_id} to {agent}"
            if delivery_id is not None
            else f"message {posted['message']['id']} in room {posted['message']['room']}, "
            f"no delivery to {agent} ({posted['suppressed'] or 'its membership is off'})"
        )
        recorded = self._record(conn, bot, event, "delivered", detail)
        return {
            **recorded,
            "posted": posted,
            "chat_id": decision.chat_id,
            "row_id": row["id"],
            "message_id": decision.message_id,
            "delivery_id": delivery_id,
        }

    def _room_of(
        self, conn: Connection, bot: BotConfig, agent: str, chat: Inbound, sender: str
    ) -> str:
        """The chat's room id, made on first contact with the agent a member."""
        linked = lark_store.find_chat(conn, bot.app_id, chat.chat_id)
        if linked is not None:
            room_id: str = linked["room_id"]
        else:
            base = room_name(bot, agent, chat, sender)
            for n in range(1, 100):
                name = base if n == 1 else f"{base}-{n}"
                if rooms_store.find_room(conn, name) is not None:
                    continue
                try:
                    room_id = rooms_store.create_room(conn, name, kind="lark")["id"]
                    break
                except Conflict:
                    continue
            else:  # a hundred rooms of that name: the message id makes it unique
                name = f"{base}-{_slug(chat.message_id[-12:], 12)}"
                room_id = rooms_store.create_room(conn, name, kind="lark")["id"]
            lark_store.add_chat(conn, bot.app_id, chat.chat_id, room_id, chat.chat_type)
        members = {m["member"] for m in rooms_store.list_members(conn, room_id)}
        if agent not in members:  # new, or removed in the workbench since: invited again
            rooms_store.set_membership(conn, room_id, agent, "agent", "mentions")
            cache = routing_cache(conn)
            if cache is not None:  # the post below must see the new member
                cache.clear()
        return room_id

    # -- the bots' workers (every Lark REST call) ------------------------------------------

    def _enqueue(self, app_id: str, job: Job) -> None:
        queue = self._queues.get(app_id)
        if queue is None:
            queue = self._queues[app_id] = asyncio.Queue()
            self._workers[app_id] = asyncio.create_task(
                self._work(app_id, queue), name=f"lark_bridge_{app_id}"
            )
        queue.put_nowait(job)

    async def _work(self, app_id: str, queue: asyncio.Queue[Job | None]) -> None:
        while (job := await queue.get()) is not None:
            try:
                await job()
            except Exception as exc:
                # Never the exception's arguments at large: the REST errors hold no secret,
                # and anything else is named by type only.
                log.warning(
                    "Lark call of bot %s failed: %s",
                    app_id,
                    exc if type(exc).__module__ == "pal.lark.rest" else type(exc).__name__,
                    extra={"action": "lark_call_failed", "app_id": app_id},
                )

    def _rest(self, app_id: str) -> Any:
        if self.manager is None:
            raise RuntimeError("the bridge has no manager")
        return self.manager.rest(app_id)

    async def _add_reaction(self, reaction: Reaction) -> None:
        reaction_id = await self._rest(reaction.app_id).add_reaction(
            reaction.message_id, self.emoji
        )
        await self.db.write(
            lambda conn: lark_store.update_message(conn, reaction.row_id, reaction_id=reaction_id)
        )

    def _remove_reaction(self, reaction: Reaction) -> None:
        self._enqueue(reaction.app_id, lambda: self._delete_reaction(reaction))

    async def _delete_reaction(self, reaction: Reaction) -> None:
        row = await self.db.read(lark_store.get_message_row, reaction.row_id)
        if row is None or row["reaction_id"] is None:
            return  # never added (the add failed), or taken off already
        await self._rest(reaction.app_id).delete_reaction(reaction.message_id, row["reaction_id"])
        await self.db.write(
            lambda conn: lark_store.update_message(conn, reaction.row_id, reaction_id=None)
        )

    # -- following the hub -----------------------------------------------------------------

    async def _follow_hub(self) -> None:
        """Hub events in order; a queue the hub dropped (too slow) is resubscribed and the
        missed events replayed from the hub's history when it still has them."""
        last = self.hub.last
        while not self.hub.is_closed():
            with self.hub.subscribe(HUB_KINDS) as queue:
                missed = self.hub.since(last) or []
                for old in missed:
                    if old["kind"] in HUB_KINDS:
                        last = await self._on_hub_event(old)
                while (event := await queue.get()) is not None:
                    if event["id"] > last:
                        last = await self._on_hub_event(event)

    async def _on_hub_event(self, event: dict[str, Any]) -> int:
        try:
            if event["kind"] == "message" and event["room_id"] in self._rooms:
                await self._outbound(event["room_id"], event["message_id"])
            elif event["kind"] == "run" and event["status"] in RUN_ENDED:
                if event.get("room_id") in self._rooms:
                    run = await self.db.read(runs_store.get_run, event["run_id"])
                    self._run_ended(run.get("delivery_id"))
            elif event["kind"] == "delivery" and event["delivery_id"] in self._open:
                delivery = await self.db.read(deliveries_store.get_delivery, event["delivery_id"])
                if delivery["status"] == "failed":
                    self._run_ended(delivery["id"])
        except Exception:
            log.exception(
                "Lark bridge could not handle hub event %s",
                event.get("kind"),
                extra={"action": "lark_bridge_failed"},
            )
        return int(event["id"])

    def _run_ended(self, delivery_id: int | None) -> None:
        reaction = self._open.pop(delivery_id, None) if delivery_id is not None else None
        if reaction is not None:
            self._remove_reaction(reaction)

    async def _outbound(self, room_id: str, message_id: int) -> None:
        message = await self.db.read(messages_store.get_message, message_id)
        kind = message["sender_kind"]
        if kind not in ("agent", "human"):
            return  # from Lark (never echoed back), or a system notice
        uuid = f"pal-{room_id}-{message_id}"[:50]
        for chat in self._rooms.get(room_id, []):
            bot = self.manager.config.bot(chat.app_id) if self.manager else None
            if bot is None:
                continue
            if kind == "agent" and message["sender"] == bot.agent:
                target = await self.db.read(self._reply_target, chat, message)
                self._enqueue(chat.app_id, self._reply_job(chat, target, message, uuid))
            elif kind == "human":
                text = f"{message['sender']}: {message['content']}"
                self._enqueue(chat.app_id, self._send_job(chat, text, uuid))

    @staticmethod
    def _reply_target(conn: Connection, chat: Chat, message: dict[str, Any]) -> str | None:
        """The Lark message an agent's message answers: the root of its thread, else the
        message of the agent's running run in the room, else the chat's newest."""
        for pal_id in (message.get("parent_id"),):
            if pal_id is not None:
                found = lark_store.message_of_pal_message(conn, chat.app_id, pal_id)
                if found is not None:
                    return str(found["lark_message_id"])
        run = runs_store.newest_running(
            conn, agent_key=message["sender"], room_id=message["room_id"]
        )
        if run is not None and run.get("message_id") is not None:
            found = lark_store.message_of_pal_message(conn, chat.app_id, run["message_id"])
            if found is not None:
                return str(found["lark_message_id"])
        newest = lark_store.newest_message_in_chat(conn, chat.app_id, chat.chat_id)
        return None if newest is None else str(newest["lark_message_id"])

    def _reply_job(self, chat: Chat, target: str | None, message: dict[str, Any], uuid: str) -> Job:
        text = message["content"]

        async def job() -> None:
            rest = self._rest(chat.app_id)
            if target is None:
                await rest.send(chat.chat_id, "chat_id", text, uuid=uuid)
            else:
                await rest.reply(target, text, uuid=uuid)

        return job

    def _send_job(self, chat: Chat, text: str, uuid: str) -> Job:
        async def job() -> None:
            await self._rest(chat.app_id).send(chat.chat_id, "chat_id", text, uuid=uuid)

        return job


def bridged_manager(settings: Settings, db: Database, hub: Hub, **kwargs: Any) -> LarkManager:
    """The server's Lark manager with a :class:`LarkBridge` handling its events (``kwargs``
    go to :class:`LarkManager`: test seams such as ``connect`` and ``rest``)."""
    bridge = LarkBridge(settings, db, hub)
    manager = LarkManager(settings, db, hub, on_event=bridge.handle_event, **kwargs)
    bridge.manager = manager
    manager.bridge = bridge
    return manager
