// The workbench: hash routes, the top nav, and the one live connection.
//
//   #/rooms/<room>[?topic=<id>&m=<message id>]   a room (the default: #/rooms/general)
//   #/runs                                         runs, newest first
//   #/runs/<id>                                    one run and its output
//   #/agents                                       agents
//   #/computers                                    computers
//   #/artifacts                                    uploaded files
//   #/settings[?tab=lark]                          Lark access and bots
//
// Each page module exports mount(root, params) → {update(params) → bool, unmount()}. Moving
// between two rooms calls update() on the mounted page (the sidebar stays); anything else
// unmounts the page and mounts the next.

import { hideToast } from "./api.js";
import { h, store } from "./dom.js";
import * as events from "./events.js";
import * as rooms from "./rooms.js";
import * as runs from "./runs.js";
import * as run from "./run.js";
import * as agents from "./agents.js";
import * as computers from "./computers.js";
import * as artifacts from "./artifacts.js";
import * as settings from "./settings.js";

const DEFAULT_ROOM = "general";

const ROUTES = [
  { pattern: /^\/rooms\/([^/]+)$/, page: rooms, nav: "rooms", params: (m) => ({ room: m[1] }) },
  { pattern: /^\/runs\/(\d+)$/, page: run, nav: "runs", params: (m) => ({ id: Number(m[1]) }) },
  { pattern: /^\/runs$/, page: runs, nav: "runs", params: () => ({}) },
  { pattern: /^\/agents$/, page: agents, nav: "agents", params: () => ({}) },
  { pattern: /^\/computers$/, page: computers, nav: "computers", params: () => ({}) },
  { pattern: /^\/artifacts$/, page: artifacts, nav: "artifacts", params: () => ({}) },
  { pattern: /^\/settings$/, page: settings, nav: "settings", params: () => ({}) },
];

let current = null; // {page, view}

/** The route for the current hash: {route, params} (params include the ?query). */
function resolve() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?", 2);
  let decoded;
  try {
    decoded = path.split("/").map(decodeURIComponent).join("/");
  } catch {
    decoded = path;
  }
  for (const route of ROUTES) {
    const match = route.pattern.exec(decoded);
    if (match) {
      const params = route.params(match);
      for (const [key, value] of new URLSearchParams(query)) params[key] = value;
      return { route, params };
    }
  }
  return null;
}

function lastRoom() {
  return store.get("pal.room", DEFAULT_ROOM);
}

function navigate() {
  const found = resolve();
  if (!found) {
    location.replace(`#/rooms/${encodeURIComponent(lastRoom())}`);
    return;
  }
  const { route, params } = found;
  if (route.nav === "rooms") store.set("pal.room", params.room);
  markNav(route.nav);
  closeMenu();
  hideToast();
  if (current && current.page === route.page && current.view.update?.(params)) return;
  if (current) current.view.unmount();
  const root = document.getElementById("view");
  root.replaceChildren();
  root.className = `page-${route.nav}`;
  current = { page: route.page, view: route.page.mount(root, params) };
}

function markNav(active) {
  for (const link of document.querySelectorAll("#nav a[data-nav]")) {
    if (link.dataset.nav === "rooms") link.href = `#/rooms/${encodeURIComponent(lastRoom())}`;
    if (link.dataset.nav === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function closeMenu() {
  const toggle = document.getElementById("menu-toggle");
  if (toggle) toggle.setAttribute("aria-expanded", "false");
  document.body.classList.remove("menu-open");
}

function setUp() {
  const toggle = document.getElementById("menu-toggle");
  toggle?.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("menu-open", open);
  });
  document.getElementById("toast")?.addEventListener("click", hideToast);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      closeMenu();
      document.body.classList.remove("side-open", "members-open");
    }
  });
  if (!document.getElementById("view")) {
    document.body.append(h("main", { id: "view" }));
  }
  window.addEventListener("hashchange", navigate);
  events.start();
  navigate();
}

setUp();
