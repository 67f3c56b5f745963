// The rooms page: the room list (#rooms) with unread badges, the open room (room.js) and its
// members panel.
//
// Unread counts: the newest message id seen in each room is kept in localStorage
// ("pal.seen", by room id). On load the counts come from /api/workbench/unread; a live
// `message` event for another room asks again for that room (bursts coalesce), so a count
// is always the server's. A browser that never opened the workbench starts with every room
// read; a room that appears later counts from its first message.

import { get, post } from "./api.js";
import { coalesce, h, replace, store } from "./dom.js";
import * as events from "./events.js";
import { loadRooms } from "./cache.js";
import { createRoomView } from "./room.js";

const SEEN_KEY = "pal.seen";
const MAX_READS = 1000; // per unread request

/** Mount the page for params {room, topic?, m?}. */
export function mount(root, params) {
  let rooms = [];
  const links = new Map(); // room name → {link, badge}
  const counts = new Map(); // room id → unread count
  const dirty = new Set(); // room ids whose count must be asked again
  const stored = store.get(SEEN_KEY, null);
  const firstVisit = stored === null || typeof stored !== "object";
  const seen = firstVisit ? {} : { ...stored };
  let unreadBusy = false;
  let listed = false; // the first room list is in: rooms new after it count from 0

  const nav = h("nav", { id: "rooms", "aria-label": "Rooms" });
  const newRoom = h("input", {
    type: "text",
    id: "new-room",
    "data-testid": "new-room",
    maxlength: 80,
    placeholder: "name, then Enter",
    autocomplete: "off",
    spellcheck: "false",
  });
  const side = h("aside", { id: "rooms-side", class: "sidebar", "aria-label": "Room list" },
    h("h2", { class: "side-title" }, "Rooms"),
    nav,
    h("label", { class: "field new-room", for: "new-room" }, h("span", {}, "New room"), newRoom),
    h("p", { class: "hint side-hint" }, "Alt+↑/↓ switches rooms"),
  );
  const view = createRoomView({
    onSeen(room, newestId) {
      if ((seen[room.id] ?? 0) < newestId) {
        seen[room.id] = newestId;
        saveSeen();
      }
      counts.set(room.id, 0);
      paintBadge(room.id);
    },
    onOpened(room) {
      markCurrent();
      if (!rooms.some((r) => r.id === room.id)) reloadRooms();
      setTitle();
    },
    onMissing: () => reloadRooms(),
  });
  const backdrop = h("div", {
    class: "backdrop",
    onclick: () => document.body.classList.remove("side-open", "members-open"),
  });
  root.append(h("div", { class: "rooms-layout" }, side, view.el, view.members.el, backdrop));

  newRoom.addEventListener("keydown", async (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    const name = newRoom.value.trim();
    if (!name) return;
    try {
      const data = await post("/api/rooms", { name });
      newRoom.value = "";
      seen[data.room.id] = 0;
      await reloadRooms();
      location.hash = `#/rooms/${encodeURIComponent(name)}`;
    } catch {
      // shown in the toast
    }
  });

  const onKey = (e) => {
    if (!e.altKey || (e.key !== "ArrowUp" && e.key !== "ArrowDown") || !rooms.length) return;
    if (e.target.matches?.("input, textarea") && e.target.value) return; // editing text
    e.preventDefault();
    const at = rooms.findIndex((r) => r.name === view.name());
    const next = rooms[(at + (e.key === "ArrowDown" ? 1 : rooms.length - 1)) % rooms.length];
    location.hash = `#/rooms/${encodeURIComponent(next.name)}`;
  };
  document.addEventListener("keydown", onKey);

  // -- the room list -----------------------------------------------------------------------

  async function reloadRooms() {
    let list;
    try {
      list = await loadRooms(true);
    } catch {
      return;
    }
    setRooms(list);
  }
  const reloadRoomsSoon = coalesce(reloadRooms, 200);

  function setRooms(list) {
    rooms = [...list].sort((a, b) => a.name.localeCompare(b.name));
    for (const room of rooms) {
      if (!(room.id in seen)) {
        // never seen: a new browser starts at the end; a room made since counts from 0
        seen[room.id] = firstVisit && !listed ? (room.last_message_id ?? 0) : 0;
        dirty.add(room.id);
      }
      if (!listed) dirty.add(room.id); // every count on load
    }
    listed = true;
    saveSeen();
    links.clear();
    replace(nav, h("ul", {}, rooms.map((room) => {
      const badge = h("span", { class: "unread", hidden: true, "aria-label": "unread messages" });
      const link = h("a", {
        href: `#/rooms/${encodeURIComponent(room.name)}`,
        dataset: { room: room.name },
      },
      h("span", { class: "hash", "aria-hidden": "true" }, "#"),
      h("span", { class: "room-name" }, room.name),
      room.kind === "lark" ? h("span", { class: "chip" }, "lark") : null,
      badge);
      links.set(room.name, { link, badge, room });
      return h("li", {}, link);
    })));
    for (const room of rooms) paintBadge(room.id);
    markCurrent();
    flushSoon();
  }

  function markCurrent() {
    const name = view.name() ?? params.room;
    for (const [roomName, { link }] of links) {
      if (roomName === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function paintBadge(roomId) {
    const room = rooms.find((r) => r.id === roomId);
    const entry = room && links.get(room.name);
    if (!entry) return;
    const open = view.room()?.id === roomId;
    const n = open ? 0 : counts.get(roomId) ?? 0;
    entry.badge.textContent = n ? (n >= 1000 ? "1000+" : String(n)) : "";
    entry.badge.hidden = !n;
    entry.link.classList.toggle("has-unread", n > 0);
    setTitle();
  }

  function setTitle() {
    let total = 0;
    for (const [id, n] of counts) if (view.room()?.id !== id) total += n;
    const name = view.name() ?? params.room;
    document.title = `${total ? `(${total}) ` : ""}#${name} · pal`;
  }

  // -- unread ------------------------------------------------------------------------------

  function saveSeen() {
    // another tab may have read rooms too: keep the larger id of each
    const other = store.get(SEEN_KEY, {});
    if (other && typeof other === "object") {
      for (const [id, value] of Object.entries(other)) {
        if (typeof value === "number" && value > (seen[id] ?? -1)) seen[id] = value;
      }
    }
    store.set(SEEN_KEY, seen);
  }

  async function flushUnread() {
    if (unreadBusy) return;
    const ids = [...dirty].filter((id) => view.room()?.id !== id).slice(0, MAX_READS);
    for (const id of dirty) if (view.room()?.id === id) dirty.delete(id);
    if (!ids.length) return;
    unreadBusy = true;
    const asked = new Map(ids.map((id) => [id, seen[id] ?? 0]));
    for (const id of ids) dirty.delete(id);
    try {
      const data = await get("/api/workbench/unread",
        { read: ids.map((id) => `${id}:${asked.get(id)}`) }, { quiet: true });
      for (const id of ids) {
        if ((seen[id] ?? 0) !== asked.get(id)) dirty.add(id); // read meanwhile: ask again
        else counts.set(id, data.unread[id] ?? 0);
        paintBadge(id);
      }
    } catch {
      for (const id of ids) dirty.add(id); // the next event or reconnect asks again
    } finally {
      unreadBusy = false;
    }
    if (dirty.size && [...dirty].some((id) => view.room()?.id !== id)) flushSoon();
  }
  const flushSoon = coalesce(flushUnread, 150);

  // -- live --------------------------------------------------------------------------------

  const unsubscribe = [
    events.on("message", (e) => {
      view.onMessage(e);
      if (view.room()?.id === e.room_id) return;
      if (!rooms.some((r) => r.id === e.room_id)) {
        reloadRoomsSoon();
        return;
      }
      if (e.message_id > (seen[e.room_id] ?? 0)) {
        dirty.add(e.room_id);
        flushSoon();
      }
    }),
    events.on("member", (e) => view.onMember(e)),
    events.on("assignment", () => view.onAssignment()),
    events.on("run", (e) => view.onRun(e)),
    events.onSync((kind) => {
      view.refresh(kind);
      if (kind === "resync") {
        for (const room of rooms) dirty.add(room.id);
        reloadRoomsSoon();
      }
    }),
  ];

  // -- start -------------------------------------------------------------------------------

  view.open(params.room, params);
  loadRooms(true).then(setRooms, () => {
    replace(nav, h("p", { class: "muted" }, "Could not load the rooms."));
  });
  // every room's count on load, in one request per MAX_READS rooms (flushUnread loops)

  return {
    update(next) {
      document.body.classList.remove("side-open", "members-open");
      params = next;
      view.open(next.room, next);
      markCurrent();
      return true;
    },
    unmount() {
      for (const off of unsubscribe) off();
      document.removeEventListener("keydown", onKey);
      view.close();
      document.body.classList.remove("side-open", "members-open");
    },
  };
}
