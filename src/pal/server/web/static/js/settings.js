// The settings page (#/settings, #/settings?tab=lark), admin only like the API behind it:
//
//   Access     the Lark users whose messages reach agents (GET/POST/DELETE /api/lark-users)
//   Lark bots  each bot of lark.json and its connection (GET /api/lark), why the file was
//              refused (its `error`), "Reload lark.json" (POST /api/lark/reload), and the
//              events the bots received with their outcome (GET /api/lark/events)
//
// A live `lark_event` re-reads the events and the bots (their counters). Connection states
// change without an event, so the page also re-reads the bots every POLL_MS while it is open
// (rows change in place; focus stays where it is).

import { ApiError, del, get, post, seg, toast } from "./api.js";
import { ago, coalesce, field, h, replace, select, timeEl } from "./dom.js";
import * as events from "./events.js";

const POLL_MS = 5000;
const EVENTS_LIMIT = 50;
const TABS = [
  { id: "access", label: "Access" },
  { id: "lark", label: "Lark bots" },
];
const USER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/** Mount the page for params {tab?}. */
export function mount(root, params) {
  let closed = false;
  let tab = tabOf(params);
  let focusAfterShow = null; // the field to focus once the next tab shows

  document.title = "Settings · pal";
  const tabButtons = new Map(); // tab id → its tab button
  const panels = new Map(); // tab id → its panel
  const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Settings" });
  for (const { id, label } of TABS) {
    const button = h("button", {
      type: "button", role: "tab", id: `tab-${id}`, "aria-controls": `panel-${id}`,
      "data-testid": `tab-${id}`, onclick: () => choose(id),
    }, label, h("span", { class: "tab-note", hidden: true }));
    tabButtons.set(id, button);
    tablist.append(button);
  }
  tablist.addEventListener("keydown", (e) => {
    const ids = TABS.map((t) => t.id);
    const at = ids.indexOf(tab);
    const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: ids.length - 1 }[e.key];
    if (next === undefined) return;
    e.preventDefault();
    const target = ids[(next + ids.length) % ids.length];
    choose(target);
    tabButtons.get(target).focus();
  });

  const access = accessPanel();
  const lark = larkPanel();
  panels.set("access", access.panel);
  panels.set("lark", lark.panel);
  root.append(h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "Settings")),
    tablist,
    access.panel,
    lark.panel));
  show();

  /** Switch tabs through the hash, so each tab has a link (update() then shows it). */
  function choose(id) {
    if (id === tab) return;
    location.hash = id === "access" ? "#/settings" : `#/settings?tab=${id}`;
  }

  function show() {
    for (const [id, button] of tabButtons) {
      const selected = id === tab;
      button.setAttribute("aria-selected", String(selected));
      button.tabIndex = selected ? 0 : -1;
      panels.get(id).hidden = !selected;
    }
  }

  // -- Access: the authorized Lark users ------------------------------------------------------

  function accessPanel() {
    const rows = new Map(); // user_id → {tr, sig, local}
    // Bumped by every change made here; a load that started before it must neither drop a
    // user just added nor bring back one just deleted.
    let writes = 0;
    const deleted = new Map(); // user_id → the write that deleted it
    const body = h("tbody");
    const table = h("table", { id: "lark-users", class: "grid stack" },
      h("caption", { class: "visually-hidden" }, "Authorized Lark users"),
      h("thead", {}, h("tr", {},
        ["User ID", "Name", "Added", ""].map((t) => h("th", { scope: "col" }, t)))),
      body);
    const empty = h("p", { class: "placeholder", hidden: true },
      "No Lark users are authorized yet: messages from Lark reach no agent until you add "
      + "someone below.");
    const userId = h("input", { type: "text", id: "lark-user-id", "data-testid": "lark-user-id",
      maxlength: 100, autocomplete: "off", spellcheck: "false", placeholder: "on_1a2b3c",
      "aria-describedby": "lark-user-hint" });
    const name = h("input", { type: "text", id: "lark-user-name", "data-testid": "lark-user-name",
      maxlength: 120, autocomplete: "off", placeholder: "Alice" });
    const add = h("button", { type: "submit", class: "primary", "data-testid": "add-lark-user" },
      "Authorize");
    const form = h("form", { class: "card create-form", novalidate: true,
      "aria-labelledby": "lark-user-title" },
    h("h2", { id: "lark-user-title" }, "Authorize a Lark user"),
    h("div", { class: "form-grid" },
      field("User ID", userId, { for: "lark-user-id" }),
      field("Name", name, { for: "lark-user-name" })),
    h("p", { class: "hint", id: "lark-user-hint" },
      "The sender's union_id (on_…, the same in every bot: best), open_id (ou_…, one bot "
      + "only) or user_id: 1-100 letters, digits, _, - or . To find it, have them message a "
      + "bot and look for the unauthorized event under Lark bots. Adding an ID that is "
      + "already here renames it."),
    h("div", { class: "buttons" }, add));
    const panel = h("div", { role: "tabpanel", id: "panel-access", "aria-labelledby": "tab-access",
      class: "tab-panel" },
    h("p", { class: "hint lead" },
      "Only these Lark users' messages reach agents; a message from anyone else is recorded "
      + "as an unauthorized event and goes nowhere. The list is the same for every bot."),
    h("div", { class: "table-wrap" }, table),
    empty,
    form);

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const id = userId.value.trim();
      const who = name.value.trim();
      const problem = !id ? [userId, "Enter the user's ID (on_…, ou_… or a user_id)."]
        : !USER_ID.test(id) ? [userId, `User ID “${id}” is not valid: use 1-100 letters, `
          + "digits, _, - or . and start with a letter or digit (no spaces)."]
          : !who ? [name, "Enter a name, so you can tell who this is."] : null;
      for (const input of [userId, name]) input.removeAttribute("aria-invalid");
      if (problem) {
        problem[0].setAttribute("aria-invalid", "true");
        problem[0].focus();
        toast(problem[1]);
        return;
      }
      add.disabled = true;
      try {
        const data = await post("/api/lark-users", { user_id: id, name: who });
        deleted.delete(data.user.user_id);
        upsert(data.user, ++writes);
        empty.hidden = true;
        toast(data.created ? `Authorized ${data.user.name} (${data.user.user_id})`
          : `Renamed ${data.user.user_id} to ${data.user.name}`, "info");
        userId.value = name.value = "";
        userId.focus();
      } catch {
        // shown in the toast
      } finally {
        add.disabled = false;
      }
    });

    async function load() {
      const started = writes;
      const data = await get("/api/lark-users", undefined, { quiet: rows.size > 0 });
      if (closed) return;
      const ids = new Set(data.users.map((u) => u.user_id));
      for (const [id, entry] of rows) {
        if (!ids.has(id) && entry.local <= started) {
          entry.tr.remove();
          rows.delete(id);
        }
      }
      for (const user of data.users) {
        const local = Math.max(rows.get(user.user_id)?.local ?? 0, deleted.get(user.user_id) ?? 0);
        if (local <= started) upsert(user);
      }
      empty.hidden = rows.size > 0;
    }

    /** Add or update a user's row (kept sorted by user_id, as the API sorts them). */
    function upsert(user, local = 0) {
      const sig = JSON.stringify(user);
      const known = rows.get(user.user_id);
      if (known && known.sig === sig) {
        known.local = Math.max(local, known.local);
        return;
      }
      if (known && known.tr.contains(document.activeElement)) return;
      const tr = userRow(user);
      if (known) known.tr.replaceWith(tr);
      else {
        const after = [...rows.keys()].filter((k) => k < user.user_id).sort().pop();
        if (after) rows.get(after).tr.after(tr);
        else body.prepend(tr);
      }
      rows.set(user.user_id, { tr, sig, local: Math.max(local, known?.local ?? 0) });
    }

    function userRow(user) {
      return h("tr", { dataset: { user: user.user_id } },
        h("th", { scope: "row" }, h("span", { class: "mono" }, user.user_id)),
        h("td", { "data-label": "Name" }, user.name),
        h("td", { "data-label": "Added" }, timeEl(user.created_at)),
        h("td", { class: "row-actions" }, h("button", {
          type: "button", class: "small-btn danger-text", "aria-label": `Delete ${user.user_id}`,
          "data-testid": `delete-user-${user.user_id}`, onclick: () => remove(user),
        }, "Delete")));
    }

    async function remove(user) {
      if (!window.confirm(`Stop authorizing ${user.name} (${user.user_id})? Their Lark `
        + "messages will no longer reach agents.")) return;
      try {
        await del(`/api/lark-users/${seg(user.user_id)}`);
        deleted.set(user.user_id, ++writes);
        dropRow(user.user_id);
        toast(`${user.name} (${user.user_id}) is no longer authorized`, "info");
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          deleted.set(user.user_id, ++writes);
          dropRow(user.user_id);
        }
      }
    }

    function dropRow(id) {
      const entry = rows.get(id);
      if (entry) {
        // keep the keyboard where it was: on the next row's button, or the form
        const next = entry.tr.nextElementSibling ?? entry.tr.previousElementSibling;
        const hadFocus = entry.tr.contains(document.activeElement);
        entry.tr.remove();
        rows.delete(id);
        if (hadFocus) (next?.querySelector("button") ?? userId).focus();
      }
      empty.hidden = rows.size > 0;
    }

    /** Fill the form with a sender's id (from an unauthorized event); returns the name field. */
    function prefill(id) {
      for (const input of [userId, name]) input.removeAttribute("aria-invalid");
      userId.value = id;
      name.value = "";
      return name;
    }

    return { panel, load, prefill };
  }

  // -- Lark bots: the connections, reload, and the events received ----------------------------

  function larkPanel() {
    const bots = new Map(); // app_id → {bot, tr, sig}
    const shown = new Map(); // event id → its row
    let filter = "";

    const configPath = h("code", { "data-testid": "lark-config-path" });
    const reload = h("button", { type: "button", "data-testid": "reload-lark",
      onclick: reloadFile }, "Reload lark.json");
    const refused = h("div", { class: "config-error", role: "alert", hidden: true,
      "data-testid": "lark-config-error" });
    const body = h("tbody");
    const table = h("table", { id: "lark-bots", class: "grid stack" },
      h("caption", { class: "visually-hidden" }, "Lark bots"),
      h("thead", {}, h("tr", {},
        ["Bot", "Agent", "Open ID", "Secret", "State", "Connected", "Last frame", "Events",
          "Reconnects"].map((t) => h("th", { scope: "col" }, t)))),
      body);
    const noBots = h("p", { class: "placeholder", hidden: true });

    const botFilter = select({ id: "lark-events-bot", "data-testid": "lark-events-bot" },
      [["", "All bots"]], "");
    const eventsBody = h("tbody");
    const eventsTable = h("table", { id: "lark-events", class: "grid stack" },
      h("caption", { class: "visually-hidden" }, "Lark events, newest first"),
      h("thead", {}, h("tr", {},
        ["Received", "Bot", "Type", "Chat", "Sender", "Outcome", "Detail"]
          .map((t) => h("th", { scope: "col" }, t)))),
      eventsBody);
    const noEvents = h("p", { class: "placeholder", hidden: true }, "No Lark events yet.");

    const panel = h("div", { role: "tabpanel", id: "panel-lark", "aria-labelledby": "tab-lark",
      class: "tab-panel" },
    h("div", { class: "row lark-head" },
      h("p", { class: "hint lead grow" }, "The bots of ", configPath,
        ", one long connection each. Edit the file (or bind bots with ",
        h("code", {}, "pal console agents update --lark-app-id …"),
        "), then reload it: an invalid file is refused and the running bots keep running."),
      reload),
    refused,
    h("div", { class: "table-wrap" }, table),
    noBots,
    h("div", { class: "row events-head" },
      h("h2", { id: "lark-events-title", class: "grow" }, "Recent events"),
      h("label", { class: "field inline", for: "lark-events-bot" },
        h("span", {}, "Bot"), botFilter)),
    h("div", { class: "table-wrap" }, eventsTable),
    noEvents);

    botFilter.addEventListener("change", () => {
      filter = botFilter.value;
      eventsBody.replaceChildren();
      shown.clear();
      loadEvents().catch(() => {});
    });

    async function reloadFile() {
      reload.disabled = true;
      try {
        const data = await post("/api/lark/reload");
        paint(data);
        toast(`lark.json reloaded: ${data.bots.length} bot${data.bots.length === 1 ? "" : "s"}`,
          "info");
      } catch (err) {
        // The 422's message is in the toast; the status now carries it as `error` too.
        if (err instanceof ApiError && err.status === 422) loadStatus().catch(() => {});
      } finally {
        reload.disabled = false;
      }
    }

    async function loadStatus() {
      const data = await get("/api/lark", undefined, { quiet: true });
      if (!closed) paint(data);
    }

    function paint(status) {
      configPath.textContent = status.config;
      if (status.error) {
        replace(refused,
          h("strong", {}, "lark.json was refused: "), status.error,
          h("p", { class: "small" }, status.bots.length
            ? "The bots below are the ones still running, from the last valid file. "
              + "Fix the file, then press Reload."
            : "Lark is off until the file is fixed and reloaded."));
      }
      refused.hidden = !status.error;
      const ids = new Set(status.bots.map((b) => b.app_id));
      for (const [id, entry] of bots) {
        if (!ids.has(id)) {
          entry.tr.remove();
          bots.delete(id);
        }
      }
      for (const bot of status.bots) upsertBot(bot);
      // Keep the rows in the file's order.
      status.bots.forEach((bot, i) => {
        const tr = bots.get(bot.app_id).tr;
        if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] ?? null);
      });
      noBots.hidden = status.bots.length > 0 || Boolean(status.error);
      noBots.textContent = `No Lark bots in ${status.config}. Bind one with: pal console agents `
        + "update --key KEY --lark-app-id APP_ID --lark-app-secret SECRET";
      fillFilter(status.bots);
      note(status);
    }

    /** Add or update a bot's row; only "last frame" changes on every poll. */
    function upsertBot(bot) {
      const { last_frame_at: frame, ...rest } = bot;
      const sig = JSON.stringify(rest);
      const known = bots.get(bot.app_id);
      if (known && known.sig === sig) {
        known.bot = bot;
        paintFrame(known.tr, frame);
        return;
      }
      const tr = botRow(bot);
      if (known) known.tr.replaceWith(tr);
      else body.append(tr);
      bots.set(bot.app_id, { bot, tr, sig });
    }

    function botRow(b) {
      const tr = h("tr", { dataset: { bot: b.app_id, state: b.state } },
        h("th", { scope: "row" },
          h("div", {}, b.label || b.app_id),
          b.label ? h("div", { class: "muted small mono" }, b.app_id) : null,
          h("div", { class: "muted small" }, b.domain)),
        h("td", { "data-label": "Agent" },
          b.agent ? h("a", { href: "#/agents" }, b.agent)
            : h("span", { class: "muted", title: "bound to no agent" }, "none")),
        h("td", { "data-label": "Open ID", class: "mono small" },
          b.open_id || h("span", { class: "muted" }, "—")),
        h("td", { "data-label": "Secret", class: "mono small" }, b.app_secret),
        h("td", { "data-label": "State" }, h("div", { class: "cell-stack bot-state" },
          h("span", { class: `status status-${b.state}`, "data-testid": `state-${b.app_id}` },
            b.state),
          b.error ? h("div", { class: "bot-error small", "data-testid": `error-${b.app_id}` },
            b.error) : null)),
        h("td", { "data-label": "Connected" }, timeEl(b.connected_at)),
        h("td", { class: "frame", "data-label": "Last frame" }),
        h("td", { class: "num", "data-label": "Events", "data-testid": `events-${b.app_id}` },
          b.events_received ?? 0),
        h("td", { class: "num", "data-label": "Reconnects" }, b.reconnects ?? 0));
      paintFrame(tr, b.last_frame_at);
      return tr;
    }

    function paintFrame(tr, at) {
      const cell = tr.querySelector(".frame");
      if (!cell) return;
      cell.textContent = ago(at);
      cell.title = at ? new Date(at).toLocaleString() : "no frame received yet";
    }

    function fillFilter(list) {
      const options = [["", "All bots"], ...list.map((b) => [b.app_id, b.label
        ? `${b.label} (${b.app_id})` : b.app_id])];
      if (filter && !list.some((b) => b.app_id === filter)) options.push([filter, filter]);
      const sig = JSON.stringify(options);
      if (botFilter.dataset.sig === sig) return;
      botFilter.dataset.sig = sig;
      replace(botFilter, options.map(([v, l]) => h("option", { value: v }, l)));
      botFilter.value = filter;
    }

    /** A word on the tab itself, so a refused file or a failed bot shows from the Access tab. */
    function note(status) {
      const failed = status.bots.filter((b) => b.state === "failed").length;
      const text = status.error ? "file refused" : failed ? `${failed} failed` : "";
      const el = tabButtons.get("lark").querySelector(".tab-note");
      el.textContent = text;
      el.hidden = !text;
    }

    async function loadEvents() {
      const asked = filter;
      const data = await get("/api/lark/events", { limit: EVENTS_LIMIT, app_id: asked || null },
        { quiet: true });
      if (closed || asked !== filter) return;
      const ids = new Set(data.events.map((e) => e.id));
      for (const [id, tr] of shown) {
        if (!ids.has(id)) {
          tr.remove();
          shown.delete(id);
        }
      }
      // Newest first: rows already shown stay put (an open payload stays open); new ones go
      // in front of the first older row.
      let anchor = null;
      for (const event of [...data.events].reverse()) {
        const known = shown.get(event.id);
        if (known) {
          anchor = known;
          continue;
        }
        const tr = eventRow(event);
        if (anchor) anchor.before(tr);
        else eventsBody.append(tr);
        anchor = tr;
        shown.set(event.id, tr);
      }
      noEvents.hidden = shown.size > 0;
    }

    function eventRow(e) {
      const chat = [e.chat_type, e.chat_id].filter(Boolean).join(" · ");
      return h("tr", { dataset: { event: e.id, outcome: e.outcome } },
        h("th", { scope: "row" }, timeEl(e.received_at)),
        h("td", { "data-label": "Bot", class: "mono small" }, e.app_id),
        h("td", { "data-label": "Type", class: "mono small" },
          e.event_type || h("span", { class: "muted" }, "—")),
        h("td", { "data-label": "Chat", class: "mono small" },
          chat || h("span", { class: "muted" }, "—")),
        h("td", { "data-label": "Sender", class: "mono small" },
          e.sender_id || h("span", { class: "muted" }, "—")),
        h("td", { "data-label": "Outcome" },
          h("span", { class: `status status-${e.outcome}` }, e.outcome)),
        h("td", { "data-label": "Detail", class: "wide-cell" }, h("div", { class: "cell-stack" },
          e.detail ? h("span", {}, e.detail) : null,
          e.outcome === "unauthorized" && e.sender_id ? h("button", {
            type: "button", class: "small-btn", "data-testid": `authorize-${e.id}`,
            "aria-label": `Authorize sender ${e.sender_id}`,
            onclick: () => {
              focusAfterShow = access.prefill(e.sender_id);
              choose("access");
            },
          }, "Authorize this sender…") : null,
          h("details", {}, h("summary", {}, "Payload"),
            h("pre", { class: "payload" }, JSON.stringify(e.payload, null, 2))))));
    }

    function tick() {
      for (const { tr, bot } of bots.values()) paintFrame(tr, bot.last_frame_at);
    }

    return { panel, loadStatus, loadEvents, tick };
  }

  // -- loading ----------------------------------------------------------------------------

  function loadAll() {
    access.load().catch(() => {});
    lark.loadStatus().catch(() => {});
    lark.loadEvents().catch(() => {});
  }
  const onLarkEvent = coalesce(() => {
    lark.loadEvents().catch(() => {});
    lark.loadStatus().catch(() => {});
  }, 200);

  const poll = setInterval(() => {
    if (document.visibilityState !== "visible") return;
    lark.loadStatus().catch(() => {});
    if (tab === "access") access.load().catch(() => {});
  }, POLL_MS);
  const ticker = setInterval(lark.tick, 1000);
  const unsubscribe = [events.on("lark_event", onLarkEvent), events.onSync(loadAll)];
  loadAll();

  return {
    update(next) {
      tab = tabOf(next);
      show();
      focusAfterShow?.focus();
      focusAfterShow = null;
      return true;
    },
    unmount() {
      closed = true;
      clearInterval(poll);
      clearInterval(ticker);
      for (const off of unsubscribe) off();
    },
  };
}

function tabOf(params) {
  return TABS.some((t) => t.id === params.tab) ? params.tab : "access";
}
