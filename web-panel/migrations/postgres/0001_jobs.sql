-- Durable job queue (PostgreSQL). Times are Unix milliseconds (UTC).
CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL,
    run_at           BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    unique_key       TEXT,
    serial_key       TEXT,
    owner            BIGINT,
    lease_owner      TEXT,
    lease_token      BIGINT,
    lease_until      BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    reclaimed        BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    last_error       TEXT
);
-- At most one queued job per coalescing key.
CREATE UNIQUE INDEX jobs_one_queued_per_key ON jobs (unique_key) WHERE state = 'queued';
-- At most one running job per serialisation key.
CREATE UNIQUE INDEX jobs_one_running_per_serial ON jobs (serial_key) WHERE state = 'running';
CREATE INDEX jobs_claim ON jobs (queue, state, priority DESC, run_at, id);
CREATE INDEX jobs_lease ON jobs (state, lease_until);
CREATE INDEX jobs_finished ON jobs (finished_at);

CREATE TABLE job_attempts (
    job_id      BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    worker      TEXT,
    started_at  BIGINT,
    finished_at BIGINT NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    output_ref  TEXT,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_failures (
    id         BIGSERIAL PRIMARY KEY,
    job_id     BIGINT NOT NULL,
    kind       TEXT    NOT NULL,
    owner      BIGINT,
    attempts   BIGINT NOT NULL,
    error      TEXT    NOT NULL,
    failed_at  BIGINT NOT NULL
);

CREATE TABLE schedules (
    name      TEXT PRIMARY KEY,
    anchor_at BIGINT NOT NULL
);

CREATE TABLE schedule_fires (
    name       TEXT    NOT NULL,
    fire_at    BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL,
    skipped    BIGINT NOT NULL DEFAULT 0,
    job_id     BIGINT,
    PRIMARY KEY (name, fire_at)
);
