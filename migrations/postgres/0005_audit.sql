-- The audit trail (issue #26): one row per change to a key, written in the change's own
-- transaction by a trigger, so hand-written SQL is recorded too. Never a key, never a hash.
-- The store says who is acting with transaction-local settings (set_config(..., true)):
-- hapnd.actor_kind, hapnd.actor, hapnd.client, hapnd.detail. A change made without them
-- (hand-written SQL, another tool) is recorded as 'database'.
CREATE TABLE IF NOT EXISTS hapnd_key_events (
    seq             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    tenant          TEXT        NOT NULL,
    key_id          TEXT        NOT NULL,
    event           TEXT        NOT NULL,
    actor_kind      TEXT        NOT NULL,
    actor           TEXT        NOT NULL,
    client          TEXT,
    replacement_id  TEXT,
    expires_at      TIMESTAMPTZ,
    detail          TEXT
);
CREATE INDEX IF NOT EXISTS hapnd_key_events_tenant ON hapnd_key_events (tenant, seq);
CREATE INDEX IF NOT EXISTS hapnd_key_events_key ON hapnd_key_events (key_id, seq);
CREATE INDEX IF NOT EXISTS hapnd_key_events_at ON hapnd_key_events (at);

CREATE OR REPLACE FUNCTION hapnd_api_keys_audit() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    kind   TEXT := nullif(current_setting('hapnd.actor_kind', true), '');
    label  TEXT := nullif(current_setting('hapnd.actor', true), '');
    client TEXT := nullif(current_setting('hapnd.client', true), '');
    detail TEXT := nullif(current_setting('hapnd.detail', true), '');
BEGIN
    IF kind IS NULL THEN
        kind := 'database';
        label := 'database';
        client := NULL;
        detail := NULL;
    END IF;
    label := coalesce(label, kind);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, client, expires_at)
        VALUES (NEW.tenant, NEW.id, 'created', kind, label, client, NEW.expires_at);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, client)
        VALUES (OLD.tenant, OLD.id, 'deleted', kind, label, client);
    ELSE
        IF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
            INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, client, detail)
            VALUES (NEW.tenant, NEW.id, 'revoked', kind, label, client, detail);
        ELSIF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS NULL THEN
            INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, client)
            VALUES (NEW.tenant, NEW.id, 'unrevoked', kind, label, client);
        END IF;
        IF OLD.expires_at IS DISTINCT FROM NEW.expires_at THEN
            INSERT INTO hapnd_key_events (tenant, key_id, event, actor_kind, actor, client, expires_at)
            VALUES (NEW.tenant, NEW.id, 'expiry_scheduled', kind, label, client, NEW.expires_at);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS hapnd_api_keys_audit ON hapnd_api_keys;
CREATE TRIGGER hapnd_api_keys_audit
AFTER INSERT OR DELETE OR UPDATE OF revoked_at, expires_at ON hapnd_api_keys
FOR EACH ROW EXECUTE FUNCTION hapnd_api_keys_audit();
