//! Template engine tests: a data-driven table of (template, vars, expected)
//! cases in `fixtures/template/cases.json`, plus focused tests for lazy
//! variables, `omit`, `!unsafe`, error messages (snapshots) and lookups.
use std::path::PathBuf;
use std::sync::Arc;

use keel::diag::{Pos, Source, Span};
use keel::template::{value_from_json, value_to_json, Condition, Scope, Templar, TemplateOrigin};
use keel::vars::unsafe_string;
use keel::vars::VarMap;
use minijinja::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/template")
}

fn scope_from_json(j: &serde_json::Value) -> Scope {
    let mut layer = VarMap::new();
    if let Some(obj) = j.as_object() {
        for (k, v) in obj {
            layer.insert(k.clone(), value_from_json(v));
        }
    }
    let mut s = Scope::new();
    s.push(Arc::new(layer));
    s
}

fn origin() -> TemplateOrigin {
    TemplateOrigin {
        search_paths: vec![fixtures()],
        ..Default::default()
    }
}

#[test]
fn cases_from_fixture() {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let templar = Templar::new();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let tpl = case["template"].as_str().unwrap();
        let scope = scope_from_json(&case["vars"]);
        let got = if case["eval"].as_bool() == Some(true) {
            templar.eval(tpl, &scope, &origin())
        } else {
            templar.render_str(tpl, &scope, &origin())
        };
        match (got, case.get("expected"), case.get("error")) {
            (Ok(v), Some(exp), _) => {
                let j = value_to_json(&v);
                if &j != exp {
                    failures.push(format!("{name}: {tpl}\n   expected {exp}\n   got      {j}"));
                }
            }
            (Err(e), Some(exp), _) => {
                failures.push(format!("{name}: {tpl}\n   expected {exp}\n   error    {e}"))
            }
            (Ok(v), None, Some(exp)) => failures.push(format!(
                "{name}: {tpl}\n   expected error {exp}\n   got {}",
                value_to_json(&v)
            )),
            (Err(e), None, Some(exp)) => {
                let msg = e.to_string();
                if !msg.contains(exp.as_str().unwrap()) {
                    failures.push(format!(
                        "{name}: {tpl}\n   expected error containing {exp}\n   got {msg}"
                    ));
                }
            }
            _ => failures.push(format!("{name}: case needs `expected` or `error`")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn scope_of(pairs: &[(&str, Value)]) -> Scope {
    let mut layer = VarMap::new();
    for (k, v) in pairs {
        layer.insert(k.to_string(), v.clone());
    }
    let mut s = Scope::new();
    s.push(Arc::new(layer));
    s
}

fn json(s: &str) -> Value {
    value_from_json(&serde_json::from_str(s).unwrap())
}

#[test]
fn render_value_renders_deeply_and_drops_omitted_entries() {
    let t = Templar::new();
    let scope = scope_of(&[("name", Value::from("web")), ("port", Value::from(8080))]);
    let args = json(
        r#"{"dest": "/etc/{{ name }}.conf", "mode": "{{ mode | default(omit) }}",
            "port": "{{ port }}", "list": ["{{ name }}", "{{ omit }}", 3], "plain": "x"}"#,
    );
    let out = t.render_value(&args, &scope, &origin()).unwrap();
    assert_eq!(
        value_to_json(&out),
        serde_json::json!({"dest": "/etc/web.conf", "port": 8080, "list": ["web", 3], "plain": "x"})
    );
}

#[test]
fn unsafe_strings_are_never_templated() {
    let t = Templar::new();
    let scope = scope_of(&[
        ("raw", unsafe_string("{{ not_a_var }}")),
        ("b", Value::from("x")),
    ]);
    // Through a variable, directly, inside a value, and through string ops.
    let r = |s: &str| t.render_str(s, &scope, &origin()).unwrap();
    assert_eq!(r("{{ raw }}").as_str(), Some("{{ not_a_var }}"));
    assert_eq!(r("{{ raw ~ b }}").as_str(), Some("{{ not_a_var }}x"));
    assert_eq!(r("{{ raw | upper }}").as_str(), Some("{{ NOT_A_VAR }}"));
    assert_eq!(r("{{ raw == '{{ not_a_var }}' }}"), Value::from(true));
    let v = Value::from(vec![unsafe_string("{{ x }}")]);
    let out = t.render_value(&v, &scope, &origin()).unwrap();
    assert_eq!(value_to_json(&out), serde_json::json!(["{{ x }}"]));
}

fn task_origin() -> TemplateOrigin {
    let src = Source::new(
        "site.yml",
        "- hosts: all\n  tasks:\n    - debug:\n        msg: \"{{ fooo.bar }}\"\n",
    );
    TemplateOrigin {
        span: Some(Span::new(src, Pos { line: 4, col: 14 })),
        label: Some("task 'debug'".into()),
        host: Some("web1".into()),
        search_paths: vec![fixtures()],
    }
}

#[test]
fn undefined_error_names_variable_place_and_host() {
    let t = Templar::new();
    let scope = scope_of(&[("foo", json(r#"{"bar": 1}"#))]);
    let err = t
        .render_str("{{ fooo.bar }}", &scope, &task_origin())
        .unwrap_err();
    assert_eq!(err.undefined.as_deref(), Some("fooo"));
    insta::assert_snapshot!("undefined_error", err.to_string());
}

#[test]
fn undefined_inside_lazy_variable_reports_inner_name() {
    let t = Templar::new();
    let scope = scope_of(&[("greeting", Value::from("hello {{ who }}"))]);
    let err = t
        .render_str("say {{ greeting }}", &scope, &task_origin())
        .unwrap_err();
    assert_eq!(err.undefined.as_deref(), Some("who"));
    insta::assert_snapshot!("lazy_undefined_error", err.to_string());
}

#[test]
fn recursive_variables_fail_cleanly() {
    let t = Templar::new();
    let scope = scope_of(&[("a", Value::from("{{ b }}")), ("b", Value::from("{{ a }}"))]);
    let err = t.render_str("{{ a }}", &scope, &task_origin()).unwrap_err();
    insta::assert_snapshot!("recursive_error", err.to_string());
}

#[test]
fn conditions_follow_ansible() {
    let t = Templar::new();
    let scope = scope_of(&[
        ("x", Value::from(3)),
        ("s", Value::from("false")),
        ("empty", json("[]")),
    ]);
    let o = origin();
    let c = |v: &[&str]| {
        t.eval_conditions(
            &v.iter().map(|s| Condition::expr(*s)).collect::<Vec<_>>(),
            &scope,
            &o,
        )
    };
    assert!(c(&["x > 2", "x < 4"]).unwrap());
    assert!(!c(&["x > 2", "x > 4"]).unwrap());
    assert!(c(&["true"]).unwrap());
    assert!(!c(&["False"]).unwrap());
    assert!(c(&[]).unwrap());
    // ansible-core 2.19: a result that is not a boolean fails, naming its
    // type ("Conditional result (False) was derived from value of type
    // 'list' at ..."), unless ALLOW_BROKEN_CONDITIONALS asks for Python's
    // truthiness (a non-empty string is true, an empty list false).
    for (cond, held, ty) in [
        ("s", "True", "str"),
        ("empty", "False", "list"),
        ("x", "True", "int"),
    ] {
        let err = c(&[cond]).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "Conditional result ({held}) was derived from value of type '{ty}' at "
            )) && err.contains("Conditionals must have a boolean result.")
                && err.contains("ALLOW_BROKEN_CONDITIONALS"),
            "{err}"
        );
    }
    let lenient = Templar::with_broken_conditionals(true);
    let judged = |v: &str| lenient.eval_conditions(&[Condition::expr(v)], &scope, &o);
    assert!(judged("s").unwrap());
    assert!(!judged("empty").unwrap());
    // `and`/`or` give one of their operands, as in Python: `x > 2 and s`
    // is the string.
    assert!(c(&["x > 2 and s"]).is_err());
    assert!(c(&["s and x > 2"]).unwrap());
    // A whole `{{ expr }}` is accepted (with a warning); templates inside a
    // larger expression are a syntax error, as in ansible-core 2.19.
    assert!(c(&["{{ x == 3 }}"]).unwrap());
    let err = c(&["{{ x }} == 4"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("Template delimiters are not supported in expressions"),
        "{err}"
    );
    let err = c(&["missing_var"]).unwrap_err();
    assert_eq!(err.undefined.as_deref(), Some("missing_var"));
    assert!(c(&["missing_var is not defined"]).unwrap());
}

#[test]
fn template_files_render_with_scope_and_trim_blocks() {
    let t = Templar::new();
    let scope = scope_of(&[
        ("users", json(r#"["ann", "bob"]"#)),
        ("inventory_hostname", Value::from("web1")),
    ]);
    let out = t
        .render_file(std::path::Path::new("users.conf.j2"), &scope, &origin())
        .unwrap();
    assert_eq!(out, "# Ansible managed\nuser ann\nuser bob\nhost=web1\n");
    let via_lookup = t
        .render_str(
            "{{ lookup('template', 'users.conf.j2') }}",
            &scope,
            &origin(),
        )
        .unwrap();
    assert_eq!(via_lookup.as_str(), Some(out.as_str()));
}

#[test]
fn password_lookup_stores_and_reuses_value() {
    let dir = tempfile::tempdir().unwrap();
    let t = Templar::new();
    let o = TemplateOrigin {
        search_paths: vec![dir.path().to_path_buf()],
        ..Default::default()
    };
    let scope = Scope::new();
    let tpl = "{{ lookup('password', 'creds/db length=16 chars=ascii_letters') }}";
    let first = t.render_str(tpl, &scope, &o).unwrap();
    let first = first.as_str().unwrap().to_string();
    assert_eq!(first.len(), 16);
    assert!(first.chars().all(|c| c.is_ascii_alphabetic()));
    let stored = std::fs::read_to_string(dir.path().join("creds/db")).unwrap();
    assert_eq!(stored.trim_end(), first);
    let second = t.render_str(tpl, &scope, &o).unwrap();
    assert_eq!(second.as_str(), Some(first.as_str()));
}

#[test]
fn run_lookup_backs_with_loops() {
    let t = Templar::new();
    let scope = Scope::new();
    let o = origin();
    let kw = VarMap::new();
    let items = t
        .run_lookup("items", json("[1, [2, 3], 4]"), &kw, &scope, &o)
        .unwrap();
    assert_eq!(
        value_to_json(&Value::from(items)),
        serde_json::json!([1, 2, 3, 4])
    );
    let dict = t
        .run_lookup("dict", json(r#"{"a": 1}"#), &kw, &scope, &o)
        .unwrap();
    assert_eq!(
        value_to_json(&Value::from(dict)),
        serde_json::json!([{"key": "a", "value": 1}])
    );
    let seq = t
        .run_lookup(
            "sequence",
            Value::from("start=1 end=3 format=n%d"),
            &kw,
            &scope,
            &o,
        )
        .unwrap();
    assert_eq!(
        value_to_json(&Value::from(seq)),
        serde_json::json!(["n1", "n2", "n3"])
    );
    let err = t
        .run_lookup("nope", Value::from("x"), &kw, &scope, &o)
        .unwrap_err();
    assert!(
        err.to_string().contains("lookup plugin 'nope' not found"),
        "{err}"
    );
}

#[test]
fn precedence_uses_highest_layer() {
    let t = Templar::new();
    let mut scope = scope_of(&[("v", Value::from("low")), ("w", Value::from("{{ v }}!"))]);
    scope.push(Arc::new(VarMap::from_iter([(
        "v".to_string(),
        Value::from("high"),
    )])));
    assert_eq!(
        t.render_str("{{ w }}", &scope, &origin()).unwrap().as_str(),
        Some("high!")
    );
}

/// Rendering must stay cheap: the same task arguments are rendered for every
/// host. Run with `cargo test --release --test template -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_small_template() {
    let t = Templar::new();
    let scope = scope_of(&[
        ("name", Value::from("web")),
        ("port", Value::from(8080)),
        ("pkgs", json(r#"["nginx", "curl"]"#)),
        ("greeting", Value::from("hi {{ name }}")),
    ]);
    let o = origin();
    let src = "{{ greeting }} {{ name | upper }}:{{ port + 1 }} {{ pkgs | join(',') }}";
    t.render_str(src, &scope, &o).unwrap();
    let n = 20_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(t.render_str(src, &scope, &o).unwrap());
    }
    let per = start.elapsed() / n;
    println!("render_str: {per:?} per render");
    let cond = vec![Condition::expr("port > 80 and name == 'web'")];
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(t.eval_conditions(&cond, &scope, &o).unwrap());
    }
    println!("eval_conditions: {:?} per eval", start.elapsed() / n);
    assert!(per < std::time::Duration::from_micros(200), "{per:?}");
}
