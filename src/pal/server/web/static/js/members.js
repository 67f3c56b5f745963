// The members panel (#members) of a room: each agent's delivery mode, changeable in place,
// whether it is running here (with a restart button), and a form to invite an agent.

import { get, post, seg, toast } from "./api.js";
import { h, replace, select } from "./dom.js";

export const MODES = ["mentions", "all", "periodic", "muted", "off"];
const MODE_HELP = {
  mentions: "runs when @-mentioned, and in threads it took part in",
  all: "runs for every message",
  periodic: "runs for mentions, and for a digest of what is new once a period",
  muted: "mentions are recorded, never run",
  off: "gets nothing, even when mentioned",
};

/** The panel. `room()` → the open room ({id, name}) or null. */
export function createMembers(room) {
  let members = [];
  let agents = [];
  let running = new Map(); // agent key → newest running run
  let generation = 0;

  const list = h("ul", { class: "member-list", "aria-label": "Members" });
  const inviteAgent = h("select", { id: "invite-agent", "data-testid": "invite-agent" });
  const inviteMode = select({ id: "invite-mode", "data-testid": "invite-mode",
    "aria-label": "Mode for the invited agent" }, MODES, "mentions");
  const inviteButton = h("button", { type: "submit", "data-testid": "invite" }, "Invite");
  const invite = h("form", { class: "invite", "aria-label": "Invite an agent" },
    h("label", { for: "invite-agent", class: "small-label" }, "Invite an agent"),
    h("div", { class: "row" }, inviteAgent, inviteMode, inviteButton),
  );
  const el = h("aside", { id: "members", "aria-labelledby": "members-title" },
    h("div", { class: "panel-head" },
      h("h2", { id: "members-title" }, "Members"),
      h("button", {
        type: "button",
        class: "icon-btn members-close",
        "aria-label": "Close the members panel",
        onclick: () => document.body.classList.remove("members-open"),
      }, "×")),
    list,
    invite,
  );

  invite.addEventListener("submit", async (e) => {
    e.preventDefault();
    const current = room();
    if (!current || !inviteAgent.value) return;
    inviteButton.disabled = true;
    try {
      await post(`/api/rooms/${seg(current.name)}/agents`,
        { agent: inviteAgent.value, mode: inviteMode.value });
      await loadMembers();
    } catch {
      // shown in the toast
    } finally {
      inviteButton.disabled = false;
    }
  });

  async function loadMembers() {
    const current = room();
    if (!current) return;
    const mine = generation;
    const data = await get(`/api/rooms/${seg(current.name)}/members`, undefined, { quiet: true });
    if (mine !== generation) return;
    members = data.members;
    render();
  }

  async function loadAgents() {
    const mine = generation;
    const data = await get("/api/agents", undefined, { quiet: true });
    if (mine !== generation) return;
    agents = data.agents;
    render();
  }

  async function loadRunning() {
    const current = room();
    if (!current) return;
    const mine = generation;
    const data = await get("/api/runs", { room: current.id, status: "running", limit: 100 },
      { quiet: true });
    if (mine !== generation) return;
    running = new Map();
    for (const run of data.runs) if (!running.has(run.agent_key)) running.set(run.agent_key, run);
    render();
  }

  function render() {
    const current = room();
    if (!current) return;
    const byKey = new Map(agents.map((a) => [a.key, a]));
    const items = members.map((m) => memberRow(current, m, byKey.get(m.member)));
    if (!items.length) items.push(h("li", { class: "muted empty" }, "No agents in this room yet."));
    // agents at work here without being members (they were @-mentioned)
    const inRoomNow = new Set(members.map((m) => m.member));
    for (const [key, run] of running) {
      if (inRoomNow.has(key)) continue;
      items.push(h("li", { class: "member guest", dataset: { running: key } },
        h("div", { class: "member-name" }, h("span", { class: "member-key" }, key),
          h("span", { class: "muted small" }, "not a member")),
        h("div", { class: "member-controls" }, runningLink(run), restartButton(current, key))));
    }
    const focused = list.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-testid") : null;
    replace(list, items);
    if (focused) list.querySelector(`[data-testid="${CSS.escape(focused)}"]`)?.focus();

    const inRoom = new Set(members.map((m) => m.member));
    const candidates = agents.filter((a) => !inRoom.has(a.key));
    const keep = inviteAgent.value;
    replace(inviteAgent, candidates.length
      ? candidates.map((a) => h("option", { value: a.key },
        a.display_name && a.display_name !== a.key ? `${a.key} (${a.display_name})` : a.key))
      : h("option", { value: "" }, "every agent is here"));
    if (candidates.some((a) => a.key === keep)) inviteAgent.value = keep;
    invite.hidden = !candidates.length;
  }

  function memberRow(current, m, agent) {
    const name = m.member;
    const row = h("li", { class: `member mode-${m.mode}`, dataset: { member: name } });
    const title = h("div", { class: "member-name" },
      h("span", { class: "member-key" }, name),
      m.display_name && m.display_name.toLowerCase() !== name.toLowerCase()
        ? h("span", { class: "muted" }, m.display_name) : null,
      m.runtime ? h("span", { class: "chip" }, m.runtime) : null,
    );
    row.append(title);
    if (m.member_kind !== "agent") {
      row.append(h("div", { class: "muted small" }, m.member_kind));
      return row;
    }
    const modeSelect = select({
      "data-testid": `mode-${name}`,
      "aria-label": `Delivery mode of ${name}`,
      title: MODE_HELP[m.mode] || "",
    }, MODES, m.mode);
    modeSelect.addEventListener("change", async () => {
      const mode = modeSelect.value;
      modeSelect.disabled = true;
      try {
        await post(`/api/rooms/${seg(current.name)}/agents`, { agent: name, mode });
        m.mode = mode;
        modeSelect.title = MODE_HELP[mode] || "";
        row.className = `member mode-${mode}`;
      } catch {
        modeSelect.value = m.mode;
      } finally {
        modeSelect.disabled = false;
      }
    });
    const controls = h("div", { class: "member-controls" }, modeSelect);
    const run = running.get(name);
    if (run) controls.append(runningLink(run), restartButton(current, name));
    row.append(controls);
    if (agent && !agent.computer_id) {
      row.append(h("div", { class: "warn small" }, "not assigned to a computer: it cannot run"));
    }
    return row;
  }

  function runningLink(run) {
    return h("a", { class: "running-link", href: `#/runs/${run.id}`, title: "The run in progress" },
      h("span", { class: "dot", "aria-hidden": "true" }), `running: run ${run.id}`);
  }

  function restartButton(current, key) {
    const button = h("button", {
      type: "button",
      class: "small-btn",
      title: `Kill ${key}'s run and start it again (resuming its session)`,
    }, "Restart");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await post(`/api/rooms/${seg(current.name)}/agents/${seg(key)}/restart`,
          { requested_by: "workbench" });
        toast(`Restart of ${key} requested`, "info");
      } catch {
        button.disabled = false;
      }
    });
    return button;
  }

  return {
    el,
    /** A new room: forget the old one's members and load this one's. */
    open() {
      generation += 1;
      members = [];
      running = new Map();
      replace(list, h("li", { class: "muted empty" }, "Loading…"));
      return Promise.allSettled([loadMembers(), loadAgents(), loadRunning()]);
    },
    reloadMembers: () => loadMembers().catch(() => {}),
    reloadAgents: () => loadAgents().catch(() => {}),
    reloadRunning: () => loadRunning().catch(() => {}),
  };
}
