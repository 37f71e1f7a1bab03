// The upload screen: choose or drop files, watch each transfer's progress.

import { formatBytes, formatRate, UploadTask } from "../upload.js";
import { errorBox, h, statusBadge } from "../dom.js";
import { myPoolRole, poolName, state } from "../state.js";

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

export function viewUpload() {
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

/** A file-status push: the upload it belongs to takes it. */
export function onFileStatus(msg) {
  for (const t of state.uploads) if (t.fileId === msg.file_id) t.applyStatus(msg);
}
