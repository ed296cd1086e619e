//! What a job is, as the queue and its store both see it: the spec a
//! caller enqueues ([`JobSpec`]), the stored row ([`Job`], [`JobState`]),
//! one attempt's outcome and history ([`AttemptOutcome`], [`Completion`],
//! [`Attempt`]), the dead-job record, and the filters and answers of the
//! store's job queries. Plain data over the clock: `store` persists these
//! and `queue` runs them, so the store never imports the queue's logic.
//! `queue` re-exports every type, which is where callers name them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{millis, UnixMillis};

/// The queue used when a spec names none.
pub const DEFAULT_QUEUE: &str = "default";

/// When a job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    #[default]
    Now,
    At(UnixMillis),
    After(Duration),
}

/// What to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Selects the handler (and so the retry policy).
    pub kind: String,
    pub payload: serde_json::Value,
    pub queue: String,
    /// Higher runs first within a queue.
    pub priority: i32,
    pub run_at: RunAt,
    /// Coalescing key: while a job with this key is queued, enqueueing
    /// another returns the queued one. While one is running, one more is
    /// queued to run after it.
    pub unique_key: Option<String>,
    /// Serialisation key: at most one job with this key runs at a time.
    /// Defaults to the coalescing key.
    pub serial_key: Option<String>,
    /// The user on whose behalf the job runs; `None` for system jobs.
    pub owner: Option<i64>,
}

impl JobSpec {
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            queue: DEFAULT_QUEUE.to_string(),
            priority: 0,
            run_at: RunAt::Now,
            unique_key: None,
            serial_key: None,
            owner: None,
        }
    }
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    pub fn run_at(mut self, at: RunAt) -> Self {
        self.run_at = at;
        self
    }
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    pub fn serial_key(mut self, key: impl Into<String>) -> Self {
        self.serial_key = Some(key.into());
        self
    }
    pub fn owner(mut self, user_id: i64) -> Self {
        self.owner = Some(user_id);
        self
    }

    /// The serialisation key actually stored.
    pub fn effective_serial_key(&self) -> Option<&str> {
        self.serial_key.as_deref().or(self.unique_key.as_deref())
    }

    pub(crate) fn first_run(&self, now: UnixMillis) -> UnixMillis {
        match self.run_at {
            RunAt::Now => now,
            RunAt::At(t) => t,
            RunAt::After(d) => now.saturating_add(millis(d)),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Gave up: permanent error, attempts exhausted, or deadline passed.
    Dead,
    Cancelled,
    /// A retry was folded into a queued job with the same coalescing key.
    Superseded,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            "superseded" => JobState::Superseded,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job row.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub queue: String,
    pub payload: serde_json::Value,
    pub priority: i32,
    pub state: JobState,
    pub run_at: UnixMillis,
    /// Claims so far, including the current one.
    pub attempts: u32,
    pub unique_key: Option<String>,
    pub serial_key: Option<String>,
    pub owner: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_token: Option<i64>,
    pub lease_until: Option<UnixMillis>,
    pub cancel_requested: bool,
    /// This claim took over an expired lease.
    pub reclaimed: bool,
    pub created_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub last_error: Option<String>,
}

/// Result of `queue::enqueue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueOutcome {
    pub job_id: i64,
    /// An already-queued job with the same coalescing key was returned.
    pub coalesced: bool,
}

/// Who asks: cancellation checks ownership against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: i64,
    pub is_admin: bool,
}

/// Result of `queue::cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and will not run.
    Cancelled,
    /// It is running; its handler has been asked to stop.
    Signalled,
    /// It had already finished.
    AlreadyFinished,
}

/// How one attempt ended, as the worker reports it to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded,
    Retry { run_at: UnixMillis },
    Dead,
    Cancelled,
}

impl AttemptOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retry { .. } => "retry",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

/// A finished attempt waiting to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub job_id: i64,
    pub lease_token: i64,
    pub attempt: u32,
    pub worker: String,
    pub started_at: UnixMillis,
    pub finished_at: UnixMillis,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    pub output_ref: Option<String>,
}

/// One row of a job's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub job_id: i64,
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at: Option<UnixMillis>,
    pub finished_at: UnixMillis,
    /// `succeeded`, `retry`, `dead`, `cancelled`, `superseded` or `lease_expired`.
    pub outcome: String,
    pub error: Option<String>,
    pub output_ref: Option<String>,
}

/// A dead job, recorded for admins by the default `on_failure` hook.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRecord {
    pub job_id: i64,
    pub kind: String,
    pub owner: Option<i64>,
    pub attempts: u32,
    pub error: String,
    pub failed_at: UnixMillis,
}

/// Selects jobs for history queries. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub unique_key: Option<String>,
    pub serial_key: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<u32>,
}
