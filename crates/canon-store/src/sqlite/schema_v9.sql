-- Daily quota usage (docs/decisions.md, "Daily quotas across restarts and
-- nodes"): requests counted per tenant and UTC day. Each node adds what it
-- counted every few seconds and reads every tenant's total back, so a
-- restart keeps the day's count and nodes share it. Days before yesterday
-- are purged.
CREATE TABLE quota_usage (
    tenant_id TEXT NOT NULL,
    day       INTEGER NOT NULL,
    used      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
) WITHOUT ROWID;
CREATE INDEX quota_usage_by_day ON quota_usage (day);
