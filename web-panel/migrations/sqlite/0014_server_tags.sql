-- (SQLite) Mirrors ../postgres/0014_server_tags.sql.
-- Server tags: free labels a site admin puts on a server (`services::tags`),
-- shown on its page, given to playbooks as the host variable `keel_tags`,
-- and selectable by a panel inventory (`inventories.filter_tag`), so a job
-- template can run on, say, every server tagged `web`.

CREATE TABLE server_tags (
    service_id INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    tag        TEXT    NOT NULL,
    PRIMARY KEY (service_id, tag)
);
CREATE INDEX server_tags_tag ON server_tags (tag);

ALTER TABLE inventories ADD COLUMN filter_tag TEXT;
