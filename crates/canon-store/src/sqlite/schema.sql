-- Canon schema, version 1. Times are milliseconds since the Unix epoch.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, email)
);

-- tenant_id and user_id are NULL for the operator's key.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants(id),
    user_id     TEXT REFERENCES users(id),
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);
CREATE INDEX api_keys_by_user ON api_keys(user_id, id);

CREATE TABLE collections (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    schema           TEXT NOT NULL,
    unique_fields    TEXT NOT NULL,
    require_if_match INTEGER NOT NULL,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE records (
    collection_id TEXT NOT NULL REFERENCES collections(id),
    id            TEXT NOT NULL,
    data          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    etag          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (collection_id, id)
) WITHOUT ROWID;

-- One row per (unique field, value) of a record: the primary key enforces
-- uniqueness in the engine, and the failing insert names the field.
CREATE TABLE unique_values (
    collection_id TEXT NOT NULL,
    field         TEXT NOT NULL,
    value         TEXT NOT NULL,
    record_id     TEXT NOT NULL,
    PRIMARY KEY (collection_id, field, value)
) WITHOUT ROWID;
CREATE INDEX unique_values_by_record ON unique_values(collection_id, record_id);

-- Deleted things answer 410 until expires_at, then 404.
CREATE TABLE tombstones (
    kind        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    deleted_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (kind, scope, key)
) WITHOUT ROWID;
