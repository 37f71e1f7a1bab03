"""A background pass every N seconds (sweepers): one daemon thread, stoppable, and a
failing pass is logged and retried at the next interval instead of ending the loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def start_periodic(name: str, interval: float, work: Callable[[], object],
                   stop: threading.Event) -> threading.Thread | None:
    """Run ``work()`` every ``interval`` seconds until ``stop`` is set; None when interval <= 0."""
    if interval <= 0:
        return None

    def loop() -> None:
        while not stop.wait(interval):
            try:
                work()
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("periodic pass failed", extra={"task": name})

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
