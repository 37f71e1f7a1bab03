// The session's one state object, what reads it, and the session itself:
// start (after login/signup or a reload), end, and the gateway connection.
//
// This module imports no view: what the session hands on (gateway pushes, a
// re-render after logout) goes through the hooks app.js sets with setSessionHooks.

import * as api from "./api.js";
import { $, h, shortId } from "./dom.js";

export const state = {
  me: null,              // /auth/validate answer + access token owner
  pools: [],             // GET /auth/pools
  gateway: null,
  uploads: [],           // UploadTask, newest first
  uploadList: null,      // the <ul> of uploads, kept across views
  history: null,         // file records, null = not loaded
  historySort: { key: "created", dir: -1 },
  feed: [],              // admin: recent file-status events
  results: new Map(),    // pool_id -> result records
  userNames: new Map(),  // admin: user_id -> user_name (audit actors are ids)
  view: null,
  loginMessage: "",
};

export const isAdmin = () => state.me?.role === "admin";
export const poolName = (id) => state.pools.find((p) => p.pool_id === id)?.name || (id ? shortId(id) : "private");
export const myPoolRole = (id) => state.pools.find((p) => p.pool_id === id)?.role
  || state.me?.pools?.find((p) => p.pool_id === id)?.role || null;

const hooks = {
  fileStatus: () => {},  // a file-status push
  poolResult: () => {},  // a pool-result push
  groupStatus: () => {}, // a group-status push
  rerender: () => {},    // show the current route again (the router's route())
};

/** Sets what the session calls on gateway pushes and to re-render the page. */
export function setSessionHooks(fns) {
  Object.assign(hooks, fns);
}

export async function refreshPools() {
  state.pools = api.listOf(await api.listPools(), "pools");
  return state.pools;
}

export async function startSession(identity) {
  const s = api.session.get();
  state.me = { ...s, ...identity };
  state.history = null;
  state.results = new Map();
  state.feed = [];
  state.uploads = [];
  state.uploadList = h("ul", { class: "uploads", "aria-label": "Uploads" });
  $("#nav").hidden = false;
  $("#who").hidden = false;
  document.querySelector("[data-admin]").hidden = !isAdmin();
  $("#user-badge").textContent = `${state.me.user_name} (${state.me.role})`;
  await refreshPools().catch(() => {});
  connectGateway(s.access_token);
}

export function endSession(message) {
  state.gateway?.close();
  state.gateway = null;
  for (const t of state.uploads) t.paused = true;
  state.me = null;
  state.uploads = [];
  state.pools = [];
  api.session.clear();
  state.loginMessage = message || "";
  $("#nav").hidden = true;
  $("#who").hidden = true;
  if (location.hash !== "#/login") location.hash = "#/login";
  else hooks.rerender();
}

function setConn(text, online) {
  const el = $("#conn");
  el.textContent = text;
  el.classList.toggle("online", online);
}

function connectGateway(token) {
  api.loadConfig().then((cfg) => {
    const gw = new api.Gateway(cfg.gateway, token);
    state.gateway = gw;
    setConn("connecting…", false);
    gw.addEventListener("connect", () => setConn("online", true));
    gw.addEventListener("disconnect", async (e) => {
      setConn("offline — reconnecting", false);
      // The server closed us on purpose (logout elsewhere, revoked token): ask auth.
      if (e.detail === "io server disconnect" && state.gateway === gw && api.session.get()) {
        try { await api.validate(); gw.socket.connect(); } catch { /* 401 handler ends the session */ }
      }
    });
    gw.addEventListener("connect_error", async () => {
      setConn("offline — reconnecting", false);
      if (!gw.socket.active && state.gateway === gw && api.session.get()) {
        try { await api.validate(); setTimeout(() => gw.socket.connect(), 2000); } catch { /* handled */ }
      }
    });
    gw.addEventListener("file-status", (e) => hooks.fileStatus(e.detail));
    gw.addEventListener("pool-result", (e) => hooks.poolResult(e.detail));
    gw.addEventListener("group-status", (e) => hooks.groupStatus(e.detail));
  });
}
