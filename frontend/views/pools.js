// The pools screen: each of the caller's pools with its groups and results.

import * as api from "../api.js";
import { formatBytes } from "../upload.js";
import { busy, download, errorBox, fmtTime, h, notify } from "../dom.js";
import { isAdmin, myPoolRole, poolName, refreshPools, state } from "../state.js";

// An admin sees every pool: one card each, and each card asks for its groups (HTTP) and its
// results (a socket event). Asked all at once, a few hundred pools passed the gateway's cap on
// events in flight per socket (64) and the cards past it showed `overloaded`. At most
// LOADS_AT_ONCE cards load at a time; the rest wait their turn (a queue bounded by the pools).
const LOADS_AT_ONCE = 4;
let loading = 0;
const waiting = [];

function inTurn(task) {
  return new Promise((resolve) => {
    // Promise.resolve().then: a task that throws at once still frees its turn.
    waiting.push(() => Promise.resolve().then(task).finally(() => {
      loading -= 1;
      if (waiting.length) { loading += 1; waiting.shift()(); }
      resolve();
    }));
    if (loading < LOADS_AT_ONCE) { loading += 1; waiting.shift()(); }
  });
}

/** One line per staging target: its kind, a status badge, attempts, and where it went or why not. */
async function loadStaging(box, poolId, resultId) {
  try {
    const targets = api.listOf(await api.resultStaging(poolId, resultId), "targets");
    if (!targets.length) { box.replaceChildren(h("p", { class: "muted" }, "No staging targets.")); return; }
    box.replaceChildren(h("ul", { class: "staging" }, targets.map((t) => h("li", { dataset: { stagingKind: t.kind } },
      h("span", {}, t.kind), " ",
      h("span", { class: "badge staging-" + t.status }, t.status), " ",
      h("span", { class: "muted" }, `${t.attempts} attempt${t.attempts === 1 ? "" : "s"}`),
      t.location ? [" · ", h("code", {}, t.location)] : [],
      t.error ? [" · ", h("span", { class: "error" }, t.error)] : []))));
  } catch (e) {
    box.replaceChildren(h("p", { class: "error" }, e.message));
  }
}

async function renderResults(box, poolId) {
  const list = state.results.get(poolId) || [];
  if (!list.length) { box.replaceChildren(h("p", { class: "muted" }, "No results yet.")); return; }
  box.replaceChildren(h("ul", { class: "results" }, list.map((r) => {
    const btn = h("button", { type: "button", class: "small", "aria-label": `Download result ${r.file_name}` }, "Download");
    btn.addEventListener("click", () => download(r.result_id, r.file_name, btn));
    // Staging status is the admin's to see (SPEC: admin or the pool's key); loaded on demand.
    const staging = h("div", { dataset: { stagingFor: r.result_id }, "aria-live": "polite" });
    const stagingBtn = isAdmin()
      ? h("button", { type: "button", class: "small secondary", "aria-label": `Staging of result ${r.file_name}` }, "Staging")
      : null;
    stagingBtn?.addEventListener("click", () => busy(stagingBtn, null, () => loadStaging(staging, poolId, r.result_id)));
    return h("li", { dataset: { resultId: r.result_id } },
      h("span", { class: "fname" }, r.file_name), " ",
      h("span", { class: "muted" }, `${formatBytes(r.size)} · ${fmtTime(r.created || r.window_end)}`), " ", btn,
      stagingBtn ? [" ", stagingBtn] : [], staging);
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
  // A card no longer on the page (the screen was left meanwhile) gives its turn away unloaded.
  if (canSee) {
    inTurn(() => (groups.isConnected ? Promise.all([loadGroups(groups, p.pool_id), loadResults(results, p.pool_id)])
      : undefined));
  }
  return h("article", { class: "card pool", dataset: { poolId: p.pool_id }, "aria-labelledby": `pool-${p.pool_id}` },
    h("div", { class: "title-row" }, h("h2", { id: `pool-${p.pool_id}` }, p.name || p.pool_id), refresh),
    h("p", { class: "muted" },
      `Your role: ${role || (isAdmin() ? "admin (not a member)" : "—")} · window ${p.window_seconds ?? "?"} s · id `,
      h("code", {}, p.pool_id)),
    h("h3", {}, "Groups"), groups,
    h("h3", {}, "Results"), results);
}

export function viewPools() {
  const list = h("div", { class: "pools" }, h("p", { class: "muted" }, "Loading…"));
  const err = errorBox();
  refreshPools().then((pools) => {
    list.replaceChildren(...(pools.length ? pools.map(poolCard)
      : [h("p", { class: "muted" }, "You are not a member of any pool.")]));
  }).catch((e) => { err.show(e); list.replaceChildren(); });
  return h("section", {}, h("h1", {}, "My pools"), err, list);
}

/** A pool-result push: a notice to download it, and the pool's card when on screen. */
export function onPoolResult(msg) {
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

// Pools whose group table waits for a reload after group-status pushes: one reload per pool
// at most every 2 s, however many groups change (a burst of pushes is one request).
const groupReloads = new Map();

/** A group-status push (SPEC): the group's row follows at once (a new group: the table reloads,
 * debounced); a failed or short group is also told. */
export function onGroupStatus(msg) {
  if (!msg || !msg.pool_id || !msg.group_id || typeof msg.status !== "string") return;
  const box = document.querySelector(`[data-groups-for="${CSS.escape(msg.pool_id)}"]`);
  const row = box?.querySelector(`tr[data-group-id="${CSS.escape(msg.group_id)}"]`);
  const badge = row?.querySelector(".badge");
  if (badge) {
    badge.textContent = msg.short ? `${msg.status} (short)` : msg.status;
    badge.className = "badge group-" + msg.status;
  } else if (box && !groupReloads.has(msg.pool_id)) {
    groupReloads.set(msg.pool_id, setTimeout(() => {
      groupReloads.delete(msg.pool_id);
      const now = document.querySelector(`[data-groups-for="${CSS.escape(msg.pool_id)}"]`);
      if (now) loadGroups(now, msg.pool_id);
    }, 2000));
  }
  if (msg.status === "failed" || msg.short) {
    const why = msg.status === "failed" ? `failed${msg.reason ? ` (${msg.reason})` : ""}`
      : `${msg.status}, short of contributors`;
    notify(`Group ${msg.group_id} in pool ${poolName(msg.pool_id)}: ${why}`,
      { kind: msg.status === "failed" ? "error" : "info" });
  }
}
