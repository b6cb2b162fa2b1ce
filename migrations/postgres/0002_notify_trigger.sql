-- Every change that can make a cached answer stale notifies every instance, whoever makes
-- it: hand-written SQL and other tools included. The store's own revoke also notifies in its
-- transaction; PostgreSQL delivers identical notifications of one transaction once.
-- Last-used writes touch no listed column and notify nothing.
CREATE OR REPLACE FUNCTION hapnd_api_keys_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('hapnd_auth_keys', encode(NEW.key_hash, 'hex'));
        RETURN NULL;
    END IF;
    PERFORM pg_notify('hapnd_auth_keys', encode(OLD.key_hash, 'hex'));
    IF TG_OP = 'UPDATE' AND NEW.key_hash <> OLD.key_hash THEN
        PERFORM pg_notify('hapnd_auth_keys', encode(NEW.key_hash, 'hex'));
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS hapnd_api_keys_changed ON hapnd_api_keys;
CREATE TRIGGER hapnd_api_keys_changed
AFTER INSERT OR DELETE OR UPDATE OF id, tenant, environment, name, key_hash, revoked_at, expires_at
ON hapnd_api_keys
FOR EACH ROW EXECUTE PROCEDURE hapnd_api_keys_notify();
