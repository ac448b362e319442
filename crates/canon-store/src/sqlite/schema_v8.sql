-- Maintenance mode (docs/decisions.md, "Maintenance mode"): one row, kept
-- in the store so that it survives a restart and every node on the database
-- sees it. Off until the operator turns it on.
CREATE TABLE maintenance (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    enabled             INTEGER NOT NULL,
    retry_after_seconds INTEGER NOT NULL,
    message             TEXT NOT NULL,
    version             INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
INSERT INTO maintenance (id, enabled, retry_after_seconds, message, version, updated_at)
VALUES (1, 0, 300, '', 1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
