-- (SQLite) Mirrors ../postgres/0020_hypervisor_hosts.sql.
CREATE TABLE hypervisor_hosts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    driver       TEXT    NOT NULL,
    uri          TEXT    NOT NULL DEFAULT '',
    vcpus        INTEGER NOT NULL DEFAULT 0,
    ram_mb       INTEGER NOT NULL DEFAULT 0,
    disk_gb      INTEGER NOT NULL DEFAULT 0,
    cpu_ratio    REAL    NOT NULL DEFAULT 1,
    ram_ratio    REAL    NOT NULL DEFAULT 1,
    disk_ratio   REAL    NOT NULL DEFAULT 1,
    sites        TEXT    NOT NULL DEFAULT '[]',
    server_types TEXT    NOT NULL DEFAULT '[]',
    state        TEXT    NOT NULL CHECK (state IN ('active', 'draining', 'down')),
    updated_at   INTEGER NOT NULL
);

ALTER TABLE services ADD COLUMN host_id INTEGER REFERENCES hypervisor_hosts (id);
ALTER TABLE services ADD COLUMN migrate_to INTEGER REFERENCES hypervisor_hosts (id);
CREATE INDEX services_host ON services (host_id);
CREATE INDEX services_migrate_to ON services (migrate_to);
