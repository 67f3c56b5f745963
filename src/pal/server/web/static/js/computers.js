// The computers page (#computers): each computer's status, last heartbeat, runtimes and
// agents; provisioning, which shows the new key once (with a copy button) and the command
// that starts its daemon; key rotation and revocation.
//
// Heartbeats publish no event, so the page re-reads the list every POLL_MS while it is open
// (rows change in place; focus stays where it is).

import { get, post, seg, toast } from "./api.js";
import { ago, h, replace } from "./dom.js";
import * as events from "./events.js";

const POLL_MS = 5000;

/** Mount the page. */
export function mount(root) {
  const rows = new Map(); // id → {computer, tr, sig, local}
  let closed = false;
  // Bumped by every change made on this page; a load that started before it is stale for that
  // row (it must neither drop a computer just provisioned nor undo a revocation).
  let writes = 0;

  document.title = "Computers · pal";
  const body = h("tbody");
  const table = h("table", { id: "computers", class: "grid stack" },
    h("caption", { class: "visually-hidden" }, "Computers"),
    h("thead", {}, h("tr", {},
      ["Computer", "Status", "Last heartbeat", "Runtimes", "Agents", ""]
        .map((t) => h("th", { scope: "col" }, t)))),
    body);
  const empty = h("p", { class: "placeholder", hidden: true },
    "No computers yet: provision one below, then start its daemon.");
  const keyPanel = h("div", { class: "key-slot" });
  const nameInput = h("input", { type: "text", id: "provision-name",
    "data-testid": "provision-name", required: true, maxlength: 120, placeholder: "laptop",
    autocomplete: "off" });
  const provision = h("button", { type: "submit", "data-testid": "provision", class: "primary" },
    "Provision");
  const form = h("form", { class: "card provision-form", "aria-labelledby": "provision-title" },
    h("h2", { id: "provision-title" }, "Provision a computer"),
    h("p", { class: "hint" },
      "Gives the computer an API key for its daemon. The key is shown once, right here."),
    h("div", { class: "row" },
      h("label", { class: "field grow", for: "provision-name" }, h("span", {}, "Name"), nameInput),
      provision));

  root.append(h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "Computers")),
    keyPanel,
    h("div", { class: "table-wrap" }, table),
    empty,
    form));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    provision.disabled = true;
    try {
      const data = await post("/api/computers/provision", { name, server_url: serverUrl() });
      nameInput.value = "";
      showKey(data, "provisioned");
      upsert(data.computer, ++writes);
      empty.hidden = true;
    } catch {
      // shown in the toast
    } finally {
      provision.disabled = false;
    }
  });

  /** The URL daemons should use: this page's origin and path (a proxy prefix included). */
  function serverUrl() {
    const base = new URL(".", location.href);
    return `${base.origin}${base.pathname}`.replace(/\/+$/, "");
  }

  /** The once-only panel with the key, its copy button and the daemon command. */
  function showKey(data, what) {
    const key = h("code", { class: "secret", "data-testid": "api-key" }, data.api_key);
    const command = h("pre", { class: "command", "data-testid": "daemon-command" },
      data.daemon_command);
    const copied = h("span", { class: "muted small", role: "status" });
    const panel = h("section", { class: "card key-panel", "aria-labelledby": "key-title" },
      h("h2", { id: "key-title" }, `${data.computer.name} ${what}: its API key`),
      h("p", { class: "warn" },
        "This key is shown only now. Copy it (or the command) and keep it safe; "
        + "rotate the key if it leaks."),
      h("div", { class: "row key-row" }, key,
        h("button", { type: "button", "data-testid": "copy-key",
          onclick: () => copy(data.api_key, copied, "Key copied") }, "Copy key"),
        copied),
      h("h3", {}, "Start its daemon"),
      command,
      h("div", { class: "row" },
        h("button", { type: "button", "data-testid": "copy-command",
          onclick: () => copy(data.daemon_command, copied, "Command copied") }, "Copy command")),
      h("p", { class: "hint" }, "From a source checkout instead:"),
      h("pre", { class: "command" }, data.source_command),
      h("div", { class: "buttons" },
        h("button", { type: "button", onclick: () => keyPanel.replaceChildren() },
          "Done, hide the key")));
    replace(keyPanel, panel);
    panel.scrollIntoView({ block: "nearest" });
  }

  async function load() {
    const started = writes;
    const data = await get("/api/computers", undefined, { quiet: rows.size > 0 });
    if (closed) return;
    const ids = new Set(data.computers.map((c) => c.id));
    for (const [id, entry] of rows) {
      if (!ids.has(id) && entry.local <= started) {
        entry.tr.remove();
        rows.delete(id);
      }
    }
    for (const computer of data.computers) {
      if ((rows.get(computer.id)?.local ?? 0) <= started) upsert(computer);
    }
    empty.hidden = rows.size > 0;
  }

  /** Add or update a row; only the heartbeat cell changes on every poll. */
  function upsert(computer, local = 0) {
    const { last_seen_at: seen, ...rest } = computer;
    const sig = JSON.stringify(rest);
    const known = rows.get(computer.id);
    if (known && known.sig === sig) {
      known.computer = computer;
      known.local = Math.max(local, known.local);
      paintSeen(known.tr, seen);
      return;
    }
    const tr = row(computer);
    if (known) known.tr.replaceWith(tr);
    else body.append(tr);
    rows.set(computer.id, { computer, tr, sig, local: Math.max(local, known?.local ?? 0) });
  }

  function paintSeen(tr, seen) {
    const cell = tr.querySelector(".seen");
    if (!cell) return;
    cell.textContent = ago(seen);
    cell.title = seen ? new Date(seen).toLocaleString() : "no heartbeat yet";
  }

  function row(c) {
    const runtimes = Array.isArray(c.runtimes) ? c.runtimes : [];
    const tr = h("tr", { dataset: { computer: c.id } },
      h("th", { scope: "row" },
        h("div", {}, c.name),
        h("div", { class: "muted small mono" }, c.id),
        c.platform || c.version
          ? h("div", { class: "muted small" }, [c.platform, c.version && `v${c.version}`]
            .filter(Boolean).join(" · "))
          : null),
      h("td", { "data-label": "Status" }, h("span", { class: `status status-${c.status}` }, c.status)),
      h("td", { class: "seen", "data-label": "Heartbeat" }),
      h("td", { "data-label": "Runtimes" }, runtimes.length
        ? h("ul", { class: "chips" }, runtimes.map((r) => h("li", {
          class: `chip ${r.available ? "ok" : "missing"}`,
          title: r.available ? [r.version, r.path].filter(Boolean).join("\n")
            : r.error || "not found",
        }, r.name, r.available ? null : h("span", { class: "visually-hidden" }, " (not available)"))))
        : h("span", { class: "muted" }, "not reported yet")),
      h("td", { "data-label": "Agents" },
        c.agents?.length ? c.agents.join(", ") : h("span", { class: "muted" }, "none")),
      h("td", { class: "row-actions" },
        h("button", { type: "button", class: "small-btn", "data-testid": `rotate-${c.id}`,
          onclick: () => rotate(c) }, "Rotate key"),
        c.status === "revoked" ? null : h("button", { type: "button",
          class: "small-btn danger-text", "data-testid": `revoke-${c.id}`,
          onclick: () => revoke(c) }, "Revoke")),
    );
    paintSeen(tr, c.last_seen_at);
    return tr;
  }

  async function rotate(c) {
    if (!window.confirm(`Give ${c.name} a new key? The old key stops working at once; `
      + "its daemon must be restarted with the new one.")) return;
    try {
      const data = await post(`/api/computers/${seg(c.id)}/rotate`);
      showKey(data, "has a new key");
      upsert({ ...data.computer, agents: data.computer.agents ?? c.agents }, ++writes);
    } catch {
      // shown in the toast
    }
  }

  async function revoke(c) {
    if (!window.confirm(`Revoke ${c.name}'s key? Its daemon is cut off at once.`)) return;
    try {
      const data = await post(`/api/computers/${seg(c.id)}/revoke`);
      upsert({ ...data.computer, agents: data.computer.agents ?? c.agents }, ++writes);
      toast(`${c.name} revoked`, "info");
    } catch {
      // shown in the toast
    }
  }

  /** Copy `text` (Clipboard API, or a hidden textarea and execCommand where it is missing). */
  async function copy(text, status, done) {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = done;
      return;
    } catch {
      // not a secure context, or no permission: fall back below
    }
    const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    status.textContent = ok ? done : "Copy failed: select the text and copy it by hand";
  }

  const poll = setInterval(() => {
    if (document.visibilityState === "visible") load().catch(() => {});
  }, POLL_MS);
  const tick = setInterval(() => {
    for (const { tr, computer } of rows.values()) paintSeen(tr, computer.last_seen_at);
  }, 1000);
  const reload = () => load().catch(() => {});
  const unsubscribe = [
    events.on("computer", reload),
    events.on("computer_revoked", reload),
    events.on("assignment", reload),
    events.onSync(reload),
  ];
  load().catch(() => {
    empty.hidden = false;
    empty.textContent = "Could not load the computers.";
  });

  return {
    unmount() {
      closed = true;
      clearInterval(poll);
      clearInterval(tick);
      for (const off of unsubscribe) off();
    },
  };
}
