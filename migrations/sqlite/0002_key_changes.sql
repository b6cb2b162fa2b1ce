-- Every change that can make a cached answer stale, in commit order (SQLite has one writer
-- at a time, so seq order is commit order). Another process's change feed replays the new
-- rows and invalidates just those hashes, instead of flushing its whole cache on every
-- commit: last-used writes, which change no answer, touch no listed column and log nothing.
-- Triggers, not application code, so a hand-written UPDATE or DELETE is seen too.
CREATE TABLE IF NOT EXISTS hapnd_key_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash  BLOB    NOT NULL
);

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_inserted AFTER INSERT ON hapnd_api_keys
BEGIN
    INSERT INTO hapnd_key_changes (key_hash) VALUES (NEW.key_hash);
END;

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_updated
AFTER UPDATE OF id, tenant, environment, name, key_hash, revoked_at, expires_at ON hapnd_api_keys
BEGIN
    INSERT INTO hapnd_key_changes (key_hash) VALUES (OLD.key_hash);
    INSERT INTO hapnd_key_changes (key_hash) SELECT NEW.key_hash WHERE NEW.key_hash <> OLD.key_hash;
END;

CREATE TRIGGER IF NOT EXISTS hapnd_api_keys_deleted AFTER DELETE ON hapnd_api_keys
BEGIN
    INSERT INTO hapnd_key_changes (key_hash) VALUES (OLD.key_hash);
END;
