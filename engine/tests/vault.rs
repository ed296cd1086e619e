//! Ansible Vault through the `keel` binary, both ways with the real
//! ansible-vault: files and inline `!vault` strings made by ansible-core
//! 2.19.14 are read by `keel play`, files made by `keel vault` are read by
//! ansible-vault and ansible-playbook, a wrong password names the file, and a
//! run never shows a decrypted value unless a task prints it on purpose.
//!
//! The real tools come from the conformance runner's venv
//! (`tests/conformance/runner.py --ensure-venv`, built from the cached
//! ansible-core sdist). Where it cannot be built the tests that need it skip,
//! unless `KEEL_REQUIRE_REAL` is set, when they fail.

use std::path::Path;
use std::process::{Command, Output};

#[path = "common/reference.rs"]
mod reference;
use reference::reference_bin;

const PW: &str = "hunter2";
const PROD_PW: &str = "prod-pass";

/// A scratch directory with the two password files and a local inventory.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), format!("{PW}\n")).unwrap();
    std::fs::write(dir.path().join("prod-pw"), PROD_PW).unwrap();
    std::fs::write(dir.path().join("wrong-pw"), "not-it").unwrap();
    std::fs::create_dir(dir.path().join("group_vars")).unwrap();
    // The reference runs modules with its venv's python; Keel ignores it.
    let python = reference_python();
    std::fs::write(
        dir.path().join("hosts"),
        format!(
            "[local]\nlocalhost ansible_connection=local ansible_python_interpreter={python}\n"
        ),
    )
    .unwrap();
    dir
}

fn reference_python() -> String {
    std::env::var("KEEL_TEST_PYTHON")
        .unwrap_or_else(|_| "/var/cache/keel/conformance/venv/bin/python".to_string())
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

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn keel(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(dir).env_remove("ANSIBLE_VAULT_PASSWORD_FILE");
    c
}

fn tool(bin: &Path, name: &str, dir: &Path) -> Command {
    let mut c = Command::new(bin.join(name));
    c.current_dir(dir)
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .env("ANSIBLE_LOCAL_TEMP", dir.join(".ansible-tmp"))
        .env("ANSIBLE_HOME", dir.join(".ansible-home"));
    c
}

/// Indents a block (an `encrypt_string` result) to sit under a key.
fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// The playbook both engines run: every way a vaulted value can arrive,
/// checked by `assert`.
const CHECKS: &str = "  tasks:
    - name: every vaulted value arrived decrypted
      assert:
        that:
          - gsecret == 'g-plain-text'
          - isecret == 'inline-s3cr3t'
          - fsecret == 'f-plain-text'
          - pvar == 'play-s3cr3t'
          - isecret is vault_encrypted
          - pvar is vault_encrypted
          - gsecret is not vault_encrypted
          - \"'vars.yml' is vaulted_file\"
          - \"'hosts' is not vaulted_file\"
          - \"lookup('unvault', 'vars.yml') is search('fsecret: f-plain-text')\"
";

fn playbook(pvar_block: &str) -> String {
    format!(
        "- hosts: local\n  gather_facts: false\n  vars_files: [vars.yml]\n  vars:\n{}{CHECKS}",
        indent(pvar_block, 4)
    )
}

#[test]
fn files_made_by_ansible_vault_open_in_keel() {
    let Some(bin) = reference_bin() else { return };
    let dir = workdir();
    let d = dir.path();
    // A whole vaulted group_vars file (1.1) and vars file (1.2, labelled).
    std::fs::write(d.join("group_vars/all.yml"), "gsecret: g-plain-text\n").unwrap();
    ok(tool(&bin, "ansible-vault", d).args([
        "encrypt",
        "--vault-password-file",
        "pw",
        "group_vars/all.yml",
    ]));
    std::fs::write(d.join("vars.yml"), "fsecret: f-plain-text\n").unwrap();
    ok(tool(&bin, "ansible-vault", d).args(["encrypt", "--vault-id", "prod@prod-pw", "vars.yml"]));
    assert!(std::fs::read_to_string(d.join("vars.yml"))
        .unwrap()
        .starts_with("$ANSIBLE_VAULT;1.2;AES256;prod\n"));
    // Inline values: in group_vars (1.2) and in the play's vars (1.1).
    let inline = ok(tool(&bin, "ansible-vault", d).args([
        "encrypt_string",
        "--vault-id",
        "prod@prod-pw",
        "--name",
        "isecret",
        "inline-s3cr3t",
    ]));
    std::fs::write(d.join("group_vars/local.yml"), &inline).unwrap();
    let pvar = ok(tool(&bin, "ansible-vault", d).args([
        "encrypt_string",
        "--vault-password-file",
        "pw",
        "--name",
        "pvar",
        "play-s3cr3t",
    ]));
    std::fs::write(d.join("pb.yml"), playbook(&pvar)).unwrap();

    // The playbook is what ansible-core does with these files…
    ok(tool(&bin, "ansible-playbook", d).args([
        "-i",
        "hosts",
        "pb.yml",
        "--vault-id",
        "prod@prod-pw",
        "--vault-password-file",
        "pw",
    ]));
    // …and Keel does the same, with the ids in either order.
    let out = ok(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-id",
        "prod@prod-pw",
        "--vault-password-file",
        "pw",
    ]));
    assert!(out.contains("ok=1"), "{out}");
    ok(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "pw",
        "--vault-id",
        "prod@prod-pw",
    ]));
    // `keel vault` opens them too.
    let shown = ok(keel(d).args(["vault", "view", "--vault-id", "prod@prod-pw", "vars.yml"]));
    assert_eq!(shown, "fsecret: f-plain-text\n");
}

#[test]
fn files_made_by_keel_open_in_ansible_vault() {
    let Some(bin) = reference_bin() else { return };
    let dir = workdir();
    let d = dir.path();
    std::fs::write(d.join("group_vars/all.yml"), "gsecret: g-plain-text\n").unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "group_vars/all.yml",
    ]));
    std::fs::write(d.join("vars.yml"), "fsecret: f-plain-text\n").unwrap();
    ok(keel(d).args(["vault", "encrypt", "--vault-id", "prod@prod-pw", "vars.yml"]));
    let text = std::fs::read_to_string(d.join("vars.yml")).unwrap();
    assert!(
        text.starts_with("$ANSIBLE_VAULT;1.2;AES256;prod\n"),
        "{text}"
    );
    assert_eq!(
        ok(tool(&bin, "ansible-vault", d).args(["view", "--vault-id", "prod@prod-pw", "vars.yml"])),
        "fsecret: f-plain-text\n"
    );
    assert_eq!(
        ok(tool(&bin, "ansible-vault", d).args([
            "view",
            "--vault-password-file",
            "pw",
            "group_vars/all.yml"
        ])),
        "gsecret: g-plain-text\n"
    );
    // encrypt_string: from an argument with --name, and from stdin.
    let inline = ok(keel(d).args([
        "vault",
        "encrypt_string",
        "--vault-id",
        "prod@prod-pw",
        "--encrypt-vault-id",
        "prod",
        "--name",
        "isecret",
        "inline-s3cr3t",
    ]));
    assert!(inline.starts_with("isecret: !vault |\n          $ANSIBLE_VAULT;1.2;AES256;prod\n"));
    std::fs::write(d.join("group_vars/local.yml"), &inline).unwrap();
    let mut child = keel(d)
        .args([
            "vault",
            "encrypt_string",
            "--vault-password-file",
            "pw",
            "--stdin-name",
            "pvar",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"play-s3cr3t")
        .unwrap();
    let pvar = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(pvar.starts_with("pvar: !vault |\n"), "{pvar}");
    std::fs::write(d.join("pb.yml"), playbook(&pvar)).unwrap();
    // ansible-playbook reads all of Keel's vaults.
    ok(tool(&bin, "ansible-playbook", d).args([
        "-i",
        "hosts",
        "pb.yml",
        "--vault-id",
        "prod@prod-pw",
        "--vault-password-file",
        "pw",
    ]));
    // rekey by Keel, read by ansible-vault with the new password only.
    ok(keel(d).args([
        "vault",
        "rekey",
        "--vault-id",
        "prod@prod-pw",
        "--new-vault-password-file",
        "wrong-pw",
        "vars.yml",
    ]));
    assert_eq!(
        ok(tool(&bin, "ansible-vault", d).args([
            "view",
            "--vault-password-file",
            "wrong-pw",
            "vars.yml"
        ])),
        "fsecret: f-plain-text\n"
    );
    // decrypt by Keel of a file ansible-vault wrote.
    std::fs::write(d.join("theirs.txt"), "line 1\nline 2\n").unwrap();
    ok(tool(&bin, "ansible-vault", d).args([
        "encrypt",
        "--vault-password-file",
        "pw",
        "theirs.txt",
    ]));
    ok(keel(d).args([
        "vault",
        "decrypt",
        "--vault-password-file",
        "pw",
        "theirs.txt",
    ]));
    assert_eq!(
        std::fs::read_to_string(d.join("theirs.txt")).unwrap(),
        "line 1\nline 2\n"
    );
}

/// The message ansible-core gives when no secret opens a vault.
const NO_MATCH: &str = "Decryption failed (no vault secrets were found that could decrypt)";

#[test]
fn a_wrong_password_is_an_error_naming_the_file() {
    let dir = workdir();
    let d = dir.path();
    std::fs::write(d.join("group_vars/all.yml"), "gsecret: g-plain-text\n").unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "group_vars/all.yml",
    ]));
    std::fs::write(
        d.join("pb.yml"),
        "- hosts: local\n  gather_facts: false\n  tasks:\n    - debug: var=gsecret\n",
    )
    .unwrap();
    let out = run(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "wrong-pw",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{NO_MATCH} on ")), "{err}");
    assert!(err.contains("group_vars/all.yml"), "{err}");
    // No password at all: ansible-core's other message, the file named too.
    let out = run(keel(d).args(["play", "-i", "hosts", "pb.yml"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Attempting to decrypt but no vault secrets found on ")
            && err.contains("group_vars/all.yml"),
        "{err}"
    );
    // `keel vault view` words it as ansible-vault does: "… for <file>".
    let out = run(keel(d).args([
        "vault",
        "view",
        "--vault-password-file",
        "wrong-pw",
        "group_vars/all.yml",
    ]));
    assert!(!out.status.success());
    let ours = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        ours.contains(&format!("{NO_MATCH} for group_vars/all.yml")),
        "{ours}"
    );
    if let Some(bin) = reference_bin() {
        let theirs = run(tool(&bin, "ansible-vault", d).args([
            "view",
            "--vault-password-file",
            "wrong-pw",
            "group_vars/all.yml",
        ]));
        assert!(!theirs.status.success());
        let theirs = String::from_utf8_lossy(&theirs.stderr);
        assert!(
            theirs.contains(&format!("{NO_MATCH}. for group_vars/all.yml")),
            "{theirs}"
        );
    }
}

#[test]
fn an_inline_vault_nobody_reads_needs_no_password_and_one_used_names_its_place() {
    let dir = workdir();
    let d = dir.path();
    let inline = ok(keel(d).args([
        "vault",
        "encrypt_string",
        "--vault-password-file",
        "pw",
        "--name",
        "pvar",
        "play-s3cr3t",
    ]));
    let pb = format!(
        "- hosts: local\n  gather_facts: false\n  vars:\n{}  tasks:\n    - debug: msg=hello\n    - debug: var=pvar\n",
        indent(&inline, 4)
    );
    std::fs::write(d.join("pb.yml"), pb).unwrap();
    let out = run(keel(d).args(["play", "-i", "hosts", "pb.yml"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    // The first task ran; the second failed, pointing at the vault.
    assert!(stdout.contains("\"msg\": \"hello\""), "{stdout}");
    assert!(
        stdout.contains("Attempt to use undecryptable variable")
            && stdout.contains("no vault secrets found")
            && stdout.contains("pb.yml:4:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok=1") && stdout.contains("failed=1"),
        "{stdout}"
    );
}

#[test]
fn a_run_shows_a_vaulted_value_only_where_a_task_prints_it() {
    let dir = workdir();
    let d = dir.path();
    let secret = "inline-s3cr3t-value";
    let inline = ok(keel(d).args([
        "vault",
        "encrypt_string",
        "--vault-password-file",
        "pw",
        "--name",
        "isecret",
        secret,
    ]));
    std::fs::write(d.join("group_vars/local.yml"), &inline).unwrap();
    std::fs::write(d.join("group_vars/all.yml"), "fsecret: whole-file-s3cr3t\n").unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "group_vars/all.yml",
    ]));
    let out_file = d.join("written.txt");
    let pb = format!(
        "- hosts: local
  gather_facts: false
  tasks:
    - assert:
        that: isecret == '{secret}'
    - name: write both secrets into a file
      copy:
        content: \"user=admin password={{{{ isecret }}}} token={{{{ fsecret }}}}\\n\"
        dest: {}
    - command: 'true'
      when: isecret | length > 3
    - name: print it on purpose
      debug: var=isecret
",
        out_file.display()
    );
    std::fs::write(d.join("pb.yml"), pb).unwrap();
    let out = ok(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "pw",
        "-vvv",
        "--diff",
        "--events",
        "json",
        "--events-to",
        "events.json",
    ]));
    // The task did write the secret…
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        format!("user=admin password={secret} token=whole-file-s3cr3t\n")
    );
    // …the diff shows the file with the secrets masked…
    assert!(
        out.contains("+user=admin password=******** token=********"),
        "{out}"
    );
    // …and the only place the value appears is the debug task's result.
    let printed: Vec<&str> = out.lines().filter(|l| l.contains(secret)).collect();
    assert_eq!(printed, [format!("    \"isecret\": \"{secret}\"")], "{out}");
    assert!(!out.contains("whole-file-s3cr3t"), "{out}");
    let events = std::fs::read_to_string(d.join("events.json")).unwrap();
    let with_secret: Vec<&str> = events.lines().filter(|l| l.contains(secret)).collect();
    assert_eq!(with_secret.len(), 1, "{events}");
    assert!(with_secret[0].contains("\"host_result\"") && with_secret[0].contains("\"isecret\":"));
    assert!(!events.contains("whole-file-s3cr3t"), "{events}");
}

#[test]
fn copy_and_template_decrypt_a_vaulted_src_unless_told_not_to() {
    let dir = workdir();
    let d = dir.path();
    std::fs::write(d.join("src.txt"), "token=abc123-secret\n").unwrap();
    std::fs::write(d.join("tpl.j2"), "host={{ inventory_hostname }}\n").unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "src.txt",
        "tpl.j2",
    ]));
    let pb = format!(
        "- hosts: local
  gather_facts: false
  tasks:
    - copy: {{src: src.txt, dest: {d}/out1.txt}}
    - template: {{src: tpl.j2, dest: {d}/out2.txt}}
    - copy: {{src: src.txt, dest: {d}/out3.txt, decrypt: false}}
",
        d = d.display()
    );
    std::fs::write(d.join("pb.yml"), pb).unwrap();
    let out = ok(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "pw",
        "--diff",
    ]));
    assert_eq!(
        std::fs::read_to_string(d.join("out1.txt")).unwrap(),
        "token=abc123-secret\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("out2.txt")).unwrap(),
        "host=localhost\n"
    );
    assert_eq!(
        std::fs::read(d.join("out3.txt")).unwrap(),
        std::fs::read(d.join("src.txt")).unwrap()
    );
    // The decrypted file's lines are masked in the diff.
    assert!(!out.contains("abc123-secret"), "{out}");
    assert!(out.contains("+********"), "{out}");
    // Without the password the copy fails, naming the file.
    std::fs::remove_file(d.join("out1.txt")).unwrap();
    let failed = run(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "wrong-pw",
    ]));
    assert!(!failed.status.success());
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(
        text.contains(NO_MATCH) && text.contains("src.txt"),
        "{text}"
    );
}

#[test]
fn keel_vault_exits_and_words_errors_like_ansible_vault() {
    let dir = workdir();
    let d = dir.path();
    std::fs::write(d.join("f.txt"), "x\n").unwrap();
    // Two secrets and no --encrypt-vault-id: an options error, exit 5.
    let args = [
        "encrypt",
        "--vault-id",
        "a@pw",
        "--vault-id",
        "b@prod-pw",
        "f.txt",
    ];
    let ours = run(keel(d).arg("vault").args(args));
    assert_eq!(ours.status.code(), Some(5));
    let ours_err = String::from_utf8_lossy(&ours.stderr).into_owned();
    let expected = "[ERROR]: The vault-ids a,b are available to encrypt. Specify the vault-id to encrypt with --encrypt-vault-id";
    assert!(ours_err.contains(expected), "{ours_err}");
    // A missing password file among others is a warning.
    let ours = run(keel(d).args([
        "vault",
        "encrypt_string",
        "--vault-id",
        "gone@missing-file",
        "--vault-id",
        "here@pw",
        "--encrypt-vault-id",
        "gone",
        "text",
    ]));
    assert_eq!(ours.status.code(), Some(1));
    let ours_missing = String::from_utf8_lossy(&ours.stderr).into_owned();
    for line in [
        "[WARNING]: Error getting vault password file (gone)",
        "[ERROR]: Did not find a match for --encrypt-vault-id=gone in the known vault-ids ['here']",
    ] {
        assert!(ours_missing.contains(line), "{ours_missing}");
    }
    let Some(bin) = reference_bin() else { return };
    let theirs = run(tool(&bin, "ansible-vault", d).args(args));
    assert_eq!(theirs.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&theirs.stderr).contains(expected));
    let theirs = run(tool(&bin, "ansible-vault", d).args([
        "encrypt_string",
        "--vault-id",
        "gone@missing-file",
        "--vault-id",
        "here@pw",
        "--encrypt-vault-id",
        "gone",
        "text",
    ]));
    assert_eq!(theirs.status.code(), Some(1));
    let theirs = String::from_utf8_lossy(&theirs.stderr);
    for line in [
        "[WARNING]: Error getting vault password file (gone)",
        "[ERROR]: Did not find a match for --encrypt-vault-id=gone in the known vault-ids ['here']",
    ] {
        assert!(theirs.contains(line), "{theirs}");
    }
}

#[test]
fn include_vars_of_a_vaulted_file_hides_its_result_as_ansible_does() {
    let dir = workdir();
    let d = dir.path();
    std::fs::create_dir(d.join("vars")).unwrap();
    std::fs::write(d.join("vars/secret.yml"), "isecret: included-s3cr3t\n").unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "vars/secret.yml",
    ]));
    std::fs::write(
        d.join("pb.yml"),
        "- hosts: local\n  gather_facts: false\n  tasks:\n    - include_vars: vars/secret.yml\n      register: r\n    - assert:\n        that: r.ansible_facts.isecret == 'included-s3cr3t'\n",
    )
    .unwrap();
    let line = "ok: [localhost] => {\"censored\": \"the output has been hidden due to the fact that 'no_log: true' was specified for this result\", \"changed\": false}";
    let ours = ok(keel(d).args([
        "play",
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "pw",
        "-v",
    ]));
    assert!(ours.contains(line), "{ours}");
    assert!(!ours.contains("included-s3cr3t"), "{ours}");
    let Some(bin) = reference_bin() else { return };
    let theirs = ok(tool(&bin, "ansible-playbook", d).args([
        "-i",
        "hosts",
        "pb.yml",
        "--vault-password-file",
        "pw",
        "-v",
    ]));
    assert!(theirs.contains(line), "{theirs}");
}

#[test]
fn the_inventory_listing_shows_inline_vaults_as_ciphertext() {
    let dir = workdir();
    let d = dir.path();
    let inline = ok(keel(d).args([
        "vault",
        "encrypt_string",
        "--vault-password-file",
        "pw",
        "--name",
        "isecret",
        "inline-s3cr3t",
    ]));
    std::fs::write(d.join("group_vars/local.yml"), &inline).unwrap();
    let listing = |out: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["_meta"]["hostvars"]["localhost"]["isecret"].clone()
    };
    let ours = listing(&ok(keel(d).args([
        "inventory",
        "-i",
        "hosts",
        "--list",
        "--vault-password-file",
        "pw",
    ])));
    let ciphertext = ciphertext_of(&inline);
    assert_eq!(ours, serde_json::json!({ "__ansible_vault": ciphertext }));
    let Some(bin) = reference_bin() else { return };
    let theirs = listing(&ok(tool(&bin, "ansible-inventory", d).args([
        "-i",
        "hosts",
        "--list",
        "--vault-password-file",
        "pw",
    ])));
    assert_eq!(ours, theirs);
}

#[test]
fn the_vault_and_unvault_filters_match_ansible_cores() {
    let dir = workdir();
    let d = dir.path();
    // The expected text is ansible-core's own (its filter_encryption target):
    // 'secret'|vault('test', salt=7).
    std::fs::write(
        d.join("pb.yml"),
        "- hosts: local
  gather_facts: false
  vars:
    fixed: |
        $ANSIBLE_VAULT;1.2;AES256;filter_default
        33370a34333734353636633035656232613935353432656132646533346233326431346232616261
        6133383034376566366261316365633931356133633337396363370a376664386236313834326561
        6338373864623763613165366636633031303739
  tasks:
    - assert:
        that:
          - \"'secret'|vault('test', salt=7) == fixed\"
          - \"'foo: bar'|vault('pw', vault_id='x')|unvault('pw', vault_id='x') == 'foo: bar'\"
          - \"'foo'|vault('pw') is search('^\\\\$ANSIBLE_VAULT;1.2;AES256;filter_default\\\\n')\"
          - fixed|unvault('test') == 'secret'
          - \"'plain'|unvault('x') == 'plain'\"
",
    )
    .unwrap();
    ok(keel(d).args(["play", "-i", "hosts", "pb.yml"]));
    let Some(bin) = reference_bin() else { return };
    ok(tool(&bin, "ansible-playbook", d).args(["-i", "hosts", "pb.yml"]));
}

#[test]
fn a_vaulted_ini_inventory_is_read_and_its_errors_show_no_line() {
    let dir = workdir();
    let d = dir.path();
    std::fs::write(
        d.join("vaulted.inventory"),
        "[secret_group]\nvaulted_host ansible_connection=local\n",
    )
    .unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "vaulted.inventory",
    ]));
    std::fs::write(
        d.join("pb.yml"),
        "- hosts: secret_group\n  gather_facts: false\n  tasks:\n    - debug: msg=found\n",
    )
    .unwrap();
    let out = ok(keel(d).args([
        "play",
        "-i",
        "vaulted.inventory",
        "pb.yml",
        "--vault-password-file",
        "pw",
    ]));
    assert!(out.contains("ok: [vaulted_host]"), "{out}");
    // A syntax error inside names the place, not the decrypted line.
    std::fs::write(d.join("bad.inventory"), "[grp:vars]\nnot-a-key-value\n").unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "bad.inventory",
    ]));
    let out = run(keel(d).args([
        "inventory",
        "-i",
        "bad.inventory",
        "--list",
        "--vault-password-file",
        "pw",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.inventory:2:") && err.contains("source not shown"),
        "{err}"
    );
    // No quoted source line (`2 | …`) under the message.
    assert!(!err.contains("2 |"), "{err}");
}

#[test]
fn keel_vault_pipes_and_creates_like_ansible_vault() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = workdir();
    let d = dir.path();
    // encrypt stdin to stdout, then decrypt stdin to stdout.
    let pipe = |args: &[&str], input: &[u8]| -> Vec<u8> {
        let mut child = keel(d)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}");
        out.stdout
    };
    let sealed = pipe(
        &[
            "vault",
            "encrypt",
            "--vault-password-file",
            "pw",
            "--output",
            "-",
        ],
        b"piped\n",
    );
    assert!(sealed.starts_with(b"$ANSIBLE_VAULT;1.1;AES256\n"));
    let opened = pipe(
        &[
            "vault",
            "decrypt",
            "--vault-password-file",
            "pw",
            "--output",
            "-",
        ],
        &sealed,
    );
    assert_eq!(opened, b"piped\n");
    // create: refused without a terminal, unless --skip-tty-check; the
    // editor writes the content.
    let out = run(keel(d).args(["vault", "create", "--vault-password-file", "pw", "new.yml"]));
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a tty, editor cannot be opened"));
    ok(keel(d)
        .env("EDITOR", "sh -c 'echo \"made: here\" > \"$0\"'")
        .args([
            "vault",
            "create",
            "--skip-tty-check",
            "--vault-password-file",
            "pw",
            "sub/new.yml",
        ]));
    let text = std::fs::read_to_string(d.join("sub/new.yml")).unwrap();
    assert!(text.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"), "{text}");
    assert_eq!(
        ok(keel(d).args([
            "vault",
            "view",
            "--vault-password-file",
            "pw",
            "sub/new.yml"
        ])),
        "made: here\n"
    );
    let again = run(keel(d).env("EDITOR", "true").args([
        "vault",
        "create",
        "--skip-tty-check",
        "--vault-password-file",
        "pw",
        "sub/new.yml",
    ]));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr)
        .contains("sub/new.yml exists, please use 'edit' instead"));
}

/// `inv.sh` in `d`, executable, with `text`.
fn inventory_script(d: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let script = d.join("inv.sh");
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The ciphertext of an `encrypt_string` result (`name: !vault |` and the
/// indented envelope), as a JSON inventory carries it.
fn ciphertext_of(inline: &str) -> String {
    inline
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.trim()))
        .collect()
}

#[test]
fn a_script_inventory_s_ansible_vault_values_open_like_inline_vaults() {
    let dir = workdir();
    let d = dir.path();
    let encrypt = |name: &str, plain: &str| {
        ciphertext_of(&ok(keel(d).args([
            "vault",
            "encrypt_string",
            "--vault-password-file",
            "pw",
            "--name",
            name,
            plain,
        ])))
    };
    let (secret, gsecret) = (encrypt("secret", "s3cret"), encrypt("gsecret", "g-s3cret"));
    // ansible-core's inventory JSON profile: `{"__ansible_vault": …}` is an
    // inline vault, for a host's var and for a group's.
    let data = serde_json::json!({
        "local": {"hosts": ["localhost"], "vars": {"gsecret": {"__ansible_vault": gsecret}}},
        "_meta": {"hostvars": {"localhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": reference_python(),
            "secret": {"__ansible_vault": secret},
        }}},
    });
    std::fs::write(d.join("inv.json"), data.to_string()).unwrap();
    inventory_script(d, "#!/bin/sh\ncat \"$(dirname \"$0\")/inv.json\"\n");
    std::fs::write(
        d.join("pb.yml"),
        "- hosts: local\n  gather_facts: false\n  tasks:\n    - debug: msg=hello\n    - debug:\n        msg: \"{{ secret }} {{ secret | length }} {{ secret is vault_encrypted }} {{ gsecret }}\"\n",
    )
    .unwrap();
    // What ansible-playbook 2.19.14 prints for this inventory and playbook.
    let opened = "\"msg\": \"s3cret 6 True g-s3cret\"";
    let out = ok(keel(d).args([
        "play",
        "-i",
        "inv.sh",
        "pb.yml",
        "--vault-password-file",
        "pw",
    ]));
    assert!(out.contains(opened) && out.contains("ok=2"), "{out}");
    // Without the password the value fails where it is used, not before.
    let out = run(keel(d).args(["play", "-i", "inv.sh", "pb.yml"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("\"msg\": \"hello\"")
            && stdout.contains(
                "Attempt to use undecryptable variable: Attempting to decrypt but no vault secrets found"
            )
            && stdout.contains("ok=1")
            && stdout.contains("failed=1"),
        "{stdout}"
    );
    // The listing gives the ciphertext back, as ansible-inventory does.
    let listing = |out: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["_meta"]["hostvars"]["localhost"]["secret"].clone()
    };
    let ours = listing(&ok(keel(d).args([
        "inventory",
        "-i",
        "inv.sh",
        "--list",
        "--vault-password-file",
        "pw",
    ])));
    assert_eq!(ours, serde_json::json!({ "__ansible_vault": secret }));

    let Some(bin) = reference_bin() else { return };
    let theirs = ok(tool(&bin, "ansible-playbook", d).args([
        "-i",
        "inv.sh",
        "pb.yml",
        "--vault-password-file",
        "pw",
    ]));
    assert!(theirs.contains(opened), "{theirs}");
    let theirs = listing(&ok(tool(&bin, "ansible-inventory", d).args([
        "-i",
        "inv.sh",
        "--list",
        "--vault-password-file",
        "pw",
    ])));
    assert_eq!(ours, theirs);
}

#[test]
fn an_ansible_vault_value_must_hold_a_string() {
    let dir = workdir();
    let d = dir.path();
    inventory_script(d, "#!/bin/sh\necho '{\"all\": {\"hosts\": [\"h1\"]}, \"_meta\": {\"hostvars\": {\"h1\": {\"x\": {\"__ansible_vault\": 5}}}}}'\n");
    let out = run(keel(d).args(["inventory", "-i", "inv.sh", "--list"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("var 'x' of host 'h1': __ansible_vault must be a string, got"),
        "{stderr}"
    );
}

#[test]
fn the_template_lookup_decrypts_a_vaulted_template() {
    let dir = workdir();
    let d = dir.path();
    std::fs::create_dir(d.join("templates")).unwrap();
    std::fs::write(
        d.join("templates/vaulted.j2"),
        "Unvaulted {{ greeting }} World!\n",
    )
    .unwrap();
    ok(keel(d).args([
        "vault",
        "encrypt",
        "--vault-password-file",
        "pw",
        "templates/vaulted.j2",
    ]));
    std::fs::write(
        d.join("pb.yml"),
        "- hosts: local\n  gather_facts: false\n  vars:\n    greeting: Hello\n  tasks:\n    - set_fact:\n        text: \"{{ lookup('template', 'vaulted.j2') }}\"\n    - assert:\n        that: text | trim == 'Unvaulted Hello World!'\n",
    )
    .unwrap();
    let args = ["-i", "hosts", "pb.yml", "--vault-password-file", "pw"];
    let out = ok(keel(d).arg("play").args(args));
    assert!(out.contains("ok=2") && out.contains("failed=0"), "{out}");
    let Some(bin) = reference_bin() else { return };
    let theirs = ok(tool(&bin, "ansible-playbook", d).args(args));
    assert!(theirs.contains("ok=2"), "{theirs}");
}
