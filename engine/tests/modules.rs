//! Module tests: every module runs through the real local connection inside a
//! temp directory, and the tests check the filesystem itself (content, modes,
//! link targets), the reported `changed`, idempotency with its round-trip
//! count, check mode, diffs, and that hostile strings are never executed.
//! Data-driven tables live in `fixtures/modules/*.json`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel::modules::{
    self, round_trips_on_this_thread, Args, ModuleError, ModuleResult, TaskContext,
};
use keel::template::{value_from_json, value_to_json, Scope, Templar, TemplateOrigin};
use keel::transport::Connection;
use keel::vars::VarMap;
use minijinja::Value;
use serde_json::json;

/// One sandbox: a temp dir (also the controller search path) and the
/// things a [`TaskContext`] borrows.
struct Sandbox {
    dir: tempfile::TempDir,
    conn: Connection,
    templar: Arc<Templar>,
    scope: Scope,
    origin: TemplateOrigin,
    search: Vec<PathBuf>,
}

/// What one module run produced, plus how many commands it sent.
struct Run {
    res: ModuleResult,
    trips: u64,
}

#[derive(Clone, Copy, Default)]
struct Mode {
    check: bool,
    diff: bool,
}

const NORMAL: Mode = Mode {
    check: false,
    diff: false,
};
const CHECK: Mode = Mode {
    check: true,
    diff: true,
};
const DIFF: Mode = Mode {
    check: false,
    diff: true,
};

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox::with_vars(json!({}))
    }

    fn with_vars(vars: serde_json::Value) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let mut layer = VarMap::new();
        for (k, v) in vars.as_object().unwrap() {
            layer.insert(k.clone(), value_from_json(v));
        }
        let mut scope = Scope::new();
        scope.push(Arc::new(layer));
        let search = vec![dir.path().join("controller")];
        std::fs::create_dir_all(&search[0]).unwrap();
        Sandbox {
            origin: TemplateOrigin {
                search_paths: search.clone(),
                ..Default::default()
            },
            dir,
            conn: Connection::local(),
            templar: Templar::new(),
            scope,
            search,
        }
    }

    /// A path inside the sandbox, as a string.
    fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a controller-side file (under the search path).
    fn controller_file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.search[0].join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    fn try_run(
        &self,
        module: &str,
        args: serde_json::Value,
        mode: Mode,
    ) -> Result<Run, ModuleError> {
        let m =
            modules::lookup(module).unwrap_or_else(|| panic!("module {module} is not registered"));
        let args: Args = args
            .as_object()
            .expect("args must be an object")
            .iter()
            .map(|(k, v)| (k.clone(), value_from_json(v)))
            .collect();
        let ctx = TaskContext {
            host: "testhost",
            conn: &self.conn,
            templar: &self.templar,
            scope: &self.scope,
            origin: &self.origin,
            check_mode: mode.check,
            diff: mode.diff,
            no_log: false,
            become_: None,
            env: Vec::new(),
            search_paths: &self.search,
            timeout: Some(std::time::Duration::from_secs(60)),
        };
        // A current-thread runtime keeps the round-trip counter on this thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let before = round_trips_on_this_thread();
        let res = rt.block_on(m.run(&args, &ctx))?;
        Ok(Run {
            res,
            trips: round_trips_on_this_thread() - before,
        })
    }

    fn run(&self, module: &str, args: serde_json::Value, mode: Mode) -> Run {
        match self.try_run(module, args.clone(), mode) {
            Ok(r) => r,
            Err(e) => panic!("{module} {args}: {e}"),
        }
    }

    /// Runs twice: the first run must change and the second must not, with
    /// exactly one round trip.
    fn converge(&self, module: &str, args: serde_json::Value) -> Run {
        let first = self.run(module, args.clone(), NORMAL);
        assert!(
            !first.res.failed,
            "{module} {args} failed: {:?}",
            first.res.msg
        );
        assert!(
            first.res.changed,
            "{module} {args}: first run should change"
        );
        let second = self.run(module, args.clone(), NORMAL);
        assert!(
            !second.res.failed,
            "{module} {args} failed on rerun: {:?}",
            second.res.msg
        );
        assert!(
            !second.res.changed,
            "{module} {args}: second run should not change"
        );
        assert_eq!(
            second.trips, 1,
            "{module} {args}: an unchanged run costs one round trip"
        );
        first
    }
}

fn data<'a>(r: &'a ModuleResult, key: &str) -> &'a Value {
    r.data.get(key).unwrap_or_else(|| {
        panic!(
            "no '{key}' in result: {:?}",
            r.data.keys().collect::<Vec<_>>()
        )
    })
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn fixture(name: &str) -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/modules")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

// ---------------------------------------------------------------- copy

#[test]
fn copy_content_converges_in_two_then_one_round_trip() {
    let s = Sandbox::new();
    let dest = s.p("motd");
    let first = s.converge(
        "copy",
        json!({"content": "hello\n", "dest": dest, "mode": "0640"}),
    );
    assert_eq!(first.trips, 2, "query + apply");
    assert_eq!(read(&s.path("motd")), "hello\n");
    assert_eq!(mode_of(&s.path("motd")), 0o640);
    assert_eq!(
        data(&first.res, "checksum").as_str(),
        Some("f572d396fae9206628714fb2ce00f72e94f2258f")
    );
    assert_eq!(data(&first.res, "mode").as_str(), Some("0640"));
    assert_eq!(data(&first.res, "size").as_i64(), Some(6));
    assert_eq!(data(&first.res, "state").as_str(), Some("file"));
    // Only the mode differs: still a change, content untouched.
    let r = s.run(
        "copy",
        json!({"content": "hello\n", "dest": dest, "mode": "u=rw,go="}),
        NORMAL,
    );
    assert!(r.res.changed);
    assert_eq!(mode_of(&s.path("motd")), 0o600);
}

#[test]
fn copy_check_mode_reports_change_and_diff_without_writing() {
    let s = Sandbox::new();
    std::fs::write(s.path("f"), "old\n").unwrap();
    let r = s.run("copy", json!({"content": "new\n", "dest": s.p("f")}), CHECK);
    assert!(r.res.changed);
    assert_eq!(r.trips, 1);
    assert_eq!(read(&s.path("f")), "old\n");
    assert_eq!(r.res.diff.len(), 1);
    assert_eq!(r.res.diff[0].before, "old\n");
    assert_eq!(r.res.diff[0].after, "new\n");
    // A new file: nothing is created in check mode.
    let r = s.run("copy", json!({"content": "x", "dest": s.p("nope")}), CHECK);
    assert!(r.res.changed);
    assert!(!s.path("nope").exists());
}

#[test]
fn copy_mode_forms_are_coerced_like_ansible() {
    let s = Sandbox::new();
    for (i, (mode, want)) in [
        (json!("0644"), 0o644),
        (json!("600"), 0o600),
        (json!(0o755), 0o755),
        (json!("0o700"), 0o700),
        (json!("u=rw,g=r,o=r"), 0o644),
        (json!("a=r"), 0o444),
    ]
    .into_iter()
    .enumerate()
    {
        let dest = s.p(&format!("m{i}"));
        s.run(
            "copy",
            json!({"content": "x", "dest": dest, "mode": mode}),
            NORMAL,
        );
        assert_eq!(mode_of(Path::new(&dest)), want, "mode {mode}");
    }
}

#[test]
fn copy_src_file_into_directory_dest_uses_basename() {
    let s = Sandbox::new();
    s.controller_file("files/app.conf", "port=80\n");
    std::fs::create_dir(s.path("etc")).unwrap();
    let r = s.converge("copy", json!({"src": "app.conf", "dest": s.p("etc")}));
    assert_eq!(read(&s.path("etc/app.conf")), "port=80\n");
    assert_eq!(
        data(&r.res, "dest").as_str(),
        Some(s.p("etc/app.conf").as_str())
    );
    // Trailing slash on dest: the directory is created.
    s.run(
        "copy",
        json!({"src": "app.conf", "dest": format!("{}/", s.p("new"))}),
        NORMAL,
    );
    assert_eq!(read(&s.path("new/app.conf")), "port=80\n");
}

#[test]
fn copy_directory_follows_trailing_slash_semantics() {
    let s = Sandbox::new();
    s.controller_file("files/site/index.html", "<h1>hi</h1>\n");
    s.controller_file("files/site/css/main.css", "body{}\n");
    std::fs::create_dir(s.path("www")).unwrap();
    let r = s.run("copy", json!({"src": "site", "dest": s.p("www")}), NORMAL);
    assert!(r.res.changed && !r.res.failed, "{:?}", r.res.msg);
    assert_eq!(read(&s.path("www/site/index.html")), "<h1>hi</h1>\n");
    assert_eq!(read(&s.path("www/site/css/main.css")), "body{}\n");
    let again = s.run("copy", json!({"src": "site", "dest": s.p("www")}), NORMAL);
    assert!(!again.res.changed);
    assert_eq!(again.trips, 1);

    let r = s.run("copy", json!({"src": "site/", "dest": s.p("flat")}), NORMAL);
    assert!(r.res.changed, "{:?}", r.res.msg);
    assert_eq!(read(&s.path("flat/index.html")), "<h1>hi</h1>\n");
    assert_eq!(read(&s.path("flat/css/main.css")), "body{}\n");
    // One file changes: only it is rewritten.
    s.controller_file("files/site/css/main.css", "body{margin:0}\n");
    let r = s.run("copy", json!({"src": "site/", "dest": s.p("flat")}), NORMAL);
    assert!(r.res.changed);
    assert_eq!(read(&s.path("flat/css/main.css")), "body{margin:0}\n");
}

#[test]
fn copy_force_no_keeps_an_existing_file() {
    let s = Sandbox::new();
    std::fs::write(s.path("keep"), "mine\n").unwrap();
    let r = s.run(
        "copy",
        json!({"content": "theirs\n", "dest": s.p("keep"), "force": "no"}),
        NORMAL,
    );
    assert!(!r.res.changed);
    assert_eq!(read(&s.path("keep")), "mine\n");
}

#[test]
fn copy_validate_failure_leaves_dest_untouched() {
    let s = Sandbox::new();
    std::fs::write(s.path("sudoers"), "good\n").unwrap();
    let r = s.run(
        "copy",
        json!({"content": "bad\n", "dest": s.p("sudoers"), "validate": "grep -q good %s"}),
        NORMAL,
    );
    assert!(r.res.failed);
    assert!(
        r.res.msg.as_deref().unwrap().contains("failed to validate"),
        "{:?}",
        r.res.msg
    );
    assert_eq!(read(&s.path("sudoers")), "good\n");
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".keel"))
        .collect();
    assert!(leftovers.is_empty(), "temp file left behind");
    let r = s.run(
        "copy",
        json!({"content": "good too\n", "dest": s.p("sudoers"), "validate": "grep -q good %s"}),
        NORMAL,
    );
    assert!(r.res.changed && !r.res.failed);
    assert_eq!(read(&s.path("sudoers")), "good too\n");
}

#[test]
fn copy_backup_keeps_the_previous_content() {
    let s = Sandbox::new();
    std::fs::write(s.path("conf"), "v1\n").unwrap();
    let r = s.run(
        "copy",
        json!({"content": "v2\n", "dest": s.p("conf"), "backup": true}),
        NORMAL,
    );
    let backup = data(&r.res, "backup_file").as_str().unwrap().to_string();
    assert!(
        backup.starts_with(&s.p("conf.")) && backup.ends_with('~'),
        "{backup}"
    );
    assert_eq!(read(Path::new(&backup)), "v1\n");
    assert_eq!(read(&s.path("conf")), "v2\n");
}

#[test]
fn copy_keeps_existing_mode_when_none_given() {
    let s = Sandbox::new();
    std::fs::write(s.path("x"), "a").unwrap();
    std::fs::set_permissions(s.path("x"), std::fs::Permissions::from_mode(0o751)).unwrap();
    s.run("copy", json!({"content": "b", "dest": s.p("x")}), NORMAL);
    assert_eq!(mode_of(&s.path("x")), 0o751);
}

#[test]
fn copy_remote_src() {
    let s = Sandbox::new();
    std::fs::write(s.path("a"), "remote\n").unwrap();
    s.converge(
        "copy",
        json!({"src": s.p("a"), "dest": s.p("b"), "remote_src": true}),
    );
    assert_eq!(read(&s.path("b")), "remote\n");
}

#[test]
fn unknown_argument_gets_ansible_cores_message() {
    let s = Sandbox::new();
    let err = s
        .try_run("copy", json!({"content": "x", "dets": "/tmp/x"}), NORMAL)
        .err()
        .unwrap();
    insta::assert_snapshot!("copy_unknown_argument", err.to_string());
    let err = s
        .try_run("file", json!({"path": s.p("x"), "state": "dir"}), NORMAL)
        .err()
        .unwrap();
    insta::assert_snapshot!(
        "file_bad_choice",
        err.to_string().replace(&s.p(""), "<tmp>/")
    );
    let err = s
        .try_run(
            "copy",
            json!({"content": "x", "dest": s.p("x"), "force": "maybe"}),
            NORMAL,
        )
        .err()
        .unwrap();
    insta::assert_snapshot!("copy_bad_bool", err.to_string());
    let err = s
        .try_run(
            "copy",
            json!({"content": "x", "dest": "/x", "mdoe": "0644"}),
            NORMAL,
        )
        .err()
        .unwrap();
    insta::assert_snapshot!("copy_unknown_optional_argument", err.to_string());
    let err = s
        .try_run(
            "command",
            json!({"_raw_params": "true", "chdri": "/"}),
            NORMAL,
        )
        .err()
        .unwrap();
    insta::assert_snapshot!("command_unknown_argument", err.to_string());
    let err = s.try_run("stat", json!({}), NORMAL).err().unwrap();
    insta::assert_snapshot!("stat_missing_path", err.to_string());
}

// ---------------------------------------------------------------- file

#[test]
fn file_states_from_fixture_table() {
    let cases = fixture("file_cases.json");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let s = Sandbox::new();
        for (rel, content) in case["setup"]["files"].as_object().into_iter().flatten() {
            std::fs::create_dir_all(s.path(rel).parent().unwrap()).unwrap();
            std::fs::write(s.path(rel), content.as_str().unwrap()).unwrap();
        }
        for rel in case["setup"]["dirs"].as_array().into_iter().flatten() {
            std::fs::create_dir_all(s.path(rel.as_str().unwrap())).unwrap();
        }
        for (rel, m) in case["setup"]["modes"].as_object().into_iter().flatten() {
            let m = u32::from_str_radix(m.as_str().unwrap(), 8).unwrap();
            std::fs::set_permissions(s.path(rel), std::fs::Permissions::from_mode(m)).unwrap();
        }
        // `@/` in argument strings stands for the sandbox directory.
        let args: serde_json::Value = serde_json::from_str(
            &case["args"]
                .to_string()
                .replace("@/", &format!("{}/", s.p("")).replace("//", "/")),
        )
        .unwrap();
        let r = s.run("file", args.clone(), NORMAL);
        let want_changed = case["changed"].as_bool().unwrap();
        let want_failed = case["failed"].as_bool().unwrap_or(false);
        assert_eq!(
            r.res.failed, want_failed,
            "{name}: failed ({:?})",
            r.res.msg
        );
        assert_eq!(r.res.changed, want_changed, "{name}: changed");
        let e = &case["expect"];
        let target = s.path(e["path"].as_str().unwrap_or(""));
        match e["kind"].as_str() {
            Some("dir") => assert!(target.is_dir(), "{name}: not a dir"),
            Some("file") => assert!(
                std::fs::symlink_metadata(&target).unwrap().is_file(),
                "{name}: not a file"
            ),
            Some("absent") => assert!(
                std::fs::symlink_metadata(&target).is_err(),
                "{name}: still there"
            ),
            Some("link") => {
                let t = std::fs::read_link(&target).unwrap();
                let want = e["target"]
                    .as_str()
                    .unwrap()
                    .replace("@/", &format!("{}/", s.p("")).replace("//", "/"));
                assert_eq!(t.display().to_string(), want, "{name}: link target");
            }
            Some("hard") => {
                let a = std::fs::metadata(&target).unwrap();
                let b = std::fs::metadata(s.path(e["same_as"].as_str().unwrap())).unwrap();
                assert_eq!(a.ino(), b.ino(), "{name}: not the same inode");
            }
            _ => {}
        }
        if let Some(m) = e["mode"].as_str() {
            assert_eq!(
                mode_of(&target),
                u32::from_str_radix(m, 8).unwrap(),
                "{name}: mode"
            );
        }
        if let Some(m) = e["modes"].as_object() {
            for (rel, want) in m {
                assert_eq!(
                    mode_of(&s.path(rel)),
                    u32::from_str_radix(want.as_str().unwrap(), 8).unwrap(),
                    "{name}: mode of {rel}"
                );
            }
        }
        if !want_failed && case["idempotent"].as_bool().unwrap_or(true) {
            let again = s.run("file", args.clone(), NORMAL);
            assert!(!again.res.changed, "{name}: second run changed");
            assert_eq!(again.trips, 1, "{name}: second run round trips");
        }
    }
}

#[test]
fn file_check_mode_and_diff() {
    let s = Sandbox::new();
    let r = s.run(
        "file",
        json!({"path": s.p("d/e"), "state": "directory"}),
        CHECK,
    );
    assert!(r.res.changed);
    assert!(!s.path("d").exists());
    assert_eq!(r.trips, 1);
    assert!(r.res.diff[0].before.contains("state: absent"));
    assert!(r.res.diff[0].after.contains("state: directory"));
    let r = s.run(
        "file",
        json!({"path": s.p("d/e"), "state": "directory"}),
        DIFF,
    );
    assert!(r.res.changed);
    assert!(s.path("d/e").is_dir());
    assert_eq!(data(&r.res, "state").as_str(), Some("directory"));
}

#[test]
fn file_owner_by_name_is_idempotent() {
    let s = Sandbox::new();
    std::fs::write(s.path("f"), "").unwrap();
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8(me.stdout).unwrap().trim().to_string();
    let r = s.run(
        "file",
        json!({"path": s.p("f"), "owner": me, "state": "file"}),
        NORMAL,
    );
    assert!(!r.res.changed, "owner already matches");
    assert_eq!(data(&r.res, "owner").as_str(), Some(me.as_str()));
}

// ---------------------------------------------------------------- line editors

#[test]
fn lineinfile_cases_from_fixture_table() {
    editor_cases("lineinfile", "lineinfile_cases.json");
}

#[test]
fn blockinfile_cases_from_fixture_table() {
    editor_cases("blockinfile", "blockinfile_cases.json");
}

#[test]
fn replace_cases_from_fixture_table() {
    editor_cases("replace", "replace_cases.json");
}

/// Each case: initial content (or null = absent), args (path filled in),
/// expected content (null = absent), expected changed; then a rerun must be
/// a no-op in one round trip.
fn editor_cases(module: &str, file: &str) {
    let cases = fixture(file);
    let mut failures = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let s = Sandbox::new();
        let path = s.path("target");
        if let Some(init) = case["initial"].as_str() {
            std::fs::write(&path, init).unwrap();
        }
        let mut args = case["args"].clone();
        args["path"] = json!(path.display().to_string());
        let r = match s.try_run(module, args.clone(), NORMAL) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: error {e}"));
                continue;
            }
        };
        let want_failed = case["failed"].as_bool().unwrap_or(false);
        if r.res.failed != want_failed {
            failures.push(format!("{name}: failed={} ({:?})", r.res.failed, r.res.msg));
            continue;
        }
        if r.res.changed != case["changed"].as_bool().unwrap() {
            failures.push(format!(
                "{name}: changed={} msg={:?}",
                r.res.changed, r.res.msg
            ));
        }
        let got = std::fs::read_to_string(&path).ok();
        let want = case["expected"].as_str().map(str::to_string);
        if got != want {
            failures.push(format!("{name}:\n  expected {want:?}\n  got      {got:?}"));
        }
        if let Some(msg) = case["msg"].as_str() {
            if r.res.msg.as_deref() != Some(msg) {
                failures.push(format!("{name}: msg {:?} != {msg:?}", r.res.msg));
            }
        }
        if !want_failed {
            let again = s.run(module, args.clone(), NORMAL);
            if again.res.changed || again.trips != 1 {
                failures.push(format!(
                    "{name}: rerun changed={} trips={}",
                    again.res.changed, again.trips
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn lineinfile_check_mode_diff_and_backup() {
    let s = Sandbox::new();
    std::fs::write(s.path("hosts"), "127.0.0.1 localhost\n").unwrap();
    let args = json!({"path": s.p("hosts"), "line": "10.0.0.1 db", "backup": true});
    let r = s.run("lineinfile", args.clone(), CHECK);
    assert!(r.res.changed);
    assert_eq!(read(&s.path("hosts")), "127.0.0.1 localhost\n");
    assert_eq!(r.res.diff[0].after, "127.0.0.1 localhost\n10.0.0.1 db\n");
    let r = s.run("lineinfile", args, NORMAL);
    assert!(r.res.changed);
    let backup = data(&r.res, "backup").as_str().unwrap().to_string();
    assert_eq!(read(Path::new(&backup)), "127.0.0.1 localhost\n");
}

// ---------------------------------------------------------------- inspection

#[test]
fn stat_reports_ansible_fields() {
    let s = Sandbox::new();
    std::fs::write(s.path("f"), "hello\n").unwrap();
    std::fs::set_permissions(s.path("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(s.path("f"), s.path("l")).unwrap();
    let r = s.run("stat", json!({"path": s.p("f")}), NORMAL);
    assert_eq!(r.trips, 1);
    assert!(!r.res.changed);
    let st = data(&r.res, "stat");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert!(st.get_attr("exists").unwrap().is_true());
    assert_eq!(st.get_attr("mode").unwrap().as_str(), Some("0640"));
    assert!(st.get_attr("isreg").unwrap().is_true());
    assert!(!st.get_attr("isdir").unwrap().is_true());
    assert_eq!(st.get_attr("size").unwrap().as_i64(), Some(6));
    assert_eq!(
        st.get_attr("uid").unwrap().as_i64(),
        Some(meta.uid() as i64)
    );
    assert_eq!(
        st.get_attr("inode").unwrap().as_i64(),
        Some(meta.ino() as i64)
    );
    assert_eq!(
        st.get_attr("checksum").unwrap().as_str(),
        Some("f572d396fae9206628714fb2ce00f72e94f2258f")
    );
    assert!(st
        .get_attr("pw_name")
        .unwrap()
        .as_str()
        .is_some_and(|n| !n.is_empty()));

    let r = s.run("stat", json!({"path": s.p("l")}), NORMAL);
    let st = data(&r.res, "stat");
    assert!(st.get_attr("islnk").unwrap().is_true());
    assert_eq!(
        st.get_attr("lnk_source").unwrap().as_str(),
        Some(s.p("f").as_str())
    );
    let r = s.run(
        "stat",
        json!({"path": s.p("l"), "follow": true, "checksum_algorithm": "sha256"}),
        NORMAL,
    );
    let st = data(&r.res, "stat");
    assert!(st.get_attr("isreg").unwrap().is_true());
    assert_eq!(
        st.get_attr("checksum").unwrap().as_str(),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    );
    let r = s.run("stat", json!({"path": s.p("missing")}), NORMAL);
    assert!(!data(&r.res, "stat").get_attr("exists").unwrap().is_true());
}

#[test]
fn slurp_returns_base64() {
    let s = Sandbox::new();
    std::fs::write(s.path("b"), b"\x00\x01bin\n").unwrap();
    let r = s.run("slurp", json!({"src": s.p("b")}), NORMAL);
    assert_eq!(data(&r.res, "content").as_str(), Some("AAFiaW4K"));
    assert_eq!(data(&r.res, "encoding").as_str(), Some("base64"));
    let r = s.run("slurp", json!({"src": s.p("nope")}), NORMAL);
    assert!(r.res.failed);
}

#[test]
fn fetch_writes_under_host_dir_unless_flat() {
    let s = Sandbox::new();
    std::fs::write(s.path("remote.txt"), "data\n").unwrap();
    let out = s.p("fetched");
    let r = s.run(
        "fetch",
        json!({"src": s.p("remote.txt"), "dest": out}),
        NORMAL,
    );
    assert!(r.res.changed, "{:?}", r.res.msg);
    let local = PathBuf::from(&out)
        .join("testhost")
        .join(s.p("remote.txt").trim_start_matches('/'));
    assert_eq!(read(&local), "data\n");
    let again = s.run(
        "fetch",
        json!({"src": s.p("remote.txt"), "dest": out}),
        NORMAL,
    );
    assert!(!again.res.changed);
    assert_eq!(again.trips, 1);
    let r = s.run(
        "fetch",
        json!({"src": s.p("remote.txt"), "dest": format!("{out}/flat/"), "flat": true}),
        NORMAL,
    );
    assert!(r.res.changed);
    assert_eq!(read(&PathBuf::from(&out).join("flat/remote.txt")), "data\n");
    let r = s.run("fetch", json!({"src": s.p("missing"), "dest": out}), NORMAL);
    assert!(r.res.failed);
    let r = s.run(
        "fetch",
        json!({"src": s.p("missing"), "dest": out, "fail_on_missing": false}),
        NORMAL,
    );
    assert!(!r.res.failed && !r.res.changed);
}

#[test]
fn find_filters_like_ansible() {
    let s = Sandbox::new();
    for (rel, body) in [
        ("logs/a.log", "error here\n"),
        ("logs/b.log", "fine\n"),
        ("logs/c.txt", "error\n"),
        ("logs/.hidden.log", "x\n"),
        ("logs/sub/d.log", &"y".repeat(3000)),
    ] {
        std::fs::create_dir_all(s.path(rel).parent().unwrap()).unwrap();
        std::fs::write(s.path(rel), body).unwrap();
    }
    let names = |r: &Run| -> Vec<String> {
        let mut v: Vec<String> = data(&r.res, "files")
            .try_iter()
            .unwrap()
            .map(|f| {
                f.get_attr("path")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    let logs = s.p("logs");
    let r = s.run("find", json!({"paths": logs, "patterns": "*.log"}), NORMAL);
    assert_eq!(r.trips, 1);
    assert_eq!(names(&r), ["a.log", "b.log"]);
    assert_eq!(data(&r.res, "matched").as_i64(), Some(2));
    let r = s.run(
        "find",
        json!({"paths": logs, "patterns": ["*.log"], "recurse": true, "hidden": true}),
        NORMAL,
    );
    assert_eq!(names(&r), [".hidden.log", "a.log", "b.log", "d.log"]);
    let r = s.run(
        "find",
        json!({"paths": [logs], "contains": "err.r", "recurse": true}),
        NORMAL,
    );
    assert_eq!(names(&r), ["a.log", "c.txt"]);
    let r = s.run(
        "find",
        json!({"paths": logs, "file_type": "directory"}),
        NORMAL,
    );
    assert_eq!(names(&r), ["sub"]);
    let r = s.run(
        "find",
        json!({"paths": logs, "recurse": true, "size": "2k"}),
        NORMAL,
    );
    assert_eq!(names(&r), ["d.log"]);
    let r = s.run(
        "find",
        json!({"paths": logs, "patterns": "^[ab]\\.log$", "use_regex": true}),
        NORMAL,
    );
    assert_eq!(names(&r), ["a.log", "b.log"]);
    let r = s.run("find", json!({"paths": logs, "excludes": "a.*"}), NORMAL);
    assert_eq!(names(&r), ["b.log", "c.txt"]);
    let r = s.run("find", json!({"paths": logs, "age": "1d"}), NORMAL);
    assert!(names(&r).is_empty(), "everything is newer than a day");
    let f = data(&r.res, "files");
    assert_eq!(f.len(), Some(0));
    let r = s.run("find", json!({"paths": logs, "patterns": "a.log"}), NORMAL);
    let first = data(&r.res, "files").get_item_by_index(0).unwrap();
    assert_eq!(first.get_attr("size").unwrap().as_i64(), Some(11));
    assert!(first.get_attr("isreg").unwrap().is_true());
}

// ---------------------------------------------------------------- commands

#[test]
fn command_runs_argv_without_a_shell() {
    let s = Sandbox::new();
    let home = std::env::var("HOME").unwrap();
    let r = s.run(
        "command",
        json!({"_raw_params": "echo 'a  b' $HOME ;ls"}),
        NORMAL,
    );
    assert!(r.res.changed && !r.res.failed);
    assert_eq!(r.trips, 1);
    // Like Ansible, `$VAR` is expanded (by parameter lookup, never a shell).
    assert_eq!(
        data(&r.res, "stdout").as_str(),
        Some(format!("a  b {home} ;ls").as_str())
    );
    assert_eq!(data(&r.res, "rc").as_i64(), Some(0));
    assert_eq!(
        value_to_json(data(&r.res, "cmd")),
        json!(["echo", "a  b", "$HOME", ";ls"])
    );
    assert_eq!(
        value_to_json(data(&r.res, "stdout_lines")),
        json!([format!("a  b {home} ;ls")])
    );
    for k in ["start", "end", "delta", "stderr", "stderr_lines"] {
        assert!(r.res.data.contains_key(k), "missing {k}");
    }
    let r = s.run(
        "command",
        json!({"argv": ["printf", "%s|", "x y", "$(id)", "`id`", "${HOME}/x", "$KEEL_UNSET_VAR", "~/y", "a$", "$1", "${bad-name}"]}),
        NORMAL,
    );
    assert_eq!(
        data(&r.res, "stdout").as_str(),
        Some(
            format!("x y|$(id)|`id`|{home}/x|$KEEL_UNSET_VAR|{home}/y|a$|$1|${{bad-name}}|")
                .as_str()
        )
    );
    let r = s.run(
        "command",
        json!({"argv": ["echo", "$HOME"], "expand_argument_vars": false}),
        NORMAL,
    );
    assert_eq!(data(&r.res, "stdout").as_str(), Some("$HOME"));
    let r = s.run("command", json!({"cmd": "cat", "stdin": "fed"}), NORMAL);
    assert_eq!(data(&r.res, "stdout").as_str(), Some("fed"));
    let r = s.run("command", json!({"cmd": "pwd", "chdir": s.p("")}), NORMAL);
    assert_eq!(
        data(&r.res, "stdout").as_str(),
        Some(s.p("").trim_end_matches('/'))
    );
}

#[test]
fn command_nonzero_rc_fails() {
    let s = Sandbox::new();
    let r = s.run(
        "command",
        json!({"_raw_params": "sh -c 'echo oops >&2; exit 3'"}),
        NORMAL,
    );
    assert!(r.res.failed);
    assert_eq!(r.res.msg.as_deref(), Some("non-zero return code"));
    assert_eq!(data(&r.res, "rc").as_i64(), Some(3));
    assert_eq!(data(&r.res, "stderr").as_str(), Some("oops"));
}

#[test]
fn command_creates_and_removes_skip_in_the_same_round_trip() {
    let s = Sandbox::new();
    let marker = s.p("made");
    let args = json!({"_raw_params": format!("touch {marker}"), "creates": marker});
    let r = s.run("command", args.clone(), NORMAL);
    assert!(r.res.changed);
    assert!(s.path("made").exists());
    let r = s.run("command", args, NORMAL);
    assert!(!r.res.changed);
    assert_eq!(r.trips, 1);
    assert!(r.res.msg.as_deref().unwrap().contains("exists"));
    // Globs in creates.
    let r = s.run(
        "command",
        json!({"_raw_params": "false", "creates": s.p("ma*")}),
        NORMAL,
    );
    assert!(!r.res.changed && !r.res.failed);
    // removes: runs only while the path exists.
    let args = json!({"_raw_params": format!("rm {marker}"), "removes": marker});
    assert!(s.run("command", args.clone(), NORMAL).res.changed);
    assert!(!s.path("made").exists());
    assert!(!s.run("command", args, NORMAL).res.changed);
}

#[test]
fn command_check_mode_skips_unless_creates_decides() {
    let s = Sandbox::new();
    let r = s.run(
        "command",
        json!({"_raw_params": format!("touch {}", s.p("x"))}),
        CHECK,
    );
    assert!(r.res.skipped);
    assert_eq!(r.trips, 0);
    assert!(!s.path("x").exists());
    let r = s.run(
        "command",
        json!({"_raw_params": format!("touch {}", s.p("x")), "creates": s.p("x")}),
        CHECK,
    );
    assert!(r.res.changed);
    assert!(!s.path("x").exists());
}

#[test]
fn shell_uses_a_shell() {
    let s = Sandbox::new();
    let r = s.run(
        "shell",
        json!({"_raw_params": "echo one two | wc -w; echo err >&2"}),
        NORMAL,
    );
    assert_eq!(data(&r.res, "stdout").as_str(), Some("2"));
    assert_eq!(data(&r.res, "stderr").as_str(), Some("err"));
    assert_eq!(
        data(&r.res, "cmd").as_str(),
        Some("echo one two | wc -w; echo err >&2")
    );
    let r = s.run(
        "shell",
        json!({"cmd": "echo $0", "executable": "/bin/bash"}),
        NORMAL,
    );
    assert_eq!(data(&r.res, "stdout").as_str(), Some("/bin/bash"));
    let r = s.run("shell", json!({"cmd": "exit 4"}), NORMAL);
    assert!(r.res.failed);
    assert_eq!(data(&r.res, "rc").as_i64(), Some(4));
    let r = s.run(
        "shell",
        json!({"cmd": "read x; echo \"got $x\"", "stdin": "line"}),
        NORMAL,
    );
    assert_eq!(data(&r.res, "stdout").as_str(), Some("got line"));
}

#[test]
fn raw_and_script() {
    let s = Sandbox::new();
    let r = s.run("raw", json!({"_raw_params": "echo raw; echo"}), NORMAL);
    assert_eq!(data(&r.res, "stdout").as_str(), Some("raw\n\n"));
    s.controller_file(
        "files/hello.sh",
        "#!/bin/sh\necho \"hi $1 from $(basename \"$0\" | cut -c1-3)\"\n",
    );
    let r = s.run(
        "script",
        json!({"_raw_params": "hello.sh 'big world'"}),
        NORMAL,
    );
    assert!(
        !r.res.failed,
        "{:?} {:?}",
        r.res.msg,
        r.res.data.get("stderr")
    );
    assert_eq!(r.trips, 1);
    assert!(data(&r.res, "stdout")
        .as_str()
        .unwrap()
        .starts_with("hi big world from "));
    s.controller_file("files/noshebang", "echo plain\n");
    let r = s.run(
        "script",
        json!({"_raw_params": "noshebang", "chdir": s.p("")}),
        NORMAL,
    );
    assert_eq!(data(&r.res, "stdout").as_str(), Some("plain"));
    let r = s.run("script", json!({"_raw_params": "missing.sh"}), NORMAL);
    assert!(r.res.failed);
}

/// ansible-core 2.19 (command_shell target): `executable` is ignored by
/// `command` with a warning; a program that cannot be found fails before it
/// starts, with empty output; a `chdir` that cannot be entered fails too.
#[test]
fn command_refusals_match_ansible_core() {
    let s = Sandbox::new();
    let r = s.run(
        "command",
        json!({"_raw_params": "echo hi", "executable": "/bogus"}),
        NORMAL,
    );
    assert!(!r.res.failed, "{:?}", r.res.msg);
    assert_eq!(data(&r.res, "stdout").as_str(), Some("hi"));
    let warnings = value_to_json(data(&r.res, "warnings"));
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .contains("no longer supported"));

    let r = s.run(
        "command",
        json!({"_raw_params": "keel-no-such-program --flag"}),
        NORMAL,
    );
    assert!(r.res.failed);
    assert_eq!(r.res.msg.as_deref(), Some("Error executing command."));
    assert_eq!(data(&r.res, "rc").as_i64(), Some(2));
    assert_eq!(data(&r.res, "stdout").as_str(), Some(""));
    assert_eq!(data(&r.res, "stderr").as_str(), Some(""));
    assert_eq!(
        data(&r.res, "cmd").as_str(),
        Some("keel-no-such-program --flag")
    );
    std::fs::write(s.path("plain"), "x").unwrap();
    let r = s.run("command", json!({"argv": [s.p("plain")]}), NORMAL);
    assert_eq!(data(&r.res, "rc").as_i64(), Some(13));

    let r = s.run(
        "command",
        json!({"_raw_params": "echo", "chdir": s.p("nope")}),
        NORMAL,
    );
    assert!(r.res.failed);
    assert_eq!(
        r.res.msg.as_deref(),
        Some("Unable to change directory before execution.")
    );
    let r = s.run("command", json!({"chdir": "/"}), NORMAL);
    assert_eq!(
        r.res.msg.as_deref(),
        Some("one of the following is required: _raw_params, cmd, argv")
    );
}

/// A process the command leaves in the background does not hold the task
/// (ansible-core stops reading once its child has exited), and `chdir`
/// enters the physical directory, as Python's `os.chdir` does.
#[test]
fn shell_returns_while_a_background_child_runs() {
    let s = Sandbox::new();
    let start = std::time::Instant::now();
    let r = s.run(
        "shell",
        json!({"_raw_params": "sleep 30 & echo started"}),
        NORMAL,
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(data(&r.res, "stdout").as_str(), Some("started"));
    std::fs::create_dir_all(s.path("real/sub")).unwrap();
    std::os::unix::fs::symlink(s.path("real"), s.path("link")).unwrap();
    let r = s.run(
        "shell",
        json!({"_raw_params": "dirname \"$PWD\"", "chdir": s.p("link/sub")}),
        NORMAL,
    );
    assert!(data(&r.res, "stdout").as_str().unwrap().ends_with("/real"));
    let r = s.run(
        "shell",
        json!({"_raw_params": "echo", "expand_argument_vars": false}),
        NORMAL,
    );
    assert_eq!(
        r.res.msg.as_deref(),
        Some("Unsupported parameters for (shell) module: expand_argument_vars")
    );
}

/// The script action skips (it does not report ok) when `creates`/`removes`
/// decide, and in check mode without them.
#[test]
fn script_skips_like_the_action_plugin() {
    let s = Sandbox::new();
    s.controller_file("files/touch.sh", "#!/bin/sh\ntouch \"$1\"\n");
    let made = s.p("made");
    let args = json!({"_raw_params": format!("touch.sh {made}"), "creates": made});
    let r = s.run("script", args.clone(), CHECK);
    assert!(r.res.changed && !r.res.skipped);
    assert!(!s.path("made").exists());
    assert!(s.run("script", args.clone(), NORMAL).res.changed);
    let r = s.run("script", args, NORMAL);
    assert!(r.res.skipped && !r.res.changed);
    assert_eq!(
        r.res.msg,
        Some(format!("{made} exists, matching creates option"))
    );
    let r = s.run(
        "script",
        json!({"_raw_params": "touch.sh x", "removes": s.p("gone")}),
        NORMAL,
    );
    assert_eq!(
        r.res.msg,
        Some(format!(
            "{} does not exist, matching removes option",
            s.p("gone")
        ))
    );
    let r = s.run("script", json!({"_raw_params": "touch.sh x"}), CHECK);
    assert!(r.res.skipped);
    assert_eq!(
        r.res.msg.as_deref(),
        Some("Check mode is not supported for this task.")
    );
    let r = s.run("script", json!({}), NORMAL);
    assert_eq!(
        r.res.msg.as_deref(),
        Some("one of the following is required: _raw_params, cmd")
    );
}

// ---------------------------------------------------------------- hostile values

/// Strings that would run `touch <marker>` if any shell ever interpreted them.
fn hostile(marker: &str) -> Vec<String> {
    vec![
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("x'; touch {marker}; echo '"),
        format!("x\"; touch {marker}; echo \""),
        format!("a;touch {marker}"),
        format!("a\ntouch {marker}\n"),
        format!("a && touch {marker}"),
        format!("|touch {marker}"),
    ]
}

#[test]
fn hostile_strings_are_never_executed() {
    let s = Sandbox::new();
    let marker = s.p("pwned");
    s.controller_file("templates/t.j2", "static\n");
    for h in hostile(&marker) {
        let name = h.replace(['\n', '/'], "_");
        let f = s.p(&format!(
            "dir/{}",
            name.chars().filter(|c| *c != '\'').collect::<String>()
        ));
        std::fs::create_dir_all(s.path("dir")).unwrap();
        let cases = vec![
            ("command", json!({"argv": ["echo", h]})),
            (
                "command",
                json!({"_raw_params": format!("echo {}", shell_words_quote(&h)), "chdir": h, "creates": h}),
            ),
            ("command", json!({"cmd": "true", "removes": h})),
            (
                "shell",
                json!({"cmd": "true", "creates": h, "removes": h, "chdir": s.p("")}),
            ),
            ("copy", json!({"content": h, "dest": f, "owner": h})),
            ("copy", json!({"content": h, "dest": f})),
            (
                "copy",
                json!({"content": h, "dest": format!("{f}.2"), "validate": format!("test -n %s {}", shell_words_quote(&h))}),
            ),
            // Inside the sandbox: a relative hostile name would be written
            // into the crate directory the test runs from.
            (
                "copy",
                json!({"content": "x", "dest": format!("{}/{h}", s.p("dir"))}),
            ),
            ("file", json!({"path": f, "state": "touch", "group": h})),
            (
                "file",
                json!({"path": format!("{f}.d"), "state": "directory", "mode": "0755"}),
            ),
            (
                "file",
                json!({"path": format!("{f}.l"), "state": "link", "src": h, "force": true}),
            ),
            ("lineinfile", json!({"path": f, "line": h, "regexp": "^x"})),
            (
                "lineinfile",
                json!({"path": f, "line": h, "insertafter": "a", "create": true}),
            ),
            (
                "blockinfile",
                json!({"path": f, "block": h, "marker": format!("# {{mark}} {h}")}),
            ),
            ("replace", json!({"path": f, "regexp": "a", "replace": h})),
            ("template", json!({"src": "t.j2", "dest": format!("{f}.t")})),
            ("stat", json!({"path": h})),
            ("stat", json!({"path": f})),
            (
                "find",
                json!({"paths": [h, s.p("dir")], "patterns": h, "contains": h}),
            ),
            ("slurp", json!({"src": h})),
            (
                "wait_for",
                json!({"path": h, "state": "absent", "timeout": 1}),
            ),
        ];
        for (module, args) in cases {
            let _ = s.try_run(module, args.clone(), NORMAL);
            assert!(
                !Path::new(&marker).exists(),
                "{module} {args} executed a hostile string"
            );
        }
    }
}

fn shell_words_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

// ---------------------------------------------------------------- template

#[test]
fn template_renders_host_variables() {
    let s = Sandbox::with_vars(json!({"port": 8080, "users": ["ann", "bob"]}));
    s.controller_file(
        "templates/app.conf.j2",
        "# {{ ansible_managed }}\nport={{ port }}\n{% for u in users %}\nuser={{ u }}\n{% endfor %}\n",
    );
    let dest = s.p("app.conf");
    let r = s.converge(
        "template",
        json!({"src": "app.conf.j2", "dest": dest, "mode": "0600"}),
    );
    assert_eq!(r.trips, 2);
    assert_eq!(
        read(&s.path("app.conf")),
        "# Ansible managed\nport=8080\nuser=ann\nuser=bob\n"
    );
    assert_eq!(mode_of(&s.path("app.conf")), 0o600);
    // A directory dest takes the template's name without `.j2`.
    std::fs::create_dir(s.path("etc")).unwrap();
    s.run(
        "template",
        json!({"src": "app.conf.j2", "dest": s.p("etc")}),
        NORMAL,
    );
    assert!(s.path("etc/app.conf").exists());
    let r = s.run(
        "template",
        json!({"src": "missing.j2", "dest": dest}),
        NORMAL,
    );
    assert!(r.res.failed);
}

#[test]
fn template_diff_in_check_mode() {
    let s = Sandbox::with_vars(json!({"v": "new"}));
    s.controller_file("templates/x.j2", "value={{ v }}\n");
    std::fs::write(s.path("x"), "value=old\n").unwrap();
    let r = s.run("template", json!({"src": "x.j2", "dest": s.p("x")}), CHECK);
    assert!(r.res.changed);
    assert_eq!(read(&s.path("x")), "value=old\n");
    assert_eq!(r.res.diff[0].before, "value=old\n");
    assert_eq!(r.res.diff[0].after, "value=new\n");
}

// ---------------------------------------------------------------- utility

#[test]
fn debug_msg_and_var() {
    let s = Sandbox::with_vars(json!({
        "answer": 42,
        "nested": {"a": [1, 2]},
        "two_errors": "{{ x }} and {{ answer }} {{ y }}",
    }));
    let r = s.run("debug", json!({"msg": "hi"}), NORMAL);
    assert_eq!(r.res.msg.as_deref(), Some("hi"));
    assert_eq!(r.trips, 0);
    let r = s.run("debug", json!({}), NORMAL);
    assert_eq!(r.res.msg.as_deref(), Some("Hello world!"));
    let r = s.run("debug", json!({"var": "answer"}), NORMAL);
    assert_eq!(data(&r.res, "answer").as_i64(), Some(42));
    let r = s.run("debug", json!({"var": "nested.a"}), NORMAL);
    assert_eq!(value_to_json(data(&r.res, "nested.a")), json!([1, 2]));
    // ansible-core 2.19: template errors print in place and warn.
    let r = s.run("debug", json!({"var": "nope"}), NORMAL);
    assert_eq!(
        data(&r.res, "nope").as_str(),
        Some("<< error 1 - 'nope' is undefined >>")
    );
    assert_eq!(
        value_to_json(data(&r.res, "warnings")),
        json!(["Encountered 1 template error.\nerror 1 - 'nope' is undefined"])
    );
    let r = s.run("debug", json!({"var": "two_errors"}), NORMAL);
    assert_eq!(
        data(&r.res, "two_errors").as_str(),
        Some("<< error 1 - 'x' is undefined >> and 42 << error 2 - 'y' is undefined >>")
    );
    let r = s.run("debug", json!({"var": "nested.b"}), NORMAL);
    assert_eq!(
        data(&r.res, "nested.b").as_str(),
        Some("<< error 1 - object of type 'dict' has no attribute 'b' >>")
    );
    let r = s.run("debug", json!({"msg": "hidden", "verbosity": 2}), NORMAL);
    assert!(r.res.skipped);
}

#[test]
fn assert_reports_the_failing_condition() {
    let s = Sandbox::with_vars(json!({"n": 3, "name": "web"}));
    let r = s.run(
        "assert",
        json!({"that": ["n > 1", "name == 'web'"]}),
        NORMAL,
    );
    assert!(!r.res.failed);
    assert_eq!(r.res.msg.as_deref(), Some("All assertions passed"));
    let r = s.run(
        "assert",
        json!({"that": ["n > 1", "n > 5"], "fail_msg": "too small"}),
        NORMAL,
    );
    assert!(r.res.failed);
    assert_eq!(r.res.msg.as_deref(), Some("too small"));
    assert_eq!(data(&r.res, "assertion").as_str(), Some("n > 5"));
    assert!(!data(&r.res, "evaluated_to").is_true());
    let r = s.run(
        "assert",
        json!({"that": "n == 3", "success_msg": "ok!"}),
        NORMAL,
    );
    assert_eq!(r.res.msg.as_deref(), Some("ok!"));
    let r = s.run("assert", json!({"that": "n == 4"}), NORMAL);
    assert_eq!(r.res.msg.as_deref(), Some("Assertion failed"));
}

#[test]
fn fail_set_fact_pause() {
    let s = Sandbox::new();
    let r = s.run("fail", json!({}), NORMAL);
    assert!(r.res.failed);
    assert_eq!(r.res.msg.as_deref(), Some("Failed as requested from task"));
    let r = s.run("fail", json!({"msg": "boom"}), NORMAL);
    assert_eq!(r.res.msg.as_deref(), Some("boom"));

    let r = s.run(
        "set_fact",
        json!({"a": 1, "b": [1, 2], "cacheable": "yes"}),
        NORMAL,
    );
    let facts = r.res.facts.as_ref().unwrap();
    assert_eq!(facts["a"].as_i64(), Some(1));
    assert_eq!(facts.len(), 2);
    assert!(r.res.facts_cacheable);
    assert!(s
        .try_run("set_fact", json!({"bad-name": 1}), NORMAL)
        .is_err());

    let t = std::time::Instant::now();
    let r = s.run("pause", json!({"seconds": "0.2"}), NORMAL);
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
    assert!(!r.res.failed);
    let t = std::time::Instant::now();
    let r = s.run("pause", json!({"prompt": "Continue?"}), NORMAL);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "a prompt must not block"
    );
    assert!(r.res.data.contains_key("warnings"));
}

#[test]
fn ping_and_wait_for_connection() {
    let s = Sandbox::new();
    let r = s.run("ping", json!({}), NORMAL);
    assert_eq!(data(&r.res, "ping").as_str(), Some("pong"));
    assert_eq!(r.trips, 1);
    let r = s.run("ping", json!({"data": "crash"}), NORMAL);
    assert!(r.res.failed);
    let r = s.run("wait_for_connection", json!({"timeout": 5}), NORMAL);
    assert!(!r.res.failed);
}

#[test]
fn wait_for_paths_and_ports_on_the_host() {
    let s = Sandbox::new();
    std::fs::write(s.path("ready"), "status: up\n").unwrap();
    let r = s.run(
        "wait_for",
        json!({"path": s.p("ready"), "timeout": 2}),
        NORMAL,
    );
    assert!(!r.res.failed, "{:?}", r.res.msg);
    let r = s.run(
        "wait_for",
        json!({"path": s.p("ready"), "search_regex": "status: (up|ok)", "timeout": 2}),
        NORMAL,
    );
    assert!(!r.res.failed, "{:?}", r.res.msg);
    let t = std::time::Instant::now();
    let r = s.run(
        "wait_for",
        json!({"path": s.p("never"), "timeout": 1}),
        NORMAL,
    );
    assert!(r.res.failed);
    assert_eq!(
        r.res.msg,
        Some(format!("Timeout when waiting for file {}", s.p("never")))
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let r = s.run(
        "wait_for",
        json!({"path": s.p("never"), "state": "absent", "timeout": 1}),
        NORMAL,
    );
    assert!(!r.res.failed);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = s.run("wait_for", json!({"port": port, "timeout": 3}), NORMAL);
    assert!(!r.res.failed, "{:?}", r.res.msg);
    drop(listener);
    let r = s.run(
        "wait_for",
        json!({"port": port, "state": "stopped", "timeout": 3}),
        NORMAL,
    );
    assert!(!r.res.failed, "{:?}", r.res.msg);
    let r = s.run("wait_for", json!({"port": port, "timeout": 1}), NORMAL);
    assert!(r.res.failed);
    assert_eq!(
        r.res.msg,
        Some(format!("Timeout when waiting for 127.0.0.1:{port}"))
    );
}

#[test]
fn setup_gathers_facts_in_one_round_trip() {
    let s = Sandbox::new();
    let r = s.run("setup", json!({}), NORMAL);
    assert_eq!(r.trips, 1);
    let facts = r.res.facts.as_ref().unwrap();
    // As ansible-core's setup: every fact is `ansible_*` except the two
    // about the gathering itself.
    let mut bare: Vec<&str> = facts
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !k.starts_with("ansible_"))
        .collect();
    bare.sort_unstable();
    assert_eq!(bare, ["gather_subset", "module_setup"]);
    let f: keel::vars::VarMap = facts
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("ansible_")?.to_string(), v.clone())))
        .collect();
    let uname = |flag: &str| {
        String::from_utf8(
            std::process::Command::new("uname")
                .arg(flag)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(f["kernel"].as_str(), Some(uname("-r").as_str()));
    assert_eq!(f["machine"].as_str(), Some(uname("-m").as_str()));
    assert_eq!(f["system"].as_str(), Some("Linux"));
    assert_eq!(
        f["user_uid"].as_i64(),
        Some(unsafe { libc::getuid() } as i64)
    );
    assert!(f["memtotal_mb"].as_i64().unwrap() > 0);
    assert!(f["processor_vcpus"].as_i64().unwrap() >= 1);
    assert!(!f["hostname"].as_str().unwrap().is_empty());
    assert!(f["env"].get_attr("PATH").unwrap().as_str().is_some());
    assert!(
        f["date_time"]
            .get_attr("epoch")
            .unwrap()
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 1_600_000_000
    );
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if os_release.contains("ID=debian") {
        assert_eq!(f["os_family"].as_str(), Some("Debian"));
        assert_eq!(f["distribution"].as_str(), Some("Debian"));
    }
    for k in [
        "distribution_version",
        "distribution_major_version",
        "service_mgr",
        "pkg_mgr",
        "fqdn",
        "all_ipv4_addresses",
        "interfaces",
        "default_ipv4",
    ] {
        assert!(f.contains_key(k), "missing fact {k}");
    }
    assert!(data(&r.res, "ansible_facts")
        .get_attr("ansible_kernel")
        .unwrap()
        .as_str()
        .is_some());
    let r = s.run("setup", json!({"filter": "ansible_distribution*"}), NORMAL);
    let f = r.res.facts.as_ref().unwrap();
    assert!(
        f.keys().all(|k| k.starts_with("ansible_distribution")),
        "{:?}",
        f.keys().collect::<Vec<_>>()
    );
    assert!(f.contains_key("ansible_distribution"));
    // ansible-core: a filter written for the bare setup facts keeps them.
    let r = s.run("setup", json!({"filter": "module*"}), NORMAL);
    let f = r.res.facts.as_ref().unwrap();
    assert_eq!(f.keys().collect::<Vec<_>>(), ["module_setup"]);
}

#[test]
fn registry_resolves_fully_qualified_names() {
    for name in [
        "ansible.builtin.copy",
        "ansible.builtin.command",
        "ansible.legacy.shell",
        "ansible.builtin.setup",
        "ansible.builtin.lineinfile",
    ] {
        assert!(modules::lookup(name).is_some(), "{name}");
    }
    assert!(modules::lookup("command").unwrap().takes_free_form());
    assert!(modules::lookup("debug").unwrap().controller_only());
    assert!(!modules::lookup("copy").unwrap().controller_only());
}

// ---------------------------------------------------------------- conformance modules

/// `getent` returns the database as the fact `getent_<database>`; a
/// missing key fails with ansible-core's message unless `fail_key: false`.
#[test]
fn getent_returns_records_as_a_fact() {
    let s = Sandbox::new();
    let r = s.run(
        "getent",
        json!({"database": "passwd", "key": "root", "service": "files"}),
        CHECK,
    );
    assert!(!r.res.failed && !r.res.changed, "{:?}", r.res.msg);
    assert_eq!(r.trips, 1);
    let facts = r.res.facts.as_ref().unwrap();
    let root = facts["getent_passwd"].get_attr("root").unwrap();
    assert_eq!(root.len(), Some(6));
    assert_eq!(root.get_item_by_index(0).unwrap().as_str(), Some("x"));
    let args = json!({"database": "passwd", "key": "keel-no-such-user"});
    let r = s.run("getent", args, NORMAL);
    assert!(r.res.failed);
    assert_eq!(
        r.res.msg.as_deref(),
        Some("One or more supplied key could not be found in the database.")
    );
    let args = json!({"database": "passwd", "key": "keel-no-such-user", "fail_key": false});
    let r = s.run("getent", args, NORMAL);
    assert!(!r.res.failed);
    let facts = r.res.facts.as_ref().unwrap();
    assert!(facts["getent_passwd"]
        .get_attr("keel-no-such-user")
        .unwrap()
        .is_none());
}

const KH_RSA: &str = "example.org ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAglyZmHHWskQ9wkh8LYbIqzvg99/oloneH7BaZ02ripJUy/2Zynv4tgUfm9fdXvAb1XXCEuTRnts9FBer87+voU0FPRgx3CfY9Sgr0FspUjnm4lqs53FIab1psddAaS7/F7lrnjl6VqBtPwMRQZG7qlml5uogGJwYJHxX0PGtsdoTJsM=\n";
const KH_ED: &str = "example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIzlnSq5ESxLgW0avvPk3j7zLV59hcAPkxrMNdnZMKP2\n";

/// `known_hosts` adds, keeps, hashes and removes a host's key; check mode
/// and the diff it always returns match ansible-core's.
#[test]
fn known_hosts_adds_hashes_and_removes_keys() {
    if std::process::Command::new("ssh-keygen")
        .arg("-?")
        .output()
        .is_err()
    {
        eprintln!("ssh-keygen missing: skipped");
        return;
    }
    let s = Sandbox::new();
    let path = s.p("known_hosts");
    std::fs::write(
        s.path("known_hosts"),
        "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n",
    )
    .unwrap();
    let add = json!({"name": "example.org", "key": KH_RSA, "path": path});
    let r = s.run("known_hosts", add.clone(), CHECK);
    assert!(r.res.changed);
    let diff = value_to_json(data(&r.res, "diff"));
    assert_eq!(diff["before_header"], json!(path));
    assert!(diff["after"].as_str().unwrap().ends_with(KH_RSA));
    assert!(!read(&s.path("known_hosts")).contains("example.org"));
    s.converge("known_hosts", add.clone());
    assert!(read(&s.path("known_hosts")).ends_with(KH_RSA));

    // Another key type for the same host is added beside it; removing a key
    // the file lacks changes nothing.
    let gone = json!({"name": "example.org", "key": KH_ED, "path": path, "state": "absent"});
    assert!(!s.run("known_hosts", gone, NORMAL).res.changed);

    // Hashed: the plain line is replaced by a `|1|` one, and stays.
    let hashed = json!({"name": "example.org", "key": KH_RSA, "path": path, "hash_host": true});
    s.converge("known_hosts", hashed);
    let text = read(&s.path("known_hosts"));
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("|1|") && last.ends_with("GJwYJHxX0PGtsdoTJsM="));
    assert!(!text.contains("example.org"));

    // Removal finds the hashed line through ssh-keygen.
    let remove = json!({"name": "example.org", "key": KH_RSA, "path": path, "state": "absent"});
    s.converge("known_hosts", remove);
    assert_eq!(
        read(&s.path("known_hosts")),
        "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n"
    );
    let r = s.run(
        "known_hosts",
        json!({"name": "a.example, b.example", "key": KH_RSA, "path": path}),
        NORMAL,
    );
    assert!(r.res.msg.unwrap().starts_with("Comma separated list"));
}

/// `assemble` joins fragments in name order (regexp, delimiter, hidden
/// files) from the host or the controller, and converges.
#[test]
fn assemble_joins_fragments_and_converges() {
    let s = Sandbox::new();
    std::fs::create_dir_all(s.path("frags")).unwrap();
    for (n, body) in [
        ("b", "two\n"),
        ("a", "one"),
        ("c", "three\n"),
        (".h", "hidden\n"),
    ] {
        std::fs::write(s.path("frags").join(n), body).unwrap();
    }
    let dest = s.p("out");
    let args = json!({"src": s.p("frags"), "dest": dest, "ignore_hidden": true});
    let r = s.run("assemble", args.clone(), CHECK);
    assert!(r.res.changed);
    assert!(!s.path("out").exists());
    // Reading the fragments on the host is one round trip, comparing and
    // writing the destination (the content path) another.
    let assemble_twice = |args: serde_json::Value| {
        let first = s.run("assemble", args.clone(), NORMAL);
        assert!(
            first.res.changed && !first.res.failed,
            "{:?}",
            first.res.msg
        );
        let again = s.run("assemble", args, NORMAL);
        assert!(!again.res.changed && !again.res.failed);
        assert_eq!(again.trips, 2);
        first
    };
    let first = assemble_twice(args);
    assert_eq!(read(&s.path("out")), "one\ntwo\nthree\n");
    assert_eq!(data(&first.res, "state").as_str(), Some("file"));
    let args =
        json!({"src": s.p("frags"), "dest": dest, "regexp": "^[ab]$", "delimiter": "#--\\t--#"});
    assemble_twice(args);
    assert_eq!(read(&s.path("out")), "one\n#--\t--#\ntwo\n");
    s.controller_file("files/parts/x1", "local\n");
    s.controller_file("files/parts/x2", "parts\n");
    let args = json!({"src": "parts", "dest": dest, "remote_src": false});
    let r = s.run("assemble", args, DIFF);
    assert_eq!(read(&s.path("out")), "local\nparts\n");
    assert!(value_to_json(data(&r.res, "diff"))["after"]
        .as_str()
        .is_some());
    let r = s.run(
        "assemble",
        json!({"src": s.p("nope"), "dest": dest}),
        NORMAL,
    );
    assert_eq!(
        r.res.msg,
        Some(format!("Source ({}) does not exist", s.p("nope")))
    );
}

/// `stat` reports the MIME type and charset as `file` names them.
#[test]
fn stat_reports_mime_type() {
    let s = Sandbox::new();
    std::fs::write(s.path("a:b.txt"), "hello world").unwrap();
    let r = s.run("stat", json!({"path": s.p("a:b.txt")}), NORMAL);
    let st = data(&r.res, "stat");
    assert_eq!(
        st.get_attr("mimetype").unwrap().as_str(),
        Some("text/plain")
    );
    assert_eq!(st.get_attr("charset").unwrap().as_str(), Some("us-ascii"));
    let r = s.run(
        "stat",
        json!({"path": s.p("a:b.txt"), "get_mime": false}),
        NORMAL,
    );
    assert!(data(&r.res, "stat")
        .get_attr("mimetype")
        .unwrap()
        .is_undefined());
}

/// `blockinfile` with `create` makes the missing directories too.
#[test]
fn blockinfile_create_makes_missing_directories() {
    let s = Sandbox::new();
    let path = s.p("new/dir/file.txt");
    s.converge(
        "blockinfile",
        json!({"path": path, "block": "line 1\n", "create": true}),
    );
    assert!(read(&s.path("new/dir/file.txt")).contains("line 1"));
}

/// `blockinfile` (blockinfile target): `append_newline` adds a blank line
/// only once, and a `(?m)` pattern is searched across lines.
#[test]
fn blockinfile_blank_lines_and_multiline_anchors_converge() {
    let s = Sandbox::new();
    std::fs::write(s.path("f"), "line1\nline2\nline3\n").unwrap();
    let args = json!({"path": s.p("f"), "append_newline": true, "insertafter": "line1", "block": "line1.5\n"});
    s.converge("blockinfile", args);
    assert_eq!(
        read(&s.path("f")),
        "line1\n# BEGIN ANSIBLE MANAGED BLOCK\nline1.5\n# END ANSIBLE MANAGED BLOCK\n\nline2\nline3\n"
    );
    std::fs::write(s.path("g"), "A =\n  (LIST =\n  x\nB =\n  (LIST =\n").unwrap();
    let args = json!({"path": s.p("g"), "insertafter": "(?m)A =\\n.*\\(LIST =", "block": "new", "marker": "# {mark}"});
    s.converge("blockinfile", args);
    assert_eq!(
        read(&s.path("g")),
        "A =\n  (LIST =\n# BEGIN\nnew\n# END\n  x\nB =\n  (LIST =\n"
    );
}
