-- The cache generation (docs/decisions.md, "Caches and their
-- invalidation"): a counter every change to tenants, users, API keys,
-- collections or collection aliases moves, in the change's own
-- transaction. Each process caches who a key belongs to and what a tenant
-- and a collection name resolve to; it drops those entries when the counter
-- moves (its own writes at once, other processes' within 100 ms).
CREATE TABLE cache_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO cache_generation (id, n) VALUES (1, 0);

CREATE TRIGGER tenants_insert_moves_the_generation AFTER INSERT ON tenants
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER tenants_update_moves_the_generation AFTER UPDATE ON tenants
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER tenants_delete_moves_the_generation AFTER DELETE ON tenants
BEGIN UPDATE cache_generation SET n = n + 1; END;

CREATE TRIGGER users_insert_moves_the_generation AFTER INSERT ON users
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER users_update_moves_the_generation AFTER UPDATE ON users
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER users_delete_moves_the_generation AFTER DELETE ON users
BEGIN UPDATE cache_generation SET n = n + 1; END;

CREATE TRIGGER api_keys_insert_moves_the_generation AFTER INSERT ON api_keys
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER api_keys_update_moves_the_generation AFTER UPDATE ON api_keys
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER api_keys_delete_moves_the_generation AFTER DELETE ON api_keys
BEGIN UPDATE cache_generation SET n = n + 1; END;

CREATE TRIGGER collections_insert_moves_the_generation AFTER INSERT ON collections
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER collections_update_moves_the_generation AFTER UPDATE ON collections
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER collections_delete_moves_the_generation AFTER DELETE ON collections
BEGIN UPDATE cache_generation SET n = n + 1; END;

CREATE TRIGGER collection_aliases_insert_moves_the_generation AFTER INSERT ON collection_aliases
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER collection_aliases_update_moves_the_generation AFTER UPDATE ON collection_aliases
BEGIN UPDATE cache_generation SET n = n + 1; END;
CREATE TRIGGER collection_aliases_delete_moves_the_generation AFTER DELETE ON collection_aliases
BEGIN UPDATE cache_generation SET n = n + 1; END;
