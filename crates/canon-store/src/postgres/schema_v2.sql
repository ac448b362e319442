-- Devices (SQLite schema v11; docs/devices.md). `headers` is a JSON array of
-- {"name", "sealed"}: each value sealed by the server before it reaches the
-- store, so the database never holds a device's credentials in clear.
CREATE TABLE devices (
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    id          TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    endpoint    TEXT NOT NULL,
    timeout_ms  BIGINT NOT NULL CHECK (timeout_ms > 0),
    headers     TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

-- Device commands are jobs.
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('import', 'export', 'delete_tenant', 'delete_collection', 'device_command'));
