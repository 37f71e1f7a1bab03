"""auth: users, passwords, tokens (JWT), pools, pool memberships, processor API keys.

Owns: PostgreSQL (users, revoked_tokens, login_sessions, refresh_tokens (hashed), pools (with their
storage/staging, secrets encrypted with STORAGE_SECRETS_KEY, and retention_days), deleted_pools (a deleted
pool's retention rule), pool_members, processor_keys, schema_migrations), the Redis rate counters
``{REDIS_PREFIX}:auth:rate:*`` (signup/login limits, expiring on their own) and the shared
revocation list ``{REDIS_PREFIX}:revoked:*`` (written before a revocation is answered; every
service may read it with ``services.common.revocations``), through ``store.py`` alone.

Consumes: nothing from RabbitMQ; every other service calls it over HTTP
(``GET /auth/validate`` on every request, internal ``/auth/internal/*`` routes). It calls
file_service_manager's ``POST /internal/storage/probe`` before saving a pool's storage.

Publishes: ``TokenRevoked`` (auth.token_revoked) on logout and refresh-token reuse, and
``MembershipChanged`` (auth.membership_changed) on every pool membership change
(a deleted pool's members included): every socket_gateway process listens on its own
exclusive queue; ``PoolDeleted`` (auth.pool_deleted, queue ``pool_aggregator.pools``)
when an admin deletes a pool; audit records (audit.recorded: ``AuditsRecorded`` batches, a lone
record as ``AuditRecorded``; ``services.common.audit``) for every signup, login, failed login,
refresh reuse, logout, user, pool, membership and processor-key change.
"""
