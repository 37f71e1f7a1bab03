"""How fast eventlet's WebSocket server unmasks a client frame, before and after wsfast.

Run: .venv/bin/python bench/ws_unmask.py [--size BYTES] [--repeat N]

It times the three implementations on the same masked payload, the way
eventlet's ``_recv_frame`` calls them (whole socket reads, offsets that move
through the mask period), and checks they agree.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.socket_gateway import wsfast  # noqa: E402


def rate(fn, data: bytes, mask: tuple[int, ...], repeat: int, read: int) -> tuple[float, bytes]:
    best = float("inf")
    out = b""
    for _ in range(repeat):
        started = time.perf_counter()
        parts = []
        # eventlet unmasks each socket read separately, continuing the mask at `offset`
        for offset in range(0, len(data), read):
            piece = data[offset:offset + read]
            parts.append(fn(piece, mask, len(piece), offset))
        out = b"".join(parts)
        best = min(best, time.perf_counter() - started)
    return len(data) / best / 1e6, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=(1 << 20) + 3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--read", type=int, default=65536, help="bytes per socket read")
    args = parser.parse_args()
    data = os.urandom(args.size)
    mask = tuple(os.urandom(4))
    slow_rate, expected = rate(wsfast.eventlet_apply_mask, data, mask, 1, args.read)
    print(f"eventlet byte-wise   : {slow_rate:10.1f} MB/s")
    for name, fn in (("int.from_bytes XOR", wsfast.xor_mask_int), ("wsaccel C XOR", wsfast.xor_mask_c)):
        if fn is wsfast.xor_mask_c and wsfast._XorMasker is None:
            print(f"{name:21}: unavailable")
            continue
        mbs, out = rate(fn, data, mask, args.repeat, args.read)
        assert out == expected, f"{name} disagrees with eventlet"
        print(f"{name:21}: {mbs:10.1f} MB/s  ({mbs / slow_rate:.0f}x)")


if __name__ == "__main__":
    main()
