-- Durable job queue (SQLite). Times are Unix milliseconds (UTC).
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL,
    run_at           INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    unique_key       TEXT,
    serial_key       TEXT,
    owner            INTEGER,
    lease_owner      TEXT,
    lease_token      INTEGER,
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    reclaimed        INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
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
    job_id      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    started_at  INTEGER,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    output_ref  TEXT,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_failures (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    owner      INTEGER,
    attempts   INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    failed_at  INTEGER NOT NULL
);

CREATE TABLE schedules (
    name      TEXT PRIMARY KEY,
    anchor_at INTEGER NOT NULL
);

CREATE TABLE schedule_fires (
    name       TEXT    NOT NULL,
    fire_at    INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    skipped    INTEGER NOT NULL DEFAULT 0,
    job_id     INTEGER,
    PRIMARY KEY (name, fire_at)
);
