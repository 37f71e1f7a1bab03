// DOM helpers shared by every view. Every element is built with h() (textContent,
// never innerHTML) so names and messages from the server cannot inject markup.

import * as api from "./api.js";

export function h(tag, attrs = {}, ...children) {
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

export const $ = (sel, root = document) => root.querySelector(sel);
export const shortId = (id) => (id ? String(id).slice(0, 8) : "—");
export const shortHash = (s) => (s ? String(s).slice(0, 12) : "—");

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

const STATUS_LABEL = {
  queued: "queued", uploading: "uploading", paused: "paused", waiting: "waiting",
  cached: "cached", retrying: "retrying", uploaded_successfully: "uploaded", upload_failed: "failed", error: "error",
};

export function statusBadge(status) {
  return h("span", { class: "badge status-" + (status || "unknown"), dataset: { status: status || "" } },
    STATUS_LABEL[status] || status || "unknown");
}

/** An error paragraph read out by screen readers when it appears. */
export function errorBox() {
  const el = h("p", { class: "error", role: "alert", hidden: true });
  el.show = (err) => {
    el.textContent = err ? (err.message || String(err)) : "";
    el.hidden = !err;
  };
  return el;
}

/** Runs `fn`, disabling `button` meanwhile and showing a failure in `box`. */
export async function busy(button, box, fn) {
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

export function notify(text, { kind = "info", action = null, sticky = false } = {}) {
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

export function download(fileId, name, button) {
  return busy(button, null, async () => {
    await api.downloadFile(fileId, name);
  });
}
