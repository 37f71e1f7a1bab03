"""Announcing a ready group to its pool's ``processor_url``, off the caller's thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests

from .metrics import AggregatorMetrics

log = logging.getLogger(__name__)


class Announcer:
    """POSTs ``{pool_id, group_id, files_url}`` to a pool's processor_url (``ports.Announcer``).

    The processor may be down: a few attempts with backoff, then a logged,
    counted failure. The processor also polls, so an announcement is a hint.
    One short-lived daemon thread per announcement, bounded in time by
    ``attempts`` x (``timeout`` + backoff).
    """

    def __init__(self, metrics: AggregatorMetrics, base_url: str, *, timeout: float = 5.0, attempts: int = 3,
                 backoff: float = 0.5) -> None:
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff

    def files_url(self, pool_id: str, gid: str) -> str:
        return f"{self.base_url}/pools/{pool_id}/groups/{gid}/files"

    def announce(self, pool: dict[str, Any] | None, group: dict[str, Any]) -> threading.Thread | None:
        url = (pool or {}).get("processor_url")
        if not url or not str(url).startswith(("http://", "https://")):
            return None
        body = {"pool_id": group["pool_id"], "group_id": group["_id"],
                "files_url": self.files_url(group["pool_id"], group["_id"])}
        thread = threading.Thread(target=self._post, args=(str(url), body), name="announce", daemon=True)
        thread.start()
        return thread

    def _post(self, url: str, body: dict[str, Any]) -> None:
        last = ""
        for attempt in range(self.attempts):
            try:
                response = requests.post(url, json=body, timeout=self.timeout)
                if response.status_code < 300:
                    return
                last = f"status {response.status_code}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(self.backoff * (2 ** attempt))
        self.metrics.announce_failures.inc()
        log.warning("announce_failed", extra={"group_id": body["group_id"], "pool_id": body["pool_id"],
                                              "error": last})
