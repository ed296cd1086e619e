//! Inventory tests: every source kind, patterns, variable precedence and the
//! `keel inventory` output, checked against what real `ansible-inventory` /
//! `ansible --list-hosts` (ansible-core 2.19) printed for the same fixtures
//! (`tests/fixtures/inventory/expected/`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "common/cli.rs"]
mod cli_run;

use cli_run::{run, text};
use keel::inventory::cli::{self, to_ansible_json};
use keel::inventory::{Inventory, LoadOptions};
use minijinja::Value;

const FX: &str = "tests/fixtures/inventory";

/// Fixture paths are relative to the crate root (cargo's cwd for tests), so
/// error messages in snapshots do not depend on the checkout location.
fn fx(rel: &str) -> String {
    format!("{FX}/{rel}")
}

fn expected(name: &str) -> String {
    let text = std::fs::read_to_string(fx(&format!("expected/{name}"))).unwrap();
    text.trim_end_matches('\n').to_string()
}

fn load(sources: &[&str]) -> Inventory {
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    match Inventory::load(&sources) {
        Ok(inv) => inv,
        Err(e) => panic!("loading {sources:?} failed:\n{e}"),
    }
}

fn load_err(sources: &[&str]) -> String {
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    match Inventory::load(&sources) {
        Ok(_) => panic!("loading {sources:?} should fail"),
        Err(e) => e.to_string(),
    }
}

fn ensure_executable(rel: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = fx(rel);
    let mut perm = std::fs::metadata(&p).unwrap().permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(&p, perm).unwrap();
}

fn list(inv: &Inventory) -> String {
    to_ansible_json(&cli::list_json(inv))
}

// ----- INI -----

#[test]
fn ini_list_matches_ansible_inventory() {
    let inv = load(&[&fx("ini/basic.ini")]);
    assert_eq!(list(&inv), expected("ini-basic.list.json"));
}

#[test]
fn ini_graph_matches_ansible_inventory() {
    let inv = load(&[&fx("ini/basic.ini")]);
    assert_eq!(
        cli::graph(&inv, None, false).trim_end(),
        expected("ini-basic.graph.txt")
    );
}

/// Hosts written first without a group and again under one leave
/// `ungrouped`; the others stay there in the order written. (The removal
/// once went host by host, quadratic in the inventory's size.)
#[test]
fn hosts_listed_ungrouped_and_again_in_a_group_match_ansible_inventory() {
    let inv = load(&[&fx("ini/ungrouped.ini")]);
    assert_eq!(list(&inv), expected("ini-ungrouped.list.json"));
    assert_eq!(
        cli::graph(&inv, None, false).trim_end(),
        expected("ini-ungrouped.graph.txt")
    );
}

#[test]
fn ini_host_matches_ansible_inventory() {
    let inv = load(&[&fx("ini/basic.ini")]);
    assert_eq!(
        to_ansible_json(&cli::host_json(&inv, "db1")),
        expected("ini-basic.host-db1.json")
    );
}

#[test]
fn ini_values_follow_python_literal_rules() {
    let inv = load(&[&fx("ini/basic.ini")]);
    let vars = inv.host_vars("web02.example.org");
    assert_eq!(vars["ansible_port"], Value::from(2222));
    assert_eq!(vars["flag"], Value::from(true));
    assert_eq!(vars["s"], Value::from("a b"));
    assert!(vars["n"].is_none());
    assert_eq!(
        vars["o"],
        Value::from("0644"),
        "0644 is not a Python literal"
    );
    assert_eq!(vars["f"], Value::from(1.5));
    // `[group:vars]` values go through literal_eval too (the docs say strings,
    // the code says otherwise; we follow the code).
    assert_eq!(vars["http_port"], Value::from(8080));
    assert_eq!(vars["bool"], Value::from(false));
    assert_eq!(inv.host_vars("db1")["x"], Value::from("yes"));
}

#[test]
fn ini_children_declared_later_match_ansible() {
    let inv = load(&[&fx("ini/children.ini")]);
    assert_eq!(list(&inv), expected("ini-children.list.json"));
    assert_eq!(
        cli::graph(&inv, None, true).trim_end(),
        expected("ini-children.graph-vars.txt")
    );
}

#[test]
fn ini_errors_point_at_the_line() {
    insta::glob!("fixtures/inventory/errors/*.ini", |path| {
        let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
        insta::assert_snapshot!(load_err(&[rel.to_str().unwrap()]));
    });
}

// ----- YAML -----

#[test]
fn yaml_matches_ansible_inventory() {
    let inv = load(&[&fx("yaml/basic.yml")]);
    assert_eq!(list(&inv), expected("yaml-basic.list.json"));
    assert_eq!(
        cli::graph(&inv, None, false).trim_end(),
        expected("yaml-basic.graph.txt")
    );
}

#[test]
fn yaml_errors_point_at_the_node() {
    insta::glob!("fixtures/inventory/errors/*.yml", |path| {
        let rel = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
        insta::assert_snapshot!(load_err(&[rel.to_str().unwrap()]));
    });
}

// ----- directories -----

#[test]
fn directory_source_matches_ansible_inventory() {
    ensure_executable("dir/03-dynamic.sh");
    let inv = load(&[&fx("dir")]);
    assert_eq!(list(&inv), expected("dir.list.json"));
    assert_eq!(
        cli::graph(&inv, None, false).trim_end(),
        expected("dir.graph.txt")
    );
}

// ----- scripts -----

#[test]
fn script_with_meta_matches_ansible_inventory() {
    ensure_executable("script/meta.sh");
    let inv = load(&[&fx("script/meta.sh")]);
    assert_eq!(list(&inv), expected("script-meta.list.json"));
}

/// `-i meta.sh` from the script's own directory runs that file, not a
/// `meta.sh` looked up in $PATH (ansible-inventory does the same).
#[test]
fn script_named_without_a_directory_runs_from_the_current_one() {
    ensure_executable("script/meta.sh");
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["inventory", "-i", "meta.sh", "--list"])
        .current_dir(fx("script"))
        .env("PATH", "/usr/bin:/bin"));
    assert!(out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: serde_json::Value = serde_json::from_str(&expected("script-meta.list.json")).unwrap();
    assert_eq!(got, want);
}

/// `{"__ansible_unsafe": "…"}` in a script's vars is a string that is never
/// templated, at host and group level and inside lists, while a plain
/// string still is. The `msg` lines are ansible-playbook 2.19.14's for the
/// same script and playbook; had a lookup run, it would have made a file.
#[test]
fn ansible_unsafe_values_from_a_script_are_never_templated() {
    ensure_executable("script/unsafe.sh");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "play",
            "-i",
            &fx("script/unsafe.sh"),
            &fx("unsafe_play.yml"),
        ])
        .env("KEEL_MARKER", &marker));
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let msgs: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("\"msg\""))
        .collect();
    let m = marker.display();
    assert_eq!(
        msgs,
        [
            format!("\"msg\": \"{{{{ lookup('pipe', 'touch {m}-host') }}}}\""),
            format!("\"msg\": \"{{{{ lookup('pipe', 'touch {m}-nested') }}}}\""),
            format!("\"msg\": \"{{{{ lookup('pipe', 'touch {m}-group') }}}}\""),
            "\"msg\": 2".to_string(),
        ]
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "a lookup ran: {left:?}");
}

/// A `__ansible_unsafe` that is not a string is refused, naming the var.
#[test]
fn ansible_unsafe_must_hold_a_string() {
    let err = Inventory::from_json(serde_json::json!({
        "web": {"hosts": ["h1"], "vars": {"motd": {"__ansible_unsafe": 3}}}
    }))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("var 'motd' of group 'web': __ansible_unsafe must be a string, got a number"),
        "{err}"
    );
}

#[test]
fn script_without_meta_is_asked_per_host() {
    ensure_executable("script/nometa.sh");
    let inv = load(&[&fx("script/nometa.sh")]);
    assert_eq!(list(&inv), expected("script-nometa.list.json"));
}

#[test]
fn script_failure_shows_exit_status_and_stderr() {
    ensure_executable("script/fails.sh");
    insta::assert_snapshot!(load_err(&[&fx("script/fails.sh")]));
}

#[test]
fn script_invalid_json_is_reported() {
    ensure_executable("script/badjson.sh");
    insta::assert_snapshot!(load_err(&[&fx("script/badjson.sh")]));
}

// ----- in memory -----

/// The JSON `script/meta.sh` prints, handed over in memory instead of
/// through the script, gives what ansible-inventory showed for the script.
#[test]
fn json_in_memory_reads_like_the_same_json_from_a_script() {
    ensure_executable("script/meta.sh");
    let out = std::process::Command::new(fx("script/meta.sh"))
        .arg("--list")
        .output()
        .unwrap();
    let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inv = Inventory::from_json(data).unwrap();
    assert_eq!(list(&inv), expected("script-meta.list.json"));
    // Group vars under host vars, as for any source; no file to name.
    let vars = inv.host_vars("web1");
    assert_eq!(vars.get("weight"), Some(&Value::from(10)));
    assert_eq!(vars.get("http_port"), Some(&Value::from(80)));
    assert!(inv
        .host_layers("web1")
        .iter()
        .all(|l| !l.contains_key("inventory_file")));
    assert_eq!(inv.group_names("web3"), ["canary", "web"]);
}

/// A host in no group lands in `ungrouped`; a host without `_meta` vars
/// has none (there is no script to ask `--host`).
#[test]
fn json_in_memory_is_reconciled() {
    let inv = Inventory::from_json(serde_json::json!({
        "all": {"hosts": ["lone"], "vars": {"site": "main"}},
        "site_main": {"hosts": ["vm1"]},
        "_meta": {"hostvars": {"vm1": {"ansible_port": 2222}}},
    }))
    .unwrap();
    assert_eq!(inv.group_hosts("ungrouped"), ["lone"]);
    assert_eq!(inv.group_names("vm1"), ["site_main"]);
    assert_eq!(inv.groups["site_main"].parents, ["all"]);
    let vm1 = inv.host_vars("vm1");
    assert_eq!(vm1.get("ansible_port"), Some(&Value::from(2222)));
    assert_eq!(vm1.get("site"), Some(&Value::from("main")));
    assert_eq!(inv.host_vars("lone").get("ansible_port"), None);
}

#[test]
fn json_in_memory_errors_name_the_group() {
    let err = Inventory::from_json(serde_json::json!({"web": {"hosts": "web1"}}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in-memory inventory: group 'web' has bad data for the host list"),
        "{err}"
    );
    let err = Inventory::from_json(serde_json::json!(["web1"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a JSON object"), "{err}");
}

#[test]
fn script_timeout_kills_the_script() {
    ensure_executable("script/slow.sh");
    let opts = LoadOptions {
        script_timeout: Duration::from_millis(300),
        ..LoadOptions::default()
    };
    let start = std::time::Instant::now();
    let err = Inventory::load_with(&[fx("script/slow.sh")], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("timed out after 0.3 s"), "{err}");
}

// ----- HTTP -----

/// One recorded request: path and Authorization header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A real HTTP server on 127.0.0.1:0 answering from `respond(path)`.
fn serve(respond: impl Fn(&str) -> (u16, String) + Send + 'static) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_string());
                    }
                }
            }
            seen2.lock().unwrap().push((path.clone(), auth));
            let (status, body) = respond(&path);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).unwrap();
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = reader.read_to_end(&mut rest);
        }
    });
    (format!("http://{addr}"), seen)
}

#[test]
fn http_source_with_meta_and_bearer_token() {
    let (base, seen) = serve(|_| {
        (200, r#"{"web": {"hosts": ["w1", "w2"], "vars": {"p": 1}}, "_meta": {"hostvars": {"w1": {"x": "y"}}}}"#.into())
    });
    let opts = LoadOptions {
        http_token: Some("s3cret".into()),
        ..LoadOptions::default()
    };
    let inv = Inventory::load_with(&[format!("{base}/inventory")], &opts).unwrap();
    assert_eq!(inv.select("web").unwrap(), ["w1", "w2"]);
    assert_eq!(inv.host_vars("w1")["x"], Value::from("y"));
    assert_eq!(inv.host_vars("w2")["p"], Value::from(1));
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [("/inventory".to_string(), Some("Bearer s3cret".to_string()))]
    );
}

#[test]
fn http_source_without_meta_asks_per_host() {
    let (base, seen) = serve(|path| match path.split_once("host=") {
        Some((_, h)) => (200, format!(r#"{{"me": "{h}"}}"#)),
        None => (200, r#"{"db": ["db1", "db 2"]}"#.into()),
    });
    let opts = LoadOptions {
        http_token: None,
        ..LoadOptions::default()
    };
    let inv = Inventory::load_with(&[format!("{base}/inv?fmt=json")], &opts).unwrap();
    assert_eq!(inv.host_vars("db1")["me"], Value::from("db1"));
    assert_eq!(inv.host_vars("db 2")["me"], Value::from("db%202"));
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/inv?fmt=json",
            "/inv?fmt=json&host=db1",
            "/inv?fmt=json&host=db%202"
        ]
    );
}

#[test]
fn http_errors_are_clear() {
    let (base, _) = serve(|path| match path {
        "/missing" => (404, "no such inventory".into()),
        "/denied" => (401, String::new()),
        _ => (200, "<html>not json</html>".into()),
    });
    let opts = LoadOptions {
        http_token: None,
        ..LoadOptions::default()
    };
    let err = |p: &str| {
        let e = Inventory::load_with(&[format!("{base}{p}")], &opts)
            .unwrap_err()
            .to_string();
        e.replace(&base, "http://SERVER")
    };
    insta::assert_snapshot!("http_404", err("/missing"));
    insta::assert_snapshot!("http_401", err("/denied"));
    insta::assert_snapshot!("http_not_json", err("/html"));
}

#[test]
fn http_timeout_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and never answer.
    let _keep = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });
    let opts = LoadOptions {
        http_timeout: Duration::from_millis(300),
        http_token: None,
        ..LoadOptions::default()
    };
    let err = Inventory::load_with(&[format!("http://{addr}/")], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("timed out after 0.3 s"), "{err}");
}

#[tokio::test]
async fn load_async_works_inside_a_runtime() {
    let (base, _) = serve(|_| (200, r#"{"g": ["h1"]}"#.into()));
    let opts = LoadOptions {
        http_token: None,
        ..LoadOptions::default()
    };
    let inv = Inventory::load_async(vec![format!("{base}/")], opts)
        .await
        .unwrap();
    assert_eq!(inv.select("g").unwrap(), ["h1"]);
}

// ----- host lists -----

#[test]
fn comma_host_lists() {
    let inv = load(&["web1, web2:2222,[fe80::1]:22,"]);
    assert_eq!(inv.select("all").unwrap(), ["web1", "web2", "fe80::1"]);
    assert_eq!(inv.groups["ungrouped"].hosts, ["web1", "web2", "fe80::1"]);
    assert_eq!(inv.host_vars("web2")["ansible_port"], Value::from(2222));
    let one = load(&["localhost,"]);
    assert_eq!(one.select("all").unwrap(), ["localhost"]);
    assert!(
        one.host_vars("localhost").is_empty(),
        "an explicit localhost gets no implicit vars"
    );
}

/// A host named by a number is a trap ansible-core 2.19 answers with two
/// warnings and an inventory without that file (`ansible-inventory --list`
/// of this file prints no hosts and exits 0); Keel matches and warns, pointing
/// at the key. The other sources still load.
#[test]
fn numeric_host_name_drops_the_yaml_file_with_a_warning() {
    let inv = Inventory::load(&[fx("yaml/numeric_host.yml")]).unwrap();
    let warnings: Vec<String> = inv.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].contains("Failed to parse inventory with 'yaml' plugin: Host pattern 1234 must be a string. Enclose integers/floats in quotation marks."),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("numeric_host.yml:7:9"), "{warnings:?}");
    assert!(
        warnings[1].starts_with("Unable to parse /")
            && warnings[1].ends_with("numeric_host.yml as an inventory source"),
        "{warnings:?}"
    );
    assert_eq!(
        warnings[2],
        "No inventory was parsed, only implicit localhost is available"
    );
    assert!(inv.hosts.is_empty(), "{:?}", inv.hosts.keys());

    let two = Inventory::load(&[fx("yaml/numeric_host.yml"), "web1,".to_string()]).unwrap();
    assert_eq!(two.select("all").unwrap(), ["web1"]);
    assert_eq!(two.warnings.len(), 2);
}

/// ansible-playbook 2.19 warns about a source it cannot parse and goes on
/// with what else it has (the implicit localhost at least).
#[test]
fn missing_source_is_a_warning() {
    let inv = Inventory::load(&["no/such/inventory".to_string()]).unwrap();
    let warnings: Vec<&str> = inv.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("Unable to parse /"), "{warnings:?}");
    assert!(
        warnings[0].ends_with("no/such/inventory as an inventory source"),
        "{warnings:?}"
    );
    assert_eq!(
        warnings[1],
        "No inventory was parsed, only implicit localhost is available"
    );
    assert!(inv.hosts.is_empty());
    assert_eq!(inv.select("localhost").unwrap(), vec!["localhost"]);
}

// ----- patterns -----

#[test]
fn patterns_match_ansible_list_hosts() {
    let inv = load(&[&fx("ini/basic.ini")]);
    let table = std::fs::read_to_string(fx("expected/ini-basic.patterns.tsv")).unwrap();
    let mut checked = 0;
    for line in table.lines().filter(|l| !l.starts_with('#')) {
        let (pattern, hosts) = line.split_once('\t').unwrap();
        let want: Vec<&str> = hosts.split_whitespace().collect();
        assert_eq!(inv.select(pattern).unwrap(), want, "pattern {pattern:?}");
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn unmatched_pattern_warns() {
    let inv = load(&[&fx("ini/basic.ini")]);
    let sel = inv.select_detailed("nothere:lonely:dbs").unwrap();
    assert_eq!(
        sel.hosts,
        [
            "lonely",
            "db1",
            "db2",
            "web01.example.org",
            "web02.example.org",
            "web03.example.org"
        ]
    );
    let warnings: Vec<String> = sel.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        ["Could not match supplied host pattern, ignoring: nothere"]
    );
}

#[test]
fn limit_file_and_ipv6_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let limit = dir.path().join("retry");
    std::fs::write(&limit, "db2\n# a comment\nlonely\n").unwrap();
    let inv = load(&[&fx("ini/basic.ini")]);
    assert_eq!(
        inv.select(&format!("@{}", limit.display())).unwrap(),
        ["db2", "lonely"]
    );
    assert_eq!(
        inv.select(&format!("@{}:!db2", limit.display())).unwrap(),
        ["lonely"]
    );

    let v6 = load(&["2001:db8::1,2001:db8::2,"]);
    assert_eq!(v6.select("2001:db8::2").unwrap(), ["2001:db8::2"]);
    assert_eq!(
        v6.select("2001:db8::1,2001:db8::2").unwrap(),
        ["2001:db8::1", "2001:db8::2"]
    );
}

#[test]
fn bad_regex_pattern_is_an_error() {
    let inv = load(&[&fx("ini/basic.ini")]);
    let err = inv.select("~web(").unwrap_err().to_string();
    assert!(err.starts_with("invalid host pattern '~web('"), "{err}");
}

// ----- implicit localhost -----

#[test]
fn implicit_localhost() {
    let empty = Inventory::load(&[]).unwrap();
    assert!(
        empty.select("all").unwrap().is_empty(),
        "implicit localhost is not in all"
    );
    assert_eq!(empty.select("localhost").unwrap(), ["localhost"]);
    assert_eq!(empty.select("127.0.0.1").unwrap(), ["127.0.0.1"]);
    let vars = empty.host_vars("localhost");
    assert_eq!(vars["ansible_connection"], Value::from("local"));
    assert!(empty.group_names("localhost").is_empty());

    let inv = load(&[&fx("ini/basic.ini")]);
    assert_eq!(
        inv.select("all:localhost").unwrap().last().unwrap(),
        "localhost"
    );
    assert!(inv.host_layers("nothere").is_empty());
}

// ----- variables -----

#[test]
fn host_vars_with_playbook_dir_match_ansible_inventory() {
    let mut inv = load(&[&fx("vars/inv/hosts.ini")]);
    inv.add_vars_dir(Path::new(&fx("vars/playbook"))).unwrap();
    for h in ["web1", "web2", "db1"] {
        assert_eq!(
            to_ansible_json(&cli::host_json(&inv, h)),
            expected(&format!("vars-host-{h}.json")),
            "host {h}"
        );
    }
    // `ansible-inventory --playbook-dir vars/playbook --list`
    assert_eq!(list(&inv), expected("vars.list.json"));
}

/// `host_vars` merges the inventory's maps directly instead of through
/// `host_layers` (for the speed of `--list` on 10,000 hosts): both must
/// give the same variables in the same order, for every host, the implicit
/// localhost included, with a group order computed once or per host.
#[test]
fn host_vars_merge_host_layers_in_order() {
    let mut inv = load(&[&fx("vars/inv/hosts.ini")]);
    inv.add_vars_dir(Path::new(&fx("vars/playbook"))).unwrap();
    let order = inv.group_order();
    let mut names: Vec<String> = inv.hosts.keys().cloned().collect();
    names.push("localhost".into());
    for h in &names {
        let mut merged = keel::vars::VarMap::new();
        for layer in inv.host_layers(h) {
            for (k, v) in layer.iter() {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged.shift_remove("inventory_file");
        merged.shift_remove("inventory_dir");
        let direct = inv.host_vars_in(h, &order);
        let keys = |m: &keel::vars::VarMap| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&direct), keys(&merged), "host {h}");
        assert_eq!(direct, merged, "host {h}");
        assert_eq!(
            inv.host_layers_in(h, &order),
            inv.host_layers(h),
            "host {h}"
        );
    }
}

#[test]
fn host_layers_follow_ansible_precedence() {
    let mut inv = load(&[&fx("vars/inv/hosts.ini")]);
    inv.add_vars_dir(&PathBuf::from(fx("vars/playbook")))
        .unwrap();
    let levels: Vec<String> = inv
        .host_layers("web1")
        .iter()
        .filter_map(|l| l.get("level").map(|v| v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        levels,
        [
            "inventory_group_web", // inline group vars: all < app < web (by depth)
            "gv_inventory_all",    // group_vars/all next to the inventory
            "gv_playbook_all",     // group_vars/all next to the playbook
            "gv_inventory_web",    // group_vars/<group>: app.json, then web/ (deeper)
            "gv_playbook_web",
            "inline_host",       // host vars set in the inventory line
            "hv_inventory_web1", // host_vars next to the inventory
            "hv_playbook_web1",  // host_vars next to the playbook
        ]
    );
    // Dictionaries replace each other; they are not merged.
    let vars = inv.host_vars("web1");
    assert_eq!(vars["dict_var"].get_attr("a").unwrap(), Value::UNDEFINED);
    assert_eq!(vars["dict_var"].get_attr("c").unwrap(), Value::from(3));
    assert!(
        !vars.contains_key("inventory_file"),
        "internal vars are dropped from host_vars"
    );
    let inline = inv.host_layers("web1");
    assert!(inline
        .iter()
        .any(|l| l.get("inventory_file") == Some(&Value::from(fx("vars/inv/hosts.ini")))));
}

#[test]
fn group_priority_orders_same_depth_groups() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("hosts");
    std::fs::write(
        &ini,
        "[a]\nh1\n[b]\nh1\n[a:vars]\nwho=a\nansible_group_priority=10\n[b:vars]\nwho=b\n",
    )
    .unwrap();
    let inv = load(&[ini.to_str().unwrap()]);
    assert_eq!(
        inv.host_vars("h1")["who"],
        Value::from("a"),
        "higher priority wins over name order"
    );
    assert!(!inv.groups["a"].vars.contains_key("ansible_group_priority"));
}

#[test]
fn group_names_and_groups_map() {
    let inv = load(&[&fx("ini/basic.ini")]);
    assert_eq!(inv.group_names("db1"), ["dbs", "prod", "web"]);
    assert_eq!(inv.group_names("lonely"), ["ungrouped"]);
    let groups = inv.groups_map();
    assert_eq!(
        groups["web"],
        [
            "web01.example.org",
            "web02.example.org",
            "web03.example.org",
            "db1"
        ]
    );
    assert_eq!(groups["all"].len(), 12);
    assert!(groups["ungrouped"] == ["lonely"]);
}

#[test]
fn multiple_sources_merge_in_order() {
    ensure_executable("script/meta.sh");
    let inv = load(&[&fx("ini/children.ini"), &fx("script/meta.sh"), "extra1,"]);
    assert_eq!(
        inv.select("paris:web:extra1").unwrap(),
        ["par1", "par2", "web1", "web2", "web3", "extra1"]
    );
    assert_eq!(
        inv.host_vars("web1")["ntp"],
        Value::from("pool.ntp.org"),
        "all:vars from the first source apply"
    );
}

#[test]
fn shipped_example_inventories_match_ansible_inventory() {
    let example = load(&["../inventories/example"]);
    assert_eq!(list(&example), expected("example.list.json"));
    let local = load(&["../inventories/local.ini"]);
    assert_eq!(list(&local), expected("local.list.json"));
    assert_eq!(local.select("localhost").unwrap(), ["localhost"]);
}

#[test]
fn yaml_unexpected_keys_and_name_clashes_warn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.yml");
    std::fs::write(&path, "all:\n  hosts:\n    web:\n  children:\n    web:\n      hosts:\n        w1:\n  host:\n    typo: 1\n")
        .unwrap();
    let inv = load(&[path.to_str().unwrap()]);
    let warnings: Vec<String> = inv.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(
        warnings,
        [
            "skipping unexpected key 'host' in group 'all': only 'vars', 'children' and 'hosts' are valid",
            "found both group and host with same name: web",
        ]
    );
    assert_eq!(inv.warnings[0].span.as_ref().unwrap().pos.line, 8);
}

#[test]
fn script_group_shorthand_is_a_single_host() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("inv");
    std::fs::write(&script, "#!/bin/sh\necho '{\"solo\": {\"ansible_host\": \"10.9.9.9\"}, \"_meta\": {\"hostvars\": {}}}'\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let inv = load(&[script.to_str().unwrap()]);
    assert_eq!(inv.select("solo").unwrap(), ["solo"]);
    assert_eq!(
        inv.host_vars("solo")["ansible_host"],
        Value::from("10.9.9.9")
    );
}

/// A host listed again, in the same group or through an overlapping range,
/// is one member, in the order first seen; a large range line loads (the
/// inventory_ini fuzz target found membership checks that scanned the
/// group's whole host list for every host).
#[test]
fn repeated_members_are_kept_once_in_first_seen_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hosts");
    std::fs::write(&path, "[web]\nh[1:3]\nh2\n[db]\nh2\n[web]\nh[0:59999]\n").unwrap();
    let inv = Inventory::load(&[path.display().to_string()]).unwrap();
    let web = &inv.groups["web"].hosts;
    assert_eq!(web.len(), 60_000);
    assert_eq!(&web[..5], ["h1", "h2", "h3", "h0", "h4"]);
    assert_eq!(inv.groups["db"].hosts, ["h2"]);
    let h2: Vec<&str> = inv.hosts["h2"]
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| *g != "all")
        .collect();
    assert_eq!(h2, ["web", "db"]);
}
