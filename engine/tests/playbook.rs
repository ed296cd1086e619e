//! Playbook resolution tests: every `fixtures/playbook/<case>/site.yml` is
//! resolved and its plan dump (or its error) snapshotted; the shipped seed
//! playbook's `--list-tasks`/`--list-tags` output is compared with what
//! ansible-playbook printed for it; includes are loaded as the executor would.

use std::path::{Path, PathBuf};

use keel::playbook::plan::{IncludeTarget, Node, Playbook};
use keel::playbook::{self, dump_plan, load_playbook, ResolveOptions, TagFilter};
use keel::vars::VarMap;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/playbook")
}

/// Extra vars for a case, from its optional `extra_vars.yml`.
fn extra_vars(dir: &Path) -> VarMap {
    let p = dir.join("extra_vars.yml");
    let mut out = VarMap::new();
    if p.is_file() {
        let node = keel::yaml::load_one(&p).unwrap();
        for (k, v) in node.as_map().unwrap() {
            out.insert(k.as_str().unwrap().to_string(), v.to_value());
        }
    }
    out
}

fn resolve_case(site: &Path) -> String {
    let dir = site.parent().unwrap();
    let opts = ResolveOptions {
        extra_vars: extra_vars(dir),
        ..Default::default()
    };
    let prefix = format!("{}/", dir.display());
    match load_playbook(site, &opts) {
        Ok(pb) => dump_plan(&pb),
        // Paths in hints are made relative to the case (`.`) and to the
        // fixtures root (`..`) so snapshots don't depend on the checkout.
        Err(e) => format!(
            "ERROR\n{}",
            e.to_string()
                .replace(&prefix, "")
                .replace(&dir.display().to_string(), ".")
                .replace(&fixtures().display().to_string(), "..")
        ),
    }
}

#[test]
fn fixtures_resolve_to_snapshots() {
    insta::glob!("fixtures/playbook/*/site.yml", |path| {
        let out = resolve_case(path);
        let case = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Cases named err_* must fail; the others must resolve.
        assert_eq!(
            case.starts_with("err_"),
            out.starts_with("ERROR"),
            "{case}:\n{out}"
        );
        insta::assert_snapshot!(out);
    });
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn seed() -> Playbook {
    let root = repo_root();
    let opts = ResolveOptions {
        roles_path: vec![root.join("roles")],
        ..Default::default()
    };
    let mut pb = load_playbook(&root.join("playbooks/mwsclients.yml"), &opts).unwrap();
    // ansible-playbook prints the path as given on its command line.
    pb.path = PathBuf::from("playbooks/mwsclients.yml");
    pb
}

fn hosts(p: &keel::playbook::plan::Play) -> Vec<String> {
    vec![p.hosts.clone()]
}

/// The expected files were captured from `ansible-playbook --list-tasks`
/// (ansible-core 2.19) on the same playbook and roles.
#[test]
fn seed_list_tasks_matches_ansible_playbook() {
    let pb = seed();
    let expected = std::fs::read_to_string(fixtures().join("seed_list_tasks.txt")).unwrap();
    assert_eq!(
        playbook::list_tasks(&pb, hosts, &TagFilter::default()),
        expected
    );
    let expected = std::fs::read_to_string(fixtures().join("seed_list_tasks_skip.txt")).unwrap();
    let skip = TagFilter::new(vec!["all".into()], vec!["base_software".into()]);
    assert_eq!(playbook::list_tasks(&pb, hosts, &skip), expected);
    let expected = std::fs::read_to_string(fixtures().join("seed_list_tags.txt")).unwrap();
    assert_eq!(
        playbook::list_tags(&pb, hosts, &TagFilter::default()),
        expected
    );
}

#[test]
fn seed_playbooks_resolve() {
    let pb = seed();
    let root = repo_root();
    let dump = dump_plan(&pb).replace(&format!("{}/", root.display()), "");
    insta::assert_snapshot!("seed_mwsclients", dump);
    let opts = ResolveOptions {
        roles_path: vec![root.join("roles")],
        ..Default::default()
    };
    let site = load_playbook(&root.join("playbooks/site.yml"), &opts).unwrap();
    assert_eq!(site.plays.len(), 1);
    assert!(playbook::count_tasks(&site.plays[0].sections[1].nodes) > 0);
    assert!(site.warnings.is_empty(), "{:?}", site.warnings);
    // Every shipped playbook resolves.
    for entry in std::fs::read_dir(root.join("playbooks")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yml") {
            if let Err(e) = load_playbook(&p, &opts) {
                panic!("{}: {e}", p.display());
            }
        }
    }
}

#[test]
fn task_ids_are_unique_and_increasing() {
    let pb = load_playbook(
        &fixtures().join("roles_deps/site.yml"),
        &ResolveOptions::default(),
    )
    .unwrap();
    let mut ids = Vec::new();
    fn collect(nodes: &[Node], ids: &mut Vec<usize>) {
        for n in nodes {
            match n {
                Node::Task(t) | Node::Include(t) => ids.push(t.id),
                Node::Block(b) => {
                    collect(&b.block, ids);
                    collect(&b.rescue, ids);
                    collect(&b.always, ids);
                }
            }
        }
    }
    for play in &pb.plays {
        for s in &play.sections {
            collect(&s.nodes, &mut ids);
        }
        ids.extend(play.handlers.iter().map(|h| h.task.id));
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "duplicate ids in {ids:?}");
}

/// `include_tasks` and `include_role` loaded at run time: the include's own
/// `when`/`tags` stay on the include, `apply:` reaches every child, and an
/// included role brings its handlers.
#[test]
fn dynamic_includes_load_at_run_time() {
    let dir = fixtures().join("import_include");
    let opts = ResolveOptions::default();
    let pb = load_playbook(&dir.join("site.yml"), &opts).unwrap();
    let play = &pb.plays[0];
    let includes: Vec<_> = play.sections[1]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::Include(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(includes.len(), 3);

    // include_tasks with when + tags: children get neither.
    let inc = &includes[0];
    assert_eq!(
        inc.when,
        vec![keel::template::Condition::expr("do_dynamic")]
    );
    let target = IncludeTarget::Tasks {
        file: "tasks/debian.yml".into(),
        base_dir: dir.clone(),
    };
    let got = playbook::load_include(play, inc, &target, &opts).unwrap();
    let Node::Task(t) = &got.nodes[0] else {
        panic!("expected a task")
    };
    assert_eq!(t.name.as_deref(), Some("debian only"));
    assert!(
        t.when.is_empty() && t.tags.is_empty(),
        "{:?} {:?}",
        t.when,
        t.tags
    );
    assert!(
        t.id > 1 << 31,
        "include ids must not collide with the playbook's"
    );

    // apply: tags and become reach the children (and nested imports).
    let inc = &includes[1];
    let Some(IncludeTarget::Tasks { file, base_dir }) = &inc.include else {
        panic!()
    };
    let target = IncludeTarget::Tasks {
        file: file.clone(),
        base_dir: base_dir.clone(),
    };
    let got = playbook::load_include(play, inc, &target, &opts).unwrap();
    assert_eq!(got.nodes.len(), 2);
    for n in &got.nodes {
        let Node::Task(t) = n else { panic!() };
        assert!(t.tags.contains(&"applied".to_string()), "{:?}", t.tags);
        assert_eq!(t.become_.become_, Some(true));
    }

    // include_role: tasks carry the role, and its handlers come back.
    let inc = &includes[2];
    let target = IncludeTarget::Role {
        name: "web".into(),
        tasks_from: Some("install".into()),
        vars_from: None,
        defaults_from: None,
    };
    let got = playbook::load_include(play, inc, &target, &opts).unwrap();
    let Node::Task(t) = &got.nodes[0] else {
        panic!()
    };
    assert_eq!(t.display_name(), "web : install web");
    assert_eq!(got.role.as_ref().map(|r| r.name.as_str()), Some("web"));
    assert_eq!(got.handlers.len(), 1);
    assert!(got.handlers[0].names.contains(&"restart web".to_string()));

    // The executor's path-based entry points give the same tasks.
    let nodes =
        playbook::load_include_tasks(&dir.join("tasks/debian.yml"), &includes[0], play, &opts)
            .unwrap();
    assert_eq!(nodes.len(), 1);
}

#[test]
fn roles_path_from_options_and_missing_role_lists_search_path() {
    let dir = fixtures().join("roles_deps");
    let tmp = tempfile::tempdir().unwrap();
    let pb = tmp.path().join("site.yml");
    std::fs::write(&pb, "- hosts: all\n  roles: [c]\n").unwrap();
    let err = load_playbook(&pb, &ResolveOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("the role 'c' was not found"),
        "{err}"
    );
    assert!(err
        .hint
        .as_deref()
        .unwrap_or("")
        .contains(&tmp.path().join("roles").display().to_string()));
    let opts = ResolveOptions {
        roles_path: vec![dir.join("roles")],
        ..Default::default()
    };
    let ok = load_playbook(&pb, &opts).unwrap();
    assert_eq!(playbook::count_tasks(&ok.plays[0].sections[1].nodes), 1);
}

#[test]
fn extra_vars_template_static_import_paths() {
    let dir = fixtures().join("err_undefined_import_var");
    std::fs::create_dir_all(std::env::temp_dir()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("site.yml"), tmp.path().join("site.yml")).unwrap();
    std::fs::write(
        tmp.path().join("Debian.yml"),
        "- name: from extra vars\n  debug: msg=x\n",
    )
    .unwrap();
    let mut extra = VarMap::new();
    extra.insert("ansible_distribution".into(), "Debian".into());
    let opts = ResolveOptions {
        extra_vars: extra,
        ..Default::default()
    };
    let pb = load_playbook(&tmp.path().join("site.yml"), &opts).unwrap();
    let Node::Task(t) = &pb.plays[0].sections[1].nodes[0] else {
        panic!()
    };
    assert_eq!(t.name.as_deref(), Some("from extra vars"));
}

/// Templated `tags` are templated with play vars and extra vars for listing
/// and selection. Expected files: `ansible-playbook --list-tasks -e
/// extra_tag=xt` (and `--tags tag4,xt`), ansible-core 2.19.14.
#[test]
fn templated_tags_list_like_ansible_playbook() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/listing/templated_tags");
    let opts = ResolveOptions {
        extra_vars: extra_vars(&dir),
        ..Default::default()
    };
    let mut pb = load_playbook(&dir.join("site.yml"), &opts).unwrap();
    pb.path = PathBuf::from("site.yml");
    let expected = std::fs::read_to_string(dir.join("list_tasks.txt")).unwrap();
    assert_eq!(
        playbook::list_tasks(&pb, hosts, &TagFilter::default()),
        expected
    );
    let expected = std::fs::read_to_string(dir.join("list_tasks_tag4_xt.txt")).unwrap();
    let only = TagFilter::new(vec!["tag4".into(), "xt".into()], vec![]);
    assert_eq!(playbook::list_tasks(&pb, hosts, &only), expected);
}
