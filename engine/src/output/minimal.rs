//! The ad-hoc command's output (`keel ansible`), as ansible's `minimal`
//! callback prints it: one block per host and no banners or recap.
//! `host | SUCCESS => {…}` for most modules; `host | CHANGED | rc=0 >>`
//! followed by the output for the modules that return text (`command`,
//! `shell`, `raw`).
use parking_lot::Mutex;
use std::io::Write;

use serde_json::Value as Json;

use super::human::{abridged, dump_indented};
use super::{Event, HostResult, Sink, Status};

pub struct MinimalSink {
    out: Mutex<Box<dyn Write + Send>>,
    /// The module the command runs, as given to `-m`.
    module: String,
    /// The task as ansible's error blocks show it (a Python dict).
    task: String,
}

/// Modules whose result is shown as their text rather than as JSON
/// (ansible-core's `MODULE_NO_JSON`).
fn returns_text(module: &str) -> bool {
    let short = module
        .strip_prefix("ansible.builtin.")
        .or_else(|| module.strip_prefix("ansible.legacy."))
        .or_else(|| module.strip_prefix("ansible.windows."))
        .unwrap_or(module);
    matches!(
        short,
        "command" | "shell" | "raw" | "win_command" | "win_shell"
    )
}

impl MinimalSink {
    pub fn new(out: Box<dyn Write + Send>, module: &str, task: &str) -> MinimalSink {
        MinimalSink {
            out: Mutex::new(out),
            module: module.to_string(),
            task: task.to_string(),
        }
    }

    /// ansible's `[ERROR]` block before a failed or unreachable host.
    fn error_block(&self, first_line: &str) -> String {
        format!(
            "{first_line}\nOrigin: <adhoc '{}' task>\n\n{}\n\n",
            self.module, self.task
        )
    }

    /// `host | STATE | rc=N >>` and the module's stdout, stderr and msg.
    fn as_text(&self, host: &str, state: &str, r: &Json) -> String {
        let text = |k: &str| r.get(k).and_then(Json::as_str).unwrap_or_default();
        let rc = match r.get("rc") {
            Some(Json::Number(n)) => n.to_string(),
            _ => "-1".to_string(),
        };
        format!(
            "{host} | {state} | rc={rc} >>\n{}{}{}",
            text("stdout"),
            text("stderr"),
            text("msg")
        )
    }

    fn as_json(&self, host: &str, state: &str, r: &Json) -> String {
        format!("{host} | {state} => {}", dump_indented(&abridged(r, false)))
    }

    fn host_block(&self, r: &HostResult) -> String {
        let host = r.host.as_str();
        let text = returns_text(&self.module);
        match r.status {
            Status::Ok | Status::Changed => {
                let state = if r.status == Status::Changed {
                    "CHANGED"
                } else {
                    "SUCCESS"
                };
                if text && r.result.get("ansible_job_id").is_none() {
                    self.as_text(host, state, &r.result)
                } else {
                    self.as_json(host, state, &r.result)
                }
            }
            Status::Skipped => format!("{host} | SKIPPED"),
            Status::Failed => {
                let mut s = String::new();
                if let Some(first) = r.error.as_deref().and_then(|e| e.lines().next()) {
                    s.push_str(&self.error_block(first));
                }
                if text && r.result.get("module_stderr").is_none() {
                    s.push_str(&self.as_text(host, "FAILED", &r.result));
                } else {
                    s.push_str(&self.as_json(host, "FAILED!", &r.result));
                }
                s
            }
            Status::Unreachable => {
                let mut shown = r.result.clone();
                if let Json::Object(m) = &mut shown {
                    m.insert("unreachable".into(), Json::Bool(true));
                    m.entry("changed").or_insert(Json::Bool(false));
                }
                let msg = r
                    .result
                    .get("msg")
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                format!(
                    "{}{host} | UNREACHABLE! => {}",
                    self.error_block(&format!("[ERROR]: Task failed: {msg}")),
                    dump_indented(&abridged(&shown, false))
                )
            }
        }
    }
}

impl Sink for MinimalSink {
    fn emit(&self, event: &Event) {
        let text = match event {
            Event::HostResult(r) if !r.is_item => self.host_block(r),
            // Warnings go to stderr, as ansible's do.
            Event::Warning { message } => return eprintln!("[WARNING]: {message}"),
            Event::Error { message } => return eprintln!("[ERROR]: {message}"),
            Event::NoHostsMatched { .. } => {
                return eprintln!("[WARNING]: No hosts matched, nothing to do")
            }
            _ => return,
        };
        let mut out = self.out.lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Status, result: Json) -> Event {
        Event::HostResult(HostResult {
            host: "h1".into(),
            delegated_to: None,
            status,
            ignored: false,
            item_label: None,
            result,
            diff: vec![],
            is_item: false,
            error: None,
        })
    }

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn shown(module: &str, event: Event) -> String {
        let buf = Buf::default();
        MinimalSink::new(Box::new(buf.clone()), module, "{}").emit(&event);
        let out = String::from_utf8(buf.0.lock().clone()).unwrap();
        out
    }

    // Each expected text is what `ansible` 2.19.14 printed for the same result.
    #[test]
    fn results_print_as_the_minimal_callback_prints_them() {
        let ping = serde_json::json!({"changed": false, "ping": "pong", "invocation": {}});
        assert_eq!(
            shown("ping", result(Status::Ok, ping)),
            "h1 | SUCCESS => {\n    \"changed\": false,\n    \"ping\": \"pong\"\n}\n"
        );
        let cmd = serde_json::json!({"changed": true, "rc": 0, "stdout": "hi", "stderr": ""});
        assert_eq!(
            shown("command", result(Status::Changed, cmd)),
            "h1 | CHANGED | rc=0 >>\nhi\n"
        );
        let failed = serde_json::json!({"changed": true, "rc": 3, "stdout": "out\n",
            "stderr": "err", "msg": "non-zero return code", "failed": true});
        assert_eq!(
            shown("ansible.builtin.shell", result(Status::Failed, failed)),
            "h1 | FAILED | rc=3 >>\nout\nerrnon-zero return code\n"
        );
        assert_eq!(
            shown("ping", result(Status::Skipped, serde_json::json!({}))),
            "h1 | SKIPPED\n"
        );
    }
}
