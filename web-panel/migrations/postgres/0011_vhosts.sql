-- Vhosts applied to their server by the `vhosts` job (roles/mwsvhosts): what
-- Apache serves for the name and its aliases. `kind` says how: `static`
-- files, `php` (mod_php), `wsgi` (mod_wsgi, `target` = the WSGI script) or
-- `proxy` (mod_proxy, `target` = the backend URL). A name or alias may be
-- used by one site only; the domain layer checks that across sites
-- (`services::vhosts`, under a table lock), the UNIQUE constraints within
-- the tables.

ALTER TABLE vhosts ADD COLUMN kind TEXT NOT NULL DEFAULT 'static'
    CHECK (kind IN ('static', 'php', 'wsgi', 'proxy'));
ALTER TABLE vhosts ADD COLUMN document_root TEXT NOT NULL DEFAULT '';
ALTER TABLE vhosts ADD COLUMN target TEXT;
ALTER TABLE vhosts ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX vhosts_name ON vhosts (name);
