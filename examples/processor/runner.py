"""The reference processor's loop: find ready groups, stream the archive, post the mean.

Ready groups are found two ways: polling ``GET /pools/<pool>/groups?status=ready``
every ``poll_seconds``, and (optionally) a small webhook server that the
pool's ``processor_url`` points at, which the aggregator POSTs
``{pool_id, group_id, files_url}`` to. Either way the group id goes into one
queue; a group is processed once per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from .mean import BadArray, MeanAccumulator

log = logging.getLogger("examples.processor")

READ_CHUNK = 64 * 1024


class Processor:
    def __init__(self, aggregator_url: str, pool_id: str, api_key: str, *, poll_seconds: float = 1.0,
                 timeout: float = 60.0) -> None:
        self.base = aggregator_url.rstrip("/")
        self.pool_id = pool_id
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = api_key
        self.pending: queue.Queue[str] = queue.Queue()
        self.seen: set[str] = set()
        self.results: dict[str, str] = {}  # group_id -> result_id
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # --- finding work --------------------------------------------------------

    def ready_groups(self) -> list[str]:
        response = self.session.get(f"{self.base}/pools/{self.pool_id}/groups", params={"status": "ready"},
                                    timeout=self.timeout)
        response.raise_for_status()
        return [g["group_id"] for g in response.json()["groups"]]

    def start_webhook(self, port: int, host: str = "127.0.0.1") -> int:
        processor = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(min(length, 65536)) or b"{}")
                    group_id = str(body["group_id"])
                    if str(body.get("pool_id")) != processor.pool_id:
                        raise ValueError("another pool")
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                processor.pending.put(group_id)
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Hook)
        threading.Thread(target=self._server.serve_forever, name="processor-webhook", daemon=True).start()
        return self._server.server_address[1]

    # --- the work ---------------------------------------------------------------

    def compute(self, group_id: str) -> tuple[bytes, int]:
        """The mean of the group's arrays, read from the archive as it streams; (bytes, arrays used)."""
        acc = MeanAccumulator()
        with self.session.get(f"{self.base}/pools/{self.pool_id}/groups/{group_id}/archive", stream=True,
                              timeout=self.timeout) as response:
            response.raise_for_status()
            response.raw.decode_content = True
            with tarfile.open(fileobj=response.raw, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if member.size % 8 or member.size == 0:
                        log.warning("skipping %s: %d bytes is not a float64 array", member.name, member.size)
                        continue
                    source = tar.extractfile(member)
                    assert source is not None
                    try:
                        acc.add(iter(lambda src=source: src.read(READ_CHUNK), b""))
                    except BadArray as exc:
                        log.warning("skipping %s: %s", member.name, exc)
        if acc.lengths_differ:
            log.warning("group %s: arrays differ in length (%d..%d); mean over the first %d values",
                        group_id, acc.min_len, acc.max_len, acc.min_len)
        return acc.result_bytes(), acc.count

    def post(self, group_id: str, data: bytes) -> str | None:
        response = self.session.post(
            f"{self.base}/pools/{self.pool_id}/groups/{group_id}/result", data=data, timeout=self.timeout,
            headers={"X-File-Name": f"mean_{group_id}.f64", "X-Sha256": hashlib.sha256(data).hexdigest(),
                     "Content-Type": "application/octet-stream"})
        if response.status_code == 409:
            log.info("group %s already has a result", group_id)
            return None
        response.raise_for_status()
        return str(response.json()["result_id"])

    def process(self, group_id: str) -> str | None:
        try:
            data, used = self.compute(group_id)
        except BadArray as exc:
            log.error("group %s: nothing to average (%s); not posting", group_id, exc)
            return None
        result_id = self.post(group_id, data)
        if result_id:
            self.results[group_id] = result_id
            log.info("group %s: mean of %d arrays posted as %s", group_id, used, result_id)
        return result_id

    # --- loop -------------------------------------------------------------------

    def poll_once(self) -> list[str]:
        """Process every ready group (and anything announced); the ids processed."""
        try:
            for gid in self.ready_groups():
                self.pending.put(gid)
        except requests.RequestException as exc:
            log.warning("polling failed: %s", exc)
        done = []
        while True:
            try:
                gid = self.pending.get_nowait()
            except queue.Empty:
                break
            if gid in self.seen:
                continue
            self.seen.add(gid)
            try:
                if self.process(gid):
                    done.append(gid)
            except requests.RequestException as exc:
                # The lease expires and the group comes back as ready: try again then.
                self.seen.discard(gid)
                log.warning("group %s failed: %s", gid, exc)
        return done

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            try:  # wake early for an announcement
                gid = self.pending.get(timeout=self.poll_seconds)
                self.pending.put(gid)
            except queue.Empty:
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
