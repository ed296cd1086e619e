//! The chaos soak (issue 18): two `keel-panel serve` nodes and two
//! `keel-panel worker` processes on one real PostgreSQL, with the real
//! container driver (`systemd-nspawn`) behind the fault wrapper, take
//! create and delete requests from many users with quotas through the REST
//! API while:
//! - a random one of the four processes is SIGKILLed (and started again)
//!   every few seconds;
//! - PostgreSQL is restarted (`pg_ctl restart -m fast`) twice;
//! - a share of the hypervisor calls fail (`chaos.driver_fault_fraction`:
//!   half before the real call, half after it succeeded);
//! - the callback listeners drop a share of the VM-ready callbacks
//!   (`chaos.callback_drop_fraction`: answered 503, nothing recorded;
//!   cloud-init's phone_home tries again).
//!
//! Then, once the faults stop, every service has settled and the panel's
//! own reconciliation job has run, the soak checks: no leaked address, no
//! orphan or duplicate VM (the driver's real list, nspawn's processes, the
//! overlay mounts and the network namespaces against the database), no
//! quota ever overrun (rebuilt from creation times and the audit log's
//! deletions), every service `ready`, `deleted` or `failed` with a reason,
//! and every failed service holding only what its failed step keeps. Last,
//! everything is deleted through the API and nothing may be left.
//!
//! The test's defaults are the short version `scripts/test` runs; the full
//! soak is `scripts/soak`, which sets the `KEEL_SOAK_*` variables
//! ([`Params::from_env`]) and prints the same figures. The containers run
//! a one-task playbook (`support::FILE_PLAYBOOK`): they have no NAT, and the
//! role run is not what is under test here. Analytics collection is off
//! (nothing in the containers serves figures). At the end the checks are
//! shown to work: a planted orphan VM, leaked address, stuck service and
//! quota overrun must each be reported.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_panel::alloc::{self, Quota};
use keel_panel::auth::{self, Passwords};
use keel_panel::domain::Principal;
use keel_panel::hypervisor::nspawn::{self, NspawnConfig, NspawnDriver};
use keel_panel::hypervisor::seed::{self, HostKeys, SeedParams};
use keel_panel::hypervisor::{Driver, ImageStore, NetIdentity, VmSpec};
use keel_panel::services::sites::{self, NewSite};
use keel_panel::testsupport::PgServer;
use serde_json::{json, Value};
use sqlx::Row as _;
use support::{Scratch, Sweeper, IMAGES};
use tokio::sync::Mutex;

/// The soak's size and fault rates. Defaults: the short version.
#[derive(Debug, Clone)]
struct Params {
    /// Create and delete requests sent, in all.
    requests: usize,
    users: usize,
    /// Servers each user may hold (`max_vms` of a user quota).
    quota: i64,
    /// Addresses in the pool (fewer than users × quota: the pool runs dry).
    addresses: u64,
    /// How long the requests are spread over (the faults run meanwhile).
    load_secs: u64,
    /// A process is killed every `kill_min..=kill_max` ms.
    kill_min_ms: u64,
    kill_max_ms: u64,
    pg_restarts: usize,
    driver_fault_fraction: f64,
    callback_drop_fraction: f64,
    /// Hypervisor jobs running at once, cluster-wide (2 cores here).
    hypervisor_limit: usize,
    /// How long the settling (and the final deletion) may take.
    settle_secs: u64,
    seed: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

impl Params {
    fn from_env() -> Params {
        Params {
            requests: env_or("KEEL_SOAK_REQUESTS", 24),
            users: env_or("KEEL_SOAK_USERS", 4),
            quota: env_or("KEEL_SOAK_QUOTA", 2),
            addresses: env_or("KEEL_SOAK_ADDRESSES", 6),
            load_secs: env_or("KEEL_SOAK_LOAD_SECS", 60),
            kill_min_ms: env_or("KEEL_SOAK_KILL_MIN_MS", 3000),
            kill_max_ms: env_or("KEEL_SOAK_KILL_MAX_MS", 6000),
            pg_restarts: env_or("KEEL_SOAK_PG_RESTARTS", 2),
            driver_fault_fraction: env_or("KEEL_SOAK_DRIVER_FAULTS", 0.3),
            callback_drop_fraction: env_or("KEEL_SOAK_CALLBACK_DROPS", 0.3),
            hypervisor_limit: env_or("KEEL_SOAK_HYPERVISOR_LIMIT", 3),
            settle_secs: env_or("KEEL_SOAK_SETTLE_SECS", 600),
            seed: env_or("KEEL_SOAK_SEED", fastrand::u64(..)),
        }
    }
}

const SUBNET: u8 = 77;

// ---------------------------------------------------------------------------
// Processes

/// One panel process the soak kills and starts again.
struct Proc {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    kills: u32,
    /// Exits the soak did not cause (with their status).
    exits: Vec<String>,
}

impl Proc {
    fn new(name: &str, args: Vec<String>, dir: &Path) -> Proc {
        Proc {
            name: name.to_string(),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
            kills: 0,
            exits: Vec::new(),
        }
    }

    fn spawn(&mut self) {
        use std::io::Write as _;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(out, "==== {} start #{} ====", self.name, self.starts + 1).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keel-panel"))
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("KEEL_E2E_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning keel-panel");
        self.child = Some(child);
        self.starts += 1;
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// Restarts the process when it ended on its own; notes why.
    fn reap(&mut self) {
        let Some(c) = self.child.as_mut() else { return };
        if let Ok(Some(status)) = c.try_wait() {
            self.child = None;
            let tail = log_tail(&self.log, 3);
            eprintln!("soak: {} exited by itself ({status}): {tail}", self.name);
            self.exits.push(format!("{status}: {tail}"));
            self.spawn();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Counts lines containing `needle` in the files.
fn count_lines(files: &[PathBuf], needle: &str) -> usize {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .sum()
}

// ---------------------------------------------------------------------------
// PostgreSQL

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("PostgreSQL binaries")
}

/// `pg_ctl restart -m fast` on the soak's own server (it reuses the
/// options the server was started with); returns how long it took.
fn restart_postgres(pg: &PgServer) -> Duration {
    let started = Instant::now();
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin().join("pg_ctl"))
        .arg("-D")
        .arg(pg.dir.join("data"))
        .arg("-l")
        .arg(pg.dir.join("postgres.log"))
        .args(["-w", "-t", "60", "restart", "-m", "fast"])
        .output()
        .expect("pg_ctl");
    assert!(
        out.status.success(),
        "pg_ctl restart failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

// ---------------------------------------------------------------------------
// The REST clients

/// Figures about the API calls themselves.
#[derive(Default)]
struct CallStats {
    /// Transport errors and 5xx answers that were retried.
    retried: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
}

/// Both serve nodes; a call goes to either and moves on to the other when
/// one is down, as a client behind a load balancer would.
#[derive(Clone)]
struct Nodes {
    bases: Vec<String>,
    client: reqwest::Client,
    stats: Arc<CallStats>,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    json: Value,
}

impl Nodes {
    /// One request, retried on transport errors and 5xx answers (the node
    /// is being killed, PostgreSQL is restarting) for up to `patience`.
    /// Creates carry an idempotency key, so a retry cannot create twice.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
        patience: Duration,
    ) -> Answer {
        let deadline = Instant::now() + patience;
        let mut node = fastrand::usize(..self.bases.len());
        loop {
            let mut req = self
                .client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", self.bases[node]),
                )
                .bearer_auth(token);
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        Ok(text) => Ok(Answer {
                            status,
                            json: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                        }),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(a) if a.status < 500 => return a,
                Ok(a) => {
                    self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                    assert!(
                        Instant::now() < deadline,
                        "{method} {path}: still {} after {patience:?}: {}",
                        a.status,
                        a.json
                    );
                }
                Err(e) => {
                    self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                    assert!(
                        Instant::now() < deadline,
                        "{method} {path}: no answer for {patience:?}: {e}"
                    );
                }
            }
            self.stats.retried.fetch_add(1, Ordering::Relaxed);
            node = (node + 1) % self.bases.len();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// What one request of the load got.
#[derive(Debug, Clone)]
enum Outcome {
    Created(i64),
    CreateRefused { error: String, message: String },
    DeleteAccepted,
    DeleteRefused { message: String },
}

struct User {
    name: String,
    id: i64,
    token: String,
    site: i64,
}

/// One user's share of the load: creates and deletes at random times over
/// the load window. A create is tried whatever the user holds, so creates
/// beyond the quota (and beyond the pool) are refused by the panel.
async fn user_load(
    nodes: Nodes,
    user: Arc<User>,
    requests: usize,
    window: Duration,
    seed: u64,
) -> Vec<Outcome> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut at: Vec<u64> = (0..requests)
        .map(|_| rng.u64(..window.as_millis() as u64))
        .collect();
    at.sort();
    let start = Instant::now();
    let mut held: Vec<i64> = Vec::new();
    let mut out = Vec::new();
    for (n, ms) in at.into_iter().enumerate() {
        let due = start + Duration::from_millis(ms);
        tokio::time::sleep_until(due.into()).await;
        let create = held.is_empty() || rng.f64() < 0.55;
        if create {
            let key = format!("soak-{}-{n}-{seed:x}", user.name);
            let a = nodes
                .call(
                    "POST",
                    "/api/v1/services",
                    &user.token,
                    Some(json!({"site_id": user.site, "server_type": "small"})),
                    Some(&key),
                    Duration::from_secs(180),
                )
                .await;
            match a.status {
                200 | 201 => {
                    let id = a.json["service"]["id"].as_i64().expect("service id");
                    held.push(id);
                    out.push(Outcome::Created(id));
                }
                _ => {
                    let error = a.json["error"].as_str().unwrap_or_default().to_string();
                    let message = a.json["message"].as_str().unwrap_or_default().to_string();
                    assert!(
                        !error.is_empty() && !message.is_empty(),
                        "a refused create must say why: {} {}",
                        a.status,
                        a.json
                    );
                    out.push(Outcome::CreateRefused { error, message });
                }
            }
        } else {
            let id = held.remove(rng.usize(..held.len()));
            let a = nodes
                .call(
                    "DELETE",
                    &format!("/api/v1/services/{id}"),
                    &user.token,
                    None,
                    None,
                    Duration::from_secs(180),
                )
                .await;
            match a.status {
                202 => out.push(Outcome::DeleteAccepted),
                _ => {
                    let message = a.json["message"].as_str().unwrap_or_default().to_string();
                    assert!(!message.is_empty(), "{} {}", a.status, a.json);
                    out.push(Outcome::DeleteRefused {
                        message: format!("service {id}: {message}"),
                    });
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// What the database and the host say

#[derive(Debug, Clone)]
struct ServiceRow {
    id: i64,
    created_by: i64,
    status: String,
    failure_reason: Option<String>,
    failed_step: Option<String>,
    has_vm_row: bool,
}

async fn services(pool: &sqlx::PgPool) -> Vec<ServiceRow> {
    sqlx::query(
        "SELECT s.id, s.created_by, s.status, s.failure_reason, p.failed_step, \
         (v.id IS NOT NULL) AS has_vm FROM services s \
         LEFT JOIN vm_provisioning p ON p.service_id = s.id \
         LEFT JOIN vms v ON v.service_id = s.id ORDER BY s.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| ServiceRow {
        id: r.get(0),
        created_by: r.get(1),
        status: r.get(2),
        failure_reason: r.get(3),
        failed_step: r.get(4),
        has_vm_row: r.get(5),
    })
    .collect()
}

/// Address → service for every allocated address.
async fn allocated(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query(
        "SELECT hostname, service_id FROM pool_addresses WHERE state = 'allocated' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Whether a service in this state keeps its VM and address: a live one,
/// or one that failed after its OS came up (kept for a retry, by design).
fn should_hold(s: &ServiceRow) -> bool {
    match s.status.as_str() {
        "ready" => true,
        "failed" => !matches!(
            s.failed_step.as_deref(),
            Some("create_vm" | "os_ready") | None
        ),
        _ => false,
    }
}

/// Machine names of the running `systemd-nspawn` processes under
/// `prefix`, one entry per process (a name twice is two containers).
fn nspawn_machines(prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // The driver's `sh -c … systemd-nspawn "$@"` before its exec has
        // the name as `$0`; only nspawn itself counts.
        if !args.first().is_some_and(|a| a.ends_with("systemd-nspawn")) {
            continue;
        }
        if let Some(i) = args.iter().position(|a| a == "--machine") {
            if let Some(m) = args.get(i + 1).filter(|m| m.starts_with(prefix)) {
                out.push(m.clone());
            }
        }
    }
    out.sort();
    out
}

/// Overlay mounts under the state dir, by container name.
fn overlay_mounts(state_dir: &Path) -> BTreeSet<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let root = state_dir.display().to_string();
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|m| m.strip_prefix(&format!("{root}/")))
        .filter_map(|rest| rest.strip_suffix("/merged"))
        .map(str::to_string)
        .collect()
}

fn netns_with(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Every invariant of the soak, checked against the database, the driver
/// and the host. Returns what is wrong (empty: all hold).
async fn violations(
    pool: &sqlx::PgPool,
    driver: &NspawnDriver,
    prefix: &str,
    quotas: &HashMap<i64, i64>,
) -> Vec<String> {
    let mut bad = Vec::new();
    let rows = services(pool).await;
    let by_id: HashMap<i64, &ServiceRow> = rows.iter().map(|s| (s.id, s)).collect();
    for s in &rows {
        match s.status.as_str() {
            "ready" | "deleted" => {}
            "failed" => {
                if s.failure_reason.as_deref().unwrap_or("").trim().is_empty() {
                    bad.push(format!("service {} failed without a reason", s.id));
                }
            }
            other => bad.push(format!("service {} is still {other}", s.id)),
        }
    }
    // Addresses: every allocated one belongs to a service that holds one,
    // and every such service has exactly one.
    let alloc = allocated(pool).await;
    let mut holders: BTreeMap<i64, usize> = BTreeMap::new();
    for (host, sid) in &alloc {
        *holders.entry(*sid).or_default() += 1;
        match by_id.get(sid) {
            Some(s) if should_hold(s) => {}
            Some(s) => bad.push(format!(
                "leaked address {host}: held by service {sid}, which is {} (failed step {:?})",
                s.status, s.failed_step
            )),
            None => bad.push(format!("leaked address {host}: unknown service {sid}")),
        }
    }
    for s in rows.iter().filter(|s| should_hold(s)) {
        if holders.get(&s.id).copied().unwrap_or(0) != 1 {
            bad.push(format!("service {} ({}) holds no address", s.id, s.status));
        }
    }
    // VMs: the driver's list, the running nspawn processes, the overlay
    // mounts and the network namespaces must all be exactly the VMs of the
    // services that hold one.
    let want: BTreeSet<String> = rows
        .iter()
        .filter(|s| should_hold(s))
        .map(|s| format!("{prefix}{}", s.id))
        .collect();
    let listed: Vec<String> = match driver.list().await {
        Ok(v) => v.into_iter().map(|v| v.name).collect(),
        Err(e) => {
            bad.push(format!("listing VMs: {e}"));
            return bad;
        }
    };
    let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
    if listed_set.len() != listed.len() {
        bad.push(format!("duplicate VM names listed: {listed:?}"));
    }
    for vm in listed_set.difference(&want) {
        bad.push(format!("orphan VM {vm}"));
    }
    for vm in want.difference(&listed_set) {
        bad.push(format!("service's VM {vm} is missing"));
    }
    for s in rows.iter().filter(|s| should_hold(s) && !s.has_vm_row) {
        bad.push(format!("service {} ({}) has no vms row", s.id, s.status));
    }
    let running = nspawn_machines(prefix);
    let running_set: BTreeSet<String> = running.iter().cloned().collect();
    for m in running_set.difference(&want) {
        bad.push(format!("nspawn still runs {m}, which no service holds"));
    }
    if running.len() != running_set.len() {
        bad.push(format!("two nspawn processes for one machine: {running:?}"));
    }
    for m in overlay_mounts(&driver.config().state_dir).difference(&want) {
        bad.push(format!("overlay of {m} still mounted"));
    }
    for n in netns_with(prefix).difference(&want) {
        bad.push(format!("network namespace {n} left"));
    }
    for vm in listed_set.difference(&want) {
        if Path::new("/sys/class/net")
            .join(nspawn::veth_name(vm))
            .exists()
        {
            bad.push(format!("veth of {vm} left"));
        }
    }
    // Quotas, now and over the whole run: creation times against the
    // audit log's moves to `deleted`.
    let mut held: HashMap<i64, i64> = HashMap::new();
    for s in rows.iter().filter(|s| s.status != "deleted") {
        *held.entry(s.created_by).or_default() += 1;
    }
    for (user, n) in &held {
        if let Some(max) = quotas.get(user) {
            if n > max {
                bad.push(format!("user {user} holds {n} servers, quota {max}"));
            }
        }
    }
    let peaks = quota_peaks(pool).await;
    for (user, peak) in &peaks {
        if let Some(max) = quotas.get(user) {
            if peak > max {
                bad.push(format!(
                    "user {user} held {peak} servers at once, quota {max}"
                ));
            }
        }
    }
    bad
}

/// Each user's highest count of servers held at once (created and not yet
/// `deleted`), from the creation times and the audit log.
async fn quota_peaks(pool: &sqlx::PgPool) -> HashMap<i64, i64> {
    let rows = sqlx::query(
        "SELECT s.created_by, s.created_at, \
                (SELECT MIN(a.at) FROM audit_log a WHERE a.object_type = 'service' \
                  AND a.object_id = s.id AND a.action = 'service.status' \
                  AND a.after_json LIKE '%\"deleted\"%') AS deleted_at \
         FROM services s",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut events: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for r in rows {
        let user: i64 = r.get(0);
        let created: i64 = r.get(1);
        let deleted: Option<i64> = r.get(2);
        let e = events.entry(user).or_default();
        e.push((created, 1));
        if let Some(d) = deleted {
            // A deletion at the same millisecond counts first.
            e.push((d, -1));
        }
    }
    events
        .into_iter()
        .map(|(user, mut ev)| {
            ev.sort();
            let (mut cur, mut peak) = (0, 0);
            for (_, d) in ev {
                cur += d;
                peak = peak.max(cur);
            }
            (user, peak)
        })
        .collect()
}

/// Reconciliation passes that succeeded and started at or after `since` (ms).
async fn reconciles_since(pool: &sqlx::PgPool, since: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'reconcile' AND state = 'succeeded' \
         AND started_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until every invariant holds after at least one reconciliation
/// pass that started once the services had settled; panics with what is
/// still wrong after `limit`.
async fn settle(
    pool: &sqlx::PgPool,
    driver: &NspawnDriver,
    prefix: &str,
    quotas: &HashMap<i64, i64>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let deadline = started + limit;
    let mut settled_at: Option<i64> = None;
    loop {
        let bad = violations(pool, driver, prefix, quotas).await;
        let transitional = bad.iter().any(|b| b.contains(" is still "));
        if transitional {
            settled_at = None;
        } else if settled_at.is_none() {
            settled_at = Some(now_ms());
        }
        let reconciled = match settled_at {
            Some(t) => reconciles_since(pool, t).await > 0,
            None => false,
        };
        if bad.is_empty() && reconciled {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {limit:?} (reconciled since settling: {reconciled}):\n  {}",
            bad.join("\n  ")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

// ---------------------------------------------------------------------------
// The soak

/// What every process's configuration file shares.
struct SharedConfig {
    data_dir: PathBuf,
    url: String,
    /// The `[hypervisor]` table's body, but `callback_listen`.
    hypervisor: String,
    /// The `[chaos]` table's body.
    chaos: String,
}

impl SharedConfig {
    /// Writes one process's file: its HTTP port, the callback port its
    /// seeds point at (and, for `serve`, listens on) and its `[workers]`.
    fn write(&self, path: &Path, listen: u16, callback_port: u16, workers: &str) {
        let text = format!(
            "listen = \"127.0.0.1:{listen}\"\n\
             data_dir = \"{data}\"\n\
             database_url = \"{url}\"\n\
             \n[auth]\nargon2_memory_kib = 256\nargon2_iterations = 1\n\
             \n[workers]\n{workers}\n\
             \n[hypervisor]\n{hv}callback_listen = \"0.0.0.0:{callback_port}\"\n\
             \n[analytics]\nevery_secs = 0\n\
             \n[chaos]\n{chaos}\n",
            data = self.data_dir.display(),
            url = self.url,
            hv = self.hypervisor,
            chaos = self.chaos,
        );
        std::fs::write(path, text).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    if !support::can_run_nspawn() {
        return;
    }
    let p = Params::from_env();
    eprintln!("soak parameters: {p:?} (KEEL_SOAK_SEED replays the load's choices)");
    let soak_started = Instant::now();
    let scratch = Scratch::new("soak");
    let data_dir = scratch.sub("data");
    let state_dir = scratch.sub("vms");
    let prefix = support::unique_prefix("ck");
    let playbook = support::write_file_playbook(scratch.path());

    // Our own PostgreSQL server: the soak restarts it.
    let pg = PgServer::start(false);
    let url = pg.url("soak");
    {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .unwrap();
        sqlx::query("CREATE DATABASE soak")
            .execute(&mut c)
            .await
            .unwrap();
    }

    // Data: the fixture (server type, pool, an admin), then the users,
    // each with a site and a quota.
    let db = support::open_db(&url).await;
    // Quarantine 0: a released address is claimable again at once.
    let _fixture = support::seed_fixture(&db, SUBNET, p.addresses, 0).await;
    let pw = Passwords::new(&support::test_auth()).unwrap();
    let system = Principal::system();
    let mut users = Vec::new();
    let mut quotas = HashMap::new();
    for i in 0..p.users {
        let name = format!("soak{i:02}");
        let u = auth::create_user(
            &db,
            &pw,
            &system,
            &name,
            None,
            Some(format!("{name}-password")),
            false,
        )
        .await
        .unwrap();
        let who = Principal {
            user_id: u.id,
            name: u.name.clone(),
            is_admin: false,
        };
        let (_, token) = auth::create_token(&db, &support::test_auth(), &who, "soak", 1)
            .await
            .unwrap();
        let site = sites::create(
            &db,
            &who,
            &NewSite {
                name: format!("site of {name}"),
                description: "chaos soak".into(),
                owner_email: format!("{name}@keel.test"),
            },
        )
        .await
        .unwrap();
        alloc::set_quota(
            &db,
            &system,
            &Quota {
                subject_kind: "user".into(),
                subject_id: u.id,
                max_vms: p.quota,
                max_vcpus: 100,
                max_ram_mb: 1 << 20,
                max_disk_gb: 1000,
            },
        )
        .await
        .unwrap();
        quotas.insert(u.id, p.quota);
        users.push(Arc::new(User {
            name,
            id: u.id,
            token,
            site: site.id,
        }));
    }
    drop(db);

    // Configuration: one per process, differing only in ports.
    let hv = format!(
        "driver = \"nspawn\"\n\
         image_dir = \"{IMAGES}\"\n\
         state_dir = \"{state}\"\n\
         vm_prefix = \"{prefix}\"\n\
         playbook = \"{playbook}\"\n\
         api_retry_secs = 1\n\
         api_retry_attempts = 60\n\
         configure_retry_secs = 2\n\
         configure_attempts = 8\n\
         os_ready_timeout_secs = 120\n\
         os_ready_resets = 1\n\
         reconcile_every_secs = 10\n",
        state = state_dir.display(),
        playbook = playbook.display(),
    );
    let chaos = format!(
        "driver_fault_fraction = {}\ncallback_drop_fraction = {}\n",
        p.driver_fault_fraction, p.callback_drop_fraction
    );
    let shared = SharedConfig {
        data_dir: data_dir.clone(),
        url: url.clone(),
        hypervisor: hv,
        chaos,
    };
    let limit = p.hypervisor_limit;
    let serve_workers = format!("concurrency = 2\nqueues = [\"default\", \"hypervisor={limit}\"]");
    let ports: Vec<(u16, u16)> = (0..2)
        .map(|_| (support::free_port(), support::free_port()))
        .collect();
    let mut procs = Vec::new();
    for (i, (listen, cb)) in ports.iter().enumerate() {
        let cfg = scratch.path().join(format!("serve{i}.toml"));
        shared.write(&cfg, *listen, *cb, &serve_workers);
        procs.push(Proc::new(
            &format!("serve{i}"),
            vec!["--config".into(), cfg.display().to_string(), "serve".into()],
            scratch.path(),
        ));
    }
    for (i, (_, cb)) in ports.iter().enumerate() {
        // A worker's callback URL points at one of the serve nodes'
        // callback listeners (it binds none itself).
        let cfg = scratch.path().join(format!("worker{i}.toml"));
        shared.write(&cfg, support::free_port(), *cb, "concurrency = 0");
        procs.push(Proc::new(
            &format!("worker{i}"),
            vec![
                "--config".into(),
                cfg.display().to_string(),
                "--database-url".into(),
                url.clone(),
                "worker".into(),
                "--concurrency".into(),
                "3".into(),
                "--queue".into(),
                "default".into(),
                "--queue".into(),
                format!("hypervisor={limit}"),
                "--shutdown-grace".into(),
                "1".into(),
            ],
            scratch.path(),
        ));
    }
    let logs: Vec<PathBuf> = procs.iter().map(|p| p.log.clone()).collect();
    let check_driver = {
        let mut cfg = NspawnConfig::new(ImageStore::new(IMAGES));
        cfg.state_dir = state_dir.clone();
        cfg.prefix = prefix.clone();
        NspawnDriver::new(cfg)
    };
    let _sweeper = Sweeper::new(Arc::new({
        let mut cfg = NspawnConfig::new(ImageStore::new(IMAGES));
        cfg.state_dir = state_dir.clone();
        cfg.prefix = prefix.clone();
        NspawnDriver::new(cfg)
    }));

    // The first node creates the panel's SSH key before the others start.
    procs[0].spawn();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let bases: Vec<String> = ports
        .iter()
        .map(|(l, _)| format!("http://127.0.0.1:{l}"))
        .collect();
    let wait_up = |base: String| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            while client
                .get(format!("{base}/api/v1/me"))
                .send()
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "{base} never answered");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_up(bases[0].clone()).await;
    for proc in procs.iter_mut().skip(1) {
        proc.spawn();
    }
    wait_up(bases[1].clone()).await;
    let procs = Arc::new(Mutex::new(procs));
    let nodes = Nodes {
        bases,
        client: client.clone(),
        stats: Arc::new(CallStats::default()),
    };

    // Faults: kills, PostgreSQL restarts, and a watch that starts again
    // any process that ended by itself.
    let load_window = Duration::from_secs(p.load_secs);
    let load_start = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let killer = {
        let procs = procs.clone();
        let stop = stop.clone();
        let (lo, hi, seed) = (p.kill_min_ms, p.kill_max_ms, p.seed);
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x6b696c6c);
            let mut kills = 0u32;
            loop {
                let wait = Duration::from_millis(rng.u64(lo..=hi));
                tokio::select! {
                    _ = stop.cancelled() => return kills,
                    _ = tokio::time::sleep(wait) => {}
                }
                let mut ps = procs.lock().await;
                let n = ps.len();
                let victim = &mut ps[rng.usize(..n)];
                victim.sigkill();
                victim.kills += 1;
                victim.spawn();
                kills += 1;
            }
        })
    };
    let watcher = {
        let procs = procs.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                for proc in procs.lock().await.iter_mut() {
                    proc.reap();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let pg_restarter = {
        let stop = stop.clone();
        let n = p.pg_restarts;
        let pg_dir = pg.dir.clone();
        let port = pg.port;
        tokio::spawn(async move {
            let mut took = Vec::new();
            for k in 1..=n {
                let at = load_window * k as u32 / (n as u32 + 1);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until((load_start + at).into()) => {}
                }
                let pg = PgServer {
                    port,
                    dir: pg_dir.clone(),
                };
                let d = tokio::task::spawn_blocking(move || restart_postgres(&pg))
                    .await
                    .unwrap();
                eprintln!("soak: PostgreSQL restarted in {:.1} s", d.as_secs_f64());
                took.push(d);
            }
            took
        })
    };

    // The load.
    let per_user = p.requests / p.users;
    let extra = p.requests % p.users;
    let loads: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let n = per_user + usize::from(i < extra);
            tokio::spawn(user_load(
                nodes.clone(),
                u.clone(),
                n,
                load_window,
                p.seed.wrapping_add(i as u64),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for l in loads {
        outcomes.extend(l.await.unwrap());
    }
    let load_took = load_start.elapsed();
    let pg_took = pg_restarter.await.unwrap();
    stop.cancel();
    let kills = killer.await.unwrap();
    watcher.await.unwrap();
    // Every process up again for the settling.
    for proc in procs.lock().await.iter_mut() {
        proc.reap();
        if proc.child.is_none() {
            proc.spawn();
        }
    }
    eprintln!(
        "soak: load done in {:.0} s; {} requests, {kills} kills, {} PostgreSQL restarts",
        load_took.as_secs_f64(),
        outcomes.len(),
        pg_took.len()
    );

    // Every request got an answer that says what happened.
    assert_eq!(outcomes.len(), p.requests);
    let created: BTreeSet<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Created(id) => Some(*id),
            _ => None,
        })
        .collect();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let in_db: BTreeSet<i64> = services(&pool).await.iter().map(|s| s.id).collect();
    assert_eq!(
        in_db, created,
        "the services in the database are exactly the ones the API said it created"
    );

    // Settle: every flow finished, reconciliation ran, every invariant holds.
    let settle_took = settle(
        &pool,
        &check_driver,
        &prefix,
        &quotas,
        Duration::from_secs(p.settle_secs),
    )
    .await;
    let rows = services(&pool).await;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for s in &rows {
        *by_status.entry(s.status.clone()).or_default() += 1;
        if s.status == "failed" {
            *reasons
                .entry(format!(
                    "{} (step {})",
                    s.failure_reason.clone().unwrap_or_default(),
                    s.failed_step.clone().unwrap_or_default()
                ))
                .or_default() += 1;
        }
    }
    let held_at_settle = rows.iter().filter(|s| should_hold(s)).count();
    let reconcile_actions: Vec<(String, i64)> = sqlx::query(
        "SELECT action, COUNT(*) FROM audit_log WHERE action LIKE 'reconcile.%' GROUP BY action ORDER BY action",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let reconcile_passes: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'reconcile' AND state = 'succeeded'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let dead_jobs: Vec<(String, i64)> = sqlx::query(
        "SELECT kind, COUNT(*) FROM jobs WHERE state = 'dead' GROUP BY kind ORDER BY kind",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Last: delete everything left through the API; nothing may remain.
    let cleanup_started = Instant::now();
    let by_user: HashMap<i64, Arc<User>> = users.iter().map(|u| (u.id, u.clone())).collect();
    for s in rows.iter().filter(|s| s.status != "deleted") {
        let u = &by_user[&s.created_by];
        let a = nodes
            .call(
                "DELETE",
                &format!("/api/v1/services/{}", s.id),
                &u.token,
                None,
                None,
                Duration::from_secs(120),
            )
            .await;
        assert!(
            a.status == 202 || (a.status == 409 && a.json.to_string().contains("delet")),
            "deleting {}: {} {}",
            s.id,
            a.status,
            a.json
        );
    }
    settle(
        &pool,
        &check_driver,
        &prefix,
        &quotas,
        Duration::from_secs(p.settle_secs),
    )
    .await;
    let rows = services(&pool).await;
    assert!(
        rows.iter().all(|s| s.status == "deleted"),
        "all deleted: {rows:?}"
    );
    assert!(allocated(&pool).await.is_empty(), "no address allocated");
    assert!(check_driver.list().await.unwrap().is_empty());
    assert!(netns_with(&prefix).is_empty());
    assert_eq!(nspawn_machines(&prefix), Vec::<String>::new());
    let free: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pool_addresses WHERE state = 'free'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(free as u64, p.addresses, "every address back in the pool");
    let cleanup_took = cleanup_started.elapsed();

    // The checks themselves must see a leak: plant one of each kind and
    // expect every one reported.
    let stray = format!("{prefix}999999");
    let net = NetIdentity {
        hostname: "stray.keel.test".into(),
        ipv4: Some(std::net::Ipv4Addr::new(10, 234, SUBNET, 250)),
        prefix4: 24,
        gateway4: Some(std::net::Ipv4Addr::new(10, 234, SUBNET, 1)),
        ipv6: None,
        prefix6: keel_panel::hypervisor::DEFAULT_PREFIX6,
        gateway6: None,
        attach: keel_panel::hypervisor::Attachment::Private,
    };
    let params = SeedParams::new(
        format!("{stray}-g1"),
        net.clone(),
        HostKeys::generate(&stray).unwrap(),
    );
    check_driver
        .create(&VmSpec {
            name: stray.clone(),
            cpus: 1,
            ram_mb: 256,
            disk_gb: 1,
            image: support::IMAGE.into(),
            seed: seed::render(&params).unwrap(),
            net,
        })
        .await
        .unwrap();
    assert!(rows.len() >= 2, "the load created at least two servers");
    let (first, second) = (rows[0].id, rows[1].id);
    sqlx::query(
        "UPDATE pool_addresses SET state = 'allocated', service_id = $1 \
         WHERE id = (SELECT MIN(id) FROM pool_addresses WHERE state = 'free')",
    )
    .bind(first)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE services SET status = 'configuring' WHERE id = $1")
        .bind(second)
        .execute(&pool)
        .await
        .unwrap();
    let no_quota: HashMap<i64, i64> = quotas.keys().map(|u| (*u, 0)).collect();
    let planted = violations(&pool, &check_driver, &prefix, &no_quota).await;
    for want in [
        format!("orphan VM {stray}"),
        "leaked address".to_string(),
        format!("service {second} is still configuring"),
        "servers at once, quota 0".to_string(),
    ] {
        assert!(
            planted.iter().any(|b| b.contains(&want)),
            "the checks missed a planted {want:?}: {planted:?}"
        );
    }
    check_driver.delete(&stray).await.unwrap();

    // Figures.
    let mut procs = procs.lock().await;
    for proc in procs.iter_mut() {
        proc.sigkill();
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        match o {
            Outcome::CreateRefused { error, message } => {
                // The message names the figures; the kind is what counts.
                let first = message.split(':').next().unwrap_or_default();
                *refusals
                    .entry(format!("create: {error} ({first})"))
                    .or_default() += 1
            }
            Outcome::DeleteRefused { message, .. } => {
                *refusals.entry(format!("delete: {message}")).or_default() += 1
            }
            _ => {}
        }
    }
    let mut exits = Vec::new();
    for proc in procs.iter() {
        for e in &proc.exits {
            exits.push(format!("{}: {e}", proc.name));
        }
    }
    println!("==== chaos soak figures ====");
    println!("seed: {}", p.seed);
    println!(
        "setup: 2 serve + 2 worker processes, PostgreSQL, nspawn driver; {} users, quota {} each, {} addresses",
        p.users, p.quota, p.addresses
    );
    println!(
        "requests: {} ({} creates accepted, {} creates refused, {} deletes accepted, {} deletes refused)",
        outcomes.len(),
        count(|o| matches!(o, Outcome::Created(_))),
        count(|o| matches!(o, Outcome::CreateRefused { .. })),
        count(|o| matches!(o, Outcome::DeleteAccepted)),
        count(|o| matches!(o, Outcome::DeleteRefused { .. })),
    );
    for (r, n) in &refusals {
        println!("  refused: {n} × {r}");
    }
    println!(
        "client retries: {} ({} 5xx answers, {} transport errors)",
        nodes.stats.retried.load(Ordering::Relaxed),
        nodes.stats.server_errors.load(Ordering::Relaxed),
        nodes.stats.transport_errors.load(Ordering::Relaxed)
    );
    let kills_by: Vec<String> = procs
        .iter()
        .map(|p| format!("{} {}", p.name, p.kills))
        .collect();
    println!("SIGKILLs: {kills} ({})", kills_by.join(", "));
    println!(
        "process starts: {} (exits not caused by the soak: {})",
        procs.iter().map(|p| p.starts).sum::<u32>(),
        exits.len()
    );
    for e in &exits {
        println!("  exit: {e}");
    }
    let restarts: Vec<String> = pg_took
        .iter()
        .map(|d| format!("{:.1} s", d.as_secs_f64()))
        .collect();
    println!(
        "PostgreSQL restarts: {} ({})",
        pg_took.len(),
        restarts.join(", ")
    );
    println!(
        "driver faults injected: {} before the call, {} after it (fraction {})",
        count_lines(&logs, "fault injection: failed before the call"),
        count_lines(&logs, "fault injection: failed after a successful call"),
        p.driver_fault_fraction
    );
    println!(
        "callbacks dropped: {} (fraction {}); accepted: {}",
        count_lines(&logs, "fault injection: VM-ready callback dropped"),
        p.callback_drop_fraction,
        count_lines(&logs, "VM called back; configure queued")
            + count_lines(&logs, "VM called back before the provision step finished")
    );
    println!(
        "services after settling: {by_status:?} ({held_at_settle} holding a VM and an address)"
    );
    for (r, n) in &reasons {
        println!("  failed: {n} × {r}");
    }
    println!(
        "job attempts: {attempts}; dead jobs: {dead_jobs:?}; reconcile passes: {reconcile_passes}; reconcile actions: {reconcile_actions:?}"
    );
    println!(
        "durations: load {:.0} s, settle {:.0} s, delete-all {:.0} s, total {:.0} s",
        load_took.as_secs_f64(),
        settle_took.as_secs_f64(),
        cleanup_took.as_secs_f64(),
        soak_started.elapsed().as_secs_f64()
    );
    println!(
        "final: 0 leaked addresses, 0 orphan VMs, 0 duplicate VMs, 0 quota overruns, {} services all deleted, {} addresses free",
        rows.len(),
        free
    );
    assert!(kills > 0, "the soak killed nothing");
    assert_eq!(pg_took.len(), p.pg_restarts);
}
