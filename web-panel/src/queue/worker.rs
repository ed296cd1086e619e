//! Workers: claim jobs with a lease, run their handlers, heartbeat while
//! they run, and record each attempt. [`Worker::run`] is the long-running
//! loop used by `keel-panel serve` and `keel-panel worker`; tests drive the
//! same steps one at a time ([`Worker::claim`], [`Worker::execute`],
//! [`Worker::finish`], [`Worker::heartbeat`], [`Worker::run_until_idle`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::cron::Scheduler;
use super::{AttemptOutcome, Completion, FailureRecord, Job, RetryPolicy, DEFAULT_QUEUE};
use crate::clock::millis;
use crate::store::{ClaimRequest, Store, StoreError};

/// How a handler failed. The text is what the job history keeps; the
/// optional `detail` is data the handler's own [`JobHandler::on_failure`]
/// reads back when this error kills the job, so the hook never has to
/// parse the text.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (network blip, host not up yet).
    #[error("{message}")]
    Retryable {
        message: String,
        detail: Option<serde_json::Value>,
    },
    /// Retrying cannot help (bad input, resource gone).
    #[error("{message}")]
    Permanent {
        message: String,
        detail: Option<serde_json::Value>,
    },
    /// The handler stopped because it was asked to.
    #[error("cancelled")]
    Cancelled,
}

impl JobError {
    pub fn retryable(e: impl fmt::Display) -> Self {
        JobError::Retryable {
            message: e.to_string(),
            detail: None,
        }
    }
    pub fn permanent(e: impl fmt::Display) -> Self {
        JobError::Permanent {
            message: e.to_string(),
            detail: None,
        }
    }

    /// Attaches data for `on_failure` (see [`Failure::detail`]).
    pub fn with_detail(self, value: serde_json::Value) -> Self {
        match self {
            JobError::Retryable { message, .. } => JobError::Retryable {
                message,
                detail: Some(value),
            },
            JobError::Permanent { message, .. } => JobError::Permanent {
                message,
                detail: Some(value),
            },
            JobError::Cancelled => JobError::Cancelled,
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent { .. })
    }
}

/// Why a job died, as its `on_failure` hook gets it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The last error's text (kept in the job history for admins).
    pub error: &'a str,
    /// What the handler attached to the error that killed the job
    /// ([`JobError::with_detail`]); `None` when the job died without an
    /// error of its own (out of attempts at claim, no handler, a panic).
    pub detail: Option<&'a serde_json::Value>,
}

impl<'a> Failure<'a> {
    /// A failure with text only.
    pub fn text(error: &'a str) -> Self {
        Failure {
            error,
            detail: None,
        }
    }
}

/// What a handler gets: the job, a cancellation signal, and the store.
pub struct JobContext {
    pub job: Job,
    /// Fires when the job is cancelled, its lease is lost, or the worker
    /// shuts down. Handlers check it between steps and stop cleanly.
    pub cancel: CancellationToken,
    pub store: Store,
    output_ref: Arc<Mutex<Option<String>>>,
}

impl JobContext {
    /// Names the output log of this attempt (kept in the job history).
    pub fn set_output_ref(&self, reference: impl Into<String>) {
        *self.output_ref.lock().unwrap_or_else(|e| e.into_inner()) = Some(reference.into());
    }

    pub fn payload(&self) -> &serde_json::Value {
        &self.job.payload
    }
}

/// Runs one kind of job. Handlers must be idempotent: an attempt can be
/// repeated after a worker dies, and the queue promises at-least-once.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError>;

    /// Called once when the job is dead (last attempt failed, or a
    /// permanent error). The default logs and records it for admins.
    async fn on_failure(
        &self,
        store: &Store,
        job: &Job,
        failure: Failure<'_>,
    ) -> Result<(), StoreError> {
        record_failure(store, job, failure.error).await
    }
}

/// The default `on_failure` hook: log, and add a row to the failures table
/// the panel shows to admins.
pub async fn record_failure(store: &Store, job: &Job, error: &str) -> Result<(), StoreError> {
    tracing::error!(job_id = job.id, kind = %job.kind, attempts = job.attempts, error, "job failed for good");
    store
        .record_failure(&FailureRecord {
            job_id: job.id,
            kind: job.kind.clone(),
            owner: job.owner,
            attempts: job.attempts,
            error: error.to_string(),
            failed_at: store.now(),
        })
        .await
}

/// Handlers by job kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: impl Into<String>, handler: impl JobHandler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }

    /// A registry holding the queue's own job kinds: [`SLEEP_KIND`], which
    /// operators (and the shutdown tests) use to check that workers pick
    /// jobs up and stop cleanly.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register(SLEEP_KIND, Sleep);
        r
    }
}

/// How often (clock time) the worker loop ticks its schedules.
const CRON_EVERY_MS: i64 = 1000;

/// Job kind of the built-in [`Sleep`] handler.
pub const SLEEP_KIND: &str = "keel.sleep";

/// Waits `{"ms": N}` milliseconds, or until told to stop. Does nothing else,
/// so it is safe to run any number of times.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

#[async_trait]
impl JobHandler for Sleep {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::once()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let ms = ctx.payload()["ms"].as_u64().unwrap_or(0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
            _ = ctx.cancel.cancelled() => Err(JobError::Cancelled),
        }
    }
}

/// A named queue a worker serves, with its cluster-wide concurrency limit.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub limit: Option<u32>,
}

impl QueueConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            limit: None,
        }
    }
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shown in leases and history.
    pub id: String,
    pub queues: Vec<QueueConfig>,
    /// Jobs this worker runs at once.
    pub concurrency: usize,
    /// Most jobs taken per claim.
    pub batch: u32,
    pub lease: Duration,
    pub heartbeat_every: Duration,
    /// Fallback poll when no wake-up arrives.
    pub poll_every: Duration,
    /// On shutdown, how long running jobs may take before their leases are
    /// given back.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: format!("worker-{}-{:04x}", std::process::id(), fastrand::u16(..)),
            queues: vec![QueueConfig::new(DEFAULT_QUEUE)],
            concurrency: 8,
            batch: 32,
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(10),
            poll_every: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

struct RunningJob {
    token: i64,
    cancel: CancellationToken,
}

/// An attempt that has run, waiting for [`Worker::finish`].
#[derive(Debug)]
pub struct Finished {
    pub job: Job,
    pub completion: Completion,
    /// The handler's detail on the error of this attempt (in memory only:
    /// `on_failure` runs right after the attempt is recorded).
    pub detail: Option<serde_json::Value>,
}

/// Claims and runs jobs.
pub struct Worker {
    store: Store,
    registry: Arc<Registry>,
    config: WorkerConfig,
    running: Mutex<HashMap<i64, RunningJob>>,
    scheduler: Option<Scheduler>,
    /// Wakes this worker's loop when a job of its own finishes, without
    /// waking every other worker of the process.
    slot_freed: Notify,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.config.id)
            .finish()
    }
}

impl Worker {
    pub fn new(store: Store, registry: Registry, config: WorkerConfig) -> Self {
        Self {
            store,
            registry: Arc::new(registry),
            config,
            running: Mutex::new(HashMap::new()),
            scheduler: None,
            slot_freed: Notify::new(),
        }
    }

    /// Also fire cron schedules from this worker's loop.
    pub fn with_scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Claims up to `max` jobs across this worker's queues.
    pub async fn claim(&self, max: usize) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        let now = self.store.now();
        let token = fastrand::i64(1..);
        for q in &self.config.queues {
            let want = max
                .saturating_sub(out.len())
                .min(self.config.batch as usize);
            if want == 0 {
                break;
            }
            let jobs = self
                .store
                .claim(ClaimRequest {
                    queue: &q.name,
                    max: want as u32,
                    queue_limit: q.limit,
                    worker: &self.config.id,
                    lease_token: token,
                    now,
                    lease_until: now.saturating_add(millis(self.config.lease)),
                })
                .await?;
            out.extend(jobs);
        }
        let mut running = self.lock_running();
        for j in &out {
            running.insert(
                j.id,
                RunningJob {
                    token,
                    cancel: CancellationToken::new(),
                },
            );
        }
        Ok(out)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, RunningJob>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the handler of a claimed job and decides the outcome. Nothing
    /// is written yet except lost-attempt history; see [`Worker::finish`].
    pub async fn execute(&self, job: Job) -> Finished {
        let (token, cancel) = {
            let running = self.lock_running();
            match running.get(&job.id) {
                Some(r) => (r.token, r.cancel.clone()),
                None => (job.lease_token.unwrap_or(0), CancellationToken::new()),
            }
        };
        let started_at = self.store.now();
        if job.reclaimed {
            if let Err(e) = self.store.record_lost_attempt(&job, started_at).await {
                tracing::warn!(job_id = job.id, error = %e, "cannot record lost attempt");
            }
        }
        let output_ref = Arc::new(Mutex::new(None));
        let handler = self.registry.get(&job.kind).cloned();
        let mut detail = None;
        let (outcome, error) = match handler {
            None => (
                AttemptOutcome::Dead,
                Some(format!("no handler for job kind {:?}", job.kind)),
            ),
            Some(_) if job.cancel_requested => {
                (AttemptOutcome::Cancelled, Some("cancelled".to_string()))
            }
            Some(h)
                if !h
                    .policy()
                    .allows_attempt(job.attempts, job.created_at, started_at) =>
            {
                let msg = match &job.last_error {
                    Some(e) => format!("out of attempts or past deadline; last error: {e}"),
                    None => "out of attempts or past deadline".to_string(),
                };
                (AttemptOutcome::Dead, Some(msg))
            }
            Some(h) => {
                let ctx = JobContext {
                    job: job.clone(),
                    cancel: cancel.clone(),
                    store: self.store.clone(),
                    output_ref: output_ref.clone(),
                };
                let policy = h.policy();
                // A panicking handler fails its attempt, not the worker.
                let result = tokio::spawn(async move { h.run(ctx).await }).await;
                let now = self.store.now();
                match result {
                    Ok(Ok(())) => (AttemptOutcome::Succeeded, None),
                    Ok(Err(JobError::Cancelled)) => {
                        (AttemptOutcome::Cancelled, Some("cancelled".to_string()))
                    }
                    Ok(Err(_)) if cancel.is_cancelled() => {
                        (AttemptOutcome::Cancelled, Some("cancelled".to_string()))
                    }
                    Ok(Err(JobError::Permanent { message, detail: d })) => {
                        detail = d;
                        (AttemptOutcome::Dead, Some(message))
                    }
                    Ok(Err(JobError::Retryable { message, detail: d })) => {
                        detail = d;
                        match policy.next_run(job.attempts, job.created_at, now) {
                            Some(run_at) => (AttemptOutcome::Retry { run_at }, Some(message)),
                            None => (AttemptOutcome::Dead, Some(message)),
                        }
                    }
                    Err(join) => {
                        let e = format!("handler panicked: {join}");
                        match policy.next_run(job.attempts, job.created_at, now) {
                            Some(run_at) => (AttemptOutcome::Retry { run_at }, Some(e)),
                            None => (AttemptOutcome::Dead, Some(e)),
                        }
                    }
                }
            }
        };
        let output_ref = output_ref.lock().unwrap_or_else(|e| e.into_inner()).take();
        Finished {
            completion: Completion {
                job_id: job.id,
                lease_token: token,
                attempt: job.attempts,
                worker: self.config.id.clone(),
                started_at,
                finished_at: self.store.now(),
                outcome,
                error,
                output_ref,
            },
            job,
            detail,
        }
    }

    /// Records finished attempts in one batch and runs `on_failure` for
    /// jobs that died. Attempts whose lease was lost are dropped: another
    /// worker owns the job now.
    pub async fn finish(&self, done: Vec<Finished>) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let completions: Vec<Completion> = done.iter().map(|f| f.completion.clone()).collect();
        let result = self.store.complete(&completions).await;
        {
            let mut running = self.lock_running();
            for f in &done {
                running.remove(&f.job.id);
            }
        }
        let held = result?;
        // Other workers only care when a finished job may unblock work
        // they cannot claim now: a serialisation key, a slot in a limited
        // queue, or a retry. This worker claims again anyway.
        let unblocks = done.iter().any(|f| {
            f.job.serial_key.is_some()
                || matches!(f.completion.outcome, AttemptOutcome::Retry { .. })
                || self
                    .config
                    .queues
                    .iter()
                    .any(|q| q.limit.is_some() && q.name == f.job.queue)
        });
        if unblocks {
            self.store.poke();
        }
        self.slot_freed.notify_one();
        for (f, held) in done.iter().zip(held) {
            if !held {
                tracing::warn!(
                    job_id = f.job.id,
                    "lease lost before completion; result dropped"
                );
                continue;
            }
            if f.completion.outcome == AttemptOutcome::Dead {
                let error = f.completion.error.as_deref().unwrap_or("unknown error");
                let failure = Failure {
                    error,
                    detail: f.detail.as_ref(),
                };
                let res = match self.registry.get(&f.job.kind) {
                    Some(h) => h.on_failure(&self.store, &f.job, failure).await,
                    None => record_failure(&self.store, &f.job, error).await,
                };
                if let Err(e) = res {
                    tracing::error!(job_id = f.job.id, error = %e, "on_failure hook failed");
                }
            }
        }
        Ok(())
    }

    /// Extends the leases of running jobs and passes on cancellation
    /// requests; a job whose lease was lost is told to stop.
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        let leases: Vec<(i64, i64)> = self
            .lock_running()
            .iter()
            .map(|(id, r)| (*id, r.token))
            .collect();
        if leases.is_empty() {
            return Ok(());
        }
        let until = self.store.now().saturating_add(millis(self.config.lease));
        let status = self.store.heartbeat(&leases, until).await?;
        let running = self.lock_running();
        for s in status {
            if s.lost || s.cancel_requested {
                if let Some(r) = running.get(&s.job_id) {
                    r.cancel.cancel();
                }
            }
        }
        Ok(())
    }

    /// Claims and runs jobs until none is due at the clock's current time.
    /// Returns how many attempts ran. Tests use this with a manual clock.
    pub async fn run_until_idle(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let jobs = self.claim(self.config.concurrency).await?;
            if jobs.is_empty() {
                return Ok(total);
            }
            total += jobs.len();
            let done = futures::future::join_all(jobs.into_iter().map(|j| self.execute(j))).await;
            self.finish(done).await?;
        }
    }

    /// Job ids this worker is running now.
    pub fn running_jobs(&self) -> Vec<i64> {
        self.lock_running().keys().copied().collect()
    }

    /// The worker loop: claim when there is room and work, wake on
    /// notifications (polling as fallback), heartbeat, fire schedules, and
    /// on `shutdown` finish running jobs or give their leases back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), StoreError> {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Finished, OwnedSemaphorePermit)>();

        // Completer: batches results so one transaction records many jobs.
        let completer = {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(first) = done_rx.recv().await {
                    let mut batch = vec![first];
                    while batch.len() < 512 {
                        match done_rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                    let (finished, permits): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    if let Err(e) = this.finish(finished).await {
                        // The leases will expire and the jobs run again.
                        tracing::error!(error = %e, "cannot record job results");
                    }
                    drop(permits);
                }
            })
        };

        // Heartbeats go on through the shutdown grace period, so a job that
        // is finishing keeps its lease; they stop once the jobs are done or
        // given back.
        let stop_heartbeats = CancellationToken::new();
        let heartbeats = {
            let this = self.clone();
            let stop = stop_heartbeats.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(this.config.heartbeat_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {
                            if let Err(e) = this.heartbeat().await {
                                tracing::warn!(error = %e, "heartbeat failed");
                            }
                        }
                    }
                }
            })
        };

        let mut wake = self.store.wake();
        let mut next_cron = self.store.now();
        while !shutdown.is_cancelled() {
            if let Some(s) = &self.scheduler {
                // The next tick is due a second after the time read *before*
                // this tick, never after the time it finished: a tick only
                // sees fires up to the moment it read the clock, so time
                // that passes while it runs must be looked at by the next
                // one. Timing the next tick from a later reading lost the
                // fire for good when the clock moved during a tick and then
                // stood still (a manual clock), and on the real clock
                // delayed every tick by the previous tick's duration.
                let now = self.store.now();
                if now >= next_cron {
                    if let Err(e) = s.tick().await {
                        tracing::warn!(error = %e, "schedule tick failed");
                    }
                    next_cron = now + CRON_EVERY_MS;
                }
            }
            let free = slots.available_permits();
            let mut claimed_full = false;
            if free > 0 {
                match self.claim(free).await {
                    Ok(jobs) => {
                        claimed_full = jobs.len() == free;
                        for job in jobs {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                break;
                            };
                            let this = self.clone();
                            let tx = done_tx.clone();
                            tokio::spawn(async move {
                                let finished = this.execute(job).await;
                                let _ = tx.send((finished, permit));
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claim failed"),
                }
            }
            if claimed_full && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.changed() => {}
                _ = self.slot_freed.notified() => {}
                _ = tokio::time::sleep(self.config.poll_every) => {}
            }
        }

        // Shutdown: let running jobs finish within the grace period...
        let all = self.config.concurrency as u32;
        let drained =
            tokio::time::timeout(self.config.shutdown_grace, slots.acquire_many(all)).await;
        if drained.is_err() {
            // ...then give the rest back so another worker takes them now.
            let leftovers: Vec<(i64, i64, CancellationToken)> = self
                .lock_running()
                .iter()
                .map(|(id, r)| (*id, r.token, r.cancel.clone()))
                .collect();
            stop_heartbeats.cancel();
            let _ = heartbeats.await;
            for (id, token, cancel) in leftovers {
                match self.store.release(id, token).await {
                    Ok(true) => tracing::info!(job_id = id, "lease given back at shutdown"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(job_id = id, error = %e, "cannot release lease"),
                }
                cancel.cancel();
            }
        }
        stop_heartbeats.cancel();
        drop(done_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), completer).await;
        Ok(())
    }
}
