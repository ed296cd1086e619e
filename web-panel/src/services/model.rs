//! Row types shared by the domain layer, the API (as JSON) and the UI (as
//! template context). Times are Unix milliseconds.

use serde::{Deserialize, Serialize};

use crate::alloc::Allocation;
use crate::domain::PanelError;
use crate::lifecycle::Status;

/// A panel account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: Option<String>,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
}

/// Lifecycle of a site.
pub const SITE_STATES: &[&str] = &["active", "suspended", "cancelled"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Site {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub owner_email: String,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A member of a site: `admin` manages it, `ssh` only logs in to its servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SiteMember {
    pub user_id: i64,
    pub name: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LookupGroup {
    pub group_name: String,
    pub role: String,
}

/// A site with its members, as the detail views show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SiteDetail {
    #[serde(flatten)]
    pub site: Site,
    pub members: Vec<SiteMember>,
    pub lookup_groups: Vec<LookupGroup>,
}

pub const SERVICE_KINDS: &[&str] = &["production", "test"];

/// A service (one server of a site) joined with its network allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Service {
    pub id: i64,
    pub site_id: i64,
    pub site_name: String,
    pub kind: String,
    pub server_type: String,
    pub status: Status,
    pub failure_reason: Option<String>,
    pub cpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
    pub created_by: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub hostname: Option<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
    /// For a test server: the production server it is a copy of.
    pub test_of: Option<i64>,
    /// The hypervisor host that holds (or will hold) its VM.
    pub host: Option<String>,
    /// Its host is marked down: the server cannot be reached now, and
    /// nothing of it is deleted or released until the host is back.
    pub host_down: bool,
}

/// The virtual machine behind a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Vm {
    pub hypervisor: String,
    pub vm_ref: String,
    pub cpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
    pub power_state: String,
    pub updated_at: i64,
}

/// One run of a job for a service, as the job log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub attempts: u32,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
}

/// How a person stands on a site's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessRole {
    /// Logs in, with sudo.
    Admin,
    /// Logs in, without sudo.
    Ssh,
}

impl AccessRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Admin => "admin",
            AccessRole::Ssh => "ssh",
        }
    }

    /// The `role` column of `site_members` and `site_lookup_groups`.
    pub fn parse(s: &str) -> Result<AccessRole, PanelError> {
        match s {
            "admin" => Ok(AccessRole::Admin),
            "ssh" => Ok(AccessRole::Ssh),
            other => Err(PanelError::Internal(format!("unknown site role {other:?}"))),
        }
    }
}

/// One person of a site, their best role and every way they got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Person {
    pub user_id: i64,
    pub name: String,
    pub role: AccessRole,
    /// `member` for a direct membership, else the lookup groups that grant
    /// a role, each as `lookup group NAME (admin|ssh)`.
    pub via: Vec<String>,
    pub uid: Option<i64>,
    pub disabled: bool,
}

/// A site's Unix group as the inventory and the pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnixGroup {
    pub id: i64,
    pub site_id: i64,
    pub name: String,
    pub gid: i64,
    /// Member names, sorted.
    pub members: Vec<String>,
}

/// Who may log in to a server, as its page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Login {
    pub name: String,
    pub uid: Option<i64>,
    pub role: AccessRole,
    /// How they got the role (see [`Person::via`]).
    pub via: Vec<String>,
    /// Their SSH keys (fingerprints).
    pub keys: Vec<String>,
    /// The site's Unix groups they are in.
    pub groups: Vec<String>,
    /// Why they get no account (disabled, a name the system uses...).
    pub refused: Option<String>,
}

/// The access part of a server's page: who logs in and how, the site's
/// Unix groups, and the last `access` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServerAccess {
    /// The site is suspended: nobody logs in.
    pub blocked: bool,
    pub logins: Vec<Login>,
    pub groups: Vec<UnixGroup>,
    /// The newest `access` job of the server.
    pub last_run: Option<JobView>,
}

/// The state of a server's records, as the `dns_publications` row keeps
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DnsState {
    Published,
    Removed,
    Error,
}

impl DnsState {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsState::Published => "published",
            DnsState::Removed => "removed",
            DnsState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<DnsState> {
        [DnsState::Published, DnsState::Removed, DnsState::Error]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// The DNS part of a server's page: what the `dns` job published last,
/// or why its last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DnsStatus {
    pub state: DnsState,
    /// The records in DNS, as `dig` shows them (`NAME IN TYPE DATA`).
    pub records: Vec<String>,
    /// The last failed attempt's error, until a success clears it.
    pub error: Option<String>,
    pub updated_at: i64,
}

/// A service with everything its detail page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub service: Service,
    pub vm: Option<Vm>,
    pub network: Option<Allocation>,
    pub jobs: Vec<JobView>,
    pub vhosts: Vec<Vhost>,
    /// Its tags, sorted (`services::tags`).
    pub tags: Vec<String>,
    /// The SSH host keys the panel generated for the VM (what users should
    /// see on first login).
    pub host_keys: Vec<HostKeyView>,
    /// Who logs in and how, and the last `access` job.
    pub access: ServerAccess,
    /// Its DNS records; `None` when the `dns` job never ran for it (DNS
    /// publishing off, or not ready yet).
    pub dns: Option<DnsStatus>,
    /// What may be asked of it now (from its status's rules and the VM's
    /// power state).
    pub actions: ServerActions,
    /// How to log in; `None` until it is ready, and after it is deleted.
    pub connection: Option<Connection>,
    /// For a server of a multi-server stack: every server of the stack,
    /// the first member (whose job log has the stack's runs) first; empty
    /// otherwise.
    pub stack_members: Vec<crate::services::servers::StackMemberRow>,
}

/// The requests a server takes in its current state: the page shows only
/// these buttons, and the live stream sends them again on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServerActions {
    pub retry: bool,
    pub delete: bool,
    /// Run the server's roles again (`provision::reconverge`): a ready
    /// server whose VM is not known to be stopped (the run needs SSH).
    pub converge: bool,
    /// Power actions (`start`, `shutdown`, `power_off`, `reset`) that make
    /// sense for the VM's power state.
    pub power: Vec<String>,
}

impl ServerActions {
    /// From the status's rules ([`Status::rules`]) and the VM's last known
    /// power state: a running VM is not started, a stopped one not shut
    /// down; an unknown state offers every action.
    pub fn of(status: Status, power_state: Option<&str>) -> ServerActions {
        use crate::lifecycle::jobs::PowerAction;
        let rules = status.rules();
        let power: Vec<String> = if rules.powerable {
            PowerAction::ALL
                .into_iter()
                .filter(|a| match (power_state, a) {
                    (Some("running"), PowerAction::Start) => false,
                    (Some("stopped"), PowerAction::Start) => true,
                    (Some("stopped"), _) => false,
                    _ => true,
                })
                .map(|a| a.as_str().to_string())
                .collect()
        } else {
            Vec::new()
        };
        ServerActions {
            retry: rules.retryable,
            delete: !rules.leaving,
            converge: status == Status::Ready && power_state != Some("stopped"),
            power,
        }
    }
}

/// How a person logs in to a server: `ssh -p PORT USER@ADDRESS`, and the
/// host keys to compare on the first connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Connection {
    pub address: String,
    pub port: u16,
    /// The caller's own account on the server, when they have one;
    /// otherwise `None` (the page says to use one's own name).
    pub user: Option<String>,
    /// The command to type.
    pub command: String,
}

/// An SSH host key as users compare it: algorithm and SHA-256 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HostKeyView {
    pub algorithm: String,
    pub fingerprint: String,
    pub public_key: String,
}

impl HostKeyView {
    /// From an OpenSSH public key line; `None` when it does not parse.
    pub fn from_line(line: &str) -> Option<HostKeyView> {
        let key = ssh_key::PublicKey::from_openssh(line.trim()).ok()?;
        Some(HostKeyView {
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            public_key: line.trim().to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ServerType {
    pub id: i64,
    pub name: String,
    pub cpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
    pub os_image: String,
    /// Comma-separated role names applied when configuring.
    pub roles: String,
    /// The stack this type deploys (`services::catalog::Stack` as JSON),
    /// empty for a plain server; shown as an object, or null.
    #[serde(serialize_with = "crate::services::catalog::stack_as_object")]
    #[schema(value_type = Option<crate::services::catalog::Stack>)]
    pub stack: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SshKey {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub created_at: i64,
}

/// How Apache serves a vhost (`roles/mwsvhosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VhostKind {
    /// Files from the document root.
    Static,
    /// Files from the document root, `.php` run by mod_php.
    Php,
    /// A WSGI application (mod_wsgi); `target` is its script.
    Wsgi,
    /// A reverse proxy (mod_proxy); `target` is the backend URL.
    Proxy,
}

impl VhostKind {
    pub const ALL: [VhostKind; 4] = [
        VhostKind::Static,
        VhostKind::Php,
        VhostKind::Wsgi,
        VhostKind::Proxy,
    ];

    /// The name stored in `vhosts.kind` and used by the role.
    pub fn as_str(self) -> &'static str {
        match self {
            VhostKind::Static => "static",
            VhostKind::Php => "php",
            VhostKind::Wsgi => "wsgi",
            VhostKind::Proxy => "proxy",
        }
    }

    pub fn parse(s: &str) -> Option<VhostKind> {
        VhostKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A vhost of a server: the name Apache answers to, its aliases (each a
/// domain name), where its files are and how it is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Vhost {
    pub id: i64,
    pub service_id: i64,
    pub name: String,
    pub aliases: Vec<String>,
    pub kind: VhostKind,
    pub document_root: String,
    /// The WSGI script (`wsgi`) or the backend URL (`proxy`).
    pub target: Option<String>,
    /// Its TLS certificate, if it has or wants one (`services::
    /// certificates`); served on port 443 once installed.
    pub certificate: Option<CertificateView>,
}

impl Vhost {
    /// The vhost's name, then its aliases: the names its certificate must
    /// cover.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(self.name.clone())
            .chain(self.aliases.iter().cloned())
            .collect()
    }

    /// Whether a certificate was ever installed on the server for it, so
    /// Apache has its files and serves it on 443.
    pub fn tls(&self) -> bool {
        self.certificate
            .as_ref()
            .is_some_and(|c| c.installed_at.is_some())
    }
}

/// Where a vhost's certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    /// Ordered by the panel from the configured ACME server, and renewed.
    Acme,
    /// Uploaded by a site admin with its key.
    Upload,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Acme => "acme",
            CertSource::Upload => "upload",
        }
    }

    pub fn parse(s: &str) -> Option<CertSource> {
        [CertSource::Acme, CertSource::Upload]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// What the next `certificate` job does with a vhost's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// An ACME order is wanted (first request, renewal, or a failed one).
    Requested,
    /// A certificate and its key wait to be installed.
    Pending,
    /// On the server.
    Installed,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Requested => "requested",
            CertState::Pending => "pending",
            CertState::Installed => "installed",
        }
    }

    pub fn parse(s: &str) -> Option<CertState> {
        [
            CertState::Requested,
            CertState::Pending,
            CertState::Installed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A vhost's certificate as the page and the API show it; never its key.
/// `names` to `not_after` describe the latest certificate the panel holds
/// (the installed one, or the one about to be installed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CertificateView {
    pub source: CertSource,
    pub state: CertState,
    /// DNS names the certificate covers.
    pub names: Vec<String>,
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Valid from and until (Unix ms).
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// When a certificate was last installed on the server.
    pub installed_at: Option<i64>,
    /// The last failed attempt's error, until a success clears it.
    pub error: Option<String>,
    pub updated_at: i64,
}

#[cfg(test)]
mod actions_tests {
    use super::*;

    #[test]
    fn buttons_follow_the_status_rules_and_the_power_state() {
        let a = ServerActions::of(Status::Ready, Some("running"));
        assert_eq!(a.power, ["shutdown", "power_off", "reset"]);
        assert!(a.delete && !a.retry && a.converge);
        let a = ServerActions::of(Status::Ready, Some("stopped"));
        assert_eq!(a.power, ["start"]);
        assert!(!a.converge, "the roles need the VM running");
        let a = ServerActions::of(Status::Ready, Some("unknown"));
        assert_eq!(a.power.len(), 4, "an unknown state offers everything");
        let a = ServerActions::of(Status::Failed, None);
        assert!(a.retry && a.delete && a.power.is_empty() && !a.converge);
        for s in [Status::Requested, Status::CreatingVm, Status::Configuring] {
            let a = ServerActions::of(s, Some("running"));
            assert!(
                a.power.is_empty() && !a.retry && a.delete && !a.converge,
                "{s}"
            );
        }
        for s in [Status::Deleting, Status::Deleted] {
            let a = ServerActions::of(s, Some("running"));
            assert_eq!(
                a,
                ServerActions {
                    retry: false,
                    delete: false,
                    converge: false,
                    power: vec![]
                },
                "{s}"
            );
        }
    }
}
