//! Tests for `uri`, `unarchive`, `apt_repository`, `deb822_repository` and
//! `apt_key` against real test hosts (`keel-testhosts`): each test starts
//! its own sshd host (a copy-on-write overlay of `/`), drives the module
//! over SSH and checks the host's real state, idempotency, check mode and
//! diffs. `uri` talks to a small HTTP server the test runs on loopback,
//! which the hosts reach since they share the root network namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use base64::Engine as _;

use keel::modules::ModuleError;
use serde_json::json;

mod common;
use common::*;

// ------------------------------------------------------------------ uri

/// A loopback HTTP/1.1 server answering each request on its own connection:
/// `/json` (a JSON document), `/echo` (the request's method and body back),
/// `/redirect` (to `/json`), `/file` (fixed text), anything else 404.
fn http_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut len = 0usize;
            let mut ctype = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap_or((&h, ""));
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("content-type") {
                    ctype = v.trim().to_string();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).ok();
            let mut parts = first.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let (status, extra, ct, payload) = match path.as_str() {
                "/json" => (
                    "200 OK",
                    String::new(),
                    "application/json",
                    br#"{"a": 1, "list": ["x", "y"]}"#.to_vec(),
                ),
                "/echo" => (
                    "201 Created",
                    format!("X-Method: {method}\r\nX-Request-Type: {ctype}\r\n"),
                    "text/plain",
                    body,
                ),
                "/redirect" => (
                    "302 Found",
                    "Location: /json\r\n".into(),
                    "text/plain",
                    Vec::new(),
                ),
                "/file" => (
                    "200 OK",
                    String::new(),
                    "text/plain",
                    b"served file\n".to_vec(),
                ),
                _ => (
                    "404 Not Found",
                    String::new(),
                    "text/plain",
                    b"nope".to_vec(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                payload.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&payload);
        }
    });
    format!("http://127.0.0.1:{}", addr.port())
}

#[test]
fn uri_reports_status_headers_and_json() {
    let h = Host::start();
    let base = http_server();
    let r = h.run(
        "uri",
        json!({"url": format!("{base}/json"), "return_content": true}),
        NORMAL,
    );
    assert!(!r.failed && !r.changed, "{:?}", r.msg);
    assert_eq!(data(&r, "status").as_i64(), Some(200));
    assert_eq!(r.msg.as_deref(), Some("OK (28 bytes)"));
    assert_eq!(data(&r, "content_type").as_str(), Some("application/json"));
    assert_eq!(data(&r, "content_length").as_str(), Some("28"));
    let j = data(&r, "json");
    assert_eq!(j.get_attr("a").unwrap().as_i64(), Some(1));
    assert_eq!(
        j.get_attr("list")
            .unwrap()
            .get_item_by_index(1)
            .unwrap()
            .as_str(),
        Some("y")
    );
    assert!(data(&r, "content").as_str().unwrap().contains("\"list\""));

    // A JSON body goes out on stdin with its content type; 201 must be allowed.
    let r = h.run(
        "uri",
        json!({"url": format!("{base}/echo"), "method": "POST", "body_format": "json",
               "body": {"name": "keel", "n": 2}, "status_code": [200, 201], "return_content": true}),
        NORMAL,
    );
    assert!(!r.failed, "{:?}", r.msg);
    assert_eq!(data(&r, "status").as_i64(), Some(201));
    assert_eq!(data(&r, "x_method").as_str(), Some("POST"));
    assert_eq!(
        data(&r, "x_request_type").as_str(),
        Some("application/json")
    );
    let echoed: serde_json::Value =
        serde_json::from_str(data(&r, "content").as_str().unwrap()).unwrap();
    assert_eq!(echoed, json!({"name": "keel", "n": 2}));
    assert!(!r.data.contains_key("json"), "text/plain is not parsed");

    let r = h.run(
        "uri",
        json!({"url": format!("{base}/echo"), "method": "PUT", "body_format": "form-urlencoded",
               "body": {"a b": "c&d", "x": "1"}, "status_code": "201", "return_content": true}),
        NORMAL,
    );
    assert!(!r.failed, "{:?}", r.msg);
    assert_eq!(data(&r, "content").as_str(), Some("a+b=c%26d&x=1"));
    assert_eq!(
        data(&r, "x_request_type").as_str(),
        Some("application/x-www-form-urlencoded")
    );

    // Redirects are followed for GET; the final URL is reported.
    let r = h.run("uri", json!({"url": format!("{base}/redirect")}), NORMAL);
    assert!(!r.failed, "{:?}", r.msg);
    assert_eq!(
        data(&r, "url").as_str(),
        Some(format!("{base}/json").as_str())
    );
    assert!(data(&r, "redirected").is_true());
    let r = h.run(
        "uri",
        json!({"url": format!("{base}/redirect"), "follow_redirects": "none", "status_code": 302}),
        NORMAL,
    );
    assert!(!r.failed, "{:?}", r.msg);

    // An unexpected status fails, and says what it got.
    let r = h.run("uri", json!({"url": format!("{base}/nothing")}), NORMAL);
    assert!(r.failed);
    assert_eq!(data(&r, "status").as_i64(), Some(404));
    assert_eq!(
        r.msg.as_deref(),
        Some("Status code was 404 and not [200]: HTTP Error 404")
    );
    // Nothing listening: status -1.
    let r = h.run(
        "uri",
        json!({"url": "http://127.0.0.1:1/", "timeout": 5}),
        NORMAL,
    );
    assert!(r.failed);
    assert_eq!(data(&r, "status").as_i64(), Some(-1));
    assert!(r
        .msg
        .unwrap()
        .starts_with("Status code was -1 and not [200]: Request failed"));
}

#[test]
fn uri_dest_creates_check_mode_and_missing_curl() {
    let h = Host::start();
    let base = http_server();
    h.sh("mkdir -p /srv/dl");
    let args = json!({"url": format!("{base}/file"), "dest": "/srv/dl/"});
    let r = h.run("uri", args.clone(), NORMAL);
    assert!(!r.failed && r.changed, "{:?}", r.msg);
    assert_eq!(data(&r, "path").as_str(), Some("/srv/dl/file"));
    assert_eq!(h.sh("cat /srv/dl/file"), "served file\n");
    let r = h.run("uri", args, NORMAL);
    assert!(!r.failed && !r.changed, "same body: no change");

    let r = h.run(
        "uri",
        json!({"url": format!("{base}/nothing"), "creates": "/srv/dl/file"}),
        NORMAL,
    );
    assert!(!r.failed && !r.changed);
    assert_eq!(
        r.msg.as_deref(),
        Some("skipped, since '/srv/dl/file' exists")
    );
    let r = h.run(
        "uri",
        json!({"url": format!("{base}/nothing"), "removes": "/srv/none"}),
        NORMAL,
    );
    assert!(!r.failed);
    assert_eq!(
        r.msg.as_deref(),
        Some("skipped, since '/srv/none' does not exist")
    );

    let r = h.run(
        "uri",
        json!({"url": format!("{base}/file"), "dest": "/srv/dl/other"}),
        CHECK,
    );
    assert!(r.skipped, "uri does not run in check mode, as in Ansible");
    assert_eq!(h.out("ls /srv/dl"), "file\n");

    *h.env.borrow_mut() = vec![("PATH".into(), "/nonexistent".into())];
    let r = h.run("uri", json!({"url": format!("{base}/json")}), NORMAL);
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("curl is not installed"));

    let e = h.try_run(
        "uri",
        json!({"url": "http://x", "status_code": "abc"}),
        NORMAL,
    );
    assert!(matches!(e, Err(ModuleError::Args(_))));
}

// ------------------------------------------------------------ unarchive

/// Builds `tree` (path → content) under a fresh directory and archives it
/// with `cmd` (run in that directory, `{out}` replaced by the archive path).
fn make_archive(h: &Host, name: &str, tree: &[(&str, &str)], cmd: &str) -> PathBuf {
    let work = tempfile::tempdir().unwrap();
    for (p, c) in tree {
        let f = work.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, c).unwrap();
    }
    let out = h.search[0].join(name);
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.replace("{out}", &out.display().to_string()))
        .current_dir(work.path())
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
    out
}

#[test]
fn unarchive_uploads_a_tarball_and_is_idempotent() {
    let h = Host::start();
    h.sh("mkdir -p /srv/app");
    make_archive(
        &h,
        "app.tar.gz",
        &[
            ("app/bin/run", "#!/bin/sh\necho v1\n"),
            ("app/README", "hello\n"),
            ("app/skip.log", "x"),
        ],
        "tar czf {out} app",
    );
    let probe = "cd /srv/app && find . | sort && cat app/bin/run";
    let r = h.converge(
        "unarchive",
        json!({"src": "app.tar.gz", "dest": "/srv/app", "list_files": true, "exclude": ["app/skip.log"]}),
        probe,
    );
    assert_eq!(
        h.sh(probe),
        ".\n./app\n./app/README\n./app/bin\n./app/bin/run\n#!/bin/sh\necho v1\n"
    );
    assert_eq!(data(&r, "handler").as_str(), Some("TgzArchive"));
    let files: Vec<String> = data(&r, "files")
        .try_iter()
        .unwrap()
        .map(|v| v.to_string())
        .collect();
    assert!(
        files.contains(&"app/bin/run".to_string()) && !files.contains(&"app/skip.log".to_string()),
        "{files:?}"
    );
    assert!(!r.diff.is_empty() && r.diff[0].after.contains("app/bin/run"));

    // A new version of one file changes only that file; local edits to
    // other files are put back.
    h.sh("echo extra > /srv/app/app/local.txt");
    make_archive(
        &h,
        "app.tar.gz",
        &[
            ("app/bin/run", "#!/bin/sh\necho v2\n"),
            ("app/README", "hello\n"),
        ],
        "tar czf {out} app",
    );
    let r = h.run(
        "unarchive",
        json!({"src": "app.tar.gz", "dest": "/srv/app"}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(
        h.sh("cat /srv/app/app/bin/run /srv/app/app/local.txt"),
        "#!/bin/sh\necho v2\nextra\n"
    );

    // mode applies to every unpacked path, and converges.
    let args = json!({"src": "app.tar.gz", "dest": "/srv/app", "mode": "0750"});
    let r = h.run("unarchive", args.clone(), NORMAL);
    assert!(r.changed, "{:?}", r.msg);
    assert_eq!(h.sh("stat -c %a /srv/app/app/README").trim(), "750");
    assert!(!h.run("unarchive", args, NORMAL).changed);

    let r = h.run(
        "unarchive",
        json!({"src": "app.tar.gz", "dest": "/srv/app", "creates": "/srv/app/app/README"}),
        NORMAL,
    );
    assert!(r.skipped && !r.changed);
    let r = h.run(
        "unarchive",
        json!({"src": "app.tar.gz", "dest": "/srv/nowhere"}),
        NORMAL,
    );
    assert!(r.failed);
    assert_eq!(
        r.msg.as_deref(),
        Some("dest '/srv/nowhere' must be an existing dir")
    );
    let r = h.run(
        "unarchive",
        json!({"src": "missing.tgz", "dest": "/srv/app"}),
        NORMAL,
    );
    assert!(
        r.failed
            && r.msg
                .unwrap()
                .contains("Could not find or access 'missing.tgz'")
    );
}

#[test]
fn unarchive_remote_zip_bz2_and_xz() {
    let h = Host::start();
    let zip = make_archive(
        &h,
        "site.zip",
        &[("index.html", "<h1>hi</h1>\n"), ("css/a.css", "a{}\n")],
        "zip -qr {out} .",
    );
    let bz2 = make_archive(&h, "data.tar.bz2", &[("d/one", "1\n")], "tar cjf {out} d");
    let xz = make_archive(&h, "data.tar.xz", &[("d/two", "2\n")], "tar cJf {out} d");
    let plain = make_archive(&h, "data.tar", &[("d/three", "3\n")], "tar cf {out} d");
    h.sh("mkdir -p /srv/www /srv/data /srv/pkgs");
    for p in [&zip, &bz2, &xz, &plain] {
        let name = p.file_name().unwrap().to_str().unwrap();
        // The controller's temp dir is not the host's: send the bytes over.
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
        h.sh(&format!("echo {b64} | base64 -d > /srv/pkgs/{name}"));
    }
    let r = h.converge(
        "unarchive",
        json!({"src": "/srv/pkgs/site.zip", "dest": "/srv/www", "remote_src": true, "list_files": true}),
        "find /srv/www -type f | sort",
    );
    assert_eq!(data(&r, "handler").as_str(), Some("ZipArchive"));
    assert_eq!(
        h.sh("cat /srv/www/index.html /srv/www/css/a.css"),
        "<h1>hi</h1>\na{}\n"
    );
    for name in ["data.tar.bz2", "data.tar.xz", "data.tar"] {
        h.converge(
            "unarchive",
            json!({"src": format!("/srv/pkgs/{name}"), "dest": "/srv/data", "remote_src": true}),
            "find /srv/data -type f | sort",
        );
    }
    assert_eq!(
        h.sh("cat /srv/data/d/one /srv/data/d/two /srv/data/d/three"),
        "1\n2\n3\n"
    );
    // A zip from the controller (binary stdin) works too.
    h.sh("mkdir -p /srv/www2");
    let r = h.run(
        "unarchive",
        json!({"src": "site.zip", "dest": "/srv/www2"}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(h.sh("cat /srv/www2/index.html"), "<h1>hi</h1>\n");

    let r = h.run(
        "unarchive",
        json!({"src": "/srv/pkgs/none.zip", "dest": "/srv/www", "remote_src": true}),
        NORMAL,
    );
    assert_eq!(
        r.msg.as_deref(),
        Some("Source '/srv/pkgs/none.zip' does not exist")
    );
    // Without unzip on the path, zip archives fail clearly.
    *h.env.borrow_mut() = vec![("PATH".into(), "/tmp/keel-nounzip".into())];
    h.sh("mkdir -p /tmp/keel-nounzip && for t in mktemp od tr cat rm mkdir tar; do ln -sf $(command -v $t) /tmp/keel-nounzip/$t; done");
    let r = h.run(
        "unarchive",
        json!({"src": "/srv/pkgs/site.zip", "dest": "/srv/www", "remote_src": true}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("'unzip'"));
}

// ------------------------------------------------------- apt_repository

#[test]
fn apt_repository_adds_reenables_and_removes_lines() {
    let h = Host::start();
    let repo = "deb [arch=amd64] http://dl.example.org/debian/ bookworm main";
    let path = "/etc/apt/sources.list.d/dl_example_org_debian.list";
    let probe = format!("cat {path}");
    let r = h.converge(
        "apt_repository",
        json!({"repo": repo, "update_cache": false}),
        &probe,
    );
    assert_eq!(h.sh(&probe), format!("{repo}\n"));
    assert_eq!(h.sh(&format!("stat -c %a {path}")).trim(), "644");
    assert_eq!(r.diff[0].after, format!("{repo}\n"));
    assert_eq!(r.diff[0].before_header, "/dev/null");
    // The same entry spelled differently is already there.
    let r = h.run(
        "apt_repository",
        json!({"repo": "deb  [arch=amd64]  http://dl.example.org/debian bookworm main", "update_cache": false}),
        NORMAL,
    );
    assert!(!r.changed);

    // A commented-out entry is re-enabled where it is.
    h.sh("printf '# extra\\n# deb http://mirror.test/x stable contrib\\n' > /etc/apt/sources.list.d/custom.list");
    let r = h.run(
        "apt_repository",
        json!({"repo": "deb http://mirror.test/x stable contrib", "update_cache": false}),
        NORMAL,
    );
    assert!(r.changed);
    assert_eq!(
        h.sh("cat /etc/apt/sources.list.d/custom.list"),
        "# extra\ndeb http://mirror.test/x stable contrib\n"
    );
    assert!(h
        .out("ls /etc/apt/sources.list.d/")
        .find("mirror_test")
        .is_none());

    // filename and mode are honoured.
    let r = h.run("apt_repository", json!({"repo": "deb-src http://src.test/d sid main", "filename": "mine", "mode": "0600", "update_cache": false}), NORMAL);
    assert!(r.changed);
    assert_eq!(
        h.sh("stat -c %a /etc/apt/sources.list.d/mine.list").trim(),
        "600"
    );

    // absent drops the line everywhere, and an emptied file.
    let r = h.converge(
        "apt_repository",
        json!({"repo": repo, "state": "absent", "update_cache": false}),
        &format!("ls {path}"),
    );
    assert_eq!(r.diff[0].after_header, "/dev/null");
    h.run("apt_repository", json!({"repo": "deb http://mirror.test/x stable contrib", "state": "absent", "update_cache": false}), NORMAL);
    assert_eq!(h.sh("cat /etc/apt/sources.list.d/custom.list"), "# extra\n");

    let r = h.run("apt_repository", json!({"repo": "nonsense"}), NORMAL);
    assert!(r.failed && r.msg.unwrap().contains("Invalid repository string"));
}

#[test]
fn deb822_repository_writes_a_sources_stanza() {
    let h = Host::start();
    let path = "/etc/apt/sources.list.d/example-repo.sources";
    let probe = format!("cat {path}");
    let key =
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZabc\n-----END PGP PUBLIC KEY BLOCK-----\n";
    let args = json!({"name": "Example repo", "types": ["deb", "deb-src"], "uris": "https://repo.example.com/debian",
                      "suites": ["bookworm"], "components": ["main", "contrib"], "signed_by": key, "enabled": true});
    h.converge("deb822_repository", args.clone(), &probe);
    assert_eq!(
        h.sh(&probe),
        "X-Repolib-Name: Example repo\nTypes: deb deb-src\nURIs: https://repo.example.com/debian\n\
         Suites: bookworm\nComponents: main contrib\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZabc\n \
         -----END PGP PUBLIC KEY BLOCK-----\nEnabled: yes\n"
    );
    // A changed field rewrites the file.
    let mut changed = args.clone();
    changed["enabled"] = json!(false);
    let r = h.run("deb822_repository", changed, DIFF);
    assert!(r.changed);
    assert!(r.diff[0].after.contains("Enabled: no"));
    h.converge(
        "deb822_repository",
        json!({"name": "Example repo", "state": "absent"}),
        &format!("ls {path}"),
    );

    // apt_repository with a mapping takes the deb822 path.
    let r = h.run(
        "apt_repository",
        json!({"repo": {"name": "via-dict", "uris": "http://d.test/", "suites": "stable", "components": "main"}, "update_cache": false}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert!(h
        .sh("cat /etc/apt/sources.list.d/via-dict.sources")
        .contains("URIs: http://d.test/\n"));
    let e = h.try_run(
        "deb822_repository",
        json!({"name": "x", "suites": "s"}),
        NORMAL,
    );
    assert!(matches!(e, Err(ModuleError::Args(m)) if m.contains("uris")));
}

// --------------------------------------------------------------- apt_key

/// An armored public key made with the controller's gpg, and its
/// fingerprint; `None` when gpg is not installed here.
fn test_key() -> Option<(String, String)> {
    if std::process::Command::new("gpg")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("gpg is not installed on this machine: skipping the apt_key key tests");
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        let o = std::process::Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    gpg(&[
        "--quick-gen-key",
        "Keel Test <keel@test.invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let armored = gpg(&["--armor", "--export", "keel@test.invalid"]);
    let colons = gpg(&["--with-colons", "--fingerprint", "keel@test.invalid"]);
    let fpr = colons
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|l| l.trim_matches(':').to_string())
        .unwrap();
    Some((armored, fpr))
}

#[test]
fn apt_key_installs_matches_and_removes_key_files() {
    let h = Host::start();
    let Some((key, fpr)) = test_key() else { return };
    let long = &fpr[fpr.len() - 16..];
    let path = format!("/etc/apt/trusted.gpg.d/{long}.asc");
    let r = h.converge(
        "apt_key",
        json!({"id": long, "data": key}),
        &format!("cat {path}"),
    );
    assert_eq!(h.sh(&format!("cat {path}")), key);
    assert_eq!(data(&r, "fp").as_str(), Some(fpr.as_str()));
    // Already trusted: the short id, or the same key from a host file, is no change.
    h.sh(&format!("cp {path} /root/k.asc"));
    let r = h.run("apt_key", json!({"file": "/root/k.asc"}), NORMAL);
    assert!(!r.changed && !r.failed, "{:?}", r.msg);
    let r = h.run("apt_key", json!({"id": "0xDEADBEEF", "data": key}), NORMAL);
    assert!(r.failed && r.msg.unwrap().contains("does not match"));
    // An explicit keyring path.
    let r = h.converge(
        "apt_key",
        json!({"data": key, "keyring": "/etc/apt/keyrings/keel.asc"}),
        "cat /etc/apt/keyrings/keel.asc",
    );
    assert!(!r.failed);
    h.converge(
        "apt_key",
        json!({"keyring": "/etc/apt/keyrings/keel.asc", "state": "absent"}),
        "ls /etc/apt/keyrings/",
    );
    h.converge(
        "apt_key",
        json!({"id": &fpr[fpr.len() - 8..], "state": "absent"}),
        &format!("ls {path}"),
    );
    let r = h.run("apt_key", json!({"file": "/root/none.asc"}), NORMAL);
    assert!(r.failed && r.msg.unwrap().starts_with("Unable to read key file"));
    let r = h.run("apt_key", json!({"data": "not a key"}), NORMAL);
    assert!(r.failed, "garbage is not a key");
}
