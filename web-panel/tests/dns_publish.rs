//! DNS publishing against a real BIND 9 (`dns_support::Bind`: a signed
//! primary open to TSIG-signed updates, and a validating resolver).
//!
//! - `publisher`: `keel_panel::dns::Publisher` alone replaces whole RRsets
//!   (A, AAAA, SSHFP, CNAME) in one signed update, removes them, and is
//!   refused with a wrong key; `dig` reads the zone after each step.
//! - `server_records` (both backends): a server made ready on the real
//!   container driver gets its `dns` job in the same transaction; `dig`
//!   sees its A and SSHFP records, the SSHFP equal to what `ssh-keygen -r`
//!   computes from the host key the container's sshd really uses; then
//!   OpenSSH itself, with `VerifyHostKeyDNS=yes`, `StrictHostKeyChecking=yes`
//!   and an empty known_hosts file, logs in by trusting that key through
//!   SSHFP alone; a domain alias added to a vhost through the API becomes
//!   a CNAME to the server, and goes when the alias is replaced or its
//!   vhost deleted (the vhost write queues the `dns` job).
//!   The zone is DNSSEC-signed and the answers come through a
//!   validating resolver, so ssh sees them as secure (AD bit): no
//!   "accept unsigned answers" shortcut is taken. ssh uses the system
//!   resolver, so it runs in a private mount namespace (`unshare -m`) whose
//!   `/etc/resolv.conf` names the test's resolver. Deleting the server
//!   removes its records.
//!
//! Needs root, BIND (`bind9`, `bind9-dnsutils`) and, for the server story,
//! the container image; skips otherwise, or fails with `KEEL_REQUIRE_REAL`.

mod api_support;
mod dns_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use api_support::{Backend, Cred};
use dns_support::{sshfp_text, Bind};
use flow_support::{FlowPanel, WAIT};
use keel_panel::dns::{self, DnsRecord, Publisher, RecordData};
use serde_json::{json, Value};

fn rec(name: &str, data: RecordData) -> DnsRecord {
    DnsRecord {
        name: name.into(),
        data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_replaces_and_removes_rrsets_with_tsig() {
    if !dns_support::can_run_bind() {
        return;
    }
    let bind = Bind::start("example.test");
    let cfg = bind.config();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("hk");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hk", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let first = dns::server_records(
        "vm1.example.test",
        Some("192.0.2.10"),
        Some("2001:db8::10"),
        &public,
        &["www.example.test".into()],
    )
    .unwrap();
    let publisher = Publisher::new(&cfg).unwrap();
    for u in dns::plan(&cfg, &[], &first).unwrap() {
        publisher.apply(&u).await.unwrap();
    }
    assert_eq!(bind.dig("vm1.example.test", "A"), ["192.0.2.10"]);
    assert_eq!(bind.dig("vm1.example.test", "AAAA"), ["2001:db8::10"]);
    assert_eq!(bind.dig("www.example.test", "CNAME"), ["vm1.example.test."]);
    // What `ssh-keygen -r` prints for the key, its SHA-256 line.
    let keygen = Command::new("ssh-keygen")
        .args(["-r", "vm1.example.test", "-f"])
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let want: Vec<String> = String::from_utf8_lossy(&keygen.stdout)
        .lines()
        .filter_map(|l| l.split_once(" IN SSHFP ").map(|(_, d)| d.to_string()))
        .filter(|d| d.starts_with("4 2 "))
        .collect();
    assert_eq!(want.len(), 1, "{keygen:?}");
    let served: Vec<String> = bind
        .dig("vm1.example.test", "SSHFP")
        .iter()
        .map(|a| sshfp_text(a))
        .collect();
    assert_eq!(served, want);

    // A replace: the address moves, IPv6 and the alias go; the RRsets
    // hold exactly the new data, and a second identical run changes
    // nothing.
    let second =
        dns::server_records("vm1.example.test", Some("192.0.2.11"), None, &public, &[]).unwrap();
    for _ in 0..2 {
        for u in dns::plan(&cfg, &first, &second).unwrap() {
            publisher.apply(&u).await.unwrap();
        }
        assert_eq!(bind.dig("vm1.example.test", "A"), ["192.0.2.11"]);
        assert!(bind.dig("vm1.example.test", "AAAA").is_empty());
        assert!(bind.dig("www.example.test", "CNAME").is_empty());
        assert_eq!(bind.dig("vm1.example.test", "SSHFP").len(), 1);
    }

    // A wrong key is refused, and the zone is unchanged.
    let bad_key = dir.path().join("bad.key");
    std::fs::write(&bad_key, "c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhIQ==\n").unwrap();
    let mut bad = cfg.clone();
    bad.key_file = bad_key.display().to_string();
    let removal = dns::plan(&cfg, &second, &[]).unwrap();
    let e = Publisher::new(&bad)
        .unwrap()
        .apply(&removal[0])
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(!e.to_string().contains("c29tZSBvdGhlci"), "{e}");
    assert_eq!(bind.dig("vm1.example.test", "A"), ["192.0.2.11"]);

    // The removal empties every RRset the panel published.
    for u in &removal {
        publisher.apply(u).await.unwrap();
    }
    for t in ["A", "AAAA", "SSHFP"] {
        assert!(bind.dig("vm1.example.test", t).is_empty(), "{t}");
    }

    // A name outside the configured zones is a permanent error, found
    // before anything is sent.
    let e = dns::plan(
        &cfg,
        &[],
        &[rec(
            "vm.example.org.",
            RecordData::Cname {
                target: "x.example.test.".into(),
            },
        )],
    )
    .unwrap_err();
    assert!(!e.is_retryable(), "{e}");
}

/// The service's page as the API returns it, once its `dns` row is in
/// `state`.
async fn wait_dns(f: &FlowPanel, id: i64, state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = f.service(id).await;
        if s["dns"]["state"] == state {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "service {id}'s DNS is not {state} after {WAIT:?}: {}",
            s["dns"]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `dig NAME TYPE` answers `want` (empty: no record).
async fn wait_dig(bind: &Bind, name: &str, rtype: &str, want: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = bind.dig(name, rtype);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dig {name} {rtype} answers {got:?}, not {want:?}, after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `ssh` to `host` as the panel's admin account with the panel's key,
/// with no known host key at all: only SSHFP can make it trust the
/// server. Runs in a private mount namespace whose `/etc/resolv.conf` is
/// `resolv` (the test's validating resolver).
fn ssh_via_dns(resolv: &Path, key: &Path, known: &Path, host: &str, verify_dns: bool) -> Output {
    Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/resolv.conf && shift && exec ssh "$@""#)
        .arg("sh")
        .arg(resolv)
        .args(["-v", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!(
            "VerifyHostKeyDNS={}",
            if verify_dns { "yes" } else { "no" }
        ))
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-i"])
        .arg(key)
        .arg(format!("keeladmin@{host}"))
        .arg("echo LOGGED-IN")
        .output()
        .unwrap()
}

async fn server_records(b: Backend) {
    if !dns_support::can_run_bind() || !e2e_support::can_run_nspawn() {
        return;
    }
    let mut bind = Bind::start("example.org");
    let resolv = bind.resolv_conf();
    let cfg = bind.config();
    // Each flow test has its own pool's third octet (vhosts_flow has 41;
    // nextest runs them at once).
    let subnet = match b {
        Backend::Sqlite => 44,
        Backend::Postgres => 42,
    };
    // Vhost changes also queue `vhosts` role runs; the flow tests' small
    // stand-in playbook keeps them quick (Apache is vhosts_flow.rs's).
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/provision_flow_data/site.yml");
    let mut f = FlowPanel::start_on(b, subnet, 1, move |c| {
        c.dns = cfg;
        c.sites.vhosts_playbook = playbook;
    })
    .await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let ready = f.wait_status(id, "ready").await;
    let host = ready["hostname"].as_str().unwrap().to_string();
    let ip = ready["ipv4"].as_str().unwrap().to_string();
    assert_eq!(host, format!("flow{subnet}-0.example.org"));
    let detail = wait_dns(&f, id, "published").await;

    // dig sees the address and the fingerprint of the key sshd really
    // uses, as ssh-keygen -r computes it from the container's own file.
    assert_eq!(bind.dig(&host, "A"), [ip.as_str()]);
    assert!(bind.dig(&host, "AAAA").is_empty());
    let vm = f.prov.vm_name(id);
    let on_vm = f
        .driver
        .root_dir(&vm)
        .join("etc/ssh/ssh_host_ed25519_key.pub");
    let keygen = Command::new("ssh-keygen")
        .arg("-r")
        .arg(&host)
        .arg("-f")
        .arg(&on_vm)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let want: Vec<String> = String::from_utf8_lossy(&keygen.stdout)
        .lines()
        .filter_map(|l| l.split_once(" IN SSHFP ").map(|(_, d)| d.to_string()))
        .filter(|d| d.split_whitespace().nth(1) == Some("2"))
        .collect();
    assert_eq!(want.len(), 1, "{keygen:?}");
    let served: Vec<String> = bind
        .dig(&host, "SSHFP")
        .iter()
        .map(|a| sshfp_text(a))
        .collect();
    assert_eq!(served, want);
    // The page lists what is in DNS.
    let shown: Vec<&str> = detail["dns"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        shown,
        [
            format!("{host}. IN A {ip}"),
            format!("{host}. IN SSHFP {}", want[0])
        ]
    );
    assert_eq!(detail["dns"]["error"], Value::Null);
    // And so does the server's HTML page.
    let session = api_support::session_of(&f.panel.login("owner", "owner-password").await);
    let page = f
        .panel
        .call("GET", &format!("/servers/{id}"), &session, None)
        .await;
    let html = page.json.as_str().unwrap_or_default();
    assert!(
        html.contains(r#"id="dns" class="dns-published""#)
            && html.contains(&format!("<code>{host}. IN SSHFP {}</code>", want[0])),
        "{html}"
    );

    // OpenSSH trusts the server through SSHFP alone: strict checking, an
    // empty known_hosts file, and the login works; without DNS it fails.
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let key = f.prov.panel_key().unwrap().private_path.clone();
    let out = ssh_via_dns(&resolv, &key, &known, &host, true);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("LOGGED-IN"),
        "{log}"
    );
    assert!(log.contains("found 1 secure fingerprints in DNS"), "{log}");
    assert!(
        log.contains("matching host key fingerprint found in DNS"),
        "{log}"
    );
    let out = ssh_via_dns(&resolv, &key, &known, &host, false);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{out:?}"
    );

    // Publishing is audited.
    let admin = Cred::Bearer(f.admin_token.clone());
    let audit = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &admin,
            None,
        )
        .await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"service.dns_published"), "{actions:?}");

    // Aliases (#15, #17): a vhost's domain aliases, added through the API,
    // become CNAMEs to the hostname: the vhost's write queues the server's
    // `dns` job in its own transaction. Replacing an alias removes the old
    // CNAME and publishes the new one.
    let alias = format!("www{subnet}.example.org");
    let other = format!("shop{subnet}.example.org");
    let dns_jobs = f.jobs_of_kind(id, "dns").await;
    let vhost = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &f.owner,
            Some(json!({"name": format!("site{subnet}.example.org"), "aliases": [alias]})),
        )
        .await;
    assert_eq!(vhost.status, 201, "{}", vhost.json);
    assert_eq!(f.jobs_of_kind(id, "dns").await, dns_jobs + 1);
    wait_dig(&bind, &alias, "CNAME", &[format!("{host}.")]).await;
    // A resolver follows it to the server's address.
    assert_eq!(bind.dig(&alias, "A"), [format!("{host}."), ip.clone()]);
    let vhost_id = vhost.json["id"].as_i64().unwrap();
    let r = f
        .panel
        .call(
            "PUT",
            &format!("/api/v1/services/{id}/vhosts/{vhost_id}"),
            &f.owner,
            Some(json!({"name": format!("site{subnet}.example.org"), "aliases": [other]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    wait_dig(&bind, &alias, "CNAME", &[]).await;
    assert_eq!(bind.dig(&other, "CNAME"), [format!("{host}.")]);
    // The page lists the new alias once the job has recorded it.
    let cname = json!(format!("{other}. IN CNAME {host}."));
    let deadline = Instant::now() + WAIT;
    loop {
        let page = f.service(id).await;
        let records = page["dns"]["records"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if records.contains(&cname) {
            assert!(!records.iter().any(|r| r.to_string().contains(&alias)));
            break;
        }
        assert!(Instant::now() < deadline, "{}", page["dns"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A change that leaves the aliases as they were queues no DNS run.
    let dns_jobs = f.jobs_of_kind(id, "dns").await;
    let r = f
        .panel
        .call(
            "PUT",
            &format!("/api/v1/services/{id}/vhosts/{vhost_id}"),
            &f.owner,
            Some(json!({
                "name": format!("site{subnet}.example.org"),
                "aliases": [other],
                "document_root": "/srv/site"
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(f.jobs_of_kind(id, "dns").await, dns_jobs);
    // Deleting the vhost takes its alias out of DNS.
    let r = f
        .panel
        .call(
            "DELETE",
            &format!("/api/v1/services/{id}/vhosts/{vhost_id}"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    wait_dig(&bind, &other, "CNAME", &[]).await;
    assert_eq!(bind.dig(&host, "A"), [ip.as_str()]);

    // Delete: the records go once the server is gone.
    let r = f
        .panel
        .call("DELETE", &format!("/api/v1/services/{id}"), &f.owner, None)
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    f.wait_status(id, "deleted").await;
    let gone = wait_dns(&f, id, "removed").await;
    assert_eq!(gone["dns"]["records"], serde_json::json!([]));
    for t in ["A", "SSHFP"] {
        assert!(bind.dig(&host, t).is_empty(), "{t}");
    }
    assert!(bind.dig(&alias, "CNAME").is_empty());
    // Ready, three alias changes, the removal after the delete.
    assert_eq!(f.jobs_of_kind(id, "dns").await, 5);
}

both_backends!(server_records_on_a_container, server_records);
