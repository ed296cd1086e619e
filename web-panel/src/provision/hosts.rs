//! The driver of each hypervisor host, by the host's name
//! ([`HostDrivers`]): what the steps of the flow, the migration and the
//! reconciliation call to reach the host that holds a VM. Built once from
//! the configuration (`[[hypervisor.hosts]]`, or the one legacy host);
//! which host holds which server is the database's (`services::hosts`).

use std::sync::Arc;

use crate::config::{Config, HostConfig};
use crate::hypervisor::Driver;
use crate::provision::ProvisionError;

/// The drivers of the configured hosts, in configuration order.
#[derive(Clone, Default)]
pub struct HostDrivers {
    drivers: Vec<(String, Arc<dyn Driver>)>,
}

impl std::fmt::Debug for HostDrivers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.drivers
                    .iter()
                    .map(|(n, d)| format!("{n}: {}", d.kind())),
            )
            .finish()
    }
}

impl HostDrivers {
    /// One driver per configured host (none for `hypervisor.driver =
    /// "none"` without hosts). With `chaos.driver_fault_fraction` above 0
    /// (the chaos soak only) each is wrapped in the fault injector.
    pub fn from_config(config: &Config) -> Result<HostDrivers, ProvisionError> {
        let mut out = HostDrivers::default();
        for host in config.hypervisor.host_list() {
            let driver = driver_for_host(&host, config)?;
            out.insert(&host.name, driver);
        }
        Ok(out)
    }

    /// One host.
    pub fn single(name: &str, driver: Arc<dyn Driver>) -> HostDrivers {
        let mut out = HostDrivers::default();
        out.insert(name, driver);
        out
    }

    /// Adds (or replaces) the driver of host `name`.
    pub fn insert(&mut self, name: &str, driver: Arc<dyn Driver>) {
        self.drivers.retain(|(n, _)| n != name);
        self.drivers.push((name.to_string(), driver));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Driver>> {
        self.drivers.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// The host, when there is exactly one.
    pub fn only(&self) -> Option<(&str, &Arc<dyn Driver>)> {
        match self.drivers.as_slice() {
            [(n, d)] => Some((n.as_str(), d)),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn Driver>)> {
        self.drivers.iter().map(|(n, d)| (n.as_str(), d))
    }

    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.drivers.len()
    }

    /// The driver kind every host shares, if they all share one.
    pub fn common_kind(&self) -> Option<&'static str> {
        let first = self.drivers.first()?.1.kind();
        self.drivers
            .iter()
            .all(|(_, d)| d.kind() == first)
            .then_some(first)
    }
}

/// The driver of one configured host.
fn driver_for_host(host: &HostConfig, config: &Config) -> Result<Arc<dyn Driver>, ProvisionError> {
    use crate::hypervisor::{nspawn, ImageStore};
    let h = &config.hypervisor;
    let images = ImageStore::new(&h.image_dir);
    let state_dir = h.host_state_dir(host, &config.data_dir);
    Ok(match host.driver.as_str() {
        #[cfg(feature = "libvirt")]
        "libvirt" => {
            use crate::hypervisor::libvirt;
            let mut cfg = libvirt::LibvirtConfig::new(&host.uri, images, state_dir);
            cfg.prefix = h.vm_prefix.clone();
            with_chaos(libvirt::LibvirtDriver::new(cfg), config)
        }
        // The config check refuses this already; `keel-panel demo` picks
        // the driver after that check.
        #[cfg(not(feature = "libvirt"))]
        "libvirt" => {
            return Err(ProvisionError::Missing(format!(
                "hypervisor driver \"libvirt\": {}",
                crate::hypervisor::LIBVIRT_NOT_BUILT
            )))
        }
        "nspawn" => {
            let mut cfg = nspawn::NspawnConfig::new(images);
            cfg.state_dir = state_dir;
            cfg.prefix = h.vm_prefix.clone();
            with_chaos(nspawn::NspawnDriver::new(cfg), config)
        }
        // One vCenter, `[vsphere]`; the host's `uri` is not used.
        "vsphere" => {
            use crate::hypervisor::vsphere::{VsphereDriver, VsphereSettings};
            let v = &config.vsphere;
            let driver = VsphereDriver::new(VsphereSettings {
                url: v.url.clone(),
                username: v.username.clone(),
                password_file: v.password_file.clone().into(),
                ca_file: (!v.ca_file.is_empty()).then(|| v.ca_file.clone().into()),
                datacenter: v.datacenter.clone(),
                cluster: v.cluster.clone(),
                resource_pool: v.resource_pool.clone(),
                folder: v.folder.clone(),
                template_folder: v.template_folder.clone(),
                datastore: v.datastore.clone(),
                prefix: h.vm_prefix.clone(),
                request_timeout: std::time::Duration::from_secs(v.request_timeout_secs),
                task_timeout: std::time::Duration::from_secs(v.task_timeout_secs),
            })
            .map_err(|e| {
                ProvisionError::Missing(format!("host {}: driver \"vsphere\": {e}", host.name))
            })?;
            with_chaos(driver, config)
        }
        #[cfg(feature = "docker")]
        "docker" => with_chaos(docker_driver(host, h)?, config),
        // Refused by the config check, as for libvirt.
        #[cfg(not(feature = "docker"))]
        "docker" => {
            return Err(ProvisionError::Missing(format!(
                "host {}: hypervisor driver \"docker\": {}",
                host.name,
                crate::hypervisor::DOCKER_NOT_BUILT
            )))
        }
        other => {
            return Err(ProvisionError::Missing(format!(
                "host {}: unknown hypervisor driver {other:?}",
                host.name
            )))
        }
    })
}

/// The docker driver of one host, from its `[hypervisor.hosts.docker]`.
#[cfg(feature = "docker")]
fn docker_driver(
    host: &HostConfig,
    h: &crate::config::HypervisorConfig,
) -> Result<crate::hypervisor::docker::DockerDriver, ProvisionError> {
    use crate::config::DockerApi;
    use crate::hypervisor::docker::{DockerDriver, DockerEndpoint, DockerSettings};
    use std::time::Duration;
    let d = &host.docker;
    let api = d
        .check(&format!("host {}: docker", host.name))
        .map_err(ProvisionError::Missing)?;
    let endpoint = match api {
        DockerApi::Unix(path) => DockerEndpoint::Unix(path),
        DockerApi::Tls { address } => DockerEndpoint::Tls {
            address,
            ca_file: d.ca_file.clone().into(),
            cert_file: d.cert_file.clone().into(),
            key_file: d.key_file.clone().into(),
        },
    };
    let mut settings = DockerSettings::new(endpoint);
    settings.prefix = h.vm_prefix.clone();
    settings.images = d.images.clone();
    settings.image_prefix = d.image_prefix.clone();
    settings.network = d.network.clone();
    settings.command = d.command.clone();
    settings.stop_timeout = Duration::from_secs(d.stop_timeout_secs);
    settings.request_timeout = Duration::from_secs(d.request_timeout_secs);
    Ok(DockerDriver::new(settings))
}

/// `driver`, behind the fault wrapper when `chaos` asks for faults.
fn with_chaos<D: Driver + 'static>(driver: D, config: &Config) -> Arc<dyn Driver> {
    use crate::hypervisor::faulty::FaultyDriver;
    let chaos = &config.chaos;
    if chaos.driver_fault_fraction <= 0.0 {
        return Arc::new(driver);
    }
    // Each process draws its own sequence unless a seed is given.
    let seed = match chaos.driver_fault_seed {
        0 => fastrand::u64(1..),
        s => s,
    };
    tracing::warn!(
        fraction = chaos.driver_fault_fraction,
        seed,
        "fault injection: chaos.driver_fault_fraction of hypervisor calls will fail"
    );
    Arc::new(FaultyDriver::new(driver, chaos.driver_fault_fraction, seed))
}
