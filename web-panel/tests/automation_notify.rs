//! Notifications of playbook runs, on both backends: a real SMTP server
//! (aiosmtpd, installed by this test into a venv under /tmp when missing,
//! writing a maildir) and a local HTTP receiver that refuses the first
//! delivery. A run on a real sshd test host succeeds; then the host's sshd
//! is stopped and the next run fails with the host unreachable: the
//! failure target gets an e-mail and a signed webhook for the failure and
//! for the dead node, and the refused webhook is delivered on the queue's
//! retry.
//!
//! STARTTLS: an SMTP server that requires it, with a certificate from a
//! test CA: the target that trusts that CA delivers, one that does not
//! gets no mail through (the certificate is checked).
//!
//! Dead nodes: a template that waits ten minutes before calling a host
//! dead; one of two hosts is stopped between runs; runs within the ten
//! minutes report the failure only, the first run past them raises one
//! dead-node notification naming that host alone, and later runs of the
//! same outage do not repeat it.

mod api_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api_support::{start, Backend, Cred, Panel};
use axum::http::HeaderMap;
use keel_panel::automation::{self, Automation};
use keel_panel::provision::Provisioner;
use keel_panel::queue::worker::{Registry, Worker, WorkerConfig};
use keel_testhosts::TestHosts;
use serde_json::{json, Value};

const VENV: &str = "/tmp/keel-aiosmtpd-venv";

/// A Python venv with aiosmtpd, made once per machine.
fn aiosmtpd() -> PathBuf {
    let py = Path::new(VENV).join("bin/python");
    // The SQLite and PostgreSQL runs start at once on a fresh machine: one
    // builds the venv while the other waits.
    let lock = std::fs::File::create(format!("{VENV}.lock")).unwrap();
    lock.lock().unwrap();
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&py) {
        let st = Command::new("python3")
            .args(["-m", "venv", VENV])
            .status()
            .unwrap();
        assert!(st.success(), "python3 -m venv");
        let st = Command::new(Path::new(VENV).join("bin/pip"))
            .args(["install", "-q", "aiosmtpd"])
            .status()
            .unwrap();
        assert!(st.success(), "pip install aiosmtpd");
    }
    py
}

struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_smtp() -> Smtp {
    start_smtp_with(&[])
}

/// aiosmtpd with extra options (`--tlscert`/`--tlskey`: STARTTLS, required).
fn start_smtp_with(extra: &[&str]) -> Smtp {
    let py = aiosmtpd();
    let maildir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(py)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(extra)
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("mail"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Smtp {
        child,
        port,
        maildir,
    }
}

impl Smtp {
    /// Every message received, as text.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(d) = std::fs::read_dir(self.maildir.path().join("mail").join(sub)) {
                for e in d.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap());
                }
            }
        }
        out
    }
}

/// What the webhook receiver saw: (signature, event, body).
type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A local HTTP receiver; with `refuse_first` it answers 500 to the very
/// first POST.
async fn start_receiver(refuse_first: bool) -> (String, Seen) {
    let seen: Seen = Default::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                let calls = calls.clone();
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 && refuse_first
                    {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    seen.lock().unwrap().push((
                        h("x-keel-signature"),
                        h("x-keel-event"),
                        body.to_vec(),
                    ));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn worker(p: &Panel) -> Worker {
    let prov = Provisioner::new(p.db().clone(), None, &p.state.config).unwrap();
    let a = Automation::new(Arc::new(prov)).unwrap();
    let mut reg = Registry::new();
    automation::register(&mut reg, Arc::new(a));
    Worker::new(p.db().store().clone(), reg, WorkerConfig::default())
}

async fn ok(p: &Panel, method: &str, path: &str, c: &Cred, body: Option<Value>) -> Value {
    let r = p.call(method, path, c, body).await;
    assert!(
        r.status.is_success(),
        "{method} {path}: {} {}",
        r.status,
        r.json
    );
    r.json
}

async fn failures_notify(backend: Backend) {
    let hosts = TestHosts::start(1).expect("sshd test host");
    let smtp = start_smtp();
    let (hook, seen) = start_receiver(true).await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    let (_, token) = panel.user("ops", true).await;
    let admin = Cred::Bearer(token);
    let w = worker(&panel);

    let project_dir = tempfile::tempdir().unwrap();
    let h = &hosts.hosts[0];
    std::fs::write(
        project_dir.path().join("hosts.ini"),
        format!(
            "{} ansible_host={} ansible_port={} ansible_user=root ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            hosts.client_key.display(),
            hosts.known_hosts.display()
        ),
    )
    .unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../playbooks/builtin/node_liveness.yml"
        ),
        project_dir.path().join("liveness.yml"),
    )
    .unwrap();
    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "ops", "kind": "directory", "path": project_dir.path()})),
    )
    .await;
    let inv = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "ops", "kind": "project_file", "project_id": project["id"], "path": "hosts.ini"})),
    )
    .await;
    let mail = ok(
        &panel,
        "POST",
        "/api/v1/notification-targets",
        &admin,
        Some(json!({"name": "oncall mail", "kind": "email", "address": "oncall@example.org",
                    "smtp_server": format!("127.0.0.1:{}", smtp.port), "sender": "keel@example.org"})),
    )
    .await;
    let hook_key = "hook-key-1234";
    let hook_t = ok(
        &panel,
        "POST",
        "/api/v1/notification-targets",
        &admin,
        Some(
            json!({"name": "oncall hook", "kind": "webhook", "address": hook, "secret": hook_key}),
        ),
    )
    .await;
    assert!(!hook_t.to_string().contains(hook_key), "{hook_t}");
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({"name": "liveness", "project_id": project["id"], "playbook": "liveness.yml",
                    "inventory_id": inv["id"],
                    "notifications": [
                        {"target_id": mail["id"], "on_success": false, "on_failure": true, "on_drift": false},
                        {"target_id": hook_t["id"], "on_success": false, "on_failure": true, "on_drift": false}
                    ]})),
    )
    .await;
    let launch = format!("/api/v1/templates/{}/launch", tpl["id"]);

    // While the host answers: a successful run, nobody is told.
    let run1 = ok(&panel, "POST", &launch, &admin, None).await;
    w.run_until_idle().await.unwrap();
    let d1 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run1["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(d1["status"], "successful", "{d1}");
    assert!(smtp.messages().is_empty());

    // The host stops answering: the run fails, the host is a dead node.
    let st = Command::new("kill")
        .arg(h.pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((h.addr.as_str(), h.port)).is_ok() {
        assert!(Instant::now() < deadline, "sshd still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run2 = ok(&panel, "POST", &launch, &admin, None).await;
    w.run_until_idle().await.unwrap();
    let d2 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run2["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(d2["status"], "failed", "{d2}");
    assert_eq!(d2["hosts"][0]["unreachable"], 1, "{d2}");
    // The first webhook delivery was refused: it waits for its retry.
    panel.clock.advance(Duration::from_secs(30));
    w.run_until_idle().await.unwrap();
    panel.clock.advance(Duration::from_secs(30));
    w.run_until_idle().await.unwrap();

    // E-mail: one per event, with the run's facts.
    // Quoted-printable bodies: soft line breaks and "=3D" undone.
    let mut msgs: Vec<String> = smtp
        .messages()
        .into_iter()
        .map(|m| m.replace("=\n", "").replace("=3D", "="))
        .collect();
    msgs.sort();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let failure = msgs
        .iter()
        .find(|m| m.contains("Subject: [keel] liveness: failure"))
        .expect("failure mail");
    let dead = msgs
        .iter()
        .find(|m| m.contains("Subject: [keel] liveness: dead_nodes"))
        .expect("dead-node mail");
    for m in [failure, dead] {
        assert!(m.contains("To: oncall@example.org"), "{m}");
        assert!(m.contains(&format!("Run: {} (failed)", run2["id"])), "{m}");
        assert!(
            m.contains("PLAY RECAP") && m.contains("unreachable=1"),
            "{m}"
        );
    }
    assert!(
        dead.contains(&format!("Hosts not answering: {}", h.name)),
        "{dead}"
    );

    // Webhooks: both events, each body signed with the target's key.
    let got = seen.lock().unwrap().clone();
    let mut events: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
    events.sort();
    assert_eq!(events, ["dead_nodes", "failure"], "{got:?}");
    for (sig, event, body) in &got {
        assert_eq!(
            sig,
            &keel_panel::automation::notify::signature(hook_key.as_bytes(), body)
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["run"]["status"].as_str()),
            (Some(event.as_str()), Some("failed"))
        );
        assert_eq!(v["dead_hosts"], json!([h.name]));
    }
    // The refused delivery is in the job history as a retried attempt.
    let mut rc = panel.db().read().await.unwrap();
    let attempts: Vec<(i64,)> = keel_panel::fetch_all!(
        &mut rc.conn(),
        (i64,),
        "SELECT attempts FROM jobs WHERE kind = 'notify' AND state = 'succeeded' ORDER BY attempts DESC"
    )
    .unwrap();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert_eq!(
        attempts[0].0, 2,
        "one delivery needed a retry: {attempts:?}"
    );
}

both_backends!(failed_runs_notify, failures_notify);

/// Kills one test host's sshd and waits until it no longer answers.
fn stop_host(h: &keel_testhosts::TestHost) {
    let st = Command::new("kill")
        .arg(h.pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((h.addr.as_str(), h.port)).is_ok() {
        assert!(Instant::now() < deadline, "sshd still answers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn dead_node_after_threshold(backend: Backend) {
    let hosts = TestHosts::start(2).expect("sshd test hosts");
    let (hook, seen) = start_receiver(false).await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    let (_, token) = panel.user("ops", true).await;
    let admin = Cred::Bearer(token);
    let w = worker(&panel);

    // The seeded node-liveness template waits ten minutes too, disabled.
    let added = keel_panel::automation::builtin::seed(
        panel.db(),
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../playbooks")),
    )
    .await
    .unwrap();
    assert_eq!(added, 3);
    let seeded = ok(&panel, "GET", "/api/v1/templates", &admin, None).await;
    let liveness = seeded
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["builtin"] == "node_liveness")
        .expect("the node-liveness template is seeded");
    assert_eq!(
        (&liveness["dead_after_secs"], &liveness["enabled"]),
        (&json!(600), &json!(false))
    );

    let project_dir = tempfile::tempdir().unwrap();
    let mut inv = String::new();
    for h in &hosts.hosts {
        inv.push_str(&format!(
            "{} ansible_host={} ansible_port={} ansible_user=root ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            hosts.client_key.display(),
            hosts.known_hosts.display()
        ));
    }
    std::fs::write(project_dir.path().join("hosts.ini"), inv).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../playbooks/builtin/node_liveness.yml"
        ),
        project_dir.path().join("liveness.yml"),
    )
    .unwrap();
    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "ops", "kind": "directory", "path": project_dir.path()})),
    )
    .await;
    let inv = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "ops", "kind": "project_file", "project_id": project["id"], "path": "hosts.ini"})),
    )
    .await;
    let target = ok(
        &panel,
        "POST",
        "/api/v1/notification-targets",
        &admin,
        Some(json!({"name": "oncall hook", "kind": "webhook", "address": hook, "secret": "k-1"})),
    )
    .await;
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({"name": "liveness", "project_id": project["id"], "playbook": "liveness.yml",
                    "inventory_id": inv["id"], "dead_after_secs": 600,
                    "notifications": [
                        {"target_id": target["id"], "on_success": false, "on_failure": true, "on_drift": false}
                    ]})),
    )
    .await;
    assert_eq!(tpl["dead_after_secs"], 600, "{tpl}");
    let r = panel
        .call(
            "POST",
            "/api/v1/templates",
            &admin,
            Some(
                json!({"name": "bad", "project_id": project["id"], "playbook": "liveness.yml",
                        "inventory_id": inv["id"], "dead_after_secs": -1}),
            ),
        )
        .await;
    assert_eq!(r.json["field"], "dead_after_secs", "{}", r.json);
    let launch = format!("/api/v1/templates/{}/launch", tpl["id"]);
    let run = |label: &'static str| {
        let (panel, admin, launch, w) = (&panel, &admin, &launch, &w);
        async move {
            let r = ok(panel, "POST", launch, admin, None).await;
            w.run_until_idle().await.unwrap();
            let d = ok(
                panel,
                "GET",
                &format!("/api/v1/runs/{}", r["id"]),
                admin,
                None,
            )
            .await;
            eprintln!("{label}: run {} {}", d["id"], d["status"]);
            d
        }
    };
    // (run id, event) of every webhook received so far.
    let events = || -> Vec<(i64, String, Value)> {
        let mut out: Vec<(i64, String, Value)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, event, body)| {
                let v: Value = serde_json::from_slice(body).unwrap();
                (v["run"]["id"].as_i64().unwrap(), event.clone(), v)
            })
            .collect();
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    };

    // Both hosts answer: nothing to tell.
    let d1 = run("both up").await;
    assert_eq!(d1["status"], "successful", "{d1}");

    // The second host stops. Within the ten minutes its runs fail (the
    // failure targets hear that) but it is not a dead node yet.
    let down = &hosts.hosts[1];
    stop_host(down);
    let d2 = run("just stopped").await;
    assert_eq!(d2["status"], "failed", "{d2}");
    let unreachable: Vec<(&str, i64)> = d2["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap(),
                h["unreachable"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        unreachable,
        [(hosts.hosts[0].name.as_str(), 0), (down.name.as_str(), 1)]
    );
    panel.clock.advance(Duration::from_secs(300));
    let d3 = run("five minutes down").await;
    assert_eq!(d3["status"], "failed", "{d3}");
    let got: Vec<(i64, String)> = events().into_iter().map(|e| (e.0, e.1)).collect();
    let id = |d: &Value| d["id"].as_i64().unwrap();
    assert_eq!(
        got,
        [
            (id(&d2), "failure".to_string()),
            (id(&d3), "failure".to_string())
        ]
    );

    // Past ten minutes: this run reports the dead node, naming only it.
    panel.clock.advance(Duration::from_secs(360));
    let d4 = run("eleven minutes down").await;
    let dead: Vec<Value> = events()
        .into_iter()
        .filter(|e| e.1 == "dead_nodes")
        .map(|e| e.2)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["run"]["id"], d4["id"]);
    assert_eq!(
        dead[0]["dead_nodes"].as_array().unwrap().len(),
        1,
        "{}",
        dead[0]
    );
    assert_eq!(dead[0]["dead_nodes"][0]["host"], down.name.as_str());
    assert_eq!(
        dead[0]["dead_nodes"][0]["unreachable_since"].as_i64(),
        d2["finished_at"].as_i64(),
        "the outage began with the first run that could not reach it"
    );

    // The outage goes on: failures, but no second dead-node alarm.
    panel.clock.advance(Duration::from_secs(300));
    let d5 = run("still down").await;
    let got: Vec<(i64, String)> = events().into_iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(
        got,
        [
            (id(&d2), "failure".to_string()),
            (id(&d3), "failure".to_string()),
            (id(&d4), "dead_nodes".to_string()),
            (id(&d4), "failure".to_string()),
            (id(&d5), "failure".to_string()),
        ]
    );
}

both_backends!(
    stopped_host_raises_dead_node_once,
    dead_node_after_threshold
);

/// A test CA and a server certificate for 127.0.0.1 it signed, made with
/// openssl: (dir, CA PEM path, server cert path, server key path).
fn test_ca() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let script = "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=keel-test-ca -keyout ca.key -out ca.pem
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out cert.pem";
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = dir.path().to_path_buf();
    (dir, p.join("ca.pem"), p.join("cert.pem"), p.join("key.pem"))
}

async fn starttls_mail(backend: Backend) {
    let hosts = TestHosts::start(1).expect("sshd test host");
    let (_ca_dir, ca, cert, key) = test_ca();
    let smtp = start_smtp_with(&[
        "--tlscert",
        cert.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    let (_, token) = panel.user("ops", true).await;
    let admin = Cred::Bearer(token);
    let w = worker(&panel);

    let project_dir = tempfile::tempdir().unwrap();
    let h = &hosts.hosts[0];
    std::fs::write(
        project_dir.path().join("hosts.ini"),
        format!(
            "{} ansible_host={} ansible_port={} ansible_user=root ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            hosts.client_key.display(),
            hosts.known_hosts.display()
        ),
    )
    .unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../playbooks/builtin/node_liveness.yml"
        ),
        project_dir.path().join("liveness.yml"),
    )
    .unwrap();
    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "ops", "kind": "directory", "path": project_dir.path()})),
    )
    .await;
    let inv = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "ops", "kind": "project_file", "project_id": project["id"], "path": "hosts.ini"})),
    )
    .await;
    let server = format!("127.0.0.1:{}", smtp.port);
    let r = panel
        .call(
            "POST",
            "/api/v1/notification-targets",
            &admin,
            Some(json!({"name": "bad ca", "kind": "email", "address": "x@example.org",
                        "smtp_server": server, "smtp_tls": "starttls", "smtp_ca": "not a certificate"})),
        )
        .await;
    assert_eq!(r.json["field"], "smtp_ca", "{}", r.json);
    let trusted = ok(
        &panel,
        "POST",
        "/api/v1/notification-targets",
        &admin,
        Some(
            json!({"name": "tls mail", "kind": "email", "address": "tls@example.org",
                    "smtp_server": server, "sender": "keel@example.org", "smtp_tls": "starttls",
                    "smtp_ca": std::fs::read_to_string(&ca).unwrap()}),
        ),
    )
    .await;
    assert_eq!(trusted["smtp_tls"], "starttls", "{trusted}");
    let untrusted = ok(
        &panel,
        "POST",
        "/api/v1/notification-targets",
        &admin,
        Some(
            json!({"name": "no ca", "kind": "email", "address": "nope@example.org",
                    "smtp_server": server, "smtp_tls": "starttls"}),
        ),
    )
    .await;
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({"name": "liveness", "project_id": project["id"], "playbook": "liveness.yml",
                    "inventory_id": inv["id"],
                    "notifications": [
                        {"target_id": trusted["id"], "on_success": true, "on_failure": false, "on_drift": false},
                        {"target_id": untrusted["id"], "on_success": true, "on_failure": false, "on_drift": false}
                    ]})),
    )
    .await;
    let run = ok(
        &panel,
        "POST",
        &format!("/api/v1/templates/{}/launch", tpl["id"]),
        &admin,
        None,
    )
    .await;
    w.run_until_idle().await.unwrap();
    let d = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(d["status"], "successful", "{d}");

    // The server refuses mail before STARTTLS, so a delivered message went
    // over TLS; only the target that trusts the test CA got one through.
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("To: tls@example.org"), "{}", msgs[0]);
    assert!(
        msgs[0].contains("Subject: [keel] liveness: success"),
        "{}",
        msgs[0]
    );
    let mut rc = panel.db().read().await.unwrap();
    let pending: Vec<(String, Option<String>)> = keel_panel::fetch_all!(
        &mut rc.conn(),
        (String, Option<String>),
        "SELECT state, last_error FROM jobs WHERE kind = 'notify' AND state <> 'succeeded'"
    )
    .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let error = pending[0].1.clone().unwrap_or_default();
    assert!(
        error.contains("SMTP") && error.to_lowercase().contains("certificate"),
        "{pending:?}"
    );
}

both_backends!(starttls_delivers_to_trusted_servers_only, starttls_mail);
