-- (SQLite) Mirrors ../postgres/0022_services_at_scale.sql.
-- The service list at scale (issue 22, `services::servers::list`): pages
-- are keyset pages in descending id order. SQLite indexes end with the
-- rowid, so `services_site` (site_id) already walks a site's services in id
-- order; this adds the same for a status filter.
CREATE INDEX services_status ON services (status);

-- Hostname search ("hostname contains", a LIKE '%…%'): an FTS5 trigram
-- index over pool_addresses.hostname, kept in step by triggers. FTS5's
-- trigram tokenizer answers LIKE patterns of three characters or more from
-- the index; shorter ones scan pool_addresses as before.
CREATE VIRTUAL TABLE pool_addresses_hostname USING fts5 (
    hostname, content = 'pool_addresses', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO pool_addresses_hostname (pool_addresses_hostname) VALUES ('rebuild');

CREATE TRIGGER pool_addresses_hostname_insert AFTER INSERT ON pool_addresses BEGIN
    INSERT INTO pool_addresses_hostname (rowid, hostname) VALUES (new.id, new.hostname);
END;
CREATE TRIGGER pool_addresses_hostname_delete AFTER DELETE ON pool_addresses BEGIN
    INSERT INTO pool_addresses_hostname (pool_addresses_hostname, rowid, hostname)
        VALUES ('delete', old.id, old.hostname);
END;
CREATE TRIGGER pool_addresses_hostname_update AFTER UPDATE OF id, hostname ON pool_addresses BEGIN
    INSERT INTO pool_addresses_hostname (pool_addresses_hostname, rowid, hostname)
        VALUES ('delete', old.id, old.hostname);
    INSERT INTO pool_addresses_hostname (rowid, hostname) VALUES (new.id, new.hostname);
END;

-- Creating a server claims the free address with the lowest id
-- (`alloc::claim`): without this index that walked every allocated address
-- first.
CREATE INDEX pool_addresses_free ON pool_addresses (id) WHERE state = 'free';
