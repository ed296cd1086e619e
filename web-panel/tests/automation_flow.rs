//! Playbook runs end to end, on both backends, through the HTTP API: a git
//! repository the test creates is a project; a template with an SSH-key
//! and a vault credential and a survey runs it against real sshd test hosts
//! (`tests/hosts`) with the panel's own queue worker. Checked: the run's
//! revision is pinned and a new commit changes the next run's; survey
//! answers reach the play as variables and a bad answer is a field error;
//! a vaulted variable decrypts with the vault credential; a failed host can
//! be relaunched alone; and neither the vault password, the decrypted
//! secret nor the private key appears in any job log line, audit row, job
//! row, run row or API response.

mod api_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use api_support::{start, Backend, Cred, Panel};
use keel_panel::automation::{self, Automation};
use keel_panel::provision::Provisioner;
use keel_panel::queue::worker::{Registry, Worker, WorkerConfig};
use keel_testhosts::TestHosts;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Keel Test",
            "-c",
            "user.email=test@keel.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const PLAYBOOK: &str = r#"- name: Greet
  hosts: web
  gather_facts: false
  tasks:
    - name: Write the greeting
      copy:
        content: "{{ greeting }} {{ secret_word }} {{ marker }}\n"
        dest: /tmp/keel-run.txt
    - name: Fail where asked
      fail:
        msg: asked to fail
      when: fail_host | default('') == inventory_hostname
"#;

/// The panel's worker for automation jobs, driven step by step.
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

/// Every text the panel keeps or shows about the runs: job log lines,
/// audit rows, job rows (payloads, errors), run rows, and API answers.
async fn everything_said(p: &Panel, c: &Cred, runs: &[i64]) -> String {
    let db = p.db();
    let mut rc = db.read().await.unwrap();
    let mut conn = rc.conn();
    let mut text = String::new();
    macro_rules! dump {
        ($sql:expr) => {{
            let rows: Vec<(String,)> = keel_panel::fetch_all!(&mut conn, (String,), $sql).unwrap();
            for r in rows {
                text.push_str(&r.0);
                text.push('\n');
            }
        }};
    }
    dump!("SELECT CAST(line AS TEXT) FROM job_log");
    dump!("SELECT COALESCE(before_json, '') || COALESCE(after_json, '') FROM audit_log");
    dump!("SELECT CAST(payload AS TEXT) || COALESCE(last_error, '') FROM jobs");
    dump!(
        "SELECT COALESCE(recap, '') || COALESCE(error, '') || extra_vars || COALESCE(limit_hosts, '') FROM template_runs"
    );
    dump!("SELECT name || COALESCE(username, '') || sealed FROM credentials");
    drop(rc);
    for path in [
        "/api/v1/runs",
        "/api/v1/credentials",
        "/api/v1/templates",
        "/api/v1/admin/audit?limit=500",
    ] {
        text.push_str(&p.call("GET", path, c, None).await.json.to_string());
    }
    for r in runs {
        for path in [
            format!("/api/v1/runs/{r}"),
            format!("/api/v1/runs/{r}/log?limit=1000"),
        ] {
            text.push_str(&p.call("GET", &path, c, None).await.json.to_string());
        }
    }
    text
}

async fn git_project_run(backend: Backend) {
    let hosts = TestHosts::start(2).expect("sshd test hosts");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    let (_, token) = panel.user("runner", true).await;
    let admin = Cred::Bearer(token);
    let w = worker(&panel);

    // The repository: playbook, inventory of the test hosts, a vaulted var.
    let repo = tempfile::tempdir().unwrap();
    let rp = repo.path();
    git(rp, &["init", "--quiet", "-b", "main"]);
    let secret_word = format!("word-{:08x}", fastrand::u32(..));
    let vault_password = format!("vault-pw-{:08x}", fastrand::u32(..));
    let sealed = keel::vault::seal(secret_word.as_bytes(), vault_password.as_bytes(), None);
    let indented: String = sealed.lines().map(|l| format!("  {l}\n")).collect();
    write(rp, "site.yml", PLAYBOOK);
    write(
        rp,
        "group_vars/web.yml",
        &format!("secret_word: !vault |\n{indented}marker: one\n"),
    );
    let mut inv = String::from("[web]\n");
    for h in &hosts.hosts {
        inv.push_str(&format!(
            "{} ansible_host={} ansible_port={} ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            hosts.known_hosts.display()
        ));
    }
    write(rp, "inventory.ini", &inv);
    git(rp, &["add", "-A"]);
    git(rp, &["commit", "--quiet", "-m", "first"]);
    let first = git(rp, &["rev-parse", "HEAD"]);

    // Credentials: the secrets go in and never come back.
    let key_text = std::fs::read_to_string(&hosts.keys.ed25519).unwrap();
    let key = ok(
        &panel,
        "POST",
        "/api/v1/credentials",
        &admin,
        Some(json!({"name": "test hosts", "kind": "ssh_key", "username": "root", "secret": key_text})),
    )
    .await;
    assert!(key.get("secret").is_none(), "{key}");
    let vault = ok(
        &panel,
        "POST",
        "/api/v1/credentials",
        &admin,
        Some(json!({"name": "vault", "kind": "vault_password", "secret": vault_password})),
    )
    .await;
    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "greet", "kind": "git", "git_url": rp.display().to_string(), "git_ref": "main"})),
    )
    .await;
    // A URL git would read as an option is refused when saved.
    let r = panel
        .call(
            "POST",
            "/api/v1/projects",
            &admin,
            Some(json!({"name": "evil", "kind": "git", "git_url": "--upload-pack=touch /tmp/x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("git_url"))
    );
    let inventory = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "test hosts", "kind": "project_file", "project_id": project["id"], "path": "inventory.ini"})),
    )
    .await;
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({
            "name": "greet",
            "project_id": project["id"],
            "playbook": "site.yml",
            "inventory_id": inventory["id"],
            "credentials": [key["id"], vault["id"]],
            "forks": 2,
            "survey": [
                {"variable": "greeting", "type": "text", "required": true, "max": 20},
                {"variable": "count", "type": "integer", "min": 1, "max": 3},
                {"variable": "fail_host", "type": "text"}
            ]
        })),
    )
    .await;
    let launch = format!("/api/v1/templates/{}/launch", tpl["id"]);

    // A bad answer is a field error, and nothing is queued.
    let r = panel
        .call(
            "POST",
            &launch,
            &admin,
            Some(json!({"answers": {"greeting": "hi", "count": 9}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert_eq!(r.json["field"], "survey.count");
    let r = panel
        .call("POST", &launch, &admin, Some(json!({"answers": {}})))
        .await;
    assert_eq!(r.json["field"], "survey.greeting", "{}", r.json);

    // Run 1: the answer and the decrypted vault value reach the hosts.
    let run1 = ok(
        &panel,
        "POST",
        &launch,
        &admin,
        Some(json!({"answers": {"greeting": "hello"}})),
    )
    .await;
    assert_eq!(run1["status"], "queued");
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
    assert_eq!(d1["revision"], first.as_str());
    let hosts_json = d1["hosts"].as_array().unwrap();
    assert_eq!(hosts_json.len(), 2, "{d1}");
    for h in hosts_json {
        assert_eq!(
            (h["changed"].as_i64(), h["failed"].as_i64()),
            (Some(1), Some(0)),
            "{h}"
        );
    }
    let recap = d1["recap"].as_str().unwrap();
    assert!(
        recap.starts_with("PLAY RECAP")
            && recap.contains(&hosts.hosts[0].name)
            && recap.contains("changed=1"),
        "{recap}"
    );
    for i in 0..2 {
        assert_eq!(
            hosts.sh(i, "cat /tmp/keel-run.txt"),
            format!("hello {secret_word} one\n")
        );
    }

    // A new commit: the next run resolves it; the first keeps its own.
    write(
        rp,
        "group_vars/web.yml",
        &format!("secret_word: !vault |\n{indented}marker: two\n"),
    );
    git(rp, &["commit", "--quiet", "-am", "second"]);
    let second = git(rp, &["rev-parse", "HEAD"]);
    assert_ne!(first, second);
    let run2 = ok(
        &panel,
        "POST",
        &launch,
        &admin,
        Some(json!({"answers": {"greeting": "again", "count": "2"}})),
    )
    .await;
    w.run_until_idle().await.unwrap();
    let d2 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run2["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (d2["status"].as_str(), d2["revision"].as_str()),
        (Some("successful"), Some(second.as_str()))
    );
    assert_eq!(
        hosts.sh(1, "cat /tmp/keel-run.txt"),
        format!("again {secret_word} two\n")
    );
    let d1 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run1["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(d1["revision"], first.as_str());

    // A host fails; relaunching the failed hosts runs on that host alone.
    let run3 = ok(
        &panel,
        "POST",
        &launch,
        &admin,
        Some(json!({"answers": {"greeting": "third", "fail_host": hosts.hosts[1].name}})),
    )
    .await;
    w.run_until_idle().await.unwrap();
    let d3 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run3["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(d3["status"], "failed", "{d3}");
    let failed: Vec<&str> = d3["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["failed"].as_i64() > Some(0))
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [hosts.hosts[1].name.as_str()]);
    let run4 = ok(
        &panel,
        "POST",
        &format!("/api/v1/runs/{}/relaunch?failed_only=true", run3["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (run4["launched_by"].as_str(), run4["limit_hosts"].as_str()),
        (Some("relaunch"), Some(hosts.hosts[1].name.as_str()))
    );
    w.run_until_idle().await.unwrap();
    let d4 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run4["id"]),
        &admin,
        None,
    )
    .await;
    let only: Vec<&str> = d4["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(only, [hosts.hosts[1].name.as_str()], "{d4}");

    // The runs list filters.
    let failed_runs = ok(&panel, "GET", "/api/v1/runs?status=failed", &admin, None).await;
    assert_eq!(failed_runs["total"], 2, "{failed_runs}");
    let relaunched = ok(
        &panel,
        "GET",
        "/api/v1/runs?launched_by=relaunch",
        &admin,
        None,
    )
    .await;
    assert_eq!(relaunched["items"][0]["id"], run4["id"]);

    // The live output is the job log: task banners of the run are there.
    let log = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}/log?limit=1000", run1["id"]),
        &admin,
        None,
    )
    .await;
    let events: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["line"]["event"].as_str())
        .collect();
    assert!(
        events.contains(&"task_start") && events.contains(&"recap"),
        "{events:?}"
    );

    // No secret anywhere the panel keeps or shows.
    let runs: Vec<i64> = [&run1, &run2, &run3, &run4]
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let said = everything_said(&panel, &admin, &runs).await;
    let key_body: String = key_text.lines().nth(1).unwrap().to_string();
    for (what, secret) in [
        ("vault password", vault_password.as_str()),
        ("decrypted value", secret_word.as_str()),
        ("private key", key_body.as_str()),
    ] {
        assert!(!said.contains(secret), "the {what} leaked");
    }
    // The key file of a run lives only while the run does.
    let runs_dir = panel.state.config.data_dir.join("runs");
    let left: Vec<_> = std::fs::read_dir(&runs_dir)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run directories left behind: {left:?}");
}

both_backends!(git_project_run_pins_revisions, git_project_run);
