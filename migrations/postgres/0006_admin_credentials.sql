-- Tenant-scoped admin credentials (issue #26): each manages one tenant's keys through the
-- admin API and the API Keys page. Only the credential's SHA-256 is kept; the credential
-- itself is shown once, when `hapnd-auth admin-credentials create` makes it.
CREATE TABLE IF NOT EXISTS hapnd_admin_credentials (
    id          TEXT        PRIMARY KEY,
    tenant      TEXT        NOT NULL,
    label       TEXT        NOT NULL,
    hash        BYTEA       NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS hapnd_admin_credentials_tenant ON hapnd_admin_credentials (tenant, id);
