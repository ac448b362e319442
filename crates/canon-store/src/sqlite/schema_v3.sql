-- Canon schema, version 3: every addressable entity has a version, from
-- which its strong entity tag derives, and a modification time, so every
-- resource answers conditional requests and conditional writes are checked
-- inside the write's transaction (`Expect::Version`).

ALTER TABLE tenants ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE api_keys ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE api_keys ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE api_keys SET updated_at = created_at;

-- Counting a tenant's admins (a tenant never loses its last admin).
CREATE INDEX users_by_role ON users(tenant_id, role);
