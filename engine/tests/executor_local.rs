//! Executor behaviour that needs no remote host: several inventory hosts on
//! the local transport. Covers `no_log`, the free strategy, `throttle`,
//! `max_fail_percentage`, `--start-at-task`, `meta: refresh_inventory` and a
//! run stopped from outside between two tasks (`RunOptions::stop`).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use keel::executor::{run_playbook, RunOptions, RunSummary};
use keel::inventory::Inventory;
use keel::output::{Event, HumanSink, JsonSink, MemorySink, Sink, Status};
use keel::playbook::{load_playbook, ResolveOptions};

struct Run {
    summary: RunSummary,
    events: Vec<Event>,
    json: String,
    human: String,
}

/// A `Write` that appends into shared memory.
#[derive(Clone, Default)]
struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Tee(Vec<Arc<dyn Sink>>);
impl Sink for Tee {
    fn emit(&self, e: &Event) {
        for s in &self.0 {
            s.emit(e);
        }
    }
}

async fn run(dir: &Path, hosts: usize, playbook: &str, opts: RunOptions) -> Run {
    let inv_path = dir.join("hosts.ini");
    let mut ini = String::from("[all]\n");
    for i in 1..=hosts {
        ini.push_str(&format!("h{i} ansible_connection=local\n"));
    }
    fs::write(&inv_path, ini).unwrap();
    fs::write(dir.join("site.yml"), playbook).unwrap();
    let pb = load_playbook(&dir.join("site.yml"), &ResolveOptions::default()).unwrap();
    let sources = vec![inv_path.display().to_string()];
    let inv = Inventory::load(&sources).unwrap();
    let mem = Arc::new(MemorySink::default());
    let json = Buf::default();
    let human = Buf::default();
    let sink: Arc<dyn Sink> = Arc::new(Tee(vec![
        mem.clone(),
        Arc::new(JsonSink::new(Box::new(json.clone()))),
        Arc::new(HumanSink::new(Box::new(human.clone()), 1)),
    ]));
    let opts = RunOptions {
        inventory_sources: sources,
        ..opts
    };
    let summary = run_playbook(&pb, inv, opts, sink).await;
    let events = mem.events.lock().clone();
    let json = String::from_utf8(json.0.lock().unwrap().clone()).unwrap();
    let human = String::from_utf8(human.0.lock().unwrap().clone()).unwrap();
    Run {
        summary,
        events,
        json,
        human,
    }
}

fn stats<'a>(r: &'a Run, host: &str) -> &'a keel::output::HostStats {
    &r.summary.stats.iter().find(|(h, _)| h == host).unwrap().1
}

/// `set_fact` with `cacheable: true` goes to the fact cache, so a later run
/// sees it; a plain `set_fact` does not (ansible-core's set_fact target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacheable_set_fact_reaches_the_next_run() {
    let d = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let opts = || RunOptions {
        fact_cache: keel::executor::FactCache::JsonFile {
            dir: cache.path().to_path_buf(),
            timeout: std::time::Duration::from_secs(3600),
            prefix: "prefix_".into(),
        },
        ..RunOptions::default()
    };
    let first = r#"
- hosts: all
  gather_facts: false
  tasks:
    - set_fact:
        ansible_foobar: from_cacheable
        cacheable: true
    - set_fact:
        not_cached: only_this_run
"#;
    let r = run(d.path(), 1, first, opts()).await;
    assert_eq!(stats(&r, "h1").failed, 0, "{}", r.human);
    let second = r#"
- hosts: all
  gather_facts: false
  tasks:
    - assert:
        that:
          - ansible_foobar == 'from_cacheable'
          - not_cached is undefined
"#;
    let r = run(d.path(), 1, second, opts()).await;
    assert_eq!(stats(&r, "h1").failed, 0, "{}", r.human);
    let files: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.len() == 1 && files[0].starts_with("prefix_"),
        "{files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_hides_values_in_every_output() {
    let d = tempfile::tempdir().unwrap();
    let pb = r#"
- hosts: all
  gather_facts: false
  vars:
    secret: "s3cr3t-value"
  tasks:
    - name: uses the secret
      command: "echo {{ secret }}"
      no_log: true
      register: out
    - name: loop with the secret
      debug:
        msg: "{{ item }}"
      loop: ["{{ secret }}"]
      no_log: true
    - name: failing with the secret
      command: "sh -c 'echo {{ secret }} >&2; exit 3'"
      no_log: true
      ignore_errors: true
"#;
    let r = run(d.path(), 1, pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 0);
    assert!(
        !r.json.contains("s3cr3t"),
        "secret in JSON events: {}",
        r.json
    );
    assert!(
        !r.human.contains("s3cr3t"),
        "secret in human output: {}",
        r.human
    );
    assert!(r.json.contains("no_log: true"), "censored marker missing");
    assert_eq!(stats(&r, "h1").ignored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_strategy_lets_hosts_run_ahead() {
    let d = tempfile::tempdir().unwrap();
    // h1 sleeps in its first task; under `free`, h2 finishes both tasks
    // before h1 finishes its first.
    let pb = r#"
- hosts: all
  gather_facts: false
  strategy: free
  tasks:
    - name: first
      command: "sleep {{ 1 if inventory_hostname == 'h1' else 0 }}"
    - name: second
      command: "true"
"#;
    let r = run(d.path(), 2, pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 0);
    let order: Vec<String> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::HostResult(h) => Some(h.host.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec!["h2", "h2", "h1", "h1"],
        "free strategy order: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_limits_hosts_running_a_task() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("running");
    fs::create_dir_all(&marker).unwrap();
    // Each host records how many others are inside the task with it.
    let pb = format!(
        r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: throttled
      shell: "touch {m}/{{{{ inventory_hostname }}}}; sleep 0.3; ls {m} | wc -l; rm {m}/{{{{ inventory_hostname }}}}"
      throttle: 1
      register: seen
"#,
        m = marker.display()
    );
    let r = run(d.path(), 3, &pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 0);
    for e in &r.events {
        if let Event::HostResult(h) = e {
            let n = h
                .result
                .get("stdout")
                .and_then(|s| s.as_str())
                .unwrap_or("");
            assert_eq!(
                n.trim(),
                "1",
                "{} saw {n} hosts in the throttled task",
                h.host
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fail_percentage_stops_the_play() {
    let d = tempfile::tempdir().unwrap();
    let pb = r#"
- hosts: all
  gather_facts: false
  max_fail_percentage: 30
  tasks:
    - name: half fail
      command: "{{ 'false' if inventory_hostname in ['h1', 'h2'] else 'true' }}"
    - name: never reached
      command: "true"
"#;
    let r = run(d.path(), 4, pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 2);
    let reached = r
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskStart { name, .. } if name == "never reached"));
    assert!(!reached, "the play went on past max_fail_percentage");
    assert_eq!(stats(&r, "h3").ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_task_skips_earlier_tasks() {
    let d = tempfile::tempdir().unwrap();
    let pb = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: one
      command: "true"
    - name: two
      command: "true"
    - name: three
      command: "true"
"#;
    let opts = RunOptions {
        start_at_task: Some("two".into()),
        ..Default::default()
    };
    let r = run(d.path(), 1, pb, opts).await;
    let started: Vec<String> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TaskStart { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec!["two", "three"]);
}

/// A stop raised while a task runs lets that task finish on every host;
/// the next task never starts, and the summary says where the run stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signal_ends_the_run_between_two_tasks() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display();
    let pb = format!(
        r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: one
      command: "true"
    - name: two
      shell: touch {dir}/{{{{ inventory_hostname }}}}-started && sleep 1 && touch {dir}/{{{{ inventory_hostname }}}}-two
    - name: three
      command: touch {dir}/three
"#
    );
    let stop = keel::executor::StopSignal::default();
    let watcher = {
        let stop = stop.clone();
        let started = d.path().join("h1-started");
        tokio::spawn(async move {
            while !started.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            stop.stop();
        })
    };
    let opts = RunOptions {
        stop,
        ..Default::default()
    };
    let r = run(d.path(), 2, &pb, opts).await;
    watcher.await.unwrap();
    let started: Vec<String> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TaskStart { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec!["one", "two"]);
    assert!(d.path().join("h1-two").exists() && d.path().join("h2-two").exists());
    assert!(!d.path().join("three").exists());
    assert_eq!(
        r.summary.errors,
        vec!["the run was stopped before task \"three\"".to_string()]
    );
    assert_eq!(r.summary.exit_code(), 1);
    assert_eq!(stats(&r, "h1").changed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_inventory_brings_new_hosts_to_later_plays() {
    let d = tempfile::tempdir().unwrap();
    let inv = d.path().join("hosts.ini");
    let pb = format!(
        r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: add a host to the inventory file
      shell: "printf 'h9 ansible_connection=local\n' >> {inv}"
    - meta: refresh_inventory
- hosts: all
  gather_facts: false
  tasks:
    - name: everyone
      command: "true"
"#,
        inv = inv.display()
    );
    let r = run(d.path(), 1, &pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 0);
    let h9 = r.events.iter().any(
        |e| matches!(e, Event::HostResult(h) if h.host == "h9" && h.status == Status::Changed),
    );
    assert!(h9, "h9 did not run in the second play");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn included_role_handlers_run_when_notified() {
    let d = tempfile::tempdir().unwrap();
    let role = d.path().join("roles/web");
    fs::create_dir_all(role.join("tasks")).unwrap();
    fs::create_dir_all(role.join("handlers")).unwrap();
    let out = d.path().join("handler-ran");
    fs::write(
        role.join("tasks/main.yml"),
        "- name: change something\n  command: \"true\"\n  notify: restart web\n",
    )
    .unwrap();
    fs::write(
        role.join("handlers/main.yml"),
        format!(
            "- name: restart web\n  command: \"touch {}\"\n",
            out.display()
        ),
    )
    .unwrap();
    let pb = r#"
- hosts: all
  gather_facts: false
  tasks:
    - include_role:
        name: web
"#;
    let r = run(d.path(), 1, pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 0, "{}", r.human);
    assert!(
        out.exists(),
        "the included role's handler did not run:\n{}",
        r.human
    );
    assert!(
        r.human.contains("RUNNING HANDLER [web : restart web]"),
        "{}",
        r.human
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_facts_go_to_the_delegated_host() {
    let d = tempfile::tempdir().unwrap();
    let pb = r#"
- hosts: all
  gather_facts: false
  tasks:
    - name: gather h2's facts from h1
      setup:
      delegate_to: h2
      delegate_facts: true
      when: inventory_hostname == 'h1'
    - name: who has facts
      debug:
        msg: "{{ inventory_hostname }}={{ ansible_facts.hostname is defined }}"
"#;
    let r = run(d.path(), 2, pb, RunOptions::default()).await;
    assert_eq!(r.summary.exit_code(), 0, "{}", r.human);
    let msgs: Vec<String> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::HostResult(h) => h
                .result
                .get("msg")
                .and_then(|m| m.as_str())
                .map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(msgs.contains(&"h1=False".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"h2=True".to_string()), "{msgs:?}");
}

/// One case of `fixtures/exec_local/`: a playbook checked against what
/// ansible-core 2.19.14 did with it (its recap, its exit code, lines of its
/// output). The playbooks assert their own registered values, so a passing
/// recap also means the values matched the reference's.
///
/// `expect.yml`: `recap` (host → counters, missing ones 0), optional `exit`
/// (default 0 or 2 from the recap), `extra_vars`, `verbosity` (human output,
/// default 1), `debug` (`ANSIBLE_DEBUG`), `human_contains` and `human_lacks`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseExpect {
    recap: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>>,
    #[serde(default)]
    exit: Option<i32>,
    #[serde(default)]
    extra_vars: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    verbosity: Option<u8>,
    #[serde(default)]
    human_contains: Vec<String>,
    #[serde(default)]
    human_lacks: Vec<String>,
    /// `ANSIBLE_DEBUG` set.
    #[serde(default)]
    debug: bool,
}

async fn run_case(case: &Path) -> Result<(), String> {
    let node = keel::yaml::load_one(&case.join("expect.yml")).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(node.to_value()).map_err(|e| e.to_string())?;
    let expect: CaseExpect = serde_json::from_value(json).map_err(|e| e.to_string())?;
    let work = tempfile::tempdir().unwrap();
    copy_dir(case, work.path());
    let dir = work.path();
    let inv_path = dir.join("inventory.ini");
    if !inv_path.exists() {
        fs::write(&inv_path, "[all]\nh1 ansible_connection=local\n").unwrap();
    }
    let mut extra = keel::vars::VarMap::new();
    for (k, v) in &expect.extra_vars {
        extra.insert(
            k.clone(),
            minijinja::Value::from(minijinja::value::Serde(v.clone())),
        );
    }
    let ropts = ResolveOptions {
        extra_vars: extra.clone(),
        ..ResolveOptions::default()
    };
    let pb = load_playbook(&dir.join("site.yml"), &ropts).map_err(|e| e.to_string())?;
    let sources = vec![inv_path.display().to_string()];
    let mut inv = Inventory::load(&sources).map_err(|e| e.to_string())?;
    inv.add_vars_dir(dir).map_err(|e| e.to_string())?;
    let mem = Arc::new(MemorySink::default());
    let human = Buf::default();
    let sink: Arc<dyn Sink> = Arc::new(Tee(vec![
        mem.clone(),
        Arc::new(HumanSink::new(
            Box::new(human.clone()),
            expect.verbosity.unwrap_or(1),
        )),
    ]));
    let opts = RunOptions {
        inventory_sources: sources,
        extra_vars: extra,
        forks: 5,
        verbosity: expect.verbosity.unwrap_or(1),
        debug: expect.debug,
        ..RunOptions::default()
    };
    let summary = run_playbook(&pb, inv, opts, sink).await;
    let human = String::from_utf8(human.0.lock().unwrap().clone()).unwrap();
    let mut problems = Vec::new();
    for (host, counters) in &expect.recap {
        let Some((_, got)) = summary.stats.iter().find(|(h, _)| h == host) else {
            problems.push(format!("no recap for {host}"));
            continue;
        };
        let want = |k: &str| counters.get(k).copied().unwrap_or(0);
        let pairs = [
            ("ok", got.ok),
            ("changed", got.changed),
            ("unreachable", got.unreachable),
            ("failed", got.failed),
            ("skipped", got.skipped),
            ("rescued", got.rescued),
            ("ignored", got.ignored),
        ];
        for (k, v) in pairs {
            if want(k) != v {
                problems.push(format!("{host}: {k}={v}, expected {}", want(k)));
            }
        }
    }
    let failed_hosts = expect
        .recap
        .values()
        .any(|c| c.get("failed").copied().unwrap_or(0) > 0);
    let exit = expect.exit.unwrap_or(if failed_hosts { 2 } else { 0 });
    if summary.exit_code() != exit {
        problems.push(format!("exit {}, expected {exit}", summary.exit_code()));
    }
    for s in &expect.human_contains {
        if !human.contains(s.as_str()) {
            problems.push(format!("output lacks {s:?}"));
        }
    }
    for s in &expect.human_lacks {
        if human.contains(s.as_str()) {
            problems.push(format!("output has {s:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n--- output ---\n{human}", problems.join("\n")))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_local_cases_match_ansible_core() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exec_local");
    let mut cases: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expect.yml").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(case).await {
            failures.push(format!(
                "== {}\n{e}",
                case.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
