"""Everything auth's use cases and routes use, wired once by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.audit import AuditTrail
from services.common.httpkit import ServiceMetrics
from services.common.ports import Clock, Publisher
from services.common.revocations import RevocationList

from . import core
from .config import Settings
from .ports import AuthStore, RateCounters, Revocations, StorageProbe


class AuthMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.registry = metrics.registry
        self.signups = metrics.counter("auth_signups_total", "Accounts created by signup")
        self.logins = metrics.counter("auth_logins_total", "Login attempts", ("outcome",))
        self.revoked = metrics.counter("auth_tokens_revoked_total", "Tokens revoked by logout")
        self.refreshes = metrics.counter("auth_refreshes_total", "Refresh token uses", ("outcome",))
        self.revocation_write_failures = metrics.counter(
            "auth_revocation_write_failures_total", "Revocations answered 503: the shared list could not be written")
        self.revocation_read_failures = metrics.counter(
            "auth_revocation_read_failures_total", "Validations that could not read the shared revocation list")
        self.audit_lost = metrics.counter("audit_write_lost_total",
                                          "Audit records that could not be published (the action went on)")
        self.validations = metrics.counter("auth_validations_total", "Token validations", ("outcome",))
        self.publish_failures = metrics.counter("auth_publish_failures_total", "Events not accepted by RabbitMQ",
                                                ("event",))
        self.hash_busy = metrics.counter("auth_hash_busy_total",
                                         "Signups/logins refused 429 because every argon2 slot was busy")
        self.rate_limited = metrics.counter("auth_rate_limited_total", "Signups and logins refused by a rate limit",
                                            ("action", "scope"))
        self.rate_unchecked = metrics.counter("auth_rate_unchecked_total",
                                              "Requests let through because the rate counters were unreachable",
                                              ("action",))


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: AuthStore
    # Few publish attempts (see app.py): a logout waits for them while RabbitMQ is down.
    broker: Publisher
    passwords: core.Passwords
    metrics: AuthMetrics
    clock: Clock
    counters: RateCounters  # signup/login rate limits (Redis), see throttle.py
    revocations: Revocations  # writes the shared revocation list (Redis), see revocation.py
    revocation_list: RevocationList  # reads it back (validate honours it)
    # Logins, refusals, logouts, user/pool/member/key changes, with who did it (never a secret).
    audit: AuditTrail
    # Checks a pool's storage (file_service_manager's internal probe route) before it is saved.
    storage_probe: StorageProbe
