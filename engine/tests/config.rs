//! `ansible.cfg`, the `ANSIBLE_*` environment and the connection flags,
//! through the `keel` binary: where the file is found, what each setting
//! does on a real sshd test host, which source wins (flag > environment >
//! file > default), `keel config dump --only-changed` next to the reference
//! `ansible-config dump --only-changed`, and `host_key_checking = False`
//! read as OpenSSH's `accept-new`.

#[path = "common/reference.rs"]
mod reference;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use keel_testhosts::TestHosts;

fn keel(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(dir);
    reference::scrub(&mut c, dir);
    c
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("starting a command");
    eprintln!(
        "$ {cmd:?}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A private scratch directory (a world-writable one would be refused).
fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

const RICH_CFG: &str = "\
[defaults]
inventory = ./hosts, /srv/other
roles_path = ./roles:/srv/roles
collections_path = ./collections
forks = 7
remote_user = deploy
private_key_file = ~/.ssh/id_test
timeout = 33
gathering = explicit
fact_caching = jsonfile
fact_caching_connection = /tmp/facts
fact_caching_timeout = 600
vault_password_file = ./vault-pw
vault_identity_list = dev@./dev-pw, prod@prompt
retry_files_enabled = False
host_key_checking = False
force_handlers = yes
stdout_callback = yaml
nocows = 1

[privilege_escalation]
become = True
become_user = admin
become_method = su
become_ask_pass = False

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s
";

/// Every line Keel prints is the reference's line for that setting, and the
/// reference prints nothing else but the settings Keel reports as ignored.
#[test]
fn dump_only_changed_matches_ansible_config() {
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    let d = workdir();
    std::fs::write(d.path().join("ansible.cfg"), RICH_CFG).unwrap();
    for env in [
        vec![],
        vec![("ANSIBLE_FORKS", "9"), ("ANSIBLE_ROLES_PATH", "/a:rel")],
    ] {
        let mut k = keel(d.path());
        k.args(["config", "dump", "--only-changed"]);
        let mut a = Command::new(bin.join("ansible-config"));
        a.args(["dump", "--only-changed"]).current_dir(d.path());
        reference::scrub(&mut a, d.path());
        for (n, v) in &env {
            k.env(n, v);
            a.env(n, v);
        }
        let (ko, ao) = (run(&mut k), run(&mut a));
        assert!(ko.status.success() && ao.status.success());
        let (ks, asx) = (text(&ko.stdout), text(&ao.stdout));
        let ignored = ["ANSIBLE_NOCOWS(", "DEFAULT_STDOUT_CALLBACK("];
        let expected: Vec<&str> = asx
            .lines()
            .filter(|l| !ignored.iter().any(|i| l.starts_with(i)))
            .collect();
        assert_eq!(ks.lines().collect::<Vec<_>>(), expected);
        // The keys Keel does not act on are named, once.
        let stderr = text(&ko.stderr);
        assert_eq!(stderr.matches("Keel ignores").count(), 1, "{stderr}");
        assert!(
            stderr.contains("[defaults] stdout_callback, [defaults] nocows"),
            "{stderr}"
        );
    }
}

#[test]
fn search_order_and_world_writable_cwd() {
    let d = workdir();
    let cwd = d.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("ansible.cfg"), "[defaults]\nforks = 11\n").unwrap();
    std::fs::create_dir_all(d.path().join("home")).unwrap();
    std::fs::write(
        d.path().join("home/.ansible.cfg"),
        "[defaults]\nforks = 12\n",
    )
    .unwrap();
    std::fs::write(d.path().join("named.cfg"), "[defaults]\nforks = 13\n").unwrap();
    let dump = |cwd: &Path, env: &[(&str, String)]| {
        let mut c = keel(cwd);
        // HOME is d/home whatever the working directory.
        c.env("HOME", d.path().join("home"));
        c.args(["config", "dump", "--only-changed"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = run(&mut c);
        assert!(o.status.success());
        (text(&o.stdout), text(&o.stderr))
    };
    let (out, _) = dump(&cwd, &[]);
    assert!(
        out.contains("DEFAULT_FORKS(") && out.contains(") = 11"),
        "{out}"
    );
    let named = d.path().join("named.cfg").display().to_string();
    let (out, _) = dump(&cwd, &[("ANSIBLE_CONFIG", named.clone())]);
    assert!(
        out.contains(&format!("DEFAULT_FORKS({named}) = 13")),
        "{out}"
    );
    // A world-writable working directory is skipped, with ansible-core's
    // warning, and the home file is next.
    std::fs::set_permissions(&cwd, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (out, err) = dump(&cwd, &[]);
    assert!(out.contains(") = 12"), "{out}");
    assert!(
        err.contains(&format!(
            "[WARNING]: Ansible is being run in a world writable directory ({}), ignoring it as an ansible.cfg source.",
            cwd.display()
        )),
        "{err}"
    );
    // ANSIBLE_CONFIG may name the refused file itself: then it is read and
    // nothing is said.
    let (out, err) = dump(&cwd, &[("ANSIBLE_CONFIG", cwd.display().to_string())]);
    assert!(out.contains(") = 11"), "{out}");
    assert!(!err.contains("world writable"), "{err}");
}

#[test]
fn a_broken_file_is_an_error_naming_it() {
    let d = workdir();
    std::fs::write(
        d.path().join("ansible.cfg"),
        "[defaults]\nforks = 3\nforks = 4\n",
    )
    .unwrap();
    let o = run(keel(d.path()).args(["config", "dump"]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!(
            "Error reading config file ({}): line 3:",
            d.path().join("ansible.cfg").display()
        )),
        "{err}"
    );
    std::fs::write(d.path().join("ansible.cfg"), "[defaults]\ntimeout = soon\n").unwrap();
    let o = run(keel(d.path()).args(["config", "dump"]));
    assert!(text(&o.stderr).contains("DEFAULT_TIMEOUT"));
}

/// The playbook the host tests run: who the task runs as, and the facts it
/// can see.
const WHOAMI: &str = "\
- hosts: all
  tasks:
    - command: id -un
      register: who
    - debug:
        msg: \"user={{ who.stdout }} facts={{ ansible_facts.hostname | default('none') }}\"
";

/// An inventory that names only the address: every other connection setting
/// has to come from the configuration or the flags.
fn bare_inventory(th: &TestHosts) -> String {
    let h = &th.hosts[0];
    format!(
        "{} ansible_host={} ansible_port={}\n",
        h.name, h.addr, h.port
    )
}

/// `inventory`, `remote_user`, `private_key_file`, `timeout`, `become*`,
/// `gathering`, `[ssh_connection] ssh_common_args` from the file reach a real
/// host; the environment beats the file, and flags beat both.
#[test]
fn file_settings_reach_a_real_host_and_flags_win() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    std::fs::write(d.path().join("hosts"), bare_inventory(&th)).unwrap();
    std::fs::write(d.path().join("play.yml"), WHOAMI).unwrap();
    std::fs::write(
        d.path().join("ansible.cfg"),
        format!(
            "[defaults]\ninventory = hosts\nremote_user = nosuchuser\nprivate_key_file = {}\n\
             timeout = 5\ngathering = explicit\nretry_files_enabled = False\n\
             [privilege_escalation]\nbecome_user = keelnopw\n\
             [ssh_connection]\nssh_common_args = -o UserKnownHostsFile={}\npipelining = True\n",
            th.client_key.display(),
            th.known_hosts.display()
        ),
    )
    .unwrap();
    // The file's user does not exist: the host is unreachable.
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stdout));
    assert!(
        text(&o.stdout).contains("nosuchuser@"),
        "the file's remote_user is used"
    );
    // The environment beats the file; `gathering = explicit` gathers nothing.
    let o = run(keel(d.path())
        .env("ANSIBLE_REMOTE_USER", "root")
        .args(["play", "play.yml"]));
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.contains("user=root facts=none"), "{out}");
    assert!(!out.contains("Gathering Facts"), "{out}");
    // Flags beat the environment; `-b` takes the file's become_user.
    let o = run(keel(d.path())
        .env("ANSIBLE_REMOTE_USER", "nosuchuser")
        .args(["play", "play.yml", "-u", "root", "-b"]));
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("user=keelnopw facts=none"));
    // ...and --become-user beats the file.
    let o = run(keel(d.path()).args([
        "play",
        "play.yml",
        "--user",
        "keelnopw",
        "--become",
        "--become-user",
        "root",
        "--become-method",
        "sudo",
    ]));
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("user=root facts=none"));
    // A variable in the inventory beats every flag, as in ansible-core.
    std::fs::write(
        d.path().join("hosts"),
        bare_inventory(&th).trim_end().to_string() + " ansible_user=keelnopw\n",
    )
    .unwrap();
    let o = run(keel(d.path()).args(["play", "play.yml", "-u", "root"]));
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("user=keelnopw"));
}

/// `--private-key`, `-T`, `--ssh-common-args` and `-c local` with no
/// configuration file at all.
#[test]
fn connection_flags_without_a_file() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    std::fs::write(d.path().join("hosts"), bare_inventory(&th)).unwrap();
    std::fs::write(
        d.path().join("play.yml"),
        WHOAMI.replace("- hosts: all\n", "- hosts: all\n  gather_facts: false\n"),
    )
    .unwrap();
    let common = format!("-o UserKnownHostsFile={}", th.known_hosts.display());
    let key = th.client_key.display().to_string();
    let o = run(keel(d.path()).args([
        "play",
        "-i",
        "hosts",
        "play.yml",
        "-u",
        "root",
        "--private-key",
        &key,
        "-T",
        "7",
        "--ssh-common-args",
        &common,
    ]));
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("user=root"));
    // Without the key the host is unreachable: the flag was what made it work.
    let o = run(keel(d.path()).args([
        "play",
        "-i",
        "hosts",
        "play.yml",
        "-u",
        "root",
        "--ssh-common-args",
        &common,
    ]));
    assert_eq!(o.status.code(), Some(4));
    // `-c local` runs on the controller, where the inventory does not say.
    let o = run(keel(d.path()).args(["play", "-i", "hosts", "play.yml", "-c", "local"]));
    assert!(o.status.success());
    let me = text(&Command::new("id").arg("-un").output().unwrap().stdout);
    assert!(text(&o.stdout).contains(&format!("user={}", me.trim())));
    // An unsupported connection type is refused before anything runs.
    let o = run(keel(d.path()).args(["play", "-i", "hosts", "play.yml", "-c", "winrm"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("winrm"));
}

/// `host_key_checking = False` learns an unknown key (with a warning, once)
/// and still refuses a changed one.
#[test]
fn host_key_checking_off_is_accept_new() {
    let th = TestHosts::start(1).unwrap();
    let d = workdir();
    let kh = d.path().join("ssh/known_hosts");
    std::fs::write(d.path().join("hosts"), bare_inventory(&th)).unwrap();
    std::fs::write(
        d.path().join("play.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - command: hostname\n",
    )
    .unwrap();
    let cfg = |checking: &str, file: &Path| {
        format!(
            "[defaults]\ninventory = hosts\nremote_user = root\nprivate_key_file = {}\n\
             host_key_checking = {checking}\n[ssh_connection]\n\
             ssh_common_args = -o UserKnownHostsFile={}\n",
            th.client_key.display(),
            file.display()
        )
    };
    // Checking on (the default): an unknown key makes the host unreachable.
    std::fs::write(d.path().join("ansible.cfg"), cfg("True", &kh)).unwrap();
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    assert_eq!(o.status.code(), Some(4));
    assert!(!kh.exists());
    // Off: the key is learned, with a warning.
    std::fs::write(d.path().join("ansible.cfg"), cfg("False", &kh)).unwrap();
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    assert!(o.status.success());
    let out = text(&o.stdout) + &text(&o.stderr);
    assert_eq!(out.matches("permanently added").count(), 1, "{out}");
    let learned = std::fs::read_to_string(&kh).unwrap();
    let h = &th.hosts[0];
    assert!(
        learned.starts_with(&format!("[{}]:{} ssh-ed25519 ", h.addr, h.port)),
        "{learned}"
    );
    assert_eq!(
        std::fs::metadata(&kh).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Known now: no warning the second time, and nothing appended.
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    assert!(o.status.success());
    assert!(!text(&o.stdout).contains("permanently added"));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), learned);
    // A changed key is refused even with checking off.
    let wrong = th.wrong_known_hosts(0).unwrap();
    let before = std::fs::read_to_string(&wrong).unwrap();
    std::fs::write(d.path().join("ansible.cfg"), cfg("False", &wrong)).unwrap();
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o.stdout).contains("REMOTE HOST KEY CHANGED"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(std::fs::read_to_string(&wrong).unwrap(), before);
    // The environment variable turns checking back on over the file.
    std::fs::remove_file(&kh).unwrap();
    std::fs::write(d.path().join("ansible.cfg"), cfg("False", &kh)).unwrap();
    let o = run(keel(d.path())
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .args(["play", "play.yml"]));
    assert_eq!(o.status.code(), Some(4));
    assert!(!kh.exists());
}

/// `gathering = smart` with a `jsonfile` fact cache: facts gathered once
/// are reused by the next run without gathering again, and the cache file is
/// one ansible-playbook reads.
#[test]
fn smart_gathering_and_jsonfile_cache() {
    let d = workdir();
    let cache = d.path().join("facts");
    std::fs::write(
        d.path().join("hosts"),
        "local1 ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
    )
    .unwrap();
    std::fs::write(d.path().join("play.yml"), WHOAMI).unwrap();
    std::fs::write(
        d.path().join("ansible.cfg"),
        format!(
            "[defaults]\ninventory = hosts\ngathering = smart\nfact_caching = jsonfile\n\
             fact_caching_connection = {}\n",
            cache.display()
        ),
    )
    .unwrap();
    let host = text(&Command::new("hostname").output().unwrap().stdout);
    let host = host.trim().split('.').next().unwrap().to_string();
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.contains("TASK [Gathering Facts]"), "{out}");
    assert!(out.contains(&format!("facts={host}")), "{out}");
    assert!(cache.join("s1_local1").exists());
    // Second run: known from the cache, so no gathering at all.
    let o = run(keel(d.path()).args(["play", "play.yml"]));
    let out = text(&o.stdout);
    assert!(!out.contains("Gathering Facts"), "{out}");
    assert!(out.contains(&format!("facts={host}")), "{out}");
    // --flush-cache empties it first.
    let o = run(keel(d.path()).args(["play", "play.yml", "--flush-cache"]));
    assert!(text(&o.stdout).contains("TASK [Gathering Facts]"));

    // The reference reads Keel's cache: with gathering off it still sees
    // the facts.
    let Some(bin) = reference::reference_bin() else {
        return;
    };
    std::fs::write(
        d.path().join("nogather.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - debug:\n        msg: \"cached={{ ansible_facts.hostname | default('none') }}\"\n",
    )
    .unwrap();
    let o = run(reference::tool(&bin, "ansible-playbook", d.path()).arg("nogather.yml"));
    assert!(o.status.success());
    assert!(text(&o.stdout).contains(&format!("cached={host}")));
}
