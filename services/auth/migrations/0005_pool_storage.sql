-- SPEC "Storage backends", "Staging", "Retention": where a pool's files live, where its results are
-- copied, how long its files are kept. Secret fields inside storage/staging are stored encrypted
-- (Fernet, STORAGE_SECRETS_KEY: "fernet:..."), never in clear.
ALTER TABLE pools ADD COLUMN storage JSONB NOT NULL DEFAULT '{"backend": "gridfs"}';
ALTER TABLE pools ADD COLUMN staging JSONB NOT NULL DEFAULT '[]';
ALTER TABLE pools ADD COLUMN retention_days INTEGER CHECK (retention_days IS NULL OR retention_days >= 0);

-- A deleted pool's files follow its retention rule: the rule outlives the pool (the sweeper of
-- file_service_manager reads it through auth's internal retention route).
CREATE TABLE deleted_pools (
    pool_id         TEXT PRIMARY KEY,
    retention_days  INTEGER CHECK (retention_days IS NULL OR retention_days >= 0),
    deleted_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
