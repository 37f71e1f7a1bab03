// HTTP and Socket.IO access for the dashboard: the only module that talks to the fleet.
//
// The gateway serves /config.json with the public URLs of the services; every
// HTTP call carries the access token as a Bearer header (never a cookie), and
// every failure is turned into an ApiError carrying SPEC's {error: {code, message}}.

import { io } from "./vendor/socket.io.esm.min.js";

const TOKEN_KEY = "dropbox.session";

export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message || code || "request failed");
    this.status = status;
    this.code = code || "error";
    this.extra = extra;
  }
}

/** Turns a SPEC error body (or anything else) into an ApiError. */
export function toApiError(status, body, fallback) {
  const err = body && typeof body === "object" ? body.error : null;
  if (err && typeof err === "object") {
    const { code, message, ...extra } = err;
    return new ApiError(status, code, message || fallback, extra);
  }
  return new ApiError(status, status === 0 ? "network_error" : "http_" + status, fallback);
}

let configPromise = null;

/** The service URLs, fetched once from the gateway. */
export function loadConfig() {
  if (!configPromise) {
    configPromise = fetch("config.json", { cache: "no-store" }).then(async (r) => {
      // The production ingress does not route /config.json (404): every service is on this origin.
      if (r.status === 404) {
        const here = window.location.origin;
        return { auth: here, fsm: here, aggregator: here, uploader: here, gateway: here };
      }
      if (!r.ok) throw new ApiError(r.status, "config_unavailable", "the dashboard configuration could not be loaded");
      const cfg = await r.json();
      const trim = (u) => (u || "").replace(/\/+$/, "");
      return {
        auth: trim(cfg.auth_url),
        fsm: trim(cfg.file_service_manager_url),
        aggregator: trim(cfg.pool_aggregator_url),
        uploader: trim(cfg.file_uploader_url),
        // The gateway serves this page: the Socket.IO endpoint is our own origin
        // unless the configuration names another.
        gateway: trim(cfg.socket_gateway_url) || window.location.origin,
      };
    }).catch((e) => {
      configPromise = null; // allow a retry after a failed load
      throw e instanceof ApiError ? e : new ApiError(0, "config_unavailable", "the dashboard configuration could not be loaded");
    });
  }
  return configPromise;
}

// ---- session (sessionStorage: survives a reload, not a new tab; never a cookie) ----

export const session = {
  get() {
    try { return JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null"); } catch { return null; }
  },
  set(s) { sessionStorage.setItem(TOKEN_KEY, JSON.stringify(s)); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

// Called when a request is answered 401 with a session in place (token revoked/expired).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** fetch() against a service with JSON in/out and SPEC errors. */
export async function http(base, path, { method = "GET", body, auth = true, headers = {}, raw = false } = {}) {
  const cfg = await loadConfig();
  const url = (cfg[base] ?? base) + path;
  const h = { ...headers };
  const s = session.get();
  if (auth && s) h.Authorization = "Bearer " + s.access_token;
  let payload;
  if (body !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, { method, headers: h, body: payload, credentials: "omit", cache: "no-store" });
  } catch {
    throw new ApiError(0, "network_error", "the service could not be reached; check your connection");
  }
  if (raw && resp.ok) return resp;
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  if (!resp.ok) {
    const err = toApiError(resp.status, data, `request failed (HTTP ${resp.status})`);
    if (resp.status === 401 && auth && s) onUnauthorized(err);
    throw err;
  }
  return data;
}

// ---- auth ----

export async function signup(user_name, password) {
  const r = await http("auth", "/auth/signup", { method: "POST", body: { user_name, password }, auth: false });
  session.set(r);
  return r;
}

export async function login(user_name, password) {
  const r = await http("auth", "/auth/login/" + encodeURIComponent(user_name),
    { method: "PUT", body: { password }, auth: false });
  session.set(r);
  return r;
}

export async function logout() {
  const s = session.get();
  session.clear();
  if (s) {
    const cfg = await loadConfig();
    // Best effort: the local session is gone whatever the server answers.
    await fetch(cfg.auth + "/auth/logout/" + encodeURIComponent(s.user_name), {
      method: "PUT", headers: { Authorization: "Bearer " + s.access_token }, credentials: "omit",
    }).catch(() => {});
  }
}

export const validate = () => http("auth", "/auth/validate");
export const listPools = () => http("auth", "/auth/pools");
export const listUsers = () => http("auth", "/auth/users");
export const createPool = (body) => http("auth", "/auth/pools", { method: "POST", body });
export const listMembers = (poolId) => http("auth", `/auth/pools/${encodeURIComponent(poolId)}/members`);
export const addMember = (poolId, user_name, role) =>
  http("auth", `/auth/pools/${encodeURIComponent(poolId)}/members`, { method: "POST", body: { user_name, role } });
export const removeMember = (poolId, userName) =>
  http("auth", `/auth/pools/${encodeURIComponent(poolId)}/members/${encodeURIComponent(userName)}`, { method: "DELETE" });
export const issueKey = (poolId) =>
  http("auth", `/auth/pools/${encodeURIComponent(poolId)}/processor-keys`, { method: "POST", body: {} });
export const listKeys = (poolId) => http("auth", `/auth/pools/${encodeURIComponent(poolId)}/processor-keys`);
export const revokeKey = (poolId, keyId) =>
  http("auth", `/auth/pools/${encodeURIComponent(poolId)}/processor-keys/${encodeURIComponent(keyId)}`, { method: "DELETE" });
export const listGroups = (poolId) => http("aggregator", `/pools/${encodeURIComponent(poolId)}/groups`);
export const listResultsHttp = (poolId) => http("aggregator", `/pools/${encodeURIComponent(poolId)}/results`);
/** A result's staging status (admin): `{targets: [{kind, status, attempts, location?, error?}]}`. */
export const resultStaging = (poolId, resultId) =>
  http("aggregator", `/pools/${encodeURIComponent(poolId)}/results/${encodeURIComponent(resultId)}/staging`);
export function listAudit(params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== ""));
  return http("fsm", "/audit" + (q.toString() ? "?" + q : ""));
}

/** Picks the list out of a response that may be `{key: [...]}` or a bare array. */
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of keys) if (data && Array.isArray(data[k])) return data[k];
  return [];
}

function fileNameFrom(disposition, fallback) {
  if (!disposition) return fallback;
  const star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(disposition);
  if (star) { try { return decodeURIComponent(star[1].trim().replace(/^"|"$/g, "")); } catch { /* fall through */ } }
  const plain = /filename="?([^";]+)"?/i.exec(disposition);
  return plain ? plain[1] : fallback;
}

/**
 * Downloads GET <fsm>/file/<id>: a link cannot carry the Bearer header, so the
 * bytes are fetched, turned into a Blob and saved through an object URL.
 */
export async function downloadFile(fileId, fallbackName) {
  const resp = await http("fsm", "/file/" + encodeURIComponent(fileId), { raw: true });
  const name = fileNameFrom(resp.headers.get("Content-Disposition"), fallbackName || fileId);
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.rel = "noopener";
  document.body.appendChild(a);
  a.click();
  a.remove();
  // Revoke later: revoking at once can cancel the save in some browsers.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size };
}

// ---- Socket.IO ----

/**
 * One Socket.IO connection with the session's token; `request` sends an event
 * with an acknowledgement and resolves with the ack, or rejects with ApiError
 * (SPEC's error ack, a timeout, or a lost connection).
 */
export class Gateway extends EventTarget {
  constructor(url, token) {
    super();
    this.socket = io(url, {
      auth: { token },
      transports: ["websocket"],
      reconnection: true,
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    const fire = (type, detail) => this.dispatchEvent(new CustomEvent(type, { detail }));
    this.socket.on("connect", () => fire("connect"));
    this.socket.on("disconnect", (reason) => fire("disconnect", reason));
    this.socket.on("connect_error", (err) => fire("connect_error", err));
    this.socket.on("file-status", (m) => fire("file-status", m));
    this.socket.on("pool-result", (m) => fire("pool-result", m));
    this.socket.on("group-status", (m) => fire("group-status", m));
  }

  get connected() { return this.socket.connected; }

  /** Resolves once connected (or at once when already connected). */
  waitConnected() {
    if (this.socket.connected) return Promise.resolve();
    return new Promise((resolve) => this.socket.once("connect", () => resolve()));
  }

  async request(event, payload = {}, timeoutMs = 30_000) {
    if (!this.socket.connected) throw new ApiError(0, "disconnected", "not connected to the gateway");
    let ack;
    try {
      ack = await this.socket.timeout(timeoutMs).emitWithAck(event, payload);
    } catch {
      throw new ApiError(0, this.socket.connected ? "timeout" : "disconnected",
        this.socket.connected ? `no answer to ${event} in time` : "the connection was lost");
    }
    if (ack && typeof ack === "object" && ack.error) throw toApiError(0, ack, `${event} failed`);
    return ack;
  }

  close() { this.socket.disconnect(); }
}
