//! System modules: accounts, SSH keys, cron, hostname, kernel settings,
//! mounts, time zone, locales, services and the firewall on the host.
//!
//! Each module is query-then-apply over the [`kit`](super::kit): one query round trip
//! reads every file and command output the comparison needs, the wanted
//! state is computed on the controller, and at most one apply round trip
//! makes the change. Check mode stops after the comparison.
use std::collections::HashMap;
use std::sync::Arc;

use super::ModuleRef;

pub mod alternatives;
pub mod apache2_module;
pub mod authorized_key;
pub mod cron;
pub mod getent;
pub mod group;
pub mod hostname;
pub mod iptables;
pub mod known_hosts;
pub mod locale_gen;
pub mod modprobe;
pub mod mount;
pub mod reboot;
pub mod service;
pub mod service_facts;
pub mod supervisorctl;
pub mod sysctl;
pub mod systemd;
pub mod timezone;
pub mod ufw;
pub mod user;

pub(super) fn register(m: &mut HashMap<&'static str, ModuleRef>) {
    m.insert("user", Arc::new(user::User));
    m.insert("group", Arc::new(group::Group));
    m.insert("authorized_key", Arc::new(authorized_key::AuthorizedKey));
    m.insert("cron", Arc::new(cron::Cron));
    let systemd: ModuleRef = Arc::new(systemd::Systemd);
    m.insert(
        "service",
        Arc::new(service::Service {
            systemd: systemd.clone(),
        }),
    );
    m.insert("systemd", systemd.clone());
    m.insert("systemd_service", systemd);
    m.insert("hostname", Arc::new(hostname::Hostname));
    m.insert("iptables", Arc::new(iptables::Iptables));
    m.insert("ufw", Arc::new(ufw::Ufw));
    m.insert("sysctl", Arc::new(sysctl::Sysctl));
    m.insert("mount", Arc::new(mount::Mount));
    m.insert("timezone", Arc::new(timezone::Timezone));
    m.insert("reboot", Arc::new(reboot::Reboot));
    m.insert("modprobe", Arc::new(modprobe::Modprobe));
    m.insert("getent", Arc::new(getent::Getent));
    m.insert("known_hosts", Arc::new(known_hosts::KnownHosts));
    m.insert("service_facts", Arc::new(service_facts::ServiceFacts));
    m.insert("alternatives", Arc::new(alternatives::Alternatives));
    m.insert("locale_gen", Arc::new(locale_gen::LocaleGen));
    m.insert("supervisorctl", Arc::new(supervisorctl::Supervisorctl));
    m.insert("apache2_module", Arc::new(apache2_module::Apache2Module));
}
