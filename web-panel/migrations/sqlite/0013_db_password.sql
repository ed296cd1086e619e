-- (SQLite) Mirrors ../postgres/0013_db_password.sql.
-- A server's new database root password between the request and the
-- `db_password` job that sets it (`services::dbpassword`): sealed with the
-- panel's key, one row per server at most, deleted by the run.

CREATE TABLE db_password_changes (
    service_id   INTEGER PRIMARY KEY REFERENCES services (id),
    sealed       TEXT    NOT NULL,
    requested_at INTEGER NOT NULL
);
