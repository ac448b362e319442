-- Schema v11: devices, reached through the gateway (docs/devices.md).
-- `headers` is a JSON array of {"name", "sealed"}: each value sealed by the
-- server (ChaCha20-Poly1305 under CANON_SECRET_KEY) before it reaches the
-- store, so the file never holds a device's credentials in clear.
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    timeout_ms  INTEGER NOT NULL CHECK (timeout_ms > 0),
    headers     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Device commands are jobs (kind 'device_command'): the kind's CHECK is
-- part of the table, so the table is rebuilt with the new list, its rows
-- and indexes as they were.
CREATE TABLE jobs_v11 (
    tenant_id         TEXT NOT NULL,
    id                TEXT NOT NULL,
    kind              TEXT NOT NULL
                      CHECK (kind IN ('import', 'export', 'delete_tenant', 'delete_collection', 'device_command')),
    status            TEXT NOT NULL
                      CHECK (status IN ('staged', 'queued', 'running', 'succeeded', 'failed', 'canceled')),
    params            TEXT NOT NULL,
    progress_done     INTEGER NOT NULL,
    progress_total    INTEGER,
    checkpoint        TEXT,
    result            TEXT,
    problem           TEXT,
    attempts          INTEGER NOT NULL,
    owner             TEXT,
    lease_until       INTEGER,
    input_chunks      INTEGER NOT NULL DEFAULT 0,
    input_bytes       INTEGER NOT NULL DEFAULT 0,
    result_chunks     INTEGER NOT NULL DEFAULT 0,
    result_bytes      INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    queued_at         INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    result_expires_at INTEGER,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
INSERT INTO jobs_v11 (tenant_id, id, kind, status, params, progress_done, progress_total, checkpoint, result,
    problem, attempts, owner, lease_until, input_chunks, input_bytes, result_chunks, result_bytes, created_at,
    queued_at, started_at, finished_at, result_expires_at)
SELECT tenant_id, id, kind, status, params, progress_done, progress_total, checkpoint, result,
    problem, attempts, owner, lease_until, input_chunks, input_bytes, result_chunks, result_bytes, created_at,
    queued_at, started_at, finished_at, result_expires_at
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v11 RENAME TO jobs;
CREATE INDEX jobs_claimable ON jobs(queued_at, id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_expiring ON jobs(result_expires_at) WHERE result_expires_at IS NOT NULL;
CREATE INDEX jobs_staged ON jobs(lease_until) WHERE status = 'staged';
