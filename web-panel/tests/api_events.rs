//! Live job output end to end, on SQLite and PostgreSQL: a job handler run
//! by a real worker writes lines through `JobLog`, and an SSE client (plain
//! reqwest, parsing the event stream itself) receives them in order, with
//! status and job events; `Last-Event-ID` resumes after the last line; lines
//! written through a second store handle, with no in-process notice (as
//! another `keel-panel worker` process would), still arrive; outsiders are
//! refused like on the service detail; and `/jobs/{id}/log` pages the lines.

mod api_support;

use std::time::Duration;

use api_support::{catalog_and_pool, start, Backend, Cred, Panel};
use async_trait::async_trait;
use keel_panel::domain::Principal;
use keel_panel::queue::log::{JobLog, JobLogConfig};
use keel_panel::queue::worker::QueueConfig;
use keel_panel::queue::{
    JobContext, JobError, JobHandler, JobSpec, Registry, RetryPolicy, Worker, WorkerConfig,
};
use keel_panel::services::{servers::service_key, sites};
use keel_panel::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One parsed server-sent event.
#[derive(Debug, Clone, Default)]
struct SseEvent {
    kind: String,
    id: Option<String>,
    data: Value,
}

/// Reads events off a streaming response.
struct EventReader {
    resp: reqwest::Response,
    buf: String,
}

impl EventReader {
    /// The next event, or `None` when none arrives within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                let mut data = String::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue; // heartbeat comment
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => ev.kind = value.to_string(),
                        "id" => ev.id = Some(value.to_string()),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if ev.kind.is_empty() && data.is_empty() {
                    continue;
                }
                ev.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(ev);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `n` `log` events (skipping other kinds).
    async fn logs(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let ev = self
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("only {} of {n} log events arrived: {out:?}", out.len()));
            if ev.kind == "log" {
                out.push(ev);
            }
        }
        out
    }

    /// Waits for an event of `kind` matching `pred`.
    async fn until(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> SseEvent {
        loop {
            let ev = self
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("no {kind} event arrived"));
            if ev.kind == kind && pred(&ev.data) {
                return ev;
            }
        }
    }

    /// Asserts no `log` event arrives within `wait`.
    async fn no_more_logs(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Some(ev) = self
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            assert_ne!(ev.kind, "log", "unexpected line {ev:?}");
        }
    }
}

async fn open(
    p: &Panel,
    path: &str,
    cred: &Cred,
    last_id: Option<&str>,
) -> (StatusCode, EventReader) {
    let mut req = p.client.get(format!("{}{}", p.base, path));
    if let Cred::Bearer(t) = cred {
        req = req.bearer_auth(t);
    }
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status(),
        EventReader {
            resp,
            buf: String::new(),
        },
    )
}

struct World {
    site: i64,
    service: i64,
    provision_job: i64,
    owner: Cred,
    other: Cred,
    ssh: Cred,
}

async fn world(p: &Panel) -> World {
    catalog_and_pool(p, 10).await;
    let (_, owner) = p.user("owner", false).await;
    let (_, other) = p.user("other", false).await;
    let (_, ssh) = p.user("sshuser", false).await;
    let owner = Cred::Bearer(owner);
    let site = p
        .call(
            "POST",
            "/api/v1/sites",
            &owner,
            Some(json!({"name": "main", "owner_email": "o@example.org"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    sites::set_member(p.db(), &Principal::system(), site, "sshuser", "ssh")
        .await
        .unwrap();
    let created = p
        .call(
            "POST",
            "/api/v1/services",
            &owner,
            Some(json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json);
    World {
        site,
        service: created.json["service"]["id"].as_i64().unwrap(),
        provision_job: created.json["job_id"].as_i64().unwrap(),
        owner,
        other: Cred::Bearer(other),
        ssh: Cred::Bearer(ssh),
    }
}

/// Prints `{"lines": N}` numbered lines through the job log, flushing
/// before it returns as handlers must.
struct Chatty;

#[async_trait]
impl JobHandler for Chatty {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::once()
    }

    async fn run(&self, ctx: JobContext) -> Result<(), JobError> {
        let n = ctx.payload()["lines"].as_u64().unwrap_or(0);
        let log = JobLog::open(&ctx).await.map_err(JobError::retryable)?;
        for i in 1..=n {
            log.append(json!({"event": "message", "message": format!("line {i}")}));
        }
        log.close().await.map_err(JobError::retryable)
    }
}

async fn run_chatty(p: &Panel, service: i64, lines: u64) -> i64 {
    let job = keel_panel::queue::enqueue_now(
        p.db().store(),
        JobSpec::new("chatty", json!({ "lines": lines }))
            .queue("output")
            .serial_key(service_key(service)),
    )
    .await
    .unwrap()
    .job_id;
    let mut registry = Registry::new();
    registry.register("chatty", Chatty);
    let worker = Worker::new(
        p.db().store().clone(),
        registry,
        WorkerConfig {
            queues: vec![QueueConfig::new("output")],
            ..WorkerConfig::default()
        },
    );
    assert_eq!(worker.run_until_idle().await.unwrap(), 1);
    job
}

fn messages(evs: &[SseEvent]) -> Vec<String> {
    evs.iter()
        .map(|e| {
            e.data["line"]["message"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

async fn streams_resumes_and_tails_the_table(b: Backend) {
    let p = start(b, |_| {}).await;
    let w = world(&p).await;
    let events = format!("/api/v1/services/{}/events", w.service);
    // The provision job stays queued: no worker serves its queue here.
    let prov = w.provision_job;

    // A job run by a worker writes 3 lines before anyone follows.
    let job = run_chatty(&p, w.service, 3).await;

    let (status, mut sse) = open(&p, &events, &w.owner, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sse.resp.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        sse.resp.headers()
    );
    let first = sse.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(first.kind, "status");
    assert_eq!(first.data["status"], "requested");
    let job_ev = sse.until("job", |d| d["id"] == job).await;
    assert_eq!(job_ev.data["state"], "succeeded");
    let got = sse.logs(3).await;
    assert_eq!(messages(&got), ["line 1", "line 2", "line 3"]);
    let ids: Vec<_> = got.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        [format!("{job}:1"), format!("{job}:2"), format!("{job}:3")]
    );

    // Live: output of the queued job arrives while the stream is open.
    let live = JobLog::open_with(p.db().store(), prov, 1, JobLogConfig::default())
        .await
        .unwrap();
    live.message("p1");
    // A NUL from command output: jsonb (PostgreSQL) cannot store it, so it
    // arrives as U+FFFD on both backends instead of stalling the log.
    live.message("p2\0");
    live.flush().await.unwrap();
    let got = sse.logs(2).await;
    assert_eq!(messages(&got), ["p1", "p2\u{FFFD}"]);
    assert_eq!(got[1].id.as_deref(), Some(format!("{prov}:2").as_str()));
    drop(live);

    // A status change reaches the open stream.
    {
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        use keel_panel::lifecycle::Status;
        let moved = keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &Principal::system(),
            w.service,
            &[Status::Requested],
            Status::Allocating,
            None,
        )
        .await
        .unwrap();
        assert!(moved);
        tx.commit().await.unwrap();
    }
    sse.until("status", |d| d["status"] == "allocating").await;

    // A line written through another store handle, by plain SQL and with
    // no in-process notice, as another worker process would: the stream
    // finds it in the table.
    let other = Store::connect(&p.url).await.unwrap();
    let sql = "INSERT INTO job_log (job_id, seq, at_ms, attempt, line) VALUES ($1, 3, 0, 1, $2)";
    let line = json!({"event": "message", "message": "p3"});
    if let Some(pool) = other.as_sqlite_pool() {
        sqlx::query(sql)
            .bind(prov)
            .bind(line.to_string())
            .execute(pool)
            .await
            .unwrap();
    } else {
        sqlx::query(sql)
            .bind(prov)
            .bind(sqlx::types::Json(&line))
            .execute(other.as_postgres_pool().unwrap())
            .await
            .unwrap();
    }
    let got = sse.logs(1).await;
    assert_eq!(messages(&got), ["p3"]);
    assert_eq!(got[0].id.as_deref(), Some(format!("{prov}:3").as_str()));

    // A new job of the service is announced and followed from its start.
    let job2 = run_chatty(&p, w.service, 2).await;
    assert!(job2 > job);
    sse.until("job", |d| d["id"] == job2).await;
    let got = sse.logs(2).await;
    assert_eq!(messages(&got), ["line 1", "line 2"]);
    assert!(got.iter().all(|e| e.data["job_id"] == job2));
    drop(sse);

    // Resuming after line 2 of the first chatty job gives its line 3 and
    // the second job; nothing before, and nothing of the older job.
    let (status, mut sse) = open(&p, &events, &w.owner, Some(&format!("{job}:2"))).await;
    assert_eq!(status, StatusCode::OK);
    let got = sse.logs(3).await;
    let ids: Vec<_> = got.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        [format!("{job}:3"), format!("{job2}:1"), format!("{job2}:2")]
    );
    sse.no_more_logs(Duration::from_millis(1200)).await;
    drop(sse);

    // Resuming at the end of the newest job gives nothing old; `?after=`
    // works like the header, and `?job=` follows one job only.
    let (_, mut sse) = open(&p, &format!("{events}?after={job2}:2"), &w.owner, None).await;
    sse.no_more_logs(Duration::from_millis(1200)).await;
    let (_, mut sse) = open(&p, &format!("{events}?job={prov}"), &w.owner, None).await;
    let got = sse.logs(3).await;
    assert_eq!(messages(&got), ["p1", "p2\u{FFFD}", "p3"]);
    sse.no_more_logs(Duration::from_millis(1200)).await;

    // The same lines, paged, as JSON.
    let page = p
        .call(
            "GET",
            &format!("/api/v1/jobs/{job}/log?after=1&limit=2"),
            &w.owner,
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.json);
    let seqs: Vec<_> = page.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page.json["next_after"], 3);
    assert_eq!(page.json["state"], "succeeded");

    // The server page renders the newest job's lines, and its script
    // follows the stream from the last of them.
    let html = p
        .call("GET", &format!("/servers/{}", w.service), &w.owner, None)
        .await;
    assert_eq!(html.status, StatusCode::OK);
    let html = html.json.as_str().unwrap().to_string();
    assert!(
        html.contains(&format!(r#"data-after="{job2}:2""#)),
        "{html}"
    );
    assert!(
        html.contains(&format!(r#"data-id="{job2}:1">line 1"#)),
        "{html}"
    );
    assert!(
        !html.contains(">p1"),
        "older jobs are left to the stream: {html}"
    );
    // The follower is the panel's one script (the CSP allows no inline one).
    assert!(
        html.contains(r#"<script src="/static/keel.js" defer></script>"#),
        "{html}"
    );
    let script = p.call("GET", "/static/keel.js", &w.owner, None).await;
    assert_eq!(script.status, StatusCode::OK);
    let script = script.json.as_str().unwrap().to_string();
    assert!(script.contains("new EventSource(url)"), "{script}");
}
both_backends!(streams, streams_resumes_and_tails_the_table);

async fn outsiders_are_refused_like_the_detail(b: Backend) {
    let p = start(b, |_| {}).await;
    let w = world(&p).await;
    let job = run_chatty(&p, w.service, 1).await;
    let detail = format!("/api/v1/services/{}", w.service);
    let events = format!("{detail}/events");
    let log = format!("/api/v1/jobs/{job}/log");
    for (cred, want) in [
        (&Cred::Anonymous, StatusCode::UNAUTHORIZED),
        (&w.other, StatusCode::NOT_FOUND),
        (&w.ssh, StatusCode::FORBIDDEN),
    ] {
        assert_eq!(p.call("GET", &detail, cred, None).await.status, want);
        let (status, mut sse) = open(&p, &events, cred, None).await;
        assert_eq!(status, want, "{cred:?}");
        assert!(sse
            .next(Duration::from_millis(300))
            .await
            .is_none_or(|e| e.kind.is_empty()));
        assert_eq!(
            p.call("GET", &log, cred, None).await.status,
            want,
            "{cred:?}"
        );
    }
    // A job of another service, or a bad resume point, is refused.
    let (status, _) = open(&p, &format!("{events}?job={}", job + 1000), &w.owner, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = open(&p, &events, &w.owner, Some("nonsense")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Access revoked mid-stream: the stream ends.
    let (status, mut sse) = open(&p, &events, &w.owner, None).await;
    assert_eq!(status, StatusCode::OK);
    sse.until("status", |_| true).await;
    let owner_id = p.call("GET", "/api/v1/me", &w.owner, None).await.json["id"]
        .as_i64()
        .unwrap();
    sites::remove_member(p.db(), &Principal::system(), w.site, owner_id)
        .await
        .unwrap();
    sse.until("end", |_| true).await;
    assert!(sse.next(Duration::from_secs(2)).await.is_none());
}
both_backends!(refused, outsiders_are_refused_like_the_detail);
