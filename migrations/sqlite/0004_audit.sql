-- The audit trail (issue #26): one row per change to a key, written in the change's own
-- transaction by triggers, so hand-written SQL is recorded too. Never a key, never a hash.
-- Times are UTC unix milliseconds (the database's clock).
CREATE TABLE IF NOT EXISTS hapnd_key_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    tenant          TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    actor_kind      TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    client          TEXT,
    replacement_id  TEXT,
    expires_at      INTEGER,
    detail          TEXT
);
CREATE INDEX IF NOT EXISTS hapnd_key_events_tenant ON hapnd_key_events (tenant, seq);
CREATE INDEX IF NOT EXISTS hapnd_key_events_key ON hapnd_key_events (key_id, seq);
CREATE INDEX IF NOT EXISTS hapnd_key_events_at ON hapnd_key_events (at);

-- Who is acting, for the triggers. SQLite has no session variables: the store writes this
-- one row at the start of its write transaction and deletes it before the commit, so no
-- other connection ever sees it (one writer at a time; readers see committed data only).
-- A change made while the table is empty, hand-written SQL, is recorded as 'database'.
CREATE TABLE IF NOT EXISTS hapnd_audit_context (
    only_row    INTEGER PRIMARY KEY CHECK (only_row = 1),
    actor_kind  TEXT NOT NULL,
    actor       TEXT NOT NULL,
    client      TEXT,
    detail      TEXT
);

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_audit_inserted AFTER INSERT ON hapnd_api_keys
BEGIN
    INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, client, expires_at)
    VALUES (
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER),
        NEW.tenant, NEW.id, 'created',
        COALESCE((SELECT actor_kind FROM hapnd_audit_context), 'database'),
        COALESCE((SELECT actor FROM hapnd_audit_context), 'database'),
        (SELECT client FROM hapnd_audit_context),
        NEW.expires_at);
END;

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_audit_revoked AFTER UPDATE OF revoked_at ON hapnd_api_keys
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, client, detail)
    VALUES (
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER),
        NEW.tenant, NEW.id, 'revoked',
        COALESCE((SELECT actor_kind FROM hapnd_audit_context), 'database'),
        COALESCE((SELECT actor FROM hapnd_audit_context), 'database'),
        (SELECT client FROM hapnd_audit_context),
        (SELECT detail FROM hapnd_audit_context));
END;

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_audit_unrevoked AFTER UPDATE OF revoked_at ON hapnd_api_keys
WHEN OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL
BEGIN
    INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, client)
    VALUES (
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER),
        NEW.tenant, NEW.id, 'unrevoked',
        COALESCE((SELECT actor_kind FROM hapnd_audit_context), 'database'),
        COALESCE((SELECT actor FROM hapnd_audit_context), 'database'),
        (SELECT client FROM hapnd_audit_context));
END;

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_audit_expiry AFTER UPDATE OF expires_at ON hapnd_api_keys
WHEN OLD.expires_at IS NOT NEW.expires_at
BEGIN
    INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, client, expires_at)
    VALUES (
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER),
        NEW.tenant, NEW.id, 'expiry_scheduled',
        COALESCE((SELECT actor_kind FROM hapnd_audit_context), 'database'),
        COALESCE((SELECT actor FROM hapnd_audit_context), 'database'),
        (SELECT client FROM hapnd_audit_context),
        NEW.expires_at);
END;

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_audit_deleted AFTER DELETE ON hapnd_api_keys
BEGIN
    INSERT INTO hapnd_key_events (at, tenant, key_id, event, actor_kind, actor, client)
    VALUES (
        CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER),
        OLD.tenant, OLD.id, 'deleted',
        COALESCE((SELECT actor_kind FROM hapnd_audit_context), 'database'),
        COALESCE((SELECT actor FROM hapnd_audit_context), 'database'),
        (SELECT client FROM hapnd_audit_context));
END;
