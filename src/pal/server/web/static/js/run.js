// One run (#/runs/<id>): its status, kill and restart, its actions, and its output streaming
// live into pre#run-output.
//
// Output is read in pages after the last chunk shown (after=<seq>); a `run_output` event for
// this run reads the next page (bursts coalesce). The page holds at most MAX_CHARS of text:
// older text is cut from the top, and a note says so. stderr is a span with class `stderr`.

import { get, post, seg } from "./api.js";
import {
  bytes, duration, elapsed, h, replace, timeEl, usage, usageTitle,
} from "./dom.js";
import * as events from "./events.js";
import { computerName, loadComputers, loadRooms, roomName } from "./cache.js";

const MAX_CHARS = 2 * 1024 * 1024;
const OUTPUT_PAGE = 1000;
// Terminal escapes (colours, cursor moves) make raw output unreadable in a browser.
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

/** Mount the page for params {id}. */
export function mount(root, params) {
  const id = params.id;
  let run = null;
  let actions = [];
  let restartedAs = null;
  let nextAfter = -1;
  let shown = 0;
  let trimmed = 0;
  let serverDropped = 0;
  let pulling = false;
  let pullAgain = false;
  let closed = false;

  document.title = `Run ${id} · pal`;
  const status = h("span", { "data-testid": "run-status", class: "status", role: "status" }, "…");
  const kill = h("button", { type: "button", "data-testid": "kill", class: "danger", disabled: true },
    "Kill");
  const restart = h("button", { type: "button", "data-testid": "restart", disabled: true },
    "Restart");
  const meta = h("dl", { class: "meta" });
  const errorBox = h("pre", { class: "run-error", hidden: true });
  const actionList = h("ul", { class: "actions", "aria-label": "Kill and restart requests" });
  const output = h("pre", { id: "run-output", tabindex: "0", "aria-label": "Output" });
  const note = h("p", { class: "output-note", hidden: true });
  const follow = h("input", { type: "checkbox", id: "follow", checked: true });
  const wrap = h("input", { type: "checkbox", id: "wrap", checked: true });
  const size = h("span", { class: "muted small" });

  root.append(h("section", { class: "page run-page" },
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "← Runs")),
    h("header", { class: "page-head run-head" },
      h("h1", {}, `Run ${id}`),
      status,
      h("div", { class: "buttons" }, kill, restart)),
    meta,
    errorBox,
    h("section", { class: "run-actions", "aria-labelledby": "actions-title" },
      h("h2", { id: "actions-title" }, "Kill and restart"),
      actionList),
    h("section", { class: "run-output", "aria-labelledby": "output-title" },
      h("div", { class: "output-head" },
        h("h2", { id: "output-title" }, "Output"),
        size,
        h("label", { class: "check", for: "follow" }, follow, "Follow"),
        h("label", { class: "check", for: "wrap" }, wrap, "Wrap lines")),
      note,
      output)));

  wrap.addEventListener("change", () => output.classList.toggle("nowrap", !wrap.checked));
  output.addEventListener("scroll", () => {
    follow.checked = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
  }, { passive: true });
  follow.addEventListener("change", () => {
    if (follow.checked) output.scrollTop = output.scrollHeight;
  });
  kill.addEventListener("click", () => act("kill"));
  restart.addEventListener("click", () => act("restart"));

  async function act(action) {
    if (!run) return;
    const verb = action === "kill" ? "Kill" : "Restart";
    if (!window.confirm(`${verb} run ${id} (${run.agent_key})?`)) return;
    kill.disabled = restart.disabled = true;
    try {
      await post(`/api/runs/${seg(id)}/${action}`, { requested_by: "workbench" });
    } catch {
      // shown in the toast
    }
    await loadRun();
  }

  // -- the run -----------------------------------------------------------------------------

  async function loadRun() {
    const data = await get(`/api/runs/${seg(id)}`, undefined, { quiet: run !== null });
    if (closed) return;
    actions = data.actions;
    setRun(data.run);
  }

  function setRun(next) {
    run = next;
    status.textContent = run.status;
    status.className = `status status-${run.status}`;
    const open = (kind) => actions.some((a) => a.action === kind
      && (a.status === "pending" || a.status === "sent"));
    const running = run.status === "running";
    kill.disabled = !running || open("kill");
    restart.disabled = !running || open("restart") || open("kill");
    kill.textContent = open("kill") ? "Kill requested…" : "Kill";
    restart.textContent = open("restart") ? "Restart requested…" : "Restart";
    paintMeta();
    paintActions();
    errorBox.hidden = !run.error;
    errorBox.textContent = run.error || "";
    size.textContent = run.output_bytes ? bytes(run.output_bytes) : "";
  }

  function paintMeta() {
    const room = run.room_id ? roomName(run.room_id) : null;
    const items = [
      ["Agent", run.agent_key],
      ["Room", room ? h("a", { href: `#/rooms/${encodeURIComponent(room)}` }, `#${room}`) : "—"],
      ["Message", run.message_id && room
        ? h("a", { href: `#/rooms/${encodeURIComponent(room)}?m=${run.message_id}` },
          `message ${run.message_id}`)
        : run.message_id ?? "—"],
      ["Computer", run.computer_id ? computerName(run.computer_id) : "—"],
      ["Runtime", [run.runtime || "—", run.dry_run ? h("span", { class: "chip" }, "dry run") : null]],
      ["Started", timeEl(run.started_at)],
      ["Duration", h("span", { class: "duration" }, duration(elapsed(run.started_at, run.finished_at)))],
      ["Exit code", run.exit_code ?? "—"],
      ["Usage", h("span", { title: usageTitle(run.usage) }, usage(run.usage) || "—")],
      ["pid", run.pid ?? "—"],
    ];
    if (run.finished_at) items.splice(6, 0, ["Finished", timeEl(run.finished_at)]);
    if (run.restart_of) {
      items.push(["Restart of", h("a", { href: `#/runs/${run.restart_of}` }, `run ${run.restart_of}`)]);
    }
    if (restartedAs) {
      items.push(["Restarted as", h("a", { href: `#/runs/${restartedAs}` }, `run ${restartedAs}`)]);
    }
    if (run.session_id) items.push(["Session", run.session_id]);
    replace(meta, items.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))));
  }

  function paintActions() {
    if (!actions.length) {
      replace(actionList, h("li", { class: "muted" }, "None requested."));
      return;
    }
    replace(actionList, actions.map((a) => h("li", {},
      h("strong", {}, a.action), " ",
      h("span", { class: `status status-${a.status}` }, a.status),
      a.requested_by ? h("span", { class: "muted" }, ` by ${a.requested_by}`) : null,
      " ", timeEl(a.created_at),
      a.error ? h("div", { class: "warn small" }, a.error) : null)));
  }

  async function findRestart() {
    if (!run || !run.room_id) return;
    const data = await get("/api/runs",
      { agent: run.agent_key, room: run.room_id, limit: 20 }, { quiet: true });
    const found = data.runs.find((r) => r.restart_of === id);
    if (found && found.id !== restartedAs && !closed) {
      restartedAs = found.id;
      paintMeta();
    }
  }

  // -- output ------------------------------------------------------------------------------

  async function pull() {
    if (pulling) {
      pullAgain = true;
      return;
    }
    pulling = true;
    try {
      let more = true;
      while ((more || pullAgain) && !closed) {
        pullAgain = false;
        const data = await get(`/api/runs/${seg(id)}/output`,
          { after: nextAfter, limit: OUTPUT_PAGE }, { quiet: true });
        if (closed) return;
        appendChunks(data.chunks);
        nextAfter = data.next_after;
        serverDropped = data.output_dropped;
        more = data.more;
        if (data.run.status !== run?.status) await loadRun();
        paintNote();
      }
    } catch {
      // the next event or reconnect reads again
    } finally {
      pulling = false;
    }
  }

  function appendChunks(chunks) {
    if (!chunks.length) return;
    output.querySelector(".output-empty")?.remove();
    const stick = follow.checked;
    for (const chunk of chunks) {
      const text = chunk.data.replace(ANSI, "");
      if (!text) continue;
      const last = output.lastChild;
      const stderr = chunk.stream === "stderr";
      if (last && (last.nodeType === Node.TEXT_NODE) === !stderr) {
        (stderr ? last.firstChild : last).appendData(text);
      } else {
        output.append(stderr ? h("span", { class: "stderr" }, text) : document.createTextNode(text));
      }
      shown += text.length;
    }
    if (shown > MAX_CHARS) trim();
    if (stick) output.scrollTop = output.scrollHeight;
  }

  /** Cut the oldest text until at most MAX_CHARS remain (at a line start when it can). */
  function trim() {
    let excess = shown - MAX_CHARS;
    while (excess > 0 && output.firstChild) {
      const node = output.firstChild;
      const text = node.nodeType === Node.TEXT_NODE ? node : node.firstChild;
      const length = text ? text.length : 0;
      if (length <= excess) {
        node.remove();
        excess -= length;
        shown -= length;
        trimmed += length;
        continue;
      }
      const newline = text.data.indexOf("\n", excess);
      const cut = newline >= 0 && newline - excess < 4096 ? newline + 1 : excess;
      text.deleteData(0, cut);
      shown -= cut;
      trimmed += cut;
      excess = 0;
    }
  }

  function paintNote() {
    const parts = [];
    if (trimmed) {
      parts.push(`Showing the last ${bytes(MAX_CHARS)} of output here; `
        + `${bytes(trimmed)} before it are not shown.`);
    }
    if (serverDropped) {
      parts.push(`The server keeps only the newest output of a run: ${bytes(serverDropped)} `
        + "of the oldest were dropped.");
    }
    note.hidden = !parts.length;
    note.textContent = parts.join(" ");
    if (!output.firstChild && run && run.status !== "running") {
      output.append(h("span", { class: "output-empty muted" }, "(no output)"));
    }
  }

  // -- live --------------------------------------------------------------------------------

  const tick = setInterval(() => {
    if (run?.status !== "running") return;
    const cell = meta.querySelector(".duration");
    if (cell) cell.textContent = duration(elapsed(run.started_at, null));
  }, 1000);

  const unsubscribe = [
    events.on("run", (e) => {
      if (e.run_id === id) loadRun().catch(() => {});
      else if (run && e.agent_key === run.agent_key && e.room_id === run.room_id) {
        findRestart().catch(() => {});
      }
    }),
    events.on("run_action", (e) => {
      if (e.run_id === id) loadRun().catch(() => {});
    }),
    events.on("run_output", (e) => {
      if (e.run_id === id && e.seq > nextAfter) pull();
    }),
    events.onSync(() => {
      loadRun().then(pull).catch(() => {});
    }),
  ];

  Promise.all([loadRooms().catch(() => {}), loadComputers().catch(() => {})])
    .then(() => run && paintMeta());
  loadRun().then(() => {
    pull();
    findRestart().catch(() => {});
  }).catch((err) => {
    status.textContent = err.status === 404 ? "not found" : "unknown";
    replace(meta, h("p", { class: "placeholder" },
      err.status === 404 ? `There is no run ${id}.` : `Could not load run ${id}: ${err.message}`));
  });

  return {
    unmount() {
      closed = true;
      clearInterval(tick);
      for (const off of unsubscribe) off();
    },
  };
}
