//! TLS certificates end to end, on the real container driver and a real
//! Pebble (`tls_support::Pebble`, Debian's `pebble`): a site admin adds a
//! vhost with two aliases and `curl` with each name gets its page; asks for
//! a certificate through the API; the `certificate` job orders it from
//! Pebble, serves the HTTP-01 answers through the VM's Apache (Pebble
//! fetches them from port 80 of the container), installs chain and key
//! (the key 0600, root's) and turns on the vhost's 443 site. `openssl
//! s_client` then shows a chain for the vhost's three names issued by
//! Pebble, and `curl` over HTTPS, trusting Pebble's root only, gets the
//! page by each name. The server page shows the certificate and its
//! expiry. Renewal: with the panel's clock moved to 29 days before the
//! expiry, the `certificate_renewal` job (fired through the queue's cron)
//! requests it again, and a new certificate (another serial) is served.
//! Needs root, the built image and `pebble`; skips otherwise, or fails
//! when `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;
mod tls_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api_support::Cred;
use flow_support::{FlowPanel, WAIT};
use keel_panel::queue::cron::Scheduler;
use serde_json::{json, Value};
use tls_support::Pebble;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `curl` of `SCHEME://NAME/` sent to `ip`; over HTTPS trusting `ca` only.
fn curl(scheme: &str, name: &str, ip: &str, ca: Option<&Path>) -> String {
    let port = if scheme == "https" { 443 } else { 80 };
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:{port}:{ip}"));
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd.arg(format!("{scheme}://{name}/")).output().unwrap();
    assert!(out.status.success(), "curl {scheme}://{name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `openssl s_client` sees on `ip:443` for server name `name`: the
/// leaf's serial (`serial=HEX`) and text (`openssl x509 -serial -text`).
fn served_certificate(name: &str, ip: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            r#"openssl s_client -connect "$1:443" -servername "$2" </dev/null 2>/dev/null \
               | openssl x509 -noout -serial -text"#,
        )
        .arg("sh")
        .arg(ip)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl s_client {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The vhost's certificate once `pred` holds for it, as the API shows it.
async fn wait_certificate(
    f: &FlowPanel,
    cred: &Cred,
    pebble: &Pebble,
    id: i64,
    vhost: i64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = f
            .panel
            .call(
                "GET",
                &format!("/api/v1/services/{id}/vhosts/{vhost}/certificate"),
                cred,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        if pred(&r.json["certificate"]) {
            return r.json["certificate"].clone();
        }
        if Instant::now() > deadline {
            let jobs = f
                .panel
                .call("GET", &format!("/api/v1/services/{id}"), cred, None)
                .await
                .json["jobs"]
                .clone();
            panic!(
                "the certificate is not {what} after {WAIT:?}: {}\njobs: {jobs}\npebble: {}",
                r.json,
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificate_is_issued_installed_served_and_renewed() {
    if !e2e_support::can_run_nspawn() || !tls_support::can_run_pebble() {
        return;
    }
    let vhosts = repo().join("playbooks/vhosts.yml");
    let challenge = repo().join("playbooks/acme-challenge.yml");
    // Pebble needs the container's address before the panel starts; the
    // pool's first address is 10.233.SUBNET.10.
    let subnet = 43;
    let pebble = Pebble::start(&format!("10.233.{subnet}.10"));
    let (directory, ca_file) = (pebble.directory_url(), pebble.ca_file());
    let mut f = FlowPanel::start_with(subnet, 1, move |c| {
        c.sites.vhosts_playbook = vhosts;
        c.acme.directory_url = directory;
        c.acme.ca_file = ca_file.display().to_string();
        c.acme.challenge_playbook = challenge;
    })
    .await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let ip = detail["ipv4"].as_str().unwrap().to_string();
    assert_eq!(ip, format!("10.233.{subnet}.10"));
    let root = f.driver.root_dir(&f.prov.vm_name(id));
    f.use_local_repo(id);

    // A vhost with two aliases: each name gets its page over HTTP.
    let names = ["www.tls43.example", "tls43.example", "shop43.example"];
    let vhost = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &f.owner,
            Some(json!({"name": names[0], "aliases": [names[1], names[2]]})),
        )
        .await;
    assert_eq!(vhost.status, 201, "{}", vhost.json);
    let vid = vhost.json["id"].as_i64().unwrap();
    let deadline = Instant::now() + WAIT;
    while !root
        .join("etc/apache2/sites-enabled/keel-www.tls43.example.conf")
        .exists()
        || !curl("http", names[2], &ip, None).contains("<h1>www.tls43.example</h1>")
    {
        assert!(Instant::now() < deadline, "the vhost is not served");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in names {
        assert!(
            curl("http", n, &ip, None).contains("<h1>www.tls43.example</h1>"),
            "{n}"
        );
    }

    // The certificate, ordered from Pebble.
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts/{vid}/certificate/acme"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json["certificate"]["state"], "requested");
    let cert = wait_certificate(&f, &f.owner, &pebble, id, vid, "installed", |c| {
        c["state"] == "installed"
    })
    .await;
    let mut got: Vec<&str> = cert["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    got.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(got, want, "{cert}");
    assert!(
        cert["issuer"].as_str().unwrap().contains("Pebble"),
        "{cert}"
    );
    let not_after = cert["not_after"].as_i64().unwrap();
    let first_serial = cert["serial"].as_str().unwrap().to_string();
    assert_eq!(cert["source"], "acme");
    assert_eq!(cert["error"], Value::Null);

    // Served: openssl sees the names and Pebble's issuer, for each name.
    for n in names {
        let text = served_certificate(n, &ip);
        assert!(
            text.contains("Issuer: CN = Pebble Intermediate CA"),
            "{n}: {text}"
        );
        for m in names {
            assert!(
                text.contains(&format!("DNS:{m}")),
                "{n}: {m} missing in {text}"
            );
        }
    }
    // And verified: curl trusting Pebble's root alone gets each page.
    let dir = tempfile::tempdir().unwrap();
    let pebble_root = dir.path().join("pebble-root.pem");
    std::fs::write(&pebble_root, pebble.root_pem().await).unwrap();
    for n in names {
        let page = curl("https", n, &ip, Some(&pebble_root));
        assert!(page.contains("<h1>www.tls43.example</h1>"), "{n}: {page}");
    }
    // The key is root's alone on the server.
    let key = root.join("etc/keel/tls/www.tls43.example.key");
    let meta = std::fs::metadata(&key).unwrap();
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.contains("PRIVATE KEY"));
    // The key is nowhere in the panel once installed: not in the row, not
    // in a job log, not in the audit log.
    let body = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let secret = &body[..40.min(body.len())];
    {
        let mut rc = f.panel.db().read().await.unwrap();
        let mut conn = rc.conn();
        let pending = keel_panel::scalar!(
            &mut conn,
            Option<String>,
            "SELECT pending_key FROM certificates WHERE vhost_id = $1",
            vid
        )
        .unwrap()
        .flatten();
        assert_eq!(pending, None);
        let logs = keel_panel::scalar!(
            &mut conn,
            i64,
            "SELECT COUNT(*) FROM job_log WHERE line LIKE $1",
            format!("%{secret}%")
        )
        .unwrap()
        .unwrap_or(0);
        assert_eq!(logs, 0, "the key is in a job log");
        let audit = keel_panel::scalar!(
            &mut conn,
            i64,
            "SELECT COUNT(*) FROM audit_log WHERE after_json LIKE $1 OR before_json LIKE $1",
            format!("%{secret}%")
        )
        .unwrap()
        .unwrap_or(0);
        assert_eq!(audit, 0, "the key is in the audit log");
    }

    // The server page shows it, with its expiry.
    let session = api_support::session_of(&f.panel.login("owner", "owner-password").await);
    let page = f
        .panel
        .call("GET", &format!("/servers/{id}"), &session, None)
        .await;
    let html = page.json.as_str().unwrap_or_default().to_string();
    let expiry = chrono::DateTime::from_timestamp_millis(not_after)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        html.contains(r#"<tr data-certificate="www.tls43.example">"#)
            && html.contains("acme, installed")
            && html.contains("Pebble Intermediate CA")
            && html.contains(&expiry),
        "{html}"
    );

    // Renewal, driven by the panel's clock: 29 days before the expiry the
    // periodic job finds it due and the certificate job replaces it.
    let schedule =
        keel_panel::services::certificates::renewal_schedule(&f.panel.state.config.acme).unwrap();
    let scheduler = Scheduler::new(f.panel.db().store().clone(), vec![schedule]);
    // The first tick only anchors an interval schedule at the clock's now.
    scheduler.tick().await.unwrap();
    let certificate_jobs = jobs_of(&f, "certificate").await.len();
    f.panel.clock.advance(Duration::from_secs(86_400));
    assert!(!scheduler.tick().await.unwrap().is_empty());
    // Not due yet: the renewal job runs and requests nothing.
    wait_jobs_done(&f, "certificate_renewal", 1).await;
    assert_eq!(jobs_of(&f, "certificate").await.len(), certificate_jobs);
    assert_eq!(
        wait_certificate(&f, &f.owner, &pebble, id, vid, "installed", |c| c["state"]
            == "installed")
        .await["serial"],
        first_serial.as_str()
    );
    f.panel.clock.set(not_after - 29 * 86_400 * 1000);
    // Years later every token has expired: a new platform admin's.
    let (_, late) = f.panel.user("late-admin", true).await;
    let late = Cred::Bearer(late);
    assert!(!scheduler.tick().await.unwrap().is_empty());
    wait_jobs_done(&f, "certificate_renewal", 2).await;
    let renewed = wait_certificate(&f, &late, &pebble, id, vid, "renewed", |c| {
        c["state"] == "installed" && c["serial"] != first_serial.as_str()
    })
    .await;
    assert!(renewed["issuer"].as_str().unwrap().contains("Pebble"));
    let text = served_certificate(names[1], &ip);
    let hex = |s: &str| s.to_ascii_lowercase().trim_start_matches('0').to_string();
    let served_serial = text
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .unwrap_or_default();
    assert_eq!(
        hex(served_serial),
        hex(renewed["serial"].as_str().unwrap()),
        "{text}"
    );
    // Audited: the request, two issues and two installations, and the
    // renewal that found it due.
    let audit = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=vhost&object_id={vid}&limit=200"),
            &late,
            None,
        )
        .await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for (action, n) in [
        ("certificate.request", 1),
        ("certificate.issued", 2),
        ("certificate.installed", 2),
        ("certificate.renewal_due", 1),
    ] {
        assert_eq!(
            actions.iter().filter(|a| **a == action).count(),
            n,
            "{action}: {actions:?}"
        );
    }
}

/// Every job of `kind`.
async fn jobs_of(f: &FlowPanel, kind: &str) -> Vec<keel_panel::queue::Job> {
    f.panel
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            kind: Some(kind.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Waits until `n` jobs of `kind` exist and all have succeeded.
async fn wait_jobs_done(f: &FlowPanel, kind: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = jobs_of(f, kind).await;
        if jobs.len() >= n && jobs.iter().all(|j| j.state.as_str() == "succeeded") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} jobs: {:?}",
            jobs.iter()
                .map(|j| (j.id, j.state.as_str(), j.last_error.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
