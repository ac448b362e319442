-- Canon schema, version 2: locks, collection renames, idempotency keys.

-- A lease on one record. A row whose expires_at has passed is free: readers
-- ignore it and the next acquire overwrites it.
CREATE TABLE locks (
    collection_id TEXT NOT NULL,
    record_id     TEXT NOT NULL,
    holder        TEXT NOT NULL,
    acquired_at   INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (collection_id, record_id)
) WITHOUT ROWID;

-- An old name of a renamed collection, answered with a permanent redirect
-- to the collection's current name. Creating a collection under the old
-- name, or deleting the collection, ends the redirect.
CREATE TABLE collection_aliases (
    tenant_id     TEXT NOT NULL,
    name          TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;
CREATE INDEX collection_aliases_by_collection ON collection_aliases(collection_id);

-- One POST sent with an Idempotency-Key, per caller (scope) and key.
-- status is NULL while the first request is in flight.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    claimed_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    status       INTEGER,
    headers      TEXT,
    body         BLOB,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys(expires_at);
CREATE INDEX locks_by_expiry ON locks(expires_at);
