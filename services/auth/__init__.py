"""auth: users, passwords, tokens (JWT), pools, pool memberships, processor API keys.

Owns: PostgreSQL (users, revoked_tokens, pools, pool_members, processor_keys,
schema_migrations) and the Redis rate counters ``{REDIS_PREFIX}:auth:rate:*``
(signup/login limits, expiring on their own), through ``store.py`` alone.

Consumes: nothing from RabbitMQ; every other service calls it over HTTP
(``GET /auth/validate`` on every request, internal ``/auth/internal/*`` routes).

Publishes: ``TokenRevoked`` (auth.token_revoked) on logout and
``MembershipChanged`` (auth.membership_changed) on every pool membership change;
every socket_gateway process listens on its own exclusive queue.
"""
