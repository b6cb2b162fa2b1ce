-- One row per API key. The key itself is never stored: key_hash (SHA-256 of the whole key)
-- is the only trace of the secret. Times are UTC unix milliseconds.
CREATE TABLE IF NOT EXISTS hapnd_api_keys (
    id            TEXT    PRIMARY KEY NOT NULL,
    tenant        TEXT    NOT NULL,
    environment   TEXT    NOT NULL CHECK (environment IN ('live', 'sandbox')),
    name          TEXT    NOT NULL,
    key_hash      BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    hint          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    expires_at    INTEGER,
    last_used_at  INTEGER
);

CREATE INDEX IF NOT EXISTS hapnd_api_keys_tenant ON hapnd_api_keys (tenant, created_at);
