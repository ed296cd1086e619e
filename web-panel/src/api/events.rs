//! Live job output of a service over server-sent events
//! (`GET /api/v1/services/{id}/events`), and pages of one job's stored
//! output (`GET /api/v1/jobs/{id}/log`).
//!
//! The stream tails the `job_log` table by `(job_id, seq)`: the worker that
//! writes a job's output may be another process, so the table is the truth,
//! and a process-local flush notice ([`crate::queue::log::follow_all`]) only
//! wakes the tail early. Every poll also re-checks access through the domain
//! layer ([`servers::load_managed`]), so a revoked user stops receiving
//! output, and reports the service's status and its jobs' states.
//!
//! Events: `log` (one stored line; its id is `<job_id>:<seq>`, which a
//! client sends back as `Last-Event-ID` to resume), `status` (the service's
//! status, its VM's power state, the actions it takes or the caller's
//! connection line changed; it carries them all) and `job` (a job of the service appeared or changed
//! state). Only `log` events carry ids, so status and job events never move
//! the resume point. Comments every 15 s keep proxies from closing the
//! connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::domain::{PanelError, Principal};
use crate::http::{ApiError, AppState, Auth};
use crate::queue::log::{self, Flushed, LogLine};
use crate::services::{model::JobView, servers};

/// How often a follower re-reads the table when nothing wakes it.
pub const POLL_EVERY: Duration = Duration::from_millis(400);
/// Heartbeat comment interval.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// Most lines read per job per poll; a longer backlog is sent over several
/// polls without waiting in between.
const LINES_PER_READ: u32 = 500;

fn stop_token() -> &'static CancellationToken {
    static STOP: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    STOP.get_or_init(CancellationToken::new)
}

/// Ends every live stream of this process. A server calls it when it
/// starts shutting down: open event streams would otherwise hold its
/// graceful shutdown open forever. Clients reconnect with `Last-Event-ID`.
pub fn stop_live_streams() {
    stop_token().cancel();
}

/// A resume point: the last line a client has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub job_id: i64,
    pub seq: i64,
}

impl Cursor {
    /// Parses `<job_id>:<seq>`.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (j, q) = s.trim().split_once(':')?;
        Some(Cursor {
            job_id: j.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    /// Follow only this job of the service.
    job: Option<i64>,
    /// The same as `Last-Event-ID`, for clients that cannot set headers
    /// (the server page passes the last line it rendered).
    after: Option<String>,
}

pub(super) async fn service_events(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    {
        let mut rc = st.db.read().await?;
        servers::load_managed(&mut rc.conn(), &a.principal, id).await?;
    }
    let raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .or(q.after.as_deref().filter(|v| !v.is_empty()));
    let cursor = match raw {
        None => None,
        Some(s) => Some(Cursor::parse(s).ok_or_else(|| {
            PanelError::invalid("Last-Event-ID", "a resume point is <job_id>:<seq>")
        })?),
    };
    if let Some(job) = q.job {
        let belongs = st
            .db
            .store()
            .job(job)
            .await?
            .is_some_and(|j| j.serial_key.as_deref() == Some(&servers::service_key(id)));
        if !belongs {
            return Err(PanelError::NotFound("job").into());
        }
    }
    let follower = Follower::new(st.db.clone(), a.principal.clone(), id, q.job, cursor);
    let stream = futures::stream::unfold(follower, |mut f| async move {
        let ev = f.next().await?;
        Some((Ok::<_, Infallible>(ev), f))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT_EVERY).text("ping"))
        .into_response())
}

/// The state of one SSE stream.
struct Follower {
    db: Db,
    who: Principal,
    service_id: i64,
    only_job: Option<i64>,
    /// Where the stream starts; consumed by the first poll.
    start: Option<Option<Cursor>>,
    /// Last `seq` sent, per job.
    cursors: HashMap<i64, i64>,
    /// Last (state, attempts) seen, per job.
    jobs: HashMap<i64, (String, u32)>,
    /// Finished jobs read empty this many polls in a row; at 2 they are
    /// not read again.
    quiet: HashMap<i64, u8>,
    drained: HashSet<i64>,
    status: Option<(crate::lifecycle::Status, Option<String>, servers::LiveState)>,
    queue: VecDeque<Event>,
    wake: broadcast::Receiver<Flushed>,
    /// A read hit its limit: poll again without waiting.
    more: bool,
    done: bool,
}

impl Follower {
    fn new(
        db: Db,
        who: Principal,
        service_id: i64,
        only_job: Option<i64>,
        cursor: Option<Cursor>,
    ) -> Self {
        Follower {
            db,
            who,
            service_id,
            only_job,
            start: Some(cursor),
            cursors: HashMap::new(),
            jobs: HashMap::new(),
            quiet: HashMap::new(),
            drained: HashSet::new(),
            status: None,
            queue: VecDeque::new(),
            wake: log::follow_all(),
            more: false,
            done: false,
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.done || stop_token().is_cancelled() {
                return None;
            }
            if self.start.is_none() && !self.more {
                self.wait().await;
            }
            match self.poll().await {
                Ok(()) => {}
                Err(PanelError::NotFound(_) | PanelError::Forbidden(_)) => {
                    // Gone, or access revoked: say so and end the stream.
                    self.queue
                        .push_back(Event::default().event("end").data("{}"));
                    self.done = true;
                }
                Err(e) => {
                    tracing::warn!(service_id = self.service_id, error = %e, "job output poll failed");
                    self.more = false;
                }
            }
        }
    }

    /// Sleeps until the next poll, or until this process flushes output of
    /// a job we follow.
    async fn wait(&mut self) {
        let sleep = tokio::time::sleep(POLL_EVERY);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                _ = stop_token().cancelled() => return,
                r = self.wake.recv() => match r {
                    Ok(f) if self.jobs.contains_key(&f.job_id) => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut sleep).await;
                        return;
                    }
                },
            }
        }
    }

    async fn poll(&mut self) -> Result<(), PanelError> {
        self.more = false;
        let mut rc = self.db.read().await?;
        let mut conn = rc.conn();
        let service = servers::load_managed(&mut conn, &self.who, self.service_id).await?;
        let live = servers::live_state(&mut conn, &self.who, &service).await?;
        let status = (service.status, service.failure_reason.clone(), live);
        if self.status.as_ref() != Some(&status) {
            self.queue.push_back(json_event(
                "status",
                &json!({
                    "service_id": self.service_id,
                    "status": status.0,
                    "failure_reason": status.1,
                    "power_state": status.2.power_state,
                    "actions": status.2.actions,
                    "connection": status.2.connection,
                }),
            ));
            self.status = Some(status);
        }

        // job_log takes its own connection; on PostgreSQL both come from one
        // pool, so never hold one while waiting for the other.
        drop(rc);
        let mut jobs: Vec<JobView> = servers::job_log(self.db.store(), self.service_id).await?;
        let mut rc = self.db.read().await?;
        let mut conn = rc.conn();
        if let Some(only) = self.only_job {
            jobs.retain(|j| j.id == only);
        }
        jobs.sort_by_key(|j| j.id);

        let first = self.start.take();
        if let Some(start) = first {
            // Where each job starts. Without a resume point: the whole of
            // the newest job, and only new output of older ones.
            let from = start.unwrap_or(Cursor {
                job_id: jobs.last().map(|j| j.id).unwrap_or(0),
                seq: 0,
            });
            self.cursors.insert(from.job_id, from.seq);
            if self.only_job.is_none() {
                let key = servers::service_key(self.service_id);
                for (job, last) in log::last_seqs_before(&mut conn, &key, from.job_id).await? {
                    self.cursors.insert(job, last);
                }
            } else if self.only_job != Some(from.job_id) {
                self.cursors.remove(&from.job_id);
            }
        }

        let newest = jobs.last().map(|j| j.id);
        for j in &jobs {
            let seen = (j.state.clone(), j.attempts);
            if self.jobs.get(&j.id) != Some(&seen) {
                // On the first poll, announce only what is still going on.
                let finished = crate::queue::JobState::parse(&j.state)
                    .is_some_and(crate::queue::JobState::is_finished);
                if first.is_none() || !finished || Some(j.id) == newest {
                    self.queue.push_back(json_event("job", j));
                }
                self.jobs.insert(j.id, seen);
            }
            if self.drained.contains(&j.id) {
                continue;
            }
            let after = self.cursors.get(&j.id).copied().unwrap_or(0);
            let lines = log::read_on(&mut conn, j.id, after, LINES_PER_READ).await?;
            if lines.len() as u32 == LINES_PER_READ {
                self.more = true;
            }
            let finished = crate::queue::JobState::parse(&j.state)
                .is_some_and(crate::queue::JobState::is_finished);
            if lines.is_empty() && finished {
                // A handler flushes before it returns, so a finished job
                // read empty twice has nothing more coming.
                let q = self.quiet.entry(j.id).or_default();
                *q += 1;
                if *q >= 2 {
                    self.drained.insert(j.id);
                }
            } else {
                self.quiet.remove(&j.id);
            }
            for l in lines {
                self.cursors.insert(j.id, l.seq);
                self.queue.push_back(log_event(&l));
            }
        }
        Ok(())
    }
}

fn json_event(kind: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(kind)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "null".into()))
}

/// A `log` event: the stored line plus a human `text` summary.
fn log_event(l: &LogLine) -> Event {
    let mut data = serde_json::to_value(l).unwrap_or_default();
    data["text"] = log::summary(&l.line).into();
    json_event("log", &data).id(format!("{}:{}", l.job_id, l.seq))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_log_limit")]
    limit: u32,
}

fn default_log_limit() -> u32 {
    500
}

/// One page of a job's stored output. Authorised like the job's service;
/// jobs that belong to no service are for platform admins only.
pub(super) async fn job_log(
    State(st): State<AppState>,
    a: Auth,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let job = st
        .db
        .store()
        .job(id)
        .await?
        .ok_or(PanelError::NotFound("job"))?;
    let service = job
        .serial_key
        .as_deref()
        .and_then(|k| k.strip_prefix("service:"))
        .and_then(|n| n.parse::<i64>().ok());
    let mut rc = st.db.read().await?;
    let mut conn = rc.conn();
    match service {
        Some(sid) => match servers::load_managed(&mut conn, &a.principal, sid).await {
            Ok(_) => {}
            Err(PanelError::NotFound(_)) => return Err(PanelError::NotFound("job").into()),
            Err(e) => return Err(e.into()),
        },
        None if a.principal.is_admin => {}
        None => return Err(PanelError::NotFound("job").into()),
    }
    let lines = log::read_on(&mut conn, id, q.after.max(0), q.limit.clamp(1, 1000)).await?;
    let next_after = lines.last().map(|l| l.seq).unwrap_or(q.after.max(0));
    Ok(Json(json!({
        "job_id": id,
        "state": job.state.as_str(),
        "items": lines,
        "next_after": next_after,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursor_parses_job_and_seq() {
        assert_eq!(
            Cursor::parse("12:34"),
            Some(Cursor {
                job_id: 12,
                seq: 34
            })
        );
        assert_eq!(Cursor::parse("12"), None);
        assert_eq!(Cursor::parse("a:1"), None);
    }
}
