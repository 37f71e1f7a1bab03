"""Find the fleet's service processes and read their memory from /proc."""

from __future__ import annotations

import os
import threading
import time

SERVICE_NAMES = ("auth", "socket_gateway", "file_uploader", "file_service_manager", "pool_aggregator")


def service_pids() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        for name in SERVICE_NAMES:
            if f"services.{name}".encode() in argv:
                found.setdefault(name, []).append(int(entry))
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples every service's RSS while a benchmark runs; reports the peak per service in MB."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.pids = service_pids()
        self.peak_kb: dict[str, int] = {name: 0 for name in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pids in self.pids.items():
                total = sum(_status_kb(pid, "VmRSS") for pid in pids)
                self.peak_kb[name] = max(self.peak_kb[name], total)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        return {name: round(kb / 1024, 1) for name, kb in sorted(self.peak_kb.items())}
