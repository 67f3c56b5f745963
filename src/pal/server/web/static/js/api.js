// The JSON API. Every error the server answers is {"error": "..."}; it is shown in #toast as
// the server wrote it (its messages say what is wrong and how to fix it).

const TOAST_MS = 8000;
const EARLY_MS = 10000;
let toastTimer = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** `/api/x?a=1&b=2&b=3` from a path and params (arrays repeat; null/undefined/"" skipped). */
export function url(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== null && item !== undefined && item !== "") query.append(key, String(item));
    }
  }
  const qs = query.toString();
  return qs ? `${path}?${qs}` : path;
}

/**
 * Call the API and return the JSON answer. On failure it throws ApiError and, unless
 * `quiet`, shows the error in #toast. Background refreshes pass `quiet` (they retry on the
 * next live event or reconnect, and must not flood the operator while the server is down).
 */
export async function request(method, path, { params, body, quiet = false } = {}) {
  let response;
  const target = url(path, params);
  try {
    const started = method === "GET" ? early(target) : null;
    response = await (started ?? fetch(target, {
      method,
      headers: body === undefined
        ? { Accept: "application/json" }
        : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    }));
  } catch (err) {
    const error = new ApiError(0, `cannot reach the server (${err.message}); is it running?`);
    if (!quiet) toast(error.message);
    throw error;
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) signedOut();
  if (!response.ok) {
    const text = (data && typeof data.error === "string")
      ? data.error
      : `${method} ${path} failed: HTTP ${response.status}`;
    const error = new ApiError(response.status, text);
    if (!quiet) toast(text);
    throw error;
  }
  return data;
}

/**
 * The server asks for the admin token and this page has no (or no longer a) session: load
 * the page again, which shows the sign-in form. At most once a minute, so a server that
 * answers 401 to everything cannot make the page reload in a loop.
 */
function signedOut() {
  const last = Number(sessionStorage.getItem("pal.signedOut") || 0);
  if (Date.now() - last < 60000) return;
  sessionStorage.setItem("pal.signedOut", String(Date.now()));
  location.reload();
}

/**
 * A GET the page's inline script started before the modules loaded (the open room's first
 * requests: see templates/workbench.html), taken once and only right after the page loads.
 */
function early(target) {
  const started = window.palEarly;
  if (!started || !(target in started)) return null;
  const response = started[target];
  delete started[target];
  return performance.now() < EARLY_MS ? response : null;
}

export const get = (path, params, options = {}) => request("GET", path, { params, ...options });
export const post = (path, body, options = {}) => request("POST", path, { body, ...options });
export const patch = (path, body, options = {}) => request("PATCH", path, { body, ...options });
export const del = (path, options = {}) => request("DELETE", path, options);

/** Path segment escaping for room names, agent keys and ids. */
export const seg = (value) => encodeURIComponent(String(value));

/** Show `text` in #toast for a few seconds (`kind`: "error" or "info"). Click dismisses. */
export function toast(text, kind = "error") {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = text;
  el.className = `toast-${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, kind === "error" ? TOAST_MS : TOAST_MS / 2);
}

export function hideToast() {
  const el = document.getElementById("toast");
  if (el) el.hidden = true;
}
