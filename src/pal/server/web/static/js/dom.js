// Tiny DOM helpers. Everything shown is built with createElement and textContent: message
// text and every other field come from untrusted senders, so nothing here parses HTML.

/**
 * h("button", {class: "primary", onclick: fn, dataset: {id: 3}}, "Send") → an element.
 * Attributes: `class`, `dataset`, `on<event>` handlers, booleans (true sets, false omits),
 * DOM properties for `value`/`checked`/`disabled`, everything else setAttribute.
 * Children: nodes, strings (as text), numbers, arrays of those; null/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value" || name === "checked" || name === "disabled") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (nodes, strings, numbers, nested arrays; null/false skipped). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A <select> of `options` ([value, label] pairs or plain values) with `selected`. */
export function select(attrs, options, selected) {
  const el = h("select", attrs);
  for (const option of options) {
    const [value, label] = Array.isArray(option) ? option : [option, option];
    el.append(h("option", { value }, label));
  }
  el.value = selected ?? "";
  return el;
}

/** A labelled field: <label><span>text</span>control</label>. */
export function field(label, control, attrs = {}) {
  return h("label", { class: "field", ...attrs }, h("span", {}, label), control);
}

// -- formatting ------------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** "14:03" today, "Nov 27, 14:03" before; "" for null. */
export function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? timeFormat.format(date)
    : dateFormat.format(date);
}

/** A <time> element showing shortTime, with the full date and time as its tooltip. */
export function timeEl(iso, attrs = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: fullFormat.format(new Date(iso)), ...attrs },
    shortTime(iso));
}

/** "4 s", "3 min 2 s", "1 h 12 min" for a number of seconds. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** "just now", "12 s ago", "5 min ago", "3 h ago", or a date. */
export function ago(iso) {
  if (!iso) return "never";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return shortTime(iso);
}

/** "950", "12.3k", "4.1M". */
export function compact(n) {
  if (typeof n !== "number") return "";
  if (n < 1000) return String(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 10_000 ? 1 : 0)}k`;
  return `${(n / 1_000_000).toFixed(1)}M`;
}

/** "512 B", "3.2 KB", "1.5 MB". */
export function bytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** A run's usage in a few words: "12.3k in · 1.2k out · $0.04". */
export function usage(u) {
  if (!u || typeof u !== "object") return "";
  const parts = [];
  if (typeof u.input_tokens === "number") parts.push(`${compact(u.input_tokens)} in`);
  if (typeof u.output_tokens === "number") parts.push(`${compact(u.output_tokens)} out`);
  if (!parts.length && typeof u.total_tokens === "number") {
    parts.push(`${compact(u.total_tokens)} tokens`);
  }
  if (typeof u.cost_usd === "number") parts.push(`$${u.cost_usd.toFixed(u.cost_usd < 1 ? 3 : 2)}`);
  return parts.join(" · ");
}

/** The usage object as a tooltip: one "key: value" per line. */
export function usageTitle(u) {
  if (!u || typeof u !== "object") return "";
  return Object.entries(u).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join("\n");
}

/** Seconds between two ISO times (or until now when `end` is null). */
export function elapsed(start, end) {
  if (!start) return null;
  const to = end ? new Date(end).getTime() : Date.now();
  return (to - new Date(start).getTime()) / 1000;
}

// -- small state ----------------------------------------------------------------------------

/** JSON in localStorage, tolerant of private modes and garbage. */
export const store = {
  get(key, fallback) {
    try {
      const raw = localStorage.getItem(key);
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      // storage full or disabled: the workbench still works, it just forgets
    }
  },
};

/** Run `fn` at most once per animation frame / tick, however often it is asked for. */
export function coalesce(fn, delay = 0) {
  let timer = null;
  return () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, delay);
  };
}

/** A random id for client_msg_id (crypto.randomUUID needs a secure context). */
export function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
