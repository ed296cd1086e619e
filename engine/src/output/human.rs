//! ansible-playbook's default output format: banners, per-host lines, recap.
use parking_lot::Mutex;
use std::io::Write;

use serde_json::Value as Json;

use super::{Event, HostResult, HostStats, Sink, Status};

pub struct HumanSink {
    out: Mutex<Box<dyn Write + Send>>,
    verbosity: u8,
    /// Hosts whose `[ERROR]` block the current task has printed: a loop
    /// prints it once, before its first failed item.
    errored: Mutex<std::collections::HashSet<String>>,
}

impl HumanSink {
    pub fn new(out: Box<dyn Write + Send>, verbosity: u8) -> HumanSink {
        HumanSink {
            out: Mutex::new(out),
            verbosity,
            errored: Mutex::new(Default::default()),
        }
    }
}

/// `TITLE ****` padded to 80 columns as ansible-playbook does off a terminal.
pub fn banner(title: &str) -> String {
    let stars = 79usize.saturating_sub(title.chars().count()).max(3);
    format!("\n{} {}", title, "*".repeat(stars))
}

/// One PLAY RECAP line, byte for byte as ansible-playbook prints it uncoloured.
pub fn recap_line(host: &str, s: &HostStats) -> String {
    format!(
        "{:<26} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4} rescued={:<4} ignored={:<4}",
        host, s.ok, s.changed, s.unreachable, s.failed, s.skipped, s.rescued, s.ignored
    )
}

/// Sorted compact JSON, the way the default callback dumps a result.
fn dump(v: &Json) -> String {
    fn sorted(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Json::Object(out)
            }
            Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let s = serde_json::to_string(&sorted(v)).unwrap_or_default();
    // Python's json.dumps separates with ", " and ": ".
    python_separators(&s)
}

/// Sorted JSON indented by four, how results flagged to show at every
/// verbosity (`debug`, `assert`) are dumped.
pub(super) fn dump_indented(v: &Json) -> String {
    use serde::Serialize;
    let compact: Json = serde_json::from_str(&dump(v)).unwrap_or_else(|_| v.clone());
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if compact.serialize(&mut ser).is_err() {
        return dump(v);
    }
    String::from_utf8(buf).unwrap_or_default()
}

fn python_separators(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() + compact.len() / 8);
    let mut in_str = false;
    let mut escaped = false;
    for c in compact.chars() {
        out.push(c);
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ',' || c == ':' {
            out.push(' ');
        }
    }
    out
}

/// Drops the keys the default callback hides from per-host output. The
/// status keys (`failed`, `skipped`) never show: the line's first word says
/// it. An item's result keeps its loop variable (`ansible_loop_var`, `item`).
pub(super) fn abridged(result: &Json, is_item: bool) -> Json {
    let mut r = result.clone();
    if let Json::Object(m) = &mut r {
        for k in [
            "invocation",
            "exception",
            "_ansible_no_log",
            "_ansible_verbose_always",
            "diff",
            "results",
            "_ansible_item_label",
            "failed",
            "skipped",
        ] {
            m.remove(k);
        }
        if !is_item {
            m.remove("ansible_loop_var");
            m.remove("item");
        }
        m.retain(|k, _| !k.starts_with("_ansible"));
    }
    r
}

impl HumanSink {
    fn host_line(&self, r: &HostResult) -> String {
        let host = match &r.delegated_to {
            Some(d) if d != &r.host => format!("[{} -> {}]", r.host, d),
            _ => format!("[{}]", r.host),
        };
        let label = r.item_label.as_deref().unwrap_or_default();
        let item = r
            .item_label
            .as_ref()
            .map(|l| format!(" => (item={l})"))
            .unwrap_or_default();
        let always = r.result.get("_ansible_verbose_always").is_some();
        let verbose = self.verbosity > 0 || always;
        let shown = |v: &Json| {
            if always {
                dump_indented(&abridged(v, r.is_item))
            } else {
                dump(&abridged(v, r.is_item))
            }
        };
        match r.status {
            Status::Ok | Status::Changed => {
                let word = if r.status == Status::Changed {
                    "changed"
                } else {
                    "ok"
                };
                if r.is_item {
                    if verbose {
                        format!("{word}: {host}{item} => {}", shown(&r.result))
                    } else {
                        format!("{word}: {host}{item}")
                    }
                } else if r.result.get("results").is_some() && !verbose {
                    // The loop summary line is not printed for ok/changed.
                    String::new()
                } else if verbose {
                    format!("{word}: {host} => {}", shown(&r.result))
                } else {
                    format!("{word}: {host}")
                }
            }
            // From -v on, ansible-playbook shows why (`skip_reason`...).
            Status::Skipped => {
                // ansible-playbook's skipped item line ends in a space
                // (`(item=1) `), and its verbose form has two before `=>`.
                if r.is_item {
                    if verbose {
                        format!(
                            "skipping: {host}{item}  => {}",
                            dump(&abridged(&r.result, true))
                        )
                    } else {
                        format!("skipping: {host}{item} ")
                    }
                } else if verbose {
                    let mut shown = abridged(&r.result, false);
                    if let Json::Object(m) = &mut shown {
                        if r.result.get("results").is_some() && !m.contains_key("msg") {
                            m.insert("msg".into(), Json::String("All items skipped".into()));
                        }
                    }
                    format!("skipping: {host} => {}", dump(&shown))
                } else {
                    format!("skipping: {host}")
                }
            }
            Status::Failed => {
                // A loop shows its failed items; its summary shows only
                // whether the failure was ignored.
                if r.is_item {
                    format!("failed: {host} (item={label}) => {}", shown(&r.result))
                } else if r.result.get("results").is_some() {
                    if r.ignored {
                        "...ignoring".to_string()
                    } else {
                        String::new()
                    }
                } else {
                    let mut s = format!("fatal: {host}: FAILED! => {}", shown(&r.result));
                    if r.ignored {
                        s.push_str("\n...ignoring");
                    }
                    s
                }
            }
            Status::Unreachable => format!(
                "fatal: {host}: UNREACHABLE! => {}",
                dump(&abridged(&r.result, false))
            ),
        }
    }
}

impl Sink for HumanSink {
    fn emit(&self, event: &Event) {
        let mut out = self.out.lock();
        let text = match event {
            // From -vv on, ansible-playbook names the playbook first.
            Event::PlaybookStart { path } => {
                if self.verbosity < 2 {
                    return;
                }
                let base = std::path::Path::new(path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.clone());
                banner(&format!("PLAYBOOK: {base}"))
            }
            Event::PlayStart { name, .. } => banner(&format!("PLAY [{name}]")),
            Event::NoHostsMatched { .. } => "skipping: no hosts matched".to_string(),
            Event::TaskStart { name, handler, .. } => {
                self.errored.lock().clear();
                if *handler {
                    banner(&format!("RUNNING HANDLER [{name}]"))
                } else {
                    banner(&format!("TASK [{name}]"))
                }
            }
            Event::HostResult(r) => {
                let mut s = String::new();
                for d in &r.diff {
                    s.push_str(d);
                    if !d.ends_with('\n') {
                        s.push('\n');
                    }
                }
                let line = self.host_line(r);
                if line.is_empty() && s.is_empty() {
                    return;
                }
                if let Some(error) = &r.error {
                    if self.errored.lock().insert(r.host.clone()) {
                        s.push_str(error);
                        s.push_str("\n\n");
                    }
                }
                s.push_str(&line);
                s
            }
            Event::Warning { message } => format!("[WARNING]: {message}"),
            Event::Error { message } => format!("[ERROR]: {message}"),
            Event::Included { file, hosts } => {
                format!("included: {} for {}", file, hosts.join(", "))
            }
            Event::NoMoreHosts => banner("NO MORE HOSTS LEFT"),
            Event::Verbose { level, message } => {
                if self.verbosity < *level {
                    return;
                }
                message.clone()
            }
            Event::Recap { stats } => {
                let mut s = banner("PLAY RECAP");
                // ansible-playbook lists hosts sorted by name.
                let mut sorted: Vec<&(String, HostStats)> = stats.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for (h, st) in sorted {
                    s.push('\n');
                    s.push_str(&recap_line(h, st));
                }
                s.push('\n');
                s
            }
        };
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}
