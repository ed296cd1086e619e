//! LDAP lookup groups against a real `slapd` (Debian's package, started by
//! the test on a loopback port with StartTLS and the `nis` and
//! `openssh-lpk` schemas; see `ldap_support`).
//!
//! `lookup_groups_follow_the_directory` (both backends) drives the domain
//! layer and the API: autocomplete from the directory, "Refresh now", the
//! members mirrored with their `uidNumber` and `sshPublicKey`, a refresh
//! with nothing changed changing nothing, `ldapmodify` edits arriving on
//! the next refresh, a stopped directory removing no one (and its error
//! kept for the site page), a certificate from another CA refused.
//!
//! `ldap_members_log_in_on_a_container` is the same flow end to end on
//! the real container driver: a directory group's member logs in with the
//! key the directory holds and has sudo; removed from the group with
//! `ldapmodify`, they cannot log in after the next refresh's access run; a
//! refresh that changes nothing queues no access run. Needs root and the
//! built image; skips otherwise, or fails when `KEEL_REQUIRE_REAL` is set.

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;
mod ldap_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use api_support::{start, Backend, Cred};
use flow_support::{FlowPanel, WAIT};
use keel_panel::config::LdapConfig;
use keel_panel::domain::Principal;
use keel_panel::queue::{JobFilter, JobState};
use keel_panel::services::lookup::{self, RefreshError};
use keel_panel::services::{access, keys};
use ldap_support::Slapd;
use serde_json::{json, Value};

/// A fresh ed25519 key pair in `dir`; returns (private key path, public line).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("{name}@directory"))
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// (name, role, via, uid) of each person of the site, sorted by name.
async fn people_of(
    db: &keel_panel::db::Db,
    site: i64,
) -> Vec<(String, String, String, Option<i64>)> {
    let mut rc = db.read().await.unwrap();
    let mut conn = rc.conn();
    access::people(&mut conn, Some(site))
        .await
        .unwrap()
        .remove(&site)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name, p.role.as_str().to_string(), p.via.join(","), p.uid))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The fingerprints of the SSH keys of `user`, one of the site's people.
async fn fingerprints_of(db: &keel_panel::db::Db, site: i64, user: &str) -> Vec<String> {
    let person = {
        let mut rc = db.read().await.unwrap();
        let mut conn = rc.conn();
        access::people(&mut conn, Some(site))
            .await
            .unwrap()
            .remove(&site)
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.name == user)
            .unwrap()
    };
    let who = Principal {
        user_id: person.user_id,
        name: person.name,
        is_admin: false,
    };
    keys::list(db, &who)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.fingerprint)
        .collect()
}

async fn lookup_directory(b: Backend) {
    let mut slapd = Slapd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, ann_pub) = keypair(dir.path(), "ann");
    let (_, ben_pub) = keypair(dir.path(), "ben");
    slapd.add_person("ann", 20001, "Ann Example", Some(&ann_pub));
    slapd.add_person("ben", 20002, "Ben Example", None);
    slapd.add_person("cat", 20003, "Cat Example", None);
    slapd.add_posix_group("webadmins", 30001, &["ann"]);
    slapd.add_names_group("webssh", &["ben", "cat"]);
    slapd.add_posix_group("unrelated", 30002, &["cat"]);

    let cfg = slapd.config();
    let panel_cfg = cfg.clone();
    let p = start(b, move |c| c.ldap = panel_cfg).await;
    let (_, owner_t) = p.user("owner", false).await;
    let owner = Cred::Bearer(owner_t);
    let (_, admin_t) = p.user("root", true).await;
    let admin = Cred::Bearer(admin_t);
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &owner,
            Some(json!({"name": "ldap-site", "owner_email": "o@example.org"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let site = r.json["id"].as_i64().unwrap();

    // Autocomplete reads the directory's group names.
    let r = p
        .call(
            "GET",
            &format!("/api/v1/sites/{site}/directory-groups?q=web"),
            &owner,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json, json!(["webadmins", "webssh"]));

    // Two directory groups and one of the panel's own groups.
    let r = p
        .call(
            "POST",
            "/api/v1/admin/groups",
            &admin,
            Some(json!({"name": "staff"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = p
        .call(
            "PUT",
            &format!("/api/v1/admin/groups/{}/members", r.json["id"]),
            &admin,
            Some(json!({"user": "owner"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.json);
    for (group, role) in [("webadmins", "admin"), ("webssh", "ssh"), ("staff", "ssh")] {
        let r = p
            .call(
                "PUT",
                &format!("/api/v1/sites/{site}/lookup-groups"),
                &owner,
                Some(json!({"group": group, "role": role})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let r = p
        .call(
            "GET",
            &format!("/api/v1/sites/{site}/lookup-groups"),
            &owner,
            None,
        )
        .await;
    assert_eq!(r.json[1]["group_name"], "webadmins");
    assert_eq!(r.json[1]["source"], Value::Null, "{}", r.json);

    // "Refresh now" queues the job the worker runs; here the test runs its
    // body itself.
    let r = p
        .call(
            "POST",
            &format!("/api/v1/sites/{site}/lookup-refresh"),
            &owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let queued = p
        .db()
        .store()
        .jobs(&JobFilter {
            kind: Some("lookup_refresh".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].payload, json!({ "site_id": site }));
    assert_eq!(queued[0].id, r.json["job_id"].as_i64().unwrap());

    let report = lookup::refresh(p.db(), &cfg, Some(site)).await.unwrap();
    assert_eq!(
        report.groups,
        ["webadmins", "webssh"],
        "the panel's staff group is not read"
    );
    assert_eq!(report.changed_groups, ["webadmins", "webssh"]);
    assert_eq!(report.changed_people, ["ann", "ben", "cat"]);
    assert_eq!(
        people_of(p.db(), site).await,
        [
            (
                "ann".into(),
                "admin".into(),
                "lookup group webadmins (admin)".into(),
                Some(20001)
            ),
            (
                "ben".into(),
                "ssh".into(),
                "lookup group webssh (ssh)".into(),
                Some(20002)
            ),
            (
                "cat".into(),
                "ssh".into(),
                "lookup group webssh (ssh)".into(),
                Some(20003)
            ),
            (
                "owner".into(),
                "admin".into(),
                "lookup group staff (ssh),member".into(),
                None
            ),
        ]
    );
    let (_, ann_fp) = keys::parse_public_key(&ann_pub).unwrap();
    assert_eq!(fingerprints_of(p.db(), site, "ann").await, [ann_fp]);
    let r = p
        .call(
            "GET",
            &format!("/api/v1/sites/{site}/lookup-groups"),
            &owner,
            None,
        )
        .await;
    let states = r.json.as_array().unwrap();
    let by = |n: &str| {
        states
            .iter()
            .find(|s| s["group_name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by("webadmins")["source"], "ldap");
    assert_eq!(by("webssh")["members"], 2);
    assert_eq!(by("staff")["source"], "panel");
    assert!(by("webssh")["refreshed_at"].is_i64());

    // Nothing changed in the directory: nothing changes here, no access run.
    let again = lookup::refresh(p.db(), &cfg, None).await.unwrap();
    assert!(
        again.changed_groups.is_empty() && again.changed_people.is_empty(),
        "{again:?}"
    );

    // ldapmodify: ann leaves webadmins, ben gets a key.
    slapd.member_uid("webadmins", "ann", false);
    slapd.add_key("ben", &ben_pub);
    let report = lookup::refresh(p.db(), &cfg, Some(site)).await.unwrap();
    assert_eq!(report.changed_groups, ["webadmins"]);
    assert_eq!(report.changed_people, ["ben"]);
    let names: Vec<String> = people_of(p.db(), site)
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(names, ["ben", "cat", "owner"]);
    let (_, ben_fp) = keys::parse_public_key(&ben_pub).unwrap();
    assert_eq!(fingerprints_of(p.db(), site, "ben").await, [ben_fp]);

    // The directory is down: the refresh fails, nobody is removed, and the
    // error is kept for the site page until a refresh succeeds.
    slapd.member_uid("webadmins", "ann", true);
    slapd.stop();
    let err = lookup::refresh(p.db(), &cfg, Some(site)).await.unwrap_err();
    assert!(matches!(err, RefreshError::Directory(_)), "{err:?}");
    let names: Vec<String> = people_of(p.db(), site)
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(names, ["ben", "cat", "owner"]);
    let r = p
        .call(
            "GET",
            &format!("/api/v1/sites/{site}/lookup-groups"),
            &owner,
            None,
        )
        .await;
    let webssh = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["group_name"] == "webssh")
        .unwrap()
        .clone();
    assert!(
        webssh["refresh_error"]
            .as_str()
            .unwrap()
            .contains("connecting to ldap://127.0.0.1"),
        "{webssh}"
    );
    let r = p
        .call(
            "GET",
            &format!("/api/v1/sites/{site}/directory-groups"),
            &owner,
            None,
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.json);
    slapd.restart().await;
    let report = lookup::refresh(p.db(), &cfg, Some(site)).await.unwrap();
    assert_eq!(report.changed_groups, ["webadmins"]);
    let r = p
        .call(
            "GET",
            &format!("/api/v1/sites/{site}/lookup-groups"),
            &owner,
            None,
        )
        .await;
    assert!(
        r.json
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["refresh_error"].is_null()),
        "{}",
        r.json
    );

    // The certificate is always verified: another CA is refused, and so is
    // a name the certificate does not carry.
    let wrong_ca = LdapConfig {
        ca_file: slapd.other_ca().display().to_string(),
        ..cfg.clone()
    };
    let err = lookup::refresh(p.db(), &wrong_ca, Some(site))
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("connecting"), "{err}");
    let wrong_name = LdapConfig {
        url: format!("ldap://localhost:{}", slapd.port),
        ..cfg.clone()
    };
    assert!(lookup::refresh(p.db(), &wrong_name, Some(site))
        .await
        .is_err());
    // The bind password reaches no error text.
    assert!(!format!("{err} {err:?}").contains("directory-secret"));
}
both_backends!(lookup_groups_follow_the_directory, lookup_directory);

// ---- end to end on a container ---------------------------------------

fn ssh(known_hosts: &Path, key: &Path, user: &str, ip: &str, command: &str) -> Output {
    Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args([
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "ConnectTimeout=10"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(key)
        .arg(format!("{user}@{ip}"))
        .arg(command)
        .output()
        .unwrap()
}

/// The service's access jobs.
async fn access_jobs(f: &FlowPanel, id: i64) -> Vec<keel_panel::queue::Job> {
    f.panel
        .db()
        .store()
        .jobs(&JobFilter {
            serial_key: Some(keel_panel::services::servers::service_key(id)),
            kind: Some("access".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap()
}

/// "Refresh now", then waits for that refresh and every access job it
/// queued to finish; returns how many access jobs the service has.
async fn refresh_and_settle(f: &FlowPanel, id: i64) -> usize {
    let r = f
        .panel
        .call(
            "POST",
            &format!("/api/v1/sites/{}/lookup-refresh", f.site),
            &f.owner,
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json);
    let job = r.json["job_id"].as_i64().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let refresh = f.panel.db().store().job(job).await.unwrap().unwrap();
        let jobs = access_jobs(f, id).await;
        let busy = |s: JobState| matches!(s, JobState::Queued | JobState::Running);
        if !busy(refresh.state) && !jobs.iter().any(|j| busy(j.state)) {
            assert_eq!(refresh.state, JobState::Succeeded, "{refresh:?}");
            for j in &jobs {
                assert!(
                    matches!(j.state, JobState::Succeeded | JobState::Superseded),
                    "{j:?}"
                );
            }
            return jobs.len();
        }
        assert!(
            Instant::now() < deadline,
            "refresh {refresh:?}, access {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_members_log_in_on_a_container() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let slapd = Slapd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ann_key, ann_pub) = keypair(dir.path(), "ann");
    slapd.add_person("ann", 20001, "Ann Example", Some(&ann_pub));
    slapd.add_posix_group("webadmins", 30001, &["ann"]);
    let ldap = slapd.config();
    let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/access.yml");
    let mut f = FlowPanel::start_with(34, 1, move |c| {
        c.access.playbook = playbook;
        c.ldap = ldap;
    })
    .await;
    f.worker(&["hypervisor", "default"]);
    let id = f.create().await;
    let detail = f.wait_status(id, "ready").await;
    let ip = detail["ipv4"].as_str().unwrap().to_string();
    let vm = f.prov.vm_name(id);
    let known = f.prov.known_hosts_path(&vm);

    let r = f
        .panel
        .call(
            "PUT",
            &format!("/api/v1/sites/{}/lookup-groups", f.site),
            &f.owner,
            Some(json!({"group": "webadmins", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let runs = refresh_and_settle(&f, id).await;
    assert!(runs >= 1);

    // The directory's member logs in with the directory's key, as UID
    // 20001, with sudo.
    let out = ssh(
        &known,
        &ann_key,
        "ann",
        &ip,
        "id -u; sudo -n true && echo SUDO-OK",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.starts_with("20001\n") && text.contains("SUDO-OK"),
        "{text}"
    );
    let access = f
        .panel
        .call(
            "GET",
            &format!("/api/v1/services/{id}/access"),
            &f.owner,
            None,
        )
        .await;
    let login = access.json["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "ann")
        .unwrap()
        .clone();
    assert_eq!(
        login["via"],
        json!(["lookup group webadmins (admin)"]),
        "{login}"
    );

    // Nothing changed in the directory: no access run.
    assert_eq!(refresh_and_settle(&f, id).await, runs);

    // ldapmodify takes ann out of the group; the next refresh's run
    // removes her account.
    slapd.member_uid("webadmins", "ann", false);
    let after = refresh_and_settle(&f, id).await;
    assert_eq!(after, runs + 1);
    let out = ssh(&known, &ann_key, "ann", &ip, "true");
    assert!(!out.status.success(), "ann still logs in: {out:?}");
}
