-- Provisioning state of a service's VM (PostgreSQL), one row per service that
-- has reached the create-VM step. Mirrors ../sqlite/0004_provisioning.sql.
-- `host_key_private` is kept only until the VM's seed has been handed to the
-- hypervisor, then cleared. `generation` counts seeds: each new VM (a re-create
-- after compensation) gets a new one, and callbacks carry it, so a callback
-- URL of an earlier VM can never act on the current one.
CREATE TABLE vm_provisioning (
    service_id          BIGINT  PRIMARY KEY REFERENCES services (id),
    vm_name             TEXT    NOT NULL UNIQUE,
    pool_type           TEXT    NOT NULL,
    callback_secret     TEXT    NOT NULL,
    host_key_public     TEXT    NOT NULL,
    host_key_private    TEXT,
    generation          BIGINT  NOT NULL DEFAULT 1,
    resets              BIGINT  NOT NULL DEFAULT 0,
    callback_at         BIGINT,
    callback_generation BIGINT,
    failed_step         TEXT,
    ssh_endpoint        TEXT,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
