-- Canon's PostgreSQL schema, version 1: what SQLite reached in its ten
-- migrations, in one. Times are milliseconds since the Unix epoch (BIGINT).
-- Text compares byte by byte (COLLATE "C"), as SQLite's does: ids, names
-- and cursors order the same on both backends, whatever the database's
-- locale.
-- Every table that belongs to a tenant leads its primary key and each of its
-- indexes with tenant_id, so the schema can later be distributed by tenant
-- (docs/deploy.md, "The tenant-first key layout").

CREATE TABLE tenants (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    name                  TEXT COLLATE "C" NOT NULL UNIQUE,
    version               BIGINT NOT NULL DEFAULT 1,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    deleted_at            BIGINT,      -- set: the tenant is a tombstone
    deletion_job          TEXT COLLATE "C",        -- the job removing its contents
    emptied_at            BIGINT,      -- set by that job's last step
    rate_limit_per_second BIGINT,
    burst                 BIGINT,
    daily_quota           BIGINT
);
CREATE INDEX tenants_emptied ON tenants (emptied_at) WHERE emptied_at IS NOT NULL;

CREATE TABLE users (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    email       TEXT COLLATE "C" NOT NULL,
    role        TEXT COLLATE "C" NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
CREATE INDEX users_by_role ON users (tenant_id, role);
-- Keys are addressed by their user's id alone (`api_key(user_id, id)`):
-- this finds the user's tenant.
CREATE UNIQUE INDEX users_by_id ON users (id);

-- tenant_id and user_id are NULL for the operator's key. token_hash is the
-- one global look-up of a request (who holds this key?).
CREATE TABLE api_keys (
    tenant_id   TEXT COLLATE "C" NOT NULL DEFAULT '',
    id          TEXT COLLATE "C" NOT NULL,
    user_id     TEXT COLLATE "C",
    name        TEXT COLLATE "C" NOT NULL,
    token_hash  TEXT COLLATE "C" NOT NULL UNIQUE,
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX api_keys_by_user ON api_keys (tenant_id, user_id, id);

CREATE TABLE collections (
    tenant_id        TEXT COLLATE "C" NOT NULL,
    id               TEXT COLLATE "C" NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    schema           TEXT COLLATE "C" NOT NULL,
    unique_fields    TEXT COLLATE "C" NOT NULL,
    require_if_match BOOLEAN NOT NULL,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
-- Records are addressed by their collection's id alone: this finds the
-- collection's tenant.
CREATE UNIQUE INDEX collections_by_id ON collections (id);

-- data is jsonb (filters, sorts); body is the JSON text as Canon wrote it,
-- sent as it is (key order and number spelling kept).
CREATE TABLE records (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    collection_id TEXT COLLATE "C" NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    data          JSONB NOT NULL,
    body          TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    etag          TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, collection_id, id)
);

-- One row per (unique field, value) of a record: the primary key enforces
-- uniqueness in the database, and the failing insert names the field.
CREATE TABLE unique_values (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    collection_id TEXT COLLATE "C" NOT NULL,
    field         TEXT COLLATE "C" NOT NULL,
    value         TEXT COLLATE "C" NOT NULL,
    record_id     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, collection_id, field, value)
);
CREATE INDEX unique_values_by_record ON unique_values (tenant_id, collection_id, record_id);

-- Deleted things answer 410 until expires_at, then 404. Keyed by what
-- addresses them (scope: the parent's id; "" for tenant names).
CREATE TABLE tombstones (
    kind        TEXT COLLATE "C" NOT NULL,
    scope       TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    deleted_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (kind, scope, key)
);
CREATE INDEX tombstones_by_expiry ON tombstones (expires_at);

CREATE TABLE locks (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    collection_id TEXT COLLATE "C" NOT NULL,
    record_id     TEXT COLLATE "C" NOT NULL,
    holder        TEXT COLLATE "C" NOT NULL,
    acquired_at   BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, collection_id, record_id)
);
CREATE INDEX locks_by_expiry ON locks (expires_at);

CREATE TABLE collection_aliases (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    collection_id TEXT COLLATE "C" NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX collection_aliases_by_collection ON collection_aliases (tenant_id, collection_id);

-- scope starts with the caller's tenant (the server's scope prefix).
CREATE TABLE idempotency_keys (
    scope        TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    fingerprint  TEXT COLLATE "C" NOT NULL,
    claimed_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    status       INTEGER,
    headers      TEXT COLLATE "C",
    body         BYTEA,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);

CREATE TABLE secrets (
    name       TEXT COLLATE "C" PRIMARY KEY,
    value      TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE jobs (
    tenant_id         TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    kind              TEXT COLLATE "C" NOT NULL
                      CHECK (kind IN ('import', 'export', 'delete_tenant', 'delete_collection')),
    status            TEXT COLLATE "C" NOT NULL
                      CHECK (status IN ('staged', 'queued', 'running', 'succeeded', 'failed', 'canceled')),
    params            TEXT COLLATE "C" NOT NULL,
    progress_done     BIGINT NOT NULL,
    progress_total    BIGINT,
    checkpoint        TEXT COLLATE "C",
    result            TEXT COLLATE "C",
    problem           TEXT COLLATE "C",
    attempts          BIGINT NOT NULL,
    owner             TEXT COLLATE "C",
    lease_until       BIGINT,
    input_chunks      BIGINT NOT NULL DEFAULT 0,
    input_bytes       BIGINT NOT NULL DEFAULT 0,
    result_chunks     BIGINT NOT NULL DEFAULT 0,
    result_bytes      BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    queued_at         BIGINT,
    started_at        BIGINT,
    finished_at       BIGINT,
    result_expires_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
-- The only cross-tenant reads: the claim and the purge (partial indexes of
-- the jobs in flight, finished, or staged).
CREATE INDEX jobs_claimable ON jobs (queued_at, id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_expiring ON jobs (result_expires_at) WHERE result_expires_at IS NOT NULL;
CREATE INDEX jobs_staged ON jobs (lease_until) WHERE status = 'staged';

CREATE TABLE job_blobs (
    tenant_id TEXT COLLATE "C" NOT NULL,
    job_id    TEXT COLLATE "C" NOT NULL,
    part      TEXT COLLATE "C" NOT NULL CHECK (part IN ('input', 'result')),
    seq       BIGINT NOT NULL,
    bytes     BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, job_id, part, seq)
);

CREATE TABLE maintenance (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    enabled             BOOLEAN NOT NULL,
    retry_after_seconds BIGINT NOT NULL,
    message             TEXT COLLATE "C" NOT NULL,
    version             BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
INSERT INTO maintenance (id, enabled, retry_after_seconds, message, version, updated_at)
VALUES (1, FALSE, 300, '', 1, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT);

CREATE TABLE quota_usage (
    tenant_id TEXT COLLATE "C" NOT NULL,
    day       BIGINT NOT NULL,
    used      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX quota_usage_by_day ON quota_usage (day);

-- The sort key of a record list (as SQLite's canon_sort_key): text longer
-- than 256 characters becomes its first 256, '#' and the SHA-256 (hex) of
-- the whole, so a cursor stays small and exact.
CREATE FUNCTION canon_sort_text(s TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN length(s) > 256
                THEN left(s, 256) || '#' || encode(sha256(convert_to(s, 'UTF8')), 'hex')
                ELSE s END
$$;

-- The cache generation (docs/decisions.md, "Caches and their
-- invalidation"): every statement that changes tenants, users, API keys,
-- collections or aliases moves it in its own transaction. Each node polls
-- it (docs/deploy.md, "The cache generation").
CREATE TABLE cache_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);
INSERT INTO cache_generation (id, n) VALUES (1, 0);

CREATE FUNCTION canon_move_generation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_generation SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_move_the_generation AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION canon_move_generation();
CREATE TRIGGER users_move_the_generation AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION canon_move_generation();
CREATE TRIGGER api_keys_move_the_generation AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION canon_move_generation();
CREATE TRIGGER collections_move_the_generation AFTER INSERT OR UPDATE OR DELETE ON collections
    FOR EACH STATEMENT EXECUTE FUNCTION canon_move_generation();
CREATE TRIGGER collection_aliases_move_the_generation AFTER INSERT OR UPDATE OR DELETE ON collection_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION canon_move_generation();
