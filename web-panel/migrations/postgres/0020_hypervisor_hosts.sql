-- Several hypervisor hosts (`services::hosts`): one row per host, seeded
-- and updated from `[[hypervisor.hosts]]` at startup, except `state`,
-- which the config sets only when the row is made and admins change
-- afterwards (active, draining, down) without a restart.
--
-- Capacity is what the host has (0: no limit on that figure) times its
-- overcommit ratio. What is used is not stored: it is the sum of the
-- services placed on the host (`services.host_id`) and of those being
-- moved to it (`services.migrate_to`), counted after the host's row is
-- locked, so two placements cannot both take its last room.
CREATE TABLE hypervisor_hosts (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    driver       TEXT    NOT NULL,
    uri          TEXT    NOT NULL DEFAULT '',
    vcpus        BIGINT  NOT NULL DEFAULT 0,
    ram_mb       BIGINT  NOT NULL DEFAULT 0,
    disk_gb      BIGINT  NOT NULL DEFAULT 0,
    cpu_ratio    DOUBLE PRECISION NOT NULL DEFAULT 1,
    ram_ratio    DOUBLE PRECISION NOT NULL DEFAULT 1,
    disk_ratio   DOUBLE PRECISION NOT NULL DEFAULT 1,
    -- JSON arrays of site and server-type names; empty: any.
    sites        TEXT    NOT NULL DEFAULT '[]',
    server_types TEXT    NOT NULL DEFAULT '[]',
    state        TEXT    NOT NULL CHECK (state IN ('active', 'draining', 'down')),
    updated_at   BIGINT  NOT NULL
);

-- The host that holds the service's VM (set at placement, cleared when the
-- VM is deleted and its address released), and the host a migration is
-- moving it to (its room is taken there until the move ends).
ALTER TABLE services ADD COLUMN host_id BIGINT REFERENCES hypervisor_hosts (id);
ALTER TABLE services ADD COLUMN migrate_to BIGINT REFERENCES hypervisor_hosts (id);
CREATE INDEX services_host ON services (host_id);
CREATE INDEX services_migrate_to ON services (migrate_to);
