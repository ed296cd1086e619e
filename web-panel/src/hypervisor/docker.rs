//! The `docker` driver: each VM is a container on a Docker Engine node,
//! reached through the Engine API with the `bollard` client (cargo feature
//! `docker`, on by default).
//!
//! Where it sits: `provision::HostDrivers` builds one per
//! `[[hypervisor.hosts]]` entry with `driver = "docker"`; the flow, the
//! quotas, placement and the reconciliation reach it only through
//! [`Driver`], as they reach the other drivers.
//!
//! What a VM is here:
//! - a container named after the VM, labelled [`LABEL_VM`] with that name
//!   (what [`Driver::list`] filters on) and with the rest of its spec
//!   (image, vCPUs, memory, disk, hostname, addresses) in `org.keel.*`
//!   labels, so a revert can rebuild it from the labels alone;
//! - created from the Docker image the spec's image name maps to
//!   ([`DockerSettings::image_ref`]: the `images` table, else
//!   `image_prefix` + name); the image must already be on the node, the
//!   driver never pulls;
//! - limited to `cpus` CPUs (`NanoCpus`) and `ram_mb` of memory (`Memory`,
//!   with `MemorySwap` equal, so no swap on top), which the kernel enforces
//!   through the container's cgroup;
//! - `disk_gb` is recorded in a label but not enforced: overlay2 limits a
//!   container's writable layer only on xfs with project quotas, which
//!   Docker nodes rarely have;
//! - on the host's Docker network (`network`): on a user-defined network
//!   the container gets its allocated pool addresses (Docker's static
//!   IPAM), on `bridge` Docker picks one, on `none` it has loopback only.
//!   The cloud-init seed is not delivered (containers do not run
//!   cloud-init).
//!
//! Snapshots are `docker commit` images tagged `keel-snapshot/<vm>:<snapshot>`;
//! a revert replaces the container by one made from the snapshot image with
//! the same name, labels and limits. A clone is a container made from a
//! commit of its source (`keel-clone/<vm>:base`). Delete removes the
//! container with its anonymous volumes, then every image made for it.
//!
//! Errors: HTTP 404 is `NotFound`, other 4xx `Permanent`, 5xx and
//! transport failures (refused, timed out, socket gone) `Unavailable`.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    EndpointIpamConfig, EndpointSettings, HostConfig, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, RenameContainerOptionsBuilder, RestartContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use super::{
    check_snapshot_name, Driver, DriverError, DriverResult, PowerState, SnapshotInfo, VmInfo,
    VmSpec, VmStats,
};

/// The container's VM name: what marks a container as Keel's.
pub const LABEL_VM: &str = "org.keel.vm";
const LABEL_IMAGE: &str = "org.keel.image";
const LABEL_CPUS: &str = "org.keel.cpus";
const LABEL_RAM_MB: &str = "org.keel.ram-mb";
const LABEL_DISK_GB: &str = "org.keel.disk-gb";
const LABEL_HOSTNAME: &str = "org.keel.hostname";
const LABEL_IPV4: &str = "org.keel.ipv4";
const LABEL_IPV6: &str = "org.keel.ipv6";
/// On a snapshot image: the VM it was taken of.
pub const LABEL_SNAPSHOT_OF: &str = "org.keel.snapshot-of";
/// On a snapshot image: whether the VM ran when it was taken.
const LABEL_SNAPSHOT_RUNNING: &str = "org.keel.snapshot-running";
/// On a clone's base image: the clone it was made for.
pub const LABEL_CLONE_FOR: &str = "org.keel.clone-for";

/// Repository of snapshot images (`keel-snapshot/<vm>:<snapshot>`).
pub const SNAPSHOT_REPO: &str = "keel-snapshot";
/// Repository of clones' base images (`keel-clone/<vm>:base`).
pub const CLONE_REPO: &str = "keel-clone";

/// Where the Docker Engine API is.
#[derive(Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// The node's own socket (`/var/run/docker.sock`).
    Unix(PathBuf),
    /// `host:port` over TLS: the server checked against `ca_file`, the
    /// panel presenting `cert_file`/`key_file` (dockerd `--tlsverify`).
    Tls {
        address: String,
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

impl std::fmt::Debug for DockerEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerEndpoint::Tls { address, .. } => write!(f, "tcp://{address} (TLS)"),
        }
    }
}

/// One Docker node's settings (`[hypervisor.hosts.docker]`).
#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub endpoint: DockerEndpoint,
    /// VM names this driver manages start with it (`hypervisor.vm_prefix`).
    pub prefix: String,
    /// Docker image of a spec's image name, when the name is in `images`.
    pub images: BTreeMap<String, String>,
    /// Otherwise the Docker image is this prefix and the name.
    pub image_prefix: String,
    /// The Docker network containers join.
    pub network: String,
    /// The container's command; empty: the image's own.
    pub command: Vec<String>,
    /// How long `shutdown` lets the container stop before Docker kills it.
    pub stop_timeout: Duration,
    /// Timeout of one API request.
    pub request_timeout: Duration,
}

impl DockerSettings {
    /// Settings for the local socket with the defaults of the config.
    pub fn new(endpoint: DockerEndpoint) -> Self {
        DockerSettings {
            endpoint,
            prefix: "keel-".to_string(),
            images: BTreeMap::new(),
            image_prefix: "keel/".to_string(),
            network: "bridge".to_string(),
            command: Vec::new(),
            stop_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
        }
    }

    /// The Docker image a spec's image name stands for.
    pub fn image_ref(&self, image: &str) -> String {
        match self.images.get(image) {
            Some(r) => r.clone(),
            None => format!("{}{image}", self.image_prefix),
        }
    }
}

/// See the module documentation.
pub struct DockerDriver {
    settings: DockerSettings,
    /// The client, once a connection has negotiated the API version.
    client: Mutex<Option<Docker>>,
}

impl std::fmt::Debug for DockerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriver")
            .field("endpoint", &self.settings.endpoint)
            .finish()
    }
}

/// What a container is built from: a spec, or the labels of the
/// container it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    name: String,
    image: String,
    cpus: u32,
    ram_mb: u64,
    disk_gb: u64,
    hostname: String,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

impl Plan {
    fn of_spec(spec: &VmSpec) -> Plan {
        Plan {
            name: spec.name.clone(),
            image: spec.image.clone(),
            cpus: spec.cpus,
            ram_mb: spec.ram_mb,
            disk_gb: spec.disk_gb,
            hostname: spec.net.hostname.clone(),
            ipv4: spec.net.ipv4,
            ipv6: spec.net.ipv6,
        }
    }

    fn labels(&self) -> HashMap<String, String> {
        let mut l = HashMap::new();
        l.insert(LABEL_VM.to_string(), self.name.clone());
        l.insert(LABEL_IMAGE.to_string(), self.image.clone());
        l.insert(LABEL_CPUS.to_string(), self.cpus.to_string());
        l.insert(LABEL_RAM_MB.to_string(), self.ram_mb.to_string());
        l.insert(LABEL_DISK_GB.to_string(), self.disk_gb.to_string());
        l.insert(LABEL_HOSTNAME.to_string(), self.hostname.clone());
        let opt = |v: Option<String>| v.unwrap_or_default();
        l.insert(
            LABEL_IPV4.to_string(),
            opt(self.ipv4.map(|a| a.to_string())),
        );
        l.insert(
            LABEL_IPV6.to_string(),
            opt(self.ipv6.map(|a| a.to_string())),
        );
        // Images made from this container carry its labels; these two
        // belong only to the images the driver labels itself.
        l.insert(LABEL_SNAPSHOT_OF.to_string(), String::new());
        l.insert(LABEL_CLONE_FOR.to_string(), String::new());
        l
    }

    /// The plan of an existing container, read back from its labels.
    fn of_labels(name: &str, labels: &HashMap<String, String>) -> DriverResult<Plan> {
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
        let bad = |k: &str| {
            DriverError::Permanent(format!(
                "container {name}: label {k} is {:?}, not what the docker driver writes",
                get(k)
            ))
        };
        let num = |k: &str| get(k).parse::<u64>().map_err(|_| bad(k));
        let addr = |k: &str| -> DriverResult<Option<String>> {
            Ok(Some(get(k)).filter(|s| !s.is_empty()).map(str::to_string))
        };
        Ok(Plan {
            name: name.to_string(),
            image: get(LABEL_IMAGE).to_string(),
            cpus: u32::try_from(num(LABEL_CPUS)?).map_err(|_| bad(LABEL_CPUS))?,
            ram_mb: num(LABEL_RAM_MB)?,
            disk_gb: num(LABEL_DISK_GB)?,
            hostname: get(LABEL_HOSTNAME).to_string(),
            ipv4: addr(LABEL_IPV4)?
                .map(|s| s.parse().map_err(|_| bad(LABEL_IPV4)))
                .transpose()?,
            ipv6: addr(LABEL_IPV6)?
                .map(|s| s.parse().map_err(|_| bad(LABEL_IPV6)))
                .transpose()?,
        })
    }
}

/// VM names become container names and image repository components
/// (lower case only there): `[a-z0-9-]`, not starting or ending with `-`.
pub fn check_name(name: &str) -> DriverResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 60
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(DriverError::Permanent(format!(
            "invalid container name {name:?} (want [a-z0-9-], at most 60 characters, \
             no '-' at either end)"
        )))
    }
}

/// The image a snapshot is kept as.
pub fn snapshot_image(vm: &str, snapshot: &str) -> String {
    format!("{SNAPSHOT_REPO}/{vm}:{snapshot}")
}

/// The image a clone is made from.
pub fn clone_image(vm: &str) -> String {
    format!("{CLONE_REPO}/{vm}:base")
}

/// The name a reverted container has until it replaces the old one; the
/// `.` keeps it out of the VM names [`check_name`] accepts.
fn revert_name(vm: &str) -> String {
    format!("{vm}.revert")
}

/// The HTTP status of a failed API call, when the daemon answered.
fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Classes an API failure about `what` for the retry policy.
fn classify(what: &str, e: DockerError) -> DriverError {
    match &e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => match *status_code {
            404 => DriverError::NotFound(what.to_string()),
            s if s >= 500 => DriverError::Unavailable(format!("{what}: docker: {message}")),
            _ => DriverError::Permanent(format!("{what}: docker: {message}")),
        },
        // The daemon answered something we cannot read, or a certificate
        // or key file is unusable: retrying will not change it.
        DockerError::JsonDataError { .. }
        | DockerError::JsonSerdeError { .. }
        | DockerError::APIVersionParseError {}
        | DockerError::CertPathError { .. }
        | DockerError::CertMultipleKeys { .. }
        | DockerError::CertParseError { .. }
        | DockerError::NoNativeCertsError { .. }
        | DockerError::LoadNativeCertsErrors { .. }
        | DockerError::UnsupportedURISchemeError { .. } => {
            DriverError::Permanent(format!("{what}: docker: {e}"))
        }
        // Refused, reset, timed out, socket missing: the node may be back.
        _ => DriverError::Unavailable(format!("{what}: docker: {}", error_chain(&e))),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn power_of(state: Option<&ContainerStateStatusEnum>) -> PowerState {
    match state {
        Some(ContainerStateStatusEnum::RUNNING) => PowerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => PowerState::Paused,
        Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EXITED) => {
            PowerState::Stopped
        }
        _ => PowerState::Other,
    }
}

impl DockerDriver {
    pub fn new(settings: DockerSettings) -> Self {
        DockerDriver {
            settings,
            client: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &DockerSettings {
        &self.settings
    }

    /// The client; the first call connects and agrees on the API version
    /// with the daemon (an older dockerd speaks an older one).
    async fn docker(&self) -> DriverResult<Docker> {
        if let Some(d) = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(d);
        }
        let timeout = self.settings.request_timeout.as_secs().max(1);
        let what = format!("{:?}", self.settings.endpoint);
        let docker = match &self.settings.endpoint {
            DockerEndpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                timeout,
                bollard::API_DEFAULT_VERSION,
            ),
            DockerEndpoint::Tls {
                address,
                ca_file,
                cert_file,
                key_file,
            } => Docker::connect_with_ssl(
                address,
                key_file,
                cert_file,
                ca_file,
                timeout,
                bollard::API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| classify(&what, e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| classify(&what, e))?;
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(docker.clone());
        Ok(docker)
    }

    /// The container `name`, which must be Keel's.
    async fn inspect(&self, docker: &Docker, name: &str) -> DriverResult<ContainerInspectResponse> {
        let c = docker
            .inspect_container(name, None)
            .await
            .map_err(|e| classify(&format!("container {name}"), e))?;
        let ours = c
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_VM))
            .is_some_and(|v| v == name);
        if !ours {
            return Err(DriverError::Permanent(format!(
                "a container named {name} exists on the Docker node but Keel did not make it \
                 (no {LABEL_VM} label): remove or rename it"
            )));
        }
        Ok(c)
    }

    /// `None` when there is no container `name`.
    async fn find(
        &self,
        docker: &Docker,
        name: &str,
    ) -> DriverResult<Option<ContainerInspectResponse>> {
        match self.inspect(docker, name).await {
            Ok(c) => Ok(Some(c)),
            Err(DriverError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn info_of(&self, name: &str, c: &ContainerInspectResponse) -> VmInfo {
        VmInfo {
            name: name.to_string(),
            vm_ref: c.id.clone().unwrap_or_default(),
            power: power_of(c.state.as_ref().and_then(|s| s.status.as_ref())),
            ssh_endpoint: None,
        }
    }

    fn check_spec(&self, spec: &VmSpec) -> DriverResult<()> {
        check_name(&spec.name)?;
        if !spec.name.starts_with(&self.settings.prefix) {
            return Err(DriverError::Permanent(format!(
                "VM name {} lacks the prefix {:?} this driver manages",
                spec.name, self.settings.prefix
            )));
        }
        if spec.cpus == 0 {
            return Err(DriverError::Permanent(format!(
                "{}: at least one vCPU is needed",
                spec.name
            )));
        }
        // Docker's own floor for a memory limit.
        if spec.ram_mb < 6 {
            return Err(DriverError::Permanent(format!(
                "{}: a container needs at least 6 MB of memory, not {} MB",
                spec.name, spec.ram_mb
            )));
        }
        if spec.image.is_empty() {
            return Err(DriverError::Permanent(format!(
                "{}: no image named",
                spec.name
            )));
        }
        Ok(())
    }

    /// The body that creates `plan`'s container from Docker image `image`.
    fn create_body(&self, plan: &Plan, image: &str) -> DriverResult<ContainerCreateBody> {
        let memory = plan
            .ram_mb
            .checked_mul(1 << 20)
            .and_then(|b| i64::try_from(b).ok())
            .ok_or_else(|| {
                DriverError::Permanent(format!("{}: {} MB of memory", plan.name, plan.ram_mb))
            })?;
        let network = self.settings.network.clone();
        // Static addresses only where Docker can give them: a network the
        // operator made with the pool's subnet.
        let user_defined = !matches!(network.as_str(), "bridge" | "none" | "host" | "default");
        let endpoint = EndpointSettings {
            ipam_config: (user_defined && (plan.ipv4.is_some() || plan.ipv6.is_some())).then(
                || EndpointIpamConfig {
                    ipv4_address: plan.ipv4.map(|a| a.to_string()),
                    ipv6_address: plan.ipv6.map(|a| a.to_string()),
                    ..Default::default()
                },
            ),
            ..Default::default()
        };
        let hostname = plan
            .hostname
            .split('.')
            .next()
            .filter(|h| !h.is_empty())
            .unwrap_or(&plan.name)
            .to_string();
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            hostname: Some(hostname),
            cmd: (!self.settings.command.is_empty()).then(|| self.settings.command.clone()),
            labels: Some(plan.labels()),
            host_config: Some(HostConfig {
                nano_cpus: Some(i64::from(plan.cpus) * 1_000_000_000),
                memory: Some(memory),
                memory_swap: Some(memory),
                network_mode: Some(network.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network, endpoint)])),
            }),
            ..Default::default()
        })
    }

    /// Creates `plan`'s container named `as_name` from `image`; a
    /// container of that name made meanwhile is returned as it is.
    async fn create_container(
        &self,
        docker: &Docker,
        plan: &Plan,
        image: &str,
        as_name: &str,
    ) -> DriverResult<ContainerInspectResponse> {
        match docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) => {
                return Err(DriverError::Permanent(format!(
                    "{}: image {image} is not on the Docker node (the driver never pulls: \
                     load or import it there, e.g. `docker import rootfs.tar {image}`)",
                    plan.name
                )))
            }
            Err(e) => return Err(classify(&format!("image {image}"), e)),
        }
        let body = self.create_body(plan, image)?;
        let options = CreateContainerOptionsBuilder::new().name(as_name).build();
        match docker.create_container(Some(options), body).await {
            Ok(_) => {}
            // Created by a concurrent or earlier attempt.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(classify(&format!("creating container {as_name}"), e)),
        }
        let c = docker
            .inspect_container(as_name, None)
            .await
            .map_err(|e| classify(&format!("container {as_name}"), e))?;
        Ok(c)
    }

    /// Commits container `name` as `image` (`repo:tag`) with `labels` on
    /// the image; an image of that name is kept as it is.
    async fn commit(
        &self,
        docker: &Docker,
        name: &str,
        image: &str,
        labels: HashMap<String, String>,
    ) -> DriverResult<()> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(classify(&format!("image {image}"), e)),
        }
        let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let options = CommitContainerOptionsBuilder::new()
            .container(name)
            .repo(repo)
            .tag(tag)
            .pause(true)
            .build();
        let config = ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        docker
            .commit_container(options, config)
            .await
            .map_err(|e| classify(&format!("committing {name} as {image}"), e))?;
        Ok(())
    }

    /// Removes container `name` with its anonymous volumes; gone is `Ok`.
    async fn remove_container(&self, docker: &Docker, name: &str) -> DriverResult<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // "removal already in progress": done by the other call.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(classify(&format!("removing container {name}"), e)),
        }
    }

    /// The images labelled `key=vm`.
    async fn images_labelled(
        &self,
        docker: &Docker,
        key: &str,
        vm: &str,
    ) -> DriverResult<Vec<bollard::models::ImageSummary>> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{key}={vm}")])]);
        let options = ListImagesOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        docker
            .list_images(Some(options))
            .await
            .map_err(|e| classify(&format!("images of {vm}"), e))
    }

    /// Removes an image by name or id; gone is `Ok`, and so is one that
    /// other images still build on (its layers stay for them, untagged).
    async fn remove_image(&self, docker: &Docker, image: &str, force: bool) -> DriverResult<()> {
        let options = RemoveImageOptionsBuilder::new().force(force).build();
        match docker.remove_image(image, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(classify(&format!("removing image {image}"), e)),
        }
    }

    /// Whether container `name` runs.
    fn running(c: &ContainerInspectResponse) -> bool {
        c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: &VmSpec) -> DriverResult<VmInfo> {
        self.check_spec(spec)?;
        let docker = self.docker().await?;
        if let Some(c) = self.find(&docker, &spec.name).await? {
            return Ok(self.info_of(&spec.name, &c));
        }
        let plan = Plan::of_spec(spec);
        let image = self.settings.image_ref(&spec.image);
        let c = self
            .create_container(&docker, &plan, &image, &spec.name)
            .await?;
        Ok(self.info_of(&spec.name, &c))
    }

    async fn start(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let docker = self.docker().await?;
        self.inspect(&docker, name).await?;
        // 304 (already running) is success to bollard.
        docker
            .start_container(name, None)
            .await
            .map_err(|e| classify(&format!("starting {name}"), e))
    }

    async fn shutdown(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let docker = self.docker().await?;
        self.inspect(&docker, name).await?;
        // SIGTERM (or the image's stop signal), then SIGKILL after the
        // grace period: Docker answers once the container has stopped.
        let t = i32::try_from(self.settings.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(t).build();
        docker
            .stop_container(name, Some(options))
            .await
            .map_err(|e| classify(&format!("stopping {name}"), e))
    }

    async fn power_off(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let docker = self.docker().await?;
        let c = self.inspect(&docker, name).await?;
        if !Self::running(&c) {
            return Ok(());
        }
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        match docker.kill_container(name, Some(options)).await {
            Ok(()) => {}
            // "is not running": it stopped between the two calls.
            Err(e) if status_of(&e) == Some(409) => {}
            Err(e) => return Err(classify(&format!("killing {name}"), e)),
        }
        // Kill returns once the signal is sent; wait for the exit so the
        // caller sees the power off.
        let mut waited = docker.wait_container(name, None).boxed();
        match waited.next().await {
            Some(Ok(_)) | None => Ok(()),
            // A non-zero exit (137 here) is reported as this error.
            Some(Err(DockerError::DockerContainerWaitError { .. })) => Ok(()),
            Some(Err(e)) if status_of(&e) == Some(404) => {
                Err(DriverError::NotFound(format!("container {name}")))
            }
            Some(Err(e)) => Err(classify(&format!("waiting for {name}"), e)),
        }
    }

    async fn reset(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let docker = self.docker().await?;
        self.inspect(&docker, name).await?;
        // No grace period: the processes are killed, then started again.
        let options = RestartContainerOptionsBuilder::new()
            .signal("SIGKILL")
            .t(0)
            .build();
        docker
            .restart_container(name, Some(options))
            .await
            .map_err(|e| classify(&format!("restarting {name}"), e))
    }

    async fn status(&self, name: &str) -> DriverResult<VmInfo> {
        check_name(name)?;
        let docker = self.docker().await?;
        let c = self.inspect(&docker, name).await?;
        Ok(self.info_of(name, &c))
    }

    async fn delete(&self, name: &str) -> DriverResult<()> {
        check_name(name)?;
        let docker = self.docker().await?;
        if self.find(&docker, name).await?.is_some() {
            self.remove_container(&docker, name).await?;
        }
        // A revert cut short leaves its new container under this name.
        let temp = revert_name(name);
        let leftover = match docker.inspect_container(&temp, None).await {
            Ok(c) => Some(c),
            Err(e) if status_of(&e) == Some(404) => None,
            Err(e) => return Err(classify(&format!("container {temp}"), e)),
        };
        if let Some(c) = leftover {
            let ours = c
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_VM).cloned())
                .is_some_and(|v| v == name);
            if ours {
                self.remove_container(&docker, &temp).await?;
            }
        }
        // Then every image made for it: snapshots, and its base when it
        // is a clone. Tags first (their layers stay where a clone of this
        // VM builds on them), then the images that only had those tags.
        for key in [LABEL_SNAPSHOT_OF, LABEL_CLONE_FOR] {
            for image in self.images_labelled(&docker, key, name).await? {
                let ours: Vec<&String> = image
                    .repo_tags
                    .iter()
                    .filter(|t| {
                        t.starts_with(&format!("{SNAPSHOT_REPO}/{name}:"))
                            || t.starts_with(&format!("{CLONE_REPO}/{name}:"))
                    })
                    .collect();
                for tag in &ours {
                    self.remove_image(&docker, tag, true).await?;
                }
                if ours.len() == image.repo_tags.len() {
                    self.remove_image(&docker, &image.id, false).await?;
                }
            }
        }
        Ok(())
    }

    async fn list(&self) -> DriverResult<Vec<VmInfo>> {
        let docker = self.docker().await?;
        let filters = HashMap::from([("label".to_string(), vec![LABEL_VM.to_string()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| classify("containers", e))?;
        let mut out = Vec::new();
        for c in containers {
            let Some(name) = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            let labelled = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_VM))
                .is_some_and(|v| *v == name);
            if !labelled || !name.starts_with(&self.settings.prefix) || check_name(&name).is_err() {
                continue;
            }
            use bollard::models::ContainerSummaryStateEnum as S;
            let power = match c.state {
                Some(S::RUNNING) => PowerState::Running,
                Some(S::PAUSED) => PowerState::Paused,
                Some(S::CREATED | S::EXITED) => PowerState::Stopped,
                _ => PowerState::Other,
            };
            out.push(VmInfo {
                name,
                vm_ref: c.id.unwrap_or_default(),
                power,
                ssh_endpoint: None,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn snapshot_create(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name(name)?;
        check_snapshot_name(snapshot)?;
        let docker = self.docker().await?;
        let c = self.inspect(&docker, name).await?;
        let labels = HashMap::from([
            (LABEL_SNAPSHOT_OF.to_string(), name.to_string()),
            (
                LABEL_SNAPSHOT_RUNNING.to_string(),
                Self::running(&c).to_string(),
            ),
            (LABEL_CLONE_FOR.to_string(), String::new()),
        ]);
        self.commit(&docker, name, &snapshot_image(name, snapshot), labels)
            .await
    }

    async fn snapshot_list(&self, name: &str) -> DriverResult<Vec<SnapshotInfo>> {
        check_name(name)?;
        let docker = self.docker().await?;
        self.inspect(&docker, name).await?;
        let prefix = format!("{SNAPSHOT_REPO}/{name}:");
        let mut out = Vec::new();
        for image in self
            .images_labelled(&docker, LABEL_SNAPSHOT_OF, name)
            .await?
        {
            for tag in &image.repo_tags {
                if let Some(snapshot) = tag.strip_prefix(&prefix) {
                    out.push(SnapshotInfo {
                        name: snapshot.to_string(),
                        created_at: image.created,
                    });
                }
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(out)
    }

    async fn snapshot_revert(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name(name)?;
        check_snapshot_name(snapshot)?;
        let docker = self.docker().await?;
        let image = snapshot_image(name, snapshot);
        let temp = revert_name(name);
        let old = match self.find(&docker, name).await? {
            Some(c) => Some(c),
            None => {
                // A revert that removed the old container but did not get
                // to the rename: finish it.
                match docker.inspect_container(&temp, None).await {
                    Ok(_) => None,
                    Err(e) => return Err(classify(&format!("container {name}"), e)),
                }
            }
        };
        let shot = docker
            .inspect_image(&image)
            .await
            .map_err(|e| classify(&format!("snapshot {snapshot} of {name}"), e))?;
        let was_running = shot
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_SNAPSHOT_RUNNING))
            .is_some_and(|v| v == "true");
        if let Some(old) = old {
            let labels = old
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let plan = Plan::of_labels(name, &labels)?;
            // Built beside the old one first, so a failure here leaves
            // the VM as it was.
            self.remove_container(&docker, &temp).await?;
            self.create_container(&docker, &plan, &image, &temp).await?;
            self.remove_container(&docker, name).await?;
        }
        let options = RenameContainerOptionsBuilder::new().name(name).build();
        docker
            .rename_container(&temp, options)
            .await
            .map_err(|e| classify(&format!("renaming {temp} to {name}"), e))?;
        if was_running {
            docker
                .start_container(name, None)
                .await
                .map_err(|e| classify(&format!("starting {name}"), e))?;
        }
        Ok(())
    }

    async fn snapshot_delete(&self, name: &str, snapshot: &str) -> DriverResult<()> {
        check_name(name)?;
        check_snapshot_name(snapshot)?;
        let docker = self.docker().await?;
        self.inspect(&docker, name).await?;
        // Forced: after a revert the container runs from this image; the
        // tag goes, the image stays for it until the VM is deleted.
        self.remove_image(&docker, &snapshot_image(name, snapshot), true)
            .await
    }

    async fn clone_vm(&self, source: &str, spec: &VmSpec) -> DriverResult<VmInfo> {
        check_name(source)?;
        self.check_spec(spec)?;
        let docker = self.docker().await?;
        if let Some(c) = self.find(&docker, &spec.name).await? {
            return Ok(self.info_of(&spec.name, &c));
        }
        let src = self.inspect(&docker, source).await?;
        let labels = src
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let src_plan = Plan::of_labels(source, &labels)?;
        if src_plan.image != spec.image {
            return Err(DriverError::Permanent(format!(
                "{} is made from image {}, not {}: a clone keeps its source's image",
                source, src_plan.image, spec.image
            )));
        }
        if spec.disk_gb < src_plan.disk_gb {
            return Err(DriverError::Permanent(format!(
                "{} has {} GB of disk; the clone {} cannot have less ({} GB)",
                source, src_plan.disk_gb, spec.name, spec.disk_gb
            )));
        }
        let base = clone_image(&spec.name);
        let labels = HashMap::from([
            (LABEL_CLONE_FOR.to_string(), spec.name.clone()),
            (LABEL_SNAPSHOT_OF.to_string(), String::new()),
        ]);
        self.commit(&docker, source, &base, labels).await?;
        let c = self
            .create_container(&docker, &Plan::of_spec(spec), &base, &spec.name)
            .await?;
        Ok(self.info_of(&spec.name, &c))
    }

    async fn stats(&self, name: &str) -> DriverResult<VmStats> {
        check_name(name)?;
        let docker = self.docker().await?;
        let c = self.inspect(&docker, name).await?;
        if !Self::running(&c) {
            return Err(DriverError::Unavailable(format!(
                "container {name} is not running"
            )));
        }
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = docker.stats(name, Some(options)).boxed();
        let s = match stream.next().await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(classify(&format!("figures of {name}"), e)),
            None => {
                return Err(DriverError::Unavailable(format!(
                    "figures of {name}: docker sent none"
                )))
            }
        };
        let host = c.host_config.as_ref();
        let mut out = VmStats {
            cpus: host
                .and_then(|h| h.nano_cpus)
                .map(|n| u32::try_from(n.max(0) / 1_000_000_000).unwrap_or(u32::MAX))
                .unwrap_or(0)
                .max(1),
            memory_total: host
                .and_then(|h| h.memory)
                .and_then(|m| u64::try_from(m).ok())
                .filter(|m| *m > 0),
            ..VmStats::default()
        };
        out.cpu_ns = s
            .cpu_stats
            .as_ref()
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage);
        if let Some(m) = s.memory_stats.as_ref() {
            // What `docker stats` shows: usage less the page cache the
            // kernel can drop (cgroup v1 names it total_inactive_file).
            let cache = m
                .stats
                .as_ref()
                .and_then(|st| {
                    st.get("inactive_file")
                        .or_else(|| st.get("total_inactive_file"))
                })
                .copied()
                .unwrap_or(0);
            out.memory_used = m.usage.map(|u| u.saturating_sub(cache));
        }
        if let Some(nets) = s.networks.as_ref() {
            if !nets.is_empty() {
                out.net_rx_bytes = Some(nets.values().filter_map(|n| n.rx_bytes).sum());
                out.net_tx_bytes = Some(nets.values().filter_map(|n| n.tx_bytes).sum());
            }
        }
        if let Some(entries) = s
            .blkio_stats
            .as_ref()
            .and_then(|b| b.io_service_bytes_recursive.as_ref())
        {
            let sum = |op: &str| {
                entries
                    .iter()
                    .filter(|e| e.op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(op)))
                    .filter_map(|e| e.value)
                    .sum::<u64>()
            };
            out.disk_read_bytes = Some(sum("read"));
            out.disk_write_bytes = Some(sum("write"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_containers_or_repositories_are_refused() {
        for good in ["keel-1", "keel-abc-2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Keel-1", "keel-", "-keel", "keel_1", "keel.1", "keel/1"] {
            assert!(
                matches!(check_name(bad), Err(DriverError::Permanent(_))),
                "{bad}"
            );
        }
        assert!(check_snapshot_name("keel-j12").is_ok());
        assert!(check_snapshot_name("Daily_1").is_ok());
        for bad in ["", "-x", "a.b", "a:b", "a/b"] {
            assert!(check_snapshot_name(bad).is_err(), "{bad}");
        }
        // The revert's temporary name can never be a VM's.
        assert!(check_name(&revert_name("keel-1")).is_err());
    }

    #[test]
    fn the_plan_survives_its_labels() {
        let plan = Plan {
            name: "keel-7".into(),
            image: "debian-bookworm".into(),
            cpus: 2,
            ram_mb: 512,
            disk_gb: 10,
            hostname: "www.example.org".into(),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 7)),
            ipv6: None,
        };
        assert_eq!(Plan::of_labels("keel-7", &plan.labels()).unwrap(), plan);
        let mut broken = plan.labels();
        broken.insert(LABEL_CPUS.into(), "many".into());
        assert!(matches!(
            Plan::of_labels("keel-7", &broken),
            Err(DriverError::Permanent(_))
        ));
    }

    #[test]
    fn api_failures_are_classed_by_status() {
        let server = |status_code| DockerError::DockerResponseServerError {
            status_code,
            message: "m".into(),
        };
        assert!(matches!(
            classify("x", server(404)),
            DriverError::NotFound(_)
        ));
        assert!(matches!(
            classify("x", server(409)),
            DriverError::Permanent(_)
        ));
        assert!(matches!(
            classify("x", server(400)),
            DriverError::Permanent(_)
        ));
        assert!(matches!(
            classify("x", server(500)),
            DriverError::Unavailable(_)
        ));
        assert!(matches!(
            classify("x", server(503)),
            DriverError::Unavailable(_)
        ));
        assert!(matches!(
            classify("x", DockerError::RequestTimeoutError),
            DriverError::Unavailable(_)
        ));
        assert!(matches!(
            classify("x", DockerError::SocketNotFoundError("/x".into())),
            DriverError::Unavailable(_)
        ));
    }

    #[test]
    fn images_map_through_the_table_then_the_prefix() {
        let mut s = DockerSettings::new(DockerEndpoint::Unix("/var/run/docker.sock".into()));
        s.images.insert(
            "debian-bookworm".into(),
            "registry.example.org/deb:12".into(),
        );
        assert_eq!(
            s.image_ref("debian-bookworm"),
            "registry.example.org/deb:12"
        );
        assert_eq!(s.image_ref("alpine"), "keel/alpine");
    }
}
