"""Today's ``ports.Revocations``: auth's ``/auth/validate``, asked at most every few seconds per token.

A stand-in until the shared revocation reader (services/common/revocations.py, auth's list in
Redis with a 1-s local cache) lands: app.py swaps it in with one line. /auth/validate refuses a
revoked token, a token of an ended login and a disabled or deleted user, so "validate says no"
is "revoked" here. Answers are cached per token id for ``every_seconds`` (SPEC: a revocation is
honoured within 5 s); a "revoked" answer is final (a token is never un-revoked).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from services.common.authclient import AuthUnavailable
from services.common.ports import AuthLookup

from . import core
from .ports import SocketToken


class AuthRevocations:
    def __init__(self, auth: AuthLookup, every_seconds: float = 2.0, max_entries: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self.every = every_seconds
        self.clock = clock
        # token_id -> (checked at, revoked). Bounded: the oldest entry goes past max_entries (set
        # to the connection cap; one token per socket at most), and a forgotten one is asked again.
        self.max_entries = max_entries
        self._answers: OrderedDict[str, tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def is_revoked(self, claims: SocketToken) -> bool:
        now = self.clock()
        key = claims.token_id or claims.token  # never one shared entry for tokens without an id
        with self._lock:
            cached = self._answers.get(key)
        if cached is not None and (cached[1] or now - cached[0] < self.every):
            return cached[1]
        try:
            revoked = self.auth.validate(claims.token) is None
        except AuthUnavailable as exc:
            # Cannot tell: the event is refused as "try again", never served on a guess.
            raise core.unavailable("auth") from exc
        with self._lock:
            self._answers[key] = (now, revoked)
            self._answers.move_to_end(key)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        return revoked
