//! Durable job output. A job handler opens a [`JobLog`] from its
//! [`JobContext`] and appends lines to it, usually the engine's JSON events
//! through [`JobLog::engine_sink`]. Lines are numbered per job (`seq`, counting
//! on across attempts), buffered, and written to the `job_log` table in small
//! batches by a background flusher, so a role run with thousands of events
//! costs a few transactions, not thousands.
//!
//! Readers tail the table by `(job_id, seq)` ([`read`], [`read_on`]): the
//! writer may be another process (`keel-panel worker`), so the table is the
//! only source of truth. Within one process, every flush is also announced on
//! a broadcast hub ([`follow`], [`follow_all`]) so live followers (the SSE
//! endpoint) wake at once instead of waiting for their next poll.
//!
//! Ordering: one `JobLog` serialises its own writes, so a reader that has
//! seen `seq` n never later finds a committed line below n from that writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use super::worker::JobContext;
use crate::clock::UnixMillis;
use crate::db::Conn;
use crate::store::{Store, StoreError};

/// Most rows one INSERT statement carries (SQLite caps bound parameters).
const ROWS_PER_STATEMENT: usize = 400;
/// Lines kept in memory while the database refuses them; older ones are
/// dropped (with a warning) rather than growing without bound.
const MAX_PENDING: usize = 100_000;

/// One stored line of a job's output.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    pub job_id: i64,
    /// Position in the job's output, from 1, across attempts.
    pub seq: i64,
    /// When the line was appended (Unix milliseconds).
    pub at_ms: UnixMillis,
    /// The attempt that printed it.
    pub attempt: u32,
    /// The line: an engine event (`{"event": "task_start", ...}`) or a
    /// handler's own message (`{"event": "message", "message": ...}`).
    #[schema(value_type = Object)]
    pub line: Value,
}

/// Announced on the hub after a batch of lines is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub job_id: i64,
    /// The highest `seq` now stored.
    pub last_seq: i64,
}

fn hub() -> &'static broadcast::Sender<Flushed> {
    static HUB: OnceLock<broadcast::Sender<Flushed>> = OnceLock::new();
    HUB.get_or_init(|| broadcast::channel(1024).0)
}

/// Every flush in this process. A lagged receiver has only missed wake-ups;
/// it should re-read the table.
pub fn follow_all() -> broadcast::Receiver<Flushed> {
    hub().subscribe()
}

/// Flushes of one job in this process.
pub struct JobFollower {
    job_id: i64,
    rx: broadcast::Receiver<Flushed>,
}

impl JobFollower {
    /// Waits until lines of the job may have been added (a flush of this
    /// job, or missed notices). `None` when the hub is gone.
    pub async fn changed(&mut self) -> Option<i64> {
        loop {
            match self.rx.recv().await {
                Ok(f) if f.job_id == self.job_id => return Some(f.last_seq),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(-1),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Flushes of `job_id` in this process.
pub fn follow(job_id: i64) -> JobFollower {
    JobFollower {
        job_id,
        rx: follow_all(),
    }
}

/// Batching knobs.
#[derive(Debug, Clone, Copy)]
pub struct JobLogConfig {
    /// The flusher writes at least this often while lines are pending.
    pub flush_every: Duration,
    /// ... and at once when this many lines are pending.
    pub batch_lines: usize,
}

impl Default for JobLogConfig {
    fn default() -> Self {
        Self {
            flush_every: Duration::from_millis(200),
            batch_lines: 256,
        }
    }
}

struct Pending {
    lines: Vec<LogLine>,
    next_seq: i64,
    dropped: u64,
}

struct Shared {
    store: Store,
    job_id: i64,
    attempt: u32,
    config: JobLogConfig,
    pending: Mutex<Pending>,
    /// Serialises writes so commits happen in `seq` order.
    write: tokio::sync::Mutex<()>,
    wake: Notify,
    closed: AtomicBool,
    /// Batches written, for tests and metrics.
    batches: std::sync::atomic::AtomicU64,
}

/// Tells the flusher to finish when the last [`JobLog`] clone is dropped.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

/// The output log of one job attempt. Cheap to clone; appending never
/// blocks. Call [`JobLog::close`] (or at least [`JobLog::flush`]) before the
/// handler returns, so every line is stored before the job is marked
/// finished; dropping the last clone still flushes, but in the background.
#[derive(Clone)]
pub struct JobLog {
    shared: Arc<Shared>,
    _guard: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for JobLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLog")
            .field("job_id", &self.shared.job_id)
            .field("attempt", &self.shared.attempt)
            .finish()
    }
}

impl JobLog {
    /// The log of the job `ctx` runs, for its current attempt.
    pub async fn open(ctx: &JobContext) -> Result<JobLog, StoreError> {
        Self::open_with(
            &ctx.store,
            ctx.job.id,
            ctx.job.attempts,
            JobLogConfig::default(),
        )
        .await
    }

    /// The log of `job_id` for `attempt`, with explicit batching knobs.
    /// Numbering continues after the lines already stored for the job.
    pub async fn open_with(
        store: &Store,
        job_id: i64,
        attempt: u32,
        config: JobLogConfig,
    ) -> Result<JobLog, StoreError> {
        let last = last_seq(store, job_id).await?;
        let shared = Arc::new(Shared {
            store: store.clone(),
            job_id,
            attempt,
            config,
            pending: Mutex::new(Pending {
                lines: Vec::new(),
                next_seq: last + 1,
                dropped: 0,
            }),
            write: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            batches: Default::default(),
        });
        tokio::spawn(flusher(shared.clone()));
        Ok(JobLog {
            _guard: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        })
    }

    pub fn job_id(&self) -> i64 {
        self.shared.job_id
    }

    /// Appends one line. It is stored within `flush_every`, or sooner when
    /// a batch fills up.
    pub fn append(&self, mut line: Value) {
        // PostgreSQL's jsonb cannot hold U+0000, which command output can
        // carry (`find -print0`); both backends store U+FFFD instead.
        replace_nul(&mut line);
        let s = &self.shared;
        let full = {
            let mut p = s.pending.lock().unwrap_or_else(|e| e.into_inner());
            let seq = p.next_seq;
            p.next_seq += 1;
            p.lines.push(LogLine {
                job_id: s.job_id,
                seq,
                at_ms: s.store.now(),
                attempt: s.attempt,
                line,
            });
            if p.lines.len() > MAX_PENDING {
                let excess = p.lines.len() - MAX_PENDING;
                p.lines.drain(..excess);
                p.dropped += excess as u64;
            }
            p.lines.len() >= s.config.batch_lines
        };
        if full {
            s.wake.notify_one();
        }
    }

    /// Appends a handler's own message.
    pub fn message(&self, text: impl Into<String>) {
        self.append(serde_json::json!({ "event": "message", "message": text.into() }));
    }

    /// Writes every line appended so far.
    pub async fn flush(&self) -> Result<(), StoreError> {
        write_pending(&self.shared).await
    }

    /// Flushes and stops the background flusher.
    pub async fn close(self) -> Result<(), StoreError> {
        self.flush().await
        // Dropping `self` (and so the guard, if this was the last clone)
        // lets the flusher exit.
    }

    /// Batches written so far by this log.
    pub fn batches_written(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }

    /// A sink for the engine's executor: each event becomes one line, in
    /// the same JSON shape `keel --json` prints.
    pub fn engine_sink(&self) -> Arc<dyn keel::output::Sink> {
        Arc::new(EngineSink(self.clone()))
    }
}

/// [`keel::output::Sink`] over a [`JobLog`].
pub struct EngineSink(pub JobLog);

impl keel::output::Sink for EngineSink {
    fn emit(&self, event: &keel::output::Event) {
        match serde_json::to_value(event) {
            Ok(v) => self.0.append(v),
            Err(e) => {
                tracing::warn!(job_id = self.0.job_id(), error = %e, "unserialisable engine event")
            }
        }
    }
}

async fn flusher(shared: Arc<Shared>) {
    loop {
        let closed = shared.closed.load(Ordering::SeqCst);
        if !closed {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(shared.config.flush_every) => {}
            }
        }
        if let Err(e) = write_pending(&shared).await {
            tracing::warn!(job_id = shared.job_id, error = %e, "writing job output failed; will retry");
            if closed {
                // Nobody is left to call flush; one last try after a pause.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = write_pending(&shared).await {
                    tracing::error!(job_id = shared.job_id, error = %e, "job output lost");
                }
                return;
            }
            continue;
        }
        if closed {
            return;
        }
    }
}

/// Takes the pending lines and stores them in one transaction. On failure
/// they are put back in front, so the next try keeps the order.
async fn write_pending(shared: &Shared) -> Result<(), StoreError> {
    let _w = shared.write.lock().await;
    let (lines, dropped) = {
        let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut p.lines), std::mem::take(&mut p.dropped))
    };
    if dropped > 0 {
        tracing::warn!(
            job_id = shared.job_id,
            dropped,
            "job output dropped while the database was unavailable"
        );
    }
    if lines.is_empty() {
        return Ok(());
    }
    match insert(&shared.store, &lines).await {
        Ok(()) => {
            shared.batches.fetch_add(1, Ordering::Relaxed);
            let last_seq = lines.last().map(|l| l.seq).unwrap_or(0);
            let _ = hub().send(Flushed {
                job_id: shared.job_id,
                last_seq,
            });
            Ok(())
        }
        Err(e) => {
            // Another writer took some of our numbers (a second worker
            // running this job after a lost lease): number on after its
            // lines instead of failing forever.
            let base = match &e {
                StoreError::Database(db) if crate::store::is_unique_violation(db) => {
                    last_seq(&shared.store, shared.job_id).await.ok()
                }
                _ => None,
            };
            let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::replace(&mut p.lines, lines);
            p.lines.extend(newer);
            if let Some(last) = base {
                for (i, l) in p.lines.iter_mut().enumerate() {
                    l.seq = last + 1 + i as i64;
                }
                p.next_seq = last + 1 + p.lines.len() as i64;
            }
            Err(e)
        }
    }
}

fn replace_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    replace_nul(&mut v);
                    map.insert(k.replace('\0', "\u{FFFD}"), v);
                }
            } else {
                map.values_mut().for_each(replace_nul);
            }
        }
        _ => {}
    }
}

async fn insert(store: &Store, lines: &[LogLine]) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    for chunk in lines.chunks(ROWS_PER_STATEMENT) {
        if let Some(c) = tx.as_sqlite() {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO job_log (job_id, seq, at_ms, attempt, line) ",
            );
            q.push_values(chunk, |mut b, l| {
                b.push_bind(l.job_id)
                    .push_bind(l.seq)
                    .push_bind(l.at_ms)
                    .push_bind(i64::from(l.attempt))
                    .push_bind(l.line.to_string());
            });
            q.build().execute(&mut *c).await?;
        } else if let Some(c) = tx.as_postgres() {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO job_log (job_id, seq, at_ms, attempt, line) ",
            );
            q.push_values(chunk, |mut b, l| {
                b.push_bind(l.job_id)
                    .push_bind(l.seq)
                    .push_bind(l.at_ms)
                    .push_bind(i64::from(l.attempt))
                    .push_bind(sqlx::types::Json(&l.line));
            });
            q.build().execute(&mut *c).await?;
        }
    }
    tx.commit().await
}

/// The highest `seq` stored for `job_id` (0 when none).
pub async fn last_seq(store: &Store, job_id: i64) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COALESCE(MAX(seq), 0) FROM job_log WHERE job_id = $1";
    Ok(if let Some(pool) = store.as_sqlite_pool() {
        sqlx::query_scalar::<_, i64>(SQL)
            .bind(job_id)
            .fetch_one(pool)
            .await?
    } else {
        let pool = store
            .as_postgres_pool()
            .expect("a store is SQLite or PostgreSQL");
        sqlx::query_scalar::<_, i64>(SQL)
            .bind(job_id)
            .fetch_one(pool)
            .await?
    })
}

/// Up to `limit` lines of `job_id` after `after_seq`, in order.
pub async fn read(
    store: &Store,
    job_id: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LogLine>, StoreError> {
    if let Some(pool) = store.as_sqlite_pool() {
        let mut c = pool.acquire().await?;
        read_on(&mut Conn::Sqlite(&mut c), job_id, after_seq, limit).await
    } else {
        let pool = store
            .as_postgres_pool()
            .expect("a store is SQLite or PostgreSQL");
        let mut c = pool.acquire().await?;
        read_on(&mut Conn::Pg(&mut c), job_id, after_seq, limit).await
    }
}

#[derive(sqlx::FromRow)]
struct SqliteRow {
    job_id: i64,
    seq: i64,
    at_ms: i64,
    attempt: i64,
    line: String,
}

#[derive(sqlx::FromRow)]
struct PgRow {
    job_id: i64,
    seq: i64,
    at_ms: i64,
    attempt: i64,
    line: sqlx::types::Json<Value>,
}

const SELECT_LINES: &str = "SELECT job_id, seq, at_ms, attempt, line FROM job_log \
     WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// [`read`] on a connection the caller already holds (the panel's read
/// pool, so followers do not queue behind the SQLite writer).
pub async fn read_on(
    conn: &mut Conn<'_>,
    job_id: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LogLine>, StoreError> {
    let limit = i64::from(limit.max(1));
    let attempt = |a: i64| u32::try_from(a).unwrap_or(0);
    Ok(match conn {
        Conn::Sqlite(c) => sqlx::query_as::<_, SqliteRow>(SELECT_LINES)
            .bind(job_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?
            .into_iter()
            .map(|r| LogLine {
                job_id: r.job_id,
                seq: r.seq,
                at_ms: r.at_ms,
                attempt: attempt(r.attempt),
                // Stored by `insert` as serialised JSON; anything else is
                // shown as the text it is.
                line: serde_json::from_str(&r.line).unwrap_or(Value::String(r.line)),
            })
            .collect(),
        Conn::Pg(c) => sqlx::query_as::<_, PgRow>(SELECT_LINES)
            .bind(job_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?
            .into_iter()
            .map(|r| LogLine {
                job_id: r.job_id,
                seq: r.seq,
                at_ms: r.at_ms,
                attempt: attempt(r.attempt),
                line: r.line.0,
            })
            .collect(),
    })
}

/// The highest stored `seq` of each job whose serialisation key is
/// `serial_key` and whose id is below `before_job`: where a resumed
/// follower starts on jobs it had already passed.
pub async fn last_seqs_before(
    conn: &mut Conn<'_>,
    serial_key: &str,
    before_job: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    const SQL: &str = "SELECT l.job_id, MAX(l.seq) FROM job_log l JOIN jobs j ON j.id = l.job_id \
         WHERE j.serial_key = $1 AND l.job_id < $2 GROUP BY l.job_id";
    Ok(match conn {
        Conn::Sqlite(c) => {
            sqlx::query_as::<_, (i64, i64)>(SQL)
                .bind(serial_key)
                .bind(before_job)
                .fetch_all(&mut **c)
                .await?
        }
        Conn::Pg(c) => {
            sqlx::query_as::<_, (i64, i64)>(SQL)
                .bind(serial_key)
                .bind(before_job)
                .fetch_all(&mut **c)
                .await?
        }
    })
}

/// The last `n` lines of `job_id`, in order (for server-rendered pages).
pub async fn tail_on(conn: &mut Conn<'_>, job_id: i64, n: u32) -> Result<Vec<LogLine>, StoreError> {
    const SQL: &str = "SELECT COALESCE(MAX(seq), 0) FROM job_log WHERE job_id = $1";
    let last: i64 = match conn {
        Conn::Sqlite(c) => {
            sqlx::query_scalar(SQL)
                .bind(job_id)
                .fetch_one(&mut **c)
                .await?
        }
        Conn::Pg(c) => {
            sqlx::query_scalar(SQL)
                .bind(job_id)
                .fetch_one(&mut **c)
                .await?
        }
    };
    read_on(conn, job_id, (last - i64::from(n)).max(0), n).await
}

/// A one-line human summary of a stored line, in the spirit of
/// ansible-playbook's output (for the server page and the SSE `text`).
pub fn summary(line: &Value) -> String {
    let s = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or("");
    match s("event") {
        "message" => s("message").to_string(),
        "warning" => format!("[WARNING]: {}", s("message")),
        "error" => format!("[ERROR]: {}", s("message")),
        "playbook_start" => format!("PLAYBOOK [{}]", s("path")),
        "play_start" => format!("PLAY [{}]", s("name")),
        "task_start" if line["handler"] == true => format!("RUNNING HANDLER [{}]", s("name")),
        "task_start" => format!("TASK [{}]", s("name")),
        "no_hosts_matched" => format!("skipping: no hosts matched {}", s("pattern")),
        "included" => format!("included: {}", s("file")),
        "no_more_hosts" => "NO MORE HOSTS LEFT".to_string(),
        "host_result" => {
            let mut out = format!("{}: [{}]", s("status"), s("host"));
            if let Some(d) = line.get("delegated_to").and_then(Value::as_str) {
                out = format!("{}: [{} -> {d}]", s("status"), s("host"));
            }
            if let Some(item) = line.get("item_label").and_then(Value::as_str) {
                out.push_str(&format!(" => (item={item})"));
            }
            if s("status") == "failed" {
                // An include that could not be loaded gives a `reason`.
                let result = &line["result"];
                let msg = result.get("msg").or_else(|| result.get("reason"));
                if let Some(msg) = msg.and_then(Value::as_str) {
                    out.push_str(&format!(": {msg}"));
                }
            }
            if line["ignored"] == true {
                out.push_str(" ...ignoring");
            }
            out
        }
        "recap" => {
            let hosts: Vec<String> = line["stats"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|pair| {
                    let st = &pair[1];
                    format!(
                        "{} ok={} changed={} unreachable={} failed={} skipped={}",
                        pair[0].as_str().unwrap_or("?"),
                        st["ok"],
                        st["changed"],
                        st["unreachable"],
                        st["failed"],
                        st["skipped"]
                    )
                })
                .collect();
            format!("PLAY RECAP {}", hosts.join("; "))
        }
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{enqueue_now, JobSpec};

    async fn sqlite() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn batches_lines_and_pages_them_in_order() {
        let (store, _dir) = sqlite().await;
        let job = enqueue_now(&store, JobSpec::new("t", serde_json::json!({})))
            .await
            .unwrap()
            .job_id;
        let log = JobLog::open_with(
            &store,
            job,
            1,
            JobLogConfig {
                // Only batch-size and explicit flushes write in this test.
                flush_every: Duration::from_secs(3600),
                batch_lines: 100,
            },
        )
        .await
        .unwrap();
        let mut follower = follow(job);
        for i in 0..250 {
            log.append(serde_json::json!({ "event": "n", "i": i }));
        }
        log.flush().await.unwrap();
        // 250 appends, at most a few transactions: the two full batches may
        // be picked up by the flusher, and the rest by the flush.
        let batches = log.batches_written();
        assert!((1..=3).contains(&batches), "{batches} batches");
        let seen = follower.changed().await.unwrap();
        assert!(seen > 0);

        let first = read(&store, job, 0, 100).await.unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(first[0].seq, 1);
        assert_eq!(first[0].line["i"], 0);
        assert_eq!(first[0].attempt, 1);
        let rest = read(&store, job, first.last().unwrap().seq, 1000)
            .await
            .unwrap();
        assert_eq!(rest.len(), 150);
        assert_eq!(rest.last().unwrap().seq, 250);
        assert_eq!(rest.last().unwrap().line["i"], 249);
        assert!(read(&store, job, 250, 10).await.unwrap().is_empty());

        // A second attempt numbers on after the first.
        drop(log);
        let again = JobLog::open_with(&store, job, 2, JobLogConfig::default())
            .await
            .unwrap();
        again.message("second attempt");
        again.engine_sink().emit(&keel::output::Event::Warning {
            message: "careful".into(),
        });
        again.close().await.unwrap();
        let tail = read(&store, job, 250, 10).await.unwrap();
        assert_eq!(tail.len(), 2);
        assert_eq!((tail[0].seq, tail[0].attempt), (251, 2));
        assert_eq!(tail[0].line["message"], "second attempt");
        assert_eq!(tail[1].line["event"], "warning");
        assert_eq!(tail[1].line["message"], "careful");
        assert_eq!(last_seq(&store, job).await.unwrap(), 252);
        assert_eq!(summary(&tail[1].line), "[WARNING]: careful");
    }

    #[test]
    fn summaries_read_like_ansible_playbook() {
        let task = serde_json::json!({"event": "task_start", "id": 1, "name": "install", "path": "x", "handler": false});
        assert_eq!(summary(&task), "TASK [install]");
        let res = serde_json::json!({"event": "host_result", "host": "web1", "status": "failed",
            "ignored": false, "result": {"msg": "boom"}, "is_item": true, "item_label": "nginx"});
        assert_eq!(summary(&res), "failed: [web1] => (item=nginx): boom");
        let recap = serde_json::json!({"event": "recap", "stats": [["web1", {"ok": 2, "changed": 1, "unreachable": 0, "failed": 0, "skipped": 0}]]});
        assert_eq!(
            summary(&recap),
            "PLAY RECAP web1 ok=2 changed=1 unreachable=0 failed=0 skipped=0"
        );
        assert_eq!(summary(&serde_json::json!({"x": 1})), r#"{"x":1}"#);
    }

    #[tokio::test]
    async fn a_second_writer_of_the_same_job_numbers_on_after_the_first() {
        let (store, _dir) = sqlite().await;
        let job = enqueue_now(&store, JobSpec::new("t", serde_json::json!({})))
            .await
            .unwrap()
            .job_id;
        let slow = JobLogConfig {
            flush_every: Duration::from_secs(3600),
            batch_lines: 1000,
        };
        // Both open before either writes, so both start at seq 1.
        let a = JobLog::open_with(&store, job, 1, slow).await.unwrap();
        let b = JobLog::open_with(&store, job, 2, slow).await.unwrap();
        a.message("a1");
        a.flush().await.unwrap();
        b.message("b1");
        b.message("b2");
        assert!(b.flush().await.is_err(), "seq 1 is taken");
        b.flush().await.unwrap();
        let all = read(&store, job, 0, 10).await.unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|l| (l.seq, l.line["message"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "a1".to_string()),
                (2, "b1".to_string()),
                (3, "b2".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn timer_flushes_without_an_explicit_flush_and_drop_flushes_the_rest() {
        let (store, _dir) = sqlite().await;
        let job = enqueue_now(&store, JobSpec::new("t", serde_json::json!({})))
            .await
            .unwrap()
            .job_id;
        let log = JobLog::open_with(
            &store,
            job,
            1,
            JobLogConfig {
                flush_every: Duration::from_millis(20),
                batch_lines: 1000,
            },
        )
        .await
        .unwrap();
        let mut follower = follow(job);
        log.message("a");
        follower.changed().await.unwrap();
        assert_eq!(read(&store, job, 0, 10).await.unwrap().len(), 1);
        log.message("b");
        drop(log);
        follower.changed().await.unwrap();
        let all = read(&store, job, 0, 10).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].line["message"], "b");
    }
}
