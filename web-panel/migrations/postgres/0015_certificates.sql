-- TLS certificates of vhosts (issue 17). One row per vhost that has or
-- wants one (`services::certificates`, the `certificate` job in
-- provision/steps/certificate.rs):
--   source: `acme` (ordered by the panel from the configured ACME server)
--           or `upload` (a site admin's own);
--   state:  `requested` (the next `certificate` job orders one),
--           `pending` (a certificate and its key wait to be installed),
--           `installed` (on the server; `installed_at` says when).
-- `error` is the last failed attempt's, cleared by a success. `names`,
-- `issuer`, `serial` and the validity describe `cert_pem` (the chain, leaf
-- first). The private key is stored only in `pending_key`, from the upload
-- or issue until the job has installed it on the server (0600, root-only),
-- then cleared in the transaction that records the installation.
CREATE TABLE certificates (
    vhost_id     BIGINT PRIMARY KEY REFERENCES vhosts (id) ON DELETE CASCADE,
    service_id   BIGINT NOT NULL REFERENCES services (id),
    source       TEXT   NOT NULL CHECK (source IN ('acme', 'upload')),
    state        TEXT   NOT NULL CHECK (state IN ('requested', 'pending', 'installed')),
    names        TEXT   NOT NULL DEFAULT '[]',
    issuer       TEXT   NOT NULL DEFAULT '',
    serial       TEXT   NOT NULL DEFAULT '',
    not_before   BIGINT,
    not_after    BIGINT,
    cert_pem     TEXT,
    pending_key  TEXT,
    installed_at BIGINT,
    error        TEXT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX certificates_service ON certificates (service_id);
