//! Resolver benchmark: a generated playbook with 50 roles of 20 tasks each
//! (plus handlers, defaults and a dependency chain), resolved with
//! `load_playbook`. Run with `cargo bench -p keel-engine --bench resolve`.

use std::fmt::Write;
use std::time::{Duration, Instant};

use keel::playbook::{count_tasks, load_playbook, ResolveOptions};

const ROLES: usize = 50;
const TASKS: usize = 20;

fn generate(dir: &std::path::Path) {
    let mut site = String::from("- hosts: all\n  gather_facts: no\n  roles:\n");
    for r in 0..ROLES {
        let role = dir.join(format!("roles/role{r}"));
        for sub in ["tasks", "handlers", "defaults", "meta"] {
            std::fs::create_dir_all(role.join(sub)).unwrap();
        }
        let mut tasks = String::new();
        for t in 0..TASKS {
            let _ = write!(
                tasks,
                "- name: role{r} task {t}\n  apt: state=present name={{{{ item }}}}\n  with_items: [a, b]\n  \
                 when: enable_{r} | default(true)\n  tags: [r{r}, t{t}]\n  notify: restart {r}\n"
            );
            if t % 5 == 0 {
                let _ = write!(
                    tasks,
                    "- block:\n    - name: nested {t}\n      command: echo {t} chdir=/tmp\n  become: yes\n  vars: {{x: {t}}}\n"
                );
            }
        }
        std::fs::write(role.join("tasks/main.yml"), tasks).unwrap();
        std::fs::write(
            role.join("handlers/main.yml"),
            format!("- name: restart {r}\n  service: name=svc{r} state=restarted\n"),
        )
        .unwrap();
        std::fs::write(
            role.join("defaults/main.yml"),
            format!("port_{r}: {r}\nname_{r}: role{r}\n"),
        )
        .unwrap();
        let meta = if r > 0 {
            format!("dependencies:\n  - role{}\n", r - 1)
        } else {
            String::new()
        };
        std::fs::write(role.join("meta/main.yml"), meta).unwrap();
        let _ = writeln!(site, "    - role{r}");
    }
    std::fs::write(dir.join("site.yml"), site).unwrap();
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    let site = tmp.path().join("site.yml");
    let opts = ResolveOptions::default();

    let pb = load_playbook(&site, &opts).unwrap();
    let tasks = count_tasks(&pb.plays[0].sections[1].nodes);

    let runs = 20;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let pb = load_playbook(&site, &opts).unwrap();
        times.push(start.elapsed());
        std::hint::black_box(pb);
    }
    times.sort();
    let median = times[runs / 2];
    println!(
        "resolve: {ROLES} roles x {TASKS} tasks ({tasks} plan tasks): median {:.2} ms, min {:.2} ms, max {:.2} ms over {runs} runs",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
    );
}
