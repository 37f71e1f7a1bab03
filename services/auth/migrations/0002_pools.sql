-- Pools, memberships and processor API keys.
CREATE TABLE pools (
    pool_id                     TEXT PRIMARY KEY,
    name                        TEXT NOT NULL,
    window_seconds              INTEGER NOT NULL CHECK (window_seconds BETWEEN 1 AND 2592000),
    close_grace_seconds         INTEGER NOT NULL DEFAULT 0 CHECK (close_grace_seconds >= 0),
    min_contributors            INTEGER CHECK (min_contributors IS NULL OR min_contributors >= 1),
    processing_timeout_seconds  INTEGER NOT NULL DEFAULT 300 CHECK (processing_timeout_seconds >= 1),
    processor_url               TEXT,
    created                     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE pool_members (
    pool_id  TEXT NOT NULL REFERENCES pools (pool_id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('contributor', 'listener')),
    added    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pool_id, user_id)
);
-- /auth/validate reads a user's pools on every request of every service.
CREATE INDEX pool_members_user_id ON pool_members (user_id);

CREATE TABLE processor_keys (
    key_id      TEXT PRIMARY KEY,
    pool_id     TEXT NOT NULL REFERENCES pools (pool_id) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL,
    created     TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX processor_keys_pool_id ON processor_keys (pool_id);
