//! `async`/`poll` and `async_status` on a real sshd test host, through the
//! `keel` binary. What is asserted was first run under ansible-playbook
//! 2.19.14 (local connection): the registered shapes (`ansible_job_id`,
//! `started`, `finished`, `results_file`, the module's own result merged in
//! once done), "Timeout exceeded" with `child_pid` for a job past its limit,
//! "could not find job", and "This action (copy) does not support async.".
//! On top, what only a real host shows: the job file in
//! `~/.ansible_async`, a job that outlives the run, and a killed one.

use std::path::Path;
use std::process::{Command, Output};

use keel_testhosts::TestHosts;

fn play(dir: &Path, th: &TestHosts, playbook: &str) -> (Output, String) {
    std::fs::write(dir.join("hosts"), th.inventory_ini("")).unwrap();
    std::fs::write(dir.join("play.yml"), playbook).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(dir)
        .env("ANSIBLE_CONFIG", dir.join("none.cfg"))
        .env("HOME", dir)
        .args(["play", "-i", "hosts", "play.yml"])
        .output()
        .expect("running keel");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    (out, text)
}

fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `poll` > 0: the task waits, shows ansible-playbook's poll lines, and
/// registers the command's result with the job's fields; the job file is
/// gone afterwards.
#[test]
fn polled_command_registers_the_merged_result() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    let (out, text) = play(
        d.path(),
        &th,
        "- hosts: all
  gather_facts: false
  tasks:
    - shell: sleep 2; echo done; echo oops >&2
      async: 10
      poll: 1
      register: a
    - assert:
        that:
          - a.finished and a.started
          - a.stdout == 'done' and a.stderr == 'oops' and a.rc == 0
          - a.ansible_job_id is match('j[0-9]{12}[.][0-9]+$')
          - a.results_file == '/root/.ansible_async/' ~ a.ansible_job_id
          - a.changed and a.delta is match('0:00:0[2-3]')
    - copy: {content: '{{ a.ansible_job_id }}', dest: /tmp/jid}
",
    );
    assert!(out.status.success());
    assert!(text.contains("ASYNC POLL on h1: jid=j"), "{text}");
    assert!(text.contains("ASYNC OK on h1: jid=j"), "{text}");
    let jid = th.sh(0, "cat /tmp/jid");
    assert!(
        th.exec(0, &format!("test -e /root/.ansible_async/{jid}"))
            .status
            .code()
            == Some(1),
        "the job file is cleaned up after polling"
    );
}

/// `poll: 0`: the task returns at once, the job keeps running after the run
/// ends, and `async_status` (retried with `until`) reports it done, with its
/// output merged; its job file holds the module's JSON.
#[test]
fn fire_and_forget_outlives_the_run() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    let (out, _) = play(
        d.path(),
        &th,
        "- hosts: all
  gather_facts: false
  tasks:
    - shell: sleep 3; echo later > /tmp/bg-done; echo finished
      async: 30
      poll: 0
      register: job
    - assert:
        that:
          - job.started and not job.finished and job.changed
          - job.results_file == '/root/.ansible_async/' ~ job.ansible_job_id
    - command: test -e /tmp/bg-done
      register: early
      failed_when: early.rc == 0
    - copy: {content: '{{ job.ansible_job_id }}', dest: /tmp/jid}
",
    );
    assert!(
        out.status.success(),
        "the task returned before the job ended"
    );
    // Keel has exited; the job goes on on the host.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(th.sh(0, "cat /tmp/bg-done").trim(), "later");
    let jid = th.sh(0, "cat /tmp/jid");
    let (out, text) = play(
        d.path(),
        &th,
        &format!(
            "- hosts: all
  gather_facts: false
  tasks:
    - async_status: jid={jid}
      register: s
      until: s.finished
      retries: 5
      delay: 1
    - assert:
        that:
          - s.finished and s.started
          - s.stdout == 'finished' and s.stdout_lines == ['finished'] and s.rc == 0
          - s.cmd == 'sleep 3; echo later > /tmp/bg-done; echo finished'
    - async_status: jid={jid} mode=cleanup
      register: c
    - assert:
        that: c.erased == '/root/.ansible_async/{jid}'
    - async_status: jid={jid}
      register: gone
      ignore_errors: true
    - assert:
        that:
          - gone.failed and gone.msg == 'could not find job'
"
        ),
    );
    assert!(out.status.success(), "{text}");
    assert!(th
        .exec(0, &format!("test -e /root/.ansible_async/{jid}"))
        .status
        .code()
        .is_some_and(|c| c != 0));
}

/// A job past its `async` limit is killed (its process group), and its job
/// file says "Timeout exceeded" with the killed child's pid; a polled task
/// fails with that result.
#[test]
fn the_time_limit_kills_the_job() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    let (out, text) = play(
        d.path(),
        &th,
        "- hosts: all
  gather_facts: false
  tasks:
    - shell: sleep 37.5; touch /tmp/not-killed
      async: 2
      poll: 0
      register: bg
    - command: sleep 3
      async: 1
      poll: 2
      register: polled
      ignore_errors: true
    - assert:
        that:
          - polled.failed and polled.msg == 'Timeout exceeded' and polled.finished
    - pause: {seconds: 3}
    - async_status: jid={{ bg.ansible_job_id }}
      register: s
      ignore_errors: true
    - assert:
        that:
          - s.failed and s.finished and s.msg == 'Timeout exceeded'
          - s.child_pid is number
    - copy: {content: '{{ s.child_pid }}', dest: /tmp/child}
",
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ASYNC FAILED on h1"), "{text}");
    // Dead: gone, or a zombie its (killed) parent left for init to reap.
    let child = th.sh(0, "cat /tmp/child");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.trim())).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next();
    assert!(
        matches!(state, None | Some("Z") | Some("X")),
        "the job's process {child} still runs: {stat}"
    );
    assert_eq!(th.exec(0, "test -e /tmp/not-killed").status.code(), Some(1));
    // The whole process group went: no `sleep 37.5` is left anywhere.
    let sleepers = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0037.5\x00")
        })
        .count();
    assert_eq!(sleepers, 0, "the job's own children survived the kill");
}

/// `async` on a loop gives each item its own job; `async_status` over the
/// registered results waits for each. A module that is not one command
/// (`file`) runs as a controller-side job with the same job file protocol,
/// and an action ansible-core cannot run in the background is refused.
#[test]
fn loops_other_modules_and_refusals() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    let (out, text) = play(
        d.path(),
        &th,
        "- hosts: all
  gather_facts: false
  tasks:
    - shell: sleep 1; echo {{ item }}
      loop: [a, b, c]
      async: 20
      poll: 0
      register: jobs
    - async_status: jid={{ item.ansible_job_id }}
      loop: '{{ jobs.results }}'
      register: done
      until: done.finished
      retries: 10
      delay: 1
    - assert:
        that: done.results | map(attribute='stdout') | list == ['a', 'b', 'c']
    - file: {path: /tmp/async-file, state: touch}
      async: 10
      poll: 1
      register: f
    - assert:
        that: f.finished and f.started and f.changed
    - file: {path: /tmp/async-dir, state: directory}
      async: 10
      poll: 0
      register: fj
    - async_status: jid={{ fj.ansible_job_id }}
      register: fs
      until: fs.finished
      retries: 5
      delay: 1
    - assert:
        that: fs.changed and fs.state == 'directory'
    - copy: {content: x, dest: /tmp/x}
      async: 10
      poll: 1
      register: refused
      ignore_errors: true
    - assert:
        that: refused.msg == 'This action (copy) does not support async.'
",
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[ERROR]: Task failed: This action (copy) does not support async."));
    assert_eq!(th.exec(0, "test -d /tmp/async-dir").status.code(), Some(0));
    assert_eq!(th.exec(0, "test -f /tmp/async-file").status.code(), Some(0));
    assert_eq!(th.exec(0, "test -e /tmp/x").status.code(), Some(1));
}
