//! YAML loader tests: every file under `fixtures/yaml/ok` is loaded and its
//! resolved tree (type, value and line:col of each node) plus any warnings is
//! snapshotted; every file under `fixtures/yaml/err` must fail, and the
//! rendered diagnostic is snapshotted. Targeted tests cover what snapshots
//! cannot: speed of the alias-bomb guard and of large trees, `to_value`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use keel::yaml::{self, LoadOptions, Node, NodeKind, ScalarStyle};

/// Loads a fixture under a stable, machine-independent name.
fn load_fixture(path: &Path) -> Result<yaml::Loaded, keel::diag::Diagnostic> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = format!(
        "{}/{}",
        path.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy(),
        path.file_name().unwrap().to_string_lossy()
    );
    yaml::load_str_with_warnings(&name, &text, &LoadOptions::default())
}

/// One line per node: `type value @line:col`, children indented; mapping
/// entries as `? key` / `= value`.
fn render(node: &Node, indent: usize, prefix: &str, out: &mut String) {
    let pad = " ".repeat(indent);
    let at = format!("@{}:{}", node.pos.line, node.pos.col);
    match &node.kind {
        NodeKind::Null => writeln!(out, "{pad}{prefix}null {at}"),
        NodeKind::Bool(b) => writeln!(out, "{pad}{prefix}bool {b} {at}"),
        NodeKind::Int(i) => writeln!(out, "{pad}{prefix}int {i} {at}"),
        NodeKind::Float(f) => writeln!(out, "{pad}{prefix}float {f:?} {at}"),
        NodeKind::Str {
            value,
            style,
            unsafe_,
        } => {
            let style = match style {
                ScalarStyle::Plain => "plain",
                ScalarStyle::Quoted => "quoted",
                ScalarStyle::Block => "block",
            };
            let unsafe_ = if *unsafe_ { ",unsafe" } else { "" };
            writeln!(out, "{pad}{prefix}str({style}{unsafe_}) {value:?} {at}")
        }
        NodeKind::Seq(items) => {
            writeln!(out, "{pad}{prefix}seq {at}").unwrap();
            for item in items {
                render(item, indent + 2, "- ", out);
            }
            Ok(())
        }
        NodeKind::Map(entries) => {
            writeln!(out, "{pad}{prefix}map {at}").unwrap();
            for (key, value) in entries {
                render(key, indent + 2, "? ", out);
                render(value, indent + 2, "= ", out);
            }
            Ok(())
        }
    }
    .unwrap();
}

fn render_loaded(loaded: &yaml::Loaded) -> String {
    let mut out = format!("{} document(s)\n", loaded.docs.len());
    for (i, doc) in loaded.docs.iter().enumerate() {
        writeln!(out, "--- document {}", i + 1).unwrap();
        render(doc, 0, "", &mut out);
    }
    for warning in &loaded.warnings {
        writeln!(out, "warning: {warning}").unwrap();
    }
    out
}

#[test]
fn ok_fixtures() {
    insta::glob!("fixtures/yaml/ok/*.yml", |path| {
        let loaded = load_fixture(path)
            .unwrap_or_else(|e| panic!("{} failed to load:\n{e}", path.display()));
        insta::assert_snapshot!(render_loaded(&loaded));
    });
}

#[test]
fn err_fixtures() {
    insta::glob!("fixtures/yaml/err/*.yml", |path| {
        match load_fixture(path) {
            Ok(loaded) => panic!(
                "{} loaded but should fail:\n{}",
                path.display(),
                render_loaded(&loaded)
            ),
            Err(diag) => insta::assert_snapshot!(diag.to_string()),
        }
    });
}

fn load(text: &str) -> Vec<Node> {
    yaml::load_str("test.yml", text, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The classic "billion laughs": nine levels of nine aliases each.
fn laughs(levels: usize) -> String {
    let mut text = String::from("l0: &a0 \"lol\"\n");
    for i in 1..=levels {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        writeln!(text, "l{i}: &a{i} [{refs}]").unwrap();
    }
    text
}

#[test]
fn alias_bomb_fails_fast() {
    let text = laughs(9);
    let started = Instant::now();
    let err = yaml::load_str("bomb.yml", &text, &LoadOptions::default()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.message.contains("billion laughs"), "{err}");
    // Levels 1 to 5 expand 9 + 90 + 819 + 7380 + 66429 = 74727 nodes; the
    // first alias of level 6 (66430 more) goes over the 100000 budget.
    let span = err.span.as_ref().unwrap();
    assert_eq!((span.pos.line, span.pos.col), (7, 10), "{err}");
}

#[test]
fn alias_budget_is_configurable() {
    let text = laughs(3);
    // l1 expands 9 nodes, l2 9*10, l3 9*91: 918 in total.
    let small = LoadOptions {
        max_alias_expansion: 917,
    };
    assert!(yaml::load_str("t.yml", &text, &small).is_err());
    let exact = LoadOptions {
        max_alias_expansion: 918,
    };
    let docs = yaml::load_str("t.yml", &text, &exact).unwrap();
    assert_eq!(docs[0].get("l3").unwrap().as_seq().unwrap().len(), 9);
}

#[test]
fn alias_budget_resets_per_document() {
    let doc = "a: &a [1, 2, 3]\nb: [*a, *a]\n";
    let opts = LoadOptions {
        max_alias_expansion: 8,
    };
    let docs = yaml::load_str("t.yml", &format!("{doc}---\n{doc}"), &opts).unwrap();
    assert_eq!(docs.len(), 2);
}

/// A tree shaped like 50 roles of 20 tasks, loaded as one stream.
#[test]
fn large_tree_loads_quickly() {
    let mut text = String::new();
    for role in 0..50 {
        text.push_str("---\n");
        for task in 0..20 {
            write!(
                text,
                "- name: role {role} task {task}\n  apt:\n    name: [pkg{task}, other]\n    state: present\n  when: ansible_os_family == 'Debian'\n  become: yes\n  tags: [r{role}]\n  vars: {{mode: 0644, count: {task}}}\n"
            )
            .unwrap();
        }
    }
    let started = Instant::now();
    let docs = yaml::load_str("big.yml", &text, &LoadOptions::default()).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(docs.len(), 50);
    assert_eq!(docs[49].as_seq().unwrap().len(), 20);
    // Generous for an unoptimised build on a busy machine; typically ~10 ms.
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

#[test]
fn positions_point_at_first_character() {
    let docs =
        load("play:\n  - name: x\n    when: y\nlist: &l\n  - 1\nmap: &m\n  k: v\nflow: {a: [1]}\n");
    let root = &docs[0];
    let pos = |n: &Node| (n.pos.line, n.pos.col);
    assert_eq!(pos(root), (1, 1));
    let play = root.get("play").unwrap();
    assert_eq!(pos(play), (2, 3));
    assert_eq!(pos(&play.as_seq().unwrap()[0]), (2, 5));
    assert_eq!(pos(play.as_seq().unwrap()[0].get("when").unwrap()), (3, 11));
    // Anchored block collections start at their first entry, not the anchor.
    assert_eq!(pos(root.get("list").unwrap()), (5, 3));
    assert_eq!(pos(root.get("map").unwrap()), (7, 3));
    let flow = root.get("flow").unwrap();
    assert_eq!(pos(flow), (8, 7));
    assert_eq!(pos(flow.get("a").unwrap()), (8, 11));
}

#[test]
fn positions_count_characters_not_bytes() {
    let docs = load("name: \"héllo wörld\"\nnext: 1\nsame: é # x\nafter: ü\n");
    let after = docs[0].get("after").unwrap();
    assert_eq!((after.pos.line, after.pos.col), (4, 8));
    assert_eq!(docs[0].get("same").unwrap().pos.col, 7);
}

#[test]
fn crlf_line_endings_keep_positions() {
    let docs = load("a: 1\r\nb:\r\n  - x\r\n");
    let item = &docs[0].get("b").unwrap().as_seq().unwrap()[0];
    assert_eq!((item.pos.line, item.pos.col), (3, 5));
    assert_eq!(item.as_str(), Some("x"));
}

#[test]
fn empty_inputs_give_no_documents() {
    assert!(load("").is_empty());
    assert!(load("# nothing\n\n").is_empty());
}

#[test]
fn load_one_reads_a_single_document() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one.yml");
    std::fs::write(&one, "a: 1\n").unwrap();
    assert_eq!(
        yaml::load_one(&one).unwrap().get("a").unwrap().to_value(),
        minijinja::Value::from(1)
    );
    let empty = dir.path().join("empty.yml");
    std::fs::write(&empty, "").unwrap();
    assert!(yaml::load_one(&empty).unwrap().is_null());
    let two = dir.path().join("two.yml");
    std::fs::write(&two, "a: 1\n---\nb: 2\n").unwrap();
    let err = yaml::load_one(&two).unwrap_err();
    assert!(err.message.contains("single YAML document"), "{err}");
    let dup = dir.path().join("dup.yml");
    std::fs::write(&dup, "a: 1\na: 2\n").unwrap();
    let (node, warnings) = yaml::load_one_with_warnings(&dup).unwrap();
    assert_eq!(node.get("a").unwrap().to_value(), minijinja::Value::from(2));
    assert_eq!(warnings.len(), 1);
    let missing = yaml::load_one(&dir.path().join("missing.yml")).unwrap_err();
    assert!(missing.message.contains("cannot read"), "{missing}");
}

#[test]
fn duplicate_keys_warn_and_keep_the_last_value_in_first_place() {
    let loaded =
        yaml::load_str_with_warnings("d.yml", "a: 1\nb: 2\na: 3\n", &LoadOptions::default())
            .unwrap();
    let keys: Vec<_> = loaded.docs[0]
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(
        loaded.docs[0].get("a").unwrap().to_value(),
        minijinja::Value::from(3)
    );
    assert_eq!(loaded.warnings.len(), 1);
    let span = loaded.warnings[0].span.as_ref().unwrap();
    assert_eq!((span.pos.line, span.pos.col), (3, 1));
}

#[test]
fn to_value_keeps_types_and_order() {
    let docs = load("z: 1\na: [yes, 1.5, ~, '0644', 0644]\n1: int key\nnested: {b: 2}\n");
    let value = docs[0].to_value();
    assert_eq!(
        format!("{value:?}"),
        r#"{'z': 1, 'a': [True, 1.5, None, '0644', 420], 1: 'int key', 'nested': {'b': 2}}"#
    );
    let env = minijinja::Environment::new();
    let rendered = env
        .render_str(
            "{{ v.z }}-{{ v.a[4] }}-{{ v[1] }}-{{ v.nested.b }}",
            minijinja::context! { v => value },
        )
        .unwrap();
    assert_eq!(rendered, "1-420-int key-2");
}

#[test]
fn to_value_marks_unsafe_strings() {
    let docs = load("a: !unsafe '{{ x }}'\nb: !unsafe [\"{{ y }}\"]\n");
    let a = docs[0].get("a").unwrap().to_value();
    assert_eq!(
        format!("{a:?}"),
        format!("{:?}", keel::vars::unsafe_string("{{ x }}"))
    );
    let b = docs[0].get("b").unwrap().to_value();
    let item = b.get_item(&minijinja::Value::from(0)).unwrap();
    assert_eq!(
        format!("{item:?}"),
        format!("{:?}", keel::vars::unsafe_string("{{ y }}"))
    );
}

#[test]
fn quoted_scalars_are_never_resolved() {
    let docs = load("a: 'yes'\nb: \"1\"\nc: |\n  true\n");
    for key in ["a", "b", "c"] {
        assert_eq!(docs[0].get(key).unwrap().type_name(), "a string", "{key}");
    }
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("{}{}", "[".repeat(600), "]".repeat(600));
    let err = yaml::load_str("deep.yml", &text, &LoadOptions::default()).unwrap_err();
    assert!(err.message.contains("nesting is too deep"), "{err}");
}
