// Chunked uploads over Socket.IO, the protocol every client speaks:
//   start-transfer -> write-chunk (binary, chunk_size slices) -> complete-upload,
// resumed after a lost connection with start-transfer {file_id} -> missing.
//
// The file is read one Blob.slice at a time, never whole: a 50 MB file costs at
// most `concurrency` chunks of memory. The whole-file sha256 is left to the
// server (computing it here would need the whole file in memory first).
// Everything above UploadTask is pure and exported for tests.

export const FINAL_STATUSES = new Set(["uploaded_successfully", "upload_failed"]);
const SERVER_RANK = { cached: 1, retrying: 2, uploaded_successfully: 3, upload_failed: 3 };

/** Number of chunks of a file of `size` bytes. */
export function chunkCount(size, chunkSize) {
  if (!(chunkSize > 0)) throw new RangeError("chunk_size must be positive");
  return Math.max(1, Math.ceil(size / chunkSize));
}

/** [start, end) byte range of chunk `index`. */
export function chunkBounds(index, chunkSize, size) {
  const start = index * chunkSize;
  return [start, Math.min(size, start + chunkSize)];
}

/** Total bytes of the chunks in `indexes`. */
export function bytesOf(indexes, chunkSize, size) {
  let total = 0;
  for (const i of indexes) { const [a, b] = chunkBounds(i, chunkSize, size); total += b - a; }
  return total;
}

/** The chunk indexes still to send: the server's `missing` when it gave one, else all. */
export function pendingIndexes(missing, count) {
  if (Array.isArray(missing)) {
    return [...new Set(missing.filter((i) => Number.isInteger(i) && i >= 0 && i < count))].sort((a, b) => a - b);
  }
  return Array.from({ length: count }, (_, i) => i);
}

/**
 * The status to show after `incoming` arrives: server statuses only move forward
 * (a late `cached` ack must not hide an `uploaded_successfully` pushed earlier).
 */
export function mergeStatus(current, incoming) {
  const a = SERVER_RANK[current] || 0;
  const b = SERVER_RANK[incoming] || 0;
  if (a === 3) return current;
  return b >= a ? incoming : current;
}

export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = Number(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return (u === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : 1)) + " " + units[u];
}

export function formatRate(bytesPerSecond) {
  if (!(bytesPerSecond > 0)) return "—";
  return formatBytes(bytesPerSecond) + "/s";
}

/** Transfer speed over a sliding window of recent samples. */
export class SpeedMeter {
  constructor(windowMs = 3000, now = () => performance.now()) {
    this.windowMs = windowMs;
    this.now = now;
    this.samples = [];
  }
  add(bytes) {
    const t = this.now();
    this.samples.push([t, bytes]);
    while (this.samples.length > 1 && t - this.samples[0][0] > this.windowMs) this.samples.shift();
  }
  reset() { this.samples = []; }
  rate() {
    if (this.samples.length === 0) return 0;
    const t = this.now();
    const live = this.samples.filter(([ts]) => t - ts <= this.windowMs);
    if (live.length === 0) return 0;
    const bytes = live.reduce((s, [, b]) => s + b, 0);
    const span = Math.max(t - live[0][0], 250); // a single fresh sample is not an infinite rate
    return (bytes * 1000) / span;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const RETRYABLE = new Set(["disconnected", "timeout", "network_error"]);
const CONFLICT_PATIENCE_MS = 45_000;

async function sha256Hex(buf) {
  if (!globalThis.crypto?.subtle) return undefined; // only in secure contexts; the hash is optional
  const digest = await crypto.subtle.digest("SHA-256", buf);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

let nextLocalId = 1;

/**
 * One file's upload. `gateway` needs `request(event, payload)`, `connected` and
 * `waitConnected()` (api.Gateway). State changes are reported through `onChange`.
 */
export class UploadTask {
  constructor(file, gateway, { poolId = "", timestamp = "", concurrency = 2, chunkHashes = true, onChange = () => {} } = {}) {
    this.localId = "u" + nextLocalId++;
    this.file = file;
    this.gateway = gateway;
    this.poolId = poolId || "";
    this.timestamp = timestamp || "";
    this.concurrency = Math.max(1, concurrency);
    this.chunkHashes = chunkHashes;
    this.onChange = onChange;
    this.fileId = null;
    this.chunkSize = 0;
    this.sentBytes = 0;
    this.status = "queued"; // queued|uploading|paused|waiting|cached|retrying|uploaded_successfully|upload_failed|error
    this.message = "";
    this.paused = false;
    this.running = false;
    this.speed = new SpeedMeter();
  }

  get size() { return this.file.size; }
  get fraction() { return this.size ? Math.min(1, this.sentBytes / this.size) : 1; }
  get done() { return ["cached", "retrying", "uploaded_successfully", "upload_failed"].includes(this.status); }

  set(fields) { Object.assign(this, fields); this.onChange(this); }

  /** A file-status push for this upload. */
  applyStatus(msg) {
    const status = mergeStatus(this.status, msg.status);
    let message = this.message;
    if (msg.status === "retrying") message = `store attempt ${msg.attempt ?? "?"} failed; retrying`;
    else if (msg.status === "upload_failed") message = msg.reason ? `failed: ${msg.reason}` : "the upload could not be stored";
    else if (msg.status === "uploaded_successfully") message = "";
    this.set({ status, message });
  }

  pause() {
    if (this.done || this.status === "error") return;
    this.paused = true;
    this.speed.reset();
    this.set({ status: "paused", message: "" });
  }

  resume() {
    if (!this.paused && this.status !== "error") return;
    this.paused = false;
    this.set({ status: "uploading", message: "" });
    this.start();
  }

  /** Runs until done, paused, or a failure that retrying cannot fix. Safe to call again. */
  async start() {
    if (this.running || this.done) return;
    this.running = true;
    try {
      await this.run();
    } finally {
      this.running = false;
    }
  }

  startPayload() {
    const p = { file_name: this.file.name, size: this.size };
    if (this.file.type) p.content_type = this.file.type;
    if (this.poolId) p.pool_id = this.poolId;
    if (this.timestamp) p.timestamp = this.timestamp;
    if (this.fileId) p.file_id = this.fileId;
    return p;
  }

  async run() {
    let conflictSince = 0;
    while (!this.paused && !this.done) {
      try {
        if (!this.gateway.connected) {
          this.set({ status: "waiting", message: "connection lost; will resume when it is back" });
          await this.gateway.waitConnected();
          if (this.paused) return;
        }
        this.set({ status: "uploading", message: "" });
        const ack = await this.gateway.request("start-transfer", this.startPayload());
        this.fileId = ack.file_id;
        this.chunkSize = ack.chunk_size;
        const count = chunkCount(this.size, this.chunkSize);
        const todo = pendingIndexes(ack.missing, count);
        this.set({ sentBytes: this.size - bytesOf(todo, this.chunkSize, this.size) });
        await this.sendChunks(todo);
        if (this.paused) return;
        const done = await this.gateway.request("complete-upload", { file_id: this.fileId });
        this.set({ status: mergeStatus(this.status === "uploading" ? "" : this.status, done.status || "cached"), sentBytes: this.size });
        this.speed.reset();
        return;
      } catch (err) {
        if (this.paused) return;
        if (err.code === "interrupted") continue; // paused and resumed while chunks were in flight
        if (RETRYABLE.has(err.code)) {
          this.set({ status: "waiting", message: "connection lost; will resume when it is back" });
          await sleep(300);
          continue;
        }
        if (err.code === "overloaded") {
          const wait = Math.min(60, Number(err.extra?.retry_after) || 2);
          this.set({ status: "waiting", message: `server busy; retrying in ${wait}s` });
          await sleep(wait * 1000);
          continue;
        }
        // A resumed upload may meet the old connection's writer lock: the server frees it on
        // disconnect, or it expires (30 s by default). Keep asking a little longer than that.
        if (err.code === "conflict" && this.fileId && /writing/.test(err.message || "")) {
          conflictSince = conflictSince || Date.now();
          if (Date.now() - conflictSince < CONFLICT_PATIENCE_MS) {
            this.set({ status: "waiting", message: "waiting for the previous connection to let go" });
            await sleep(2000);
            continue;
          }
        }
        this.speed.reset();
        this.set({ status: "error", message: err.message || String(err) });
        return;
      }
    }
  }

  async sendChunks(indexes) {
    const queue = indexes.slice();
    let failure = null;
    const worker = async () => {
      while (queue.length && !failure && !this.paused) {
        const index = queue.shift();
        try {
          await this.sendChunk(index);
        } catch (err) {
          failure = failure || err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, queue.length) }, worker));
    if (failure) throw failure;
    if (queue.length) {
      // Stopped by a pause: never complete an upload with chunks left unsent.
      const err = new Error("interrupted");
      err.code = "interrupted";
      throw err;
    }
  }

  async sendChunk(index) {
    const [a, b] = chunkBounds(index, this.chunkSize, this.size);
    const data = await this.file.slice(a, b).arrayBuffer();
    const payload = { file_id: this.fileId, index, data };
    if (this.chunkHashes) {
      const h = await sha256Hex(data);
      if (h) payload.sha256 = h;
    }
    await this.gateway.request("write-chunk", payload, 60_000);
    this.speed.add(b - a);
    this.set({ sentBytes: Math.min(this.size, this.sentBytes + (b - a)) });
  }
}
