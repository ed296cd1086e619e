-- Dead nodes of playbook runs: a host a template's runs cannot reach is
-- a dead node once it has been unreachable for dead_after_secs (0: the
-- first unreachable run). One row per host while its outage lasts.
ALTER TABLE job_templates ADD COLUMN dead_after_secs BIGINT NOT NULL DEFAULT 0;

CREATE TABLE unreachable_hosts (
    template_id     BIGINT NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    host            TEXT   NOT NULL,
    -- When a run of the template first found it unreachable (Unix ms).
    since           BIGINT NOT NULL,
    -- The latest run that found it unreachable.
    last_run_id     BIGINT NOT NULL,
    -- The run whose dead_nodes notification reported it; NULL until then.
    notified_run_id BIGINT,
    PRIMARY KEY (template_id, host)
);
