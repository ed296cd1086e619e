-- Provisioning state of a service's VM (SQLite), one row per service that
-- has reached the create-VM step. Mirrors ../postgres/0004_provisioning.sql.
-- `host_key_private` is kept only until the VM's seed has been handed to the
-- hypervisor, then cleared. `generation` counts seeds: each new VM (a re-create
-- after compensation) gets a new one, and callbacks carry it, so a callback
-- URL of an earlier VM can never act on the current one.
CREATE TABLE vm_provisioning (
    service_id          INTEGER PRIMARY KEY REFERENCES services (id),
    vm_name             TEXT    NOT NULL UNIQUE,
    pool_type           TEXT    NOT NULL,
    callback_secret     TEXT    NOT NULL,
    host_key_public     TEXT    NOT NULL,
    host_key_private    TEXT,
    generation          INTEGER NOT NULL DEFAULT 1,
    resets              INTEGER NOT NULL DEFAULT 0,
    callback_at         INTEGER,
    callback_generation INTEGER,
    failed_step         TEXT,
    ssh_endpoint        TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
