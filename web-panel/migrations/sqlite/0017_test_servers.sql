-- (SQLite) Mirrors ../postgres/0017_test_servers.sql.
-- Test servers (`services::testservers`): a test server names the
-- production server of its site it is a copy of (`test_of`); a production
-- server has at most one test server that is not deleted. And the last
-- "clone production to test" of each test server (`clones`): what it was
-- asked to copy, how far the `clone` job got, and the reason it failed.

ALTER TABLE services ADD COLUMN test_of INTEGER REFERENCES services (id);
CREATE UNIQUE INDEX services_one_test ON services (test_of)
    WHERE test_of IS NOT NULL AND status <> 'deleted';

CREATE TABLE clones (
    service_id   INTEGER PRIMARY KEY REFERENCES services (id),
    source_id    INTEGER NOT NULL REFERENCES services (id),
    state        TEXT    NOT NULL CHECK (state IN ('queued', 'copying', 'booting', 'done', 'failed')),
    error        TEXT,
    job_id       INTEGER NOT NULL,
    -- The seed generation the copy boots with, once the job has begun.
    generation   INTEGER,
    requested_by INTEGER REFERENCES users (id),
    requested_at INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
