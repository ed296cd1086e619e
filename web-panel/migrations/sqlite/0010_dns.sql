-- DNS publishing (SQLite). Mirrors ../postgres/0010_dns.sql.
--
-- One row per server whose records the `dns` job has handled
-- (`provision/steps/dns.rs`): `records` is what the panel last published
-- (a JSON array of `dns::DnsRecord`; empty once removed), which the next
-- update replaces and a delete removes even after the address is
-- released. `error` is the last failed attempt's, kept until a success.
CREATE TABLE dns_publications (
    service_id INTEGER PRIMARY KEY REFERENCES services (id),
    state      TEXT    NOT NULL CHECK (state IN ('published', 'removed', 'error')),
    records    TEXT    NOT NULL DEFAULT '[]',
    error      TEXT,
    updated_at INTEGER NOT NULL
);
