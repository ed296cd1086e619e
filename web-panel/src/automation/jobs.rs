//! The job kinds of `automation/`, one serde payload struct and one spec
//! constructor each, as `lifecycle::jobs` does for the provisioning flow:
//! templates, schedules and notifications enqueue only through these, and
//! handlers read payloads back only through [`AutomationJob::decode`].
//! `automation::register` matches [`AutomationKind`] exhaustively, so a kind
//! without a handler does not compile.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::queue::{JobError, JobSpec};

/// Every job kind of `automation/`: the `kind` column of its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutomationKind {
    /// One run of a job template.
    TemplateRun,
    /// A schedule's fire: creates the run (once per fire) and queues it.
    ScheduleFire,
    /// One notification to one target; retried on the queue.
    Notify,
}

impl AutomationKind {
    pub const ALL: [AutomationKind; 3] = [
        AutomationKind::TemplateRun,
        AutomationKind::ScheduleFire,
        AutomationKind::Notify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AutomationKind::TemplateRun => "template_run",
            AutomationKind::ScheduleFire => "schedule_fire",
            AutomationKind::Notify => "notify",
        }
    }

    pub fn parse(s: &str) -> Option<AutomationKind> {
        AutomationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AutomationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job kind of `automation/` and its payload.
pub trait AutomationJob: Serialize + DeserializeOwned {
    const KIND: AutomationKind;

    fn payload(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A payload that does not decode can never run: a permanent error.
    fn decode(payload: &serde_json::Value) -> Result<Self, JobError> {
        Self::deserialize(payload)
            .map_err(|e| JobError::permanent(format!("bad {} payload: {e}", Self::KIND)))
    }
}

/// `template_run`: the run `run_id` (its row says everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRunJob {
    pub run_id: i64,
}

impl AutomationJob for TemplateRunJob {
    const KIND: AutomationKind = AutomationKind::TemplateRun;
}

impl TemplateRunJob {
    /// Runs of one template may overlap; one run is one job.
    pub fn spec(self, owner: Option<i64>) -> JobSpec {
        let spec = JobSpec::new(Self::KIND.as_str(), self.payload())
            .unique_key(format!("template_run:{}", self.run_id));
        match owner {
            Some(o) => spec.owner(o),
            None => spec,
        }
    }
}

/// `schedule_fire`: one fire of schedule `schedule_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFireJob {
    pub schedule_id: i64,
}

impl AutomationJob for ScheduleFireJob {
    const KIND: AutomationKind = AutomationKind::ScheduleFire;
}

impl ScheduleFireJob {
    /// No coalescing key: the cron claim already makes one job per fire,
    /// and the handler makes one run per job.
    pub fn spec(self) -> JobSpec {
        JobSpec::new(Self::KIND.as_str(), self.payload())
    }
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Success,
    Failure,
    /// A run that changed hosts it should have found converged (the
    /// nightly re-converge).
    Drift,
    /// Hosts stopped answering SSH (the node-liveness template).
    DeadNodes,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Success => "success",
            NotifyEvent::Failure => "failure",
            NotifyEvent::Drift => "drift",
            NotifyEvent::DeadNodes => "dead_nodes",
        }
    }
}

/// `notify`: tell target `target_id` about run `run_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyJob {
    pub target_id: i64,
    pub run_id: i64,
    pub event: NotifyEvent,
}

impl AutomationJob for NotifyJob {
    const KIND: AutomationKind = AutomationKind::Notify;
}

impl NotifyJob {
    /// One delivery per (target, run, event), however often it is asked.
    pub fn spec(self) -> JobSpec {
        JobSpec::new(Self::KIND.as_str(), self.payload()).unique_key(format!(
            "notify:{}:{}:{}",
            self.target_id,
            self.run_id,
            self.event.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_round_trip_and_payloads_decode() {
        for k in AutomationKind::ALL {
            assert_eq!(AutomationKind::parse(k.as_str()), Some(k));
        }
        let j = NotifyJob::decode(&json!({"target_id": 1, "run_id": 2, "event": "dead_nodes"}))
            .unwrap();
        assert_eq!(j.event, NotifyEvent::DeadNodes);
        assert_eq!(
            j.spec().unique_key.as_deref(),
            Some("notify:1:2:dead_nodes")
        );
        assert!(TemplateRunJob::decode(&json!({}))
            .unwrap_err()
            .is_permanent());
        assert_eq!(TemplateRunJob { run_id: 4 }.spec(Some(3)).owner, Some(3));
    }
}
