//! Regression tests for relative file search inside roles, each named after
//! what broke ansible-core's own integration targets (see
//! `docs/compatibility.md`). The playbook asserts what ansible-playbook 2.19
//! does with the same tree (checked by running it there); Keel must finish
//! it with no failed task.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use keel::executor::{run_playbook, RunOptions};
use keel::inventory::Inventory;
use keel::output::{Event, MemorySink, Sink, Status};
use keel::playbook::{load_playbook, ResolveOptions};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Runs `site.yml` under `root` on the implicit localhost; returns the
/// failed tasks' messages (empty when everything passed).
async fn failures(root: &Path) -> Vec<String> {
    let pb = load_playbook(&root.join("site.yml"), &ResolveOptions::default()).unwrap();
    let inv = Inventory::load(&[]).unwrap();
    let mem = Arc::new(MemorySink::default());
    let sink: Arc<dyn Sink> = mem.clone();
    run_playbook(&pb, inv, RunOptions::default(), sink).await;
    let events = mem.events.lock();
    events
        .iter()
        .filter_map(|e| match e {
            Event::HostResult(r) if r.status == Status::Failed => Some(r.result.to_string()),
            _ => None,
        })
        .collect()
}

/// A role `r` depending on `base`: `include_tasks` of a `first_found`
/// lookup (setup_remote_tmp_dir's pattern), `import_tasks` through
/// `role_path`, a template that `{% include %}`s a sibling, `include_vars`
/// of a directory with `depth`, and a dependency that finds its parent's
/// `files/`.
fn role_tree(root: &Path) {
    write(
        root,
        "roles/r/tasks/main.yml",
        r#"
- include_tasks: "{{ lookup('first_found', files) }}"
  vars:
    files: ["{{ 'nope' }}.yml", "default.yml"]
- import_tasks: "{{ role_path }}/tasks/imported.yml"
- template:
    src: hello.j2
    dest: "{{ out }}/hello.txt"
- slurp:
    src: "{{ out }}/hello.txt"
  register: hello
- include_vars:
    dir: many
    depth: 1
  register: many
- assert:
    that:
      - from_default == 'yes'
      - imported == 'yes'
      - hello.content | b64decode | trim == 'Hello world!'
      - hello.content | b64decode | length == 13
      - a_var == 1
      - b_var is undefined
      - many.ansible_included_var_files | length == 1
"#,
    );
    write(
        root,
        "roles/r/tasks/default.yml",
        "- set_fact: {from_default: 'yes'}\n",
    );
    write(
        root,
        "roles/r/tasks/imported.yml",
        "- set_fact: {imported: 'yes'}\n",
    );
    write(
        root,
        "roles/r/templates/hello.j2",
        "Hello {% include 'world.txt' %}!\n",
    );
    // An included template's own trailing newline is dropped (Jinja's default).
    write(root, "roles/r/templates/world.txt", "world\n");
    write(
        root,
        "roles/r/files/from_parent.txt",
        "from the parent role\n",
    );
    write(root, "roles/r/vars/many/a.yml", "a_var: 1\n");
    write(root, "roles/r/vars/many/sub/b.yml", "b_var: 2\n");
    write(root, "roles/r/meta/main.yml", "dependencies:\n  - base\n");
    write(
        root,
        "roles/base/tasks/main.yml",
        r#"
- copy:
    src: from_parent.txt
    dest: "{{ out }}/from_parent.txt"
- assert:
    that:
      - lookup('file', 'from_parent.txt') == 'from the parent role'
"#,
    );
    write(
        root,
        "site.yml",
        r#"
- hosts: localhost
  gather_facts: false
  vars:
    out: "{{ playbook_dir }}/out"
  roles:
    - r
"#,
    );
    fs::create_dir_all(root.join("out")).unwrap();
}

#[tokio::test]
async fn role_relative_files_are_found_like_ansible() {
    let t = tempfile::tempdir().unwrap();
    role_tree(t.path());
    let failed = failures(t.path()).await;
    assert!(failed.is_empty(), "failed tasks: {failed:#?}");
}

#[tokio::test]
async fn include_vars_reports_missing_files_in_message() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "vars/d/x.yml", "a: 1\n");
    write(t.path(), "vars/d/noext", "c: 3\n");
    // What ansible-playbook 2.19 registers for these (run on the same tree).
    write(
        t.path(),
        "site.yml",
        r#"
- hosts: localhost
  gather_facts: false
  tasks:
    - include_vars: nothere.yml
      ignore_errors: true
      register: r1
    - include_vars:
        dir: vars/d
      ignore_errors: true
      register: r2
    - include_vars:
        dir: vars/d
        extensions: ['', 'yml']
      register: r3
    - assert:
        that:
          - r1 is failed
          - r1.message is search("Could not find or access 'nothere.yml'")
          - r1.message is search("Searched in")
          - r2 is failed
          - "r2.message is search('noext does not have a valid extension: yaml, yml, json')"
          - "r3.ansible_facts == {'a': 1, 'c': 3}"
          - r3.ansible_included_var_files | map('basename') | list == ['noext', 'x.yml']
"#,
    );
    let failed = failures(t.path()).await;
    // The two ignored failures are expected; the assert must pass.
    assert_eq!(failed.len(), 2, "failed tasks: {failed:#?}");
    assert!(
        failed.iter().all(|f| f.contains("\"message\"")),
        "{failed:#?}"
    );
}
