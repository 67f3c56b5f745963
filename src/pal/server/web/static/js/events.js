// The page's one live connection: an EventSource on /api/events (docs/api.md, "Live events").
//
// Events carry ids, not content: views read what changed from the API. The browser resends
// the last event id (Last-Event-ID) on its own reconnects, and the server replays what was
// missed, each event once. When it cannot (it restarted, or the page fell too far behind) it
// sends `resync`, and every open view reloads what it shows. If the browser gives up on the
// stream (readyState CLOSED, e.g. after a proxy error page), a new EventSource resumes with
// ?after=<last id>.

const KINDS = [
  "message",
  "delivery",
  "member",
  "assignment",
  "run",
  "run_action",
  "run_output",
  "computer",
  "computer_revoked",
  "artifact",
  "lark_event",
];
const SHOW_RECONNECTING_MS = 1500;
const MAX_BACKOFF_MS = 15000;

const listeners = new Map(); // kind → Set of callbacks; "sync" for hello/resync
let source = null;
let endpoint = "/api/events";
let lastId = null;
let connected = false;
let backoff = 1000;
let retryTimer = null;
let indicatorTimer = null;

/** Open the stream (once, at start-up). */
export function start(path = "/api/events") {
  endpoint = path;
  connect();
  indicate();
  window.addEventListener("online", () => {
    if (!source || source.readyState === EventSource.CLOSED) connect();
  });
}

/** Call `fn(data)` for every live event of `kind`; returns a function that unsubscribes. */
export function on(kind, fn) {
  if (!listeners.has(kind)) listeners.set(kind, new Set());
  listeners.get(kind).add(fn);
  return () => listeners.get(kind).delete(fn);
}

/**
 * Call `fn(reason)` when the view should re-read the API: `"hello"` after every (re)connect
 * (cheap catch-up; covers the gap between a view's first load and the stream opening) and
 * `"resync"` when events were lost.
 */
export function onSync(fn) {
  return on("sync", fn);
}

/** True while the stream is open (hello received). */
export function isConnected() {
  return connected;
}

function emit(kind, data) {
  for (const fn of listeners.get(kind) || []) {
    try {
      fn(data);
    } catch (err) {
      console.error(`pal: a ${kind} listener failed`, err);
    }
  }
}

function connect() {
  clearTimeout(retryTimer);
  if (source) source.close();
  const target = lastId ? `${endpoint}?after=${encodeURIComponent(lastId)}` : endpoint;
  source = new EventSource(target);
  const current = source;

  current.addEventListener("hello", (e) => {
    if (e.lastEventId) lastId = e.lastEventId;
    connected = true;
    backoff = 1000;
    indicate();
    emit("sync", "hello");
  });
  current.addEventListener("resync", (e) => {
    if (e.lastEventId) lastId = e.lastEventId;
    emit("sync", "resync");
  });
  for (const kind of KINDS) {
    current.addEventListener(kind, (e) => {
      if (e.lastEventId) lastId = e.lastEventId;
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      emit(kind, data);
    });
  }
  current.addEventListener("error", () => {
    if (current !== source) return;
    connected = false;
    indicate();
    if (current.readyState === EventSource.CLOSED) {
      // The browser gave up (an error answer, not a dropped connection): retry ourselves.
      retryTimer = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  });
}

/** The small "reconnecting…" sign in the top bar, shown after a short grace. */
function indicate() {
  const el = document.getElementById("conn");
  if (!el) return;
  clearTimeout(indicatorTimer);
  if (connected) {
    el.hidden = true;
    document.body.classList.remove("offline");
    return;
  }
  indicatorTimer = setTimeout(() => {
    if (connected) return;
    el.hidden = false;
    document.body.classList.add("offline");
  }, SHOW_RECONNECTING_MS);
}
