// The runs page (#runs): newest first, filtered by status and agent (kept in the hash:
// #/runs?status=running&agent=codex). A live `run` event re-reads that one run and updates
// or adds its row; durations of running runs tick every second.

import { get, seg } from "./api.js";
import {
  duration, elapsed, h, replace, select, timeEl, usage, usageTitle,
} from "./dom.js";
import * as events from "./events.js";
import { computerName, loadComputers, loadRooms, roomById, roomName } from "./cache.js";

const PAGE = 50;
export const STATUSES = ["running", "completed", "failed", "killed", "lost"];

/** Mount the page for params {status?, agent?}. */
export function mount(root, params) {
  const filter = { status: params.status || "", agent: params.agent || "" };
  const rows = new Map(); // run id → {run, tr}
  let oldest = null;
  let exhausted = false;
  let generation = 0;
  const pendingIds = new Set();
  let pendingTimer = null;

  document.title = "Runs · pal";
  const statusFilter = select({ id: "runs-status", "data-testid": "runs-status" },
    [["", "All"], ...STATUSES], filter.status);
  const agentFilter = select({ id: "runs-agent", "data-testid": "runs-agent" },
    [["", "All"]], filter.agent);
  const body = h("tbody");
  const table = h("table", { id: "runs", class: "grid stack" },
    h("caption", { class: "visually-hidden" }, "Runs, newest first"),
    h("thead", {}, h("tr", {},
      ["Run", "Status", "Agent", "Room", "Computer", "Started", "Duration", "Usage"]
        .map((t) => h("th", { scope: "col" }, t)))),
    body);
  const more = h("button", { type: "button", class: "more", hidden: true, onclick: loadOlder },
    "Older runs");
  const empty = h("p", { class: "placeholder", hidden: true });
  root.append(h("section", { class: "page" },
    h("header", { class: "page-head" },
      h("h1", {}, "Runs"),
      h("div", { class: "filters" },
        h("label", { class: "field inline" }, h("span", {}, "Status"), statusFilter),
        h("label", { class: "field inline" }, h("span", {}, "Agent"), agentFilter))),
    h("div", { class: "table-wrap" }, table),
    empty,
    more));

  for (const control of [statusFilter, agentFilter]) {
    control.addEventListener("change", () => {
      const query = new URLSearchParams();
      if (statusFilter.value) query.set("status", statusFilter.value);
      if (agentFilter.value) query.set("agent", agentFilter.value);
      const qs = query.toString();
      location.hash = `#/runs${qs ? `?${qs}` : ""}`;
    });
  }

  get("/api/agents", undefined, { quiet: true }).then((data) => {
    const keep = filter.agent;
    replace(agentFilter, h("option", { value: "" }, "All"),
      data.agents.map((a) => h("option", { value: a.key }, a.key)));
    if (keep && !data.agents.some((a) => a.key === keep)) {
      agentFilter.append(h("option", { value: keep }, keep));
    }
    agentFilter.value = keep;
  }, () => {});

  function query(extra = {}) {
    return { status: filter.status, agent: filter.agent, limit: PAGE, ...extra };
  }

  async function load() {
    generation += 1;
    const mine = generation;
    const [data] = await Promise.all([
      get("/api/runs", query()),
      loadRooms().catch(() => []),
      loadComputers().catch(() => []),
    ]);
    if (mine !== generation) return;
    rows.clear();
    body.replaceChildren();
    oldest = null;
    add(data.runs);
    exhausted = data.runs.length < PAGE;
    more.hidden = exhausted;
    showEmpty();
  }

  async function loadOlder() {
    if (exhausted || oldest === null) return;
    more.disabled = true;
    try {
      const data = await get("/api/runs", query({ before: oldest }));
      add(data.runs);
      exhausted = data.runs.length < PAGE;
      more.hidden = exhausted;
    } finally {
      more.disabled = false;
    }
  }

  function showEmpty() {
    empty.hidden = rows.size > 0;
    empty.textContent = filter.status || filter.agent
      ? "No runs match these filters."
      : "No runs yet. A run starts when an agent gets a message it should act on.";
  }

  /** Add or update runs; rows stay in id order, newest first. */
  function add(runs) {
    for (const run of runs) {
      const tr = row(run);
      const known = rows.get(run.id);
      if (known) {
        known.tr.replaceWith(tr);
      } else {
        let next = null;
        for (const [id, entry] of rows) {
          if (id < run.id && (!next || id > Number(next.dataset.run))) next = entry.tr;
        }
        if (next) next.before(tr);
        else body.append(tr);
      }
      rows.set(run.id, { run, tr });
      if (oldest === null || run.id < oldest) oldest = run.id;
    }
    showEmpty();
  }

  function row(run) {
    const tr = h("tr", { dataset: { run: run.id }, class: `run-row status-row-${run.status}` },
      h("td", { class: "num", "data-label": "Run" },
        h("a", { href: `#/runs/${run.id}` }, `#${run.id}`)),
      h("td", { "data-label": "Status" }, statusBadge(run.status)),
      h("td", { "data-label": "Agent" }, run.agent_key),
      h("td", { "data-label": "Room" }, run.room_id
        ? h("a", { href: `#/rooms/${encodeURIComponent(roomName(run.room_id))}` },
          roomName(run.room_id))
        : "—"),
      h("td", { "data-label": "Computer" }, run.computer_id ? computerName(run.computer_id) : "—"),
      h("td", { "data-label": "Started" }, timeEl(run.started_at)),
      h("td", { class: "duration num", "data-label": "Duration" },
        duration(elapsed(run.started_at, run.finished_at))),
      h("td", { class: "usage", "data-label": "Usage", title: usageTitle(run.usage) },
        usage(run.usage) || "—"),
    );
    tr.addEventListener("click", (e) => {
      if (e.target.closest("a, button")) return;
      location.hash = `#/runs/${run.id}`;
    });
    return tr;
  }

  function fetchPending() {
    pendingTimer = null;
    const ids = [...pendingIds];
    pendingIds.clear();
    for (const id of ids) {
      get(`/api/runs/${seg(id)}`, undefined, { quiet: true }).then((data) => {
        const run = data.run;
        const matches = (!filter.status || run.status === filter.status || rows.has(run.id))
          && (!filter.agent || run.agent_key === filter.agent);
        if (!matches) return;
        if (!rows.has(run.id) && oldest !== null && run.id < oldest && !exhausted) return;
        if (!run.room_id || roomById(run.room_id)) add([run]);
        else loadRooms(true).finally(() => add([run])); // a room made since the page opened
      }, () => {});
    }
  }

  const tick = setInterval(() => {
    for (const { run, tr } of rows.values()) {
      if (run.status !== "running") continue;
      const cell = tr.querySelector(".duration");
      if (cell) cell.textContent = duration(elapsed(run.started_at, null));
    }
  }, 1000);

  const unsubscribe = [
    events.on("run", (e) => {
      pendingIds.add(e.run_id);
      if (!pendingTimer) pendingTimer = setTimeout(fetchPending, 100);
    }),
    // after any (re)connect: events may have come before the stream was open
    events.onSync(() => load().catch(() => {})),
  ];

  load().catch(() => {
    empty.hidden = false;
    empty.textContent = "Could not load the runs.";
  });

  return {
    unmount() {
      generation += 1;
      clearInterval(tick);
      clearTimeout(pendingTimer);
      for (const off of unsubscribe) off();
    },
  };
}

/** A status badge: `<span class="status status-running">running</span>`. */
export function statusBadge(status, attrs = {}) {
  return h("span", { class: `status status-${status}`, ...attrs }, status);
}
