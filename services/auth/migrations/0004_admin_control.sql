-- Admin control over users and SPEC's quorum and lateness fields of pools.
-- A disabled user is refused everywhere; tokens issued before tokens_valid_after_ms (epoch ms:
-- set on disable and role change) are refused, so a changed role takes effect at once.
ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN tokens_valid_after_ms BIGINT NOT NULL DEFAULT 0;
-- GET /auth/users pages in (created, user_id) order.
CREATE INDEX users_created_user_id ON users (created, user_id);

ALTER TABLE pools ADD COLUMN quorum_wait_seconds INTEGER NOT NULL DEFAULT 0 CHECK (quorum_wait_seconds >= 0);
ALTER TABLE pools ADD COLUMN on_short TEXT NOT NULL DEFAULT 'process' CHECK (on_short IN ('process', 'fail'));
ALTER TABLE pools ADD COLUMN max_late_seconds INTEGER NOT NULL DEFAULT 604800 CHECK (max_late_seconds >= 0);
