"""Fast unmasking of client WebSocket frames for eventlet's WebSocket server, and a cap
on a whole WebSocket message (all its frames; see "the whole-message cap" below).

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
from typing import Any

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


# --- the whole-message cap ------------------------------------------------------------------
#
# eventlet 0.41.3 checks ``max_frame_length`` against each frame's length only
# (``RFC6455WebSocket._recv_frame``); the frames of one message pile up in
# ``RFC6455WebSocket.Message.data`` (a list of every recv() piece) without limit until FIN,
# before engine.io sees the message and so before any Socket.IO connect or token check. A
# client sending a text frame without FIN, then continuation frames forever, grew the
# process without bound; one-byte frames cost ~40 bytes of list and bytes objects each.
#
# ``CappedMessage`` replaces that class: it keeps the pieces in one bytearray (memory = the
# bytes), refuses a message beyond its cap (the binary cap is eventlet's max_frame_length,
# i.e. engine.io's max_http_buffer_size; text messages have a smaller one) with close code
# 1009, and takes every byte from one process-wide ``AssemblyBudget`` (the sum of all
# sockets' partial messages), refusing with 1013 (try again later) when it is spent. The
# bytes go back to the budget when the message is complete or dropped (a closed socket).


class AssemblyBudget:
    """Bytes of partial WebSocket messages held by this process, all sockets together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.refused = 0  # messages refused because the budget was spent (a metric)

    def take(self, size: int) -> bool:
        # No lock: under eventlet green threads switch only on I/O, never inside this method.
        if self.used + size > self.limit:
            self.refused += 1
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)


BUDGET = AssemblyBudget(128 * 1024 * 1024)  # replaced by install_message_cap
_CAP_INSTALLED: dict[str, Any] = {}


def message_class(base: type, budget: AssemblyBudget, max_text: int, failed: type[Exception]) -> type:
    """eventlet's ``RFC6455WebSocket.Message`` with a cap on the whole message and the budget."""

    class CappedMessage(base):
        settings: dict[str, Any] = {"budget": budget, "max_text": max_text}

        def __init__(self, opcode: int, max_frame_length: int, decoder: Any = None, decompressor: Any = None) -> None:
            super().__init__(opcode, max_frame_length, decoder=decoder, decompressor=decompressor)
            self.data = bytearray()
            self.budget: AssemblyBudget = self.settings["budget"]
            self.limit = min(max_frame_length, self.settings["max_text"]) if opcode == 1 else max_frame_length
            self.held = 0

        def push(self, data: bytes, final: bool = False) -> None:
            self.finished = final
            size = len(data)
            if len(self.data) + size > self.limit:
                self.drop()
                raise failed(1009, f"Incoming message exceeds the limit of {self.limit} bytes.")
            if not self.budget.take(size):
                self.drop()
                raise failed(1013, "The gateway is receiving too much at once; try again later.")
            self.held += size
            self.data += data

        def getvalue(self) -> Any:
            data = bytes(self.data)
            self.drop()
            if not self.opcode & 8 and self.decompressor:
                data = self.decompressor.decompress(data + b"\x00\x00\xff\xff", self.max_frame_length)
                if self.decompressor.unconsumed_tail:
                    raise failed(1009, f"Incoming compressed message exceeds {self.max_frame_length} bytes.")
            if self.decoder:
                return self.decoder.decode(data, self.finished)
            return data

        def drop(self) -> None:
            self.data = bytearray()
            if getattr(self, "held", 0):
                self.budget.give(self.held)
                self.held = 0

        def __del__(self) -> None:  # a socket closed mid-message: its bytes go back to the budget
            self.drop()

    return CappedMessage


def install_message_cap(max_text_bytes: int, budget_bytes: int) -> AssemblyBudget:
    """Cap every WebSocket message eventlet assembles (see above); returns the process budget. Idempotent."""
    from eventlet.websocket import FailedConnectionError, RFC6455WebSocket

    global BUDGET
    if _CAP_INSTALLED:
        BUDGET.limit = budget_bytes
        _CAP_INSTALLED["class"].settings["max_text"] = max_text_bytes
        return BUDGET
    base = RFC6455WebSocket.Message
    if list(inspect.signature(base.__init__).parameters) != ["self", "opcode", "max_frame_length", "decoder",
                                                             "decompressor"]:
        raise FastUnmaskUnavailable(f"eventlet's RFC6455WebSocket.Message differs from eventlet=={PINNED_EVENTLET}'s; "
                                    "port services/socket_gateway/wsfast.py")
    BUDGET = AssemblyBudget(budget_bytes)
    capped = message_class(base, BUDGET, max_text_bytes, FailedConnectionError)
    RFC6455WebSocket.Message = capped
    _CAP_INSTALLED.update({"class": capped, "original": base})
    log.info("websocket message cap active", extra={"max_text_bytes": max_text_bytes, "budget_bytes": budget_bytes})
    return BUDGET
