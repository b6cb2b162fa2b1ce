-- One row per API key. The key itself is never stored: key_hash (SHA-256 of the whole key)
-- is the only trace of the secret. Times are timestamptz (UTC), millisecond precision.
CREATE TABLE IF NOT EXISTS hapnd_api_keys (
    id            TEXT        PRIMARY KEY,
    tenant        TEXT        NOT NULL,
    environment   TEXT        NOT NULL CHECK (environment IN ('live', 'sandbox')),
    name          TEXT        NOT NULL,
    key_hash      BYTEA       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    hint          TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS hapnd_api_keys_tenant ON hapnd_api_keys (tenant, created_at);
