"""The image's HEALTHCHECK: GET /ready of the service this container runs.

One image runs any of the five services, so the port is not known when the image
is built. The service is found from the container's own processes (its PID
namespace holds only tini and `python -m services.<name>`), and its port the way
the service itself reads it (settings.listen_address: <NAME>_PORT, PORT, default).
Exit 0 when /ready answers 200 within 3 s, 1 otherwise (Docker's healthy/unhealthy).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from services.common.settings import DEFAULT_PORTS, listen_address


def running_service() -> str | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        for flag, module in zip(argv, argv[1:], strict=False):
            name = module.decode(errors="replace").removeprefix("services.")
            if flag == b"-m" and name in DEFAULT_PORTS:
                return name
    return None


def main() -> int:
    service = running_service()
    if service is None:
        print("healthcheck: no `python -m services.<name>` runs in this container", file=sys.stderr)
        return 1
    _, port = listen_address(os.environ, service)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=3) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        print(f"healthcheck: {service} on {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
