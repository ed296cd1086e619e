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
        // An answer is text, never a template (AWX marks answers `!unsafe`
        // too): templated, this one would have been written as 42.
        Some(json!({"answers": {"greeting": "{{ 7 * 6 }}", "count": "2"}})),
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
        format!("{{{{ 7 * 6 }}}} {secret_word} two\n")
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

    // A limit that leaves none of the inventory's hosts fails the run
    // before anything runs, with ansible-playbook's message (ansible-core
    // 2.19.14 exits 1 with it, and AWX fails the job).
    let run5 = ok(
        &panel,
        "POST",
        &launch,
        &admin,
        Some(json!({"answers": {"greeting": "fifth"}, "limit": "nomatch"})),
    )
    .await;
    w.run_until_idle().await.unwrap();
    let d5 = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run5["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(d5["status"], "failed", "{d5}");
    let err = d5["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(keel::inventory::NO_HOSTS_TO_TARGET)
            && err.contains("Could not match supplied host pattern, ignoring: nomatch"),
        "{d5}"
    );
    assert_eq!(d5["hosts"].as_array().map_or(0, Vec::len), 0, "{d5}");

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

/// The lines of a run's job log: the engine's events as JSON text, and the
/// handler's messages as they are.
async fn log_text(p: &Panel, c: &Cred, run: &Value) -> String {
    let log = ok(
        p,
        "GET",
        &format!("/api/v1/runs/{}/log?limit=1000", run["id"]),
        c,
        None,
    )
    .await;
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| match l["line"]["message"].as_str() {
            Some(m) => m.to_string(),
            None => l["line"].to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A project's `roles/requirements.yml` and `collections/requirements.yml`
/// (git+file:// repositories the test makes) are installed by the panel
/// once per revision and used by its runs; a new commit that changes them
/// installs again; a requirement that cannot be installed fails the sync
/// and the run, with the installer's words in the answer and the job log.
async fn project_requirements(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    let (_, token) = panel.user("deps", true).await;
    let admin = Cred::Bearer(token);
    let w = worker(&panel);
    let tmp = tempfile::tempdir().unwrap();

    // A role with tags v1.0 and v2.0, and a collection holding a role.
    let role = tmp.path().join("webby");
    write(
        &role,
        "tasks/main.yml",
        "- debug:\n    msg: webby says v1\n",
    );
    write(
        &role,
        "meta/main.yml",
        "galaxy_info:\n  author: t\ndependencies: []\n",
    );
    git(&role, &["init", "--quiet", "-b", "main"]);
    git(&role, &["add", "-A"]);
    git(&role, &["commit", "--quiet", "-m", "v1"]);
    git(&role, &["tag", "v1.0"]);
    write(
        &role,
        "tasks/main.yml",
        "- debug:\n    msg: webby says v2\n",
    );
    git(&role, &["commit", "--quiet", "-am", "v2"]);
    git(&role, &["tag", "v2.0"]);
    let coll = tmp.path().join("tools");
    write(
        &coll,
        "galaxy.yml",
        "namespace: acme\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [t]\n",
    );
    write(&coll, "README.md", "# tools\n");
    write(
        &coll,
        "roles/thing/tasks/main.yml",
        "- debug:\n    msg: thing from the collection\n",
    );
    git(&coll, &["init", "--quiet", "-b", "main"]);
    git(&coll, &["add", "-A"]);
    git(&coll, &["commit", "--quiet", "-m", "1.0.0"]);

    // The project: a play using both, on the controller.
    let rp = tmp.path().join("project");
    std::fs::create_dir_all(&rp).unwrap();
    git(&rp, &["init", "--quiet", "-b", "main"]);
    write(
        &rp,
        "site.yml",
        "- hosts: all\n  gather_facts: false\n  roles:\n    - webby\n  tasks:\n    - import_role:\n        name: acme.tools.thing\n",
    );
    write(&rp, "hosts.ini", "localhost ansible_connection=local\n");
    let role_req = |version: &str, url: &Path| {
        format!(
            "- src: git+file://{}\n  name: webby\n  version: {version}\n",
            url.display()
        )
    };
    write(&rp, "roles/requirements.yml", &role_req("v1.0", &role));
    write(
        &rp,
        "collections/requirements.yml",
        &format!(
            "collections:\n  - name: git+file://{}\n    type: git\n    version: main\n",
            coll.display()
        ),
    );
    git(&rp, &["add", "-A"]);
    git(&rp, &["commit", "--quiet", "-m", "first"]);
    let first = git(&rp, &["rev-parse", "HEAD"]);

    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "deps", "kind": "git", "git_url": rp.display().to_string(), "git_ref": "main"})),
    )
    .await;
    let inventory = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "local", "kind": "project_file", "project_id": project["id"], "path": "hosts.ini"})),
    )
    .await;
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({"name": "deps", "project_id": project["id"], "playbook": "site.yml", "inventory_id": inventory["id"]})),
    )
    .await;
    let launch = format!("/api/v1/templates/{}/launch", tpl["id"]);
    let run = |what: &'static str| {
        let (panel, admin, launch, w) = (&panel, &admin, &launch, &w);
        async move {
            let r = ok(panel, "POST", launch, admin, Some(json!({}))).await;
            w.run_until_idle().await.unwrap();
            let d = ok(
                panel,
                "GET",
                &format!("/api/v1/runs/{}", r["id"]),
                admin,
                None,
            )
            .await;
            let log = log_text(panel, admin, &r).await;
            eprintln!("--- {what}\n{log}");
            (d, log)
        }
    };

    // First run: both installed for this commit, both used.
    let (d1, log1) = run("first run").await;
    assert_eq!(d1["status"], "successful", "{d1}\n{log1}");
    assert!(
        log1.contains("- webby (v1.0) was installed successfully"),
        "{log1}"
    );
    assert!(
        log1.contains("acme.tools:1.0.0 was installed successfully"),
        "{log1}"
    );
    assert!(log1.contains("webby says v1"), "{log1}");
    assert!(log1.contains("thing from the collection"), "{log1}");
    let deps = panel
        .state
        .config
        .data_dir
        .join(format!("projects/{}/deps", project["id"]));
    assert!(deps.join(&first).join(".installed").is_file());
    assert!(deps
        .join(&first)
        .join("roles/webby/tasks/main.yml")
        .is_file());

    // The same commit again: nothing installed a second time.
    let (d2, log2) = run("same commit").await;
    assert_eq!(d2["status"], "successful", "{d2}");
    assert!(log2.contains("already installed"), "{log2}");
    assert!(!log2.contains("was installed successfully"), "{log2}");

    // A commit asking for v2.0: a sync installs it, the run uses it.
    write(&rp, "roles/requirements.yml", &role_req("v2.0", &role));
    git(&rp, &["commit", "--quiet", "-am", "second"]);
    let second = git(&rp, &["rev-parse", "HEAD"]);
    let synced = ok(
        &panel,
        "POST",
        &format!("/api/v1/projects/{}/sync", project["id"]),
        &admin,
        None,
    )
    .await;
    assert_eq!(synced["revision"], second.as_str());
    assert!(deps.join(&second).join(".installed").is_file());
    let (d3, log3) = run("second commit").await;
    assert_eq!(
        (d3["status"].as_str(), d3["revision"].as_str()),
        (Some("successful"), Some(second.as_str())),
        "{log3}"
    );
    assert!(
        log3.contains("webby says v2") && !log3.contains("webby says v1"),
        "{log3}"
    );

    // A role that cannot be fetched: the sync says why, the run fails.
    let missing = tmp.path().join("no-such-role");
    write(&rp, "roles/requirements.yml", &role_req("v1.0", &missing));
    git(&rp, &["commit", "--quiet", "-am", "broken"]);
    let broken = git(&rp, &["rev-parse", "HEAD"]);
    let r = panel
        .call(
            "POST",
            &format!("/api/v1/projects/{}/sync", project["id"]),
            &admin,
            None,
        )
        .await;
    let said = r.json.to_string();
    assert!(!r.status.is_success(), "{said}");
    assert!(
        said.contains("roles/requirements.yml")
            && said.contains("webby was NOT installed successfully")
            && said.contains("no-such-role"),
        "{said}"
    );
    assert!(!deps.join(&broken).exists(), "a failed install is not kept");
    let (d4, log4) = run("broken requirements").await;
    assert_eq!(d4["status"], "failed", "{d4}");
    assert!(
        log4.contains("webby was NOT installed successfully"),
        "{log4}"
    );
    assert!(
        d4["error"].as_str().unwrap_or("").contains("requirements"),
        "{d4}"
    );
    assert!(
        !log4.contains("webby says"),
        "the play did not start: {log4}"
    );
}

both_backends!(
    project_requirements_installed_per_revision,
    project_requirements
);

/// Server tags: a site admin sets them (an outsider cannot, a bad tag is a
/// field error), the server's answer shows them, the dynamic inventory
/// gives them as `keel_tags`, and a panel inventory filtered by a tag runs
/// a template on exactly the servers carrying it.
async fn servers_by_tag(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    api_support::catalog_and_pool(&panel, 10).await;
    let (_, owner_t) = panel.user("owner", false).await;
    let owner = Cred::Bearer(owner_t);
    let (_, other_t) = panel.user("outsider", false).await;
    let outsider = Cred::Bearer(other_t);
    let (_, admin_t) = panel.user("boss", true).await;
    let admin = Cred::Bearer(admin_t);
    let site = ok(
        &panel,
        "POST",
        "/api/v1/sites",
        &owner,
        Some(json!({"name": "main", "owner_email": "o@example.org"})),
    )
    .await["id"]
        .clone();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let s = ok(
            &panel,
            "POST",
            "/api/v1/services",
            &owner,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
        servers.push((
            s["service"]["id"].as_i64().unwrap(),
            s["service"]["hostname"].as_str().unwrap().to_string(),
        ));
    }
    let tags_of = |i: usize| format!("/api/v1/services/{}/tags", servers[i].0);
    for (i, tags) in [
        (0, json!(["web", "eu"])),
        (1, json!(["db"])),
        (2, json!(["web", "web"])),
    ] {
        ok(
            &panel,
            "PUT",
            &tags_of(i),
            &owner,
            Some(json!({ "tags": tags })),
        )
        .await;
    }
    let r = panel
        .call(
            "PUT",
            &tags_of(1),
            &owner,
            Some(json!({"tags": ["Not A Tag"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.json["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("tags")),
        "{}",
        r.json
    );
    let r = panel
        .call(
            "PUT",
            &tags_of(1),
            &outsider,
            Some(json!({"tags": ["mine"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.json);
    assert_eq!(
        ok(&panel, "GET", &tags_of(2), &owner, None).await,
        json!(["web"])
    );
    let detail = ok(
        &panel,
        "GET",
        &format!("/api/v1/services/{}", servers[0].0),
        &owner,
        None,
    )
    .await;
    assert_eq!(detail["tags"], json!(["eu", "web"]), "{detail}");

    // The servers are ready (as if provisioned); the play runs on the
    // controller and says which servers it was given.
    {
        let mut tx = panel.db().begin().await.unwrap();
        keel_panel::execute!(
            &mut keel_panel::db::tx_conn(&mut tx),
            "UPDATE services SET status = 'ready'"
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    let inv = ok(&panel, "GET", "/api/v1/inventory", &admin, None).await;
    assert_eq!(
        inv["_meta"]["hostvars"][&servers[1].1]["keel_tags"],
        json!(["db"]),
        "{inv}"
    );
    let project_dir = tempfile::tempdir().unwrap();
    write(
        project_dir.path(),
        "tags.yml",
        "- hosts: all\n  connection: local\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"{{ keel_hostname }} {{ keel_tags | join(',') }}\"\n",
    );
    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "tags", "kind": "directory", "path": project_dir.path()})),
    )
    .await;
    let r = panel
        .call(
            "POST",
            "/api/v1/inventories",
            &admin,
            Some(json!({"name": "bad", "kind": "panel", "filter_tag": "Web!"})),
        )
        .await;
    assert_eq!(r.json["field"], "filter_tag", "{}", r.json);
    let inventory = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "web servers", "kind": "panel", "filter_tag": "web"})),
    )
    .await;
    assert_eq!(inventory["filter_tag"], "web");
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({"name": "tags", "project_id": project["id"], "playbook": "tags.yml", "inventory_id": inventory["id"]})),
    )
    .await;
    let run = ok(
        &panel,
        "POST",
        &format!("/api/v1/templates/{}/launch", tpl["id"]),
        &admin,
        Some(json!({})),
    )
    .await;
    worker(&panel).run_until_idle().await.unwrap();
    let d = ok(
        &panel,
        "GET",
        &format!("/api/v1/runs/{}", run["id"]),
        &admin,
        None,
    )
    .await;
    let log = log_text(&panel, &admin, &run).await;
    assert_eq!(d["status"], "successful", "{d}\n{log}");
    let mut ran: Vec<&str> = d["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    ran.sort();
    let mut want = vec![servers[0].1.as_str(), servers[2].1.as_str()];
    want.sort();
    assert_eq!(ran, want, "{log}");
    assert!(log.contains(&format!("{} eu,web", servers[0].1)), "{log}");
}

both_backends!(panel_inventory_selects_servers_by_tag, servers_by_tag);

/// A run's output streams: while the run is still `running`, its job log
/// already holds the first task's lines; and the lines keep the engine's
/// order — each task's banner, then one result per host, the next banner
/// only after every host of the task answered (the linear strategy), the
/// recap last — with strictly increasing sequence numbers.
async fn output_streams_in_order(backend: Backend) {
    const HOSTS: usize = 3;
    const TASKS: usize = 3;
    let hosts = TestHosts::start(HOSTS).expect("sshd test hosts");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let panel = start(backend, move |c| c.data_dir = data_dir).await;
    let (_, token) = panel.user("streamer", true).await;
    let admin = Cred::Bearer(token);
    let project_dir = tempfile::tempdir().unwrap();
    let mut play = String::from("- hosts: testhosts\n  gather_facts: false\n  tasks:\n");
    for k in 0..TASKS {
        play.push_str(&format!("    - name: step {k}\n      command: sleep 0.4\n"));
    }
    write(project_dir.path(), "stream.yml", &play);
    write(project_dir.path(), "hosts.ini", &hosts.inventory_ini(""));
    let project = ok(
        &panel,
        "POST",
        "/api/v1/projects",
        &admin,
        Some(json!({"name": "stream", "kind": "directory", "path": project_dir.path()})),
    )
    .await;
    let inventory = ok(
        &panel,
        "POST",
        "/api/v1/inventories",
        &admin,
        Some(json!({"name": "hosts", "kind": "project_file", "project_id": project["id"], "path": "hosts.ini"})),
    )
    .await;
    let tpl = ok(
        &panel,
        "POST",
        "/api/v1/templates",
        &admin,
        Some(json!({"name": "stream", "project_id": project["id"], "playbook": "stream.yml", "inventory_id": inventory["id"], "forks": HOSTS})),
    )
    .await;
    let run = ok(
        &panel,
        "POST",
        &format!("/api/v1/templates/{}/launch", tpl["id"]),
        &admin,
        Some(json!({})),
    )
    .await;
    let w = Arc::new(worker(&panel));
    let job = tokio::spawn({
        let w = w.clone();
        async move { w.run_until_idle().await }
    });
    let log_path = format!("/api/v1/runs/{}/log?limit=1000", run["id"]);
    let mut seen_live = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !job.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the run did not end");
        let page = ok(&panel, "GET", &log_path, &admin, None).await;
        let started = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["line"]["event"] == "task_start");
        if page["status"] == "running" && started {
            seen_live = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    job.await.unwrap().unwrap();
    assert!(seen_live, "no task output was readable while the run ran");

    let page = ok(&panel, "GET", &log_path, &admin, None).await;
    assert_eq!(page["status"], "successful", "{page}");
    let items = page["items"].as_array().unwrap();
    let seqs: Vec<i64> = items.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The engine's run structure, as (event, task name or host).
    let events: Vec<(String, String)> = items
        .iter()
        .filter_map(|l| {
            let line = &l["line"];
            let ev = line["event"].as_str()?;
            let what = match ev {
                "task_start" => line["name"].as_str().unwrap_or("").to_string(),
                "host_result" => line["host"].as_str().unwrap_or("").to_string(),
                _ => String::new(),
            };
            // Messages, warnings and verbose lines are not the structure.
            let structural = [
                "playbook_start",
                "play_start",
                "task_start",
                "host_result",
                "recap",
            ];
            structural.contains(&ev).then(|| (ev.to_string(), what))
        })
        .collect();
    let mut want: Vec<(String, String)> = vec![
        ("playbook_start".into(), String::new()),
        ("play_start".into(), String::new()),
    ];
    let mut names: Vec<String> = hosts.hosts.iter().map(|h| h.name.clone()).collect();
    names.sort();
    for k in 0..TASKS {
        want.push(("task_start".into(), format!("step {k}")));
        for _ in 0..HOSTS {
            want.push(("host_result".into(), "?".into()));
        }
    }
    want.push(("recap".into(), String::new()));
    assert_eq!(events.len(), want.len(), "{events:?}");
    for (i, (got, w)) in events.iter().zip(&want).enumerate() {
        assert_eq!(got.0, w.0, "line {i}: {events:?}");
        if w.0 == "task_start" {
            assert_eq!(got.1, w.1, "line {i}: {events:?}");
        }
    }
    // Every host answered each task once.
    for chunk in events[2..events.len() - 1].chunks(HOSTS + 1) {
        let mut answered: Vec<String> = chunk[1..].iter().map(|e| e.1.clone()).collect();
        answered.sort();
        assert_eq!(answered, names, "{chunk:?}");
    }
}

both_backends!(run_output_streams_in_order, output_streams_in_order);
