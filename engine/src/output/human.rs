//! ansible-playbook's default output format: banners, per-host lines, recap.
use parking_lot::Mutex;
use std::io::Write;

use serde_json::Value as Json;

use super::{Event, HostResult, HostStats, Sink, Status};

pub struct HumanSink {
    out: Mutex<Box<dyn Write + Send>>,
    verbosity: u8,
}

impl HumanSink {
    pub fn new(out: Box<dyn Write + Send>, verbosity: u8) -> HumanSink {
        HumanSink {
            out: Mutex::new(out),
            verbosity,
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
fn dump_indented(v: &Json) -> String {
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

/// Drops the keys the default callback hides from per-host output.
fn abridged(result: &Json) -> Json {
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
            "ansible_loop_var",
            "item",
        ] {
            m.remove(k);
        }
        m.retain(|k, _| !k.starts_with("_ansible"));
        // The default callback leaves out `failed` when it is false.
        if m.get("failed") == Some(&Json::Bool(false)) {
            m.remove("failed");
        }
    }
    r
}

impl HumanSink {
    fn host_line(&self, r: &HostResult) -> String {
        let host = match &r.delegated_to {
            Some(d) if d != &r.host => format!("[{} -> {}]", r.host, d),
            _ => format!("[{}]", r.host),
        };
        let item = r
            .item_label
            .as_ref()
            .map(|l| format!(" => (item={l})"))
            .unwrap_or_default();
        let always = r.result.get("_ansible_verbose_always").is_some();
        let verbose = self.verbosity > 0 || always;
        let shown = |v: &Json| {
            if always {
                dump_indented(&abridged(v))
            } else {
                dump(&abridged(v))
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
                if r.is_item {
                    if verbose {
                        format!("skipping: {host}{item} => {}", dump(&abridged(&r.result)))
                    } else {
                        format!("skipping: {host}{item}")
                    }
                } else if r.result.get("results").is_some()
                    && r.result.get("skipped_reason").is_none()
                {
                    String::new()
                } else if verbose {
                    format!("skipping: {host} => {}", dump(&abridged(&r.result)))
                } else {
                    format!("skipping: {host}")
                }
            }
            Status::Failed => {
                let mut s = if r.is_item {
                    format!("failed: {host}{item} => {}", shown(&r.result))
                } else {
                    format!("fatal: {host}: FAILED! => {}", shown(&r.result))
                };
                if r.ignored {
                    s.push_str("\n...ignoring");
                }
                s
            }
            Status::Unreachable => format!(
                "fatal: {host}: UNREACHABLE! => {}",
                dump(&abridged(&r.result))
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
                s.push_str(&line);
                s
            }
            Event::Warning { message } => format!("[WARNING]: {message}"),
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
