-- Schema v5: the durable job queue (docs/jobs.md). Keyed by tenant first.
-- status: staged (input arriving, not claimable) → queued → running (owner
-- holds the lease until lease_until) → succeeded | failed | canceled.
-- A staged job's lease_until is its upload deadline.
CREATE TABLE jobs (
    tenant_id         TEXT NOT NULL,
    id                TEXT NOT NULL,
    kind              TEXT NOT NULL
                      CHECK (kind IN ('import', 'export', 'delete_tenant', 'delete_collection')),
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

-- The only cross-tenant reads: the claim (oldest queued, or running with an
-- expired lease) and the purge. Both indexes are partial: they hold only the
-- jobs in flight, or finished and waiting for purge, or still staged.
CREATE INDEX jobs_claimable ON jobs(queued_at, id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_expiring ON jobs(result_expires_at) WHERE result_expires_at IS NOT NULL;
CREATE INDEX jobs_staged ON jobs(lease_until) WHERE status = 'staged';

-- A job's input (an upload) and result (an export file), in chunks of about
-- 1 MiB numbered from 0, so neither is ever in memory whole. A rowid table:
-- SQLite keeps large rows out of WITHOUT ROWID tables' b-tree pages better.
CREATE TABLE job_blobs (
    tenant_id TEXT NOT NULL,
    job_id    TEXT NOT NULL,
    part      TEXT NOT NULL CHECK (part IN ('input', 'result')),
    seq       INTEGER NOT NULL,
    bytes     BLOB NOT NULL,
    UNIQUE (tenant_id, job_id, part, seq)
);
