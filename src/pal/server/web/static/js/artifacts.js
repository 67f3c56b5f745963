// The artifacts page (#artifacts): uploaded files, newest first, with their type, size, who
// made them, in which room, their status (active, expired, revoked) and expiry; a link opens
// one (in a new tab, sandboxed by the server), Revoke stops serving it (after a confirm).
//
// A live `artifact` event (created, revoked, cleanup) reloads the list; an active artifact
// whose expiry passes while the page is open turns `expired` on the next tick.

import { get, post, seg, toast } from "./api.js";
import { h, timeEl } from "./dom.js";
import * as events from "./events.js";

const LIMIT = 200;
const TICK_MS = 30000;

/** "512 B", "1.5 KiB", "12.0 MiB". */
export function sizeText(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

/** The status now: the server's, or `expired` once an active artifact's expiry has passed. */
function statusOf(artifact) {
  if (artifact.status === "active" && artifact.expires_at
    && new Date(artifact.expires_at) <= new Date()) return "expired";
  return artifact.status;
}

/** Mount the page. */
export function mount(root) {
  let closed = false;
  let shown = [];
  const painted = new Map(); // id → the status its row shows

  document.title = "Artifacts · pal";
  const body = h("tbody");
  const table = h("table", { id: "artifacts", class: "grid stack" },
    h("caption", { class: "visually-hidden" }, "Artifacts, newest first"),
    h("thead", {}, h("tr", {},
      ["Artifact", "Type", "Size", "Created by", "Room", "Status", "Expires", ""]
        .map((t) => h("th", { scope: "col" }, t)))),
    body);
  const empty = h("p", { class: "placeholder", hidden: true },
    "No artifacts yet. An agent uploads one with: pal cli http file PATH --title TITLE");
  root.append(h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "Artifacts")),
    h("p", { class: "hint" },
      "Anyone with an artifact's link can open it until it expires or is revoked. "
      + "Files open in a sandbox: they cannot reach this workbench."),
    h("div", { class: "table-wrap" }, table),
    empty));

  async function load() {
    const data = await get("/api/workbench/artifacts", { limit: LIMIT }, { quiet: shown.length > 0 });
    if (closed) return;
    shown = data.artifacts;
    paint();
  }

  function paint() {
    painted.clear();
    body.replaceChildren(...shown.map(row));
    empty.hidden = shown.length > 0;
  }

  function row(a) {
    const status = statusOf(a);
    const active = status === "active";
    painted.set(a.id, status);
    return h("tr", { dataset: { artifact: a.id, status } },
      h("th", { scope: "row" },
        active
          ? h("a", { href: a.url, target: "_blank", rel: "noopener noreferrer",
            "data-testid": `open-${a.id}` }, a.title)
          : h("span", { class: "muted" }, a.title),
        h("div", { class: "muted small mono" }, a.id)),
      h("td", { "data-label": "Type", class: "mono small" }, a.mime),
      h("td", { "data-label": "Size", title: `${a.size} bytes` }, sizeText(a.size)),
      h("td", { "data-label": "Created by" },
        a.created_by || h("span", { class: "muted" }, "—")),
      h("td", { "data-label": "Room" },
        a.room ? h("a", { href: `#/rooms/${seg(a.room)}` }, a.room)
          : h("span", { class: "muted" }, "—")),
      h("td", { "data-label": "Status" },
        h("span", { class: `status status-${status}`, "data-testid": `status-${a.id}` }, status)),
      h("td", { "data-label": "Expires" },
        a.expires_at ? timeEl(a.expires_at) : h("span", { class: "muted" }, "never")),
      h("td", { class: "row-actions" },
        a.status === "revoked" ? null : h("button", { type: "button",
          class: "small-btn danger-text", "data-testid": `revoke-${a.id}`,
          onclick: () => revoke(a) }, "Revoke")));
  }

  async function revoke(a) {
    if (!window.confirm(`Revoke “${a.title}”? Its link stops working for everyone, for good.`)) {
      return;
    }
    try {
      const data = await post(`/api/artifacts/${seg(a.id)}/revoke`);
      shown = shown.map((x) => (x.id === a.id ? { ...x, ...data.artifact } : x));
      paint();
      toast(`${a.title} revoked`, "info");
    } catch {
      // shown in the toast
    }
  }

  const reload = () => load().catch(() => {});
  const unsubscribe = [events.on("artifact", reload), events.onSync(reload)];
  const tick = setInterval(() => {
    if (shown.some((a) => statusOf(a) !== painted.get(a.id))) paint();
  }, TICK_MS);
  load().catch(() => {
    empty.hidden = false;
    empty.textContent = "Could not load the artifacts.";
  });

  return {
    unmount() {
      closed = true;
      clearInterval(tick);
      for (const off of unsubscribe) off();
    },
  };
}
