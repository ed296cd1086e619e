//! Transport tests: local exec, and SSH against real sshd test hosts
//! (`keel-testhosts`).

use keel::shell::quote;
use keel::transport::{Become, BecomeMethod, Command, Connection, TransportError};
use std::time::{Duration, Instant};

fn cmd(script: &str) -> Command {
    Command {
        script: script.to_string(),
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn local_exec_rc_stdout_stderr() {
    rt().block_on(async {
        let c = Connection::local();
        let out = c
            .exec(&cmd("echo out; echo err >&2; exit 3"))
            .await
            .unwrap();
        assert_eq!(out.rc, 3);
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
    });
}

#[test]
fn local_exec_stdin_and_env() {
    rt().block_on(async {
        let c = Connection::local();
        let mut command = cmd("printf '%s|' \"$GREETING\"; cat");
        command
            .env
            .push(("GREETING".into(), "it's $(not run)".into()));
        command.stdin = Some(b"line1\nline2\x00bin".to_vec());
        let out = c.exec(&command).await.unwrap();
        assert_eq!(out.rc, 0);
        assert_eq!(out.stdout, b"it's $(not run)|line1\nline2\x00bin");
    });
}

#[test]
fn local_exec_timeout_kills_the_script() {
    rt().block_on(async {
        let c = Connection::local();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let mut command = cmd(&format!(
            "sleep 3; touch {}",
            quote(marker.to_str().unwrap())
        ));
        command.timeout = Some(Duration::from_millis(300));
        let start = Instant::now();
        let err = c.exec(&command).await.unwrap_err();
        assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "the timed-out script kept running");
    });
}

#[test]
fn quote_round_trips_hostile_strings_locally() {
    rt().block_on(async {
        let c = Connection::local();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let m = marker.to_str().unwrap();
        for s in hostile_strings(m) {
            let out = c
                .exec(&cmd(&format!("printf '%s' {}", quote(&s))))
                .await
                .unwrap();
            assert_eq!(out.stdout_str(), s);
        }
        assert!(!marker.exists(), "a quoted string was executed");
    });
}

fn hostile_strings(marker: &str) -> Vec<String> {
    vec![
        format!("'; touch {marker}; '"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("a\ntouch {marker}\n"),
        format!("\"; touch {marker}; \""),
        format!("x'\"'\"'$(touch {marker})"),
        "".to_string(),
        "plain-word".to_string(),
        "tab\there * ? [a] ~ & | > <".to_string(),
    ]
}

#[allow(dead_code)]
fn sudo_as(user: &str, pw: Option<&str>) -> Become {
    Become {
        method: BecomeMethod::Sudo,
        user: user.into(),
        password: pw.map(str::to_string),
        flags: None,
        exe: None,
    }
}

// ---------------------------------------------------------------- SSH ----

use keel::transport::{ConnectSpec, ConnectionPool, SshConnection};
use keel::vars::VarMap;
use keel_testhosts::{TestHosts, KEELTEST_PASSWORD, KEY_PASSPHRASE, ROOT_PASSWORD};
use minijinja::Value;

/// Connection vars for host `idx`, as an inventory would give them.
fn vars_for(th: &TestHosts, idx: usize, extra: &[(&str, &str)]) -> VarMap {
    let h = &th.hosts[idx];
    let mut v = VarMap::new();
    v.insert("ansible_host".into(), Value::from(h.addr.clone()));
    v.insert("ansible_port".into(), Value::from(h.port));
    v.insert("ansible_user".into(), Value::from("root"));
    v.insert(
        "ansible_ssh_private_key_file".into(),
        Value::from(th.client_key.display().to_string()),
    );
    v.insert(
        "ansible_ssh_common_args".into(),
        Value::from(format!(
            "-o UserKnownHostsFile={}",
            th.known_hosts.display()
        )),
    );
    for (k, val) in extra {
        v.insert(k.to_string(), Value::from(val.to_string()));
    }
    v
}

fn spec_for(th: &TestHosts, idx: usize, extra: &[(&str, &str)]) -> ConnectSpec {
    ConnectSpec::from_vars(&th.hosts[idx].name, &vars_for(th, idx, extra)).unwrap()
}

async fn connect(
    th: &TestHosts,
    idx: usize,
    extra: &[(&str, &str)],
) -> Result<Connection, TransportError> {
    let spec = spec_for(th, idx, extra);
    SshConnection::connect(&th.hosts[idx].name, &spec)
        .await
        .map(|c| Connection::Ssh(Box::new(c)))
}

fn fingerprint_of(host_key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.pub");
    std::fs::write(&p, format!("{host_key}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_exec_on_three_hosts_sees_separate_machines() {
    let th = TestHosts::start(3).unwrap();
    for i in 0..3 {
        let c = connect(&th, i, &[]).await.unwrap();
        let mut command = cmd("hostname; echo \"$MSG\" > /etc/keel-marker; cat >> /etc/keel-marker; echo oops >&2; exit 4");
        command.env.push(("MSG".into(), format!("hello {i}")));
        command.stdin = Some(format!("stdin {i}\n").into_bytes());
        let out = c.exec(&command).await.unwrap();
        assert_eq!(out.rc, 4);
        assert_eq!(out.stdout_str().trim(), th.hosts[i].name);
        assert_eq!(out.stderr_str(), "oops\n");
        c.close().await;
    }
    for i in 0..3 {
        assert_eq!(
            th.sh(i, "cat /etc/keel-marker"),
            format!("hello {i}\nstdin {i}\n")
        );
    }
    assert!(
        !std::path::Path::new("/etc/keel-marker").exists(),
        "a host wrote to the real machine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_execs_respect_the_channel_cap() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(&th, 0, &[]).await.unwrap();
    th.sh(0, "mkdir -p /tmp/running");
    // Each command registers itself, records how many run at once, and leaves.
    let futs = (0..50).map(|i| {
        let c = &c;
        async move {
            let script = format!(
                "touch /tmp/running/{i}; ls /tmp/running | wc -l > /tmp/running-count-{i}; \
                 sleep 0.2; rm /tmp/running/{i}; echo {i}"
            );
            c.exec(&cmd(&script)).await
        }
    });
    let results = futures::future::join_all(futs).await;
    for (i, r) in results.into_iter().enumerate() {
        let out = r.unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!((out.rc, out.stdout_str()), (0, format!("{i}\n")));
    }
    let counts = th.sh(0, "cat /tmp/running-count-*");
    let max: usize = counts
        .lines()
        .map(|l| l.trim().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert!(max <= 8, "{max} commands ran at once, the cap is 8");
    assert!(max >= 2, "commands did not run concurrently (max {max})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sequential_execs_leak_no_channel() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(&th, 0, &[]).await.unwrap();
    for i in 0..200 {
        let out = c
            .exec(&cmd(&format!("echo {i}")))
            .await
            .unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!(out.stdout_str(), format!("{i}\n"));
    }
    // Timed-out commands must give their channel back too.
    for _ in 0..12 {
        let mut slow = cmd("sleep 5");
        slow.timeout = Some(Duration::from_millis(100));
        assert!(matches!(
            c.exec(&slow).await,
            Err(TransportError::Timeout { .. })
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = c.exec(&cmd("echo still")).await.unwrap();
    assert_eq!(out.stdout_str(), "still\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_quoting_executes_nothing_on_the_host() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(&th, 0, &[]).await.unwrap();
    for s in hostile_strings("/tmp/pwned") {
        let out = c
            .exec(&cmd(&format!("printf '%s' {}", quote(&s))))
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), s);
        // And through env and sudo wrapping.
        let mut e = cmd("printf '%s' \"$V\"");
        e.env.push(("V".into(), s.clone()));
        e.become_ = Some(sudo_as("root", None));
        let out = c.exec(&e).await.unwrap();
        assert_eq!(out.stdout_str(), s);
    }
    assert_eq!(
        th.exec(0, "test -e /tmp/pwned").status.code(),
        Some(1),
        "a quoted string ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_key_is_refused_with_its_fingerprint() {
    let th = TestHosts::start(1).unwrap();
    let empty = th.write_file("empty_known_hosts", "").unwrap();
    let args = format!("-o UserKnownHostsFile={}", empty.display());
    let spec = spec_for(&th, 0, &[("ansible_ssh_common_args", &args)]);
    let err = SshConnection::connect("h1", &spec)
        .await
        .err()
        .expect("unknown key accepted");
    let TransportError::HostKey { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        reason.contains(&fingerprint_of(&th.hosts[0].host_key)),
        "{reason}"
    );
    assert!(reason.contains(&empty.display().to_string()), "{reason}");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
}

/// `StrictHostKeyChecking=no` is read as `accept-new` (with a warning that
/// says so): the unknown key is learned, a changed one is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_host_key_checking_no_learns_only_new_keys() {
    let th = TestHosts::start(1).unwrap();
    let empty = th.write_file("empty_known_hosts", "").unwrap();
    let args = format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=no",
        empty.display()
    );
    let spec = spec_for(&th, 0, &[("ansible_ssh_common_args", &args)]);
    assert_eq!(spec.warnings.len(), 1, "StrictHostKeyChecking=no must warn");
    assert!(
        spec.warnings[0].contains("accept-new"),
        "{:?}",
        spec.warnings
    );
    let c = SshConnection::connect("h1", &spec).await.unwrap();
    let notices = c.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains(&fingerprint_of(&th.hosts[0].host_key)));
    assert!(c.take_notices().is_empty(), "told once");
    c.close().await;
    let learned = std::fs::read_to_string(&empty).unwrap();
    assert_eq!(learned.lines().count(), 1, "{learned}");
    let wrong = th.wrong_known_hosts(0).unwrap();
    let args = format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=no",
        wrong.display()
    );
    let spec = spec_for(&th, 0, &[("ansible_ssh_common_args", &args)]);
    let err = SshConnection::connect("h1", &spec).await.err().unwrap();
    assert!(err.to_string().contains("CHANGED"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused() {
    let th = TestHosts::start(1).unwrap();
    let wrong = th.wrong_known_hosts(0).unwrap();
    let args = format!("-o UserKnownHostsFile={}", wrong.display());
    let err = connect(&th, 0, &[("ansible_ssh_common_args", &args)])
        .await
        .err()
        .unwrap();
    let TransportError::HostKey { reason, .. } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("CHANGED"), "{reason}");
    assert!(
        reason.contains(&format!("{}:1", wrong.display())),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entry_is_accepted() {
    let th = TestHosts::start(1).unwrap();
    let hashed = th.dir.join("known_hosts.hashed");
    std::fs::copy(&th.known_hosts, &hashed).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(st.status.success());
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let kh = hashed.display().to_string();
    let c = connect(&th, 0, &[("keel_known_hosts", &kh)]).await.unwrap();
    assert_eq!(c.exec(&cmd("hostname")).await.unwrap().stdout_str(), "h1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_types_and_passphrases() {
    let th = TestHosts::start(1).unwrap();
    let k = &th.keys;
    for key in [&k.rsa, &k.ecdsa] {
        let key = key.display().to_string();
        let c = connect(&th, 0, &[("ansible_ssh_private_key_file", &key)])
            .await
            .unwrap();
        assert_eq!(c.exec(&cmd("id -un")).await.unwrap().stdout_str(), "root\n");
    }
    let key = k.ed25519_passphrase.display().to_string();
    let c = connect(
        &th,
        0,
        &[
            ("ansible_ssh_private_key_file", &key),
            ("ansible_ssh_private_key_passphrase", KEY_PASSPHRASE),
        ],
    )
    .await
    .unwrap();
    assert_eq!(c.exec(&cmd("echo ok")).await.unwrap().stdout_str(), "ok\n");
    let err = connect(&th, 0, &[("ansible_ssh_private_key_file", &key)])
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TransportError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_and_sudo_with_password() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(
        &th,
        0,
        &[
            ("ansible_user", "keeltest"),
            ("ansible_ssh_private_key_file", "/nonexistent"),
            ("ansible_password", KEELTEST_PASSWORD),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        c.exec(&cmd("id -un")).await.unwrap().stdout_str(),
        "keeltest\n"
    );
    let mut s = cmd("id -un; cat; touch /root/made-by-sudo");
    s.stdin = Some(b"payload\n".to_vec());
    s.become_ = Some(sudo_as("root", Some(KEELTEST_PASSWORD)));
    let out = c.exec(&s).await.unwrap();
    assert_eq!(
        (out.rc, out.stdout_str()),
        (0, "root\npayload\n".to_string()),
        "{}",
        out.stderr_str()
    );
    th.sh(0, "test -e /root/made-by-sudo");
    // Without a password sudo must not hang waiting for one.
    let mut np = cmd("id -un");
    np.become_ = Some(sudo_as("root", None));
    np.timeout = Some(Duration::from_secs(10));
    // (credentials may be cached from the call above: both outcomes are fine,
    // but it must finish)
    let _ = c.exec(&np).await.unwrap();
    let mut bad = cmd("id -un");
    bad.become_ = Some(sudo_as("root", Some("wrong")));
    let err = c
        .exec(&bad)
        .await
        .expect_err("wrong sudo password accepted");
    assert!(matches!(err, TransportError::Become { .. }), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password leaked into the error: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_password_never_reaches_stdin_with_nopasswd() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(&th, 0, &[("ansible_user", "keelnopw")])
        .await
        .unwrap();
    let mut s = cmd("id -un; cat");
    s.stdin = Some(b"only this\n".to_vec());
    s.become_ = Some(sudo_as("root", Some("some-password")));
    let out = c.exec(&s).await.unwrap();
    assert_eq!(
        out.stdout_str(),
        "root\nonly this\n",
        "{}",
        out.stderr_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn su_with_password_over_a_pty() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(&th, 0, &[("ansible_user", "keeltest")])
        .await
        .unwrap();
    let su = |pw: &str| Become {
        method: BecomeMethod::Su,
        user: "root".into(),
        password: Some(pw.into()),
        flags: None,
        exe: None,
    };
    let mut s = cmd("id -u; echo done > /root/made-by-su");
    s.become_ = Some(su(ROOT_PASSWORD));
    s.timeout = Some(Duration::from_secs(15));
    let out = c.exec(&s).await.unwrap();
    assert_eq!((out.rc, out.stdout_str().trim()), (0, "0"), "{out:?}");
    assert_eq!(th.sh(0, "cat /root/made-by-su"), "done\n");
    s.become_ = Some(su("wrong"));
    let err = c.exec(&s).await.expect_err("wrong su password accepted");
    assert!(matches!(err, TransportError::Become { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_hosts_single_and_two_hops() {
    let th = TestHosts::start_jump_chain(2).unwrap();
    // The inner hosts cannot be reached directly.
    let direct = connect(&th, 1, &[("ansible_timeout", "2")]).await;
    assert!(direct.is_err(), "t1 was reachable without the jump host");
    for idx in [1, 2] {
        let hops: Vec<String> = th.hosts[idx]
            .jump
            .iter()
            .map(|(a, p)| format!("root@{a}:{p}"))
            .collect();
        let c = connect(&th, idx, &[("keel_jump_host", &hops.join(","))])
            .await
            .unwrap();
        let out = c.exec(&cmd("hostname")).await.unwrap();
        assert_eq!(out.stdout_str().trim(), th.hosts[idx].name);
        c.close().await;
    }
    // The two-hop connection really went through t1: its sshd saw a login.
    assert!(
        th.log_text(1).contains("Accepted publickey"),
        "{}",
        th.log_text(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_to_unresponsive_host_is_fast() {
    let th = TestHosts::start(1).unwrap();
    for (addr, port) in [th.silent_addr(), th.refused_addr()] {
        let mut v = vars_for(&th, 0, &[("ansible_timeout", "1")]);
        v.insert("ansible_host".into(), Value::from(addr.clone()));
        v.insert("ansible_port".into(), Value::from(port));
        let spec = ConnectSpec::from_vars("dead", &v).unwrap();
        let start = Instant::now();
        let err = SshConnection::connect("dead", &spec).await.err().unwrap();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{addr}: took {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_shares_one_connection_and_keeps_failures() {
    let th = TestHosts::start(1).unwrap();
    let pool = ConnectionPool::new();
    let spec = spec_for(&th, 0, &[]);
    let (a, b) = tokio::join!(pool.get("h1", &spec), pool.get("h1", &spec));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let mut dead = spec.clone();
    dead.port = th.refused_addr().1;
    dead.address = th.refused_addr().0;
    assert!(pool.get("dead", &dead).await.is_err());
    // Cached: even a now-valid spec does not re-dial within the run.
    assert!(pool.get("dead", &spec).await.is_err());
    pool.invalidate("dead").await;
    assert!(pool.get("dead", &spec).await.is_ok());
    let local = ConnectSpec::from_vars(
        "l",
        &[("ansible_connection".to_string(), Value::from("local"))]
            .into_iter()
            .collect(),
    )
    .unwrap();
    assert!(pool.get("l", &local).await.unwrap().is_local());
    pool.close_all().await;
}

/// Commands share one long-lived shell per connection: a command that exits,
/// fails to parse, changes directory or sets variables must not disturb the
/// next one, and stdin passed inline must arrive byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_shell_isolates_commands() {
    let th = TestHosts::start(1).unwrap();
    let c = connect(&th, 0, &[]).await.unwrap();
    let out = c
        .exec(&cmd("cd /tmp; FOO=bar; echo partial; exit 3"))
        .await
        .unwrap();
    assert_eq!((out.rc, out.stdout_str()), (3, "partial\n".to_string()));
    let out = c.exec(&cmd("echo \"[$FOO]\"; pwd")).await.unwrap();
    let text = out.stdout_str();
    assert_eq!(
        text.lines().next(),
        Some("[]"),
        "a variable leaked into the next command"
    );
    assert_ne!(
        text.lines().nth(1),
        Some("/tmp"),
        "cd leaked into the next command"
    );
    // A script that does not parse reports an error, and the shell survives.
    let out = c.exec(&cmd("if then 'unbalanced")).await.unwrap();
    assert_ne!(out.rc, 0);
    let out = c.exec(&cmd("echo alive")).await.unwrap();
    assert_eq!((out.rc, out.stdout_str()), (0, "alive\n".to_string()));
    // Output with no trailing newline, and stdin with quotes and markers.
    let out = c.exec(&cmd("printf 'no newline'")).await.unwrap();
    assert_eq!(out.stdout_str(), "no newline");
    let payload = "it's \"quoted\" $(touch /tmp/pwned) `x` \u{1e}fake 0\u{1e}\n%s %d\n";
    let mut s = cmd("cat");
    s.stdin = Some(payload.as_bytes().to_vec());
    let out = c.exec(&s).await.unwrap();
    assert_eq!(out.stdout_str(), payload);
    assert_eq!(
        th.sh(0, "test -e /tmp/pwned && echo yes || echo no"),
        "no\n"
    );
    let out = c.exec(&cmd("echo err >&2; echo out")).await.unwrap();
    assert_eq!(
        (out.stdout_str(), out.stderr_str()),
        ("out\n".to_string(), "err\n".to_string())
    );
}

/// With no usable key file, the key held by a real ssh-agent logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_agent_key_logs_in() {
    let th = TestHosts::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) is installed");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Without the key in the agent, login must fail: the test can fail.
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let no_key = [("ansible_ssh_private_key_file", "/nonexistent")];
    assert!(
        connect(&th, 0, &no_key).await.is_err(),
        "logged in with an empty agent"
    );
    let added = std::process::Command::new("ssh-add")
        .arg(&th.client_key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let c = connect(&th, 0, &no_key).await.expect("agent login");
    assert_eq!(
        c.exec(&cmd("echo via-agent")).await.unwrap().stdout_str(),
        "via-agent\n"
    );
    c.close().await;
    let _ = agent.kill();
    let _ = agent.wait();
}

/// An OpenSSH client configuration in the test's run directory, and the
/// variables of a host that names only `ansible_host` and `-F` (everything
/// else comes from the configuration).
fn config_vars(th: &TestHosts, conf: &str, extra: &[(&str, &str)]) -> VarMap {
    let path = th.write_file("ssh_config", conf).unwrap();
    let mut v = VarMap::new();
    v.insert(
        "ansible_ssh_common_args".into(),
        Value::from(format!("-F {}", path.display())),
    );
    for (k, val) in extra {
        v.insert(k.to_string(), Value::from(val.to_string()));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_host_pattern_user_port_and_identity_file() {
    let th = TestHosts::start(1).unwrap();
    let h = &th.hosts[0];
    // Only the ECDSA key, named by the configuration, is offered: no key in
    // the inventory, and none at the default ~/.ssh/id_* places.
    let conf = format!(
        "Host keel-* !keel-other\n    HostName {}\n    Port {}\n    User keelnopw\n    \
         IdentityFile {}\n    UserKnownHostsFile {}\nHost *\n    User nobody-at-all\n",
        h.addr,
        h.port,
        th.keys.ecdsa.display(),
        th.known_hosts.display()
    );
    let run = |extra: Vec<(&'static str, &'static str)>| {
        let v = config_vars(&th, &conf, &extra);
        async move {
            let spec = ConnectSpec::from_vars("web", &v).unwrap();
            let c = SshConnection::connect("web", &spec).await?;
            let out = c.exec(&cmd("id -un; hostname")).await.unwrap();
            c.close().await;
            Ok::<_, TransportError>(out.stdout_str())
        }
    };
    let out = run(vec![("ansible_host", "keel-web")]).await.unwrap();
    assert_eq!(out, "keelnopw\nh1\n");
    // The inventory's user wins over the configuration's.
    let out = run(vec![("ansible_host", "keel-web"), ("ansible_user", "root")])
        .await
        .unwrap();
    assert_eq!(out, "root\nh1\n");
    // A negated pattern keeps the block away: no HostName, so the name
    // itself is dialled, and it does not resolve.
    let err = run(vec![
        ("ansible_host", "keel-other"),
        ("ansible_timeout", "3"),
    ])
    .await
    .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_proxy_jump_and_proxy_commands_reach_the_inner_host() {
    let th = TestHosts::start_jump_chain(1).unwrap();
    let (j, t) = (&th.hosts[0], &th.hosts[1]);
    let cfg_path = th.dir.join("ssh_config");
    let conf = format!(
        "Host jump\n    HostName {}\n    Port {}\nHost inner\n    HostName {}\n    ProxyJump jump\n\
         Host piped\n    HostName {}\n    ProxyCommand ssh -F {} -W %h:%p jump\n\
         Host *\n    User root\n    IdentityFile {}\n    UserKnownHostsFile {}\n",
        j.addr,
        j.port,
        t.addr,
        t.addr,
        cfg_path.display(),
        th.client_key.display(),
        th.known_hosts.display()
    );
    for alias in ["inner", "piped"] {
        let v = config_vars(&th, &conf, &[("ansible_host", alias)]);
        let spec = ConnectSpec::from_vars("t1", &v).unwrap();
        let c = SshConnection::connect("t1", &spec)
            .await
            .unwrap_or_else(|e| panic!("{alias}: {e}"));
        let out = c.exec(&cmd("hostname")).await.unwrap();
        assert_eq!(out.stdout_str().trim(), "t1", "{alias}");
        c.close().await;
    }
    // A ProxyCommand written in the inventory, with no configuration file.
    let mut v = vars_for(&th, 1, &[]);
    v.insert(
        "ansible_ssh_common_args".into(),
        Value::from(format!(
            "-F none -o UserKnownHostsFile={} -o ProxyCommand=\"ssh -F {} -W %h:%p jump\"",
            th.known_hosts.display(),
            cfg_path.display()
        )),
    );
    let spec = ConnectSpec::from_vars("t1", &v).unwrap();
    let c = SshConnection::connect("t1", &spec).await.unwrap();
    assert_eq!(
        c.exec(&cmd("hostname")).await.unwrap().stdout_str().trim(),
        "t1"
    );
    c.close().await;
    // A ProxyCommand that fails says why, with what the command printed.
    let mut v = vars_for(&th, 1, &[("ansible_timeout", "5")]);
    v.insert(
        "ansible_ssh_common_args".into(),
        Value::from("-F none -o ProxyCommand='sh -c \"echo no route to %h >&2; exit 3\"'"),
    );
    let spec = ConnectSpec::from_vars("t1", &v).unwrap();
    let err = SshConnection::connect("t1", &spec)
        .await
        .err()
        .expect("a failing ProxyCommand connected");
    assert!(
        err.to_string().contains(&format!("no route to {}", t.addr)),
        "{err}"
    );
}
