//! The shipped multi-server stacks as panel server types, end to end on
//! the real container driver: e-mission (`playbooks/emission.yml` and the
//! `emission_*` roles), CC-Server (`playbooks/ccserver.yml`, its PKI on
//! its server) and the single-server WebLab-Deusto (`playbooks/weblab.yml`)
//! and CalipsoPlus backend (`playbooks/calipsoplus.yml`), each made a type
//! as docs/panel.md shows it, requested with one request, and checked with
//! smoke checks `engine/tests/seed_stacks.rs` runs on them through
//! `keel play`.
//!
//! The panel's own playbook is a stand-in for `playbooks/site.yml` (the
//! stack's playbook sits beside it with the repository's roles): it
//! records its run and points apt at the local repository of the full test
//! hosts (`keel_testhosts::full::local_repo`), which the test serves over
//! HTTP on the bridge, as a real server reads its mirror. The packages the
//! roles install come from there, never from the internet.
//!
//! Needs root and the built image; skips otherwise, or fails when
//! `KEEL_REQUIRE_REAL` is set. Addresses from 10.235.1.0/25 on the bridge
//! `kbr235` (e-mission) and 10.235.1.128/25 on `kbr235c` (CC-Server);
//! the single-server stacks from 10.235.2.0/25 on `kbr235w` (WebLab-Deusto)
//! and 10.235.2.128/25 on `kbr235k` (CalipsoPlus).

mod api_support;
#[path = "../../tests/e2e/support/mod.rs"]
mod e2e_support;
mod flow_support;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use api_support::{Backend, Cred};
use flow_support::{pool_name, Bridge, FlowPanel, HostRule, RepoServer};
use serde_json::json;

const BRIDGE: &str = "kbr235";
const CC_BRIDGE: &str = "kbr235c";
const WEBLAB_BRIDGE: &str = "kbr235w";
const CALIPSO_BRIDGE: &str = "kbr235k";

/// The panel's playbook in this test (`@REPO@`: the repository's URL).
/// A server the test marked with `/etc/keel-hold` waits in it until the
/// test makes `/etc/keel-go`.
const SITE: &str = r#"# A stand-in for playbooks/site.yml (stacks_seed_flow.rs).
- hosts: all
  gather_facts: false
  tasks:
    - name: record what the panel told us
      ansible.builtin.copy:
        dest: /etc/keel-provisioned
        content: "{{ keel_hostname }} {{ keel_server_type }} {{ ansible_user }}\n"
        mode: "0644"
    - name: install from the test's local repository only
      ansible.builtin.copy:
        dest: /etc/apt/sources.list
        content: "deb [trusted=yes] @REPO@ ./\n"
        mode: "0644"
    - name: read its package lists
      ansible.builtin.apt:
        update_cache: true
    - name: look for the test's hold
      ansible.builtin.stat:
        path: /etc/keel-hold
      register: hold
    - name: wait until the test lets this server go on
      ansible.builtin.wait_for:
        path: /etc/keel-go
        timeout: 180
      when: hold.stat.exists
"#;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// What a stack panel keeps up while it runs: its bridge, the server of
/// the local repository, the playbook directory.
struct StackNet {
    _dir: tempfile::TempDir,
    _repo: RepoServer,
    _bridge: Bridge,
}

/// A panel whose servers share `bridge`, in `gateway`/25, and install
/// packages from the local repository of the full test hosts with the
/// shipped stacks' packages. Its playbook is [`SITE`], beside it the
/// repository's `stacks` (copies) and beside those the repository's roles.
async fn stack_panel(
    gateway: Ipv4Addr,
    bridge: &'static str,
    stacks: &[&str],
    servers: u8,
) -> (StackNet, FlowPanel) {
    let repo = tokio::task::spawn_blocking(|| {
        keel_testhosts::full::local_repo(keel_testhosts::full::SEED_STACK_PACKAGES)
    })
    .await
    .unwrap()
    .expect("the local apt repository");
    let net = Bridge::up(bridge, &format!("{gateway}/25"));
    let repo = RepoServer::start(repo, gateway).await;
    let dir = tempfile::Builder::new()
        .prefix("keel-stacks-seed-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    std::fs::write(
        playbooks.join("site.yml"),
        SITE.replace("@REPO@", &repo.url),
    )
    .unwrap();
    for stack in stacks {
        let from = repo_root().join(stack);
        std::fs::copy(&from, playbooks.join(from.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink(repo_root().join("roles"), dir.path().join("roles")).unwrap();
    let site = playbooks.join("site.yml");
    let mut f = FlowPanel::start_in(Backend::Sqlite, gateway, 25, servers, move |c| {
        c.hypervisor.playbook = site;
        c.networks.insert(
            pool_name(gateway),
            keel_panel::config::NetworkConfig {
                bridge: bridge.into(),
                nameservers: vec![],
                callback_url: String::new(),
            },
        );
    })
    .await;
    f.worker(&["hypervisor", "default"]);
    (
        StackNet {
            _dir: dir,
            _repo: repo,
            _bridge: net,
        },
        f,
    )
}

/// The ids of a stack's servers from the answer to its request.
async fn request_stack(f: &FlowPanel, server_type: &str) -> Vec<i64> {
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": server_type})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["stack_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Whether a TCP connection from this machine to `ip:port` opens within
/// two seconds.
fn connects(ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// Whether service `id`'s own configure run has finished
/// (`stack_base_at`; the stack's run waits for this on every member).
async fn base_done(f: &FlowPanel, id: i64) -> bool {
    let mut rc = f.panel.db().read().await.unwrap();
    keel_panel::scalar!(
        &mut rc.conn(),
        Option<i64>,
        "SELECT stack_base_at FROM services WHERE id = $1",
        id
    )
    .unwrap()
    .flatten()
    .is_some()
}

/// e-mission from docs/panel.md's JSON: one request makes four servers;
/// the stack's playbook runs once against them after each had the panel's
/// playbook, the database host reached only through webapp (the panel's
/// direct way to it is blocked by a firewall rule for that run); then the
/// database listens on its own address, lets in the application hosts and
/// not this machine, and the read-write user writes while the read-only
/// user reads and cannot write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emission_is_a_server_type_whose_four_servers_one_request_makes() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let started = Instant::now();
    // The servers go first, then their network.
    let (_net, f) = stack_panel(
        Ipv4Addr::new(10, 235, 1, 1),
        BRIDGE,
        &["playbooks/emission.yml"],
        4,
    )
    .await;
    let panel_up = started.elapsed();
    let admin = Cred::Bearer(f.admin_token.clone());

    // docs/panel.md, "Multi-server stacks", as written there.
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/server-types",
            &admin,
            Some(json!(
            {"name": "emission", "cpus": 1, "ram_mb": 1024, "disk_gb": 10, "os_image": "debian-bookworm",
             "stack": {"playbook": "emission.yml", "groups": ["emission"],
                       "secrets": ["emission_db_rw_password", "emission_db_ro_password", "emission_notebook_token"],
                       "vars": {"emission_private_ip": "{{ keel_ipv4 }}"},
                       "members": [{"name": "webapp", "groups": ["emission_webapp"]},
                                   {"name": "analysis", "groups": ["emission_analysis"]},
                                   {"name": "notebook", "groups": ["emission_notebook"]},
                                   {"name": "db", "groups": ["emission_db"], "jump": "webapp"}]}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);

    let ids = request_stack(&f, "emission").await;
    let [webapp, analysis, notebook, db] = ids[..] else {
        panic!("four servers: {ids:?}");
    };
    let root = |id: i64| f.driver.root_dir(&f.prov.vm_name(id));

    // Webapp waits in its own configure run until the panel's direct way
    // to db is blocked, so the stack's run (which needs webapp done) meets
    // the block. Its container exists long before that run reaches it.
    let deadline = Instant::now() + flow_support::WAIT;
    while !root(webapp).join("etc/apt").is_dir() {
        assert!(Instant::now() < deadline, "webapp's container never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(root(webapp).join("etc/keel-hold"), "").unwrap();
    while !base_done(&f, db).await {
        assert!(
            Instant::now() < deadline,
            "db's own configure never finished"
        );
        let s = f.service(db).await;
        assert_ne!(s["status"], "failed", "{s}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let db_base = started.elapsed();
    assert!(
        !base_done(&f, webapp).await,
        "webapp's run went on before the test held it"
    );
    let db_ip = f.service(db).await["ipv4"].as_str().unwrap().to_string();
    let rule = HostRule::insert(&[
        "OUTPUT", "-d", &db_ip, "-p", "tcp", "--dport", "22", "-j", "REJECT",
    ]);
    assert!(
        !f.ssh_admin(db, "true").await.status.success(),
        "db is still reachable directly"
    );
    std::fs::write(root(webapp).join("etc/keel-go"), "").unwrap();
    f.wait_stack_ready(webapp, &ids).await;
    let stack_ready = started.elapsed();
    drop(rule);

    let members: Vec<String> = f.service(db).await["stack_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(members, ["webapp", "analysis", "notebook", "db"]);
    for id in &ids {
        assert!(f.role_file(*id).exists(), "site.yml ran on {id}");
    }
    let ip = |s: serde_json::Value| s["ipv4"].as_str().unwrap().to_string();
    let webapp_ip = ip(f.service(webapp).await);
    let runs = f.jobs_json(webapp, "stack_configure").await;
    assert!(runs.iter().all(|j| j["state"] == "succeeded"), "{runs:?}");
    let log = f.job_log(runs[0]["id"].as_i64().unwrap()).await;
    assert!(log.contains("emission.yml"), "{log}");
    assert!(log.contains("(db) is reached through"), "{log}");
    let run = |id: i64, cmd: String| {
        let f = &f;
        async move {
            let out = f.ssh_admin(id, &cmd).await;
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )
        }
    };
    let admin_user = f.panel.state.config.hypervisor.admin_user.clone();
    let (ok, auth, err) = run(db, "sudo journalctl -u ssh --no-pager -o cat".into()).await;
    assert!(ok, "{err}");
    assert!(
        auth.contains(&format!(
            "Accepted publickey for {admin_user} from {webapp_ip}"
        )),
        "the stack's run did not come through webapp: {auth}"
    );

    // PostgreSQL listens on db's own address only; the firewall lets the
    // application hosts in and not this machine (which reaches its sshd).
    let (ok, listening, err) = run(db, "ss -Hltn 'sport = :5432'".into()).await;
    assert!(ok, "{err}");
    let addrs: Vec<&str> = listening
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(addrs, [format!("{db_ip}:5432")], "{listening}");
    assert!(connects(&db_ip, 22));
    assert!(
        !connects(&db_ip, 5432),
        "the database answered a host that is not in the stack"
    );

    // The read-write user writes; the read-only user reads and cannot
    // write (each with the password file its role wrote).
    let psql = |id: i64, sys: &str, user: &str, sql: &str| {
        run(
            id,
            format!(
                "sudo -H -u {sys} psql -X -v ON_ERROR_STOP=1 -h {db_ip} -U {user} -d emission -tA -c '{sql}'"
            ),
        )
    };
    let (ok, _, err) = psql(
        webapp,
        "emission",
        "emission_rw",
        "CREATE TABLE smoke (x int); INSERT INTO smoke VALUES (1)",
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = psql(
        analysis,
        "emission",
        "emission_rw",
        "INSERT INTO smoke VALUES (2)",
    )
    .await;
    assert!(ok, "{err}");
    let (ok, count, err) = psql(
        notebook,
        "notebook",
        "emission_ro",
        "SELECT count(*) FROM smoke",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(count, "2");
    let (ok, _, err) = psql(
        notebook,
        "notebook",
        "emission_ro",
        "INSERT INTO smoke VALUES (3)",
    )
    .await;
    assert!(!ok);
    assert!(err.contains("permission denied"), "{err}");

    // The generated secrets are kept with the first server, sealed.
    let mut rc = f.panel.db().read().await.unwrap();
    let names: Vec<(String,)> = keel_panel::fetch_all!(
        &mut rc.conn(),
        (String,),
        "SELECT name FROM service_secrets WHERE service_id = $1",
        webapp
    )
    .unwrap();
    drop(rc);
    let mut names: Vec<String> = names.into_iter().map(|(n,)| n).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "emission_db_ro_password",
            "emission_db_rw_password",
            "emission_notebook_token"
        ]
    );
    eprintln!(
        "stacks_seed_flow: the panel up after {panel_up:?}, db's own \
         configure done after {db_base:?}, the four servers ready after {stack_ready:?}, \
         checked after {:?}",
        started.elapsed()
    );
}

/// CC-Server from docs/panel.md's JSON (plus the Docker settings a
/// container needs): one request makes the server and a Docker node; the
/// stack's run makes the Docker CA and the certificates on the server (the
/// group `ccpki`), never on this machine; the node's Docker API takes the
/// server's client certificate and only it, and CC-Server's API, through
/// Apache with TLS, reports the node reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccserver_is_a_server_type_whose_certificates_are_made_on_its_server() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let started = Instant::now();
    let (_net, f) = stack_panel(
        Ipv4Addr::new(10, 235, 1, 129),
        CC_BRIDGE,
        &["playbooks/ccserver.yml"],
        2,
    )
    .await;
    let admin = Cred::Bearer(f.admin_token.clone());
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/server-types",
            &admin,
            Some(json!(
            {"name": "ccserver", "cpus": 2, "ram_mb": 2048, "disk_gb": 20, "os_image": "debian-bookworm",
             "stack": {"playbook": "ccserver.yml",
                       // The containers' /proc/sys is read-only (docs/stacks.md).
                       "vars": {"cc_docker_extra": {"ip-forward": false, "iptables": false, "bridge": "none"}},
                       "members": [{"name": "server", "groups": ["ccserver", "ccpki"]},
                                   {"name": "node", "groups": ["ccnodes"]}]}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let ids = request_stack(&f, "ccserver").await;
    let [server, node] = ids[..] else {
        panic!("two servers: {ids:?}");
    };
    f.wait_stack_ready(server, &ids).await;
    let stack_ready = started.elapsed();
    let root = |id: i64| f.driver.root_dir(&f.prov.vm_name(id));

    // The CA lives on the server, root only; the node has its certificate,
    // signed by that CA for its address, and no CA key.
    let pki = root(server).join("var/lib/cc-server-pki");
    let mode = std::fs::metadata(&pki)
        .expect("the PKI on the server")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    assert!(pki.join("ca-key.pem").is_file());
    assert!(!root(node).join("var/lib/cc-server-pki").exists());
    let node_ip = f.service(node).await["ipv4"].as_str().unwrap().to_string();
    let verify = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(pki.join("ca.pem"))
        .arg("-verify_ip")
        .arg(&node_ip)
        .arg(root(node).join("etc/docker/tls/cert.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");

    // The node's Docker API answers the server's client certificate, and
    // refuses a client without one.
    let tls = "/home/ccuser/.config/cc-server/tls";
    let ping = |cert: bool| {
        let cert = if cert {
            format!("--cert {tls}/client.pem --key {tls}/client-key.pem")
        } else {
            String::new()
        };
        format!(
            "sudo curl -sS --max-time 10 --cacert {tls}/ca.pem {cert} https://{node_ip}:2376/_ping"
        )
    };
    let out = f.ssh_admin(server, &ping(true)).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK", "{out:?}");
    let out = f.ssh_admin(server, &ping(false)).await;
    assert!(
        !out.status.success(),
        "Docker took a client without a certificate"
    );

    // CC-Server's API, through Apache with TLS, reaches the node.
    let name = f.service(server).await["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let out = f
            .ssh_admin(
                server,
                &format!(
                    "curl -sS --max-time 10 --cacert /etc/ssl/certs/cc-server.pem \
                     --resolve {name}:443:127.0.0.1 https://{name}/cc/"
                ),
            )
            .await;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            break v;
        }
        assert!(Instant::now() < deadline, "CC-Server's API: {out:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer["service"], "cc-server", "{answer}");
    let nodes = answer["nodes"].as_object().unwrap();
    assert_eq!(nodes.len(), 1, "{answer}");
    assert!(nodes.values().all(|v| v == "ok"), "{answer}");
    eprintln!(
        "stacks_seed_flow: CC-Server's two servers ready after {stack_ready:?}, checked after {:?}",
        started.elapsed()
    );
}

/// A single-server stack type from docs/panel.md's JSON, one server of it
/// `ready` (the panel's playbook and then the stack's in one configure
/// job): the server's id, its hostname and that job's log.
async fn single_stack(f: &FlowPanel, server_type: serde_json::Value) -> (i64, String, String) {
    let admin = Cred::Bearer(f.admin_token.clone());
    let name = server_type["name"].as_str().unwrap().to_string();
    let playbook = server_type["stack"]["playbook"]
        .as_str()
        .unwrap()
        .to_string();
    let r = f
        .panel
        .call("POST", "/api/v1/server-types", &admin, Some(server_type))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = f
        .panel
        .call(
            "POST",
            "/api/v1/services",
            &f.owner,
            Some(json!({"site_id": f.site, "server_type": name})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["service"]["id"].as_i64().unwrap();
    let s = f.wait_status(id, "ready").await;
    let hostname = s["hostname"].as_str().unwrap().to_string();
    assert!(f.role_file(id).exists(), "site.yml ran");
    let configure = f.jobs_json(id, "configure").await;
    assert_eq!(configure.len(), 1, "{configure:?}");
    assert_eq!(configure[0]["state"], "succeeded");
    let log = f.job_log(configure[0]["id"].as_i64().unwrap()).await;
    assert!(
        log.contains(&playbook),
        "the stack's run is in the log: {log}"
    );
    (id, hostname, log)
}

/// The value of a `key = value`, `key value` or `KEY = "value"` line in
/// a file of the server's (read from its container's root): the generated
/// secret the role wrote there.
fn setting(root: &Path, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(root.join(file)).unwrap();
    let value = text
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix(key)?;
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
            Some(rest.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in {file}"));
    assert_eq!(value.len(), 32, "{file}: {value}");
    value
}

/// Service `id`'s command's standard output, trimmed; it must succeed.
async fn out_of(f: &FlowPanel, id: i64, cmd: &str) -> String {
    let out = f.ssh_admin(id, cmd).await;
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// WebLab-Deusto from docs/panel.md's JSON: one server `ready` after the
/// panel's playbook and `weblab.yml` in one job; HTTPS through Apache
/// reaches the application, which reaches Redis and MariaDB; plain HTTP
/// redirects; Redis keeps no snapshots and wants the generated password,
/// which is in no job log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weblab_is_a_single_server_type() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let started = Instant::now();
    let (_net, f) = stack_panel(
        Ipv4Addr::new(10, 235, 2, 1),
        WEBLAB_BRIDGE,
        &["playbooks/weblab.yml"],
        1,
    )
    .await;
    let (id, name, log) = single_stack(
        &f,
        json!(
        {"name": "weblab", "cpus": 2, "ram_mb": 2048, "disk_gb": 10, "os_image": "debian-bookworm",
         "stack": {"playbook": "weblab.yml", "groups": ["weblab"],
                   "secrets": ["weblab_db_password", "weblab_redis_password"]}}),
    )
    .await;
    let ready = started.elapsed();
    let root = f.driver.root_dir(&f.prov.vm_name(id));
    let redis_pw = setting(&root, "etc/redis/redis.conf", "requirepass");
    assert!(!log.contains(&redis_pw), "the Redis password is in the log");

    let save = out_of(
        &f,
        id,
        &format!("sudo redis-cli -a '{redis_pw}' --no-auth-warning CONFIG GET save"),
    )
    .await;
    let save: Vec<&str> = save.lines().collect();
    assert_eq!(save.first(), Some(&"save"), "{save:?}");
    assert_eq!(save.get(1).copied().unwrap_or(""), "", "{save:?}");
    let noauth = out_of(&f, id, "redis-cli PING 2>&1").await;
    assert!(noauth.contains("NOAUTH"), "{noauth}");

    let url = format!("https://{name}/weblab/");
    let body = out_of(
        &f,
        id,
        &format!(
            "curl -sS --max-time 10 --cacert /etc/ssl/certs/weblab.pem \
             --resolve {name}:443:127.0.0.1 {url}"
        ),
    )
    .await;
    let app: serde_json::Value = serde_json::from_str(&body).expect("the application's JSON");
    assert_eq!(app["service"], "weblab-deusto", "{app}");
    assert_eq!(app["scheme"], "https", "{app}");
    assert_eq!(app["redis"], "ok", "{app}");
    assert_eq!(app["database"], "ok", "{app}");
    let redirect = out_of(
        &f,
        id,
        &format!(
            "curl -sS --max-time 10 -o /dev/null -w '%{{http_code}} %{{redirect_url}}' \
             --resolve {name}:80:127.0.0.1 http://{name}/weblab/"
        ),
    )
    .await;
    assert_eq!(redirect, format!("301 {url}"));
    eprintln!(
        "stacks_seed_flow: WebLab-Deusto ready after {ready:?}, checked after {:?}",
        started.elapsed()
    );
}

/// The CalipsoPlus backend from docs/panel.md's JSON: one server `ready`
/// after the panel's playbook and `calipsoplus.yml` in one job; the option
/// files are mode 555 and log the Django user in; the site answers through
/// Apache from the database; the three generated
/// secrets are in no job log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calipsoplus_is_a_single_server_type() {
    if !e2e_support::can_run_nspawn() {
        return;
    }
    let started = Instant::now();
    let (_net, f) = stack_panel(
        Ipv4Addr::new(10, 235, 2, 129),
        CALIPSO_BRIDGE,
        &["playbooks/calipsoplus.yml"],
        1,
    )
    .await;
    let (id, name, log) = single_stack(
        &f,
        json!(
        {"name": "calipsoplus", "cpus": 2, "ram_mb": 2048, "disk_gb": 10, "os_image": "debian-bookworm",
         "stack": {"playbook": "calipsoplus.yml", "groups": ["calipsoplus"],
                   "secrets": ["calipso_db_password", "calipso_guacamole_db_password", "calipso_secret_key"]}}),
    )
    .await;
    let ready = started.elapsed();
    let root = f.driver.root_dir(&f.prov.vm_name(id));
    let dbdir = "var/www/calipsoplus/config/database";
    for (file, user) in [("default.cnf", "calipso@localhost"), ("guacamole.cnf", "")] {
        let path = format!("{dbdir}/{file}");
        let mode = std::fs::metadata(root.join(&path)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o555,
            "{file}"
        );
        let pw = setting(&root, &path, "password");
        assert!(!log.contains(&pw), "{file}'s password is in the log");
        if !user.is_empty() {
            let who = out_of(
                &f,
                id,
                &format!("sudo mysql --defaults-file=/{path} -N -e 'select current_user()'"),
            )
            .await;
            assert_eq!(who, user);
        }
    }

    let key = setting(
        &root,
        "var/www/calipsoplus/calipsoplus/local_settings.py",
        "SECRET_KEY",
    );
    assert!(!log.contains(&key), "Django's secret key is in the log");

    let body = out_of(
        &f,
        id,
        &format!(
            "curl -sS --max-time 10 --resolve {name}:80:127.0.0.1 \
             http://{name}/calipsoplus-services/"
        ),
    )
    .await;
    let app: serde_json::Value = serde_json::from_str(&body).expect("the site's JSON");
    assert_eq!(app["service"], "calipsoplus-backend", "{app}");
    assert_eq!(app["users"], 0, "{app}");
    assert_eq!(app["guacamole_database"], "guacamole", "{app}");
    eprintln!(
        "stacks_seed_flow: CalipsoPlus ready after {ready:?}, checked after {:?}",
        started.elapsed()
    );
}
