//! A git project fetched over SSH with a deploy key, from a real `sshd`
//! test host: the panel never learns the git server's host key on first
//! use. A sync fails (and writes no key anywhere) until the operator puts
//! the server's key line in `<data_dir>/git_known_hosts`; a wrong key there
//! fails it too; the right one lets it fetch the pushed commit.

mod api_support;

use std::path::Path;
use std::process::Command;

use api_support::{start, Backend, Cred};
use keel_testhosts::TestHosts;
use serde_json::json;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every file under `dir` whose text holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_holding(&p, needle));
        } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle)) {
            hits.push(p.display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_key_fetch_needs_a_known_host_key() {
    let hosts = TestHosts::start(1).expect("sshd test hosts");
    let h = &hosts.hosts[0];
    let key = hosts.keys.ed25519.display().to_string();
    // The operator's own ssh, which knows the host: make the repository.
    let ssh_cmd = format!(
        "ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
        hosts.known_hosts.display()
    );
    let home = run(Command::new("sh").arg("-c").arg(format!(
        "{ssh_cmd} -p {} keeltest@{} 'git init --quiet --bare -b main repo.git && pwd'",
        h.port, h.addr
    )));
    let url = format!("ssh://keeltest@{}:{}{home}/repo.git", h.addr, h.port);
    let work = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .current_dir(work.path())
            .env("GIT_SSH_COMMAND", &ssh_cmd)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args))
    };
    git(&["init", "--quiet", "-b", "main"]);
    std::fs::write(work.path().join("site.yml"), "- hosts: all\n  tasks: []\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "--quiet", "-m", "first"]);
    git(&["push", "--quiet", &url, "main"]);
    let head = git(&["rev-parse", "HEAD"]);

    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let dd = data_dir.clone();
    let panel = start(Backend::Sqlite, move |c| c.data_dir = dd).await;
    let (_, token) = panel.user("ops", true).await;
    let admin = Cred::Bearer(token);
    let secret = std::fs::read_to_string(&hosts.keys.ed25519).unwrap();
    let cred = panel
        .call(
            "POST",
            "/api/v1/credentials",
            &admin,
            Some(json!({"name": "deploy", "kind": "ssh_key", "username": "keeltest", "secret": secret})),
        )
        .await;
    assert!(cred.status.is_success(), "{}", cred.json);
    let project = panel
        .call(
            "POST",
            "/api/v1/projects",
            &admin,
            Some(
                json!({"name": "over-ssh", "kind": "git", "git_url": url, "git_ref": "main",
                        "deploy_key": cred.json["id"]}),
            ),
        )
        .await;
    assert!(project.status.is_success(), "{}", project.json);
    let sync = format!("/api/v1/projects/{}/sync", project.json["id"]);
    let host_key_body = h.host_key.split_whitespace().nth(1).unwrap().to_string();

    // No key known: refused, with what to do; nothing learned anywhere.
    let r = panel.call("POST", &sync, &admin, None).await;
    assert!(
        r.status.is_server_error() || r.status.is_client_error(),
        "{}",
        r.json
    );
    let msg = r.json["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("git_known_hosts"), "{msg}");
    assert!(msg.contains("host key"), "{msg}");
    assert!(
        files_holding(&data_dir, &host_key_body).is_empty(),
        "the host key was learned on first use: {:?}",
        files_holding(&data_dir, &host_key_body)
    );

    // Another key for that host: refused just the same.
    let other = tempfile::tempdir().unwrap();
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("k")));
    let other_pub = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let other_line: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let known = keel_panel::automation::git::known_hosts_file(&data_dir);
    std::fs::write(
        &known,
        format!("[{}]:{} {}\n", h.addr, h.port, other_line.join(" ")),
    )
    .unwrap();
    let r = panel.call("POST", &sync, &admin, None).await;
    assert!(
        !r.status.is_success(),
        "a wrong key was accepted: {}",
        r.json
    );
    assert!(
        r.json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("git_known_hosts"),
        "{}",
        r.json
    );

    // The operator vouches for the right key: the fetch works.
    std::fs::write(&known, format!("[{}]:{} {}\n", h.addr, h.port, h.host_key)).unwrap();
    let r = panel.call("POST", &sync, &admin, None).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.json);
    assert_eq!(
        r.json["revision"].as_str(),
        Some(head.as_str()),
        "{}",
        r.json
    );
}
