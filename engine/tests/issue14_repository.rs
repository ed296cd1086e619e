//! Issue 14's "done when": an admin's repository, built here, runs
//! unchanged. It has an `ansible.cfg` (inventory, roles and collections
//! paths, vault password file), vaulted `group_vars`, and a
//! `requirements.yml` with one role and one collection from local git
//! repositories; its play uses the role, a module of the collection by its
//! fully qualified name, `async` with `poll: 0` and `async_status`, and
//! `pip` into a virtualenv from a local wheel directory. It is installed with
//! `keel galaxy install` and run with `keel play` against a real sshd test
//! host: the first run converges, the second reports changed=0 — and
//! ansible-playbook 2.19.14, where it can be built, does the same with
//! Keel's install.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/reference.rs"]
mod reference;

use cli::{run, text, write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_testhosts::TestHosts;

fn git_repo(dir: &Path, tag: &str) {
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", tag],
        &["tag", tag],
    ] {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    }
}

fn keel(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(dir);
    reference::scrub(&mut c, dir);
    c
}

/// The role and the collection, each in its own git repository.
fn upstream(root: &Path) -> (String, String) {
    let role = root.join("upstream/motd");
    write(
        &role.join("meta/main.yml"),
        "galaxy_info:\n  author: t\n  description: a message of the day\ndependencies: []\n",
    );
    write(
        &role.join("defaults/main.yml"),
        "motd_path: /tmp/repo14/motd\n",
    );
    write(
        &role.join("tasks/main.yml"),
        "- name: write the message of the day\n  ansible.builtin.copy:\n    content: \"{{ motd_text }} ({{ vault_secret_word | length }} secret letters)\\n\"\n    dest: \"{{ motd_path }}\"\n    mode: \"0644\"\n",
    );
    git_repo(&role, "v1.0");

    let coll = root.join("upstream/acme-tools");
    write(
        &coll.join("galaxy.yml"),
        "namespace: acme\nname: tools\nversion: 1.0.0\nreadme: README.md\nauthors: [t]\n",
    );
    write(&coll.join("README.md"), "# acme.tools\n");
    write(
        &coll.join("plugins/modules/hello.py"),
        r#"#!/usr/bin/python
from ansible.module_utils.basic import AnsibleModule

def main():
    m = AnsibleModule(argument_spec=dict(name=dict(required=True), path=dict(required=True)),
                      supports_check_mode=True)
    text = 'hello ' + m.params['name'] + '\n'
    try:
        with open(m.params['path']) as f:
            current = f.read()
    except IOError:
        current = None
    if current != text and not m.check_mode:
        with open(m.params['path'], 'w') as f:
            f.write(text)
    m.exit_json(changed=current != text)

if __name__ == '__main__':
    main()
"#,
    );
    git_repo(&coll, "1.0.0");
    (
        format!("git+file://{}", role.display()),
        format!("git+file://{}", coll.display()),
    )
}

const SITE: &str = r#"
- hosts: web
  gather_facts: false
  environment:
    PIP_NO_INDEX: "1"
    PIP_FIND_LINKS: /tmp/repo14/wheels
  roles:
    - motd
  tasks:
    - name: a module of the collection, by its fully qualified name
      acme.tools.hello:
        name: "{{ motd_text }}"
        path: /tmp/repo14/hello

    - name: a job in the background
      ansible.builtin.shell: sleep 1 && echo done > /tmp/repo14/async_done
      args:
        creates: /tmp/repo14/async_done
      async: 30
      poll: 0
      register: job
      # Starting a job reports changed every time under ansible-core too;
      # async_status reports what the job did.
      changed_when: false

    - name: wait for the job
      ansible.builtin.async_status:
        jid: "{{ job.ansible_job_id }}"
      register: waited
      until: waited.finished
      retries: 30
      delay: 1

    - name: a package into a virtualenv
      ansible.builtin.pip:
        name: keelpkg==1.0
        virtualenv: /tmp/repo14/venv
        virtualenv_command: /usr/bin/python3 -m venv
"#;

/// The repository as an admin keeps it.
fn repository(root: &Path, th: &TestHosts, role_url: &str, coll_url: &str) -> PathBuf {
    let r = root.join("repo");
    write(
        &r.join("ansible.cfg"),
        "[defaults]\ninventory = ./hosts\nroles_path = ./roles\ncollections_path = ./collections\nvault_password_file = ./vault-pass\nhost_key_checking = True\nretry_files_enabled = False\n",
    );
    let h = &th.hosts[0];
    write(
        &r.join("hosts"),
        &format!(
            "[web]\n{} ansible_host={} ansible_port={} ansible_user=root \
             ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            th.client_key.display(),
            th.known_hosts.display()
        ),
    );
    write(&r.join("vault-pass"), "correct horse\n");
    write(&r.join("group_vars/web/main.yml"), "motd_text: welcome\n");
    write(
        &r.join("group_vars/web/vault.yml"),
        "vault_secret_word: s3cret\n",
    );
    write(
        &r.join("requirements.yml"),
        &format!(
            "roles:\n  - src: {role_url}\n    name: motd\n    version: v1.0\ncollections:\n  - name: {coll_url}\n    type: git\n    version: 1.0.0\n"
        ),
    );
    write(&r.join("site.yml"), SITE);
    let out = run(keel(&r).args(["vault", "encrypt", "group_vars/web/vault.yml"]));
    assert!(out.status.success());
    let vaulted = std::fs::read_to_string(r.join("group_vars/web/vault.yml")).unwrap();
    assert!(
        vaulted.starts_with("$ANSIBLE_VAULT;1.1;AES256"),
        "{vaulted}"
    );
    r
}

/// Wheels on the host, so pip needs no index.
fn wheels(th: &TestHosts) {
    th.sh(
        0,
        r#"rm -rf /tmp/repo14 && mkdir -p /tmp/repo14/wheels && /usr/bin/python3 - <<'PY'
import zipfile
name, version = "keelpkg", "1.0"
di = f"{name}-{version}.dist-info"
files = {
    f"{name}.py": f"VERSION = {version!r}\n",
    f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: keel-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
files[f"{di}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{di}/RECORD,,\n"
with zipfile.ZipFile(f"/tmp/repo14/wheels/{name}-{version}-py3-none-any.whl", "w") as z:
    for p, body in files.items():
        z.writestr(p, body)
PY"#,
    );
}

fn recap(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .skip(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn an_admins_repository_installs_with_keel_galaxy_and_converges_under_keel_play() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let th = TestHosts::start(1).expect("starting a test host");
    let (role_url, coll_url) = upstream(tmp.path());
    let repo = repository(tmp.path(), &th, &role_url, &coll_url);

    let out = run(keel(&repo).args(["galaxy", "install", "-r", "requirements.yml"]));
    assert!(out.status.success());
    assert!(repo.join("roles/motd/meta/.galaxy_install_info").is_file());
    assert!(repo
        .join("collections/ansible_collections/acme/tools/plugins/modules/hello.py")
        .is_file());

    let reference = reference::reference_bin();
    let play = || {
        let mut c = keel(&repo);
        c.args(["play", "site.yml"]);
        if let Some(bin) = &reference {
            c.env("KEEL_ANSIBLE_PYTHON", bin.join("python"));
        }
        run(&mut c)
    };
    wheels(&th);
    let first = play();
    assert!(first.status.success());
    assert_eq!(
        recap(&text(&first.stdout)),
        "ok=5 changed=4 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0"
    );
    assert!(
        !text(&first.stdout).contains("s3cret"),
        "a vaulted value stays out of the output"
    );
    let state = || {
        th.sh(
            0,
            "cat /tmp/repo14/motd /tmp/repo14/hello /tmp/repo14/async_done; \
             /tmp/repo14/venv/bin/python -c 'import keelpkg; print(keelpkg.VERSION)'",
        )
    };
    assert_eq!(
        state(),
        "welcome (6 secret letters)\nhello welcome\ndone\n1.0\n"
    );
    let second = play();
    assert!(second.status.success());
    let second_recap = recap(&text(&second.stdout));
    assert_eq!(
        second_recap,
        "ok=5 changed=0 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0"
    );

    // The reference, on the same repository as Keel installed it.
    if let Some(bin) = &reference {
        wheels(&th);
        for expect in ["changed=4", "changed=0"] {
            let a = run(reference::tool(bin, "ansible-playbook", &repo).arg("site.yml"));
            assert!(a.status.success());
            assert!(
                recap(&text(&a.stdout)).contains(expect),
                "{}",
                text(&a.stdout)
            );
        }
        assert_eq!(
            state(),
            "welcome (6 secret letters)\nhello welcome\ndone\n1.0\n"
        );
    }
}
