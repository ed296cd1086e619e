//! Story tests for the job queue: every scenario is a function taking a
//! [`Store`], run once on SQLite and once on a real PostgreSQL server. Time
//! is a manual clock; nothing sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keel_panel::clock::ManualClock;
use keel_panel::queue::cron::{MissedFires, Schedule, Scheduler};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::{
    self, Actor, CancelOutcome, JobContext, JobError, JobFilter, JobHandler, JobSpec, JobState,
    RetryPolicy, RunAt,
};
use keel_panel::store::{Store, StoreError};
use serde_json::json;

/// On a minute boundary, so cron fire times are easy to reason about.
const T0: i64 = 1_699_999_980_000;
const LEASE: Duration = Duration::from_secs(30);

/// A handler that counts runs and fails its first `fail_first` attempts.
struct Scripted {
    runs: Arc<AtomicUsize>,
    fail_first: usize,
    permanent: bool,
    policy: RetryPolicy,
    wait_for_cancel: bool,
}

#[async_trait]
impl JobHandler for Scripted {
    fn policy(&self) -> RetryPolicy {
        self.policy
    }
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        ctx.set_output_ref(format!("log/{}/{}", ctx.job.id, ctx.job.attempts));
        if self.wait_for_cancel {
            ctx.cancel.cancelled().await;
            return Err(JobError::Cancelled);
        }
        if n < self.fail_first {
            return Err(if self.permanent {
                JobError::permanent(format!("boom {n}"))
            } else {
                JobError::retryable(format!("flaky {n}"))
            });
        }
        Ok(())
    }
}

fn scripted(fail_first: usize, policy: RetryPolicy) -> (Scripted, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    (
        Scripted {
            runs: runs.clone(),
            fail_first,
            permanent: false,
            policy,
            wait_for_cancel: false,
        },
        runs,
    )
}

fn setup(store: Store) -> (Store, Arc<ManualClock>) {
    let clock = ManualClock::new(T0);
    (store.with_clock(clock.clone()), clock)
}

fn worker(
    store: &Store,
    registry: Registry,
    queues: Vec<QueueConfig>,
    concurrency: usize,
) -> Worker {
    Worker::new(
        store.clone(),
        registry,
        WorkerConfig {
            queues,
            concurrency,
            lease: LEASE,
            ..WorkerConfig::default()
        },
    )
}

fn default_worker(store: &Store, registry: Registry) -> Worker {
    worker(store, registry, vec![QueueConfig::new("default")], 4)
}

async fn state_of(store: &Store, id: i64) -> JobState {
    store.job(id).await.unwrap().expect("job exists").state
}

// ---- scenarios ----

async fn enqueue_is_part_of_the_callers_transaction(store: Store) {
    let (store, _clock) = setup(store);
    let mut tx = store.begin().await.unwrap();
    queue::enqueue(&mut tx, JobSpec::new("noop", json!({"n": 1})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.jobs(&JobFilter::default()).await.unwrap().is_empty());

    let mut wake = store.wake();
    let mut tx = store.begin().await.unwrap();
    let out = queue::enqueue(&mut tx, JobSpec::new("noop", json!({"n": 2})))
        .await
        .unwrap();
    assert!(!wake.has_changed().unwrap(), "no wake-up before commit");
    tx.commit().await.unwrap();
    let job = store.job(out.job_id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.payload, json!({"n": 2}));
    // PostgreSQL wakes through NOTIFY, which arrives asynchronously.
    tokio::time::timeout(Duration::from_secs(10), wake.changed())
        .await
        .expect("commit wakes workers")
        .unwrap();
}

/// The jobs of `specs`, enqueued one by one in one transaction: what
/// `enqueue_many` must match.
async fn one_by_one(store: &Store, specs: &[JobSpec]) -> Vec<(i64, bool)> {
    let mut tx = store.begin().await.unwrap();
    let mut out = Vec::new();
    for spec in specs {
        let o = queue::enqueue(&mut tx, spec.clone()).await.unwrap();
        out.push((o.job_id, o.coalesced));
    }
    tx.commit().await.unwrap();
    out
}

async fn enqueue_many_matches_enqueue_one_by_one(store: Store) {
    let (store, _clock) = setup(store);
    let (h, _runs) = scripted(0, RetryPolicy::default());
    let mut reg = Registry::new();
    reg.register("converge", h);
    let w = default_worker(&store, reg);
    // Per round: a key already queued, a key already running, and keys
    // that only this batch uses (twice, so the second coalesces into the
    // first), between jobs without keys.
    let batch = |round: &str| {
        let k = |n: &str| format!("{round}:{n}");
        vec![
            JobSpec::new("converge", json!({"n": 0})),
            JobSpec::new("converge", json!({"n": 1})).unique_key(k("queued")),
            JobSpec::new("converge", json!({"n": 2})).unique_key(k("new")),
            JobSpec::new("converge", json!({"n": 3}))
                .unique_key(k("running"))
                .priority(5),
            JobSpec::new("converge", json!({"n": 4})).unique_key(k("new")),
            JobSpec::new("converge", json!({"n": 5}))
                .queue("slow")
                .serial_key(k("serial"))
                .owner(7)
                .run_at(RunAt::After(Duration::from_secs(60))),
            JobSpec::new("converge", json!({"n": 6})).unique_key(k("running")),
            JobSpec::new("converge", json!({"n": 7, "deep": {"list": [1, 2.5, "x"]}})),
        ]
    };
    let mut shapes = Vec::new();
    for (round, many) in [("one", false), ("many", true)] {
        let pre_running = queue::enqueue_now(
            &store,
            JobSpec::new("converge", json!({})).unique_key(format!("{round}:running")),
        )
        .await
        .unwrap();
        let claimed = w.claim(4).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, pre_running.job_id);
        let pre_queued = queue::enqueue_now(
            &store,
            JobSpec::new("converge", json!({})).unique_key(format!("{round}:queued")),
        )
        .await
        .unwrap();
        let specs = batch(round);
        let out = if many {
            let mut wake = store.wake();
            // PostgreSQL's NOTIFYs for the jobs enqueued above arrive on
            // the listener's own connection, so let them land first.
            loop {
                wake.borrow_and_update();
                tokio::time::sleep(Duration::from_millis(300)).await;
                if !wake.has_changed().unwrap() {
                    break;
                }
            }
            let mut tx = store.begin().await.unwrap();
            let out = queue::enqueue_many(&mut tx, &specs).await.unwrap();
            assert!(!wake.has_changed().unwrap(), "no wake-up before commit");
            tx.commit().await.unwrap();
            assert!(wake.has_changed().unwrap(), "commit wakes workers");
            out.into_iter().map(|o| (o.job_id, o.coalesced)).collect()
        } else {
            one_by_one(&store, &specs).await
        };
        assert_eq!(out.len(), specs.len());
        // What each spec got, named by what it points at.
        let shape: Vec<(String, bool)> = out
            .iter()
            .enumerate()
            .map(|(i, &(id, coalesced))| {
                let who = if id == pre_queued.job_id {
                    "pre-queued".to_string()
                } else if id == pre_running.job_id {
                    "pre-running".to_string()
                } else {
                    let first = out.iter().position(|&(other, _)| other == id).unwrap();
                    format!("spec {first}")
                };
                assert!(
                    who != format!("spec {i}") || !coalesced,
                    "a new job is not coalesced"
                );
                (who, coalesced)
            })
            .collect();
        // Every new job is stored as its spec asked.
        for (i, &(id, coalesced)) in out.iter().enumerate() {
            if coalesced {
                continue;
            }
            let job = store.job(id).await.unwrap().unwrap();
            let spec = &specs[i];
            assert_eq!(job.state, JobState::Queued);
            assert_eq!(job.payload, spec.payload);
            assert_eq!(job.queue, spec.queue);
            assert_eq!(job.priority, spec.priority);
            assert_eq!(job.unique_key, spec.unique_key);
            assert_eq!(job.serial_key.as_deref(), spec.effective_serial_key());
            assert_eq!(job.owner, spec.owner);
            assert_eq!(job.created_at, T0);
            let due = match spec.run_at {
                RunAt::After(d) => T0 + d.as_millis() as i64,
                _ => T0,
            };
            assert_eq!(job.run_at, due);
        }
        shapes.push(shape);
        // Leave nothing running or queued for the next round.
        for j in claimed {
            let done = w.execute(j).await;
            w.finish(vec![done]).await.unwrap();
        }
        for job in store.jobs(&JobFilter::default()).await.unwrap() {
            if job.state == JobState::Queued {
                queue::cancel(
                    &store,
                    job.id,
                    Actor {
                        user_id: 0,
                        is_admin: true,
                    },
                )
                .await
                .unwrap();
            }
        }
    }
    assert_eq!(shapes[0], shapes[1], "enqueue_many = enqueue one by one");
    let expect: Vec<(String, bool)> = [
        ("spec 0", false),
        ("pre-queued", true),
        ("spec 2", false),
        ("spec 3", false),
        ("spec 2", true),
        ("spec 5", false),
        ("spec 3", true),
        ("spec 7", false),
    ]
    .into_iter()
    .map(|(w, c)| (w.to_string(), c))
    .collect();
    assert_eq!(shapes[1], expect);

    // A rolled-back batch leaves nothing; an empty one does nothing.
    let before = store.jobs(&JobFilter::default()).await.unwrap().len();
    let mut tx = store.begin().await.unwrap();
    let out = queue::enqueue_many(&mut tx, &batch("gone")).await.unwrap();
    assert_eq!(out.len(), 8);
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(queue::enqueue_many(&mut tx, &[]).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    assert_eq!(
        store.jobs(&JobFilter::default()).await.unwrap().len(),
        before
    );

    // Single and batch enqueues mix in one transaction, coalescing across
    // both.
    let mut tx = store.begin().await.unwrap();
    let single = queue::enqueue(
        &mut tx,
        JobSpec::new("converge", json!({})).unique_key("mixed"),
    )
    .await
    .unwrap();
    let out = queue::enqueue_many(
        &mut tx,
        &[
            JobSpec::new("converge", json!({})).unique_key("mixed"),
            JobSpec::new("converge", json!({})),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(out[0].job_id, single.job_id);
    assert!(out[0].coalesced);
    assert!(!out[1].coalesced);
    assert!(out[1].job_id > single.job_id);
}

async fn retryable_errors_follow_the_policy_then_die(store: Store) {
    let (store, clock) = setup(store);
    let policy = RetryPolicy::fixed(Duration::from_secs(300)).max_attempts(3);
    let (h, runs) = scripted(usize::MAX, policy);
    let mut reg = Registry::new();
    reg.register("flaky", h);
    let w = default_worker(&store, reg);
    let id = queue::enqueue_now(&store, JobSpec::new("flaky", json!({})).owner(7))
        .await
        .unwrap()
        .job_id;

    assert_eq!(w.run_until_idle().await.unwrap(), 1);
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.run_at, T0 + 300_000);
    clock.advance(Duration::from_secs(299));
    assert_eq!(w.run_until_idle().await.unwrap(), 0, "not before the delay");
    clock.advance(Duration::from_secs(1));
    assert_eq!(w.run_until_idle().await.unwrap(), 1);
    clock.advance(Duration::from_secs(300));
    assert_eq!(w.run_until_idle().await.unwrap(), 1);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(w.run_until_idle().await.unwrap(), 0, "dead jobs do not run");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(state_of(&store, id).await, JobState::Dead);

    let history = store.attempts(id).await.unwrap();
    let outcomes: Vec<_> = history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retry", "retry", "dead"]);
    assert_eq!(history[2].error.as_deref(), Some("flaky 2"));
    assert_eq!(
        history[0].output_ref.as_deref(),
        Some(&*format!("log/{id}/1"))
    );
    let failures = store.failures().await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].job_id, id);
    assert_eq!(failures[0].owner, Some(7));
    assert_eq!(failures[0].attempts, 3);
}

async fn a_deadline_ends_retries(store: Store) {
    let (store, clock) = setup(store);
    let policy = RetryPolicy::fixed(Duration::from_secs(60)).max_age(Duration::from_secs(150));
    let (h, runs) = scripted(usize::MAX, policy);
    let mut reg = Registry::new();
    reg.register("flaky", h);
    let w = default_worker(&store, reg);
    let id = queue::enqueue_now(&store, JobSpec::new("flaky", json!({})))
        .await
        .unwrap()
        .job_id;
    for _ in 0..5 {
        w.run_until_idle().await.unwrap();
        clock.advance(Duration::from_secs(60));
    }
    // Attempts at 0, 60 and 120 s; a fourth at 180 s would pass the deadline.
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(state_of(&store, id).await, JobState::Dead);
}

async fn permanent_errors_die_at_once(store: Store) {
    let (store, _clock) = setup(store);
    let (mut h, runs) = scripted(usize::MAX, RetryPolicy::fixed(Duration::from_secs(1)));
    h.permanent = true;
    let mut reg = Registry::new();
    reg.register("bad", h);
    let w = default_worker(&store, reg);
    let id = queue::enqueue_now(&store, JobSpec::new("bad", json!({})))
        .await
        .unwrap()
        .job_id;
    w.run_until_idle().await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(state_of(&store, id).await, JobState::Dead);
    assert_eq!(store.failures().await.unwrap()[0].error, "boom 0");
}

async fn an_expired_lease_is_reclaimed_and_the_old_result_dropped(store: Store) {
    let (store, clock) = setup(store);
    let (h1, _) = scripted(0, RetryPolicy::default());
    let (h2, runs2) = scripted(0, RetryPolicy::default());
    let mut r1 = Registry::new();
    r1.register("converge", h1);
    let mut r2 = Registry::new();
    r2.register("converge", h2);
    let a = default_worker(&store, r1);
    let b = default_worker(&store, r2);
    let id = queue::enqueue_now(
        &store,
        JobSpec::new("converge", json!({})).unique_key("svc:1"),
    )
    .await
    .unwrap()
    .job_id;

    let claimed = a.claim(4).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        b.claim(4).await.unwrap().is_empty(),
        "leased job is not claimable"
    );
    // A heartbeat keeps the lease alive past its first expiry.
    clock.advance(LEASE - Duration::from_secs(1));
    a.heartbeat().await.unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(
        b.claim(4).await.unwrap().is_empty(),
        "heartbeat extended the lease"
    );
    // Worker A "dies": no heartbeats. After the lease, B takes over.
    clock.advance(LEASE);
    let taken = b.claim(4).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(taken[0].reclaimed);
    assert_eq!(taken[0].attempts, 2);

    let late = a.execute(claimed.into_iter().next().unwrap()).await;
    a.finish(vec![late]).await.unwrap();
    assert_eq!(
        state_of(&store, id).await,
        JobState::Running,
        "stale worker's result dropped"
    );

    let done = b.execute(taken.into_iter().next().unwrap()).await;
    b.finish(vec![done]).await.unwrap();
    assert_eq!(state_of(&store, id).await, JobState::Succeeded);
    assert_eq!(runs2.load(Ordering::SeqCst), 1);
    let outcomes: Vec<_> = store
        .attempts(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["lease_expired", "succeeded"]);
}

async fn coalescing_gives_one_queued_and_one_follow_up_run(store: Store) {
    let (store, _clock) = setup(store);
    let (h, runs) = scripted(0, RetryPolicy::default());
    let mut reg = Registry::new();
    reg.register("converge", h);
    let w = default_worker(&store, reg);
    let spec = || JobSpec::new("converge", json!({"service": 42})).unique_key("converge:42");

    let first = queue::enqueue_now(&store, spec()).await.unwrap();
    let again = queue::enqueue_now(&store, spec()).await.unwrap();
    assert!(!first.coalesced);
    assert!(again.coalesced);
    assert_eq!(first.job_id, again.job_id);

    let running = w.claim(4).await.unwrap();
    assert_eq!(running.len(), 1);
    // Enqueued while running: exactly one more run, however often asked.
    let follow = queue::enqueue_now(&store, spec()).await.unwrap();
    let follow2 = queue::enqueue_now(&store, spec()).await.unwrap();
    assert!(!follow.coalesced);
    assert_ne!(follow.job_id, first.job_id);
    assert_eq!(follow2.job_id, follow.job_id);
    assert!(
        w.claim(4).await.unwrap().is_empty(),
        "follow-up waits for the running one"
    );

    let done = w.execute(running.into_iter().next().unwrap()).await;
    w.finish(vec![done]).await.unwrap();
    assert_eq!(w.run_until_idle().await.unwrap(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let all = store
        .jobs(&JobFilter {
            unique_key: Some("converge:42".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|j| j.state == JobState::Succeeded));
}

async fn a_serialisation_key_allows_one_running_job(store: Store) {
    let (store, _clock) = setup(store);
    let mut reg = Registry::new();
    reg.register("op", scripted(0, RetryPolicy::default()).0);
    let w = default_worker(&store, reg);
    for op in ["resize", "snapshot", "reboot"] {
        queue::enqueue_now(
            &store,
            JobSpec::new("op", json!({"op": op})).serial_key("service:9"),
        )
        .await
        .unwrap();
    }
    queue::enqueue_now(
        &store,
        JobSpec::new("op", json!({})).serial_key("service:10"),
    )
    .await
    .unwrap();
    let first = w.claim(10).await.unwrap();
    assert_eq!(first.len(), 2, "one per key: {first:?}");
    assert!(w.claim(10).await.unwrap().is_empty());
    let s9 = first
        .iter()
        .find(|j| j.serial_key.as_deref() == Some("service:9"))
        .unwrap()
        .clone();
    assert_eq!(s9.payload, json!({"op": "resize"}), "FIFO within a key");
    let done = futures::future::join_all(first.into_iter().map(|j| w.execute(j))).await;
    w.finish(done).await.unwrap();
    let next = w.claim(10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload, json!({"op": "snapshot"}));
}

async fn delayed_jobs_wait_longer_than_a_lease(store: Store) {
    let (store, clock) = setup(store);
    let mut reg = Registry::new();
    reg.register("later", scripted(0, RetryPolicy::default()).0);
    let w = default_worker(&store, reg);
    let day = Duration::from_secs(86_400);
    let a = queue::enqueue_now(
        &store,
        JobSpec::new("later", json!({})).run_at(RunAt::After(day)),
    )
    .await
    .unwrap()
    .job_id;
    let b = queue::enqueue_now(
        &store,
        JobSpec::new("later", json!({})).run_at(RunAt::At(T0 + 3_600_000)),
    )
    .await
    .unwrap()
    .job_id;
    clock.advance(LEASE * 10);
    assert_eq!(w.run_until_idle().await.unwrap(), 0);
    assert_eq!(
        store.next_run_at("default").await.unwrap(),
        Some(T0 + 3_600_000)
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(w.run_until_idle().await.unwrap(), 1);
    assert_eq!(state_of(&store, b).await, JobState::Succeeded);
    assert_eq!(state_of(&store, a).await, JobState::Queued);
    clock.set(T0 + 86_400_000);
    assert_eq!(w.run_until_idle().await.unwrap(), 1);
    assert_eq!(state_of(&store, a).await, JobState::Succeeded);
}

async fn cancellation_respects_owners_and_reaches_running_handlers(store: Store) {
    let (store, _clock) = setup(store);
    let (mut h, runs) = scripted(0, RetryPolicy::default());
    h.wait_for_cancel = true;
    let mut reg = Registry::new();
    reg.register("long", h);
    let w = Arc::new(default_worker(&store, reg));
    let alice = Actor {
        user_id: 1,
        is_admin: false,
    };
    let bob = Actor {
        user_id: 2,
        is_admin: false,
    };
    let admin = Actor {
        user_id: 99,
        is_admin: true,
    };

    let q1 = queue::enqueue_now(&store, JobSpec::new("long", json!({})).owner(1))
        .await
        .unwrap()
        .job_id;
    let err = queue::cancel(&store, q1, bob).await.unwrap_err();
    assert!(matches!(err, StoreError::Forbidden { .. }), "{err}");
    assert_eq!(
        queue::cancel(&store, q1, alice).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(state_of(&store, q1).await, JobState::Cancelled);
    assert_eq!(
        queue::cancel(&store, q1, alice).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );

    let q2 = queue::enqueue_now(&store, JobSpec::new("long", json!({})).owner(1))
        .await
        .unwrap()
        .job_id;
    let job = w.claim(1).await.unwrap().pop().unwrap();
    assert_eq!(job.id, q2);
    let runner = {
        let w = w.clone();
        tokio::spawn(async move { w.execute(job).await })
    };
    assert_eq!(
        queue::cancel(&store, q2, admin).await.unwrap(),
        CancelOutcome::Signalled
    );
    w.heartbeat().await.unwrap();
    let finished = tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("handler saw the cancellation")
        .unwrap();
    w.finish(vec![finished]).await.unwrap();
    assert_eq!(state_of(&store, q2).await, JobState::Cancelled);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        store.failures().await.unwrap().is_empty(),
        "cancelled is not failed"
    );
}

async fn priorities_and_queue_limits(store: Store) {
    let (store, _clock) = setup(store);
    let mut reg = Registry::new();
    reg.register("op", scripted(0, RetryPolicy::default()).0);
    let w = worker(&store, reg.clone(), vec![QueueConfig::new("default")], 1);
    for p in [1, 5, 3] {
        queue::enqueue_now(&store, JobSpec::new("op", json!({"p": p})).priority(p))
            .await
            .unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let j = w.claim(1).await.unwrap().pop().unwrap();
        order.push(j.priority);
        let done = w.execute(j).await;
        w.finish(vec![done]).await.unwrap();
    }
    assert_eq!(order, [5, 3, 1]);

    for _ in 0..5 {
        queue::enqueue_now(&store, JobSpec::new("op", json!({})).queue("hypervisor"))
            .await
            .unwrap();
    }
    let hv = || vec![QueueConfig::new("hypervisor").limit(2)];
    let w1 = worker(&store, reg.clone(), hv(), 10);
    let w2 = worker(&store, reg.clone(), hv(), 10);
    assert_eq!(w1.claim(10).await.unwrap().len(), 2);
    assert!(
        w2.claim(10).await.unwrap().is_empty(),
        "limit is cluster-wide"
    );
    assert!(
        w.claim(10).await.unwrap().is_empty(),
        "other queues are separate"
    );
}

async fn history_is_queryable_and_pruned_by_age(store: Store) {
    let (store, clock) = setup(store);
    let mut reg = Registry::new();
    reg.register("op", scripted(1, RetryPolicy::fixed(Duration::ZERO)).0);
    let w = default_worker(&store, reg);
    let old = queue::enqueue_now(&store, JobSpec::new("op", json!({})).unique_key("k1"))
        .await
        .unwrap()
        .job_id;
    w.run_until_idle().await.unwrap();
    assert_eq!(store.attempts(old).await.unwrap().len(), 2);
    clock.advance(Duration::from_secs(86_400 * 30));
    let fresh = queue::enqueue_now(&store, JobSpec::new("op", json!({})))
        .await
        .unwrap()
        .job_id;
    let by_state = store
        .jobs(&JobFilter {
            state: Some(JobState::Succeeded),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_state.iter().map(|j| j.id).collect::<Vec<_>>(), [old]);
    let by_key = store
        .jobs(&JobFilter {
            unique_key: Some("k1".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].attempts, 2);

    let pruned = store
        .prune(clock_now(&store) - 86_400_000 * 7)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert!(store.job(old).await.unwrap().is_none());
    assert!(store.attempts(old).await.unwrap().is_empty());
    assert_eq!(
        state_of(&store, fresh).await,
        JobState::Queued,
        "unfinished jobs are kept"
    );
}

fn clock_now(store: &Store) -> i64 {
    store.now()
}

async fn three_schedulers_fire_each_time_once(store: Store) {
    let (store, clock) = setup(store);
    let sched = || {
        Scheduler::new(
            store.clone(),
            vec![Schedule::interval(
                "backups",
                Duration::from_secs(60),
                JobSpec::new("check_backups", json!({})),
            )],
        )
    };
    let nodes = [sched(), sched(), sched()];
    // The first tick registers the schedule; interval fires count from it.
    for n in &nodes {
        assert!(n.tick().await.unwrap().is_empty());
    }
    let mut fired = Vec::new();
    for _ in 0..10 {
        clock.advance(Duration::from_secs(60));
        let ticks = futures::future::join_all(nodes.iter().map(|n| n.tick())).await;
        for t in ticks {
            fired.extend(t.unwrap());
        }
    }
    let mut times: Vec<_> = fired.iter().map(|f| f.fire_at).collect();
    times.sort();
    let expected: Vec<_> = (1..=10).map(|k| T0 + k * 60_000).collect();
    assert_eq!(times, expected, "each fire time exactly once");
    let jobs = store
        .jobs(&JobFilter {
            kind: Some("check_backups".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 10);
}

async fn missed_fires_skip_or_run_once(store: Store) {
    let (store, clock) = setup(store);
    let spec = |k: &str| JobSpec::new(k, json!({}));
    let s = Scheduler::new(
        store.clone(),
        vec![
            Schedule::cron("skipper", "* * * * *", spec("skip_kind"))
                .unwrap()
                .missed(MissedFires::Skip)
                .grace(Duration::from_secs(10)),
            Schedule::cron("catchup", "* * * * *", spec("once_kind"))
                .unwrap()
                .missed(MissedFires::RunOnce),
        ],
    );
    assert!(s.tick().await.unwrap().is_empty());
    // The panel was down for an hour; it comes back 30 s after a fire time.
    clock.advance(Duration::from_secs(3630));
    let fired = s.tick().await.unwrap();
    assert_eq!(fired.len(), 2);
    let skip = fired.iter().find(|f| f.schedule == "skipper").unwrap();
    let once = fired.iter().find(|f| f.schedule == "catchup").unwrap();
    assert!(skip.job_id.is_none(), "late fire skipped");
    assert!(once.job_id.is_some(), "missed fires run once");
    assert!(
        s.tick().await.unwrap().is_empty(),
        "nothing more for the outage"
    );
    // Back on time: both run.
    clock.advance(Duration::from_secs(30));
    let fired = s.tick().await.unwrap();
    assert!(
        fired.iter().all(|f| f.job_id.is_some()) && fired.len() == 2,
        "{fired:?}"
    );
    let count = |k: &'static str| {
        let store = store.clone();
        async move {
            store
                .jobs(&JobFilter {
                    kind: Some(k.into()),
                    ..JobFilter::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("skip_kind").await, 1);
    assert_eq!(count("once_kind").await, 2);
}

async fn graceful_release_hands_the_job_over(store: Store) {
    let (store, _clock) = setup(store);
    let mut reg = Registry::new();
    reg.register("op", scripted(0, RetryPolicy::default()).0);
    let a = default_worker(&store, reg.clone());
    let b = default_worker(&store, reg);
    let id = queue::enqueue_now(&store, JobSpec::new("op", json!({})))
        .await
        .unwrap()
        .job_id;
    let j = a.claim(1).await.unwrap().pop().unwrap();
    assert!(store.release(j.id, j.lease_token.unwrap()).await.unwrap());
    let again = b
        .claim(1)
        .await
        .unwrap()
        .pop()
        .expect("released job is claimable at once");
    assert_eq!(again.id, id);
    assert_eq!(again.attempts, 1, "a released attempt is not counted");
}

/// Blocks until the test opens its gate, or until cancelled; tells the test
/// when it started and whether it saw the cancellation.
struct Gate {
    started: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::Notify>,
    saw_cancel: Arc<AtomicUsize>,
}

#[async_trait]
impl JobHandler for Gate {
    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        self.started.notify_one();
        tokio::select! {
            _ = self.open.notified() => Ok(()),
            _ = ctx.cancel.cancelled() => {
                self.saw_cancel.fetch_add(1, Ordering::SeqCst);
                Err(JobError::Cancelled)
            }
        }
    }
}

fn gate() -> (
    Gate,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
    Arc<AtomicUsize>,
) {
    let g = Gate {
        started: Arc::new(tokio::sync::Notify::new()),
        open: Arc::new(tokio::sync::Notify::new()),
        saw_cancel: Arc::new(AtomicUsize::new(0)),
    };
    let (s, o, c) = (g.started.clone(), g.open.clone(), g.saw_cancel.clone());
    (g, s, o, c)
}

fn shutdown_worker(store: &Store, registry: Registry, grace: Duration) -> Arc<Worker> {
    Arc::new(Worker::new(
        store.clone(),
        registry,
        WorkerConfig {
            queues: vec![QueueConfig::new("default")],
            concurrency: 1,
            lease: LEASE,
            shutdown_grace: grace,
            ..WorkerConfig::default()
        },
    ))
}

async fn shutdown_lets_running_jobs_finish_and_claims_nothing_more(store: Store) {
    let (store, _clock) = setup(store);
    let (g, started, open, saw_cancel) = gate();
    let mut reg = Registry::new();
    reg.register("gate", g);
    let first = queue::enqueue_now(&store, JobSpec::new("gate", json!({"n": 1})))
        .await
        .unwrap()
        .job_id;
    let second = queue::enqueue_now(&store, JobSpec::new("gate", json!({"n": 2})))
        .await
        .unwrap()
        .job_id;
    let w = shutdown_worker(&store, reg, Duration::from_secs(60));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(w.clone().run(shutdown.clone()));
    started.notified().await;
    shutdown.cancel();
    // The job is still running when the shutdown starts; it may finish.
    assert_eq!(state_of(&store, first).await, JobState::Running);
    open.notify_one();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run returns once the job is done")
        .unwrap()
        .unwrap();
    assert_eq!(state_of(&store, first).await, JobState::Succeeded);
    assert_eq!(saw_cancel.load(Ordering::SeqCst), 0);
    let history = store.attempts(first).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, "succeeded");
    assert_eq!(
        state_of(&store, second).await,
        JobState::Queued,
        "nothing is claimed after the shutdown signal"
    );
    assert!(w.running_jobs().is_empty());
}

async fn shutdown_gives_back_jobs_that_outlast_the_grace(store: Store) {
    let (store, _clock) = setup(store);
    let (g, started, _open, saw_cancel) = gate();
    let mut reg = Registry::new();
    reg.register("gate", g);
    let id = queue::enqueue_now(&store, JobSpec::new("gate", json!({})))
        .await
        .unwrap()
        .job_id;
    let w = shutdown_worker(&store, reg.clone(), Duration::from_millis(50));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(w.run(shutdown.clone()));
    started.notified().await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("run returns after the grace period")
        .unwrap()
        .unwrap();
    assert_eq!(
        saw_cancel.load(Ordering::SeqCst),
        1,
        "the handler was told to stop"
    );
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.lease_token, None, "lease given back");
    assert_eq!(job.attempts, 0, "the given-back attempt is not counted");
    assert!(
        store.attempts(id).await.unwrap().is_empty(),
        "the stopped attempt's result was dropped"
    );
    // Same instant on the clock: no lease has to expire first.
    let next = default_worker(&store, reg);
    let again = next.claim(1).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id);
    assert!(!again[0].reclaimed, "a given-back job is not a lost one");
}

macro_rules! stories {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = keel_panel::testsupport::sqlite_store().await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = keel_panel::testsupport::postgres_store().await.unwrap();
                    super::$name(store).await;
                }
            )*
        }
    };
}

stories!(
    enqueue_is_part_of_the_callers_transaction,
    enqueue_many_matches_enqueue_one_by_one,
    retryable_errors_follow_the_policy_then_die,
    a_deadline_ends_retries,
    permanent_errors_die_at_once,
    an_expired_lease_is_reclaimed_and_the_old_result_dropped,
    coalescing_gives_one_queued_and_one_follow_up_run,
    a_serialisation_key_allows_one_running_job,
    delayed_jobs_wait_longer_than_a_lease,
    cancellation_respects_owners_and_reaches_running_handlers,
    priorities_and_queue_limits,
    history_is_queryable_and_pruned_by_age,
    three_schedulers_fire_each_time_once,
    missed_fires_skip_or_run_once,
    graceful_release_hands_the_job_over,
    shutdown_lets_running_jobs_finish_and_claims_nothing_more,
    shutdown_gives_back_jobs_that_outlast_the_grace,
);
