// One room: its messages (#messages), topic picker, composer and members panel.
//
// A room of any size opens with one request for its newest page (before=<largest id>), and
// pages back with before=<oldest shown> when scrolled near the top, keeping the view where it
// was. Live `message` events for the room trigger a catch-up read of what came after the
// newest id read so far (after=<cursor>): bursts coalesce into one request, order is kept,
// and a message already shown (say, one this page just sent) is never shown twice. The list
// holds at most MAX_SHOWN messages; the oldest go when more arrive while reading the end.

import { ApiError, get, post, seg } from "./api.js";
import { coalesce, h, replace } from "./dom.js";
import { createComposer } from "./composer.js";
import { createMembers } from "./members.js";
import { regroup, rememberMessage, renderMessage } from "./messages.js";

const PAGE = 50;
const CATCH_UP_PAGE = 200;
const MAX_SHOWN = 1500;
const KEEP_AFTER_TRIM = 1200;
const NEAR_TOP = 400;
const NEAR_BOTTOM = 48;
const NEWEST = "9223372036854775807"; // before= this: the newest page

/** A page of messages (GET /api/messages), in id order. */
function page(params, options = { quiet: true }) {
  return get("/api/messages", params, options).then((data) => data.messages);
}

/**
 * The room view. `hooks`: {onSeen(room, newestId) — messages up to newestId were shown,
 * onOpened(room), onMissing(name)}. Returns {el, members, open(name, params), refresh(kind),
 * onMessage(event), onMember(event), onAssignment(), onRun(event), close()}.
 */
export function createRoomView(hooks) {
  let room = null;
  let topics = new Map();
  let topic = null;
  let byId = new Map(); // id → {m, el}
  let oldest = null;
  let newest = null;
  let cursor = 0;
  let reachedStart = false;
  let atEnd = true;
  let loadingOlder = false;
  let loadingNewer = false;
  let catching = false;
  let catchAgain = false;
  let stick = true;
  let unseen = 0;
  let mentionables = [];
  let generation = 0;
  let pending = false; // a live event or reconnect came while the room was loading
  const drafts = new Map();

  const title = h("h1", { id: "room-title" }, "");
  const topicSelect = h("select", { "data-testid": "topic", id: "topic" });
  const newTopicInput = h("input", {
    type: "text",
    "data-testid": "new-topic",
    maxlength: 200,
    placeholder: "Topic title, then Enter",
    "aria-label": "New topic title",
    hidden: true,
  });
  const newTopicButton = h("button", {
    type: "button",
    class: "small-btn",
    "data-testid": "new-topic-button",
    onclick: () => {
      newTopicInput.hidden = !newTopicInput.hidden;
      if (!newTopicInput.hidden) newTopicInput.focus();
    },
  }, "New topic");
  const list = h("div", {
    id: "messages",
    role: "log",
    "aria-live": "polite",
    "aria-relevant": "additions",
    "aria-labelledby": "room-title",
    tabindex: "0",
  });
  const jump = h("button", { type: "button", class: "jump-newest", hidden: true }, "Newest ↓");
  const members = createMembers(() => room);
  const composer = createComposer({
    room: () => room?.name,
    topic: () => topic,
    mentionables: () => mentionables,
    onSent,
  });
  const head = h("header", { class: "room-head" },
    h("button", {
      type: "button",
      class: "side-toggle",
      "aria-controls": "rooms-side",
      onclick: () => document.body.classList.toggle("side-open"),
    }, "Rooms"),
    title,
    h("div", { class: "topic-picker" },
      h("label", { for: "topic", class: "small-label" }, "Topic"),
      topicSelect, newTopicButton, newTopicInput),
    h("button", {
      type: "button",
      class: "members-toggle",
      "aria-controls": "members",
      onclick: () => document.body.classList.toggle("members-open"),
    }, "Members"),
  );
  const el = h("section", { class: "room", "aria-labelledby": "room-title" },
    head,
    h("div", { class: "room-body" }, list, jump),
    composer.el,
  );

  list.addEventListener("scroll", onScroll, { passive: true });
  new ResizeObserver(() => {
    if (stick) toBottom();
  }).observe(list);
  jump.addEventListener("click", () => {
    if (!atEnd && room) open(room.name, {});
    else toBottom();
  });
  topicSelect.addEventListener("change", () => {
    const value = topicSelect.value;
    location.hash = `#/rooms/${encodeURIComponent(room.name)}${value ? `?topic=${value}` : ""}`;
  });
  newTopicInput.addEventListener("keydown", async (e) => {
    if (e.key === "Escape") {
      newTopicInput.hidden = true;
      newTopicButton.focus();
      return;
    }
    if (e.key !== "Enter" || !newTopicInput.value.trim() || !room) return;
    e.preventDefault();
    const sender = document.querySelector("[data-testid=sender]")?.value.trim() || null;
    try {
      const data = await post(`/api/rooms/${seg(room.name)}/topics`,
        { title: newTopicInput.value.trim(), created_by: sender });
      newTopicInput.value = "";
      newTopicInput.hidden = true;
      topics.set(data.topic.id, data.topic);
      location.hash = `#/rooms/${encodeURIComponent(room.name)}?topic=${data.topic.id}`;
    } catch {
      // shown in the toast
    }
  });
  document.addEventListener("visibilitychange", markSeen);

  const reloadTopics = coalesce(() => loadTopics().catch(() => {}), 100);
  const reloadMentionables = coalesce(() => loadMentionables().catch(() => {}), 200);

  // -- opening -----------------------------------------------------------------------------

  async function open(name, params = {}) {
    if (room && room.name !== name) drafts.set(room.name, composer.draft());
    generation += 1;
    const mine = generation;
    room = null;
    topic = params.topic ? Number(params.topic) : null;
    byId = new Map();
    oldest = newest = null;
    cursor = 0;
    reachedStart = false;
    atEnd = true;
    loadingOlder = loadingNewer = catching = catchAgain = false;
    stick = true;
    unseen = 0;
    mentionables = [];
    pending = false;
    jump.hidden = true;
    title.textContent = `# ${name}`;
    composer.reset(drafts.get(name) || "");
    replace(list, h("p", { class: "placeholder" }, "Loading…"));
    list.setAttribute("aria-live", "off"); // a page of history is not news: no announcing it

    const around = params.m ? Number(params.m) : null;
    const base = { room: name, topic: around ? null : topic };
    const pages = around
      ? [page({ ...base, before: around + 1, limit: PAGE / 2 }, { quiet: true }),
        page({ ...base, after: around, limit: PAGE / 2 }, { quiet: true })]
      : [page({ ...base, before: NEWEST, limit: PAGE }, { quiet: true })];
    const info = get(`/api/rooms/${seg(name)}`, undefined, { quiet: true });
    let loaded;
    try {
      loaded = await Promise.all([info, ...pages]);
    } catch (err) {
      if (mine !== generation) return;
      list.setAttribute("aria-live", "polite");
      if (err instanceof ApiError && err.status === 404) {
        showMissing(name);
      } else {
        replace(list, h("p", { class: "placeholder error" }, `Could not load #${name}: ${err.message}`));
      }
      return;
    }
    if (mine !== generation) return;
    const [data, older, newer = []] = loaded;
    room = data.room;
    setTopics(data.topics);
    if (around) {
      topic = null;
      topicSelect.value = "";
    }
    replace(list);
    reachedStart = older.length < (around ? PAGE / 2 : PAGE);
    atEnd = !around || newer.length < PAGE / 2;
    jump.textContent = "Newest ↓";
    jump.hidden = atEnd;
    add([...older, ...newer]);
    requestAnimationFrame(() => list.setAttribute("aria-live", "polite"));
    cursor = newest ?? 0;
    if (!byId.size) showEmpty();
    if (reachedStart) showStart();
    if (around && byId.has(around)) focusMessage(around);
    else toBottom();
    markSeen();
    hooks.onOpened?.(room);
    members.open();
    loadMentionables().catch(() => {});
    maybeLoadOlder();
    if (pending && atEnd) catchUp();
  }

  function setTopics(items) {
    topics = new Map(items.map((t) => [t.id, t]));
    const options = [h("option", { value: "" }, "All topics"),
      ...items.map((t) => h("option", { value: String(t.id) }, t.title))];
    replace(topicSelect, options);
    topicSelect.value = topic && topics.has(topic) ? String(topic) : "";
    for (const tag of list.querySelectorAll(".topic-tag[data-topic]")) {
      const known = topics.get(Number(tag.dataset.topic));
      if (known) tag.textContent = known.title;
    }
  }

  async function loadTopics() {
    if (!room) return;
    const mine = generation;
    const data = await get(`/api/rooms/${seg(room.name)}/topics`, undefined, { quiet: true });
    if (mine === generation) setTopics(data.topics);
  }

  async function loadMentionables() {
    const name = room?.name;
    if (!name) return;
    const mine = generation;
    const data = await get(`/api/rooms/${seg(name)}/mentionables`, undefined, { quiet: true });
    if (mine !== generation) return;
    mentionables = data.mentionables;
    composer.mentionablesChanged();
  }

  function showMissing(name) {
    replace(list, h("div", { class: "placeholder" },
      h("p", {}, `There is no room named “${name}”.`),
      h("button", {
        type: "button",
        class: "primary",
        onclick: async () => {
          try {
            await post("/api/rooms", { name });
            hooks.onMissing?.(name);
            open(name);
          } catch {
            // shown in the toast
          }
        },
      }, `Create #${name}`)));
  }

  function showEmpty() {
    list.prepend(h("p", { class: "placeholder empty-room" },
      topic ? "No messages in this topic yet." : "No messages yet. Say hello below."));
  }

  function showStart() {
    list.querySelector(".start-marker")?.remove();
    if (!byId.size) return;
    list.prepend(h("p", { class: "start-marker" },
      topic ? `The beginning of this topic in #${room.name}` : `The beginning of #${room.name}`));
  }

  // -- rendering ---------------------------------------------------------------------------

  const ctx = {
    topicTitle(id) {
      if (topic) return null; // the picker says which topic this is
      const known = topics.get(id);
      if (!known) reloadTopics();
      return known ? known.title : `topic ${id}`;
    },
    known: (id) => byId.get(id)?.m,
    onReply: (m) => composer.setReply(m),
    onJump: (id) => jumpTo(id),
  };

  function render(m) {
    const el = renderMessage(m, ctx);
    const tag = el.querySelector(".topic-tag");
    if (tag) tag.dataset.topic = m.topic_id;
    rememberMessage(m);
    return el;
  }

  /** Add messages (any order) to the list in id order; returns how many were new. */
  function add(items) {
    const fresh = items.filter((m) => !byId.has(m.id)).sort((a, b) => a.id - b.id);
    if (!fresh.length) return 0;
    list.querySelector(".empty-room")?.remove();
    const inserted = [];
    if (oldest !== null && fresh[fresh.length - 1].id < oldest) {
      // a whole page of older messages: one insertion at the top
      const fragment = document.createDocumentFragment();
      for (const m of fresh) {
        const el = render(m);
        byId.set(m.id, { m, el });
        fragment.append(el);
        inserted.push(el);
      }
      byId.get(oldest).el.before(fragment);
    } else {
      for (const m of fresh) {
        const el = render(m);
        byId.set(m.id, { m, el });
        if (newest === null || m.id > newest) list.append(el);
        else insertSorted(m.id, el);
        inserted.push(el);
      }
    }
    for (const el of inserted) {
      regroup(el);
      regroup(el.nextElementSibling);
    }
    oldest = oldest === null ? fresh[0].id : Math.min(oldest, fresh[0].id);
    newest = newest === null ? fresh[fresh.length - 1].id : Math.max(newest, fresh[fresh.length - 1].id);
    return fresh.length;
  }

  function insertSorted(id, el) {
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (node.classList.contains("message") && Number(node.dataset.id) < id) {
        node.after(el);
        return;
      }
    }
    const first = list.querySelector(".message");
    if (first) first.before(el);
    else list.append(el);
  }

  /** Keep the list to MAX_SHOWN messages by dropping the oldest (only when at the end). */
  function trim() {
    if (byId.size <= MAX_SHOWN) return;
    const ids = [...byId.keys()].sort((a, b) => a - b);
    for (const id of ids.slice(0, ids.length - KEEP_AFTER_TRIM)) {
      byId.get(id).el.remove();
      byId.delete(id);
    }
    oldest = ids[ids.length - KEEP_AFTER_TRIM];
    regroup(byId.get(oldest).el);
    reachedStart = false;
    list.querySelector(".start-marker")?.remove();
  }

  // -- scrolling and paging ----------------------------------------------------------------

  function isAtBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_BOTTOM;
  }

  function toBottom() {
    list.scrollTop = list.scrollHeight;
    stick = true;
    unseen = 0;
    jump.hidden = atEnd;
  }

  function onScroll() {
    stick = isAtBottom();
    if (stick && atEnd) {
      unseen = 0;
      jump.hidden = true;
    }
    if (list.scrollTop < NEAR_TOP) loadOlder();
    if (!atEnd && list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_TOP) loadNewer();
  }

  function maybeLoadOlder() {
    if (room && !reachedStart && list.scrollTop < NEAR_TOP) loadOlder();
  }

  async function loadOlder() {
    if (!room || loadingOlder || reachedStart || oldest === null) return;
    loadingOlder = true;
    const mine = generation;
    const spinner = h("p", { class: "placeholder loading-older" }, "Loading older messages…");
    list.prepend(spinner);
    list.setAttribute("aria-live", "off");
    try {
      const older = await page(
        { room: room.name, topic, before: oldest, limit: PAGE }, { quiet: true });
      if (mine !== generation) return;
      spinner.remove();
      const height = list.scrollHeight;
      const top = list.scrollTop;
      add(older);
      list.scrollTop = top + (list.scrollHeight - height);
      if (older.length < PAGE) {
        reachedStart = true;
        showStart();
      }
    } catch {
      spinner.remove();
    } finally {
      if (mine === generation) {
        loadingOlder = false;
        requestAnimationFrame(() => list.setAttribute("aria-live", "polite"));
      }
    }
    if (mine === generation) requestAnimationFrame(maybeLoadOlder);
  }

  async function loadNewer() {
    if (!room || loadingNewer || atEnd || newest === null) return;
    loadingNewer = true;
    const mine = generation;
    try {
      const newer = await page(
        { room: room.name, topic, after: newest, limit: PAGE }, { quiet: true });
      if (mine !== generation) return;
      add(newer);
      cursor = newest ?? cursor;
      if (newer.length < PAGE) {
        atEnd = true;
        jump.hidden = true;
        catchUp();
      }
      markSeen();
    } catch {
      // try again on the next scroll
    } finally {
      if (mine === generation) loadingNewer = false;
    }
  }

  /** Read what came after `cursor` (live events, or a reconnect) and show it. */
  async function catchUp() {
    if (!room || !atEnd) return;
    if (catching) {
      catchAgain = true;
      return;
    }
    catching = true;
    const mine = generation;
    try {
      let added = 0;
      for (let round = 0; round < 5; round += 1) {
        catchAgain = false;
        const wasAtBottom = isAtBottom();
        const items = await page(
          { room: room.name, topic, after: cursor, limit: CATCH_UP_PAGE }, { quiet: true });
        if (mine !== generation) return;
        const count = add(items);
        added += count;
        if (items.length) cursor = Math.max(cursor, items[items.length - 1].id);
        if (wasAtBottom || stick) {
          trim();
          toBottom();
        } else if (count) {
          unseen += count;
          jump.textContent = `${unseen} new ↓`;
          jump.hidden = false;
        }
        if (items.length < CATCH_UP_PAGE && !catchAgain) break;
      }
      if (added) markSeen();
    } catch {
      // the next event or reconnect tries again
    } finally {
      if (mine === generation) catching = false;
    }
    if (mine === generation && catchAgain) catchUp();
  }

  function jumpTo(id) {
    if (byId.has(id)) focusMessage(id);
    else location.hash = `#/rooms/${encodeURIComponent(room.name)}?m=${id}`;
  }

  function focusMessage(id) {
    const { el } = byId.get(id);
    el.scrollIntoView({ block: "center" });
    stick = isAtBottom();
    el.classList.remove("flash");
    void el.offsetWidth; // restart the animation
    el.classList.add("flash");
  }

  function markSeen() {
    if (room && newest !== null && document.visibilityState === "visible") {
      hooks.onSeen?.(room, newest);
    }
  }

  function onSent(message) {
    if (!room || message.room_id !== room.id) return;
    if (!atEnd) {
      open(room.name, {});
      return;
    }
    if (topic && message.topic_id !== topic) return;
    add([message]);
    trim();
    toBottom();
    markSeen();
  }

  return {
    el,
    members,
    open,
    name: () => room?.name ?? null,
    room: () => room,
    /** After a reconnect (`hello`) or lost events (`resync`): re-read what is shown. */
    refresh(kind) {
      if (!room) {
        pending = true;
        return;
      }
      catchUp();
      if (kind === "resync") {
        loadTopics().catch(() => {});
        members.open();
        loadMentionables().catch(() => {});
      }
    },
    onMessage(event) {
      if (!room) pending = true;
      else if (event.room_id === room.id) catchUp();
    },
    onMember(event) {
      if (room && event.room_id === room.id) {
        members.reloadMembers();
        reloadMentionables();
      }
    },
    onAssignment() {
      members.reloadAgents();
      reloadMentionables();
    },
    onRun(event) {
      if (room && event.room_id === room.id) members.reloadRunning();
    },
    close() {
      generation += 1;
      document.removeEventListener("visibilitychange", markSeen);
    },
  };
}
