-- Schema v6: tenant deletion (docs/jobs.md, "Tenant deletion"). A tenant
-- whose deletion started keeps its row, marked, until its contents are gone
-- and its deletion job was purged: the row holds the name (no new tenant
-- takes it meanwhile) and maps it to the id the job is keyed by, so the
-- operator can follow the job at /v1/tenants/{name}/jobs/{job}. Its
-- tombstone (kind 'tenant') is written when the deletion starts.
ALTER TABLE tenants ADD COLUMN deleted_at INTEGER;   -- set: the tenant is a tombstone
ALTER TABLE tenants ADD COLUMN deletion_job TEXT;    -- the job removing its contents
ALTER TABLE tenants ADD COLUMN emptied_at INTEGER;   -- set by that job's last step

-- The purge looks for emptied tenants only.
CREATE INDEX tenants_emptied ON tenants(emptied_at) WHERE emptied_at IS NOT NULL;
