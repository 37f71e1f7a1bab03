-- Logins (refresh-token families) and their refresh tokens.
-- A login is revoked as a whole (logout, reuse of a used refresh token): every token of it ends.
CREATE TABLE login_sessions (
    session_id         TEXT PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created            TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The newest refresh token's expiry: past it (and a day) the row is pruned.
    expires_at         TIMESTAMPTZ NOT NULL,
    -- The newest access token: its id (the broker's fast path on a revocation) and expiry (how
    -- long the shared revocation list must remember the login).
    access_jti         TEXT,
    access_expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at         TIMESTAMPTZ
);
CREATE INDEX login_sessions_user_id ON login_sessions (user_id);
CREATE INDEX login_sessions_expires_at ON login_sessions (expires_at);

-- Only hashes: a database leak gives no usable refresh token. A used token is kept until it
-- would have expired, so presenting it again is recognised as reuse.
CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES login_sessions (session_id) ON DELETE CASCADE,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    created     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
