//! `vars_prompt` through the `keel` binary: on a terminal (a pseudo-terminal
//! made by util-linux `script`) each question is asked with ansible-core's
//! wording (`"{prompt} [{default}]: "`, `confirm …`, `***** VALUES ENTERED DO
//! NOT MATCH ****`, checked against ansible-playbook 2.19.14 on the same
//! terminal), an empty answer takes the default, and `encrypt` gives a real
//! crypt(3) hash of the answer; without a terminal the defaults answer.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const PLAYBOOK: &str = "\
- hosts: localhost
  gather_facts: false
  vars_prompt:
    - name: who
      prompt: Your name
      private: false
      default: nobody
    - name: secret
      prompt: Secret
    - name: hashed
      prompt: Password
      encrypt: sha512_crypt
      confirm: true
      salt_size: 7
    - name: empty
      prompt: Empty gives default
      default: dflt
  tasks:
    - debug: msg=\"who={{ who }} secret={{ secret }} empty={{ empty }}\"
    - copy: {content: '{{ hashed }}', dest: '{{ playbook_dir }}/hash'}
";

#[test]
fn prompts_on_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pb.yml"), PLAYBOOK).unwrap();
    let keel = env!("CARGO_BIN_EXE_keel");
    let mut child = Command::new("script")
        .args(["-qec", &format!("{keel} play pb.yml"), "/dev/null"])
        .current_dir(d.path())
        .env("ANSIBLE_CONFIG", d.path().join("none.cfg"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs keel on a pseudo-terminal");
    let mut stdin = child.stdin.take().unwrap();
    // One answer at a time, as a person types: the second password does not
    // match the first, so the pair is asked again.
    for answer in ["alice", "s3cr3t", "pw1", "pw2", "pw1", "pw1", ""] {
        std::thread::sleep(Duration::from_millis(700));
        writeln!(stdin, "{answer}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    for prompt in [
        "Your name [nobody]: alice",
        "Secret: \r\n",
        "Password: \r\n",
        "confirm Password: \r\n",
        "***** VALUES ENTERED DO NOT MATCH ****",
        "Empty gives default [dflt]: ",
    ] {
        assert!(text.contains(prompt), "no {prompt:?} in {text}");
    }
    // Private answers are not echoed.
    assert!(!text.contains("s3cr3t\r\n"), "{text}");
    assert!(
        text.contains("who=alice secret=s3cr3t empty=dflt"),
        "{text}"
    );
    let hash = std::fs::read_to_string(d.path().join("hash")).unwrap();
    assert!(
        hash.starts_with("$6$") && hash.split('$').nth(2).unwrap().len() == 7,
        "{hash}"
    );
    assert!(sha_crypt::sha512_check("pw1", &hash).is_ok(), "{hash}");
    assert!(sha_crypt::sha512_check("pw2", &hash).is_err());
}

#[test]
fn defaults_answer_without_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pb.yml"), PLAYBOOK).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["play", "pb.yml", "-e", "secret=given", "-e", "hashed=as-is"])
        .current_dir(d.path())
        .env("ANSIBLE_CONFIG", d.path().join("none.cfg"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("who=nobody secret=given empty=dflt"),
        "{text}"
    );
    // An extra var skips the question and is taken as it is (not hashed).
    let hash = std::fs::read_to_string(d.path().join("hash")).unwrap();
    assert_eq!(hash, "as-is");
}
