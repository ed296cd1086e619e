-- Durable job output (SQLite): one row per line a job printed, usually one
-- engine JSON event. `seq` counts up per job across attempts, so readers
-- tail a job by (job_id, seq). Rows go with their job when it is pruned.
CREATE TABLE job_log (
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    line    TEXT    NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
