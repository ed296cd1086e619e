-- (SQLite) Mirrors ../postgres/0018_server_metrics.sql.
-- System analytics (`services::analytics`): each server's figures, raw
-- (resolution 0: one point per collection, kept an hour) and rolled up
-- into averages over 5 minutes (kept a day), an hour (kept 31 days) and a
-- day (kept 366 days); the last counters read from each server, which the
-- next collection turns into rates; and how far each rollup has got.

CREATE TABLE server_metrics (
    service_id     INTEGER NOT NULL REFERENCES services (id),
    resolution     INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    cpu_pct        REAL,
    mem_used       REAL,
    mem_total      REAL,
    disk_used      REAL,
    disk_total     REAL,
    disk_read_bps  REAL,
    disk_write_bps REAL,
    net_rx_bps     REAL,
    net_tx_bps     REAL,
    http_rps       REAL,
    PRIMARY KEY (service_id, resolution, at)
) WITHOUT ROWID;
CREATE INDEX server_metrics_by_time ON server_metrics (resolution, at);

CREATE TABLE server_metric_counters (
    service_id INTEGER PRIMARY KEY REFERENCES services (id),
    at         INTEGER NOT NULL,
    counters   TEXT    NOT NULL
);

CREATE TABLE metric_rollups (
    resolution INTEGER PRIMARY KEY,
    done_until INTEGER NOT NULL
);
