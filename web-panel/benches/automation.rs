//! Playbook-run benchmarks (issue 16, "Scale"), against real sshd test
//! hosts (`tests/hosts`, loopback addresses `127.77.<slot>.<n>`):
//!
//! - `latency`: launch-to-first-task and the whole run, for a job template
//!   launched through the panel (the domain's `templates::launch`, the
//!   queue, an in-process worker, the engine) and for `keel play` of the
//!   same playbook and inventory, alternately (A B A B…), one host, two
//!   tasks. The panel's first task is the `at_ms` the job log stamped on
//!   the run's first `task_start` line, minus the launch; `keel play`'s is
//!   the moment its first `TASK [` line reaches our pipe, minus the spawn.
//! - `fanout`: one run over `KEEL_BENCH_HOSTS` servers (default 500) of
//!   the panel's own dynamic inventory: that many services are created
//!   through `services::servers::create`, marked ready, and pointed at the
//!   sshd hosts (`vm_provisioning.ssh_endpoint`, a known_hosts file per VM
//!   as the panel writes them). One test-host slot is a /24 of loopback
//!   addresses, so at most 250 sshds run; beyond that each sshd serves
//!   several inventory hosts. Reported: launch to first task, launch to
//!   the run's end, the bench process's peak RSS (worker and engine; the
//!   database server is another process), the job-log lines stored and how
//!   many of them were readable while the run was still `running`.
//!
//! Environment: `KEEL_BENCH_MODE` (`latency`, `fanout`, default both),
//! `KEEL_BENCH_HOSTS`, `KEEL_BENCH_SSHDS` (default min(hosts, 250)),
//! `KEEL_BENCH_FORKS` (default 100), `KEEL_BENCH_REPS` (latency pairs,
//! default 10), `KEEL_BENCH_DB` (`postgres`, default, or `sqlite`),
//! `KEEL_BIN` (the `keel` binary; default: `keel` beside this bench's
//! target directory). Run (figures in docs/benchmarks.md):
//! `cargo build -p keel-engine --bin keel && cargo bench -p keel-panel
//! --bench automation --features testsupport`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_panel::automation::{self, catalog, templates, Automation};
use keel_panel::config::Config;
use keel_panel::db::{tx_conn, Db};
use keel_panel::domain::Principal;
use keel_panel::provision::Provisioner;
use keel_panel::queue::worker::{Registry, Worker, WorkerConfig};
use keel_panel::store::Store;
use keel_testhosts::{known_hosts_name, TestHosts};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bench process's peak resident set (`VmHWM`), in MB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// A panel on a fresh database with a worker running automation jobs.
struct Panel {
    db: Db,
    data: tempfile::TempDir,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
}

async fn panel(admin_user: &str) -> Panel {
    let data = tempfile::tempdir().expect("data dir");
    let url = match std::env::var("KEEL_BENCH_DB").as_deref() {
        Ok("sqlite") => format!("sqlite://{}", data.path().join("panel.db").display()),
        _ => {
            keel_panel::testsupport::PgServer::shared()
                .fresh_database()
                .await
        }
    };
    let store = Store::connect(&url).await.expect("store");
    let db = Db::from_store(store.clone(), &url).await.expect("db");
    let mut config = Config {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    config.hypervisor.admin_user = admin_user.to_string();
    let prov = Provisioner::new(db.clone(), None, &config).expect("provisioner");
    let mut reg = Registry::new();
    automation::register(
        &mut reg,
        Arc::new(Automation::new(Arc::new(prov)).expect("automation")),
    );
    let w = Arc::new(Worker::new(
        store,
        reg,
        WorkerConfig {
            concurrency: 4,
            poll_every: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    ));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let s = shutdown.clone();
        async move {
            w.run(s).await.expect("worker");
        }
    });
    Panel {
        db,
        data,
        shutdown,
        worker,
    }
}

impl Panel {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.worker.await;
        drop(self.data);
    }

    async fn scalar(&self, sql: &'static str, id: i64) -> Option<i64> {
        let mut rc = self.db.read().await.expect("read");
        // MIN() of no rows is NULL.
        keel_panel::scalar!(&mut rc.conn(), Option<i64>, sql, id)
            .expect("query")
            .flatten()
    }

    /// A directory project and a template of `playbook` on `inventory_id`
    /// (a new project-file inventory when `None`).
    async fn template(
        &self,
        dir: &Path,
        playbook: &str,
        inventory: Option<i64>,
        forks: usize,
        credential: Option<i64>,
    ) -> i64 {
        let system = Principal::system();
        let project = catalog::create_project(
            &self.db,
            &system,
            &serde_json::from_value(json!({"name": "bench", "kind": "directory", "path": dir}))
                .unwrap(),
        )
        .await
        .expect("project");
        let inventory_id = match inventory {
            Some(i) => i,
            None => {
                catalog::create_inventory(
                    &self.db,
                    &system,
                    &serde_json::from_value(json!({"name": "file", "kind": "project_file", "project_id": project.id, "path": "hosts.ini"}))
                        .unwrap(),
                )
                .await
                .expect("inventory")
                .id
            }
        };
        templates::create(
            &self.db,
            &system,
            &serde_json::from_value(json!({
                "name": "bench", "project_id": project.id, "playbook": playbook,
                "inventory_id": inventory_id, "forks": forks,
                "credentials": credential.into_iter().collect::<Vec<_>>(),
            }))
            .unwrap(),
        )
        .await
        .expect("template")
        .id
    }

    /// Launches the template; returns the run id and the launch time (ms,
    /// the store's clock, which stamps the log lines too).
    async fn launch(&self, template: i64) -> (i64, i64) {
        let t0 = self.db.now();
        let run = templates::launch(
            &self.db,
            &Principal::system(),
            template,
            &serde_json::from_value(json!({})).unwrap(),
        )
        .await
        .expect("launch");
        (run.id, t0)
    }

    /// The first `task_start` line's stamp, once it is stored.
    async fn first_task_at(&self, run: i64) -> i64 {
        loop {
            let at = self
                .scalar(
                    "SELECT MIN(l.at_ms) FROM job_log l JOIN template_runs r ON r.job_id = l.job_id \
                     WHERE r.id = $1 AND CAST(l.line AS TEXT) LIKE '%\"task_start\"%'",
                    run,
                )
                .await;
            if let Some(at) = at {
                return at;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits for the run's end; returns its `finished_at` and status.
    async fn finished(&self, run: i64) -> (i64, String) {
        loop {
            let row = {
                let mut rc = self.db.read().await.expect("read");
                keel_panel::fetch_opt!(
                    &mut rc.conn(),
                    (Option<i64>, String),
                    "SELECT finished_at, status FROM template_runs WHERE id = $1",
                    run
                )
                .expect("query")
            };
            if let Some((Some(at), status)) = row {
                return (at, status);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

const LATENCY_PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: first\n      command: 'true'\n    - name: second\n      debug:\n        msg: done\n";

fn keel_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KEEL_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/automation-<hash> → target/<profile>/keel, else
    // target/debug/keel.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let beside = profile_dir.join("keel");
    if beside.exists() {
        return beside;
    }
    profile_dir
        .parent()
        .map(|t| t.join("debug/keel"))
        .unwrap_or(beside)
}

/// One `keel play`: (spawn to first `TASK [` line, spawn to exit), ms.
fn keel_play(bin: &Path, dir: &Path) -> (f64, f64) {
    let t0 = Instant::now();
    let mut child = std::process::Command::new(bin)
        .current_dir(dir)
        .args(["play", "-i", "hosts.ini", "latency.yml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build it: cargo build -p keel-engine --bin keel)",
                bin.display()
            )
        });
    let mut first = None;
    let out = child.stdout.take().expect("stdout");
    for line in BufReader::new(out).lines() {
        let line = line.expect("line");
        if first.is_none() && line.starts_with("TASK [") {
            first = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let status = child.wait().expect("keel exits");
    assert!(status.success(), "keel play failed");
    (
        first.expect("keel play printed a task"),
        t0.elapsed().as_secs_f64() * 1000.0,
    )
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    format!("{:.0} / {:.0} / {:.0}", pct(0.5), pct(0.9), v[v.len() - 1])
}

async fn latency() {
    let reps = env_num("KEEL_BENCH_REPS", 10);
    let hosts = TestHosts::start(1).expect("sshd test host");
    let dir = tempfile::tempdir().expect("project dir");
    std::fs::write(dir.path().join("latency.yml"), LATENCY_PLAY).unwrap();
    std::fs::write(dir.path().join("hosts.ini"), hosts.inventory_ini("")).unwrap();
    let bin = keel_bin();
    let p = panel("root").await;
    let tpl = p.template(dir.path(), "latency.yml", None, 5, None).await;
    // One of each first, not counted: caches, the first connection.
    keel_play(&bin, dir.path());
    let (run, _) = p.launch(tpl).await;
    assert_eq!(p.finished(run).await.1, "successful");

    let (mut panel_first, mut panel_total, mut play_first, mut play_total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (run, t0) = p.launch(tpl).await;
        let first = p.first_task_at(run).await;
        let (end, status) = p.finished(run).await;
        assert_eq!(status, "successful");
        panel_first.push((first - t0) as f64);
        panel_total.push((end - t0) as f64);
        let (f, t) = keel_play(&bin, dir.path());
        play_first.push(f);
        play_total.push(t);
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        s[s.len() / 2]
    };
    println!("\n### Launch to first task, one sshd host, two tasks ({reps} pairs)\n");
    println!("| path | to first task, ms (p50 / p90 / max) | whole run, ms (p50 / p90 / max) |");
    println!("|---|---:|---:|");
    println!(
        "| panel: launch → queue → worker → engine | {} | {} |",
        stats(panel_first.clone()),
        stats(panel_total.clone())
    );
    println!(
        "| `keel play` (process spawn to output) | {} | {} |",
        stats(play_first.clone()),
        stats(play_total.clone())
    );
    println!(
        "\nPanel overhead per run (median whole run, panel − keel play): {:.0} ms; \
         to first task: {:.0} ms",
        median(&panel_total) - median(&play_total),
        median(&panel_first) - median(&play_first)
    );
    p.stop().await;
}

const FANOUT_PLAY: &str = "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: run a command\n      command: 'true'\n    - name: say who\n      debug:\n        msg: \"{{ keel_hostname }} of {{ keel_site }}\"\n    - name: write a file\n      copy:\n        content: \"{{ keel_service_id }}\\n\"\n        dest: \"/tmp/keel-fanout-{{ keel_service_id }}\"\n";

async fn fanout() {
    let n = env_num("KEEL_BENCH_HOSTS", 500);
    let sshds = env_num("KEEL_BENCH_SSHDS", n.min(250));
    let forks = env_num("KEEL_BENCH_FORKS", 100);
    let t_hosts = Instant::now();
    let hosts = TestHosts::start(sshds).expect("sshd test hosts");
    eprintln!(
        "{sshds} sshd hosts up in {:.1} s",
        t_hosts.elapsed().as_secs_f64()
    );
    let p = panel("root").await;
    let system = Principal::system();
    // Servers are made by someone: an admin account.
    let passwords = keel_panel::auth::Passwords::new(&Config::default().auth).expect("passwords");
    let admin =
        keel_panel::auth::create_user(&p.db, &passwords, &system, "bench", None, None, true)
            .await
            .expect("admin");
    let maker = Principal {
        user_id: admin.id,
        name: admin.name,
        is_admin: true,
    };

    // n servers of the panel, ready, each answering on one of the sshds.
    keel_panel::services::catalog::create(
        &p.db,
        &system,
        &keel_panel::services::catalog::NewServerType {
            name: "small".into(),
            cpus: 1,
            ram_mb: 512,
            disk_gb: 5,
            os_image: "debian-12".into(),
            roles: vec![],
            stack: None,
        },
    )
    .await
    .expect("server type");
    let pool = keel_panel::alloc::generate(
        "bench",
        "public",
        Some("10.64.0.0/16".parse().unwrap()),
        None,
        "fan-{n:05}.example.org",
        n as u64,
    )
    .expect("pool");
    keel_panel::alloc::import(&p.db, &system, &pool, 3600)
        .await
        .expect("import");
    let site = keel_panel::services::sites::create(
        &p.db,
        &system,
        &serde_json::from_value(json!({"name": "fan", "owner_email": "fan@example.org"})).unwrap(),
    )
    .await
    .expect("site");
    let t_servers = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let req: keel_panel::services::servers::CreateServer =
            serde_json::from_value(json!({"site_id": site.id, "server_type": "small"})).unwrap();
        let made = keel_panel::services::servers::create(&p.db, &maker, &req, None)
            .await
            .expect("server");
        ids.push(made.created.service.id);
    }
    let known = p.data.path().join("known_hosts.d");
    std::fs::create_dir_all(&known).unwrap();
    {
        let mut tx = p.db.begin().await.unwrap();
        let mut conn = tx_conn(&mut tx);
        // No provisioning here: the servers are ready at once.
        keel_panel::execute!(&mut conn, "DELETE FROM jobs").unwrap();
        keel_panel::execute!(&mut conn, "UPDATE services SET status = 'ready'").unwrap();
        for (i, id) in ids.iter().enumerate() {
            let h = &hosts.hosts[i % sshds];
            let vm = format!("keel-{id}");
            keel_panel::execute!(
                &mut conn,
                "INSERT INTO vm_provisioning (service_id, vm_name, pool_type, callback_secret, host_key_public, ssh_endpoint, created_at, updated_at) \
                 VALUES ($1, $2, 'public', 'x', $3, $4, 0, 0) \
                 ON CONFLICT (service_id) DO UPDATE SET ssh_endpoint = excluded.ssh_endpoint",
                *id,
                vm.as_str(),
                h.host_key.as_str(),
                format!("{}:{}", h.addr, h.port)
            )
            .unwrap();
            std::fs::write(
                known.join(&vm),
                format!(
                    "{} {}\n",
                    known_hosts_name(&h.addr, h.port),
                    h.host_key.trim()
                ),
            )
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    eprintln!(
        "{n} servers made in {:.1} s",
        t_servers.elapsed().as_secs_f64()
    );
    let key = catalog::create_credential(
        &p.db,
        &p.data_sealer(),
        &system,
        &serde_json::from_value(json!({
            "name": "hosts", "kind": "ssh_key", "username": "root",
            "secret": std::fs::read_to_string(&hosts.keys.ed25519).unwrap()
        }))
        .unwrap(),
    )
    .await
    .expect("credential");
    let inv = catalog::create_inventory(
        &p.db,
        &system,
        &serde_json::from_value(json!({"name": "all servers", "kind": "panel"})).unwrap(),
    )
    .await
    .expect("inventory");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fanout.yml"), FANOUT_PLAY).unwrap();
    let tpl = p
        .template(dir.path(), "fanout.yml", Some(inv.id), forks, Some(key.id))
        .await;

    let rss_before = peak_rss_mb();
    let (run, t0) = p.launch(tpl).await;
    let first = p.first_task_at(run).await;
    // While the run goes on: how much of its output can be read already.
    let mut live_lines = 0;
    let end = loop {
        let running = p
            .scalar(
                "SELECT COUNT(*) FROM template_runs WHERE id = $1 AND finished_at IS NULL",
                run,
            )
            .await
            == Some(1);
        let lines = p
            .scalar(
                "SELECT COUNT(*) FROM job_log l JOIN template_runs r ON r.job_id = l.job_id WHERE r.id = $1",
                run,
            )
            .await
            .unwrap_or(0);
        if !running {
            break p.finished(run).await;
        }
        live_lines = lines;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lines = p
        .scalar(
            "SELECT COUNT(*) FROM job_log l JOIN template_runs r ON r.job_id = l.job_id WHERE r.id = $1",
            run,
        )
        .await
        .unwrap_or(0);
    let ok_hosts = p
        .scalar(
            "SELECT COUNT(*) FROM run_hosts WHERE run_id = $1 AND failed = 0 AND unreachable = 0",
            run,
        )
        .await
        .unwrap_or(0);
    println!("\n### Fan-out: one run over the panel's dynamic inventory\n");
    println!(
        "| servers | sshds | forks | status | hosts ok | launch → first task | launch → end | \
         log lines (readable while running) | peak RSS, MB (before run) |"
    );
    println!("|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {sshds} | {forks} | {} | {ok_hosts} | {} ms | {:.1} s | {lines} ({live_lines}) | {} ({rss_before}) |",
        end.1,
        first - t0,
        (end.0 - t0) as f64 / 1000.0,
        peak_rss_mb()
    );
    p.stop().await;
    drop(hosts);
}

impl Panel {
    fn data_sealer(&self) -> keel_panel::automation::secrets::Sealer {
        keel_panel::automation::secrets::Sealer::for_data_dir(self.data.path()).expect("sealer")
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mode = std::env::var("KEEL_BENCH_MODE").unwrap_or_default();
    // `cargo bench` passes `--bench`; nothing else is read from the
    // command line.
    rt.block_on(async {
        if mode.is_empty() || mode == "latency" {
            latency().await;
        }
        if mode.is_empty() || mode == "fanout" {
            fanout().await;
        }
    });
}
