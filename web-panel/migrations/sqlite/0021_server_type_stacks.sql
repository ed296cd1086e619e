-- (SQLite) Mirrors ../postgres/0021_server_type_stacks.sql.
-- Server types that are stacks (`services::catalog::Stack`): a playbook the
-- configure step runs after the panel's own, the inventory groups the
-- server is in for it, and the variables the panel generates once per
-- server for it, as JSON ('' for a plain server type). The generated
-- values are kept sealed with the panel's key, never in clear.

ALTER TABLE server_types ADD COLUMN stack TEXT NOT NULL DEFAULT '';

CREATE TABLE service_secrets (
    service_id INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    sealed     TEXT    NOT NULL,
    PRIMARY KEY (service_id, name)
);
