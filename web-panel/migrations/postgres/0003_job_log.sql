-- Durable job output (PostgreSQL): one row per line a job printed, usually
-- one engine JSON event. `seq` counts up per job across attempts, so readers
-- tail a job by (job_id, seq). Rows go with their job when it is pruned.
CREATE TABLE job_log (
    job_id  BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    at_ms   BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    line    JSONB  NOT NULL,
    PRIMARY KEY (job_id, seq)
);
