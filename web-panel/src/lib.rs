//! Keel's web panel as a library; `main.rs` is a thin CLI over it.
//!
//! Layout, bottom up: each module imports only modules listed before it
//! (`scripts/import-circles web-panel/src` finds no circle).
//! - `clock`: where queue logic reads the time (system or manual);
//!   `hypervisor` the `Driver` trait and its drivers; `config` panel
//!   configuration (defaults, TOML file, `KEEL_*` env); `ldap` the
//!   directory behind lookup groups (reads groups and members, nothing else);
//!   `dns` the records a server gets and the TSIG-signed RFC 2136 updates
//!   that publish them; `certs` TLS certificates read and checked (names,
//!   issuer, expiry, the key's match); `acme` the ACME client's account and
//!   orders; `exposition` the text a server's exporters serve (Prometheus'
//!   format, Apache's status page), parsed; `outbound` where connections
//!   to user-supplied locations may go (the SSRF guard).
//! - `job`: what a job is (spec, row, state, attempt outcome): plain data
//!   the store persists and the queue runs.
//! - `store`: the database behind the panel, SQLite or PostgreSQL, chosen
//!   from the URL at startup.
//! - `domain`: what the domain layer's functions share: `Principal`,
//!   `PanelError`, `Page`.
//! - `db`: the two-backend query layer (`Db`, `Conn`, `fetch_all!`…) over the
//!   store, below every module that writes SQL.
//! - `backup`: `admin backup`/`admin restore` (the database copied online
//!   plus the data directory's secrets, in one archive).
//! - `audit` the change log; `queue`: durable jobs: enqueue in the caller's
//!   transaction, leased claims, retries, coalescing and serialisation keys,
//!   cron, cancellation, the job log.
//! - `lifecycle`: a service's status and the flow step that owns it, the
//!   one compare-and-set that changes it (with its audit row), the job kinds.
//! - `alloc` address pools and quotas; `metrics` the Prometheus counters.
//! - `services`: the domain layer (sites, servers, keys); `auth` accounts,
//!   sessions, tokens.
//! - `provision`: the provisioning flow as jobs (VM create, callback,
//!   host-key check, role run), its compensation, the dynamic inventory;
//!   `reconcile` the hypervisor compared with the store; `demo` seed data.
//! - `automation`: playbook runs for admins (projects, credentials,
//!   inventories, job templates, schedules, runs, notifications) on the
//!   queue and the engine; beside `provision`, whose inventory it reuses.
//! - `http`: what handlers share (state, error type, the authentication
//!   middleware and extractors); `api` the JSON API under `/api/v1` and
//!   `ui` the server-rendered HTML pages on top of it; `server` the router
//!   that mounts both, and serving over TCP or TLS.
//! - `testsupport` (feature `testsupport`): throw-away PostgreSQL servers
//!   for tests and benchmarks.

pub mod acme;
pub mod alloc;
pub mod api;
pub mod audit;
pub mod auth;
pub mod automation;
pub mod backup;
pub mod certs;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod dns;
pub mod domain;
pub mod exposition;
pub mod http;
pub mod hypervisor;
pub mod job;
pub mod ldap;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod provision;
pub mod queue;
pub mod reconcile;
pub mod server;
pub mod services;
pub mod store;
#[cfg(feature = "testsupport")]
pub mod testsupport;
pub mod ui;
