-- (SQLite) Mirrors ../postgres/0012_packages.sql.
-- System packages (`services::packages`): the Debian packages platform
-- admins allow, with what each is for, and the ones site admins picked for
-- each server, which the `packages` job installs (roles/mwspackages).

CREATE TABLE allowed_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE service_packages (
    service_id INTEGER NOT NULL REFERENCES services (id),
    package_id INTEGER NOT NULL REFERENCES allowed_packages (id),
    PRIMARY KEY (service_id, package_id)
);
