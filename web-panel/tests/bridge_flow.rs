//! Bridged networking end to end on the real container driver
//! (`systemd-nspawn`), through the panel's own provisioning flow.
//!
//! The test builds a small LAN of its own: a Linux bridge (`kbr81`) whose
//! host address is the pool's gateway (10.233.81.1, fd00:233:81::1) — the
//! panel's host on the servers' network — and an "outside" host, a network
//! namespace of its own (`kout81`) joined to the bridge by a veth pair,
//! with 10.233.81.2 and fd00:233:81::2. The pool `bridge-81` is on that
//! bridge (`[networks.bridge-81] bridge = "kbr81"`) and its IPv6 network is
//! a /112, not a /64. Two servers are created through the API; then:
//! - each carries its allocated addresses with the pool's prefixes
//!   (/24, /112) on its NIC, and the network's resolvers;
//! - each answers SSH on its allocated IPv4 and IPv6 from the outside
//!   namespace, with the host key the panel pinned;
//! - they reach each other's sshd over IPv4 and IPv6;
//! - the panel's host-key check and role run went to the allocated address
//!   on port 22: no forwarded endpoint is recorded, known_hosts names the
//!   address, the job log says where it waited, and the guest's sshd saw the
//!   role run's connection arrive at that address and port, from the
//!   panel's host (the playbook records `SSH_CONNECTION`);
//! - with `callback_check_source` on, the VMs' own callbacks were accepted
//!   (they came from their allocated addresses), and a correctly signed
//!   callback from the outside host or from the other server is refused
//!   for its source, while the same request from the VM's own address is
//!   answered (as a duplicate).
//!
//! The bridge, the veth pair and the namespace have fixed names tied to this
//! test's reserved subnet (10.233.81.0/24); leftovers of a killed run are
//! removed before and everything is removed after, passed or failed
//! ([`Lan`]'s drop). Needs root and the built image; skips otherwise, or
//! fails when `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::Path;
use std::process::Command;

use flow_support::FlowPanel;
use keel_panel::alloc::{self, AddressRecord, PoolFile};
use keel_panel::config::NetworkConfig;
use keel_panel::domain::Principal;
use keel_panel::provision::callback;
use serde_json::Value;

const BRIDGE: &str = "kbr81";
const OUTSIDE: &str = "kout81";
const VETH_BRIDGE: &str = "kv81b";
const VETH_OUTSIDE: &str = "kv81o";
const POOL: &str = "bridge-81";

/// Runs `ip` with `args`; panics when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {out:?}", args.join(" "));
}

/// The test's LAN: the bridge with the gateway addresses, and the outside
/// namespace on it. Removed when dropped.
struct Lan;

impl Lan {
    fn up() -> Lan {
        Lan::remove();
        let lan = Lan;
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&["addr", "add", "10.233.81.1/24", "dev", BRIDGE]);
        ip(&[
            "-6",
            "addr",
            "add",
            "fd00:233:81::1/112",
            "dev",
            BRIDGE,
            "nodad",
        ]);
        ip(&["link", "set", BRIDGE, "up"]);
        ip(&["netns", "add", OUTSIDE]);
        ip(&[
            "link",
            "add",
            VETH_BRIDGE,
            "type",
            "veth",
            "peer",
            "name",
            VETH_OUTSIDE,
            "netns",
            OUTSIDE,
        ]);
        ip(&["link", "set", VETH_BRIDGE, "master", BRIDGE]);
        ip(&["link", "set", VETH_BRIDGE, "up"]);
        ip(&[
            "-n",
            OUTSIDE,
            "addr",
            "add",
            "10.233.81.2/24",
            "dev",
            VETH_OUTSIDE,
        ]);
        ip(&[
            "-n",
            OUTSIDE,
            "-6",
            "addr",
            "add",
            "fd00:233:81::2/112",
            "dev",
            VETH_OUTSIDE,
            "nodad",
        ]);
        ip(&["-n", OUTSIDE, "link", "set", VETH_OUTSIDE, "up"]);
        ip(&["-n", OUTSIDE, "link", "set", "lo", "up"]);
        lan
    }

    /// Best effort: what exists of the LAN goes (the veth pair with the
    /// namespace).
    fn remove() {
        for args in [
            ["netns", "del", OUTSIDE].as_slice(),
            &["link", "del", VETH_BRIDGE],
            &["link", "del", BRIDGE],
        ] {
            let _ = Command::new("ip").args(args).output();
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        Lan::remove();
    }
}

/// Runs `program` inside network namespace `ns`; returns its output.
fn in_netns(ns: &str, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .unwrap()
}

/// The ed25519 host key (`type base64`) sshd at `ip` shows to the outside
/// namespace.
fn key_seen_from_outside(ip: &str) -> String {
    let out = in_netns(OUTSIDE, "ssh-keyscan", &["-t", "ed25519", "-T", "10", ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("ssh-keyscan {ip} from {OUTSIDE} saw no key: {out:?}"));
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// POSTs a VM-ready callback from namespace `ns`; returns (status, body).
fn callback_from(ns: &str, url: &str) -> (u16, Value) {
    let out = in_netns(
        ns,
        "curl",
        &["-sS", "-m", "20", "-X", "POST", "-w", "\n%{http_code}", url],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("curl from {ns}: {out:?}"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

async fn ssh_text(f: &FlowPanel, id: i64, command: &str) -> String {
    let out = f.ssh_admin(id, command).await;
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The pinned host key of a server, `type base64`.
async fn pinned_key(f: &FlowPanel, id: i64) -> String {
    let mut rc = f.panel.db().read().await.unwrap();
    let key = keel_panel::scalar!(
        &mut rc.conn(),
        String,
        "SELECT host_key_public FROM vm_provisioning WHERE service_id = $1",
        id
    )
    .unwrap()
    .unwrap();
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_a_bridge_are_reached_at_their_own_addresses() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let _lan = Lan::up();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bridge_flow_data/site.yml");
    // The flow's own pool stays empty; servers come from the bridged one.
    let mut f = FlowPanel::start_with(81, 0, move |c| {
        c.hypervisor.playbook = playbook;
        c.hypervisor.callback_check_source = true;
        c.networks.insert(
            POOL.into(),
            NetworkConfig {
                bridge: BRIDGE.into(),
                nameservers: vec![
                    "10.233.81.2".parse().unwrap(),
                    "fd00:233:81::2".parse().unwrap(),
                ],
                callback_url: String::new(),
            },
        );
    })
    .await;
    let pool = PoolFile {
        pool: POOL.into(),
        pool_type: "public".into(),
        quarantine_secs: Some(3600),
        addresses: (0..2u8)
            .map(|i| AddressRecord {
                hostname: format!("bridge81-{i}.example.org"),
                ipv4: Some(format!("10.233.81.{}", 10 + i)),
                ipv6: Some(format!("fd00:233:81::{}", 10 + i)),
                gateway4: Some("10.233.81.1".into()),
                netmask4: Some("255.255.255.0".into()),
                gateway6: Some("fd00:233:81::1".into()),
                prefix6: Some(112),
            })
            .collect(),
    };
    alloc::import(f.panel.db(), &Principal::system(), &pool, 3600)
        .await
        .unwrap();
    f.worker(&["hypervisor", "default"]);
    let a = f.create().await;
    let b = f.create().await;
    let da = f.wait_status(a, "ready").await;
    let db = f.wait_status(b, "ready").await;

    let mut servers = Vec::new();
    for (id, detail) in [(a, &da), (b, &db)] {
        let v4 = detail["ipv4"].as_str().unwrap().to_string();
        let v6 = detail["ipv6"].as_str().unwrap().to_string();
        assert!(v4.starts_with("10.233.81.1"), "{detail}");
        assert!(v6.starts_with("fd00:233:81::1"), "{detail}");
        servers.push((id, v4, v6));
    }
    assert_ne!(servers[0].1, servers[1].1);

    for (id, v4, v6) in &servers {
        let vm = f.prov.vm_name(*id);
        // The NIC carries the allocated addresses with the pool's prefixes.
        let addrs = ssh_text(&f, *id, "ip -o addr show dev eth0").await;
        assert!(addrs.contains(&format!("inet {v4}/24 ")), "{addrs}");
        assert!(addrs.contains(&format!("inet6 {v6}/112 ")), "{addrs}");
        let routes = ssh_text(
            &f,
            *id,
            "ip -4 route show default; ip -6 route show default",
        )
        .await;
        assert!(
            routes.contains("default via 10.233.81.1 dev eth0"),
            "{routes}"
        );
        assert!(
            routes.contains("default via fd00:233:81::1 dev eth0"),
            "{routes}"
        );
        let resolv = ssh_text(&f, *id, "cat /etc/resolv.conf").await;
        assert!(
            resolv.contains("nameserver 10.233.81.2")
                && resolv.contains("nameserver fd00:233:81::2"),
            "{resolv}"
        );

        // Reached from outside on both families, with the pinned key.
        let pinned = pinned_key(&f, *id).await;
        assert_eq!(key_seen_from_outside(v4), pinned, "{vm} over IPv4");
        assert_eq!(key_seen_from_outside(v6), pinned, "{vm} over IPv6");

        // The panel's SSH went to the address, port 22: nothing forwarded
        // was recorded, known_hosts names the bare address, the job log
        // says where the host-key check waited, and the guest's sshd saw
        // the role run arrive there from the panel's host.
        let mut rc = f.panel.db().read().await.unwrap();
        let endpoint = keel_panel::fetch_opt!(
            &mut rc.conn(),
            (Option<String>, Option<i64>),
            "SELECT ssh_endpoint, callback_at FROM vm_provisioning WHERE service_id = $1",
            *id
        )
        .unwrap()
        .unwrap();
        drop(rc);
        assert_eq!(endpoint.0, None, "{vm}: a forwarded SSH endpoint");
        assert!(endpoint.1.is_some(), "{vm} never called back");
        let known = std::fs::read_to_string(f.prov.known_hosts_path(&vm)).unwrap();
        assert!(known.starts_with(&format!("{v4} ssh-ed25519 ")), "{known}");
        let configure = f.jobs_json(*id, "configure").await;
        let log = f.job_log(configure[0]["id"].as_i64().unwrap()).await;
        assert!(
            log.contains(&format!("waiting for sshd of {vm} at {v4}:22")),
            "{log}"
        );
        assert!(log.contains(&format!("host key of {vm} verified")), "{log}");
        let seen =
            std::fs::read_to_string(f.driver.root_dir(&vm).join("etc/keel-bridge-connection"))
                .unwrap();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(fields.len(), 4, "SSH_CONNECTION {seen:?}");
        assert_eq!(fields[0], "10.233.81.1", "client of {seen:?}");
        assert_eq!(&fields[2..], [v4.as_str(), "22"], "server of {seen:?}");
    }

    // The two reach each other directly over the bridge.
    for (from, to) in [(0, 1), (1, 0)] {
        let (id, _, _) = &servers[from];
        for target in [&servers[to].1, &servers[to].2] {
            let banner = ssh_text(
                &f,
                *id,
                &format!("timeout 10 bash -c 'exec 3<>/dev/tcp/{target}/22 && head -c 7 <&3'"),
            )
            .await;
            assert_eq!(banner, "SSH-2.0", "{} to {target}", servers[from].1);
        }
    }

    // The callback's source check: the VMs' own callbacks got through
    // (both are ready, each called back); a signed callback from anywhere
    // but the VM's own address is refused for that reason alone.
    let (vm, gen, secret) = f.callback_params(a).await;
    let url = format!(
        "http://10.233.81.1:{}/api/v1/callback/vm-ready?vm={vm}&gen={gen}&sig={}",
        f.prov.callback_port,
        callback::sign(&secret, &vm, gen)
    );
    let other_vm = f.prov.vm_name(b);
    for ns in [OUTSIDE, other_vm.as_str()] {
        let (status, body) = callback_from(ns, &url);
        assert_eq!(status, 403, "from {ns}: {body}");
        assert_eq!(
            body["message"], "callbacks are accepted only from the VM's own address",
            "from {ns}: {body}"
        );
    }
    let (status, body) = callback_from(&vm, &url);
    assert_eq!(status, 200, "from the VM itself: {body}");
    assert_eq!(body["status"], "duplicate", "{body}");
    // A bad signature from the right address is still refused, as such.
    let forged = url.replace(
        &callback::sign(&secret, &vm, gen),
        &callback::sign(&"ab".repeat(32), &vm, gen),
    );
    let (status, body) = callback_from(&vm, &forged);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "the callback signature is not valid");
}
