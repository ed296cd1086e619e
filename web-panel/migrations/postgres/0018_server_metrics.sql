-- System analytics (`services::analytics`): each server's figures, raw
-- (resolution 0: one point per collection, kept an hour) and rolled up
-- into averages over 5 minutes (kept a day), an hour (kept 31 days) and a
-- day (kept 366 days); the last counters read from each server, which the
-- next collection turns into rates; and how far each rollup has got.

CREATE TABLE server_metrics (
    service_id     BIGINT NOT NULL REFERENCES services (id),
    resolution     BIGINT NOT NULL,
    at             BIGINT NOT NULL,
    cpu_pct        DOUBLE PRECISION,
    mem_used       DOUBLE PRECISION,
    mem_total      DOUBLE PRECISION,
    disk_used      DOUBLE PRECISION,
    disk_total     DOUBLE PRECISION,
    disk_read_bps  DOUBLE PRECISION,
    disk_write_bps DOUBLE PRECISION,
    net_rx_bps     DOUBLE PRECISION,
    net_tx_bps     DOUBLE PRECISION,
    http_rps       DOUBLE PRECISION,
    PRIMARY KEY (service_id, resolution, at)
);
CREATE INDEX server_metrics_by_time ON server_metrics (resolution, at);

CREATE TABLE server_metric_counters (
    service_id BIGINT PRIMARY KEY REFERENCES services (id),
    at         BIGINT NOT NULL,
    counters   TEXT   NOT NULL
);

CREATE TABLE metric_rollups (
    resolution BIGINT PRIMARY KEY,
    done_until BIGINT NOT NULL
);
