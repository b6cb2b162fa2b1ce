-- Key policy: scopes, metadata and a rate limit, fixed when a key is created (rotation
-- copies them). NULL in a row written before this migration means no scopes (full
-- access), no metadata and no limit, which is what every key had.
--   scopes      the scopes, space-separated (`events:read events:write`)
--   metadata    a JSON object, compact, at most 4 KiB (text, so it reads back byte for byte)
--   rate_limit  `COUNT/PERIOD,burst=N` (`100/s,burst=200`)
-- The library checks each value when it reads a row: a row it cannot read is refused
-- (503 for its key), never read as "no policy". Adding NULL columns rewrites nothing.
ALTER TABLE hapnd_api_keys ADD COLUMN IF NOT EXISTS scopes TEXT;
ALTER TABLE hapnd_api_keys ADD COLUMN IF NOT EXISTS metadata TEXT;
ALTER TABLE hapnd_api_keys ADD COLUMN IF NOT EXISTS rate_limit TEXT;

-- A hand-written UPDATE of a key's policy changes what a cached answer says: log it too
-- (0003's function, with the policy columns).
CREATE OR REPLACE FUNCTION hapnd_api_keys_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM hapnd_auth_log_changes(ARRAY(
        SELECT DISTINCT key_hash FROM (
            (SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at, scopes,
                    metadata, rate_limit FROM old_rows
             EXCEPT
             SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at, scopes,
                    metadata, rate_limit FROM new_rows)
            UNION ALL
            (SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at, scopes,
                    metadata, rate_limit FROM new_rows
             EXCEPT
             SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at, scopes,
                    metadata, rate_limit FROM old_rows)
        ) AS changed LIMIT 65));
    RETURN NULL;
END
$$;
