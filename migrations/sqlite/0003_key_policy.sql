-- Key policy: scopes, metadata and a rate limit, fixed when a key is created (rotation
-- copies them). NULL in a row written before this migration means no scopes (full
-- access), no metadata and no limit, which is what every key had.
--   scopes      the scopes, space-separated (`events:read events:write`)
--   metadata    a JSON object, compact, at most 4 KiB
--   rate_limit  `COUNT/PERIOD,burst=N` (`100/s,burst=200`)
-- The library checks each value when it reads a row: a row it cannot read is refused
-- (503 for its key), never read as "no policy".
ALTER TABLE hapnd_api_keys ADD COLUMN scopes TEXT;
ALTER TABLE hapnd_api_keys ADD COLUMN metadata TEXT;
ALTER TABLE hapnd_api_keys ADD COLUMN rate_limit TEXT;

-- A hand-written UPDATE of a key's policy changes what a cached answer says: log it too.
DROP TRIGGER IF EXISTS hapnd_api_keys_updated;
CREATE TRIGGER hapnd_api_keys_updated
AFTER UPDATE OF id, tenant, environment, name, key_hash, revoked_at, expires_at, scopes,
    metadata, rate_limit ON hapnd_api_keys
BEGIN
    INSERT INTO hapnd_key_changes (key_hash) VALUES (OLD.key_hash);
    INSERT INTO hapnd_key_changes (key_hash) SELECT NEW.key_hash WHERE NEW.key_hash <> OLD.key_hash;
END;
