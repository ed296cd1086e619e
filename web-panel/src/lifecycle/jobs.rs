//! The flow's job kinds: one serde struct per kind for its payload, and
//! one constructor per kind that builds its spec (kind, queue, keys,
//! timing). Requests (`services::servers`, `services::power`), steps
//! (`provision/`) and reconciliation enqueue only through these, and
//! handlers read their payload back only through [`FlowJob::decode`].
//! [`JobKind`] lists every kind: a new kind is a variant and a payload
//! struct here, plus its step's own file under `provision/steps/` (which
//! the compiler then asks `provision::steps::register` to name).
//!
//! Field names are the ones the payloads have always had, so jobs already
//! queued in an existing database still decode. A job's retry policy
//! belongs to its handler (`JobHandler::policy`), which knows the
//! configuration.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::queue::{JobError, JobSpec, RunAt};

/// The queue of jobs that mostly wait on the hypervisor's API.
pub const HYPERVISOR_QUEUE: &str = "hypervisor";

/// Serialisation key of every job about one service: one step of a
/// service runs at a time.
pub fn service_key(id: i64) -> String {
    format!("service:{id}")
}

/// Every job kind of the flow: the `kind` column of its jobs.
/// `provision::steps::register` matches on it exhaustively, so a kind added
/// here without a handler does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Provision,
    OsReady,
    Configure,
    Deprovision,
    Power,
    Access,
    LookupRefresh,
    Dns,
    Vhosts,
    Packages,
    DbPassword,
    Certificate,
    CertificateRenewal,
    Snapshot,
    Restore,
    CloneProduction,
    MetricsCollect,
    Migrate,
    StackConfigure,
}

impl JobKind {
    pub const ALL: [JobKind; 19] = [
        JobKind::Provision,
        JobKind::OsReady,
        JobKind::Configure,
        JobKind::Deprovision,
        JobKind::Power,
        JobKind::Access,
        JobKind::LookupRefresh,
        JobKind::Dns,
        JobKind::Vhosts,
        JobKind::Packages,
        JobKind::DbPassword,
        JobKind::Certificate,
        JobKind::CertificateRenewal,
        JobKind::Snapshot,
        JobKind::Restore,
        JobKind::CloneProduction,
        JobKind::MetricsCollect,
        JobKind::Migrate,
        JobKind::StackConfigure,
    ];

    /// The name stored in the job row, which selects the handler.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Provision => "provision",
            JobKind::OsReady => "vm_os_ready",
            JobKind::Configure => "configure",
            JobKind::Deprovision => "deprovision",
            JobKind::Power => "power",
            JobKind::Access => "access",
            JobKind::LookupRefresh => "lookup_refresh",
            JobKind::Dns => "dns",
            JobKind::Vhosts => "vhosts",
            JobKind::Packages => "packages",
            JobKind::DbPassword => "db_password",
            JobKind::Certificate => "certificate",
            JobKind::CertificateRenewal => "certificate_renewal",
            JobKind::Snapshot => "snapshot",
            JobKind::Restore => "restore",
            JobKind::CloneProduction => "clone",
            JobKind::MetricsCollect => "metrics_collect",
            JobKind::Migrate => "migrate",
            JobKind::StackConfigure => "stack_configure",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job kind of the flow and its payload.
pub trait FlowJob: Serialize + DeserializeOwned {
    /// The kind that selects the handler.
    const KIND: JobKind;

    /// The payload as the job row stores it.
    fn payload(&self) -> serde_json::Value {
        // Plain structs of integers and unit enums: serialising cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A job's payload read back. A payload that does not decode can never
    /// run, so it is a permanent error.
    fn decode(payload: &serde_json::Value) -> Result<Self, JobError> {
        Self::deserialize(payload)
            .map_err(|e| JobError::permanent(format!("bad {} payload: {e}", Self::KIND)))
    }
}

fn owned(spec: JobSpec, owner: Option<i64>) -> JobSpec {
    match owner {
        Some(o) => spec.owner(o),
        None => spec,
    }
}

/// `provision`: address, seed, VM create and start (also a retry's resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionJob {
    pub service_id: i64,
}

impl FlowJob for ProvisionJob {
    const KIND: JobKind = JobKind::Provision;
}

impl ProvisionJob {
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!("provision:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `vm_os_ready`: the OS-ready wait of one seed generation after `resets`
/// power cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsReadyJob {
    pub service_id: i64,
    pub generation: i64,
    pub resets: i64,
}

impl FlowJob for OsReadyJob {
    const KIND: JobKind = JobKind::OsReady;
}

impl OsReadyJob {
    /// Fires `after` the wait started (at once when resumed).
    pub fn spec(self, after: Duration) -> JobSpec {
        JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!(
                "os_ready:{}:{}:{}",
                self.service_id, self.generation, self.resets
            ))
            .serial_key(service_key(self.service_id))
            .run_at(RunAt::After(after))
    }
}

/// `configure`: the host-key check and the role run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigureJob {
    pub service_id: i64,
}

impl FlowJob for ConfigureJob {
    const KIND: JobKind = JobKind::Configure;
}

impl ConfigureJob {
    /// Its coalescing key makes a request during a run give exactly one
    /// more run (see docs/queue.md).
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("configure:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `deprovision`: VM delete, host key forgotten, address released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeprovisionJob {
    pub service_id: i64,
}

impl FlowJob for DeprovisionJob {
    const KIND: JobKind = JobKind::Deprovision;
}

impl DeprovisionJob {
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!("deprovision:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// What a power request does to the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    Start,
    /// ACPI shutdown: the guest powers itself off.
    Shutdown,
    /// Pull the plug.
    PowerOff,
    /// Hard reset, without a shutdown.
    Reset,
}

impl PowerAction {
    pub const ALL: [PowerAction; 4] = [
        PowerAction::Start,
        PowerAction::Shutdown,
        PowerAction::PowerOff,
        PowerAction::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Shutdown => "shutdown",
            PowerAction::PowerOff => "power_off",
            PowerAction::Reset => "reset",
        }
    }

    pub fn parse(s: &str) -> Option<PowerAction> {
        PowerAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// `power`: one power action on a ready server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerJob {
    pub service_id: i64,
    pub action: PowerAction,
}

impl FlowJob for PowerJob {
    const KIND: JobKind = JobKind::Power;
}

impl PowerJob {
    /// No coalescing key: each request is one action.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `access`: the people of the server's site (accounts, keys, sudo, Unix
/// groups) applied by a role run (`access.playbook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessJob {
    pub service_id: i64,
}

impl FlowJob for AccessJob {
    const KIND: JobKind = JobKind::Access;
}

impl AccessJob {
    /// Coalesced per server: any number of changes while one run waits make
    /// that one run, which reads the site's people when it starts; a change
    /// during a run gives exactly one more. It runs under the service's
    /// serialisation key, so never beside a provisioning step or a delete.
    /// The default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("access:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `lookup_refresh`: one site's lookup groups (`site_id`), or every
/// site's (`None`, the daily cron), read from the LDAP directory and
/// mirrored into the store (`services::lookup::refresh`), which queues
/// access jobs only for the sites whose people changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRefreshJob {
    pub site_id: Option<i64>,
}

impl FlowJob for LookupRefreshJob {
    const KIND: JobKind = JobKind::LookupRefresh;
}

impl LookupRefreshJob {
    /// Coalesced per site (and once for the whole directory), so repeated
    /// "Refresh now" clicks make one read of the directory; serialised as
    /// one, so two refreshes never mirror at the same time.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let scope = match self.site_id {
            Some(id) => id.to_string(),
            None => "all".to_string(),
        };
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("lookup_refresh:{scope}"))
            .serial_key("lookup_refresh");
        owned(spec, owner)
    }
}

/// `dns`: the server's A, AAAA and SSHFP records (and its aliases'
/// CNAMEs) published to the configured DNS server, or removed once it is
/// deleted (`dns.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsJob {
    pub service_id: i64,
}

impl FlowJob for DnsJob {
    const KIND: JobKind = JobKind::Dns;
}

impl DnsJob {
    /// Coalesced per server: the job reads the server's state when it
    /// starts and replaces whole RRsets, so any number of changes while one
    /// waits make that one update. Under the service's serialisation key,
    /// so a publish and the removal after a delete run in order. The
    /// default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("dns:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `vhosts`: the server's vhosts (Apache sites, their aliases, document
/// roots and kinds) applied by a role run (`sites.vhosts_playbook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostsJob {
    pub service_id: i64,
}

impl FlowJob for VhostsJob {
    const KIND: JobKind = JobKind::Vhosts;
}

impl VhostsJob {
    /// Coalesced per server, as `access`: edits while a run waits make
    /// that one run, which reads the vhosts when it starts; an edit during
    /// a run gives exactly one more. Under the service's serialisation
    /// key; the default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("vhosts:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `packages`: the system packages the server's site admins picked from
/// the allowed list, applied by a role run (`sites.packages_playbook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagesJob {
    pub service_id: i64,
}

impl FlowJob for PackagesJob {
    const KIND: JobKind = JobKind::Packages;
}

impl PackagesJob {
    /// Coalesced per server, as `vhosts`: the run reads the picks when it
    /// starts. Under the service's serialisation key; the default retry
    /// policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("packages:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `db_password`: a new MariaDB root password set by a role run
/// (`sites.db_password_playbook`). The password itself is never in the
/// payload: it waits sealed in `db_password_changes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbPasswordJob {
    pub service_id: i64,
}

impl FlowJob for DbPasswordJob {
    const KIND: JobKind = JobKind::DbPassword;
}

impl DbPasswordJob {
    /// Coalesced per server: requests while a run waits make that one
    /// run, which sets the newest password. Under the service's
    /// serialisation key; the default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("db_password:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `certificate`: the server's vhost certificates that wait for work — an
/// ACME order for those `requested`, then the installation of those
/// `pending` (issued or uploaded) by a role run (`services::certificates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateJob {
    pub service_id: i64,
}

impl FlowJob for CertificateJob {
    const KIND: JobKind = JobKind::Certificate;
}

impl CertificateJob {
    /// Coalesced per server: the job reads which certificates wait when
    /// it starts, so requests while one waits make that one run. Under the
    /// service's serialisation key, so it never runs beside the server's
    /// `vhosts` run (both write Apache's sites). The default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("certificate:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// Why a snapshot is taken: a site admin asked, or the site's schedule
/// fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotOrigin {
    Manual,
    Scheduled,
}

impl SnapshotOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotOrigin::Manual => "manual",
            SnapshotOrigin::Scheduled => "scheduled",
        }
    }
}

/// `snapshot`: one snapshot of the server through the driver, named after
/// the job (so a retry takes none twice), then the oldest beyond the
/// site's `keep` deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotJob {
    pub service_id: i64,
    pub origin: SnapshotOrigin,
}

impl FlowJob for SnapshotJob {
    const KIND: JobKind = JobKind::Snapshot;
}

impl SnapshotJob {
    /// On the hypervisor queue, coalesced per server (a request while one
    /// waits is that one), under the service's serialisation key (never
    /// during a restore or a role run); the default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!("snapshot:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `migrate`: a server moved to the host its `services.migrate_to` names
/// (`provision/steps/migrate.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateJob {
    pub service_id: i64,
}

impl FlowJob for MigrateJob {
    const KIND: JobKind = JobKind::Migrate;
}

impl MigrateJob {
    /// On the hypervisor queue, one per server at a time (coalesced), under
    /// the service's serialisation key: never beside a power action, a
    /// snapshot or a delete of the same server.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!("migrate:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `stack_configure`: a multi-server stack's playbook against all its
/// servers, once each has had its own configure run
/// (`provision/steps/stack.rs`). `stack_id` is the stack's first server,
/// whose job log it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackConfigureJob {
    pub stack_id: i64,
}

impl FlowJob for StackConfigureJob {
    const KIND: JobKind = JobKind::StackConfigure;
}

impl StackConfigureJob {
    /// Coalesced per stack: members finishing at once give one more run.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("stack:{}", self.stack_id))
            .serial_key(service_key(self.stack_id));
        owned(spec, owner)
    }
}

/// `certificate_renewal`: every ACME certificate due for renewal (or whose
/// order failed) requested again, one `certificate` job per server; fired
/// by the queue's cron.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRenewalJob {}

impl FlowJob for CertificateRenewalJob {
    const KIND: JobKind = JobKind::CertificateRenewal;
}

impl CertificateRenewalJob {
    /// One at a time across the panel, coalesced.
    pub fn spec(self) -> JobSpec {
        JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key("certificate_renewal")
            .serial_key("certificate_renewal")
    }
}

/// `restore`: the server put back to one of its snapshots through the
/// driver, its host key checked, the panel's records applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreJob {
    pub service_id: i64,
    pub snapshot_id: i64,
}

impl FlowJob for RestoreJob {
    const KIND: JobKind = JobKind::Restore;
}

impl RestoreJob {
    /// On the hypervisor queue, coalesced per server (the newer request
    /// waits for the next run), under the service's serialisation key;
    /// the default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!("restore:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `clone`: a test server's disk replaced by a copy of its production
/// server's, booted with the test server's own identity (hostname,
/// addresses, new host keys), then handed to the flow's OS-ready wait and
/// `configure`, which reruns the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneJob {
    /// The test server.
    pub service_id: i64,
}

impl FlowJob for CloneJob {
    const KIND: JobKind = JobKind::CloneProduction;
}

impl CloneJob {
    /// On the hypervisor queue, coalesced per test server (a request while
    /// one waits is that one), under the test server's serialisation key
    /// (never beside its other jobs); the default retry policy.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .queue(HYPERVISOR_QUEUE)
            .unique_key(format!("clone:{}", self.service_id))
            .serial_key(service_key(self.service_id));
        owned(spec, owner)
    }
}

/// `metrics_collect`: every ready server's figures read once (driver,
/// node exporter, Apache's status page) and stored, then the rollups;
/// fired by the queue's cron every `analytics.every_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsCollectJob {}

impl FlowJob for MetricsCollectJob {
    const KIND: JobKind = JobKind::MetricsCollect;
}

impl MetricsCollectJob {
    /// One at a time across the panel, coalesced: a fire while one runs
    /// is that one. Not under any service's key, so a long role run never
    /// holds up the graphs.
    pub fn spec(self) -> JobSpec {
        JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key("metrics_collect")
            .serial_key("metrics_collect")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Payloads exactly as earlier panels wrote them (`json!` by hand)
    /// still decode, and what is written now is the same JSON.
    #[test]
    fn payloads_of_existing_rows_decode() {
        let p = json!({ "service_id": 7 });
        assert_eq!(ProvisionJob::decode(&p).unwrap().service_id, 7);
        assert_eq!(ConfigureJob::decode(&p).unwrap().payload(), p);
        assert_eq!(DeprovisionJob::decode(&p).unwrap().payload(), p);
        let w = json!({ "service_id": 7, "generation": 2, "resets": 1 });
        assert_eq!(
            OsReadyJob::decode(&w).unwrap(),
            OsReadyJob {
                service_id: 7,
                generation: 2,
                resets: 1
            }
        );
        let pw = json!({ "service_id": 7, "action": "power_off" });
        let job = PowerJob::decode(&pw).unwrap();
        assert_eq!(job.action, PowerAction::PowerOff);
        assert_eq!(job.payload(), pw);
    }

    /// Each payload struct names its own kind, and every kind's stored
    /// name reads back as that kind.
    #[test]
    fn kinds_round_trip_and_belong_to_one_payload_each() {
        let of_structs = [
            ProvisionJob::KIND,
            OsReadyJob::KIND,
            ConfigureJob::KIND,
            DeprovisionJob::KIND,
            PowerJob::KIND,
            AccessJob::KIND,
            LookupRefreshJob::KIND,
            DnsJob::KIND,
            VhostsJob::KIND,
            PackagesJob::KIND,
            DbPasswordJob::KIND,
            CertificateJob::KIND,
            CertificateRenewalJob::KIND,
            SnapshotJob::KIND,
            RestoreJob::KIND,
            CloneJob::KIND,
            MetricsCollectJob::KIND,
            MigrateJob::KIND,
            StackConfigureJob::KIND,
        ];
        for kind in JobKind::ALL {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                of_structs.iter().filter(|k| **k == kind).count(),
                1,
                "{kind}"
            );
        }
        assert_eq!(JobKind::parse("explode"), None);
    }

    #[test]
    fn bad_payloads_are_permanent_errors() {
        let e = PowerJob::decode(&json!({ "service_id": 7, "action": "explode" })).unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
        assert!(ProvisionJob::decode(&json!({})).is_err());
    }

    #[test]
    fn specs_keep_their_kinds_and_keys() {
        let s = ProvisionJob { service_id: 3 }.spec(Some(9));
        assert_eq!(
            (s.kind.as_str(), s.queue.as_str()),
            ("provision", "hypervisor")
        );
        assert_eq!(s.unique_key.as_deref(), Some("provision:3"));
        assert_eq!(s.serial_key.as_deref(), Some("service:3"));
        assert_eq!(s.owner, Some(9));
        let s = ConfigureJob { service_id: 3 }.spec(None);
        assert_eq!(
            (s.kind.as_str(), s.queue.as_str()),
            ("configure", "default")
        );
        let s = OsReadyJob {
            service_id: 3,
            generation: 1,
            resets: 0,
        }
        .spec(Duration::from_secs(5));
        assert_eq!(s.unique_key.as_deref(), Some("os_ready:3:1:0"));
        assert_eq!(s.run_at, RunAt::After(Duration::from_secs(5)));
        let s = AccessJob { service_id: 3 }.spec(Some(4));
        assert_eq!((s.kind.as_str(), s.queue.as_str()), ("access", "default"));
        assert_eq!(s.unique_key.as_deref(), Some("access:3"));
        assert_eq!(s.serial_key.as_deref(), Some("service:3"));
        let s = DnsJob { service_id: 3 }.spec(None);
        assert_eq!((s.kind.as_str(), s.queue.as_str()), ("dns", "default"));
        assert_eq!(s.unique_key.as_deref(), Some("dns:3"));
        let s = VhostsJob { service_id: 3 }.spec(None);
        assert_eq!((s.kind.as_str(), s.queue.as_str()), ("vhosts", "default"));
        assert_eq!(s.unique_key.as_deref(), Some("vhosts:3"));
        let s = PackagesJob { service_id: 3 }.spec(None);
        assert_eq!((s.kind.as_str(), s.queue.as_str()), ("packages", "default"));
        assert_eq!(s.unique_key.as_deref(), Some("packages:3"));
        assert_eq!(s.serial_key.as_deref(), Some("service:3"));
    }
}
