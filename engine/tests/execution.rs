//! End-to-end executor tests: each directory under `fixtures/execution/` is a
//! playbook run against real sshd test hosts (`keel-testhosts`), then checked
//! through its recap, exit code, event trace, and the hosts' real state.
//!
//! A case directory holds `site.yml` (plus roles/templates/files) and
//! `expect.yml`:
//!
//! ```yaml
//! topology: hosts        # or `jump` (j1 + t1, t1 only reachable via j1)
//! base_inventory: true   # write the harness's [testhosts] inventory
//! host_vars: ""          # appended to every generated host line
//! setup:                 # commands run on hosts (via nsenter) before run 1
//!   - {host: all, sh: "mkdir -p /srv"}
//! snapshot: true         # insta-snapshot run 1's human output
//! runs:
//!   - options: {check: false, diff: false, tags: [], skip_tags: [],
//!               force_handlers: false, extra_vars: {}, become_password: ~}
//!     exit: 0
//!     recap: {h1: {ok: 2, changed: 1}, ...}   # every host; missing counters are 0
//!     trace: [...]           # exact event trace (see `trace`)
//!     events_contain: [...]  # substrings of the JSON events
//!     events_lack: [...]
//!     state:                 # checked after this run
//!       - {host: h1, sh: "stat -c %a /srv/x", stdout: "644"}
//!       - {host: all, sh: "test -e /tmp/pwned", rc: 1}
//! ```
//!
//! Text in `extra_inventory.ini`, `host_vars`, `setup`, state commands and
//! expected stdout, and `events_contain` may use placeholders:
//! `@ADDR_<host>@`, `@PORT_<host>@`, `@KEY@`, `@KNOWN_HOSTS@`,
//! `@WRONG_KNOWN_HOSTS_<host>@`, `@FP_<host>@` (host key fingerprint),
//! `@REFUSED_ADDR@`, `@REFUSED_PORT@`, `@CONTROLLER_HOSTNAME@`.
//!
//! Expected recaps were checked against ansible-core run on the same hosts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use keel::executor::{run_playbook, RunOptions, TagSelection};
use keel::inventory::Inventory;
use keel::output::{Event, HostStats, HumanSink, MemorySink, Sink, Status};
use keel::playbook::{load_playbook, ResolveOptions};
use keel::vars::VarMap;
use keel_testhosts::TestHosts;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    description: String,
    #[serde(default)]
    topology: Option<String>,
    #[serde(default = "yes")]
    base_inventory: bool,
    #[serde(default)]
    host_vars: String,
    #[serde(default)]
    setup: Vec<StateCheck>,
    #[serde(default)]
    snapshot: bool,
    runs: Vec<RunExpect>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default)]
    check: bool,
    #[serde(default)]
    diff: bool,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    skip_tags: Vec<String>,
    #[serde(default)]
    force_handlers: bool,
    #[serde(default)]
    extra_vars: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    become_password: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunExpect {
    #[serde(default)]
    options: Options,
    exit: i32,
    recap: BTreeMap<String, Counters>,
    #[serde(default)]
    trace: Option<Vec<String>>,
    #[serde(default)]
    events_contain: Vec<String>,
    #[serde(default)]
    events_lack: Vec<String>,
    #[serde(default)]
    state: Vec<StateCheck>,
}

#[derive(Deserialize, Default, Debug, PartialEq, Eq, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
struct Counters {
    ok: u32,
    changed: u32,
    unreachable: u32,
    failed: u32,
    skipped: u32,
    rescued: u32,
    ignored: u32,
}

impl From<HostStats> for Counters {
    fn from(s: HostStats) -> Counters {
        Counters {
            ok: s.ok,
            changed: s.changed,
            unreachable: s.unreachable,
            failed: s.failed,
            skipped: s.skipped,
            rescued: s.rescued,
            ignored: s.ignored,
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct StateCheck {
    /// A host name, or `all`.
    host: String,
    sh: String,
    #[serde(default)]
    stdout: Option<String>,
    /// Expected exit status (default 0).
    #[serde(default)]
    rc: Option<i32>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/execution")
}

fn repo_roles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles")
}

fn load_expect(dir: &Path) -> Expect {
    let path = dir.join("expect.yml");
    let node = keel::yaml::load_one(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json = serde_json::to_value(node.to_value()).expect("expect.yml as JSON");
    serde_json::from_value(json).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Placeholder values for one set of test hosts.
fn placeholders(th: &TestHosts) -> Vec<(String, String)> {
    let mut p = vec![
        ("@KEY@".to_string(), th.client_key.display().to_string()),
        (
            "@KNOWN_HOSTS@".to_string(),
            th.known_hosts.display().to_string(),
        ),
        ("@REFUSED_ADDR@".to_string(), th.refused_addr().0),
        (
            "@REFUSED_PORT@".to_string(),
            th.refused_addr().1.to_string(),
        ),
        (
            "@CONTROLLER_HOSTNAME@".to_string(),
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim()
                .to_string(),
        ),
    ];
    for (i, h) in th.hosts.iter().enumerate() {
        p.push((format!("@ADDR_{}@", h.name), h.addr.clone()));
        p.push((format!("@PORT_{}@", h.name), h.port.to_string()));
        let wrong = th.wrong_known_hosts(i).expect("wrong known_hosts");
        p.push((
            format!("@WRONG_KNOWN_HOSTS_{}@", h.name),
            wrong.display().to_string(),
        ));
        p.push((format!("@FP_{}@", h.name), fingerprint(th, &h.host_key)));
    }
    p
}

/// The `SHA256:...` fingerprint of a public key line, by ssh-keygen.
fn fingerprint(th: &TestHosts, key: &str) -> String {
    let f = th.write_file("fp.pub", &format!("{key}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l output")
        .to_string()
}

fn fill(text: &str, ph: &[(String, String)]) -> String {
    let mut s = text.to_string();
    for (k, v) in ph {
        s = s.replace(k, v);
    }
    assert!(
        !s.contains("@ADDR_") && !s.contains("@PORT_"),
        "unknown placeholder in:\n{s}"
    );
    s
}

fn host_index(th: &TestHosts, name: &str) -> usize {
    th.hosts
        .iter()
        .position(|h| h.name == name)
        .unwrap_or_else(|| panic!("no test host named {name}"))
}

fn check_state(
    th: &TestHosts,
    checks: &[StateCheck],
    ph: &[(String, String)],
    what: &str,
) -> Vec<String> {
    let mut errors = Vec::new();
    for c in checks {
        let targets: Vec<usize> = if c.host == "all" {
            (0..th.hosts.len()).collect()
        } else {
            vec![host_index(th, &c.host)]
        };
        let cmd = fill(&c.sh, ph);
        for i in targets {
            let out = th.exec(i, &cmd);
            let rc = out.status.code().unwrap_or(-1);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let want_rc = c.rc.unwrap_or(0);
            if rc != want_rc {
                errors.push(format!(
                    "{what}: `{cmd}` on {}: exit {rc}, expected {want_rc}; stdout {stdout:?}, stderr {:?}",
                    th.hosts[i].name,
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
            if let Some(want) = &c.stdout {
                let want = fill(want, ph);
                if stdout.trim_end_matches('\n') != want.trim_end_matches('\n') {
                    errors.push(format!(
                        "{what}: `{cmd}` on {}: stdout {stdout:?}, expected {want:?}",
                        th.hosts[i].name
                    ));
                }
            }
        }
    }
    errors
}

fn run_options(o: &Options) -> RunOptions {
    let mut extra = VarMap::new();
    for (k, v) in &o.extra_vars {
        extra.insert(
            k.clone(),
            minijinja::Value::from(minijinja::value::Serde(v)),
        );
    }
    RunOptions {
        forks: 10,
        check: o.check,
        diff: o.diff,
        tags: TagSelection::new(o.tags.clone(), o.skip_tags.clone()),
        limit: o.limit.clone(),
        extra_vars: extra,
        force_handlers: o.force_handlers,
        become_password: o.become_password.clone(),
        roles_path: vec![repo_roles()],
        ..Default::default()
    }
}

/// Host results of one task arrive in completion order; sort each run of
/// consecutive results by host (stable, so loop items keep their order).
fn ordered(events: &[Event]) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    let mut pending: Vec<Event> = Vec::new();
    let flush = |pending: &mut Vec<Event>, out: &mut Vec<Event>| {
        pending.sort_by(|a, b| match (a, b) {
            (Event::HostResult(x), Event::HostResult(y)) => x.host.cmp(&y.host),
            _ => std::cmp::Ordering::Equal,
        });
        out.append(pending);
    };
    for e in events {
        if matches!(e, Event::HostResult(_)) {
            pending.push(e.clone());
        } else {
            flush(&mut pending, &mut out);
            out.push(e.clone());
        }
    }
    flush(&mut pending, &mut out);
    out
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Changed => "changed",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::Unreachable => "unreachable",
    }
}

/// A compact, order-stable trace: one line per task with its host results.
fn trace(events: &[Event]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for e in ordered(events) {
        match e {
            Event::PlayStart { name, .. } => lines.push(format!("PLAY {name}")),
            Event::TaskStart { name, handler, .. } => lines.push(format!(
                "{} {name}:",
                if handler { "HANDLER" } else { "TASK" }
            )),
            Event::HostResult(r) => {
                let mut word = status_word(r.status).to_string();
                if r.ignored {
                    word.push_str("(ignored)");
                }
                let who = match &r.item_label {
                    Some(l) => format!("{}[{l}]", r.host),
                    None => r.host.clone(),
                };
                if let Some(last) = lines.last_mut() {
                    last.push_str(&format!(" {who}={word}"));
                }
            }
            Event::Included { file, hosts } => {
                let base = Path::new(&file)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or(file);
                lines.push(format!("INCLUDED {base} for {}", hosts.join(",")));
            }
            Event::NoMoreHosts => lines.push("NO MORE HOSTS".into()),
            Event::NoHostsMatched { .. } => lines.push("NO HOSTS MATCHED".into()),
            _ => {}
        }
    }
    lines
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The human output of a run, with host-specific bits replaced.
fn human(events: &[Event], case_dir: &Path, th: &TestHosts) -> String {
    let buf = Buffer::default();
    let sink = HumanSink::new(Box::new(buf.clone()), 0);
    for e in ordered(events) {
        sink.emit(&e);
    }
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let mut text = text
        .replace(&case_dir.display().to_string(), "<case>")
        .replace(&th.dir.display().to_string(), "<hostsdir>");
    for (pat, rep) in [
        (r"127\.77\.\d+\.", "127.77.<slot>."),
        (r"SHA256:[A-Za-z0-9+/=]+", "SHA256:<fingerprint>"),
        (r#""(delta|start|end)": "[^"]*""#, "\"$1\": \"<time>\""),
    ] {
        text = regex::Regex::new(pat)
            .unwrap()
            .replace_all(&text, rep)
            .into_owned();
    }
    text
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run_case(case: &str) {
    let dir = fixtures_dir().join(case);
    let expect = load_expect(&dir);
    let th = match expect.topology.as_deref() {
        None | Some("hosts") => TestHosts::start(3),
        Some("jump") => TestHosts::start_jump_chain(1),
        Some(other) => panic!("{case}: unknown topology {other}"),
    }
    .expect("starting test hosts");
    let ph = placeholders(&th);

    let mut inv_text = String::new();
    if expect.base_inventory {
        inv_text.push_str(&th.inventory_ini(&fill(&expect.host_vars, &ph)));
    }
    if let Ok(extra) = std::fs::read_to_string(dir.join("extra_inventory.ini")) {
        inv_text.push('\n');
        inv_text.push_str(&fill(&extra, &ph));
    }
    let inv_path = th.write_file("inventory.ini", &inv_text).unwrap();

    let setup_errors = check_state(&th, &expect.setup, &ph, "setup");
    assert!(
        setup_errors.is_empty(),
        "{case}: {}",
        setup_errors.join("\n")
    );

    let mut errors: Vec<String> = Vec::new();
    let playbook = load_playbook(
        &dir.join("site.yml"),
        &ResolveOptions {
            roles_path: vec![repo_roles()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    let rt = rt();
    for (n, want) in expect.runs.iter().enumerate() {
        let what = format!("{case} run {}", n + 1);
        let inventory = Inventory::load(&[inv_path.display().to_string()]).expect("inventory");
        let mem = Arc::new(MemorySink::default());
        let summary = rt.block_on(run_playbook(
            &playbook,
            inventory,
            run_options(&want.options),
            mem.clone(),
        ));
        let events = mem.events.lock().clone();
        let tr = trace(&events);
        let json: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let context = || {
            format!(
                "trace:\n  {}\nhuman output:\n{}",
                tr.join("\n  "),
                human(&events, &dir, &th)
            )
        };

        let got: BTreeMap<String, Counters> = summary
            .stats
            .iter()
            .map(|(h, s)| (h.clone(), Counters::from(*s)))
            .collect();
        if got != want.recap {
            errors.push(format!(
                "{what}: recap\n  got:      {got:?}\n  expected: {:?}\n{}",
                want.recap,
                context()
            ));
        }
        if summary.exit_code() != want.exit {
            errors.push(format!(
                "{what}: exit code {} (expected {}); errors {:?}",
                summary.exit_code(),
                want.exit,
                summary.errors
            ));
        }
        if let Some(t) = &want.trace {
            if &tr != t {
                errors.push(format!(
                    "{what}: trace\n  got:\n    {}\n  expected:\n    {}",
                    tr.join("\n    "),
                    t.join("\n    ")
                ));
            }
        }
        for s in &want.events_contain {
            let s = fill(s, &ph);
            if !json.iter().any(|j| j.contains(&s)) {
                errors.push(format!("{what}: no event contains {s:?}\n{}", context()));
            }
        }
        for s in &want.events_lack {
            if let Some(j) = json.iter().find(|j| j.contains(s.as_str())) {
                errors.push(format!("{what}: an event contains {s:?}: {j}"));
            }
        }
        errors.extend(check_state(&th, &want.state, &ph, &what));
        if n == 0 && expect.snapshot && errors.is_empty() {
            let text = human(&events, &dir, &th);
            insta::with_settings!({ description => expect.description.clone(), omit_expression => true }, {
                insta::assert_snapshot!(case.to_string(), text);
            });
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

cases!(
    any_errors_fatal,
    become_sudo,
    become_wrong_password,
    block_rescue,
    check_diff,
    delegation,
    end_host,
    handlers,
    handlers_forced,
    includes,
    jump_host,
    loops,
    mwsclient,
    quoting,
    serial_batches,
    tags,
    unreachable_hostkey,
    until_conditions,
);

/// Every fixture directory has a test (and every test a directory).
#[test]
fn every_fixture_is_listed() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("expect.yml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed);
}
