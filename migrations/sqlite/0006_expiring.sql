-- Expiry ahead (issue #26): `keys list --expiring-within` and the gateway's periodic count of
-- keys expiring soon read a range of this partial index only: unrevoked keys that expire,
-- by expiry. Keys without an expiry, and revoked keys, are not in it.
CREATE INDEX IF NOT EXISTS hapnd_api_keys_expiring ON hapnd_api_keys (expires_at, id)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
