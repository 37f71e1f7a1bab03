// The admin screen: live file-status feed, users, pools (members, processor keys) and the audit trail.

import * as api from "../api.js";
import { formatBytes } from "../upload.js";
import { $, busy, errorBox, fmtTime, h, notify, shortId, statusBadge } from "../dom.js";
import { isAdmin, poolName, refreshPools, state } from "../state.js";

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

export function viewAdmin() {
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

/** A file-status push: admins see it at the top of the live feed. */
export function onFileStatus(msg) {
  if (!isAdmin()) return;
  state.feed.unshift({ ...msg, at: new Date().toISOString() });
  state.feed.length = Math.min(state.feed.length, 100);
  const list = $("#feed");
  if (list) {
    list.prepend(feedItem(state.feed[0]));
    while (list.children.length > 100) list.lastElementChild.remove();
  }
}
