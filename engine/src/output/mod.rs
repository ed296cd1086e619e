//! Output: what a run tells the outside world.
//!
//! The executor emits [`Event`]s; sinks turn them into ansible-playbook's human
//! format (`human.rs`) or newline-delimited JSON (`events.rs`) for the panel.
//! `no_log` results are censored before any sink sees them.

use parking_lot::Mutex;

use serde::Serialize;
use serde_json::Value as Json;

mod events;
mod human;
mod minimal;

pub use events::JsonSink;
pub use human::HumanSink;
pub use minimal::MinimalSink;

/// The counters ansible-playbook prints in its PLAY RECAP.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct HostStats {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    pub rescued: u32,
    pub ignored: u32,
}

/// How one task ended on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
    Unreachable,
}

/// One host's result for one task (or one loop item).
#[derive(Debug, Clone, Serialize)]
pub struct HostResult {
    pub host: String,
    /// The delegated host, when `delegate_to` is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegated_to: Option<String>,
    pub status: Status,
    /// The failure was ignored (`ignore_errors`).
    pub ignored: bool,
    /// The loop item's label, for item results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_label: Option<String>,
    /// The full result (what `register` sees), already censored for `no_log`.
    pub result: Json,
    /// Unified diffs, when `--diff` is on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
    /// This is one item of a loop; a summary result follows.
    pub is_item: bool,
    /// For a failure: ansible-core's `[ERROR]: Task failed: …` block, with
    /// the task's origin and the source lines above it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostResult {
    /// A result the executor makes itself (an include, a `meta` action): no
    /// delegation, loop item, diff or error block.
    pub fn plain(host: String, status: Status, ignored: bool, result: Json) -> HostResult {
        HostResult {
            host,
            delegated_to: None,
            status,
            ignored,
            item_label: None,
            result,
            diff: vec![],
            is_item: false,
            error: None,
        }
    }
}

/// Everything a run reports, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PlaybookStart {
        path: String,
    },
    PlayStart {
        name: String,
        hosts: Vec<String>,
    },
    NoHostsMatched {
        pattern: String,
    },
    TaskStart {
        id: usize,
        name: String,
        path: String,
        handler: bool,
    },
    HostResult(HostResult),
    Warning {
        message: String,
    },
    /// ansible-playbook's `[ERROR]` line: an include that could not be
    /// loaded, or an error that ends the run.
    Error {
        message: String,
    },
    /// A dynamic include was loaded for these hosts.
    Included {
        file: String,
        hosts: Vec<String>,
    },
    /// Every host of the play has failed.
    NoMoreHosts,
    /// A message ansible-playbook shows only from `-v` × `level` on
    /// (`META: ending play` at `-vv`).
    Verbose {
        level: u8,
        message: String,
    },
    Recap {
        stats: Vec<(String, HostStats)>,
    },
}

/// Receives events. Sinks must be cheap: they are called from the executor's
/// hot path.
pub trait Sink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Sends each event to several sinks.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Box<dyn Sink>>,
}

impl Fanout {
    pub fn new() -> Fanout {
        Fanout::default()
    }
    pub fn add(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }
}

impl Sink for Fanout {
    fn emit(&self, event: &Event) {
        for s in &self.sinks {
            s.emit(event);
        }
    }
}

/// Keeps values decrypted from a vault out of what a run prints, where
/// ansible-core would not print them or a task did not ask for them:
/// - a diff shows what a task wrote, with the secrets in it masked
///   (`vault::mask`; ansible-core shows them, Keel deliberately does not);
/// - an `include_vars` result that loaded a vaulted file is censored like a
///   `no_log` one, as ansible-core censors it (the registered value keeps it).
///
/// Other results pass unchanged, so a task that shows a value on purpose
/// (`debug: var=…`) still does.
pub struct VaultMask<S: Sink>(pub S);

impl<S: Sink> Sink for VaultMask<S> {
    fn emit(&self, event: &Event) {
        if let Event::HostResult(r) = event {
            let vaulted_include = r
                .result
                .get("ansible_included_var_files")
                .and_then(Json::as_array)
                .is_some_and(|files| {
                    files.iter().filter_map(Json::as_str).any(|f| {
                        crate::vault::is_vaulted_file(std::path::Path::new(f)).unwrap_or(false)
                    })
                });
            if vaulted_include {
                let mut r = r.clone();
                let mut m = serde_json::Map::new();
                m.insert("censored".into(), Json::String(CENSORED.into()));
                m.insert(
                    "changed".into(),
                    r.result
                        .get("changed")
                        .cloned()
                        .unwrap_or(Json::Bool(false)),
                );
                if r.status == Status::Failed {
                    m.insert("failed".into(), Json::Bool(true));
                }
                r.result = Json::Object(m);
                r.diff.clear();
                return self.0.emit(&Event::HostResult(r));
            }
            if r.diff
                .iter()
                .any(|d| matches!(crate::vault::mask(d), std::borrow::Cow::Owned(_)))
            {
                let mut r = r.clone();
                for d in &mut r.diff {
                    *d = crate::vault::mask(d).into_owned();
                }
                return self.0.emit(&Event::HostResult(r));
            }
        }
        self.0.emit(event)
    }
}

/// Collects events in memory (tests, and the panel's job log).
#[derive(Default)]
pub struct MemorySink {
    pub events: Mutex<Vec<Event>>,
}

impl Sink for MemorySink {
    fn emit(&self, event: &Event) {
        self.events.lock().push(event.clone());
    }
}

/// The message Ansible puts in place of a `no_log` result.
pub const CENSORED: &str =
    "the output has been hidden due to the fact that 'no_log: true' was specified for this result";
