-- Dead nodes of playbook runs: a host a template's runs cannot reach is
-- a dead node once it has been unreachable for dead_after_secs (0: the
-- first unreachable run). One row per host while its outage lasts.
ALTER TABLE job_templates ADD COLUMN dead_after_secs INTEGER NOT NULL DEFAULT 0;

CREATE TABLE unreachable_hosts (
    template_id     INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    host            TEXT    NOT NULL,
    -- When a run of the template first found it unreachable (Unix ms).
    since           INTEGER NOT NULL,
    -- The latest run that found it unreachable.
    last_run_id     INTEGER NOT NULL,
    -- The run whose dead_nodes notification reported it; NULL until then.
    notified_run_id INTEGER,
    PRIMARY KEY (template_id, host)
);
