// The history screen: the caller's files (admin: everyone's), sortable, each downloadable.

import * as api from "../api.js";
import { formatBytes, mergeStatus } from "../upload.js";
import { $, busy, download, errorBox, fmtTime, h, shortHash, shortId, statusBadge } from "../dom.js";
import { isAdmin, poolName, state } from "../state.js";

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

export function viewHistory() {
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

let historyTimer = null;
function scheduleHistoryReload() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => { if (state.view === "history") loadHistory(); }, 600);
}

/** A file-status push: the record takes the new status, and its row when on screen. */
export function onFileStatus(msg) {
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
}
