//! End to end: the systems Keel ships roles for (issue 21), each playbook
//! run by the `keel` binary against fresh full Debian test hosts
//! (systemd-nspawn, see `keel_testhosts::full`), then smoke checks that
//! prove the service works, and a second run that must change nothing.
//!
//! `KEEL_SEED_RUNNER=/path/to/ansible-playbook` runs the same tests with
//! ansible-core instead (it needs the community.general and community.mysql
//! collections, e.g. from the `ansible` package): that is how the roles are
//! checked to be plain Ansible. The recap is read from the human output, so
//! both runners are judged alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_testhosts::full::FullHosts;

/// What the stacks install beyond `keel_testhosts::full::REPO_PACKAGES`,
/// one list for every test here (and the panel's, which installs the same
/// stacks) so the hosts' local repository is built once for all of them.
const STACK_PACKAGES: &[&str] = keel_testhosts::full::SEED_STACK_PACKAGES;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A random secret for one test run (never from the repository).
fn secret(label: &str) -> String {
    let b: [u8; 12] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{label}-{hex}")
}

/// The PLAY RECAP counters of one run, per host, read from the human output.
fn recap(stdout: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut in_recap = false;
    for line in stdout.lines() {
        if line.starts_with("PLAY RECAP") {
            in_recap = true;
            continue;
        }
        if !in_recap {
            continue;
        }
        let Some((host, counters)) = line.split_once(" : ") else {
            continue;
        };
        let counters = counters
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        out.insert(host.trim().to_string(), counters);
    }
    out
}

struct Run {
    stdout: String,
    recap: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Runs `playbook` with Keel (or the runner `KEEL_SEED_RUNNER` names).
fn play(playbook: &str, inventory: &Path, vars: &Path, label: &str) -> Run {
    let runner = std::env::var("KEEL_SEED_RUNNER").ok();
    let mut cmd = match &runner {
        Some(ansible) => {
            let mut c = Command::new(ansible);
            c.env("ANSIBLE_ROLES_PATH", repo_root().join("roles"))
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_FORCE_COLOR", "0");
            c
        }
        None => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
            c.arg("play");
            c
        }
    };
    let t = Instant::now();
    let out = cmd
        .current_dir(repo_root())
        .arg("-i")
        .arg(inventory)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .arg(playbook)
        .output()
        .expect("running the playbook");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "{} {playbook} ({label}) took {:.1?}, exit {}\n{stdout}",
        runner.as_deref().unwrap_or("keel play"),
        t.elapsed(),
        out.status
    );
    assert!(
        out.status.success(),
        "{playbook} ({label}) failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let recap = recap(&stdout);
    assert!(!recap.is_empty(), "no PLAY RECAP in the output");
    Run { stdout, recap }
}

/// Every host of the run: no failure, nothing unreachable; with `idempotent`,
/// nothing changed either.
fn assert_clean(run: &Run, idempotent: bool) {
    for (host, c) in &run.recap {
        assert_eq!(c.get("failed"), Some(&0), "{host}: {c:?}");
        assert_eq!(c.get("unreachable"), Some(&0), "{host}: {c:?}");
        if idempotent {
            assert_eq!(
                c.get("changed"),
                Some(&0),
                "{host} changed on the second run: {c:?}\n{}",
                run.stdout
            );
        }
    }
}

/// `curl` from this machine to `name` on `addr` (no DNS: `--resolve`),
/// trusting only `ca`; returns (status code, redirect target, body).
fn curl(
    url: &str,
    name: &str,
    port: u16,
    addr: &str,
    ca: Option<&Path>,
) -> (String, String, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code} %{redirect_url}",
    ])
    .arg("--resolve")
    .arg(format!("{name}:{port}:{addr}"));
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    let out = c.arg(url).output().expect("running curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, redirect) = last.split_once(' ').unwrap_or((last, ""));
    (code.to_string(), redirect.to_string(), body.to_string())
}

/// Listening TCP sockets inside host `i`: (local address, port).
fn listeners(fh: &FullHosts, i: usize) -> Vec<(String, u16)> {
    fh.sh(i, "ss -ltnH")
        .lines()
        .filter_map(|l| {
            let local = l.split_whitespace().nth(3)?;
            let (addr, port) = local.rsplit_once(':')?;
            Some((addr.to_string(), port.parse().ok()?))
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// WebLab-Deusto (roles/weblab): Apache with a threaded MPM and an
/// HTTP→HTTPS redirect, MariaDB and Redis on loopback only, Redis without
/// snapshots and with a password, the (stand-in) application in a
/// virtualenv under supervisor.
#[test]
fn weblab_deusto_converges_and_serves() {
    let fh = FullHosts::builder()
        .packages(STACK_PACKAGES)
        .names(&["weblab1"])
        .start(1)
        .expect("starting a full host");
    let dir = tempfile::tempdir().unwrap();
    let name = "weblab.keel.test";
    let db_pw = secret("db");
    let redis_pw = secret("redis");
    let inventory = dir.path().join("hosts.ini");
    std::fs::write(
        &inventory,
        format!("{}\n[weblab:children]\ntesthosts\n", fh.inventory_ini("")),
    )
    .unwrap();
    let vars = dir.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::json!({
            "weblab_db_password": db_pw,
            "weblab_redis_password": redis_pw,
            "weblab_server_name": name,
        })
        .to_string(),
    )
    .unwrap();

    let first = play("playbooks/weblab.yml", &inventory, &vars, "first");
    assert_clean(&first, false);
    assert!(
        !first.stdout.contains(&db_pw) && !first.stdout.contains(&redis_pw),
        "a secret reached the output"
    );

    // Redis: no snapshots, a password, loopback only.
    let save = fh.sh(
        0,
        &format!("redis-cli -a '{redis_pw}' --no-auth-warning CONFIG GET save"),
    );
    let save: Vec<&str> = save.lines().collect();
    assert_eq!(save.first(), Some(&"save"), "{save:?}");
    assert_eq!(
        save.get(1).copied().unwrap_or(""),
        "",
        "snapshots are on: {save:?}"
    );
    let noauth = fh.sh(0, "redis-cli PING 2>&1");
    assert!(
        noauth.contains("NOAUTH"),
        "Redis answered without a password: {noauth}"
    );

    // Neither Redis nor MariaDB listens beyond loopback.
    let socks = listeners(&fh, 0);
    for port in [6379u16, 3306] {
        let on: Vec<&String> = socks
            .iter()
            .filter(|(_, p)| *p == port)
            .map(|(a, _)| a)
            .collect();
        assert!(!on.is_empty(), "nothing listens on {port}: {socks:?}");
        for a in on {
            assert!(
                a == "127.0.0.1" || a == "[::1]",
                "port {port} listens on {a}: {socks:?}"
            );
        }
    }

    // Apache: the threaded MPM.
    let mpm = fh.sh(0, "apache2ctl -V 2>/dev/null | grep 'Server MPM'");
    assert!(mpm.contains("event"), "{mpm}");

    // HTTPS through Apache reaches the application, which reaches both
    // backends; plain HTTP redirects to HTTPS.
    let addr = fh.host(0).addr.clone();
    let ca = dir.path().join("weblab.pem");
    std::fs::write(&ca, fh.sh(0, "cat /etc/ssl/certs/weblab.pem")).unwrap();
    let url = format!("https://{name}/weblab/");
    let (code, _, body) = curl(&url, name, 443, &addr, Some(&ca));
    assert_eq!(code, "200", "{body}");
    let app: serde_json::Value = serde_json::from_str(&body).expect("the application's JSON");
    assert_eq!(app["service"], "weblab-deusto");
    assert_eq!(app["scheme"], "https");
    assert_eq!(app["redis"], "ok", "{app}");
    assert_eq!(app["database"], "ok", "{app}");
    let (code, redirect, _) = curl(&format!("http://{name}/weblab/"), name, 80, &addr, None);
    assert_eq!((code.as_str(), redirect.as_str()), ("301", url.as_str()));

    // The application runs under the service user, from the virtualenv,
    // and supervisor starts it again when it is killed.
    let pid = fh.sh(0, "supervisorctl pid weblab").trim().to_string();
    assert!(
        pid.parse::<u32>().is_ok_and(|p| p > 0),
        "supervisor pid: {pid}"
    );
    let cmdline = fh.sh(0, &format!("tr '\\0' ' ' < /proc/{pid}/cmdline"));
    assert!(
        cmdline.starts_with("/srv/weblab/env/bin/python"),
        "{cmdline}"
    );
    let user = fh.sh(0, &format!("ps -o user= -p {pid}"));
    assert_eq!(user.trim(), "weblab");
    fh.sh(0, &format!("kill -9 {pid}"));
    wait_until(
        "supervisor to restart the application",
        Duration::from_secs(60),
        || {
            let now = fh.sh(0, "supervisorctl pid weblab").trim().to_string();
            now != pid && now.parse::<u32>().is_ok_and(|p| p > 0)
        },
    );
    wait_until(
        "the restarted application to answer",
        Duration::from_secs(60),
        || {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "5",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                ])
                .arg("--resolve")
                .arg(format!("{name}:443:{addr}"))
                .arg("--cacert")
                .arg(&ca)
                .arg(&url)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout) == "200"
        },
    );

    // Second run: nothing to change.
    let second = play("playbooks/weblab.yml", &inventory, &vars, "second");
    assert_clean(&second, true);
}

/// The CalipsoPlus backend (roles/calipsoplus): Django on MariaDB with the
/// guide's read-only option files, uwsgi with an apps-enabled ini, Apache
/// in front, the guide's quotas as defaults.
#[test]
fn calipsoplus_converges_and_serves() {
    let fh = FullHosts::builder()
        .packages(STACK_PACKAGES)
        .names(&["calipso1"])
        .start(1)
        .expect("starting a full host");
    let dir = tempfile::tempdir().unwrap();
    let name = "calipso.keel.test";
    let db_pw = secret("db");
    let guac_pw = secret("guac");
    let inventory = dir.path().join("hosts.ini");
    std::fs::write(
        &inventory,
        format!(
            "{}\n[calipsoplus:children]\ntesthosts\n",
            fh.inventory_ini("")
        ),
    )
    .unwrap();
    let vars = dir.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::json!({
            "calipso_db_password": db_pw,
            "calipso_guacamole_db_password": guac_pw,
            "calipso_secret_key": secret("django-secret-key-for-the-test"),
            "calipso_server_name": name,
        })
        .to_string(),
    )
    .unwrap();

    let first = play("playbooks/calipsoplus.yml", &inventory, &vars, "first");
    assert_clean(&first, false);
    assert!(
        !first.stdout.contains(&db_pw) && !first.stdout.contains(&guac_pw),
        "a secret reached the output"
    );

    // The option files: read-only as the guide says, with the right
    // credentials in them (the Django user can log in with default.cnf).
    for f in ["default.cnf", "guacamole.cnf"] {
        let mode = fh.sh(
            0,
            &format!("stat -c %a /var/www/calipsoplus/config/database/{f}"),
        );
        assert_eq!(mode.trim(), "555", "{f}");
    }
    let who = fh.sh(
        0,
        "mysql --defaults-file=/var/www/calipsoplus/config/database/default.cnf -N -e 'select current_user()'",
    );
    assert_eq!(who.trim(), "calipso@localhost");
    let who = fh.sh(
        0,
        "mysql --defaults-file=/var/www/calipsoplus/config/database/guacamole.cnf -N -e 'select database()'",
    );
    assert_eq!(who.trim(), "guacamole");

    // uwsgi runs the application from the apps-enabled ini.
    let link = fh.sh(0, "readlink /etc/uwsgi/apps-enabled/calipsoplus.ini");
    assert_eq!(link.trim(), "../apps-available/calipsoplus.ini");

    // Django's own system checks pass on the deployed project.
    let check = fh.exec(0, "cd /var/www/calipsoplus && ./manage.py check");
    assert!(
        check.status.success(),
        "manage.py check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("no issues"));

    // The site answers through Apache and uwsgi, from the database, with the
    // guide's quotas.
    let addr = fh.host(0).addr.clone();
    let (code, _, body) = curl(
        &format!("http://{name}/calipsoplus-services/"),
        name,
        80,
        &addr,
        None,
    );
    assert_eq!(code, "200", "{body}");
    let app: serde_json::Value = serde_json::from_str(&body).expect("the site's JSON");
    assert_eq!(app["service"], "calipsoplus-backend");
    assert_eq!(
        app["users"], 0,
        "the auth tables exist and are empty: {app}"
    );
    assert_eq!(app["guacamole_database"], "guacamole");
    assert_eq!(
        app["quotas"],
        serde_json::json!({"max_containers": 5, "cpus": 5, "memory": "30G", "disk": "80G"})
    );
    // Apache reached uwsgi, not a stray server: stop uwsgi and the proxy fails.
    fh.sh(0, "systemctl stop uwsgi");
    let (code, _, _) = curl(
        &format!("http://{name}/calipsoplus-services/"),
        name,
        80,
        &addr,
        None,
    );
    assert_eq!(code, "503");
    fh.sh(0, "systemctl start uwsgi");

    let second = play("playbooks/calipsoplus.yml", &inventory, &vars, "second");
    assert_clean(&second, true);
}

/// A private network for e-mission's four hosts: a bridge in a namespace of
/// its own, a second interface (`eth1`) in each host, and an "outside"
/// namespace on the same bridge that is none of the application hosts.
/// Deleted (with every veth) when dropped.
struct PrivateNet {
    bridge_ns: String,
    outside_ns: String,
    /// `10.79.S`, S being the harness's slot (from `keelf-S-i`).
    prefix: String,
}

impl PrivateNet {
    fn ip(args: &str) {
        let st = Command::new("ip")
            .args(args.split_whitespace())
            .status()
            .expect("running ip");
        assert!(st.success(), "ip {args}");
    }

    /// Joins host `k` to `10.79.S.(10+k)/24` ([`PrivateNet::addr`]), and the
    /// outside namespace at `10.79.S.50`.
    fn new(fh: &FullHosts) -> PrivateNet {
        let tag = fh.host(0).netns.split('-').nth(1).unwrap().to_string();
        let net = PrivateNet {
            bridge_ns: format!("keelem-{tag}"),
            outside_ns: format!("keelem-{tag}-out"),
            prefix: format!("10.79.{tag}"),
        };
        for ns in [&net.bridge_ns, &net.outside_ns] {
            // Left over by a killed run, if at all.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
            Self::ip(&format!("netns add {ns}"));
        }
        Self::ip(&format!("-n {} link add br0 type bridge", net.bridge_ns));
        Self::ip(&format!("-n {} link set br0 up", net.bridge_ns));
        let join = |k: usize, ns: &str, addr: &str| {
            let port = format!("em{tag}p{k}");
            Self::ip(&format!(
                "-n {} link add {port} type veth peer name eth1 netns {ns}",
                net.bridge_ns
            ));
            Self::ip(&format!(
                "-n {} link set {port} master br0 up",
                net.bridge_ns
            ));
            Self::ip(&format!("-n {ns} addr add {addr}/24 dev eth1"));
            Self::ip(&format!("-n {ns} link set eth1 up"));
        };
        for (k, h) in fh.hosts.iter().enumerate() {
            join(k, &h.netns, &net.addr(k));
        }
        join(9, &net.outside_ns, &format!("{}.50", net.prefix));
        Self::ip(&format!("-n {} link set lo up", net.outside_ns));
        net
    }

    /// Host `i`'s address on the private network.
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }

    /// Runs `cmd` with `sh -c` in the outside namespace.
    fn outside(&self, cmd: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.outside_ns, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        for ns in [&self.bridge_ns, &self.outside_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Whether a TCP connection from inside host `i` to `addr:port` opens.
fn connects_from(fh: &FullHosts, i: usize, addr: &str, port: u16) -> bool {
    fh.exec(
        i,
        &format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{addr}/{port}'"),
    )
    .status
    .success()
}

/// The e-mission multi-tier stack (roles/emission_*): four hosts, the
/// database on a private network only the three application hosts reach,
/// and the database host reached by Keel only through webapp as a jump host.
#[test]
fn emission_stack_through_a_jump_host() {
    const WEBAPP: usize = 0;
    const ANALYSIS: usize = 1;
    const NOTEBOOK: usize = 2;
    const DB: usize = 3;
    let fh = FullHosts::builder()
        .packages(STACK_PACKAGES)
        .names(&["webapp", "analysis", "notebook", "db"])
        .start(4)
        .expect("starting four full hosts");
    let net = PrivateNet::new(&fh);
    let private = |i: usize| net.addr(i);
    // The database host loses its link to this machine: from here on it is
    // reachable only over the private network.
    let db_public = fh.host(DB).addr.clone();
    PrivateNet::ip(&format!("-n {} link del eth0", fh.host(DB).netns));
    let direct = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=3"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", fh.known_hosts().display()))
        .arg("-i")
        .arg(&fh.client_key)
        .arg(format!("root@{db_public}"))
        .arg("true")
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "the database host must not be reachable directly"
    );
    assert!(connects_from(&fh, WEBAPP, &private(DB), 22));

    let dir = tempfile::tempdir().unwrap();
    // An OpenSSH client configuration: one known_hosts for every host
    // (the database's key under its private address), and the jump.
    let kh = dir.path().join("known_hosts");
    let mut known = std::fs::read_to_string(fh.known_hosts()).unwrap();
    known.push_str(&format!("{} {}\n", private(DB), fh.host(DB).host_key));
    std::fs::write(&kh, known).unwrap();
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host {db}\n  ProxyJump root@{jump}\n\nHost *\n  User root\n  IdentityFile {key}\n  \
             UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
            db = private(DB),
            jump = fh.host(WEBAPP).addr,
            key = fh.client_key.display(),
            kh = kh.display(),
        ),
    )
    .unwrap();
    let common = format!("ansible_ssh_common_args='-F {}'", ssh_config.display());
    let line = |i: usize, host: &str| {
        format!(
            "{} ansible_host={host} ansible_user=root {common} emission_private_ip={}\n",
            fh.host(i).name,
            private(i)
        )
    };
    let inventory = dir.path().join("hosts.ini");
    std::fs::write(
        &inventory,
        format!(
            "[emission_webapp]\n{}\n[emission_analysis]\n{}\n[emission_notebook]\n{}\n[emission_db]\n{}",
            line(WEBAPP, &fh.host(WEBAPP).addr),
            line(ANALYSIS, &fh.host(ANALYSIS).addr),
            line(NOTEBOOK, &fh.host(NOTEBOOK).addr),
            line(DB, &private(DB)),
        ),
    )
    .unwrap();
    let rw_pw = secret("rw");
    let ro_pw = secret("ro");
    let token = secret("token");
    let vars = dir.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::json!({
            "emission_db_rw_password": rw_pw,
            "emission_db_ro_password": ro_pw,
            "emission_notebook_token": token,
            "emission_analysis_interval": "3s",
        })
        .to_string(),
    )
    .unwrap();

    let first = play("playbooks/emission.yml", &inventory, &vars, "first");
    assert_clean(&first, false);
    assert_eq!(first.recap.len(), 4, "{:?}", first.recap);
    for pw in [&rw_pw, &ro_pw, &token] {
        assert!(
            !first.stdout.contains(pw.as_str()),
            "a secret reached the output"
        );
    }
    // The run reached the database host from webapp's private address.
    let auth = fh.sh(DB, "journalctl -u ssh --no-pager -o cat");
    assert!(
        auth.contains(&format!(
            "Accepted publickey for root from {}",
            private(WEBAPP)
        )),
        "{auth}"
    );

    // The database listens on its private address only, and the firewall
    // lets in the application hosts only.
    let socks = listeners(&fh, DB);
    let pg: Vec<&String> = socks
        .iter()
        .filter(|(_, p)| *p == 5432)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(pg, vec![&private(DB)], "{socks:?}");
    for app in [WEBAPP, ANALYSIS, NOTEBOOK] {
        assert!(connects_from(&fh, app, &private(DB), 5432), "from {app}");
    }
    let refused = net.outside(&format!(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/{}/5432'",
        private(DB)
    ));
    assert!(
        !refused.status.success(),
        "the database answered the outside namespace"
    );
    let ssh_port = net.outside(&format!(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/{}/22'",
        private(DB)
    ));
    assert!(
        ssh_port.status.success(),
        "the outside namespace is on the network"
    );

    let psql = |i: usize, user: &str, sys_user: &str, sql: &str| {
        fh.exec(
            i,
            &format!(
                "su -s /bin/sh {sys_user} -c \"psql -X -v ON_ERROR_STOP=1 -h {} -U {user} -d emission -tA -c '{sql}'\"",
                private(DB)
            ),
        )
    };
    // The read-write user writes; the read-only user reads and cannot write.
    let w = psql(
        WEBAPP,
        "emission_rw",
        "emission",
        "CREATE TABLE IF NOT EXISTS smoke (x int); INSERT INTO smoke VALUES (1)",
    );
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let r = psql(
        NOTEBOOK,
        "emission_ro",
        "notebook",
        "SELECT count(*) FROM smoke",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "1");
    let denied = psql(
        NOTEBOOK,
        "emission_ro",
        "notebook",
        "INSERT INTO smoke VALUES (2)",
    );
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // The analysis timer fires, again and again.
    assert_eq!(
        fh.sh(ANALYSIS, "systemctl is-active emission-analysis.timer")
            .trim(),
        "active"
    );
    wait_until("two analysis runs", Duration::from_secs(90), || {
        let out = psql(
            NOTEBOOK,
            "emission_ro",
            "notebook",
            "SELECT count(*) FROM analysis_runs",
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .is_ok_and(|n| n >= 2)
    });

    // The notebook answers on loopback only, as its user, with the token.
    wait_until("the notebook server", Duration::from_secs(90), || {
        listeners(&fh, NOTEBOOK).iter().any(|(_, p)| *p == 8888)
    });
    let nb: Vec<String> = listeners(&fh, NOTEBOOK)
        .into_iter()
        .filter(|(_, p)| *p == 8888)
        .map(|(a, _)| a)
        .collect();
    assert_eq!(nb, vec!["127.0.0.1".to_string()]);
    let owner = fh.sh(
        NOTEBOOK,
        "ps -o user= -p $(systemctl show -p MainPID --value emission-notebook)",
    );
    assert_eq!(owner.trim(), "notebook");
    let api = |auth: bool| {
        let header = if auth {
            format!("-H 'Authorization: token {token}'")
        } else {
            String::new()
        };
        fh.sh(
            NOTEBOOK,
            &format!("curl -s -o /dev/null -w '%{{http_code}}' {header} http://127.0.0.1:8888/api/status"),
        )
    };
    assert_eq!(api(true), "200");
    assert_eq!(api(false), "403");

    let second = play("playbooks/emission.yml", &inventory, &vars, "second");
    assert_clean(&second, true);
}

/// CC-Server (roles/ccpki, ccnode, ccserver): the application installed for
/// its service user without root, config.toml from variables, gunicorn
/// behind Apache with TLS, and a Docker node whose TCP endpoint takes only
/// clients with a certificate from the playbook's CA. Containers are
/// created and removed through that endpoint but not started: runc cannot
/// create cgroups inside the nspawn host (docs/stacks.md).
#[test]
fn ccserver_with_a_tls_docker_node() {
    const SERVER: usize = 0;
    const NODE: usize = 1;
    let fh = FullHosts::builder()
        .packages(STACK_PACKAGES)
        .names(&["cc1", "node1"])
        .start(2)
        .expect("starting two full hosts");
    // The full hosts reach only this machine: the server and the node
    // talk over a private network, as a cluster's hosts would.
    let net = PrivateNet::new(&fh);
    let node_addr = net.addr(NODE);
    let dir = tempfile::tempdir().unwrap();
    let name = "cc.keel.test";
    let mut lines: Vec<String> = fh
        .inventory_ini("")
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    lines[NODE].push_str(&format!(" cc_node_address={node_addr}"));
    let inventory = dir.path().join("hosts.ini");
    std::fs::write(
        &inventory,
        format!(
            "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n[ccserver]\n{}\n[ccnodes]\n{}\n",
            lines[SERVER], lines[NODE]
        ),
    )
    .unwrap();
    let pki = dir.path().join("pki");
    let vars = dir.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::json!({
            "cc_pki_dir": pki,
            "cc_server_name": name,
            "cc_thread_limit": 5,
            "cc_max_task_trials": 4,
            "cc_num_login_attempts": 6,
            "cc_block_for_seconds": 90,
            "cc_tokens_valid_for_seconds": 3600,
            "cc_dead_node_notification_url": "https://hooks.keel.test/cc",
            "cc_dead_node_notification_auth_user": "notifier",
            // systemd-nspawn gives the node a read-only /proc/sys.
            "cc_docker_extra": {"ip-forward": false, "iptables": false, "bridge": "none"},
        })
        .to_string(),
    )
    .unwrap();

    let first = play("playbooks/ccserver.yml", &inventory, &vars, "first");
    assert_clean(&first, false);

    // config.toml has the chosen values.
    let conf = fh.sh(
        SERVER,
        "python3 -c 'import tomllib, json, sys; print(json.dumps(tomllib.load(open(sys.argv[1], \"rb\"))))' \
         /home/ccuser/.config/cc-server/config.toml",
    );
    let conf: serde_json::Value = serde_json::from_str(&conf).expect("config.toml parses");
    assert_eq!(conf["docker"]["thread_limit"], 5, "{conf}");
    assert_eq!(conf["defaults"]["error_handling"]["max_task_trials"], 4);
    assert_eq!(
        conf["defaults"]["error_handling"]["dead_node_notification"]["url"],
        "https://hooks.keel.test/cc"
    );
    let auth = &conf["defaults"]["authorization"];
    assert_eq!(
        (
            &auth["num_login_attempts"],
            &auth["block_for_seconds"],
            &auth["tokens_valid_for_seconds"]
        ),
        (
            &serde_json::json!(6),
            &serde_json::json!(90),
            &serde_json::json!(3600)
        )
    );
    assert_eq!(
        conf["docker"]["nodes"]["node1"]["base_url"],
        format!("tcp://{node_addr}:2376")
    );
    assert_eq!(
        fh.sh(
            SERVER,
            "stat -c %a /home/ccuser/.config/cc-server/config.toml"
        )
        .trim(),
        "600"
    );

    // Installed for the service user, without root, and run as that user.
    let owner = fh.sh(
        SERVER,
        "stat -c %U $(/home/ccuser/.local/cc-server/bin/python -c 'import cc_server, os; print(os.path.dirname(cc_server.__file__))')",
    );
    assert_eq!(owner.trim(), "ccuser");
    let user = fh.sh(
        SERVER,
        "ps -o user= -p $(systemctl show -p MainPID --value cc-server)",
    );
    assert_eq!(user.trim(), "ccuser");

    // The API answers through Apache over TLS and reaches the node.
    let ca = dir.path().join("cc.pem");
    std::fs::write(&ca, fh.sh(SERVER, "cat /etc/ssl/certs/cc-server.pem")).unwrap();
    let addr = fh.host(SERVER).addr.clone();
    let mut answer = serde_json::Value::Null;
    wait_until("the CC-Server API", Duration::from_secs(60), || {
        let (code, _, body) = curl(&format!("https://{name}/cc/"), name, 443, &addr, Some(&ca));
        if code != "200" {
            return false;
        }
        answer = serde_json::from_str(&body).expect("the API's JSON");
        true
    });
    assert_eq!(answer["service"], "cc-server");
    assert_eq!(answer["thread_limit"], 5);
    assert_eq!(answer["nodes"]["node1"], "ok", "{answer}");

    // The node runs a container for the server host with the client
    // certificate, and refuses a client without one.
    fh.sh(
        NODE,
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null && \
         mkdir -p /tmp/img/bin && cp /bin/busybox /tmp/img/bin/ && ln -sf busybox /tmp/img/bin/true && \
         tar -C /tmp/img -c . | docker import - keel/busybox:1 >/dev/null",
    );
    let tls = "--cacert /home/ccuser/.config/cc-server/tls/ca.pem \
               --cert /home/ccuser/.config/cc-server/tls/client.pem \
               --key /home/ccuser/.config/cc-server/tls/client-key.pem";
    let api = format!("https://{node_addr}:2376");
    fh.sh(
        SERVER,
        "printf '%s' '{\"Image\":\"keel/busybox:1\",\"Cmd\":[\"/bin/true\"],\"HostConfig\":{\"NetworkMode\":\"none\"}}' > /tmp/create.json",
    );
    let created = fh.sh(
        SERVER,
        &format!(
            "curl -sS --fail {tls} -H 'Content-Type: application/json' -d @/tmp/create.json {api}/containers/create"
        ),
    );
    let created: serde_json::Value = serde_json::from_str(&created).expect("create answer");
    let id = created["Id"].as_str().expect("a container id").to_string();
    // The node is a systemd-nspawn container, which mounts this machine's
    // cgroup v1 hierarchies read-only: runc could not make the container's
    // cgroups ("mkdir /sys/fs/cgroup/cpuset/docker: read-only file
    // system"). A real node has them writable; the test host gets the same
    // by remounting them read-write (a test-host matter, not the role's).
    fh.sh(
        NODE,
        "awk '$3 == \"cgroup\" {print $2}' /proc/mounts | \
         while read -r m; do mount -o remount,bind,rw \"$m\"; done",
    );
    let started = fh.sh(
        SERVER,
        &format!("curl -sS -w ' %{{http_code}}' {tls} -X POST {api}/containers/{id}/start"),
    );
    assert!(
        started.ends_with(" 204"),
        "the node did not start the container: {started}"
    );
    let waited = fh.sh(
        SERVER,
        &format!("curl -sS --fail {tls} -X POST {api}/containers/{id}/wait"),
    );
    let waited: serde_json::Value = serde_json::from_str(&waited).expect("wait answer");
    assert_eq!(
        waited["StatusCode"], 0,
        "the container ran /bin/true: {waited}"
    );
    // The client certificate also allows removing it.
    let removed = fh.sh(
        SERVER,
        &format!("curl -sS -o /dev/null -w '%{{http_code}}' {tls} -X DELETE '{api}/containers/{id}?force=true'"),
    );
    assert_eq!(removed, "204");
    let gone = fh.sh(
        SERVER,
        &format!("curl -sS -o /dev/null -w '%{{http_code}}' {tls} {api}/containers/{id}/json"),
    );
    assert_eq!(gone, "404");
    let no_cert = fh.exec(
        SERVER,
        &format!("curl -sS --cacert /home/ccuser/.config/cc-server/tls/ca.pem {api}/_ping"),
    );
    assert!(
        !no_cert.status.success(),
        "the node answered a client without a certificate"
    );
    assert!(
        !connects_from(&fh, SERVER, &node_addr, 2375),
        "plain Docker API port open"
    );

    let second = play("playbooks/ccserver.yml", &inventory, &vars, "second");
    assert_clean(&second, true);
}
