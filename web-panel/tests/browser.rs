//! A real browser against the panel: headless Debian chromium driven over
//! the W3C WebDriver protocol by chromedriver (a few JSON calls, so no
//! WebDriver crate). Logs in, creates a site and a server through the
//! forms, sees the server queued, watches job output and a status change
//! arrive live on the server page (EventSource), and finds the audit entry.
//! An admin builds a job template from the playbook-run pages (credential,
//! project, inventory, template with a survey), has a bad answer refused
//! next to its field, launches it against real sshd test hosts and watches
//! the run's task lines arrive live, then the recap.
//!
//! The harness (chromedriver, chromium) is `browser_support/`.

mod api_support;
mod browser_support;

use api_support::{catalog_and_pool, start, Backend};
use browser_support::{wait_for_element_text, wait_for_text, words, Driver};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_create_a_server_and_see_it_audited() {
    let p = start(Backend::Sqlite, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    p.user("root", true).await;
    let d = Driver::start().await;

    d.goto(&format!("{}/servers", p.base)).await;
    assert!(
        d.url().await.ends_with("/login?next=%2Fservers"),
        "anonymous visitors go to the login page: {}",
        d.url().await
    );
    d.type_into("#name", "root").await;
    d.type_into("#password", "root-password").await;
    d.click("#login").await;
    assert_eq!(
        d.url().await,
        format!("{}/servers", p.base),
        "back where they were going"
    );

    d.goto(&format!("{}/sites", p.base)).await;
    d.type_into("#site_name", "browser-site").await;
    d.type_into("#owner_email", "root@example.org").await;
    d.click("#create-site-button").await;
    assert!(d.url().await.ends_with("?created=1"), "{}", d.url().await);
    d.goto(&format!("{}/servers/new", p.base)).await;
    d.click("#create").await;

    assert!(d.url().await.contains("/servers/"), "on the server page");
    assert_eq!(d.text("#hostname").await, "mws-00001.example.org");
    assert_eq!(d.text("#status").await, "requested");
    assert_eq!(d.text("#jobs .job-state").await, "queued");

    // Live: output written to the server's job and a status change reach
    // the open page through its EventSource, without a reload.
    let service_id: i64 = d.url().await.rsplit('/').next().unwrap().parse().unwrap();
    wait_for_text(&d, "#joblog-note", "Live.").await;
    let job = p
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            serial_key: Some(format!("service:{service_id}")),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;
    let log = keel_panel::queue::log::JobLog::open_with(
        p.db().store(),
        job,
        1,
        keel_panel::queue::log::JobLogConfig::default(),
    )
    .await
    .unwrap();
    log.message("TASK [common : install <b>packages</b>]");
    log.flush().await.unwrap();
    wait_for_text(&d, "#joblog", "TASK [common : install <b>packages</b>]").await;
    assert_eq!(
        d.count("#joblog b").await,
        0,
        "markup in a log line is text, not HTML"
    );
    {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        use keel_panel::lifecycle::Status;
        let moved = keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            service_id,
            &[Status::Requested],
            Status::CreatingVm,
            None,
        )
        .await
        .unwrap();
        assert!(moved);
        tx.commit().await.unwrap();
    }
    wait_for_text(&d, "#status", "creating_vm").await;

    d.goto(&format!("{}/admin/audit", p.base)).await;
    let actions = d.text("#audit").await;
    assert!(actions.contains("service.create"), "{actions}");
    assert!(actions.contains("site.create"), "{actions}");
    d.cmd("DELETE", "", None).await;
}

/// The walk of issue #15: a site admin (not a platform admin) adds a user
/// to their site and an SSH key of their own through the pages, sees both
/// on the server page's "Who can log in", sees the `access` job those
/// changes queued (one, coalesced) in the job log, watches its output
/// arrive live, and cancels it with the job view's button. No worker runs
/// here: the job's output is written to its log as a role run would
/// (`access_flow.rs` runs the real thing on a container).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_admin_adds_a_user_and_a_key_and_watches_the_access_job() {
    let p = start(Backend::Sqlite, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    let (_, ann_token) = p.user("ann", false).await;
    p.user("bob", false).await;
    let ann = api_support::Cred::Bearer(ann_token);
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &ann,
            Some(json!({"name": "ann-site", "owner_email": "ann@example.org"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let site_id = r.json["id"].as_i64().unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &ann,
            Some(json!({"site_id": site_id, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let service_id = r.json["service"]["id"].as_i64().unwrap();
    // The server is ready (the flow itself is other tests' business), so
    // people changes queue access runs for it.
    {
        use keel_panel::lifecycle::Status;
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        let moved = keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            service_id,
            &[Status::Requested],
            Status::Ready,
            None,
        )
        .await
        .unwrap();
        assert!(moved);
        tx.commit().await.unwrap();
    }

    let d = Driver::start().await;
    d.goto(&format!("{}/login", p.base)).await;
    d.type_into("#name", "ann").await;
    d.type_into("#password", "ann-password").await;
    d.click("#login").await;

    // Sites → the site → add bob as an SSH-only user.
    d.goto(&format!("{}/sites", p.base)).await;
    d.click("#sites a").await;
    assert_eq!(d.text("h1").await, "Site ann-site");
    d.type_into("#member_user", "bob").await;
    d.click("#add-member-button").await;
    let members = words(&d.text("#members").await);
    assert!(members.contains("bob ssh"), "{members}");

    // My SSH keys → add one.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH ann@laptop";
    d.goto(&format!("{}/keys", p.base)).await;
    d.type_into("#key_name", "laptop").await;
    d.type_into("#public_key", key).await;
    d.click("#add-key").await;
    let keys = words(&d.text("#keys").await);
    assert!(keys.contains("laptop SHA256:"), "{keys}");

    // The server page: both can log in, and one access job waits.
    d.goto(&format!("{}/servers/{service_id}", p.base)).await;
    let logins = d.text("#logins").await;
    assert!(logins.contains("ann"), "{logins}");
    assert!(logins.contains("admin (sudo)"), "{logins}");
    assert!(logins.contains("bob"), "{logins}");
    assert!(logins.contains("SSH only"), "{logins}");
    assert!(logins.contains("SHA256:"), "ann's key is listed: {logins}");
    assert_eq!(
        d.count("#jobs tr[data-kind=access]").await,
        1,
        "two changes, one coalesced access job"
    );
    assert_eq!(
        d.text("#jobs tr[data-kind=access] .job-state").await,
        "queued"
    );
    let job = p
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            kind: Some("access".into()),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;

    // Its output arrives live on the open page.
    wait_for_text(&d, "#joblog-note", "Live.").await;
    let log = keel_panel::queue::log::JobLog::open_with(
        p.db().store(),
        job,
        1,
        keel_panel::queue::log::JobLogConfig::default(),
    )
    .await
    .unwrap();
    log.message("TASK [mwsusers : Accounts of the site's people]");
    log.message("changed: [flow] => (item=bob)");
    log.flush().await.unwrap();
    wait_for_text(&d, "#joblog", "changed: [flow] => (item=bob)").await;

    // The job view's cancel button.
    d.click("#jobs tr[data-kind=access] .cancel-job").await;
    assert!(d.url().await.ends_with(&format!("/servers/{service_id}")));
    assert_eq!(
        d.text("#jobs tr[data-kind=access] .job-state").await,
        "cancelled"
    );
    d.cmd("DELETE", "", None).await;
}

const RUN_PLAYBOOK: &str = r#"- name: Browser play
  hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      command: echo "hello {{ greeting }} x{{ count }}"
    - name: Take a moment
      command: sleep 3
    - name: Write the mark
      copy:
        content: "{{ greeting }} {{ count }}\n"
        dest: /tmp/keel-browser-run.txt
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_built_in_the_pages_runs_with_live_output() {
    use std::sync::Arc;

    let hosts = keel_testhosts::TestHosts::start(2).expect("sshd test hosts");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let p = start(Backend::Sqlite, move |c| c.data_dir = data_dir).await;
    let (_, root_token) = p.user("root", true).await;

    // The project: a directory with the playbook and the hosts.
    let project_dir = tempfile::tempdir().unwrap();
    std::fs::write(project_dir.path().join("site.yml"), RUN_PLAYBOOK).unwrap();
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
    std::fs::write(project_dir.path().join("hosts.ini"), inv).unwrap();

    let d = Driver::start().await;
    d.goto(&format!("{}/login", p.base)).await;
    d.type_into("#name", "root").await;
    d.type_into("#password", "root-password").await;
    d.click("#login").await;

    // A credential: the key goes in and is never shown back.
    let key_text = std::fs::read_to_string(&hosts.keys.ed25519).unwrap();
    let key_body = key_text.lines().nth(1).unwrap().to_string();
    d.goto(&format!("{}/credentials", p.base)).await;
    d.type_into("#credential_name", "hosts key").await;
    d.pick("#credential_kind option[value=ssh_key]").await;
    d.type_into("#credential_username", "root").await;
    d.type_into("#credential_secret", &key_text).await;
    d.click("#create-credential").await;
    assert!(d.url().await.ends_with("/credentials"));
    let listed = words(&d.text("#credentials").await);
    assert!(listed.contains("hosts key ssh_key root"), "{listed}");
    assert!(
        !d.source().await.contains(&key_body),
        "the private key is shown back"
    );

    // A project over the directory, an inventory from its file.
    d.goto(&format!("{}/projects", p.base)).await;
    d.type_into("#project_name", "browser").await;
    d.type_into("#project_path", &project_dir.path().display().to_string())
        .await;
    d.click("#create-project").await;
    assert!(words(&d.text("#projects").await).contains("browser directory"));
    d.goto(&format!("{}/inventories", p.base)).await;
    d.type_into("#inventory_name", "test hosts").await;
    d.pick("#inventory_kind option[value=project_file]").await;
    d.pick("#inventory_project option:nth-child(2)").await;
    d.type_into("#inventory_path", "hosts.ini").await;
    d.click("#create-inventory").await;
    assert!(
        words(&d.text("#inventories").await).contains("test hosts project_file browser: hosts.ini")
    );

    // The template, with a two-question survey.
    d.goto(&format!("{}/templates/new", p.base)).await;
    d.type_into("#template_name", "browser run").await;
    d.pick("#template_project option:nth-child(2)").await;
    d.type_into("#template_playbook", "site.yml").await;
    d.pick("#template_inventory option:nth-child(2)").await;
    d.pick("input[data-credential='hosts key']").await;
    d.clear("#template_forks").await;
    d.type_into("#template_forks", "2").await;
    d.type_into("#q0_variable", "greeting").await;
    d.pick("#q0_required").await;
    d.type_into("#q1_variable", "count").await;
    d.pick("#q1_type option[value=integer]").await;
    d.type_into("#q1_max", "3").await;
    d.type_into("#q1_default", "1").await;
    d.click("#save-template").await;
    assert!(d.url().await.contains("/templates/"), "{}", d.url().await);
    assert_eq!(d.text("h1").await, "Template browser run");
    let v = d.serious_a11y_violations().await;
    assert!(v.is_empty(), "the template page: {v:#?}");
    d.screenshot("template").await;

    // A bad answer is refused next to its field, nothing is queued, and
    // what was typed stays in the form.
    d.type_into("#answer_greeting", "hi").await;
    d.clear("#answer_count").await;
    d.type_into("#answer_count", "9").await;
    d.click("#launch-button").await;
    let err = d.text("#error-count").await;
    assert!(err.contains("at most 3"), "{err}");
    assert_eq!(d.count("#recent-runs a").await, 0, "no run was queued");
    d.clear("#answer_count").await;
    d.type_into("#answer_count", "2").await;
    d.click("#launch-button").await;
    assert!(d.url().await.contains("/runs/"), "{}", d.url().await);
    assert_eq!(d.text("#status").await, "queued");
    wait_for_text(&d, "#output-note", "Live.").await;

    // The worker runs it now, while the page is open.
    let prov =
        keel_panel::provision::Provisioner::new(p.db().clone(), None, &p.state.config).unwrap();
    let a = keel_panel::automation::Automation::new(Arc::new(prov)).unwrap();
    let mut reg = keel_panel::queue::worker::Registry::new();
    keel_panel::automation::register(&mut reg, Arc::new(a));
    let w = keel_panel::queue::worker::Worker::new(
        p.db().store().clone(),
        reg,
        keel_panel::queue::worker::WorkerConfig::default(),
    );
    let worker = tokio::spawn(async move { w.run_until_idle().await });

    // Task lines arrive while the run is still going (the second task
    // sleeps 3 s), without a reload.
    let live = wait_for_element_text(&d, "#output", "TASK [Take a moment]", 60).await;
    assert_eq!(
        d.text("#status").await,
        "running",
        "the output came before the run ended: {live}"
    );
    for h in &hosts.hosts {
        assert!(live.contains(&format!("changed: [{}]", h.name)), "{live}");
    }
    assert!(live.contains("TASK [Say hello]"), "{live}");

    // When the run ends the page reloads with the recap and the hosts.
    let recap = wait_for_element_text(&d, "#recap", "PLAY RECAP", 60).await;
    worker.await.unwrap().unwrap();
    assert_eq!(d.text("#status").await, "successful");
    for h in &hosts.hosts {
        let line = recap
            .lines()
            .find(|l| l.starts_with(&h.name))
            .unwrap_or_else(|| panic!("{} not in {recap}", h.name));
        assert!(
            line.contains("ok=3") && line.contains("changed=3") && line.contains("failed=0"),
            "{line}"
        );
        let row = words(&d.text(&format!("#hosts tr[data-host='{}']", h.name)).await);
        assert_eq!(row, format!("{} 3 3 0 0 0 0 0", h.name));
    }
    let output = d.text("#output").await;
    assert!(output.contains("TASK [Write the mark]"), "{output}");
    assert!(
        output.contains("PLAY RECAP") || output.contains("ok=3"),
        "{output}"
    );
    assert!(d.text("#output-note").await.contains("finished"));
    let v = d.serious_a11y_violations().await;
    assert!(v.is_empty(), "the run page: {v:#?}");
    d.screenshot("run").await;
    for i in 0..hosts.hosts.len() {
        assert_eq!(hosts.sh(i, "cat /tmp/keel-browser-run.txt"), "hi 2\n");
    }
    assert!(!d.source().await.contains(&key_body));

    // The runs list follows without a reload: a run launched while it is
    // open shows up at the top, queued, and turns successful when the
    // worker has run it.
    d.goto(&format!("{}/runs", p.base)).await;
    assert_eq!(d.count("#runs tbody tr").await, 1);
    let tpl = d
        .script("return document.querySelector('#runs tbody tr').dataset.run")
        .await;
    let first_run = tpl.as_str().unwrap().to_string();
    let template_id =
        keel_panel::automation::templates::list(p.db(), &keel_panel::domain::Principal::system())
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.name == "browser run")
            .unwrap()
            .id;
    let r = p
        .call(
            "POST",
            &format!("/api/v1/templates/{template_id}/launch"),
            &api_support::Cred::Bearer(root_token),
            Some(json!({"answers": {"greeting": "again", "count": 1}})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let second = r.json["id"].as_i64().unwrap();
    let row = format!("#runs tr[data-run='{second}'] .run-status");
    wait_for_element_text(&d, &row, "queued", 20).await;
    assert_eq!(
        d.script("return document.querySelector('#runs tbody tr').dataset.run")
            .await,
        json!(second.to_string()),
        "the new run is on top"
    );
    assert_eq!(
        words(
            &d.text(&format!("#runs tr[data-run='{first_run}'] .run-status"))
                .await
        ),
        "successful"
    );
    let w = keel_panel::queue::worker::Worker::new(
        p.db().store().clone(),
        {
            let prov =
                keel_panel::provision::Provisioner::new(p.db().clone(), None, &p.state.config)
                    .unwrap();
            let a = keel_panel::automation::Automation::new(Arc::new(prov)).unwrap();
            let mut reg = keel_panel::queue::worker::Registry::new();
            keel_panel::automation::register(&mut reg, Arc::new(a));
            reg
        },
        keel_panel::queue::worker::WorkerConfig::default(),
    );
    w.run_until_idle().await.unwrap();
    wait_for_element_text(&d, &row, "successful", 20).await;
    assert!(
        !d.text(&format!("#runs tr[data-run='{second}'] .run-finished"))
            .await
            .contains('—'),
        "the finish time came with the status"
    );
    d.cmd("DELETE", "", None).await;
}

/// The attack pass's stored XSS (issue 18): a payload that would set
/// `window.__xss` and the title is planted in every field a user can fill
/// and the pages render back (site name, description and owner e-mail, a
/// server's tags, an SSH key's comment and name, a Unix group, a vhost
/// name where the API takes it, job output live and stored, a job's error,
/// an LDAP display name, the audit log, playbook-run objects). Each page
/// is opened in the browser: no payload script runs, no element carries a
/// payload's handler, and the payload shows as text. The page's own script
/// runs under the CSP (the live log still follows), so the CSP blocked
/// nothing the pages need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_xss_never_runs() {
    const MARK: &str = "XSSMARK";
    // Under 100 characters, the longest names the panel takes.
    let payload = format!(
        "{MARK}\"'><img src=x onerror=window.__xss=1><script>window.__xss=2</script><svg onload=alert(3)>"
    );
    assert!(payload.len() <= 100, "{}", payload.len());
    let p = start(Backend::Sqlite, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    let (_, token) = p.user("root", true).await;
    let root = api_support::Cred::Bearer(token);
    let mut accepted: Vec<String> = vec![];
    let mut try_call = |what: &str, r: &api_support::Reply| {
        if r.status.is_success() {
            accepted.push(what.to_string());
        } else {
            assert!(
                r.status.is_client_error(),
                "{what}: {} {}",
                r.status,
                r.json
            );
        }
    };
    let owner_email = format!("x\"><img/src=x/onerror=window.__xss=4>{MARK}@example.org");
    let mut r = p
        .call(
            "POST",
            "/api/v1/sites",
            &root,
            Some(json!({"name": payload, "description": payload, "owner_email": owner_email})),
        )
        .await;
    if r.status == 422 {
        // Site names are names (`domain::check_name`): the payload is
        // refused there, naming the field, and stays in the description.
        assert_eq!(r.json["field"], "name", "{}", r.json);
        r = p
            .call(
                "POST",
                "/api/v1/sites",
                &root,
                Some(
                    json!({"name": "xss site", "description": payload, "owner_email": owner_email}),
                ),
            )
            .await;
    }
    try_call("site", &r);
    let site = r.json["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the site with a payload name: {}", r.json));
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &root,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let service = r.json["service"]["id"].as_i64().unwrap();
    {
        use keel_panel::lifecycle::Status;
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            service,
            &[Status::Requested],
            Status::Ready,
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let key = format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH {payload}");
    let r = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &root,
            Some(json!({"public_key": key, "name": payload})),
        )
        .await;
    if r.status == 422 {
        // Key names are names too: refused, naming the field; the payload
        // stays in the key's comment.
        assert_eq!(r.json["field"], "name", "{}", r.json);
        let r2 = p
            .call(
                "POST",
                "/api/v1/me/ssh-keys",
                &root,
                Some(json!({"public_key": key, "name": "xss key"})),
            )
            .await;
        try_call("ssh key", &r2);
    } else {
        try_call("ssh key", &r);
    }
    let r = p
        .call(
            "PUT",
            &format!("/api/v1/services/{service}/tags"),
            &root,
            Some(json!({"tags": [payload]})),
        )
        .await;
    try_call("tags", &r);
    let r = p
        .call(
            "POST",
            &format!("/api/v1/services/{service}/vhosts"),
            &root,
            Some(json!({"name": payload})),
        )
        .await;
    try_call("vhost", &r);
    let r = p
        .call(
            "POST",
            &format!("/api/v1/sites/{site}/unix-groups"),
            &root,
            Some(json!({"name": payload})),
        )
        .await;
    try_call("unix group", &r);
    let r = p
        .call(
            "POST",
            "/api/v1/admin/packages",
            &root,
            Some(json!({"name": "xss-pkg", "description": payload})),
        )
        .await;
    try_call("package description", &r);
    let r = p
        .call(
            "POST",
            "/api/v1/projects",
            &root,
            Some(json!({"name": payload, "kind": "directory", "path": "/tmp"})),
        )
        .await;
    try_call("project", &r);
    let r = p
        .call(
            "POST",
            "/api/v1/credentials",
            &root,
            Some(json!({"name": payload, "kind": "become_password", "secret": "pw"})),
        )
        .await;
    try_call("credential", &r);
    let r = p
        .call(
            "POST",
            "/api/v1/inventories",
            &root,
            Some(json!({"name": payload, "kind": "panel"})),
        )
        .await;
    try_call("inventory", &r);
    // An LDAP person's display name (written as the directory refresh
    // does) who is a member of the site.
    {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        let id = keel_panel::scalar!(&mut conn, i64, "INSERT INTO users (name, display_name, source, created_at) VALUES ('ldapxss', $1, 'ldap', 0) RETURNING id", payload.as_str())
            .unwrap()
            .unwrap();
        keel_panel::execute!(
            &mut conn,
            "INSERT INTO site_members (site_id, user_id, role) VALUES ($1, $2, 'ssh')",
            site,
            id
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    // Job output, stored now and live later; and a job's error.
    let job = p
        .db()
        .store()
        .jobs(&keel_panel::queue::JobFilter {
            serial_key: Some(format!("service:{service}")),
            ..Default::default()
        })
        .await
        .unwrap()
        .last()
        .map(|j| j.id)
        .expect("a job of the server");
    let log = keel_panel::queue::log::JobLog::open_with(
        p.db().store(),
        job,
        1,
        keel_panel::queue::log::JobLogConfig::default(),
    )
    .await
    .unwrap();
    log.message(format!("stored {payload}"));
    log.flush().await.unwrap();
    {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        keel_panel::execute!(
            &mut conn,
            "UPDATE jobs SET last_error = $1 WHERE id = $2",
            payload.as_str(),
            job
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    for must in ["site", "ssh key", "credential", "project", "inventory"] {
        assert!(
            accepted.iter().any(|a| a == must),
            "{must} refused the payload; accepted: {accepted:?}"
        );
    }

    let d = Driver::start().await;
    d.goto(&format!("{}/login", p.base)).await;
    d.type_into("#name", "root").await;
    d.type_into("#password", "root-password").await;
    d.click("#login").await;
    let check = |path: String| {
        let d = &d;
        let base = p.base.clone();
        async move {
            d.goto(&format!("{base}{path}")).await;
            let v = d
                .cmd(
                    "POST",
                    "/execute/sync",
                    Some(json!({"script": "return [String(window.__xss), document.title, document.querySelectorAll('[onerror],[onload],script:not([src])').length, document.body.innerText.indexOf(arguments[0]) >= 0]", "args": [MARK]})),
                )
                .await;
            assert_eq!(v[0], "undefined", "{path}: a payload ran: {v}");
            assert!(!v[1].as_str().unwrap().contains("pwned"), "{path}: {v}");
            assert_eq!(v[2], 0, "{path}: a payload's element is in the page: {v}");
            v[3].as_bool().unwrap()
        }
    };
    let mut shown = vec![];
    for path in [
        "/sites".to_string(),
        format!("/sites/{site}"),
        "/servers".to_string(),
        format!("/servers/{service}"),
        "/keys".to_string(),
        "/admin/services".to_string(),
        "/admin/jobs".to_string(),
        "/admin/audit".to_string(),
        "/admin/packages".to_string(),
        "/projects".to_string(),
        "/credentials".to_string(),
        "/inventories".to_string(),
        "/servers/new".to_string(),
    ] {
        if check(path.clone()).await {
            shown.push(path);
        }
    }
    for must in [
        "/sites".to_string(),
        format!("/sites/{site}"),
        format!("/servers/{service}"),
        "/admin/audit".to_string(),
        "/projects".to_string(),
    ] {
        assert!(
            shown.contains(&must),
            "the payload is not shown as text on {must}: shown on {shown:?}"
        );
    }
    // A refused form comes back with what was typed: the key form with the
    // payload as its name (names refuse '<') shows it again as the input's
    // value, and nothing of it runs.
    d.goto(&format!("{}/keys", p.base)).await;
    d.type_into("#key_name", &payload).await;
    d.type_into(
        "#public_key",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH",
    )
    .await;
    d.click("#add-key").await;
    let v = d
        .cmd("POST", "/execute/sync", Some(json!({"script": "return [String(window.__xss), document.querySelectorAll('[onerror],[onload],script:not([src])').length, document.querySelector('#key_name').value, !!document.querySelector('#error-name')]", "args": []})))
        .await;
    assert_eq!(
        v[0], "undefined",
        "the refused key form ran the payload: {v}"
    );
    assert_eq!(v[1], 0, "{v}");
    assert_eq!(v[2], payload.as_str(), "the input is kept as typed: {v}");
    assert_eq!(v[3], true, "the refusal is beside the name field: {v}");
    // Live output: the payload arrives through the EventSource while the
    // server page is open, and is text there too.
    d.goto(&format!("{}/servers/{service}", p.base)).await;
    wait_for_text(&d, "#joblog-note", "Live.").await;
    log.message(format!("live {payload}"));
    log.flush().await.unwrap();
    wait_for_text(&d, "#joblog", &format!("live {MARK}")).await;
    let v = d
        .cmd("POST", "/execute/sync", Some(json!({"script": "return [String(window.__xss), document.querySelectorAll('[onerror],[onload],script:not([src])').length]", "args": []})))
        .await;
    assert_eq!(v[0], "undefined", "live output ran: {v}");
    assert_eq!(v[1], 0, "{v}");
    d.cmd("DELETE", "", None).await;
}
