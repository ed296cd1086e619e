-- (SQLite) Mirrors ../postgres/0015_snapshots.sql.
-- Snapshots of servers taken through the hypervisor driver
-- (`services::snapshots`): one row per snapshot the driver holds, named
-- after the job that took it; and each site's schedule (a site without a
-- row has the default: daily, keep 7).

CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id INTEGER NOT NULL REFERENCES services (id),
    name       TEXT    NOT NULL,
    origin     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (service_id, name)
);

CREATE TABLE snapshot_schedules (
    site_id    INTEGER PRIMARY KEY REFERENCES sites (id),
    every_secs INTEGER NOT NULL,
    keep       INTEGER NOT NULL,
    enabled    BOOLEAN NOT NULL
);
