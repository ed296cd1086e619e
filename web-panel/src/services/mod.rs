//! The panel's domain layer: sites, services (servers), SSH keys, server
//! types, vhosts. HTTP handlers (`api`, `ui`) parse requests and call these
//! functions with an authenticated [`Principal`](crate::domain::Principal); every function checks
//! authorisation itself and writes its audit row in the same transaction as
//! the change. Nothing here knows HTTP. The words these functions share
//! (`Principal`, `PanelError`, `Page`) live in `domain`, and their SQL goes
//! through the query layer in `db`, both below this module.
//!
//! Layout: `model.rs` row types, `sites.rs`, `servers.rs` (create/show/delete servers, the provision
//! job), `server_list.rs` (the service list: keyset pages, cached totals,
//! indexed hostname search), `power.rs` (power actions on ready servers, the `power` job),
//! `keys.rs` (SSH public keys), `catalog.rs` (server types),
//! `hosts.rs` (the hypervisor hosts, their capacity and state, placement
//! by free capacity, migration requests),
//! `groups.rs` (user groups for quotas and lookup groups), `access.rs` (who
//! logs in to a site's servers, UIDs, the `access` jobs every change to them
//! queues), `unix_groups.rs` (the Unix groups site admins define),
//! `lookup.rs` (lookup groups read from the LDAP directory and mirrored),
//! `vhosts.rs` (a server's Apache vhosts and aliases, the `vhosts` jobs),
//! `packages.rs` (the allowed system packages, each server's picks, the
//! `packages` jobs), `dbpassword.rs` (a server's new database root
//! password, sealed until its `db_password` job has set it), `tags.rs` (a
//! server's tags, for people, playbooks and inventory filters),
//! `certificates.rs` (vhosts' TLS certificates: ACME orders, uploads,
//! renewals, the `certificate` jobs).
//! `snapshots.rs` (snapshots on demand and on the site's schedule,
//! restores), `testservers.rs` (a production server's test server and
//! "clone production to test", the `clone` job). `analytics.rs` (system analytics: each server's figures
//! stored with downsampling, and the graphs' series). `console.rs` (who may
//! open a server's console in the browser, as which account, and its audit
//! rows).

pub mod access;
pub mod analytics;
pub mod catalog;
pub mod certificates;
pub mod console;
pub mod dbpassword;
pub mod groups;
pub mod hosts;
pub mod jobs;
pub mod keys;
pub mod lookup;
pub mod model;
pub mod packages;
pub mod power;
pub mod server_list;
pub mod servers;
pub mod sites;
pub mod snapshots;
pub mod tags;
pub mod testservers;
pub mod unix_groups;
pub mod vhosts;
