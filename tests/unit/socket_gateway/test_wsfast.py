"""The fast unmasking gives exactly eventlet's bytes, and is what eventlet's parser runs."""

from __future__ import annotations

import functools
import inspect
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.socket_gateway import wsfast


# eventlet is imported when a test runs, not when pytest collects this module: importing it
# changes threading/asyncio state that Playwright's sync API (the browser suite, which runs
# earlier in the session) depends on, and hangs it.
@functools.cache
def _ws():
    from eventlet.websocket import RFC6455WebSocket

    return RFC6455WebSocket


@functools.cache
def _original():
    """eventlet's own unmasking, captured before any test patches it."""
    return inspect.getattr_static(_ws(), "_apply_mask")
IMPLEMENTATIONS = [wsfast.xor_mask_int] + ([wsfast.xor_mask_c] if wsfast._XorMasker is not None else [])


@pytest.fixture
def restore_eventlet():
    original = _original()
    yield
    _ws()._apply_mask = original


def test_reference_behaves_as_eventlets_own_code() -> None:
    # The random test below compares against our copy of the byte-wise original (eventlet's own,
    # through the descriptor, where speed allows): the copy must agree with the installed eventlet.
    for length in range(0, 40):
        data, mask = os.urandom(length), tuple(os.urandom(4))
        for offset in range(5):
            assert wsfast.eventlet_apply_mask(data, mask, length, offset) == \
                _original().__func__(data, mask, length, offset)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 8, 125, 126, 65535, 65536, (1 << 20) + 3])
def test_equivalent_for_lengths(impl, length: int) -> None:
    data = os.urandom(length)
    mask = tuple(os.urandom(4))
    # eventlet's byte-wise reference runs at a few MB/s: fewer offsets for the 1 MiB case
    offsets = (0, 3) if length > 100_000 else (0, 1, 2, 3, 65536 + 1)
    for offset in offsets:
        assert impl(data, mask, length, offset) == _original().__func__(data, mask, length, offset)
    if length <= 100_000:
        assert impl(data, mask) == _original().__func__(data, mask)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda f: f.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), mask=st.tuples(*[st.integers(0, 255)] * 4),
       offset=st.integers(0, 1 << 20), cut=st.integers(0, 2048))
def test_equivalent_random(impl, data: bytes, mask: tuple[int, ...], offset: int, cut: int) -> None:
    length = min(cut, len(data))  # eventlet passes length <= len(data): a prefix is unmasked
    assert impl(data, mask, length, offset) == wsfast.eventlet_apply_mask(data, mask, length, offset)


def test_mask_as_list_like_pack_message() -> None:
    # _pack_message (client side) passes a list of ints; the same method serves it.
    data = os.urandom(99)
    assert wsfast.fast_apply_mask(data, [9, 8, 7, 6]) == wsfast.eventlet_apply_mask(data, [9, 8, 7, 6])


def test_install_patches_and_reports(restore_eventlet) -> None:
    assert not wsfast.is_active()
    name = wsfast.install()
    assert name == wsfast.fast_apply_mask.__name__
    assert wsfast.is_active()
    assert wsfast.install() == name  # idempotent


def test_install_refuses_when_method_is_gone(restore_eventlet, monkeypatch) -> None:
    monkeypatch.delattr(_ws(), "_apply_mask")
    with pytest.raises(wsfast.FastUnmaskUnavailable, match="_apply_mask"):
        wsfast.install()


def test_install_refuses_on_changed_signature(restore_eventlet, monkeypatch) -> None:
    monkeypatch.setattr(_ws(), "_apply_mask", staticmethod(lambda data, mask: data))
    with pytest.raises(wsfast.FastUnmaskUnavailable, match="differs"):
        wsfast.install()


class _FrameSocket:
    """Feeds eventlet's frame parser in small reads, as a socket would."""

    def __init__(self, raw: bytes, read: int) -> None:
        self.raw = raw
        self.read = read

    def recv(self, n: int) -> bytes:
        piece, self.raw = self.raw[:min(n, self.read)], self.raw[min(n, self.read):]
        return piece


def _masked_frame(payload: bytes, mask: bytes) -> bytes:
    header = bytes([0x82])  # FIN + binary
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
    return header + mask + wsfast.xor_mask_int(payload, mask)


@pytest.mark.parametrize("read", [1, 7, 65536])
def test_eventlet_parser_uses_fast_path(restore_eventlet, read: int) -> None:
    wsfast.install()
    payload = os.urandom(300_003 if read > 1 else 1003)
    ws = _ws()(_FrameSocket(_masked_frame(payload, os.urandom(4)), read), {}, version=13)
    message = ws._recv_frame()
    assert message.getvalue() == payload
