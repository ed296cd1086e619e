-- The people on the servers (SQLite). Mirrors ../postgres/0005_access.sql.
--
-- `unix_ids`: each person's one UID, the same on every server of every site.
-- It comes from LDAP's uidNumber (`source = 'ldap'`) or is allocated once by
-- the panel from `access.uid_min..uid_max` (`source = 'panel'`). Rows are
-- never deleted, so a UID is never handed to someone else: files on shared
-- storage keep their owner. Existing accounts keep the UID earlier panels
-- exported (10000 + user id).
CREATE TABLE unix_ids (
    user_id    INTEGER PRIMARY KEY REFERENCES users (id),
    uid        INTEGER NOT NULL UNIQUE,
    source     TEXT    NOT NULL CHECK (source IN ('panel', 'ldap')),
    created_at INTEGER NOT NULL
);
INSERT INTO unix_ids (user_id, uid, source, created_at)
    SELECT id, 10000 + id, 'panel', created_at FROM users;

-- Next value to try per allocated kind ('uid', 'gid'). Taken by an UPDATE,
-- so two allocations never read the same value.
CREATE TABLE id_counters (
    name TEXT    PRIMARY KEY,
    next INTEGER NOT NULL
);

-- Unix groups site admins define for the servers of their site. A GID is
-- allocated once from `access.gid_min..gid_max` and never reused.
CREATE TABLE unix_groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id    INTEGER NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    gid        INTEGER NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    UNIQUE (site_id, name)
);

CREATE TABLE unix_group_members (
    group_id INTEGER NOT NULL REFERENCES unix_groups (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
