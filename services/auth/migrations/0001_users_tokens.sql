-- Users and revoked tokens.
CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    user_name      TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created        TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Names are unique regardless of case, so "Alice" cannot pose as "alice".
CREATE UNIQUE INDEX users_user_name_lower ON users (lower(user_name));

-- A logged-out token's id until the token would have expired anyway.
CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
