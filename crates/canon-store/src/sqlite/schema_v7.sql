-- Schema v7: per-tenant rate limits (docs/decisions.md, "Rate limits and
-- quotas"). NULL means "the server's default" (CANON_RATE_LIMIT_PER_SECOND,
-- CANON_RATE_LIMIT_BURST, CANON_DAILY_QUOTA), so changing a default reaches
-- every tenant that was never given its own value.
ALTER TABLE tenants ADD COLUMN rate_limit_per_second INTEGER;
ALTER TABLE tenants ADD COLUMN burst INTEGER;
ALTER TABLE tenants ADD COLUMN daily_quota INTEGER;
