// One message as DOM: sender, time, topic, the message it answers, and its text with
// mentions, links and code marked up. The text is untrusted: it only ever becomes text nodes
// (and hrefs that are checked to be http(s) URLs).

import { get, seg } from "./api.js";
import { h, timeEl } from "./dom.js";

const CLAMP_CHARS = 4000;
const CLAMP_LINES = 40;
const SNIPPET = 90;
const GROUP_MS = 5 * 60 * 1000;
const TOKEN = /(https?:\/\/[^\s<>"'`]+)|(^|[\s([{,;])(@[A-Za-z0-9][A-Za-z0-9_-]*)/g;

const parents = new Map(); // id → Promise of a message (or null when it is gone)

/**
 * The element for `m`: `.message[data-id]` with classes `agent` / `system` / `reply`.
 * `ctx`: {topicTitle(id) → string|null, known(id) → message|undefined, onReply(m),
 * onJump(id)}.
 */
export function renderMessage(m, ctx) {
  const kind = m.sender_kind || "human";
  const classes = ["message", kind];
  if (m.parent_id) classes.push("reply");
  const el = h("article", {
    class: classes.join(" "),
    dataset: {
      id: m.id,
      group: [kind, m.sender, m.parent_id ?? "", m.topic_id ?? ""].join("\u0000"),
      at: Date.parse(m.created_at) || 0,
    },
    "aria-label": `${m.sender}, ${new Date(m.created_at).toLocaleString()}`,
  });

  const topic = m.topic_id ? ctx.topicTitle(m.topic_id) : null;
  const head = h("header", { class: "message-head" },
    h("span", { class: "sender" }, m.sender),
    kind === "agent" ? h("span", { class: "kind-tag" }, "agent") : null,
    kind === "lark" ? h("span", { class: "kind-tag" }, "lark") : null,
    timeEl(m.created_at, { class: "time" }),
    topic ? h("span", { class: "topic-tag", title: "topic" }, topic) : null,
    kind === "system" ? null : h("button", {
      type: "button",
      class: "reply-btn",
      title: "Reply in this message's thread",
      "aria-label": `Reply to ${m.sender}`,
      onclick: () => ctx.onReply(m),
    }, "Reply"),
  );
  el.append(head);
  if (m.parent_id) el.append(replyTo(m.parent_id, ctx));
  el.append(renderText(m.content));
  return el;
}

/** "↳ alice: the first words of the message answered", a button that scrolls to it. */
function replyTo(parentId, ctx) {
  const label = h("span", { class: "reply-snippet" }, "…");
  const button = h("button", {
    type: "button",
    class: "reply-to",
    title: "Show the message this answers",
    onclick: () => ctx.onJump(parentId),
  }, h("span", { class: "reply-arrow", "aria-hidden": "true" }, "↳ "), label);
  const fill = (parent) => {
    if (!parent) {
      label.textContent = "a message that is no longer there";
      return;
    }
    const text = parent.content.replace(/\s+/g, " ").trim();
    label.replaceChildren(
      h("span", { class: "reply-sender" }, parent.sender),
      ": ",
      text.length > SNIPPET ? `${text.slice(0, SNIPPET)}…` : text,
    );
  };
  const known = ctx.known(parentId);
  if (known) fill(known);
  else parentMessage(parentId).then(fill);
  return button;
}

/** The message `id` (cached; null if it cannot be read). */
export function parentMessage(id) {
  if (!parents.has(id)) {
    parents.set(id, get(`/api/messages/${seg(id)}`, undefined, { quiet: true })
      .then((data) => data.message)
      .catch(() => null));
    if (parents.size > 2000) parents.delete(parents.keys().next().value);
  }
  return parents.get(id);
}

/** Remember a message so replies to it need not fetch it. */
export function rememberMessage(m) {
  parents.set(m.id, Promise.resolve(m));
}

/**
 * Mark `el` as continuing the message before it (class `cont`: the sender line is folded)
 * when both come from the same sender, in the same thread and topic, within GROUP_MS.
 */
export function regroup(el) {
  if (!el || !el.classList.contains("message")) return;
  const prev = el.previousElementSibling;
  const same = prev && prev.classList.contains("message")
    && !el.classList.contains("system")
    && prev.dataset.group === el.dataset.group
    && Number(el.dataset.at) - Number(prev.dataset.at) < GROUP_MS;
  el.classList.toggle("cont", Boolean(same));
}

/** The text as `.text`: fenced ``` blocks as <pre>, `inline code`, mentions, links. */
export function renderText(content) {
  const el = h("div", { class: "text" });
  const parts = content.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      el.append(h("pre", { class: "code" }, part.replace(/\n$/, "")));
    } else if (part) {
      inline(el, part);
    }
  });
  const lines = content.split("\n").length;
  if (content.length > CLAMP_CHARS || lines > CLAMP_LINES) {
    el.classList.add("clamped");
    const more = h("button", {
      type: "button",
      class: "more-btn",
      onclick: () => {
        const open = el.classList.toggle("clamped");
        more.textContent = open ? "Show all" : "Show less";
      },
    }, "Show all");
    return h("div", { class: "text-wrap" }, el, more);
  }
  return el;
}

/** Append `text` to `el` with `code` spans, then mentions and links in the rest. */
function inline(el, text) {
  const pieces = text.split(/(`[^`\n]+`)/);
  for (const piece of pieces) {
    if (piece.length > 2 && piece.startsWith("`") && piece.endsWith("`")) {
      el.append(h("code", {}, piece.slice(1, -1)));
    } else if (piece) {
      marks(el, piece);
    }
  }
}

function marks(el, text) {
  let last = 0;
  TOKEN.lastIndex = 0;
  for (let match = TOKEN.exec(text); match; match = TOKEN.exec(text)) {
    if (match[1]) {
      let link = match[1];
      const trail = /[.,;:!?)\]}]+$/.exec(link);
      if (trail) link = link.slice(0, -trail[0].length);
      el.append(text.slice(last, match.index));
      el.append(h("a", { href: link, target: "_blank", rel: "noopener noreferrer" }, link));
      last = match.index + link.length;
      TOKEN.lastIndex = last;
    } else {
      const start = match.index + match[2].length;
      el.append(text.slice(last, start));
      el.append(h("span", { class: "mention" }, match[3]));
      last = start + match[3].length;
    }
  }
  el.append(text.slice(last));
}
