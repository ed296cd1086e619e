//! End to end: the seed's `playbooks/mwsclients.yml` (roles common,
//! mwscommon, metrics_service, mwsclient) run by the `keel` binary against
//! two bare full Debian test hosts (systemd-nspawn, see
//! `keel_testhosts::full`), then the real state checked on the hosts:
//! packages, Apache answering HTTP from here, MariaDB's root password, the
//! admin user and its key, handlers fired once, a second run changing
//! nothing, and `-t base_software` running only those tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keel_testhosts::full::FullHosts;
use serde_json::Value;

const DB_ROOT_PW: &str = "Keel-db-r00t";
const ADMIN: &str = "mwsadmin";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One `keel play` run: its output and its JSON events.
struct Run {
    stdout: String,
    events: Vec<Value>,
}

impl Run {
    /// The PLAY RECAP counters per host.
    fn recap(&self) -> BTreeMap<String, Value> {
        let recap = self
            .events
            .iter()
            .rfind(|e| e["event"] == "recap")
            .expect("a recap event");
        recap["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].as_str().unwrap().to_string(), pair[1].clone()))
            .collect()
    }

    /// Per task name: the hosts that reported a result, with their status.
    /// Loop items count (Keel, like Ansible, reports a loop's summary only
    /// when it failed or skipped), so a loop task may appear once per item.
    fn results(&self, handler: bool) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut current: Option<(String, bool)> = None;
        for e in &self.events {
            match e["event"].as_str() {
                Some("task_start") => {
                    // Role tasks are named `role : task`.
                    let name = e["name"].as_str().unwrap_or_default();
                    let name = name.rsplit(" : ").next().unwrap_or(name);
                    current = Some((name.to_string(), e["handler"].as_bool().unwrap_or(false)))
                }
                Some("host_result") => {
                    if let Some((name, h)) = &current {
                        if *h == handler {
                            out.push((
                                name.clone(),
                                e["host"].as_str().unwrap().to_string(),
                                e["status"].as_str().unwrap().to_string(),
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// How often handler `name` ran on `host`.
    fn handler_runs(&self, name: &str, host: &str) -> usize {
        self.results(true)
            .iter()
            .filter(|(n, h, s)| n == name && h == host && s != "skipped")
            .count()
    }
}

fn keel_play(dir: &Path, inventory: &Path, vars: &Path, extra: &[&str], label: &str) -> Run {
    let events = dir.join(format!("events-{label}.jsonl"));
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo_root())
        .arg("play")
        .arg("-i")
        .arg(inventory)
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .args(["--events", "json", "--events-to"])
        .arg(&events)
        .args(extra)
        .arg("playbooks/mwsclients.yml")
        .output()
        .expect("running keel");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "keel play ({label}) took {:.1?}, exit {}\n{stdout}",
        t.elapsed(),
        out.status
    );
    assert!(
        out.status.success(),
        "keel play ({label}) failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&events).expect("reading events");
    let events = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an event is JSON"))
        .collect();
    Run { stdout, events }
}

/// A plain HTTP/1.0 GET from this machine: (status line, body).
fn http_get(addr: &str, host: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(
        &format!("{addr}:80").parse().unwrap(),
        Duration::from_secs(5),
    )
    .expect("connecting to port 80");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn mwsclients_playbook_configures_bare_hosts() {
    let fh = FullHosts::start(2).expect("starting two full hosts");
    eprintln!(
        "full hosts up: repo {:.1?} ({}), boot {:.1?}",
        fh.timings.repo,
        if fh.timings.repo_cold {
            "cold"
        } else {
            "cached"
        },
        fh.timings.boot_all
    );
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = fh.hosts.iter().map(|h| h.name.clone()).collect();

    // Bare hosts: none of the role's software yet.
    for i in 0..2 {
        assert!(!fh.exec(i, "dpkg -s apache2").status.success());
        assert!(!fh
            .exec(i, &format!("getent passwd {ADMIN}"))
            .status
            .success());
    }

    let admin_key = dir.path().join("admin_key");
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "mws-admin@keel-test",
            "-f",
        ])
        .arg(&admin_key)
        .status()
        .unwrap();
    assert!(st.success());
    let admin_pub = std::fs::read_to_string(admin_key.with_extension("pub")).unwrap();
    let admin_pub = admin_pub.trim().to_string();

    let inventory = dir.path().join("hosts.ini");
    std::fs::write(
        &inventory,
        format!(
            "{}\n[mwsclients:children]\ntesthosts\n",
            fh.inventory_ini("")
        ),
    )
    .unwrap();
    let vars = dir.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::json!({
            "mws_admin_keys": [admin_pub],
            "mws_mysql_root_password": DB_ROOT_PW,
        })
        .to_string(),
    )
    .unwrap();

    // The base image comes with the roles' package layer and two of their
    // settings baked in (images/package-layer.yml); undo those settings so
    // the first run starts from bare hosts and every handler has a reason
    // to run.
    for i in 0..names.len() {
        fh.sh(
            i,
            "sed -i 's/^PasswordAuthentication no$/#PasswordAuthentication yes/' /etc/ssh/sshd_config \
             && rm -f /etc/default/prometheus-node-exporter",
        );
    }

    // First run: from bare to configured.
    let first = keel_play(dir.path(), &inventory, &vars, &[], "first");
    let recap = first.recap();
    for n in &names {
        let s = &recap[n];
        assert_eq!(s["failed"], 0, "{n}: {s}");
        assert_eq!(s["unreachable"], 0, "{n}: {s}");
        assert!(s["changed"].as_u64().unwrap() > 5, "{n}: {s}");
        for handler in ["reload Apache", "restart ssh", "restart node exporter"] {
            assert_eq!(
                first.handler_runs(handler, n),
                1,
                "handler {handler:?} on {n} should run exactly once"
            );
        }
        assert_eq!(
            first.handler_runs("reboot", n),
            0,
            "no reboot in a container"
        );
    }
    // The static network task is skipped inside containers.
    let net: Vec<String> = first
        .results(false)
        .into_iter()
        .filter(|(t, _, _)| t == "static network configuration")
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(net, vec!["skipped", "skipped"]);

    for (i, n) in names.iter().enumerate() {
        for pkg in [
            "apache2",
            "mariadb-server",
            "git",
            "screen",
            "vim",
            "prometheus-node-exporter",
        ] {
            let st = fh.sh(i, &format!("dpkg -s {pkg}"));
            assert!(
                st.contains("Status: install ok installed"),
                "{n} {pkg}: {st}"
            );
        }
        for unit in ["apache2", "mariadb", "prometheus-node-exporter", "ssh"] {
            // `state: started` counts a unit that is still activating as
            // started (ansible-core's systemd module does too), so on a
            // loaded machine MariaDB may still be starting when the play
            // ends. Wait for it to leave the transitional states, then
            // require "active": a unit that failed to start shows as
            // "failed" or "inactive" and still fails here.
            let settle = format!(
                "for _ in $(seq 180); do s=$(systemctl is-active {unit}); \
                 case $s in activating|reloading) sleep 1;; *) break;; esac; done; echo $s"
            );
            assert_eq!(fh.sh(i, &settle).trim(), "active", "{n} {unit}");
            assert_eq!(
                fh.sh(i, &format!("systemctl is-enabled {unit}")).trim(),
                "enabled",
                "{n} {unit}"
            );
        }
        // Apache's default vhost, seen from this machine.
        let (status, body) = http_get(&fh.host(i).addr, n);
        assert!(status.contains(" 200 "), "{n}: {status}");
        assert!(body.contains(&format!("<h1>{n}</h1>")), "{n}: {body}");
        assert!(body.contains("configured by Keel"));

        // MariaDB: the password from the var works, no password does not.
        let ok = fh.exec(
            i,
            &format!("mysql -h 127.0.0.1 -uroot -p'{DB_ROOT_PW}' -N -e 'select 1'"),
        );
        assert!(
            ok.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "1");
        for cmd in [
            "mysql -h 127.0.0.1 -uroot -e 'select 1'".to_string(),
            "mysql -h 127.0.0.1 -uroot -pwrong -e 'select 1'".to_string(),
            // Another OS user cannot ride on unix_socket auth as root.
            "su -s /bin/sh keeltest -c \"mysql -uroot -e 'select 1'\"".to_string(),
        ] {
            let out = fh.exec(i, &cmd);
            assert!(!out.status.success(), "{n}: `{cmd}` should be refused");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Access denied"),
                "{n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sock = fh.exec(
            i,
            &format!(
                "su -s /bin/sh keeltest -c \"mysql -uroot -p'{DB_ROOT_PW}' -N -e 'select 2'\""
            ),
        );
        assert_eq!(String::from_utf8_lossy(&sock.stdout).trim(), "2");

        // The admin user, its key, its sudo rule.
        let pw = fh.sh(i, &format!("getent passwd {ADMIN}"));
        assert!(pw.trim_end().ends_with(":/bin/bash"), "{pw}");
        assert!(fh
            .sh(i, &format!("id -nG {ADMIN}"))
            .split_whitespace()
            .any(|g| g == "sudo"));
        let keys = fh.sh(i, &format!("cat ~{ADMIN}/.ssh/authorized_keys"));
        assert_eq!(keys.lines().collect::<Vec<_>>(), vec![admin_pub.as_str()]);
        let out = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", fh.known_hosts().display()))
            .arg("-i")
            .arg(&admin_key)
            .arg(format!("{ADMIN}@{}", fh.host(i).addr))
            .arg("sudo -n id -u")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "{n}: admin ssh + sudo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(fh
            .sh(i, "cat /etc/ssh/sshd_config")
            .lines()
            .any(|l| l == "PasswordAuthentication no"));
        assert!(fh.sh(i, "cat /etc/motd").contains("managed by Keel"));
    }

    // Second run: nothing to change, no handler.
    let second = keel_play(dir.path(), &inventory, &vars, &[], "second");
    let recap = second.recap();
    for n in &names {
        let s = &recap[n];
        assert_eq!(s["changed"], 0, "{n} changed on the second run: {s}");
        assert_eq!(s["failed"], 0, "{n}: {s}");
        assert!(
            second.results(true).is_empty(),
            "handlers ran on the second run"
        );
    }
    assert!(second.stdout.contains("changed=0"));

    // Check mode on a configured host predicts no change either.
    let check = keel_play(dir.path(), &inventory, &vars, &["--check"], "check");
    for (n, s) in check.recap() {
        assert_eq!(s["changed"], 0, "{n} in check mode: {s}");
        assert_eq!(s["failed"], 0, "{n} in check mode: {s}");
    }

    // Tags: undo one tagged and one untagged thing, run only base_software.
    fh.sh(
        0,
        "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q screen",
    );
    fh.sh(0, "echo local edit > /etc/motd");
    let tagged = keel_play(
        dir.path(),
        &inventory,
        &vars,
        &["-t", "base_software"],
        "tagged",
    );
    let ran: BTreeSet<String> = tagged
        .results(false)
        .into_iter()
        .filter(|(_, _, s)| s != "skipped")
        .map(|(t, _, _)| t)
        .collect();
    let allowed: BTreeSet<String> = [
        "Gathering Facts",
        "find the common packages that are missing",
        "install common packages",
        "find out whether the node metrics exporter is installed",
        "install the node metrics exporter",
        "install base software",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert!(
        ran.is_subset(&allowed),
        "tasks run with -t base_software: {ran:?}"
    );
    assert!(ran.contains("install base software"), "{ran:?}");
    assert!(fh.sh(0, "dpkg -s screen").contains("install ok installed"));
    assert_eq!(fh.sh(0, "cat /etc/motd"), "local edit\n");
    let recap = tagged.recap();
    assert_eq!(recap[&names[0]]["changed"], 1, "{:?}", recap);
    assert_eq!(recap[&names[1]]["changed"], 0, "{:?}", recap);
}
