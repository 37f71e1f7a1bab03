"""The dashboard's page and upload logic in a real browser, with no fleet behind it.

frontend/ is served alone (config.json names ports where nothing listens): the
page must load without console errors, show labelled forms on laptop and phone,
and upload.js's chunking and resume logic must hold in Chromium's JS engine.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_login_screen_loads_clean_and_labelled(new_page, static_site, screenshots) -> None:
    page, console = new_page()
    page.goto(static_site + "/")
    page.get_by_role("heading", name="Welcome to File Dropbox").wait_for()
    # Every field is reachable by its label (what a screen reader announces).
    for form in ("#login-form", "#signup-form"):
        scope = page.locator(form)
        assert scope.get_by_label("User name").is_visible()
        assert scope.get_by_label("Password").is_visible()
    assert page.locator("#nav").is_hidden()  # nothing but the login screen without a session
    page.screenshot(path=str(screenshots / "login.png"), full_page=True)
    assert console.errors == []


def test_login_screen_fits_a_phone(new_page, static_site, screenshots) -> None:
    page, console = new_page({"width": 390, "height": 844})
    page.goto(static_site + "/")
    page.locator("#signup-form").wait_for()
    # No horizontal scrolling: the two forms stack.
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    login_box = page.locator("#login-form").bounding_box()
    signup_box = page.locator("#signup-form").bounding_box()
    assert signup_box["y"] >= login_box["y"] + login_box["height"]
    page.screenshot(path=str(screenshots / "login-phone.png"), full_page=True)
    assert console.errors == []


def test_keyboard_reaches_the_login_form(new_page, static_site) -> None:
    page, _ = new_page()
    page.goto(static_site + "/")
    page.locator("#login-form").wait_for()
    page.keyboard.press("Tab")  # skip link first
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "login-user"


def test_unreachable_auth_gives_a_readable_error(new_page, static_site) -> None:
    page, _ = new_page()
    page.goto(static_site + "/")
    page.fill("#login-user", "somebody")
    page.fill("#login-password", "whatever-password")
    page.click("#login-form button[type=submit]")
    alert = page.locator("#login-form .error")
    alert.wait_for(state="visible")
    assert "could not be reached" in alert.inner_text()
    assert alert.get_attribute("role") == "alert"


def test_chunk_arithmetic(new_page, static_site) -> None:
    page, console = new_page()
    page.goto(static_site + "/")
    out = page.evaluate("""async () => {
      const m = await import('/upload.js');
      let t = 0;
      const meter = new m.SpeedMeter(1000, () => t);
      meter.add(1000); t = 500; meter.add(1000);
      const rate = meter.rate();
      t = 5000;
      return {
        count: [m.chunkCount(10, 4), m.chunkCount(8, 4), m.chunkCount(1, 4)],
        last: m.chunkBounds(2, 4, 10),
        bytes: m.bytesOf([0, 2], 4, 10),
        pendingAll: m.pendingIndexes(undefined, 3),
        pendingMissing: m.pendingIndexes([2, 0, 2, 9, -1], 3),
        merge: [m.mergeStatus('uploaded_successfully', 'cached'), m.mergeStatus('cached', 'retrying'),
                m.mergeStatus('retrying', 'cached'), m.mergeStatus('uploading', 'cached'),
                m.mergeStatus('retrying', 'upload_failed')],
        fmt: [m.formatBytes(512), m.formatBytes(5 * 1024 * 1024), m.formatRate(0)],
        rate, staleRate: meter.rate(),
      };
    }""")
    assert out["count"] == [3, 2, 1]
    assert out["last"] == [8, 10]
    assert out["bytes"] == 6
    assert out["pendingAll"] == [0, 1, 2]
    assert out["pendingMissing"] == [0, 2]
    assert out["merge"] == ["uploaded_successfully", "retrying", "retrying", "cached", "upload_failed"]
    assert out["fmt"] == ["512 B", "5.0 MB", "—"]
    assert out["rate"] == pytest.approx(4000)  # 2000 bytes over 500 ms
    assert out["staleRate"] == 0
    assert console.errors == []


# An in-page stand-in for the gateway that keeps the chunks it receives, so the
# uploader's resume and pause logic can be driven step by step (the real
# gateway is exercised end to end in test_dashboard.py).
RECORDING_GATEWAY = """
class RecordingGateway {
  constructor(chunkSize, dropAt) {
    this.chunkSize = chunkSize; this.dropAt = dropAt; this.connected = true;
    this.chunks = new Map(); this.calls = []; this.waiters = [];
  }
  waitConnected() { return this.connected ? Promise.resolve() : new Promise((r) => this.waiters.push(r)); }
  reconnect() { this.connected = true; this.waiters.splice(0).forEach((r) => r()); }
  async request(event, p) {
    this.calls.push([event, p.file_id || null, p.index ?? null]);
    await new Promise((r) => setTimeout(r, 5));
    if (!this.connected) { const e = new Error('lost'); e.code = 'disconnected'; throw e; }
    if (event === 'start-transfer') {
      const count = Math.ceil(p.size / this.chunkSize);
      const missing = [...Array(count).keys()].filter((i) => !this.chunks.has(i));
      return p.file_id ? { file_id: p.file_id, chunk_size: this.chunkSize, missing }
                       : { file_id: 'f1', chunk_size: this.chunkSize };
    }
    if (event === 'write-chunk') {
      if (p.index === this.dropAt) {
        this.dropAt = -1; this.connected = false;
        setTimeout(() => this.reconnect(), 50);
        const e = new Error('lost'); e.code = 'disconnected'; throw e;
      }
      if (!(p.data instanceof ArrayBuffer)) throw new Error('chunk data must be an ArrayBuffer');
      this.chunks.set(p.index, new Uint8Array(p.data));
      return { file_id: p.file_id, index: p.index, received: this.chunks.size };
    }
    if (event === 'complete-upload') return { file_id: p.file_id, status: 'cached' };
    throw new Error('unexpected ' + event);
  }
}
"""


def test_upload_resumes_after_a_dropped_connection(new_page, static_site) -> None:
    page, console = new_page()
    page.goto(static_site + "/")
    out = page.evaluate("""async () => {
      const m = await import('/upload.js');
      """ + RECORDING_GATEWAY + """
      const bytes = new Uint8Array(10_000).map((_, i) => (i * 7) % 251);
      const gw = new RecordingGateway(1024, 4);
      const task = new m.UploadTask(new File([bytes], 'a.bin'), gw, { concurrency: 2, chunkHashes: true });
      const seen = new Set();
      task.onChange = (t) => seen.add(t.status);
      await task.start();
      const joined = new Uint8Array(10_000);
      for (const [i, c] of gw.chunks) joined.set(c, i * 1024);
      return {
        status: task.status, fraction: task.fraction, sawWaiting: seen.has('waiting'),
        same: joined.every((b, i) => b === bytes[i]), chunks: gw.chunks.size,
        starts: gw.calls.filter((c) => c[0] === 'start-transfer').map((c) => c[1]),
        completes: gw.calls.filter((c) => c[0] === 'complete-upload').length,
      };
    }""")
    assert out["status"] == "cached"
    assert out["fraction"] == 1
    assert out["sawWaiting"] is True
    assert out["chunks"] == 10 and out["same"] is True
    assert out["starts"] == [None, "f1"]  # the resume named the upload to get `missing`
    assert out["completes"] == 1
    assert console.errors == []


def test_pause_stops_before_completion_and_resume_finishes(new_page, static_site) -> None:
    page, console = new_page()
    page.goto(static_site + "/")
    out = page.evaluate("""async () => {
      const m = await import('/upload.js');
      """ + RECORDING_GATEWAY + """
      const gw = new RecordingGateway(1000, -1);
      const task = new m.UploadTask(new File([new Uint8Array(8000)], 'b.bin'), gw, { concurrency: 1 });
      let paused = false;
      task.onChange = (t) => { if (!paused && t.sentBytes >= 2000) { paused = true; t.pause(); } };
      await task.start();
      const atPause = { status: task.status, chunks: gw.chunks.size,
                        completes: gw.calls.filter((c) => c[0] === 'complete-upload').length };
      task.onChange = () => {};
      task.resume();
      while (task.running || task.status === 'uploading') await new Promise((r) => setTimeout(r, 10));
      return { atPause, status: task.status, chunks: gw.chunks.size,
               completes: gw.calls.filter((c) => c[0] === 'complete-upload').length };
    }""")
    assert out["atPause"]["status"] == "paused"
    assert out["atPause"]["chunks"] < 8
    assert out["atPause"]["completes"] == 0
    assert out["status"] == "cached" and out["chunks"] == 8 and out["completes"] == 1
    assert console.errors == []
