//! A job template's schedule fires exactly once per period across three
//! `keel-panel`-like worker processes (this test binary re-run in child
//! mode), on SQLite and PostgreSQL. Time is a `FileClock` the test moves
//! one interval at a time; every fire must become one `schedule_fire` job
//! and one successful run (launched by the schedule, its survey defaults
//! as variables), whichever process claims it. And ten templates
//! scheduled for the same minute, with two worker processes on
//! PostgreSQL: each fire runs exactly once, none is lost or doubled, and
//! both processes take part.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_panel::automation::{self, schedules, Automation};
use keel_panel::config::Config;
use keel_panel::db::Db;
use keel_panel::domain::Principal;
use keel_panel::provision::Provisioner;
use keel_panel::queue::cron::Scheduler;
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::store::Store;
use keel_panel::testsupport::FileClock;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// On a minute boundary.
const T0: i64 = 1_699_999_980_000;
const NODES: usize = 3;
const FIRES: i64 = 4;

fn config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        ..Default::default()
    }
}

/// Child mode: a worker process running automation jobs and ticking the
/// database's schedules, on the database, clock and data directory named
/// by the environment.
#[test]
#[ignore = "run by the schedule tests as a child process"]
fn schedule_worker_child() {
    let url = std::env::var("KEEL_SCHED_DB").expect("KEEL_SCHED_DB");
    let clock = FileClock::open(std::env::var("KEEL_SCHED_CLOCK").expect("KEEL_SCHED_CLOCK"));
    let data = std::env::var("KEEL_SCHED_DATA").expect("KEEL_SCHED_DATA");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = Store::connect(&url)
            .await
            .expect("connect")
            .with_clock(clock);
        let db = Db::from_store(store.clone(), &url).await.expect("db");
        let prov =
            Provisioner::new(db.clone(), None, &config(Path::new(&data))).expect("provisioner");
        let mut reg = Registry::new();
        automation::register(
            &mut reg,
            Arc::new(Automation::new(Arc::new(prov)).expect("automation")),
        );
        let scheduler = Scheduler::new(store.clone(), vec![])
            .with_source(Arc::new(schedules::DbSchedules(db.clone())));
        let w = Worker::new(
            store.clone(),
            reg,
            WorkerConfig {
                queues: vec![QueueConfig::new("default")],
                concurrency: 2,
                poll_every: Duration::from_millis(20),
                ..WorkerConfig::default()
            },
        )
        .with_scheduler(scheduler);
        let mut tx = db.begin().await.expect("tx");
        keel_panel::execute!(
            &mut keel_panel::db::tx_conn(&mut tx),
            "INSERT INTO sched_nodes (pid) VALUES ($1)",
            i64::from(std::process::id())
        )
        .expect("register node");
        tx.commit().await.expect("commit");
        Arc::new(w)
            .run(CancellationToken::new())
            .await
            .expect("worker");
    });
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    let mut rc = db.read().await.unwrap();
    keel_panel::scalar!(&mut rc.conn(), i64, sql)
        .unwrap()
        .unwrap_or(0)
}

async fn wait_for(db: &Db, sql: &'static str, want: i64, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = count(db, sql).await;
        if n >= want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {n}/{want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fires_once_per_period(url: String) {
    let dir = tempfile::tempdir().unwrap();
    let clock_path = dir.path().join("clock");
    let clock = FileClock::create(&clock_path, T0);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_clock(clock.clone());
    let db = Db::from_store(store, &url).await.unwrap();
    {
        let mut tx = db.begin().await.unwrap();
        keel_panel::execute!(
            &mut keel_panel::db::tx_conn(&mut tx),
            "CREATE TABLE sched_nodes (pid BIGINT NOT NULL)"
        )
        .unwrap();
        tx.commit().await.unwrap();
    }

    // A directory project whose play runs on the controller.
    let project_dir = dir.path().join("project");
    std::fs::create_dir_all(&project_dir).unwrap();
    std::fs::write(
        project_dir.join("tick.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - assert:\n        that: who == 'the schedule'\n",
    )
    .unwrap();
    std::fs::write(
        project_dir.join("hosts.ini"),
        "localhost ansible_connection=local\n",
    )
    .unwrap();
    let system = Principal::system();
    use keel_panel::automation::{catalog, templates};
    let project = catalog::create_project(
        &db,
        &system,
        &serde_json::from_value(json!({"name": "local", "kind": "directory", "path": project_dir}))
            .unwrap(),
    )
    .await
    .unwrap();
    let inv = catalog::create_inventory(
        &db,
        &system,
        &serde_json::from_value(
            json!({"name": "local", "kind": "project_file", "project_id": project.id, "path": "hosts.ini"}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let tpl = templates::create(
        &db,
        &system,
        &serde_json::from_value(json!({
            "name": "tick", "project_id": project.id, "playbook": "tick.yml", "inventory_id": inv.id,
            "survey": [{"variable": "who", "type": "text", "default": "the schedule"}]
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let sched = schedules::create(
        &db,
        &system,
        &serde_json::from_value(
            json!({"template_id": tpl.id, "name": "every minute", "every_secs": 60}),
        )
        .unwrap(),
    )
    .await
    .unwrap();

    let _children = spawn_workers(NODES, &url, &clock_path, &data);
    wait_for(
        &db,
        "SELECT COUNT(*) FROM sched_nodes",
        NODES as i64,
        60,
        "worker processes up",
    )
    .await;
    fires_checked(&db, &clock, &sched).await;
}

/// `n` worker processes (this binary in child mode) on the database,
/// clock and data directory given.
fn spawn_workers(n: usize, url: &str, clock_path: &Path, data: &Path) -> Children {
    let exe = std::env::current_exe().unwrap();
    Children(
        (0..n)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "schedule_worker_child",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                    ])
                    .env("KEEL_SCHED_DB", url)
                    .env("KEEL_SCHED_CLOCK", clock_path)
                    .env("KEEL_SCHED_DATA", data)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

async fn fires_checked(
    db: &Db,
    clock: &FileClock,
    sched: &keel_panel::automation::model::ScheduleView,
) {
    let db = db.clone();
    wait_for(
        &db,
        "SELECT COUNT(*) FROM schedules",
        1,
        60,
        "schedule registered",
    )
    .await;
    // Before the first period ends, nothing fires.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM template_runs").await, 0);
    for k in 1..=FIRES {
        clock.advance(Duration::from_secs(60));
        // The fire's job makes a run, the run's job plays it.
        let sql = "SELECT COUNT(*) FROM template_runs WHERE status = 'successful'";
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = count(&db, sql).await;
            if n >= k {
                break;
            }
            let failed = count(
                &db,
                "SELECT COUNT(*) FROM template_runs WHERE status = 'failed'",
            )
            .await;
            assert_eq!(failed, 0, "a scheduled run failed");
            assert!(Instant::now() < deadline, "fire {k}: {n} runs succeeded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Give a slow node one more round to (wrongly) fire again.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut rc = db.read().await.unwrap();
    let mut conn = rc.conn();
    let fires: Vec<(i64,)> = keel_panel::fetch_all!(
        &mut conn,
        (i64,),
        "SELECT fire_at FROM schedule_fires WHERE name = $1 ORDER BY fire_at",
        schedules::claim_name(sched.schedule.id)
    )
    .unwrap();
    let anchor: i64 = keel_panel::scalar!(
        &mut conn,
        i64,
        "SELECT anchor_at FROM schedules WHERE name = $1",
        schedules::claim_name(sched.schedule.id)
    )
    .unwrap()
    .unwrap();
    let expected: Vec<(i64,)> = (1..=FIRES).map(|k| (anchor + k * 60_000,)).collect();
    assert_eq!(fires, expected, "each period claimed once");
    let runs: Vec<(String, Option<i64>, Option<i64>, String)> = keel_panel::fetch_all!(
        &mut conn,
        (String, Option<i64>, Option<i64>, String),
        "SELECT launched_by, schedule_id, trigger_job_id, status FROM template_runs ORDER BY id"
    )
    .unwrap();
    assert_eq!(runs.len() as i64, FIRES, "one run per fire: {runs:?}");
    let mut triggers: Vec<i64> = runs.iter().map(|r| r.2.unwrap()).collect();
    triggers.dedup();
    assert_eq!(triggers.len() as i64, FIRES);
    for r in &runs {
        assert_eq!(
            (r.0.as_str(), r.1, r.3.as_str()),
            ("schedule", Some(sched.schedule.id), "successful")
        );
    }
    let fire_jobs = keel_panel::scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM jobs WHERE kind = 'schedule_fire'"
    )
    .unwrap()
    .unwrap();
    assert_eq!(fire_jobs, FIRES, "one fire job per period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_fires_once_per_period_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sched.db").display());
    fires_once_per_period(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_fires_once_per_period_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    fires_once_per_period(url).await;
}

const TEMPLATES: usize = 10;
const WORKERS: usize = 2;

/// Ten templates, each with a schedule every minute, all due at the same
/// instant, with two worker processes ticking: every fire becomes exactly
/// one run (none lost, none doubled), and the runs are spread over both
/// processes' workers.
async fn ten_templates_same_minute(url: String) {
    let dir = tempfile::tempdir().unwrap();
    let clock_path = dir.path().join("clock");
    let clock = FileClock::create(&clock_path, T0);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::connect(&url)
        .await
        .unwrap()
        .with_clock(clock.clone());
    let db = Db::from_store(store, &url).await.unwrap();
    {
        let mut tx = db.begin().await.unwrap();
        keel_panel::execute!(
            &mut keel_panel::db::tx_conn(&mut tx),
            "CREATE TABLE sched_nodes (pid BIGINT NOT NULL)"
        )
        .unwrap();
        tx.commit().await.unwrap();
    }
    // Each run takes a moment on the controller, so one process cannot
    // take every run before the other claims any.
    let project_dir = dir.path().join("project");
    std::fs::create_dir_all(&project_dir).unwrap();
    std::fs::write(
        project_dir.join("slow.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: sleep 0.5\n",
    )
    .unwrap();
    std::fs::write(
        project_dir.join("hosts.ini"),
        "localhost ansible_connection=local\n",
    )
    .unwrap();
    let system = Principal::system();
    use keel_panel::automation::{catalog, templates};
    let project = catalog::create_project(
        &db,
        &system,
        &serde_json::from_value(json!({"name": "local", "kind": "directory", "path": project_dir}))
            .unwrap(),
    )
    .await
    .unwrap();
    let inv = catalog::create_inventory(
        &db,
        &system,
        &serde_json::from_value(
            json!({"name": "local", "kind": "project_file", "project_id": project.id, "path": "hosts.ini"}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let mut schedule_ids = Vec::new();
    for i in 0..TEMPLATES {
        let tpl = templates::create(
            &db,
            &system,
            &serde_json::from_value(json!({
                "name": format!("slow {i}"), "project_id": project.id, "playbook": "slow.yml",
                "inventory_id": inv.id
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        let s = schedules::create(
            &db,
            &system,
            &serde_json::from_value(
                json!({"template_id": tpl.id, "name": "each minute", "cron": "* * * * *"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        schedule_ids.push(s.schedule.id);
    }

    let _children = spawn_workers(WORKERS, &url, &clock_path, &data);
    wait_for(
        &db,
        "SELECT COUNT(*) FROM sched_nodes",
        WORKERS as i64,
        60,
        "worker processes up",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM template_runs").await, 0);
    // Two minutes: every schedule is due twice, at the same instants.
    for minute in 1..=2_i64 {
        clock.advance(Duration::from_secs(60));
        wait_for(
            &db,
            "SELECT COUNT(*) FROM template_runs WHERE status IN ('successful', 'failed')",
            minute * TEMPLATES as i64,
            120,
            "runs finished",
        )
        .await;
    }
    // Give a slow process one more round to (wrongly) fire again.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut rc = db.read().await.unwrap();
    let mut conn = rc.conn();
    let runs: Vec<(i64, String, i64)> = keel_panel::fetch_all!(
        &mut conn,
        (i64, String, i64),
        "SELECT r.schedule_id, r.status, COUNT(*) FROM template_runs r \
         GROUP BY r.schedule_id, r.status ORDER BY r.schedule_id"
    )
    .unwrap();
    let want: Vec<(i64, String, i64)> = schedule_ids
        .iter()
        .map(|id| (*id, "successful".to_string(), 2))
        .collect();
    assert_eq!(runs, want, "each schedule: two fires, two successful runs");
    let fires = keel_panel::scalar!(
        &mut conn,
        i64,
        "SELECT COUNT(*) FROM jobs WHERE kind = 'schedule_fire'"
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        fires,
        2 * TEMPLATES as i64,
        "one fire job per schedule and minute"
    );
    let by_worker: Vec<(String, i64)> = keel_panel::fetch_all!(
        &mut conn,
        (String, i64),
        "SELECT a.worker, COUNT(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE j.kind = 'template_run' GROUP BY a.worker ORDER BY a.worker"
    )
    .unwrap();
    eprintln!("template runs per worker: {by_worker:?}");
    let pids: std::collections::BTreeSet<&str> = by_worker
        .iter()
        .filter_map(|(w, _)| w.split('-').nth(1))
        .collect();
    assert_eq!(
        pids.len(),
        WORKERS,
        "runs spread over both processes: {by_worker:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_templates_same_minute_run_once_postgres() {
    let url = keel_panel::testsupport::PgServer::shared()
        .fresh_database()
        .await;
    ten_templates_same_minute(url).await;
}
