// The dashboard: a hash router, the session's state and the views.
// Every element is built with h() (textContent, never innerHTML) so names and
// messages from the server cannot inject markup.

import * as api from "./api.js";
import { UploadTask, formatBytes, formatRate, mergeStatus } from "./upload.js";

// ---------------------------------------------------------------- helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);
const shortId = (id) => (id ? String(id).slice(0, 8) : "—");
const shortHash = (s) => (s ? String(s).slice(0, 12) : "—");

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

const STATUS_LABEL = {
  queued: "queued", uploading: "uploading", paused: "paused", waiting: "waiting",
  cached: "cached", retrying: "retrying", uploaded_successfully: "uploaded", upload_failed: "failed", error: "error",
};

function statusBadge(status) {
  return h("span", { class: "badge status-" + (status || "unknown"), dataset: { status: status || "" } },
    STATUS_LABEL[status] || status || "unknown");
}

/** An error paragraph read out by screen readers when it appears. */
function errorBox() {
  const el = h("p", { class: "error", role: "alert", hidden: true });
  el.show = (err) => {
    el.textContent = err ? (err.message || String(err)) : "";
    el.hidden = !err;
  };
  return el;
}

/** Runs `fn`, disabling `button` meanwhile and showing a failure in `box`. */
async function busy(button, box, fn) {
  if (button) button.disabled = true;
  box?.show(null);
  try {
    return await fn();
  } catch (err) {
    if (box) box.show(err); else notify(err.message || String(err), { kind: "error" });
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function notify(text, { kind = "info", action = null, sticky = false } = {}) {
  const box = $("#notices");
  const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss notification" }, "×");
  const note = h("div", { class: "notice notice-" + kind, role: kind === "error" ? "alert" : null },
    h("span", { class: "notice-text" }, text), action, close);
  close.addEventListener("click", () => note.remove());
  box.prepend(note);
  while (box.children.length > 6) box.lastElementChild.remove();
  if (!sticky) setTimeout(() => note.remove(), 15_000);
  return note;
}

function download(fileId, name, button) {
  return busy(button, null, async () => {
    await api.downloadFile(fileId, name);
  });
}

// ---------------------------------------------------------------- state

const state = {
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

const isAdmin = () => state.me?.role === "admin";
const poolName = (id) => state.pools.find((p) => p.pool_id === id)?.name || (id ? shortId(id) : "private");
const myPoolRole = (id) => state.pools.find((p) => p.pool_id === id)?.role
  || state.me?.pools?.find((p) => p.pool_id === id)?.role || null;

// ---------------------------------------------------------------- session

async function startSession(identity) {
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

function endSession(message) {
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
  else route();
}

async function refreshPools() {
  state.pools = api.listOf(await api.listPools(), "pools");
  return state.pools;
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
    gw.addEventListener("file-status", (e) => onFileStatus(e.detail));
    gw.addEventListener("pool-result", (e) => onPoolResult(e.detail));
  });
}

function onFileStatus(msg) {
  if (!msg || !msg.file_id) return;
  for (const t of state.uploads) if (t.fileId === msg.file_id) t.applyStatus(msg);
  if (state.history) {
    const rec = state.history.find((r) => r.file_id === msg.file_id);
    if (rec) rec.status = mergeStatus(rec.status, msg.status);
    else scheduleHistoryReload();
  }
  const row = document.querySelector(`tr[data-file-id="${CSS.escape(msg.file_id)}"]`);
  if (row) {
    const rec = state.history?.find((r) => r.file_id === msg.file_id);
    const cell = row.querySelector(".cell-status");
    if (cell) cell.replaceChildren(statusBadge(rec ? rec.status : msg.status));
    const btn = row.querySelector("button.download");
    if (btn) btn.disabled = (rec ? rec.status : msg.status) !== "uploaded_successfully";
  }
  if (isAdmin()) {
    state.feed.unshift({ ...msg, at: new Date().toISOString() });
    state.feed.length = Math.min(state.feed.length, 100);
    const list = $("#feed");
    if (list) {
      list.prepend(feedItem(state.feed[0]));
      while (list.children.length > 100) list.lastElementChild.remove();
    }
  }
}

let historyTimer = null;
function scheduleHistoryReload() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => { if (state.view === "history") loadHistory(); }, 600);
}

function onPoolResult(msg) {
  if (!msg || !msg.pool_id) return;
  const list = state.results.get(msg.pool_id) || [];
  if (!list.some((r) => r.result_id === msg.result_id)) list.unshift(msg);
  state.results.set(msg.pool_id, list);
  const btn = h("button", { type: "button", class: "small", "aria-label": `Download result ${msg.file_name}` }, "Download");
  btn.addEventListener("click", () => download(msg.result_id, msg.file_name, btn));
  notify(`New result in pool ${poolName(msg.pool_id)}: ${msg.file_name} (${formatBytes(msg.size)})`,
    { kind: "result", action: btn, sticky: true });
  const box = document.querySelector(`[data-results-for="${CSS.escape(msg.pool_id)}"]`);
  if (box) renderResults(box, msg.pool_id);
  // The result closed a group: show its new state too.
  const groups = document.querySelector(`[data-groups-for="${CSS.escape(msg.pool_id)}"]`);
  if (groups) loadGroups(groups, msg.pool_id);
}

// ---------------------------------------------------------------- router

const VIEWS = { login: viewLogin, upload: viewUpload, history: viewHistory, pools: viewPools, admin: viewAdmin };

function route() {
  let name = (location.hash.replace(/^#\/?/, "").split("/")[0]) || "";
  if (!state.me) name = "login";
  else if (!VIEWS[name] || name === "login") name = "upload";
  if (name === "admin" && !isAdmin()) name = "upload";
  state.view = name;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = $("#view");
  main.replaceChildren(VIEWS[name]());
  document.title = `File Dropbox — ${name[0].toUpperCase()}${name.slice(1)}`;
  // Move focus to the new screen's heading so keyboard and screen reader users land there.
  const heading = main.querySelector("h1");
  if (heading && routed) { heading.tabIndex = -1; heading.focus(); }
  routed = true;
}
let routed = false; // the first screen keeps the browser's default focus

// ---------------------------------------------------------------- login / signup

function credentialsForm(kind) {
  const id = kind;
  const err = errorBox();
  const submit = h("button", { type: "submit" }, kind === "login" ? "Log in" : "Create account");
  const form = h("form", { class: "card", id: `${id}-form`, "aria-labelledby": `${id}-title`, novalidate: true },
    h("h2", { id: `${id}-title` }, kind === "login" ? "Log in" : "Sign up"),
    h("label", { for: `${id}-user` }, "User name"),
    h("input", { id: `${id}-user`, name: "user_name", autocomplete: "username", required: true,
      minlength: 3, maxlength: 64, pattern: "[A-Za-z0-9_.\\-]+", autocapitalize: "off", spellcheck: "false" }),
    kind === "signup" ? h("p", { class: "hint", id: `${id}-user-hint` }, "3–64 letters, digits, _ . -") : null,
    h("label", { for: `${id}-password` }, "Password"),
    h("input", { id: `${id}-password`, name: "password", type: "password", required: true,
      autocomplete: kind === "login" ? "current-password" : "new-password", minlength: kind === "signup" ? 8 : null }),
    kind === "signup" ? h("p", { class: "hint" }, "At least 8 characters.") : null,
    err, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = form.user_name.value.trim();
    const password = form.password.value;
    if (!user || !password) { err.show(new Error("Enter a user name and a password.")); return; }
    busy(submit, err, async () => {
      const r = kind === "login" ? await api.login(user, password) : await api.signup(user, password);
      const identity = await api.validate().catch(() => r);
      await startSession({ ...r, ...identity });
      if (location.hash === "#/upload") route(); else location.hash = "#/upload";
    });
  });
  return form;
}

function viewLogin() {
  const msg = state.loginMessage;
  state.loginMessage = "";
  return h("section", { class: "login" },
    h("h1", {}, "Welcome to File Dropbox"),
    msg ? h("p", { class: "info", role: "status" }, msg) : null,
    h("div", { class: "grid two" }, credentialsForm("login"), credentialsForm("signup")));
}

// ---------------------------------------------------------------- upload

function contributorPools() {
  return state.pools.filter((p) => myPoolRole(p.pool_id) === "contributor");
}

function uploadRow(task) {
  const name = task.file.name;
  const progress = h("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${name}` });
  const pct = h("span", { class: "pct" }, "0%");
  const speed = h("span", { class: "speed", "aria-label": "speed" }, "");
  const status = h("span", { class: "upload-status", "aria-live": "polite" }, statusBadge(task.status));
  const msg = h("span", { class: "msg" });
  const toggle = h("button", { type: "button", class: "small secondary" }, "Pause");
  toggle.addEventListener("click", () => {
    if (task.paused || task.status === "error") task.resume(); else task.pause();
  });
  const li = h("li", { class: "upload", dataset: { localId: task.localId, status: task.status } },
    h("div", { class: "upload-head" },
      h("strong", { class: "fname" }, name),
      h("span", { class: "muted" }, formatBytes(task.size)),
      task.poolId ? h("span", { class: "muted" }, `pool ${poolName(task.poolId)}`) : null),
    progress,
    h("div", { class: "upload-meta" }, pct, speed, status, msg, toggle));

  let lastStatus = null;
  const paint = () => {
    const p = Math.floor(task.fraction * 100);
    progress.value = p;
    progress.setAttribute("aria-valuetext", `${p}%`);
    pct.textContent = `${p}%`;
    speed.textContent = task.status === "uploading" ? formatRate(task.speed.rate()) : "";
    if (task.status !== lastStatus) {
      status.replaceChildren(statusBadge(task.status));
      lastStatus = task.status;
    }
    li.dataset.status = task.status;
    li.dataset.fileId = task.fileId || "";
    msg.textContent = task.message || "";
    const canToggle = !task.done && task.status !== "queued";
    toggle.hidden = !canToggle;
    toggle.textContent = task.paused ? "Resume" : task.status === "error" ? "Retry" : "Pause";
    toggle.setAttribute("aria-label", `${toggle.textContent} upload of ${name}`);
  };
  // Repaint at most once per frame: chunk acks can arrive faster than that.
  let queued = false;
  task.onChange = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; paint(); });
  };
  paint();
  return li;
}

function startUploads(files, poolId, timestamp) {
  document.getElementById("no-uploads")?.remove();
  for (const file of files) {
    const task = new UploadTask(file, state.gateway, { poolId, timestamp });
    state.uploads.unshift(task);
    state.uploadList.prepend(uploadRow(task));
    task.start();
  }
}

function viewUpload() {
  const pools = contributorPools();
  const poolSelect = h("select", { id: "upload-pool", name: "pool_id" },
    h("option", { value: "" }, "Private (no pool)"),
    pools.map((p) => h("option", { value: p.pool_id }, p.name || p.pool_id)));
  const ts = h("input", { id: "upload-ts", type: "datetime-local", step: 1, "aria-describedby": "upload-ts-hint" });
  const input = h("input", { id: "upload-files", type: "file", multiple: true, class: "visually-hidden" });
  const err = errorBox();
  const take = (files) => {
    err.show(null);
    if (!files.length) return;
    if (!state.gateway) { err.show(new Error("Not connected to the gateway yet.")); return; }
    let stamp = "";
    if (ts.value) {
      const d = new Date(ts.value);
      if (Number.isNaN(d.getTime())) { err.show(new Error("The timestamp is not a valid date.")); return; }
      stamp = d.toISOString();
    }
    startUploads(Array.from(files), poolSelect.value, stamp);
  };
  input.addEventListener("change", () => { take(input.files); input.value = ""; });
  const drop = h("label", { for: "upload-files", class: "dropzone", tabindex: 0, role: "button",
    "aria-describedby": "drop-hint" },
  h("strong", {}, "Choose files"), h("span", { id: "drop-hint" }, " or drop them here — uploads start at once"));
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  for (const t of ["dragenter", "dragover"]) {
    drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const t of ["dragleave", "drop"]) drop.addEventListener(t, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); take(e.dataTransfer.files); });

  return h("section", {},
    h("h1", {}, "Upload files"),
    h("div", { class: "card" },
      h("div", { class: "grid two" },
        h("div", {},
          h("label", { for: "upload-pool" }, "Pool"), poolSelect,
          h("p", { class: "hint" }, pools.length ? "Only pools where you are a contributor." : "You contribute to no pool yet.")),
        h("div", {},
          h("label", { for: "upload-ts" }, "Timestamp (optional)"), ts,
          h("p", { class: "hint", id: "upload-ts-hint" }, "When the update was produced; default: now."))),
      input, drop, err),
    h("h2", {}, "Transfers"),
    state.uploads.length ? null : h("p", { class: "muted", id: "no-uploads" }, "No uploads in this session yet."),
    state.uploadList);
}

// ---------------------------------------------------------------- history

const HISTORY_COLUMNS = [
  { key: "file_name", label: "Name" },
  { key: "owner_name", label: "Owner", admin: true },
  { key: "size", label: "Size", num: true },
  { key: "status", label: "Status" },
  { key: "sha256", label: "SHA-256" },
  { key: "pool_id", label: "Pool" },
  { key: "timestamp", label: "Timestamp" },
  { key: "created", label: "Created" },
];

async function loadHistory() {
  const box = $("#history-body");
  const err = $("#history-error");
  try {
    if (!state.gateway) throw new Error("Not connected to the gateway yet.");
    await Promise.race([state.gateway.waitConnected(),
      new Promise((_, rej) => setTimeout(() => rej(new Error("Not connected to the gateway.")), 10_000))]);
    const r = await state.gateway.request("get-history", {});
    state.history = api.listOf(r, "files");
    err?.show(null);
  } catch (e) {
    err?.show(e);
  }
  if (box && state.view === "history") renderHistoryTable(box);
}

function sortedHistory() {
  const { key, dir } = state.historySort;
  const col = HISTORY_COLUMNS.find((c) => c.key === key);
  return (state.history || []).slice().sort((a, b) => {
    let x = a[key]; let y = b[key];
    if (col?.num) { x = Number(x) || 0; y = Number(y) || 0; } else { x = String(x ?? ""); y = String(y ?? ""); }
    return (x < y ? -1 : x > y ? 1 : 0) * dir;
  });
}

function renderHistoryTable(box) {
  const cols = HISTORY_COLUMNS.filter((c) => !c.admin || isAdmin());
  if (state.history === null) { box.replaceChildren(h("p", { class: "muted" }, "Loading…")); return; }
  if (state.history.length === 0) { box.replaceChildren(h("p", { class: "muted" }, "No files yet.")); return; }
  const head = h("tr", {}, cols.map((c) => {
    const active = state.historySort.key === c.key;
    const btn = h("button", { type: "button", class: "sort" }, c.label,
      h("span", { "aria-hidden": "true" }, active ? (state.historySort.dir > 0 ? " ▲" : " ▼") : ""));
    btn.addEventListener("click", () => {
      state.historySort = { key: c.key, dir: active ? -state.historySort.dir : 1 };
      renderHistoryTable(box);
      box.querySelector(`th[data-key="${c.key}"] button`)?.focus();
    });
    return h("th", { scope: "col", dataset: { key: c.key },
      "aria-sort": active ? (state.historySort.dir > 0 ? "ascending" : "descending") : null }, btn);
  }), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")));
  const rows = sortedHistory().map((r) => {
    const btn = h("button", { type: "button", class: "small download", "aria-label": `Download ${r.file_name}`,
      disabled: r.status !== "uploaded_successfully" }, "Download");
    btn.addEventListener("click", () => download(r.file_id, r.file_name, btn));
    const cells = {
      file_name: h("td", { class: "cell-name" }, r.file_name, r.late ? h("span", { class: "badge" }, "late") : null),
      owner_name: h("td", {}, r.owner_name || shortId(r.owner_id)),
      size: h("td", { class: "num" }, formatBytes(r.size)),
      status: h("td", { class: "cell-status" }, statusBadge(r.status)),
      sha256: h("td", { class: "mono", title: r.sha256 || "" }, shortHash(r.sha256)),
      pool_id: h("td", {}, r.pool_id ? poolName(r.pool_id) : "—"),
      timestamp: h("td", {}, fmtTime(r.timestamp)),
      created: h("td", {}, fmtTime(r.created)),
    };
    return h("tr", { dataset: { fileId: r.file_id } }, cols.map((c) => cells[c.key]), h("td", {}, btn));
  });
  box.replaceChildren(h("div", { class: "table-wrap" },
    h("table", { class: "data", id: "history-table" },
      h("caption", { class: "visually-hidden" }, "Your files; column headers sort the table"),
      h("thead", {}, head), h("tbody", {}, rows))));
}

function viewHistory() {
  const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  const err = errorBox();
  err.id = "history-error";
  refresh.addEventListener("click", () => busy(refresh, err, loadHistory));
  const body = h("div", { id: "history-body" });
  renderHistoryTable(body);
  queueMicrotask(() => loadHistory());
  return h("section", {},
    h("div", { class: "title-row" }, h("h1", {}, isAdmin() ? "All files" : "My files"), refresh),
    err, body);
}

// ---------------------------------------------------------------- pools

async function renderResults(box, poolId) {
  const list = state.results.get(poolId) || [];
  if (!list.length) { box.replaceChildren(h("p", { class: "muted" }, "No results yet.")); return; }
  box.replaceChildren(h("ul", { class: "results" }, list.map((r) => {
    const btn = h("button", { type: "button", class: "small", "aria-label": `Download result ${r.file_name}` }, "Download");
    btn.addEventListener("click", () => download(r.result_id, r.file_name, btn));
    return h("li", { dataset: { resultId: r.result_id } },
      h("span", { class: "fname" }, r.file_name), " ",
      h("span", { class: "muted" }, `${formatBytes(r.size)} · ${fmtTime(r.created || r.window_end)}`), " ", btn);
  })));
}

async function loadResults(box, poolId) {
  try {
    await state.gateway?.waitConnected();
    const r = await state.gateway.request("get-results", { pool_id: poolId });
    const fresh = api.listOf(r, "results");
    const known = state.results.get(poolId) || [];
    const byId = new Map([...known, ...fresh].map((x) => [x.result_id, x]));
    state.results.set(poolId, [...byId.values()].sort((a, b) => String(b.created || "").localeCompare(String(a.created || ""))));
    renderResults(box, poolId);
  } catch (e) {
    box.replaceChildren(h("p", { class: "error" }, e.message));
  }
}

async function loadGroups(box, poolId) {
  try {
    const groups = api.listOf(await api.listGroups(poolId), "groups");
    if (!groups.length) { box.replaceChildren(h("p", { class: "muted" }, "No groups yet.")); return; }
    groups.sort((a, b) => String(b.window_start).localeCompare(String(a.window_start)));
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("caption", { class: "visually-hidden" }, "Groups of this pool"),
      h("thead", {}, h("tr", {}, ["Window start", "Window end", "Status", "Files", "Bytes"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, groups.map((g) => h("tr", { dataset: { groupId: g.group_id } },
        h("td", {}, fmtTime(g.window_start)), h("td", {}, fmtTime(g.window_end)),
        h("td", {}, h("span", { class: "badge group-" + g.status }, g.status)),
        h("td", { class: "num" }, g.file_count ?? "—"), h("td", { class: "num" }, formatBytes(g.bytes))))))));
  } catch (e) {
    box.replaceChildren(h("p", { class: "error" }, e.message));
  }
}

function poolCard(p) {
  const role = myPoolRole(p.pool_id);
  const groups = h("div", { dataset: { groupsFor: p.pool_id } }, h("p", { class: "muted" }, "Loading…"));
  const results = h("div", { dataset: { resultsFor: p.pool_id }, "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const refresh = h("button", { type: "button", class: "small secondary", "aria-label": `Refresh pool ${p.name}` }, "Refresh");
  refresh.addEventListener("click", () => busy(refresh, null, () => Promise.all([loadGroups(groups, p.pool_id), loadResults(results, p.pool_id)])));
  const canSee = role || isAdmin();
  if (canSee) { loadGroups(groups, p.pool_id); loadResults(results, p.pool_id); }
  return h("article", { class: "card pool", dataset: { poolId: p.pool_id }, "aria-labelledby": `pool-${p.pool_id}` },
    h("div", { class: "title-row" }, h("h2", { id: `pool-${p.pool_id}` }, p.name || p.pool_id), refresh),
    h("p", { class: "muted" },
      `Your role: ${role || (isAdmin() ? "admin (not a member)" : "—")} · window ${p.window_seconds ?? "?"} s · id `,
      h("code", {}, p.pool_id)),
    h("h3", {}, "Groups"), groups,
    h("h3", {}, "Results"), results);
}

function viewPools() {
  const list = h("div", { class: "pools" }, h("p", { class: "muted" }, "Loading…"));
  const err = errorBox();
  refreshPools().then((pools) => {
    list.replaceChildren(...(pools.length ? pools.map(poolCard)
      : [h("p", { class: "muted" }, "You are not a member of any pool.")]));
  }).catch((e) => { err.show(e); list.replaceChildren(); });
  return h("section", {}, h("h1", {}, "My pools"), err, list);
}

// ---------------------------------------------------------------- admin

function feedItem(ev) {
  return h("li", {}, h("time", { datetime: ev.at }, new Date(ev.at).toLocaleTimeString()), " ",
    h("code", {}, shortId(ev.file_id)), " ", statusBadge(ev.status),
    ev.attempt ? ` attempt ${ev.attempt}` : "", ev.reason ? ` — ${ev.reason}` : "");
}

async function loadUsers(box) {
  try {
    const users = api.listOf(await api.listUsers(), "users");
    for (const u of users) state.userNames.set(u.user_id, u.user_name);
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { class: "data", id: "users-table" },
      h("caption", { class: "visually-hidden" }, "Users"),
      h("thead", {}, h("tr", {}, ["User", "Role", "Created", "Id"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, users.map((u) => h("tr", {}, h("td", {}, u.user_name), h("td", {}, u.role),
        h("td", {}, fmtTime(u.created)), h("td", { class: "mono" }, shortId(u.user_id))))))));
  } catch (e) { box.replaceChildren(h("p", { class: "error" }, e.message)); }
}

async function loadMembers(box, poolId) {
  try {
    const members = api.listOf(await api.listMembers(poolId), "members");
    if (!members.length) { box.replaceChildren(h("p", { class: "muted" }, "No members.")); return; }
    box.replaceChildren(h("ul", { class: "members" }, members.map((m) => {
      const rm = h("button", { type: "button", class: "small danger", "aria-label": `Remove ${m.user_name} from the pool` }, "Remove");
      rm.addEventListener("click", () => busy(rm, null, async () => {
        await api.removeMember(poolId, m.user_name);
        notify(`${m.user_name} removed.`);
        await loadMembers(box, poolId);
      }));
      return h("li", {}, h("span", {}, m.user_name), " ", h("span", { class: "badge" }, m.role), " ", rm);
    })));
  } catch (e) { box.replaceChildren(h("p", { class: "error" }, `Members: ${e.message}`)); }
}

async function loadKeys(box, poolId) {
  try {
    const keys = api.listOf(await api.listKeys(poolId), "keys", "processor_keys");
    if (!keys.length) { box.replaceChildren(h("p", { class: "muted" }, "No processor keys.")); return; }
    box.replaceChildren(h("ul", { class: "keys" }, keys.map((k) => {
      const revoked = k.revoked || k.revoked_at;
      const rv = h("button", { type: "button", class: "small danger", "aria-label": `Revoke key ${k.key_id}` }, "Revoke");
      rv.addEventListener("click", () => busy(rv, null, async () => {
        await api.revokeKey(poolId, k.key_id);
        notify("Key revoked.");
        await loadKeys(box, poolId);
      }));
      return h("li", {}, h("code", {}, k.key_id), ` created ${fmtTime(k.created)} `,
        revoked ? h("span", { class: "badge status-upload_failed" }, "revoked") : rv);
    })));
  } catch (e) { box.replaceChildren(h("p", { class: "error" }, `Keys: ${e.message}`)); }
}

function adminPool(p) {
  const members = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const keys = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const pid = p.pool_id;
  const addErr = errorBox();
  const addBtn = h("button", { type: "submit", class: "small" }, "Add member");
  const addForm = h("form", { class: "inline" },
    h("label", { for: `add-user-${pid}` }, "User name"),
    h("input", { id: `add-user-${pid}`, name: "user_name", required: true, autocapitalize: "off" }),
    h("label", { for: `add-role-${pid}` }, "Role"),
    h("select", { id: `add-role-${pid}`, name: "role" },
      h("option", { value: "contributor" }, "contributor"), h("option", { value: "listener" }, "listener")),
    addBtn, addErr);
  addForm.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(addBtn, addErr, async () => {
      await api.addMember(pid, addForm.user_name.value.trim(), addForm.role.value);
      addForm.user_name.value = "";
      await loadMembers(members, pid);
    });
  });
  const keyOut = h("div", { class: "key-once", "aria-live": "polite" });
  const issue = h("button", { type: "button", class: "small" }, "Issue processor key");
  issue.addEventListener("click", () => busy(issue, null, async () => {
    const r = await api.issueKey(pid);
    const out = h("output", { class: "mono secret", id: `key-${pid}` }, r.api_key);
    const copy = h("button", { type: "button", class: "small secondary" }, "Copy");
    copy.addEventListener("click", () => navigator.clipboard?.writeText(r.api_key).then(() => notify("Key copied.")));
    keyOut.replaceChildren(h("p", { class: "warn" }, "Copy this key now: it is shown only once."), out, " ", copy);
    await loadKeys(keys, pid);
  }));
  const details = h("details", { class: "card", dataset: { poolId: pid } },
    h("summary", {}, h("strong", {}, p.name || pid), h("span", { class: "muted" }, ` · window ${p.window_seconds}s · `), h("code", {}, shortId(pid))),
    h("h3", {}, "Members"), members, addForm,
    h("h3", {}, "Processor keys"), issue, keyOut, keys);
  let loaded = false;
  details.addEventListener("toggle", () => {
    if (details.open && !loaded) { loaded = true; loadMembers(members, pid); loadKeys(keys, pid); }
  });
  return details;
}

function createPoolForm(onCreated) {
  const err = errorBox();
  const submit = h("button", { type: "submit" }, "Create pool");
  const field = (name, label, attrs = {}) => [h("label", { for: `np-${name}` }, label),
    h("input", { id: `np-${name}`, name, ...attrs })];
  const form = h("form", { class: "card", id: "create-pool" },
    h("h3", {}, "Create a pool"),
    h("div", { class: "grid three" },
      h("div", {}, field("name", "Name", { required: true })),
      h("div", {}, field("window_seconds", "Window (seconds)", { type: "number", min: 1, required: true, value: 60 })),
      h("div", {}, field("close_grace_seconds", "Close grace (seconds)", { type: "number", min: 0, value: 0 })),
      h("div", {}, field("min_contributors", "Minimum contributors (optional)", { type: "number", min: 1 })),
      h("div", {}, field("processing_timeout_seconds", "Processing timeout (seconds)", { type: "number", min: 1, value: 300 })),
      h("div", {}, field("processor_url", "Processor URL (optional)", { type: "url" }))),
    err, submit);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = { name: form.name.value.trim(), window_seconds: Number(form.window_seconds.value) };
    for (const k of ["close_grace_seconds", "min_contributors", "processing_timeout_seconds"]) {
      if (form[k].value !== "") body[k] = Number(form[k].value);
    }
    if (form.processor_url.value.trim()) body.processor_url = form.processor_url.value.trim();
    busy(submit, err, async () => {
      const p = await api.createPool(body);
      notify(`Pool ${p.name || body.name} created.`);
      form.name.value = "";
      await onCreated();
    });
  });
  return form;
}

function auditTable(usersLoaded = Promise.resolve()) {
  const box = h("div", {});
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const err = errorBox();
  const filters = h("form", { class: "inline", id: "audit-filters" },
    h("label", { for: "audit-file" }, "File id"), h("input", { id: "audit-file", name: "file_id" }),
    h("label", { for: "audit-user" }, "User"), h("input", { id: "audit-user", name: "user" }),
    h("button", { type: "submit", class: "small" }, "Filter"));
  let rows = [];
  let cursor = null;
  const render = () => {
    if (!rows.length) { box.replaceChildren(h("p", { class: "muted" }, "No audit records.")); return; }
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { class: "data", id: "audit-table" },
      h("caption", { class: "visually-hidden" }, "Audit trail"),
      h("thead", {}, h("tr", {}, ["Time", "Service", "Actor", "Action", "Outcome", "File", "Pool", "Bytes"]
        .map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((a) => h("tr", {},
        h("td", {}, fmtTime(a.time)), h("td", {}, a.service), h("td", {}, state.userNames.get(a.actor) || a.actor), h("td", {}, a.action),
        h("td", {}, a.outcome), h("td", { class: "mono" }, shortId(a.file_id)), h("td", {}, a.pool_id ? poolName(a.pool_id) : "—"),
        h("td", { class: "num" }, a.bytes != null ? formatBytes(a.bytes) : "—")))))));
  };
  const load = async (append) => {
    const params = { limit: 50, file_id: filters.file_id.value.trim(), user: filters.user.value.trim() };
    if (append && cursor) params.cursor = cursor;
    const r = await api.listAudit(params);
    const page = api.listOf(r, "records", "audit", "events", "entries", "items");
    rows = append ? rows.concat(page) : page;
    cursor = r && (r.next_cursor || r.cursor) ? (r.next_cursor || r.cursor) : null;
    more.hidden = !cursor;
    render();
  };
  filters.addEventListener("submit", (e) => { e.preventDefault(); busy(null, err, () => load(false)); });
  more.addEventListener("click", () => busy(more, err, () => load(true)));
  // Actors are user ids: render once the user list can name them.
  busy(null, err, async () => { await usersLoaded.catch(() => {}); await load(false); });
  return h("div", {}, filters, err, box, more);
}

function viewAdmin() {
  const users = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const pools = h("div", { id: "admin-pools" });
  const renderPools = async () => {
    await refreshPools();
    pools.replaceChildren(...(state.pools.length ? state.pools.map(adminPool) : [h("p", { class: "muted" }, "No pools yet.")]));
  };
  renderPools().catch((e) => pools.replaceChildren(h("p", { class: "error" }, e.message)));
  const usersLoaded = loadUsers(users);
  const feed = h("ul", { id: "feed", class: "feed", "aria-live": "polite", "aria-label": "Live file status events" },
    state.feed.map(feedItem));
  return h("section", { class: "admin" },
    h("h1", {}, "Administration"),
    h("p", {}, "Every user's files are on the ", h("a", { href: "#/history" }, "History"), " page."),
    h("div", { class: "grid two" },
      h("section", { class: "card", "aria-labelledby": "feed-title" },
        h("h2", { id: "feed-title" }, "Live file status"), feed,
        h("p", { class: "hint" }, "Events appear here as they happen.")),
      h("section", { class: "card", "aria-labelledby": "users-title" }, h("h2", { id: "users-title" }, "Users"), users)),
    h("section", { "aria-labelledby": "pools-title" }, h("h2", { id: "pools-title" }, "Pools and members"),
      createPoolForm(renderPools), pools),
    h("section", { class: "card", "aria-labelledby": "audit-title" }, h("h2", { id: "audit-title" }, "Audit trail"), auditTable(usersLoaded)));
}

// ---------------------------------------------------------------- boot

async function boot() {
  api.setUnauthorizedHandler(() => {
    if (state.me) endSession("Your session has ended; please log in again.");
  });
  $("#logout").addEventListener("click", async () => {
    // Close the socket first: the server drops it on logout, which must not look like a lost session.
    state.gateway?.close();
    state.gateway = null;
    await api.logout();
    endSession("You are logged out.");
  });
  window.addEventListener("hashchange", route);
  try {
    await api.loadConfig();
  } catch (e) {
    $("#view").replaceChildren(h("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  if (api.session.get()) {
    try {
      await startSession(await api.validate());
    } catch {
      api.session.clear();
    }
  }
  route();
}

// Exposed for the browser tests and for debugging in the console.
window.dropbox = { state, api };
boot();
