//! Native ports of modules real roles use (`ini_file`, `service_facts`, `pip`,
//! `package_facts`...), run by `keel play` on a real sshd test host and
//! compared with what ansible-playbook 2.19.14 returned for the same
//! playbook on the same kind of host.
//!
//! Each case is a directory under `fixtures/<module>/` holding `site.yml`
//! (which writes its registered results to `out` on the controller) and
//! `setup.sh` (run on the host before each run). A module of ansible-core
//! is compared with ansible-playbook run live on the same host (the
//! conformance runner's venv; skipped where it cannot be built, unless
//! `KEEL_REQUIRE_REAL` is set). A collection's module, which that venv
//! lacks, is compared with `reference-<mode>.json`: the results
//! ansible-playbook wrote with the collection installed (`diff`: a
//! `--diff` run, `check`: a `--check --diff` run). Either way the
//! interpreter-discovery fact and warning, which a native module has no
//! reason to produce, are taken out of the reference.

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_testhosts::TestHosts;
use serde_json::Value;

#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/reference.rs"]
mod reference;
use reference::reference_bin;

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn inventory(th: &TestHosts, dir: &Path) -> PathBuf {
    let h = &th.hosts[0];
    let path = dir.join("hosts");
    std::fs::write(
        &path,
        format!(
            "[testhosts]\n{} ansible_host={} ansible_port={} ansible_user=root \
             ansible_ssh_private_key_file={} \
             ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
            h.name,
            h.addr,
            h.port,
            th.client_key.display(),
            th.known_hosts.display()
        ),
    )
    .unwrap();
    path
}

/// Runs the case's `site.yml` with `flags` after its `setup.sh`; returns the
/// results it wrote.
fn keel_run(th: &TestHosts, case: &str, flags: &[&str]) -> Value {
    keel_run_with(th, case, flags, "", &[])
}

/// [`keel_run`] with `setup_env` (shell lines) before `setup.sh` and
/// `extra` (`-e` arguments) for the play.
fn keel_run_with(
    th: &TestHosts,
    case: &str,
    flags: &[&str],
    setup_env: &str,
    extra: &[String],
) -> Value {
    let dir = case_dir(case);
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(th, tmp.path());
    let setup = std::fs::read_to_string(dir.join("setup.sh")).unwrap();
    th.sh(0, &format!("{setup_env}\n{setup}"));
    let out_file = tmp.path().join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(&dir)
        .arg("play")
        .arg("-i")
        .arg(&inv)
        .arg("-e")
        .arg(format!("out={}", out_file.display()))
        .args(extra.iter().flat_map(|e| ["-e", e.as_str()]))
        .args(flags)
        .arg("site.yml")
        .output()
        .expect("running keel");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "keel play {flags:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "keel play {case} {flags:?} failed");
    serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap()
}

/// What ansible-playbook returns for the case, run now on the same host.
fn ansible_run(th: &TestHosts, bin: &Path, case: &str, flags: &[&str]) -> Value {
    let dir = case_dir(case);
    let tmp = tempfile::tempdir().unwrap();
    let inv = inventory(th, tmp.path());
    th.sh(0, &std::fs::read_to_string(dir.join("setup.sh")).unwrap());
    let out_file = tmp.path().join("results.json");
    let out = Command::new(bin.join("ansible-playbook"))
        .current_dir(&dir)
        .arg("-i")
        .arg(&inv)
        .arg("-e")
        .arg(format!("out={}", out_file.display()))
        .args(flags)
        .arg("site.yml")
        .output()
        .expect("running ansible-playbook");
    assert!(
        out.status.success(),
        "ansible-playbook {case} {flags:?} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    without_discovery(&mut v);
    v
}

/// Takes Python interpreter discovery's fact and warning out of results.
fn without_discovery(v: &mut Value) {
    for r in v.as_object_mut().unwrap().values_mut() {
        let Some(r) = r.as_object_mut() else { continue };
        if let Some(Value::Object(f)) = r.get_mut("ansible_facts") {
            f.remove("discovered_interpreter_python");
            if f.is_empty() {
                r.remove("ansible_facts");
            }
        }
        if let Some(Value::Array(w)) = r.get_mut("warnings") {
            w.retain(|w| {
                !w.as_str()
                    .unwrap_or("")
                    .contains("discovered Python interpreter")
            });
            if w.is_empty() {
                r.remove("warnings");
            }
        }
    }
}

fn reference(case: &str, mode: &str) -> Value {
    let p = case_dir(case).join(format!("reference-{mode}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Compares result by result, so a failure names the task.
fn assert_same(case: &str, mode: &str, keel: &Value, want: &Value) {
    let (k, w) = (keel.as_object().unwrap(), want.as_object().unwrap());
    for (name, expected) in w {
        assert_eq!(
            k.get(name),
            Some(expected),
            "{case} ({mode}): `{name}` differs from ansible-playbook's"
        );
    }
    assert_eq!(k.len(), w.len(), "{case} ({mode}): other results");
}

#[test]
fn ini_file_edits_as_community_general_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run(&th, "ini_file", flags);
        assert_same("ini_file", mode, &got, &reference("ini_file", mode));
    }
}

/// Runs `case` under both engines in `--diff` and `--check --diff` and
/// compares every result.
fn compare_live(case: &str) {
    let Some(bin) = reference_bin() else { return };
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let want = ansible_run(&th, &bin, case, flags);
        let got = keel_run(&th, case, flags);
        assert_same(case, mode, &got, &want);
    }
}

#[test]
fn service_facts_lists_services_as_ansible_core_does() {
    compare_live("service_facts");
}

#[test]
fn package_facts_lists_apt_packages_as_ansible_core_does() {
    compare_live("package_facts");
}

#[test]
fn alternatives_installs_selects_and_removes_as_community_general_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run(&th, "alternatives", flags);
        assert_same("alternatives", mode, &got, &reference("alternatives", mode));
    }
}

/// `pip` into virtualenvs from wheels that `setup.sh` builds on the host
/// (the task's environment points pip at them; no index is asked), compared
/// with ansible-core live. Where the freeze list already satisfies a plain
/// `present`/`absent`, Keel runs no pip, so those results have an empty
/// `stdout`/`stderr` where ansible-core shows pip's "Requirement already
/// satisfied" or "Skipping"; everything else must be the same.
#[test]
fn pip_installs_from_local_wheels_as_ansible_core_does() {
    let Some(bin) = reference_bin() else { return };
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut want = ansible_run(&th, &bin, "pip", flags);
        let got = keel_run(&th, "pip", flags);
        if mode == "diff" {
            for name in ["p1", "p2", "p4", "p6", "p11"] {
                let r = want[name].as_object_mut().unwrap();
                assert_eq!(r["changed"], false, "{name} changed under ansible-core");
                for (k, v) in [
                    ("stdout", Value::from("")),
                    ("stderr", Value::from("")),
                    ("stdout_lines", Value::Array(vec![])),
                    ("stderr_lines", Value::Array(vec![])),
                ] {
                    r.insert(k.into(), v);
                }
            }
        }
        assert_same("pip", mode, &got, &want);
    }
}

/// Runs a `postgresql_*` case against a server this test starts, in both
/// modes, and compares with the recorded reference.
fn compare_postgres(case: &str) {
    let Some(pg) = postgres::PgServer::start() else {
        return;
    };
    let th = TestHosts::start(1).expect("starting a test host");
    let env = format!("export PGPORT={}", pg.port);
    let extra = [format!("pg_port={}", pg.port)];
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run_with(&th, case, flags, &env, &extra);
        assert_same(case, mode, &got, &reference(case, mode));
    }
}

#[test]
fn postgresql_db_creates_updates_and_drops_as_community_postgresql_does() {
    compare_postgres("postgresql_db");
}

#[test]
fn postgresql_user_creates_alters_and_drops_roles_as_community_postgresql_does() {
    compare_postgres("postgresql_user");
}

/// Grants and revokes on tables (one, and `ALL_IN_SCHEMA`), a sequence, a
/// function, a database, schemas, default privileges and a group
/// membership, with and without the grant option; the result includes the
/// ACLs the server ends with, so a grant that was reported but not made (or
/// made in check mode) shows.
#[test]
fn postgresql_privs_grants_and_revokes_as_community_postgresql_does() {
    compare_postgres("postgresql_privs");
}

/// `locale_gen` on an sshd test host (Debian's `locales`, glibc mechanism).
/// community.general reports `changed: false` in check mode even where the
/// run builds locales (l2, l3 here); Keel reports the same, with a warning
/// that says what the run would do, which is checked and then set aside.
#[test]
fn locale_gen_builds_and_removes_locales_as_community_general_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut got = keel_run(&th, "locale_gen", flags);
        if mode == "check" {
            for name in ["l2", "l3"] {
                let r = got[name].as_object_mut().unwrap();
                let w = r.remove("warnings").expect("a warning in check mode");
                assert!(
                    w[0].as_str().unwrap().contains("would build de_CH.UTF-8"),
                    "{w}"
                );
            }
        }
        assert_same("locale_gen", mode, &got, &reference("locale_gen", mode));
    }
}

/// `supervisorctl` against a supervisord that `setup.sh` starts on the host
/// (Debian's supervisor package). In check mode community.general runs
/// `supervisorctl update` for `state: restarted`, which adds `keeltwo` to
/// supervisord although nothing should change; Keel does not, so its final
/// status lacks that line, and everything else must be the same.
#[test]
fn supervisorctl_drives_programs_and_groups_as_community_general_does() {
    if !Path::new("/usr/bin/supervisord").exists() {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, but supervisor is not installed (scripts/test installs it)"
        );
        eprintln!("skipping: supervisor is not installed");
        return;
    }
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run(&th, "supervisorctl", flags);
        let mut want = reference("supervisorctl", mode);
        if mode == "check" {
            let status = want["status"].as_array_mut().unwrap();
            let before = status.len();
            status.retain(|l| l != "keeltwo STOPPED");
            assert_eq!(
                status.len(),
                before - 1,
                "the reference's update added keeltwo"
            );
        }
        assert_same("supervisorctl", mode, &got, &want);
    }
}

/// `apache2_module` on an sshd test host with Debian's apache2 package
/// (`a2enmod`/`a2dismod`, confirmed with `apache2ctl -M`).
#[test]
fn apache2_module_enables_and_disables_as_community_general_does() {
    if !Path::new("/usr/sbin/apache2ctl").exists() {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, but apache2 is not installed (scripts/test installs it)"
        );
        eprintln!("skipping: apache2 is not installed");
        return;
    }
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let got = keel_run(&th, "apache2_module", flags);
        assert_same(
            "apache2_module",
            mode,
            &got,
            &reference("apache2_module", mode),
        );
    }
}

/// `django_manage` with a Django project `setup.sh` makes in a virtualenv on
/// the host (Django from the package index, once per host). community.general
/// fails an option a command does not take with a bare `KeyError` when the
/// command is not in its table (`check` with `clear`: "Task failed: Module
/// failed: 'check'"); Keel says what is wrong, so `d6`'s message is checked
/// apart. In check mode the module is skipped, as ansible-core skips it.
#[test]
fn django_manage_runs_migrate_collectstatic_and_check_as_community_general_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut got = keel_run(&th, "django_manage", flags);
        let mut want = reference("django_manage", mode);
        if mode == "diff" {
            assert_eq!(
                got["d6"]["msg"], "clear param is incompatible with command=check",
                "{}",
                got["d6"]
            );
            got["d6"]["msg"] = Value::Null;
            want["d6"]["msg"] = Value::Null;
        }
        assert_same("django_manage", mode, &got, &want);
    }
}

/// Replaces what differs from one key to the next (fingerprints, public
/// keys, moduli, points) with placeholders, so results of two runs that made
/// different keys compare. Keel gives a modulus or point as a decimal string
/// (templating has no integers that big); community.crypto as a number.
fn mask_key_material(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "fingerprint" | "public_key_fingerprints" => {
                        if let Value::Object(f) = x {
                            for h in f.values_mut() {
                                *h = Value::from("<digest>");
                            }
                        }
                    }
                    "public_key" | "modulus" | "x" | "y" => *x = Value::from("<key material>"),
                    _ => mask_key_material(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_key_material),
        _ => {}
    }
}

/// `openssl_privatekey`: RSA, ECC and Ed25519 keys, a passphrase, sizes and
/// modes changed, `regenerate: never`, removal. The keys are random, so
/// key material is masked in both results, and the fingerprints Keel
/// reported are checked against the key files the host ends with.
#[test]
fn openssl_privatekey_makes_keys_as_community_crypto_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut got = keel_run(&th, "openssl_privatekey", flags);
        if mode == "diff" {
            for (name, file, pass) in [
                ("k4", "rsa.pem", ""),
                ("k11", "ec.pem", ""),
                ("k10", "secret.pem", "other-pass"),
            ] {
                let der_sha256 = th.sh(
                    0,
                    &format!(
                        "openssl pkey -in /etc/keel-ssl/{file} -passin pass:{pass} -pubout -outform DER \
                         | sha256sum | cut -c1-64 | sed 's/../&:/g; s/:$//'"
                    ),
                );
                assert_eq!(
                    got[name]["fingerprint"]["sha256"],
                    der_sha256.trim(),
                    "{name}: the fingerprint is not the key's on the host"
                );
            }
        }
        let mut want = reference("openssl_privatekey", mode);
        mask_key_material(&mut got);
        mask_key_material(&mut want);
        assert_same("openssl_privatekey", mode, &got, &want);
    }
}

/// `openssl_csr`: subject fields and a subject dict, alternative names (in
/// another order the second time), key usages, basic constraints, a key
/// with a passphrase, the common name as the alternative name, a new key,
/// errors, removal. Keys are made by `setup.sh`, so key material is masked
/// in both results; the public key Keel reports is checked against the key
/// on the host, and the requests left there verify with `openssl req`.
#[test]
fn openssl_csr_makes_requests_as_community_crypto_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut got = keel_run(&th, "openssl_csr", flags);
        let mut want = reference("openssl_csr", mode);
        if mode == "diff" {
            let key_sha256 = th.sh(
                0,
                "openssl pkey -in /etc/keel-csr/rsa.key -pubout -outform DER \
                 | sha256sum | cut -c1-64 | sed 's/../&:/g; s/:$//'",
            );
            assert_eq!(
                got["c1"]["diff"]["after"]["public_key_fingerprints"]["sha256"],
                key_sha256.trim(),
                "c1: the request is not for the key on the host"
            );
            let text = got["c6"]["csr"].as_str().unwrap_or_default().to_string();
            assert!(
                text.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"),
                "c6: csr is {text:?}"
            );
            for v in [&mut got, &mut want] {
                v["c6"]["csr"] = Value::from("<request>");
            }
        }
        mask_key_material(&mut got);
        mask_key_material(&mut want);
        assert_same("openssl_csr", mode, &got, &want);
    }
}

/// Seconds since the epoch of community.crypto's `%Y%m%d%H%M%SZ` text.
fn asn1_seconds(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%SZ")
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .and_utc()
        .timestamp()
}

/// `x509_certificate`: a self-signed CA certificate from a request, again
/// (not changed), server certificates signed by a CA (`ownca`) with
/// relative validity (`+90d`, `-1h`), again, a new request, a self-signed
/// certificate from a key alone, a certificate signed by the CA Keel made,
/// errors, removal. Serial numbers, times, keys and identifiers differ from
/// run to run, so they are masked in both results; the validity Keel wrote
/// is checked against the relative times asked for, the fingerprints
/// against the files on the host, and both chains are checked
/// there with `openssl verify` (in `have`).
#[test]
fn x509_certificate_signs_as_community_crypto_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut got = keel_run(&th, "x509_certificate", flags);
        let mut want = reference("x509_certificate", mode);
        if mode == "diff" {
            for (name, span) in [
                ("s1", 365 * 86_400),
                ("o1", 90 * 86_400 + 3_600),
                ("s3", 3650 * 86_400),
            ] {
                let r = &got[name];
                let span_got = asn1_seconds(&r["notAfter"]) - asn1_seconds(&r["notBefore"]);
                assert!(
                    (span_got - span).abs() <= 2,
                    "{name}: validity of {span_got}s, asked for {span}s"
                );
            }
            assert_eq!(got["o2"]["serial_number"], got["o1"]["serial_number"]);
            for (name, file) in [("o3", "server.crt"), ("s1", "ca.crt"), ("o4", "chain.crt")] {
                let on_host = th.sh(
                    0,
                    &format!(
                        "openssl x509 -in /etc/keel-pki/{file} -noout -serial -fingerprint -sha256"
                    ),
                );
                let fp = got[name]["diff"]["after"]["fingerprints"]["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_uppercase();
                assert!(
                    on_host.contains(&format!("Fingerprint={fp}")),
                    "{name}: {fp} is not the fingerprint of {file}: {on_host}"
                );
            }
            let text = got["o3"]["certificate"].as_str().unwrap_or_default();
            assert!(
                text.starts_with("-----BEGIN CERTIFICATE-----\n"),
                "o3: certificate is {text:?}"
            );
        }
        for v in [&mut got, &mut want] {
            mask_certificate(v);
            mask_key_material(v);
        }
        assert_same("x509_certificate", mode, &got, &want);
    }
}

/// Masks what differs between two runs that made different certificates:
/// serial numbers, validity, the certificate text and digests, key
/// identifiers.
fn mask_certificate(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "serial_number"
                    | "notBefore"
                    | "notAfter"
                    | "not_before"
                    | "not_after"
                    | "subject_key_identifier"
                    | "authority_key_identifier"
                        if !x.is_null() =>
                    {
                        *x = Value::from("<varies>")
                    }
                    "certificate" if x.is_string() => *x = Value::from("<certificate>"),
                    "fingerprints" => *x = Value::from("<certificate digest>"),
                    "2.5.29.14" | "2.5.29.35" => x["value"] = Value::from("<key id>"),
                    _ => mask_certificate(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_certificate),
        _ => {}
    }
}

/// `synchronize`, push form: a tree pushed (then not changed), with
/// `delete`, `checksum` and an exclude in `rsync_opts`, a single file
/// without `archive`. Everything but `cmd` is compared with ansible.posix's
/// results (rsync's itemised lines included); `cmd` differs on purpose
/// (Keel's `ssh` gets the connection's settings through its own
/// `ssh_config`, host key checking included, where ansible.posix passes
/// `StrictHostKeyChecking=no`), so its shape is checked here.
#[test]
fn synchronize_pushes_with_rsync_as_ansible_posix_does() {
    let th = TestHosts::start(1).expect("starting a test host");
    let addr = th.hosts[0].addr.clone();
    for (mode, flags) in [
        ("diff", &["--diff"][..]),
        ("check", &["--check", "--diff"][..]),
    ] {
        let mut got = keel_run(&th, "synchronize", flags);
        let mut want = reference("synchronize", mode);
        for name in ["s1", "s2", "s3", "s4", "s5"] {
            let cmd = got[name]["cmd"].as_str().unwrap_or_default().to_string();
            assert!(
                cmd.contains("ssh -F ") && cmd.contains(" -S none'"),
                "{name}: {cmd}"
            );
            assert!(
                cmd.ends_with(&format!(" root@{addr}:/srv/keel-sync/"))
                    || cmd.ends_with(&format!(" root@{addr}:/srv/keel-sync/copy.html")),
                "{name}: {cmd}"
            );
            assert_eq!(
                cmd.contains(" --dry-run "),
                mode == "check",
                "{name}: {cmd}"
            );
            for v in [&mut got, &mut want] {
                v[name]["cmd"] = Value::from("<cmd>");
            }
        }
        assert_same("synchronize", mode, &got, &want);
    }
}

/// `synchronize` to a host only a jump host reaches (`ProxyJump` in the
/// connection's ssh arguments): rsync's ssh goes the same way, with the
/// same key and known_hosts. ansible.posix would not use the jump host
/// unless `use_ssh_args` is set, so there is no reference to compare with:
/// the files on the inner host are checked.
#[test]
fn synchronize_goes_through_the_jump_host() {
    let th = TestHosts::start_jump_chain(1).expect("starting a jump chain");
    let tmp = tempfile::tempdir().unwrap();
    let inv = tmp.path().join("hosts");
    std::fs::write(&inv, th.inventory_ini("")).unwrap();
    let play = tmp.path().join("site.yml");
    std::fs::write(
        &play,
        format!(
            "- hosts: {}\n  gather_facts: false\n  tasks:\n    - synchronize:\n        \
             src: {}/\n        dest: /srv/keel-jump/\n      register: r\n    \
             - copy:\n        content: \"{{{{ r | to_json }}}}\"\n        dest: {}\n      \
             delegate_to: localhost\n",
            th.hosts[1].name,
            case_dir("synchronize").join("files/site").display(),
            tmp.path().join("r.json").display()
        ),
    )
    .unwrap();
    th.sh(1, "rm -rf /srv/keel-jump");
    for want_changed in [true, false] {
        let out = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("play")
            .arg("-i")
            .arg(&inv)
            .arg(&play)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join("r.json")).unwrap())
                .unwrap();
        assert_eq!(r["changed"], want_changed, "{r}");
    }
    assert_eq!(
        th.sh(1, "cd /srv/keel-jump && find . -type f | sort"),
        "./css/main.css\n./index.html\n./notes.tmp\n"
    );
}
