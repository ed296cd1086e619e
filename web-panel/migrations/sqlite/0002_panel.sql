-- Web panel data model (SQLite): accounts, sites, services, allocation
-- pools, quotas, audit log. Times are Unix milliseconds (UTC); JSON columns
-- hold text. Mirrors ../postgres/0002_panel.sql.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    email         TEXT,
    password_hash TEXT,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE user_groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash TEXT    NOT NULL UNIQUE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Failed-login counters per account ("user:NAME") and per source ("ip:ADDR").
CREATE TABLE login_throttle (
    key           TEXT    PRIMARY KEY,
    failures      INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE sites (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL DEFAULT '',
    owner_email TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended', 'cancelled')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- role 'admin' manages the site in the panel; 'ssh' only logs in to its servers.
CREATE TABLE site_members (
    site_id INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT    NOT NULL CHECK (role IN ('admin', 'ssh')),
    PRIMARY KEY (site_id, user_id)
);
CREATE INDEX site_members_user ON site_members (user_id);

CREATE TABLE site_lookup_groups (
    site_id    INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    group_name TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'ssh')),
    PRIMARY KEY (site_id, group_name)
);

CREATE TABLE server_types (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT    NOT NULL UNIQUE,
    cpus     INTEGER NOT NULL CHECK (cpus > 0),
    ram_mb   INTEGER NOT NULL CHECK (ram_mb > 0),
    disk_gb  INTEGER NOT NULL CHECK (disk_gb > 0),
    os_image TEXT    NOT NULL,
    roles    TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE services (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id        INTEGER NOT NULL REFERENCES sites (id),
    kind           TEXT    NOT NULL CHECK (kind IN ('production', 'test')),
    server_type_id INTEGER NOT NULL REFERENCES server_types (id),
    status         TEXT    NOT NULL CHECK (status IN ('requested', 'allocating', 'creating_vm',
                       'installing_os', 'configuring', 'ready', 'failed', 'deleting', 'deleted')),
    failure_reason TEXT,
    cpus           INTEGER NOT NULL,
    ram_mb         INTEGER NOT NULL,
    disk_gb        INTEGER NOT NULL,
    created_by     INTEGER NOT NULL REFERENCES users (id),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX services_site ON services (site_id);
CREATE INDEX services_creator ON services (created_by, status);

CREATE TABLE vms (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id  INTEGER NOT NULL UNIQUE REFERENCES services (id),
    hypervisor  TEXT    NOT NULL,
    vm_ref      TEXT    NOT NULL,
    cpus        INTEGER NOT NULL,
    ram_mb      INTEGER NOT NULL,
    disk_gb     INTEGER NOT NULL,
    power_state TEXT    NOT NULL CHECK (power_state IN ('unknown', 'running', 'stopped', 'absent')),
    updated_at  INTEGER NOT NULL
);

CREATE TABLE pools (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    pool_type       TEXT    NOT NULL CHECK (pool_type IN ('public', 'private', 'v6only')),
    quarantine_secs INTEGER NOT NULL DEFAULT 86400
);

-- One preallocated network identity. A row is an allocation when service_id
-- is set; a released one is claimable again once free_after has passed.
CREATE TABLE pool_addresses (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pool_id      INTEGER NOT NULL REFERENCES pools (id),
    hostname     TEXT    NOT NULL UNIQUE,
    ipv4         TEXT    UNIQUE,
    ipv6         TEXT    UNIQUE,
    gateway4     TEXT,
    netmask4     TEXT,
    gateway6     TEXT,
    state        TEXT    NOT NULL DEFAULT 'free' CHECK (state IN ('free', 'allocated')),
    service_id   INTEGER UNIQUE REFERENCES services (id),
    free_after   INTEGER NOT NULL DEFAULT 0,
    allocated_at INTEGER,
    CHECK ((state = 'allocated') = (service_id IS NOT NULL))
);
CREATE INDEX pool_addresses_claim ON pool_addresses (pool_id, state, free_after, id);

CREATE TABLE ssh_keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (user_id, fingerprint)
);

CREATE TABLE vhosts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id INTEGER NOT NULL REFERENCES services (id),
    name       TEXT    NOT NULL,
    UNIQUE (service_id, name)
);

CREATE TABLE domain_aliases (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    vhost_id INTEGER NOT NULL REFERENCES vhosts (id) ON DELETE CASCADE,
    domain   TEXT    NOT NULL UNIQUE
);

-- Limits per user or per group; a missing row means no limit.
CREATE TABLE quotas (
    subject_kind TEXT    NOT NULL CHECK (subject_kind IN ('user', 'group')),
    subject_id   INTEGER NOT NULL,
    max_vms      INTEGER NOT NULL,
    max_vcpus    INTEGER NOT NULL,
    max_ram_mb   INTEGER NOT NULL,
    max_disk_gb  INTEGER NOT NULL,
    PRIMARY KEY (subject_kind, subject_id)
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor_id    INTEGER,
    actor_name  TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object_type TEXT    NOT NULL,
    object_id   INTEGER,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_object ON audit_log (object_type, object_id);

CREATE TABLE idempotency_keys (
    user_id         INTEGER NOT NULL,
    key             TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
);
