//! The provisioning steps as queue jobs. Every job's payload is a struct
//! of `lifecycle::jobs` carrying `service_id`; each runs under the
//! serialisation key `service:ID` (one step of a service at a time) and is
//! idempotent: it reads the service's status and its `vm_provisioning`
//! row, does what is still missing, and moves the status on (through
//! `lifecycle::transition`, only from the statuses the lifecycle table
//! gives the step) in the same transaction that enqueues the next step.
//!
//! | job | status it acts on | policy | on permanent failure |
//! | --- | --- | --- | --- |
//! | `provision` | requested, allocating, creating_vm | hypervisor API (every 5 min, 24 h) | failed; VM deleted, then address released |
//! | `vm_os_ready` | installing_os, callback missing | hypervisor API; a reset per timeout, N times | failed (unless the callback won); VM deleted, then address released |
//! | `configure` | configuring, ready (re-converge) | 3 attempts | failed; VM kept for inspection |
//! | `deprovision` | deleting | hypervisor API | recorded for admins (status stays deleting) |
//! | `power` (`power.rs`) | ready | hypervisor API | recorded for admins (status stays ready) |
//! | `access` (`access.rs`) | ready (waits while configuring) | default (10 attempts, 1 s to 10 min) | recorded for admins |
//! | `lookup_refresh` (`lookup_refresh.rs`) | — (a site's lookup groups, or all) | default | recorded for admins; the error stays on the groups |
//! | `dns` (`dns.rs`, only with `[dns]` configured) | ready (publish), deleting/deleted (remove) | default | recorded for admins; the error stays on the server's DNS row |
//! | `vhosts` (`vhosts.rs`) | ready (waits while configuring) | default | recorded for admins |
//! | `packages` (`packages.rs`) | ready (waits while configuring) | default | recorded for admins |
//! | `db_password` (`db_password.rs`) | ready (waits while configuring) | default | recorded for admins; the sealed password is dropped |
//! | `certificate` (`certificate.rs`) | ready (waits while configuring) | default | recorded for admins; the error stays on the certificate row |
//! | `certificate_renewal` (`certificate_renewal.rs`, cron) | — (every ACME certificate due) | default | recorded for admins |
//! | `snapshot` (`snapshots.rs`, hypervisor queue) | ready | default | recorded for admins |
//! | `restore` (`snapshots.rs`, hypervisor queue) | ready | default | recorded for admins |
//! | `clone` (`clone.rs`, hypervisor queue) | a test server: ready or failed, then creating_vm | default | failed (if taken over); VM deleted, then address released |
//! | `metrics_collect` (`metrics.rs`, cron) | — (every ready server) | one attempt: the next fire is the retry | recorded for admins |
//! | `migrate` (`migrate.rs`, hypervisor queue) | ready, with a target host | hypervisor API | the target's copy deleted and its room given back while the source still holds the VM |
//!
//! `retry` (in `services::servers`) puts a failed service back to
//! `requested` with a new `provision` job; `provision` resumes from the
//! failed step: the role run when the VM is still there, otherwise a new VM
//! (any leftover VM deleted first, a new seed generation, new host keys, the
//! address kept, or re-claimed if it was released).
//!
//! A callback can arrive before `provision` commits `installing_os` (the VM
//! boots fast, or the step is cut off after `start`); it is recorded, and
//! `provision` then queues `configure` itself instead of arming the
//! OS-ready wait. The address is released only after the driver confirmed
//! the VM's deletion. Steps check `ctx.cancel` between hypervisor calls and
//! race the role run against it, so an attempt whose lease was lost stops
//! instead of running beside its successor.
//!
//! Layout: one file per job kind, each holding its handler (`JobHandler`)
//! and the step's logic: `create_vm.rs` (`provision`), `os_ready.rs`
//! (`vm_os_ready`), `configure.rs` (`configure`, and the re-converge
//! request), `deprovision.rs`, `power.rs`, `access.rs` (the people of the
//! site on the server), `lookup_refresh.rs` (LDAP lookup groups mirrored),
//! `dns.rs` (the server's records published or removed), `vhosts.rs` (the
//! server's Apache vhosts), `packages.rs` (the system packages its site
//! admins picked), `db_password.rs` (MariaDB's root password),
//! `certificate.rs` (vhost certificates ordered by ACME and installed),
//! `certificate_renewal.rs` (ACME certificates due, requested again),
//! `snapshots.rs` (snapshots and restores through the driver), `clone.rs`
//! (a test server rebuilt from its production server's disk; it shares
//! `create_vm.rs`'s seed and hand-over),
//! `metrics.rs` (every ready server's figures read for the analytics). Below
//! them, `role_run.rs` (the host-key check and role run `configure`,
//! `access`, `vhosts`, `packages`, `db_password` and `certificate` share), `kit.rs` (the rows
//! steps read, the retry policy, cancellation) and `failure.rs` (failing a
//! step for good and its compensation). This file only registers a handler
//! for every kind of `lifecycle::jobs::JobKind`, by an exhaustive match, so
//! a kind without a handler does not compile.

pub mod access;
pub mod certificate;
pub mod certificate_renewal;
pub mod clone;
pub mod configure;
pub mod create_vm;
pub mod db_password;
pub mod deprovision;
pub mod dns;
mod failure;
mod kit;
pub mod lookup_refresh;
pub mod metrics;
pub mod migrate;
pub mod os_ready;
pub mod packages;
pub mod power;
mod role_run;
pub mod snapshots;
mod stack;
pub mod vhosts;

use std::sync::Arc;

use super::Provisioner;
use crate::lifecycle::jobs::JobKind;
use crate::queue::Registry;

pub use configure::reconverge;
pub(crate) use failure::release_after_delete;

/// Registers the flow's handlers, one per job kind of `lifecycle::jobs`:
/// `provision`, `vm_os_ready`, `configure`, `deprovision`, `power`,
/// `access`, `lookup_refresh`, `dns`, `vhosts`, `certificate` and
/// `certificate_renewal`.
/// Without a hypervisor driver they still run, and fail the service with
/// a reason an admin can act on (or delete it, when asked to).
pub fn register(registry: &mut Registry, p: Arc<Provisioner>) {
    for kind in JobKind::ALL {
        let k = kind.as_str();
        let p = p.clone();
        match kind {
            JobKind::Provision => registry.register(k, create_vm::ProvisionStep(p)),
            JobKind::OsReady => registry.register(k, os_ready::OsReadyStep(p)),
            JobKind::Configure => registry.register(k, configure::ConfigureStep(p)),
            JobKind::Deprovision => registry.register(k, deprovision::DeprovisionStep(p)),
            JobKind::Power => registry.register(k, power::PowerStep(p)),
            JobKind::Access => registry.register(k, access::AccessStep(p)),
            JobKind::LookupRefresh => registry.register(k, lookup_refresh::LookupRefreshStep(p)),
            JobKind::Dns => registry.register(k, dns::DnsStep(p)),
            JobKind::Vhosts => registry.register(k, vhosts::VhostsStep(p)),
            JobKind::Packages => registry.register(k, packages::PackagesStep(p)),
            JobKind::DbPassword => registry.register(k, db_password::DbPasswordStep(p)),
            JobKind::Certificate => registry.register(k, certificate::CertificateStep(p)),
            JobKind::CertificateRenewal => {
                registry.register(k, certificate_renewal::CertificateRenewalStep(p))
            }
            JobKind::Snapshot => registry.register(k, snapshots::SnapshotStep(p)),
            JobKind::Restore => registry.register(k, snapshots::RestoreStep(p)),
            JobKind::CloneProduction => registry.register(k, clone::CloneStep(p)),
            JobKind::MetricsCollect => registry.register(k, metrics::MetricsCollectStep(p)),
            JobKind::Migrate => registry.register(k, migrate::MigrateStep(p)),
            JobKind::StackConfigure => registry.register(k, stack::StackConfigureStep(p)),
        };
    }
}
