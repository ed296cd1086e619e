-- (SQLite) Mirrors ../postgres/0007_automation.sql.
-- Playbook runs for admins: projects, credentials, inventories, job
-- templates, schedules, runs and notifications (`automation/`).
--
-- Secrets (`credentials.sealed`, `notification_targets.sealed`) are
-- AES-256-GCM sealed under the key file `<data_dir>/automation.key`
-- (nonce || ciphertext, hex); the database alone never reveals them.

CREATE TABLE credentials (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL CHECK (kind IN ('ssh_key', 'become_password', 'vault_password')),
    -- Public, shown: the SSH user name or the vault id label.
    username   TEXT,
    vault_id   TEXT,
    sealed     TEXT    NOT NULL,
    created_by INTEGER REFERENCES users (id) ON DELETE SET NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL CHECK (kind IN ('directory', 'git')),
    path        TEXT,
    git_url     TEXT,
    -- A branch, a tag or a commit.
    git_ref     TEXT,
    deploy_key  INTEGER REFERENCES credentials (id) ON DELETE SET NULL,
    -- The commit the last update resolved.
    revision    TEXT,
    updated_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE inventories (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT    NOT NULL UNIQUE,
    kind               TEXT    NOT NULL CHECK (kind IN ('panel', 'project_file', 'http')),
    project_id         INTEGER REFERENCES projects (id) ON DELETE CASCADE,
    path               TEXT,
    url                TEXT,
    filter_site        TEXT,
    filter_server_type TEXT,
    created_at         INTEGER NOT NULL
);

CREATE TABLE job_templates (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL UNIQUE,
    description  TEXT    NOT NULL DEFAULT '',
    project_id   INTEGER NOT NULL REFERENCES projects (id),
    playbook     TEXT    NOT NULL,
    inventory_id INTEGER NOT NULL REFERENCES inventories (id),
    limit_hosts  TEXT,
    tags         TEXT,
    skip_tags    TEXT,
    extra_vars   TEXT    NOT NULL DEFAULT '',
    check_mode   INTEGER NOT NULL DEFAULT 0,
    diff_mode    INTEGER NOT NULL DEFAULT 0,
    forks        INTEGER NOT NULL DEFAULT 5,
    verbosity    INTEGER NOT NULL DEFAULT 0,
    -- JSON list of survey questions.
    survey       TEXT    NOT NULL DEFAULT '[]',
    enabled      INTEGER NOT NULL DEFAULT 1,
    -- Set on the templates Keel seeds ('nightly_reconverge', ...).
    builtin      TEXT    UNIQUE,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE template_credentials (
    template_id   INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    credential_id INTEGER NOT NULL REFERENCES credentials (id),
    PRIMARY KEY (template_id, credential_id)
);

-- RBAC: members of these groups may see and launch the template (platform
-- admins always may).
CREATE TABLE template_groups (
    template_id INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    group_id    INTEGER NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    PRIMARY KEY (template_id, group_id)
);

-- Fire times are claimed through the queue's cron tables under the name
-- `template_schedule:<id>`.
CREATE TABLE template_schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    cron        TEXT,
    every_secs  INTEGER,
    time_zone   TEXT    NOT NULL DEFAULT 'UTC',
    missed      TEXT    NOT NULL DEFAULT 'skip' CHECK (missed IN ('skip', 'run_once')),
    enabled     INTEGER NOT NULL DEFAULT 1,
    extra_vars  TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (every_secs IS NULL))
);

CREATE TABLE template_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id    INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    job_id         INTEGER,
    status         TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'successful', 'failed', 'cancelled')),
    -- The project commit the run used (NULL for directories, or until resolved).
    revision       TEXT,
    launched_by    TEXT    NOT NULL CHECK (launched_by IN ('user', 'schedule', 'relaunch', 'system')),
    launched_user  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    schedule_id    INTEGER REFERENCES template_schedules (id) ON DELETE SET NULL,
    relaunch_of    INTEGER REFERENCES template_runs (id) ON DELETE SET NULL,
    -- The queue job that created this run (a schedule fire): one run per fire.
    trigger_job_id INTEGER UNIQUE,
    limit_hosts    TEXT,
    -- Survey answers and launch-time extra vars (JSON object).
    extra_vars     TEXT    NOT NULL DEFAULT '{}',
    recap          TEXT,
    error          TEXT,
    exit_code      INTEGER,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER
);
CREATE INDEX template_runs_by_template ON template_runs (template_id, id);

CREATE TABLE run_hosts (
    run_id      INTEGER NOT NULL REFERENCES template_runs (id) ON DELETE CASCADE,
    host        TEXT    NOT NULL,
    ok          INTEGER NOT NULL,
    changed     INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    unreachable INTEGER NOT NULL,
    skipped     INTEGER NOT NULL,
    rescued     INTEGER NOT NULL,
    ignored     INTEGER NOT NULL,
    PRIMARY KEY (run_id, host)
);

CREATE TABLE notification_targets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    kind       TEXT    NOT NULL CHECK (kind IN ('email', 'webhook')),
    -- The recipient address, or the webhook URL.
    address    TEXT    NOT NULL,
    -- E-mail: the SMTP server (host:port) and the sender address.
    smtp_server TEXT,
    sender     TEXT,
    -- The webhook's HMAC key, sealed.
    sealed     TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE template_notifications (
    template_id INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    target_id   INTEGER NOT NULL REFERENCES notification_targets (id) ON DELETE CASCADE,
    on_success  INTEGER NOT NULL DEFAULT 0,
    on_failure  INTEGER NOT NULL DEFAULT 1,
    on_drift    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (template_id, target_id)
);
