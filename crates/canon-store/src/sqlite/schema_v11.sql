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
