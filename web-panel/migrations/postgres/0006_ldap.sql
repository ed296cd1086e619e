-- LDAP lookup groups (PostgreSQL). Mirrors ../sqlite/0006_ldap.sql.
--
-- People and groups mirrored from the directory by the `lookup_refresh`
-- job (`services::lookup`) are ordinary panel rows marked `source = 'ldap'`:
-- a person gets a `users` row without a password (they may still sign in
-- through SSO), their directory keys are `ssh_keys` rows the refresh owns
-- (keys they add in the panel stay `panel`), and a lookup group that names
-- no panel group becomes a `user_groups` row whose members the refresh sets.
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'panel' CHECK (source IN ('panel', 'ldap'));
ALTER TABLE users ADD COLUMN display_name TEXT;
ALTER TABLE ssh_keys ADD COLUMN source TEXT NOT NULL DEFAULT 'panel' CHECK (source IN ('panel', 'ldap'));
ALTER TABLE user_groups ADD COLUMN source TEXT NOT NULL DEFAULT 'panel' CHECK (source IN ('panel', 'ldap'));
-- The last successful refresh, and the error of the last failed one (kept
-- until the next success), for the site page.
ALTER TABLE user_groups ADD COLUMN refreshed_at BIGINT;
ALTER TABLE user_groups ADD COLUMN refresh_error TEXT;
