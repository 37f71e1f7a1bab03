"""Fast unmasking of client WebSocket frames for eventlet's WebSocket server.

Why: RFC 6455 makes every client frame masked with a 4-byte key, and eventlet
(``eventlet/websocket.py``, ``RFC6455WebSocket._apply_mask``) unmasks it one
byte at a time in Python (a generator building a one-byte ``bytes`` per byte
and joining them): about 2.5 MB/s, so a 1 MiB upload chunk costs ~0.4 s of the
gateway's single CPU-bound hub, which stalls every other socket meanwhile.

What: replace only that static method with a whole-buffer XOR, wsaccel's C
masker when it is importable (it is a dependency) and otherwise one big-int
XOR (``int.from_bytes`` of the data against the repeated mask), both O(n) in C.
Everything else about eventlet's frame parsing is untouched.

Safety: eventlet is pinned (pyproject: eventlet==0.41.3). ``install`` checks
that the method still exists with the signature we replace and that the fast
path gives exactly eventlet's own result on a sample (lengths and offsets that
cross the 4-byte mask period) before patching; otherwise it refuses to start
with a message naming the cause, rather than serve corrupt uploads.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence

log = logging.getLogger(__name__)

PINNED_EVENTLET = "0.41.3"

try:  # the C masker; websocket-client uses the same one on the client side
    from wsaccel.xormask import XorMaskerSimple as _XorMasker
except ImportError:  # pragma: no cover - wsaccel is a declared dependency
    _XorMasker = None


class FastUnmaskUnavailable(RuntimeError):
    """eventlet changed in a way the patch does not recognise: refuse to start."""


def _rotated(mask: Sequence[int] | bytes, offset: int) -> bytes:
    """The 4-byte mask as it applies from byte ``offset`` of the frame payload on."""
    key = bytes(mask)
    if len(key) != 4:
        raise ValueError("a WebSocket mask is 4 bytes")
    shift = offset % 4
    return key[shift:] + key[:shift]


def xor_mask_int(data: bytes, mask: Sequence[int] | bytes, length: int | None = None,
                 offset: int = 0) -> bytes:
    """Pure-Python whole-buffer XOR (big-int arithmetic runs in C)."""
    if length is None:
        length = len(data)
    if length <= 0:
        return b""
    key = _rotated(mask, offset)
    view = data[:length] if len(data) != length else data
    repeated = (key * (length // 4 + 1))[:length]
    return (int.from_bytes(view, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")


def xor_mask_c(data: bytes, mask: Sequence[int] | bytes, length: int | None = None, offset: int = 0) -> bytes:
    """wsaccel's C XOR masker; a fresh masker per call, started at the rotated mask."""
    if length is None:
        length = len(data)
    if length <= 0:
        return b""
    view = data[:length] if len(data) != length else data
    return _XorMasker(_rotated(mask, offset)).process(bytes(view))


fast_apply_mask = xor_mask_c if _XorMasker is not None else xor_mask_int


def eventlet_apply_mask(data: bytes, mask: Sequence[int], length: int | None = None,
                        offset: int = 0) -> bytes:
    """eventlet 0.41.3's byte-wise original, kept verbatim as the reference for tests and the bench."""
    if length is None:
        length = len(data)
    cnt = range(length)
    return b"".join(bytes((data[i] ^ mask[(offset + i) % 4],)) for i in cnt)


def _self_test() -> bool:
    sample = os.urandom(37)
    for mask in ((0, 0, 0, 0), (1, 2, 3, 4), tuple(os.urandom(4))):
        for length in (0, 1, 3, 4, 5, 17, 37):
            for offset in (0, 1, 2, 3, 6):
                expected = eventlet_apply_mask(sample, mask, length, offset)
                if fast_apply_mask(sample, mask, length, offset) != expected:
                    return False
    return True


def is_active() -> bool:
    """True when eventlet's server unmasks client frames with the fast path."""
    try:
        from eventlet.websocket import RFC6455WebSocket
    except ImportError:  # pragma: no cover
        return False
    return inspect.getattr_static(RFC6455WebSocket, "_apply_mask", None) is _INSTALLED


_INSTALLED = staticmethod(fast_apply_mask)


def install() -> str:
    """Patch eventlet's unmasking; returns the implementation's name. Idempotent.

    Raises FastUnmaskUnavailable when eventlet no longer has the method we
    replace (or the replacement would not give byte-identical results).
    """
    import eventlet
    from eventlet.websocket import RFC6455WebSocket

    if is_active():
        return fast_apply_mask.__name__
    current = inspect.getattr_static(RFC6455WebSocket, "_apply_mask", None)
    if not isinstance(current, staticmethod):
        raise FastUnmaskUnavailable(
            f"eventlet {eventlet.__version__}: RFC6455WebSocket._apply_mask is missing or no longer a "
            f"staticmethod; services/socket_gateway/wsfast.py was written for eventlet=={PINNED_EVENTLET}. "
            "Pin eventlet back or port the patch.")
    params = list(inspect.signature(current.__func__).parameters)
    if params != ["data", "mask", "length", "offset"]:
        raise FastUnmaskUnavailable(
            f"eventlet {eventlet.__version__}: RFC6455WebSocket._apply_mask{tuple(params)} differs from "
            f"(data, mask, length, offset) of eventlet=={PINNED_EVENTLET}; "
            "port services/socket_gateway/wsfast.py.")
    if not _self_test():
        raise FastUnmaskUnavailable("the fast WebSocket unmasking disagrees with eventlet's own; "
                                    "not patching")
    if eventlet.__version__ != PINNED_EVENTLET:
        log.warning("eventlet version differs from the pinned one; the unmasking patch still matches",
                    extra={"eventlet": eventlet.__version__, "pinned": PINNED_EVENTLET})
    RFC6455WebSocket._apply_mask = _INSTALLED
    log.info("websocket fast unmasking active", extra={"implementation": fast_apply_mask.__name__})
    return fast_apply_mask.__name__
