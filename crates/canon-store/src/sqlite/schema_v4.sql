-- Schema v4: server secrets (the key that signs list cursors), created once
-- by whichever node asks first and shared by every node on this database.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
