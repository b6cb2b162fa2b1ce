-- Many instances on one database (issues #13, #15).
--
-- 1. Last-used times move to a table of their own: usage writes from many instances never
--    lock a key's row, so a revocation never waits for them. hapnd_api_keys.last_used_at
--    stays (instances of an older version still write it during a rolling upgrade) and is
--    read as the greater of the two.
--    Each key's row is created with the key (by the insert trigger below), so a usage write
--    only ever updates, and can skip rows another instance is updating.
CREATE TABLE IF NOT EXISTS hapnd_key_usage (
    id            TEXT        PRIMARY KEY,
    last_used_at  TIMESTAMPTZ
);
INSERT INTO hapnd_key_usage (id, last_used_at)
SELECT id, last_used_at FROM hapnd_api_keys
ON CONFLICT (id) DO NOTHING;

-- 2. A change log every instance can read, so a notification that was never sent (the NOTIFY
--    queue full, a process that died between its commit and its notify) or never received is
--    caught by the next read. Rows are written without a generation; a deferred trigger
--    numbers them at commit time from a one-row counter, whose row lock it holds only from
--    then until the commit completes (as PostgreSQL's own notify lock is held), so
--    generations become visible in commit order and without gaps: a reader that has seen
--    generation g has seen every one before. A transaction left open after changing a key
--    holds no lock that anyone else's change waits for. A NULL key_hash means "forget
--    everything" (a bulk change, or hapnd_auth_flush()).
CREATE TABLE IF NOT EXISTS hapnd_key_generation (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    gen       BIGINT  NOT NULL
);
INSERT INTO hapnd_key_generation (only_row, gen) VALUES (TRUE, 0) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS hapnd_key_changes (
    gen       BIGINT,
    key_hash  BYTEA
);
CREATE INDEX IF NOT EXISTS hapnd_key_changes_gen ON hapnd_key_changes (gen);

-- Logs one statement's changed hashes and wakes the listeners. A NULL hash, or more than 64
-- hashes, are logged (and notified) as one flush: a bulk change costs every instance one
-- notification, not one per row. The notification is best effort: skipped when the queue is
-- half full (a full queue would fail this transaction at commit, revocation included) or
-- when the session says hapnd_auth.notify = off (the store's own writes, which notify after
-- their commit instead). Listeners read the log on every notification and every heartbeat,
-- so a skipped notification delays an invalidation by one heartbeat at most.
CREATE OR REPLACE FUNCTION hapnd_auth_log_changes(hashes BYTEA[]) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    n INT := coalesce(cardinality(hashes), 0);
    flush BOOLEAN := n > 64 OR array_position(hashes, NULL) IS NOT NULL;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    IF NOT flush THEN
        INSERT INTO hapnd_key_changes (key_hash) SELECT h FROM unnest(hashes) AS h;
    ELSE
        INSERT INTO hapnd_key_changes (key_hash) VALUES (NULL);
    END IF;
    IF current_setting('hapnd_auth.notify', true) IS DISTINCT FROM 'off'
       AND pg_notification_queue_usage() < 0.5 THEN
        IF NOT flush THEN
            PERFORM pg_notify('hapnd_auth_keys', encode(h, 'hex')) FROM unnest(hashes) AS h;
        ELSE
            PERFORM pg_notify('hapnd_auth_keys', 'flush');
        END IF;
    END IF;
END
$$;

-- At commit: this transaction's log rows (the only unnumbered rows it can see; other
-- transactions' are uncommitted, hence invisible) get the next generation. Fires once per
-- logged row; all but the first find nothing to number.
CREATE OR REPLACE FUNCTION hapnd_key_changes_number() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    g BIGINT;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM hapnd_key_changes WHERE gen IS NULL) THEN
        RETURN NULL;
    END IF;
    UPDATE hapnd_key_generation SET gen = gen + 1 RETURNING gen INTO g;
    UPDATE hapnd_key_changes SET gen = g WHERE gen IS NULL;
    -- Readers notice a pruned generation (a gap) and flush, so pruning is always safe.
    DELETE FROM hapnd_key_changes WHERE gen <= g - 10000;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS hapnd_key_changes_number ON hapnd_key_changes;
CREATE CONSTRAINT TRIGGER hapnd_key_changes_number AFTER INSERT ON hapnd_key_changes
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION hapnd_key_changes_number();

-- For bulk changes made with the triggers disabled: every instance forgets everything.
CREATE OR REPLACE FUNCTION hapnd_auth_flush() RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$ SELECT hapnd_auth_log_changes(ARRAY[NULL::bytea]) $$;

-- Every function keeps the search_path it was created with: the triggers fire for sessions
-- whose own search_path does not name this schema (a DBA's hand-written SQL).

-- 3. Statement-level triggers with transition tables replace the per-row trigger of 0002:
--    one log entry and a bounded number of notifications per statement. At most 65 hashes
--    are collected: more than 64 is a flush anyway.
CREATE OR REPLACE FUNCTION hapnd_api_keys_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO hapnd_key_usage (id) SELECT id FROM new_rows ON CONFLICT (id) DO NOTHING;
    PERFORM hapnd_auth_log_changes(ARRAY(SELECT key_hash FROM new_rows LIMIT 65));
    RETURN NULL;
END
$$;

-- Only rows whose identity, revocation or expiry changed: a last-used write by an instance
-- of an older version logs nothing.
CREATE OR REPLACE FUNCTION hapnd_api_keys_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM hapnd_auth_log_changes(ARRAY(
        SELECT DISTINCT key_hash FROM (
            (SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at FROM old_rows
             EXCEPT
             SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at FROM new_rows)
            UNION ALL
            (SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at FROM new_rows
             EXCEPT
             SELECT id, tenant, environment, name, key_hash, revoked_at, expires_at FROM old_rows)
        ) AS changed LIMIT 65));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION hapnd_api_keys_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM hapnd_key_usage AS u USING old_rows AS o WHERE u.id = o.id;
    PERFORM hapnd_auth_log_changes(ARRAY(SELECT key_hash FROM old_rows LIMIT 65));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS hapnd_api_keys_changed ON hapnd_api_keys;
DROP FUNCTION IF EXISTS hapnd_api_keys_notify();

CREATE TRIGGER hapnd_api_keys_inserted AFTER INSERT ON hapnd_api_keys
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION hapnd_api_keys_inserted();

CREATE TRIGGER hapnd_api_keys_updated AFTER UPDATE ON hapnd_api_keys
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION hapnd_api_keys_updated();

CREATE TRIGGER hapnd_api_keys_deleted AFTER DELETE ON hapnd_api_keys
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION hapnd_api_keys_deleted();

-- 4. No infinite times: 'infinity' cannot be read as a time (old rows are decoded
--    defensively; NOT VALID leaves them in place for the operator to fix).
ALTER TABLE hapnd_api_keys ADD CONSTRAINT hapnd_api_keys_finite_times
    CHECK (isfinite(created_at) AND isfinite(revoked_at) AND isfinite(expires_at)
           AND isfinite(last_used_at)) NOT VALID;
