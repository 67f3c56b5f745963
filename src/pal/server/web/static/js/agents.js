// The agents page (#agents): every agent with its runtime, description and computer, edited
// in place (PATCH /api/agents/<key>, POST /api/agents/<key>/assignment), and a form that
// creates one (POST /api/agents/onboard: created and assigned in one go).

import { del, get, patch, post, seg, toast } from "./api.js";
import { coalesce, field, h, replace, select } from "./dom.js";
import * as events from "./events.js";
import { loadComputers } from "./cache.js";

export const RUNTIMES = ["codex", "claude", "command", "neeko", "coco"];

/** Mount the page. */
export function mount(root) {
  const rows = new Map(); // key → {agent, tr, sig, local}
  let computers = [];
  // Bumped by every change made on this page; a load that started before it is stale for that
  // row (it must neither drop an agent just created nor undo an edit just saved).
  let writes = 0;
  const deleted = new Map(); // key → the write that deleted it
  let closed = false;

  document.title = "Agents · pal";
  const body = h("tbody");
  const table = h("table", { id: "agents", class: "grid stack" },
    h("caption", { class: "visually-hidden" }, "Agents"),
    h("thead", {}, h("tr", {},
      ["Agent", "Name", "Runtime", "Description", "Computer", ""]
        .map((t) => h("th", { scope: "col" }, t)))),
    body);
  const empty = h("p", { class: "placeholder", hidden: true }, "No agents yet: create one below.");

  const key = h("input", { type: "text", "data-testid": "agent-key", id: "agent-key",
    required: true, maxlength: 40, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,39}",
    autocomplete: "off", spellcheck: "false", placeholder: "codex-2" });
  const name = h("input", { type: "text", "data-testid": "agent-name", id: "agent-name",
    maxlength: 120, placeholder: "the key" });
  const runtime = select({ "data-testid": "agent-runtime", id: "agent-runtime" }, RUNTIMES, "codex");
  const description = h("input", { type: "text", "data-testid": "agent-description",
    id: "agent-description", maxlength: 4000, placeholder: "What it is for" });
  const computer = h("select", { "data-testid": "agent-computer", id: "agent-computer" });
  const create = h("button", { type: "submit", "data-testid": "create-agent", class: "primary" },
    "Create agent");
  const form = h("form", { class: "card create-form", "aria-labelledby": "new-agent-title" },
    h("h2", { id: "new-agent-title" }, "New agent"),
    h("div", { class: "form-grid" },
      field("Key", key, { for: "agent-key" }),
      field("Name", name, { for: "agent-name" }),
      field("Runtime", runtime, { for: "agent-runtime" }),
      field("Computer", computer, { for: "agent-computer" }),
      field("Description", description, { for: "agent-description", class: "field wide" })),
    h("p", { class: "hint" },
      "Key: 1-40 letters, digits, - or _. The agent runs on the computer it is assigned to."),
    h("div", { class: "buttons" }, create));

  root.append(h("section", { class: "page" },
    h("header", { class: "page-head" }, h("h1", {}, "Agents")),
    h("div", { class: "table-wrap" }, table),
    empty,
    form));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const payload = { key: key.value.trim(), runtime: runtime.value };
    if (name.value.trim()) payload.display_name = name.value.trim();
    if (description.value.trim()) payload.description = description.value.trim();
    if (computer.value) payload.computer_id = computer.value;
    create.disabled = true;
    try {
      const data = await post("/api/agents/onboard", payload);
      upsert(data.agent, ++writes);
      toast(data.created ? `Agent ${data.agent.key} created` : `Agent ${data.agent.key} updated`,
        "info");
      key.value = name.value = description.value = "";
      key.focus();
    } catch {
      // shown in the toast
    } finally {
      create.disabled = false;
    }
  });

  function computerOptions(selected) {
    const options = [["", "Not assigned"], ...computers.map((c) => [c.id,
      c.status === "online" ? c.name : `${c.name} (${c.status})`])];
    if (selected && !computers.some((c) => c.id === selected)) options.push([selected, selected]);
    return options;
  }

  function fillCreateComputers() {
    const keep = computer.value;
    replace(computer, computerOptions(null).map(([v, l]) => h("option", { value: v }, l)));
    computer.value = computers.some((c) => c.id === keep) ? keep : "";
  }

  async function load() {
    const started = writes;
    const [data, list] = await Promise.all([
      get("/api/agents"),
      loadComputers(true).catch(() => []),
    ]);
    if (closed) return;
    computers = list;
    fillCreateComputers();
    const keys = new Set(data.agents.map((a) => a.key));
    for (const [k, entry] of rows) {
      if (!keys.has(k) && entry.local <= started) {
        entry.tr.remove();
        rows.delete(k);
      }
    }
    for (const agent of data.agents) {
      const local = Math.max(rows.get(agent.key)?.local ?? 0, deleted.get(agent.key) ?? 0);
      if (local <= started) upsert(agent);
    }
    empty.hidden = rows.size > 0;
  }
  const reload = coalesce(() => load().catch(() => {}), 200);

  /** Add or update an agent's row (kept sorted by key; a row being edited is left alone). */
  function upsert(agent, local = 0) {
    const sig = JSON.stringify([agent, computers.find((c) => c.id === agent.computer_id)]);
    const known = rows.get(agent.key);
    if (known && known.sig === sig) {
      known.local = Math.max(local, known.local);
      return;
    }
    if (known && known.tr.contains(document.activeElement)) return;
    const tr = row(agent);
    if (known) known.tr.replaceWith(tr);
    else {
      const after = [...rows.keys()].filter((k) => k < agent.key).sort().pop();
      if (after) rows.get(after).tr.after(tr);
      else body.prepend(tr);
    }
    rows.set(agent.key, { agent, tr, sig, local: Math.max(local, known?.local ?? 0) });
    empty.hidden = true;
  }

  function row(agent) {
    const k = agent.key;
    const nameInput = h("input", { type: "text", value: agent.display_name, maxlength: 120,
      "aria-label": `Name of ${k}`, "data-testid": `name-${k}` });
    const runtimeSelect = select({ "aria-label": `Runtime of ${k}`, "data-testid": `runtime-${k}` },
      RUNTIMES.includes(agent.runtime) ? RUNTIMES : [...RUNTIMES, agent.runtime], agent.runtime);
    const descInput = h("input", { type: "text", value: agent.description || "", maxlength: 4000,
      "aria-label": `Description of ${k}`, "data-testid": `description-${k}`,
      placeholder: "—" });
    const computerSelect = select({ "aria-label": `Computer of ${k}`, "data-testid": `computer-${k}` },
      computerOptions(agent.computer_id), agent.computer_id || "");
    const tr = h("tr", { dataset: { agent: k } },
      h("th", { scope: "row" }, h("span", { class: "agent-key" }, k)),
      h("td", { "data-label": "Name" }, nameInput),
      h("td", { "data-label": "Runtime" }, runtimeSelect),
      h("td", { class: "wide-cell", "data-label": "Description" }, descInput),
      h("td", { "data-label": "Computer" }, h("div", { class: "cell-stack" },
        computerSelect, runtimeWarning(agent))),
      h("td", { class: "row-actions" }, h("button", {
        type: "button",
        class: "small-btn danger-text",
        "aria-label": `Delete ${k}`,
        onclick: () => remove(agent),
      }, "Delete")),
    );
    const save = (input, fieldName, value) => async () => {
      const next = value();
      if (next === (agent[fieldName] ?? "")) return;
      if (fieldName === "display_name" && !next.trim()) {
        input.value = agent.display_name;
        return;
      }
      input.disabled = true;
      try {
        const data = await patch(`/api/agents/${seg(k)}`, { [fieldName]: next });
        Object.assign(agent, data.agent);
        touch(k);
        saved(tr);
      } catch {
        input.value = agent[fieldName] ?? "";
      } finally {
        input.disabled = false;
      }
    };
    nameInput.addEventListener("change", save(nameInput, "display_name", () => nameInput.value.trim()));
    descInput.addEventListener("change", save(descInput, "description", () => descInput.value));
    runtimeSelect.addEventListener("change", save(runtimeSelect, "runtime", () => runtimeSelect.value));
    for (const input of [nameInput, descInput]) {
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") input.blur();
        if (e.key === "Escape") {
          input.value = input === nameInput ? agent.display_name : agent.description || "";
          input.blur();
        }
      });
    }
    computerSelect.addEventListener("change", async () => {
      computerSelect.disabled = true;
      try {
        const data = await post(`/api/agents/${seg(k)}/assignment`,
          { computer_id: computerSelect.value || null });
        Object.assign(agent, data.agent);
        touch(k);
        saved(tr);
      } catch {
        computerSelect.value = agent.computer_id || "";
      } finally {
        computerSelect.disabled = false;
      }
    });
    return tr;
  }

  function runtimeWarning(agent) {
    const host = computers.find((c) => c.id === agent.computer_id);
    if (!host || !Array.isArray(host.runtimes) || !host.runtimes.length) return null;
    const found = host.runtimes.find((r) => r.name === agent.runtime);
    if (found && found.available) return null;
    return h("div", { class: "warn small" },
      found ? `${agent.runtime} is broken on ${host.name}` : `${agent.runtime} is not on ${host.name}`);
  }

  /** Mark a row as changed here, so a load already in flight leaves it alone. */
  function touch(k) {
    const entry = rows.get(k);
    if (entry) entry.local = ++writes;
  }

  function saved(tr) {
    tr.classList.remove("saved");
    void tr.offsetWidth;
    tr.classList.add("saved");
  }

  async function remove(agent) {
    if (!window.confirm(`Delete agent ${agent.key}? Its memberships and pending deliveries go too.`)) {
      return;
    }
    try {
      const data = await del(`/api/agents/${seg(agent.key)}`);
      rows.get(agent.key)?.tr.remove();
      rows.delete(agent.key);
      deleted.set(agent.key, ++writes);
      empty.hidden = rows.size > 0;
      toast(`Agent ${agent.key} deleted (${data.removed.memberships} memberships, `
        + `${data.removed.deliveries} deliveries)`, "info");
    } catch {
      // shown in the toast
    }
  }

  const unsubscribe = [
    events.on("assignment", reload),
    events.on("computer", reload),
    events.on("computer_revoked", reload),
    events.onSync(reload),
  ];
  load().catch(() => {
    empty.hidden = false;
    empty.textContent = "Could not load the agents.";
  });

  return {
    unmount() {
      closed = true;
      for (const off of unsubscribe) off();
    },
  };
}
