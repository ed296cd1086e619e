//! Cron schedules. A schedule (cron expression or fixed interval) turns
//! into one job per fire time. Every node ticks every schedule; a fire time
//! is claimed by inserting the unique row (schedule, fire time) in the same
//! transaction that enqueues its job, so however many nodes tick, each fire
//! time runs once. Fires missed while no node was up follow the schedule's
//! [`MissedFires`] policy.
//!
//! Schedules come from the panel's configuration (a fixed list) and from
//! [`ScheduleSource`]s read at every tick (the job templates' schedules in
//! the database, `automation::schedules`). A cron expression is read in its
//! schedule's time zone, so `0 2 * * *` in `Europe/Berlin` fires at 02:00
//! local time across daylight-saving changes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::JobSpec;
use crate::clock::{millis, UnixMillis};
use crate::store::{Store, StoreError};

/// Bad schedule configuration.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {name:?}: invalid cron expression {expr:?}: {reason}")]
    BadCron {
        name: String,
        expr: String,
        reason: String,
    },
    #[error("schedule {0:?}: give exactly one of `cron` or `every_secs` (> 0)")]
    NoTiming(String),
    #[error("schedule {name:?}: unknown time zone {zone:?} (an IANA name such as Europe/Berlin)")]
    BadTimeZone { name: String, zone: String },
}

/// How often a schedule fires.
#[derive(Debug, Clone)]
pub enum Every {
    /// Standard 5-field cron (minute precision) or 6/7-field with seconds,
    /// read in the time zone.
    Cron(Box<cron::Schedule>, Tz),
    /// Every `interval`, counted from when the schedule was first seen.
    Interval(Duration),
}

/// What to do with fire times that passed while no node ran the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissedFires {
    /// Drop them; only on-time fires (within the grace period) run.
    #[default]
    Skip,
    /// Run once for all of them, as soon as possible.
    RunOnce,
}

/// One schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub every: Every,
    pub job: JobSpec,
    pub missed: MissedFires,
    /// A fire this late still counts as on time.
    pub grace: Duration,
}

impl Schedule {
    pub fn cron(name: &str, expr: &str, job: JobSpec) -> Result<Self, ScheduleError> {
        Self::cron_in(name, expr, Tz::UTC, job)
    }

    /// A cron schedule whose expression is read in time zone `tz`.
    pub fn cron_in(name: &str, expr: &str, tz: Tz, job: JobSpec) -> Result<Self, ScheduleError> {
        // The cron crate wants seconds; accept the classic 5-field form.
        let full = if expr.split_whitespace().count() == 5 {
            format!("0 {expr}")
        } else {
            expr.to_string()
        };
        let parsed = cron::Schedule::from_str(&full).map_err(|e| ScheduleError::BadCron {
            name: name.to_string(),
            expr: expr.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(name, Every::Cron(Box::new(parsed), tz), job))
    }

    pub fn interval(name: &str, every: Duration, job: JobSpec) -> Self {
        Self::new(name, Every::Interval(every), job)
    }

    fn new(name: &str, every: Every, job: JobSpec) -> Self {
        Self {
            name: name.to_string(),
            every,
            job,
            missed: MissedFires::Skip,
            grace: Duration::from_secs(60),
        }
    }

    pub fn missed(mut self, policy: MissedFires) -> Self {
        self.missed = policy;
        self
    }

    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The latest fire time in `(after, upto]`, if any.
    pub fn latest_fire(
        &self,
        anchor: UnixMillis,
        after: UnixMillis,
        upto: UnixMillis,
    ) -> Option<UnixMillis> {
        match &self.every {
            Every::Interval(d) => {
                let step = millis(*d).max(1);
                if upto < anchor + step {
                    return None;
                }
                let latest = anchor + (upto - anchor) / step * step;
                (latest > after).then_some(latest)
            }
            Every::Cron(c, tz) => {
                let start = to_datetime(after)?.with_timezone(tz);
                let mut latest = None;
                // Bounded walk: a long outage of a per-second schedule
                // should not stall the tick.
                for t in c.after(&start).take(100_000) {
                    let t = t.timestamp_millis();
                    if t > upto {
                        break;
                    }
                    latest = Some(t);
                }
                latest
            }
        }
    }

    /// The first fire time after `after`.
    pub fn next_fire(&self, anchor: UnixMillis, after: UnixMillis) -> Option<UnixMillis> {
        match &self.every {
            Every::Interval(d) => {
                let step = millis(*d).max(1);
                let k = if after < anchor {
                    1
                } else {
                    (after - anchor) / step + 1
                };
                Some(anchor + k * step)
            }
            Every::Cron(c, tz) => c
                .after(&to_datetime(after)?.with_timezone(tz))
                .next()
                .map(|t| t.timestamp_millis()),
        }
    }
}

fn to_datetime(ms: UnixMillis) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// A schedule as written in the panel's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleConfig {
    pub name: String,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub every_secs: Option<u64>,
    pub kind: String,
    #[serde(default)]
    pub payload: serde_json::Value,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub missed: MissedFires,
}

impl ScheduleConfig {
    pub fn build(&self) -> Result<Schedule, ScheduleError> {
        let mut job = JobSpec::new(&self.kind, self.payload.clone());
        if let Some(q) = &self.queue {
            job = job.queue(q);
        }
        let s = match (&self.cron, self.every_secs) {
            (Some(expr), None) => Schedule::cron(&self.name, expr, job)?,
            (None, Some(secs)) if secs > 0 => {
                Schedule::interval(&self.name, Duration::from_secs(secs), job)
            }
            _ => return Err(ScheduleError::NoTiming(self.name.clone())),
        };
        Ok(s.missed(self.missed))
    }
}

/// A fire time this node claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub schedule: String,
    pub fire_at: UnixMillis,
    /// `None` when the fire was claimed only to be skipped.
    pub job_id: Option<i64>,
}

/// Parses an IANA time zone name for schedule `name`.
pub fn time_zone(name: &str, zone: &str) -> Result<Tz, ScheduleError> {
    zone.parse().map_err(|_| ScheduleError::BadTimeZone {
        name: name.to_string(),
        zone: zone.to_string(),
    })
}

/// Schedules that live elsewhere (in the database) and may change between
/// two ticks; the scheduler asks for the current list at every tick.
#[async_trait::async_trait]
pub trait ScheduleSource: Send + Sync + 'static {
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;
}

/// Ticks schedules against the store.
#[derive(Clone)]
pub struct Scheduler {
    store: Store,
    schedules: Vec<Schedule>,
    sources: Vec<Arc<dyn ScheduleSource>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("schedules", &self.schedules)
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl Scheduler {
    pub fn new(store: Store, schedules: Vec<Schedule>) -> Self {
        Self {
            store,
            schedules,
            sources: Vec::new(),
        }
    }

    /// Also ticks the schedules `source` lists at each tick.
    pub fn with_source(mut self, source: Arc<dyn ScheduleSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Claims every fire time due now. Safe to call from any number of
    /// nodes at once.
    pub async fn tick(&self) -> Result<Vec<Fired>, StoreError> {
        let mut fired = Vec::new();
        let mut dynamic = Vec::new();
        for source in &self.sources {
            match source.schedules().await {
                Ok(list) => dynamic.extend(list),
                // One source failing must not stop the configured schedules.
                Err(e) => tracing::warn!(error = %e, "cannot read schedules"),
            }
        }
        for s in self.schedules.iter().chain(dynamic.iter()) {
            let now = self.store.now();
            let anchor = self.store.schedule_anchor(&s.name, now).await?;
            let last = self.store.last_fire(&s.name).await?.unwrap_or(anchor);
            let Some(latest) = s.latest_fire(anchor, last, now) else {
                continue;
            };
            let on_time = now - latest <= millis(s.grace);
            let spec = match s.missed {
                MissedFires::RunOnce => Some(&s.job),
                MissedFires::Skip if on_time => Some(&s.job),
                MissedFires::Skip => None,
            };
            if let Some(job_id) = self.store.claim_fire(&s.name, latest, spec, now).await? {
                fired.push(Fired {
                    schedule: s.name.clone(),
                    fire_at: latest,
                    job_id,
                });
            }
        }
        Ok(fired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_fires_on_the_minute() {
        let s = Schedule::cron(
            "m",
            "*/5 * * * *",
            JobSpec::new("k", serde_json::Value::Null),
        )
        .expect("valid");
        // 2024-01-01T00:00:00Z = 1704067200000
        let t0 = 1_704_067_200_000;
        assert_eq!(s.next_fire(t0, t0), Some(t0 + 300_000));
        assert_eq!(s.latest_fire(t0, t0, t0 + 899_999), Some(t0 + 600_000));
        assert_eq!(s.latest_fire(t0, t0 + 600_000, t0 + 899_999), None);
    }

    #[test]
    fn interval_counts_from_anchor() {
        let s = Schedule::interval(
            "i",
            Duration::from_secs(10),
            JobSpec::new("k", serde_json::Value::Null),
        );
        assert_eq!(s.latest_fire(1_000, 1_000, 10_999), None);
        assert_eq!(s.latest_fire(1_000, 1_000, 11_000), Some(11_000));
        assert_eq!(s.latest_fire(1_000, 11_000, 45_000), Some(41_000));
        assert_eq!(s.next_fire(1_000, 41_000), Some(51_000));
    }

    /// 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
    #[test]
    fn cron_is_read_in_its_time_zone() {
        let tz = time_zone("n", "Europe/Berlin").expect("known zone");
        let s = Schedule::cron_in(
            "n",
            "0 2 * * *",
            tz,
            JobSpec::new("k", serde_json::Value::Null),
        )
        .expect("valid");
        let jan = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        assert_eq!(s.next_fire(jan, jan), Some(jan + 3_600_000));
        let jul = 1_719_792_000_000; // 2024-07-01T00:00:00Z
        assert_eq!(s.next_fire(jul, jul), Some(jul + 86_400_000));
        assert!(time_zone("n", "Mars/Olympus").is_err());
    }

    #[test]
    fn bad_cron_is_reported_with_the_schedule_name() {
        let err = Schedule::cron(
            "nightly",
            "61 * * * *",
            JobSpec::new("k", serde_json::Value::Null),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nightly"), "{err}");
    }
}
