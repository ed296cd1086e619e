//! A server's vhosts, end to end on the real container driver
//! (`systemd-nspawn` machines booted from the base image, apt pointed at
//! the full test hosts' local repository): a site admin adds two vhosts
//! through the API, one with two aliases; the `vhosts` job's role run
//! (`playbooks/vhosts.yml`, `roles/mwsvhosts`) installs Apache and writes
//! both sites; `curl --resolve` with each name gets that vhost's page; one
//! more run changes nothing, and neither does ansible-playbook 2.19 on the
//! same inventory; after one vhost is deleted its site files are gone and
//! its name gets Apache's default page. Needs root and the built image;
//! skips otherwise, or fails when `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api_support::Cred;
use flow_support::{FlowPanel, WAIT};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The service's `vhosts` jobs, as the API shows them.
async fn vhosts_jobs(f: &FlowPanel, id: i64) -> Vec<Value> {
    f.service(id).await["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "vhosts")
        .cloned()
        .collect()
}

/// Waits until more than `before` vhosts jobs exist and all have
/// finished; each must have succeeded. Returns how many there are.
async fn settle(f: &FlowPanel, id: i64, before: usize) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = vhosts_jobs(f, id).await;
        if jobs.len() > before
            && jobs
                .iter()
                .all(|j| j["state"] != "queued" && j["state"] != "running")
        {
            for j in &jobs {
                assert_eq!(j["state"], "succeeded", "{j}");
            }
            return jobs.len();
        }
        assert!(
            Instant::now() < deadline,
            "vhosts jobs still running: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `after` of every `service.vhosts_applied` audit row, oldest first.
async fn applied(f: &FlowPanel, id: i64) -> Vec<Value> {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/admin/audit?object_type=service&object_id={id}&limit=200"),
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await;
    let mut rows: Vec<(i64, Value)> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.vhosts_applied")
        .map(|e| {
            let after = serde_json::from_str(e["after_json"].as_str().unwrap()).unwrap();
            (e["id"].as_i64().unwrap(), after)
        })
        .collect();
    rows.sort_by_key(|(id, _)| *id);
    rows.into_iter().map(|(_, after)| after).collect()
}

/// The text of a job's log, one line per event.
async fn job_log(f: &FlowPanel, job: i64) -> String {
    let r = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/jobs/{job}/log?limit=1000"),
            &f.owner,
            None,
        )
        .await;
    r.json["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|l| l["line"].to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| r.json.to_string())
}

/// `curl` of `http://NAME/` sent to `ip`, whatever DNS says.
fn curl(name: &str, ip: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:80:{ip}"))
        .arg(format!("http://{name}/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_and_aliases_are_served_and_a_deleted_vhost_goes() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let playbook = repo().join("playbooks/vhosts.yml");
    let mut f = FlowPanel::start_with(41, 1, move |c| c.sites.vhosts_playbook = playbook).await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let ip = detail["ipv4"].as_str().unwrap().to_string();
    let vm = f.prov.vm_name(id);
    let root = f.driver.root_dir(&vm);
    f.use_local_repo(id);

    // Two vhosts, the first with two aliases (given in mixed case: names
    // are stored lower-cased).
    let shop = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &f.owner,
            Some(json!({"name": "www.shop41.example", "aliases": ["Shop41.example", "store41.example"]})),
        )
        .await;
    assert_eq!(shop.status, 201, "{}", shop.json);
    assert_eq!(
        shop.json["aliases"],
        json!(["shop41.example", "store41.example"])
    );
    let blog = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &f.owner,
            Some(json!({"name": "blog41.example", "document_root": "/srv/blog"})),
        )
        .await;
    assert_eq!(blog.status, 201, "{}", blog.json);
    let api = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts"),
            &f.owner,
            Some(
                json!({"name": "api41.example", "kind": "proxy", "target": "http://127.0.0.1:9/"}),
            ),
        )
        .await;
    assert_eq!(api.status, 201, "{}", api.json);
    // The requests make one to three runs (a request may come while the
    // previous run waits or while it runs); the first changed the server,
    // and the last saw every vhost. (the second request may come
    // while the first run waits or while it runs); the first changed the
    // server, and the last saw both vhosts.
    let mut jobs = settle(&f, id, 0).await;
    let runs = applied(&f, id).await;
    assert!(
        runs[0]["changed"].as_i64().unwrap() > 0,
        "{runs:?}\n{}",
        job_log(&f, runs[0]["job_id"].as_i64().unwrap()).await
    );
    assert_eq!(
        runs.last().unwrap()["vhosts"],
        json!(["api41.example", "blog41.example", "www.shop41.example"])
    );

    // Each name gets its vhost's page.
    for name in ["www.shop41.example", "shop41.example", "store41.example"] {
        let page = curl(name, &ip);
        assert!(
            page.contains("<h1>www.shop41.example</h1>"),
            "{name}: {page}"
        );
    }
    let page = curl("blog41.example", &ip);
    assert!(page.contains("<h1>blog41.example</h1>"), "{page}");
    assert!(root.join("srv/blog/index.html").is_file());
    // The proxy vhost hands requests to its backend (nobody listens there:
    // Apache's 503), except HTTP-01 challenges, which every vhost serves.
    assert!(curl("api41.example", &ip).contains("Service Unavailable"));
    std::fs::write(
        root.join("var/lib/keel/acme-challenge/token41"),
        "key-authz\n",
    )
    .unwrap();
    let challenge = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &format!("api41.example:80:{ip}"),
        ])
        .arg("http://api41.example/.well-known/acme-challenge/token41")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&challenge.stdout), "key-authz\n");
    // A name no vhost has gets Apache's default site.
    let other = curl("nobody41.example", &ip);
    assert!(!other.contains("<h1>"), "{other}");
    // A page the site put there is never overwritten.
    std::fs::write(root.join("srv/blog/index.html"), "<p>the blog's own</p>\n").unwrap();

    // One more run finds everything in place.
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/services/{id}/vhosts/apply"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    jobs = settle(&f, id, jobs).await;
    assert_eq!(applied(&f, id).await.last().unwrap()["changed"], 0);
    assert_eq!(curl("blog41.example", &ip), "<p>the blog's own</p>\n");

    // So does ansible-playbook 2.19 on the panel's inventory for this host.
    let inventory = f
        .panel
        .call(
            "GET",
            "/api/v1/inventory",
            &Cred::Bearer(f.admin_token.clone()),
            None,
        )
        .await
        .json;
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = f.ansible_run(
        dir.path(),
        &inventory,
        &vm,
        &repo().join("playbooks/vhosts.yml"),
    ) {
        assert!(text.contains("changed=0"), "{text}");
        assert!(text.contains("failed=0"), "{text}");
    }

    // Deleting a vhost removes its site; its files stay.
    let blog_id = blog.json["id"].as_i64().unwrap();
    let r = f
        .panel
        .call(
            "DELETE",
            &format!("/api/v1/services/{id}/vhosts/{blog_id}"),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    settle(&f, id, jobs).await;
    assert!(
        applied(&f, id).await.last().unwrap()["changed"]
            .as_i64()
            .unwrap()
            > 0
    );
    for dir in ["sites-available", "sites-enabled"] {
        let conf = root.join(format!("etc/apache2/{dir}/keel-blog41.example.conf"));
        assert!(
            std::fs::symlink_metadata(&conf).is_err(),
            "{} is still there",
            conf.display()
        );
    }
    assert!(root.join("srv/blog/index.html").is_file());
    assert!(!curl("blog41.example", &ip).contains("the blog's own"));
    assert!(curl("shop41.example", &ip).contains("<h1>www.shop41.example</h1>"));

    // The run's output is in the job log.
    let jobs = vhosts_jobs(&f, id).await;
    let newest = jobs[0]["id"].as_i64().unwrap();
    let log = job_log(&f, newest).await;
    assert!(
        log.contains("remove the sites the panel no longer lists"),
        "{log}"
    );
}
