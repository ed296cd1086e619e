//! `mysql_db` and `mysql_user` against a real MariaDB: each test boots a
//! full Debian host (`keel_testhosts::full`, systemd as PID 1, MariaDB 10.11
//! preinstalled and running), drives the modules over SSH, and checks the
//! server's real state from inside the host as OS root (`SHOW GRANTS`,
//! `SHOW DATABASES`, logging in with passwords over TCP), plus idempotency,
//! check mode and diffs.

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use keel::modules::{self, Args, ModuleError, ModuleResult, TaskContext};
use keel::template::{value_from_json, Scope, Templar, TemplateOrigin};
use keel::transport::{ConnectSpec, Connection, SshConnection};
use keel::vars::VarMap;
use keel_testhosts::full::FullHosts;
use minijinja::Value;
use serde_json::json;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Check,
    Diff,
}

/// One full host running MariaDB, with an open SSH connection.
struct Db {
    fh: FullHosts,
    rt: tokio::runtime::Runtime,
    conn: Connection,
    templar: Arc<Templar>,
    scope: Scope,
    origin: TemplateOrigin,
    search: Vec<PathBuf>,
    /// The task timeout: `None` runs commands through the connection's
    /// persistent shell, `Some` on a channel of their own.
    timeout: std::cell::Cell<Option<std::time::Duration>>,
}

/// Single-quotes a word for `sh`.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Db {
    fn start() -> Db {
        let fh = FullHosts::builder()
            .preinstall(&["mariadb-server"])
            .start(1)
            .expect("starting a full host with MariaDB");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = fh.host(0);
        let mut v = VarMap::new();
        v.insert("ansible_host".into(), Value::from(h.addr.clone()));
        v.insert("ansible_port".into(), Value::from(h.port));
        v.insert("ansible_user".into(), Value::from("root"));
        v.insert(
            "ansible_ssh_private_key_file".into(),
            Value::from(fh.client_key.display().to_string()),
        );
        v.insert(
            "ansible_ssh_common_args".into(),
            Value::from(format!(
                "-o UserKnownHostsFile={}",
                fh.known_hosts().display()
            )),
        );
        let spec = ConnectSpec::from_vars(&h.name, &v).unwrap();
        let conn = rt
            .block_on(SshConnection::connect(&h.name, &spec))
            .map(|c| Connection::Ssh(Box::new(c)))
            .expect("connecting to the full host");
        let db = Db {
            fh,
            rt,
            conn,
            templar: Templar::new(),
            scope: Scope::new(),
            origin: TemplateOrigin::default(),
            search: Vec::new(),
            timeout: Default::default(),
        };
        // MariaDB starts at boot; wait until it answers.
        db.sh("for i in $(seq 1 60); do mysql -e 'SELECT 1' >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1");
        db
    }

    fn try_run(
        &self,
        module: &str,
        args: &serde_json::Value,
        mode: Mode,
    ) -> Result<ModuleResult, ModuleError> {
        let m = modules::lookup(module).unwrap_or_else(|| panic!("{module} is not registered"));
        let args: Args = args
            .as_object()
            .expect("args must be an object")
            .iter()
            .map(|(k, v)| (k.clone(), value_from_json(v)))
            .collect();
        let ctx = TaskContext {
            host: "f1",
            conn: &self.conn,
            templar: &self.templar,
            scope: &self.scope,
            origin: &self.origin,
            check_mode: mode == Mode::Check,
            diff: mode != Mode::Normal,
            no_log: false,
            become_: None,
            env: Vec::new(),
            search_paths: &self.search,
            timeout: self.timeout.get(),
        };
        self.rt.block_on(m.run(&args, &ctx))
    }

    /// Runs a module; panics if it errors or fails.
    fn run(&self, module: &str, args: serde_json::Value, mode: Mode) -> ModuleResult {
        let r = self
            .try_run(module, &args, mode)
            .unwrap_or_else(|e| panic!("{module} {args}: {e}"));
        assert!(!r.failed, "{module} {args} failed: {:?}", r.msg);
        r
    }

    /// Check mode (reports a change, `probe` output unchanged), then for
    /// real with a diff (changed, `probe` differs), then again (unchanged).
    fn converge(&self, module: &str, args: serde_json::Value, probe: &str) -> ModuleResult {
        let before = self.sql(probe);
        let check = self.run(module, args.clone(), Mode::Check);
        assert!(
            check.changed,
            "{module} {args}: check mode should report a change"
        );
        assert_eq!(
            self.sql(probe),
            before,
            "{module}: check mode changed the server"
        );
        let first = self.run(module, args.clone(), Mode::Diff);
        assert!(first.changed, "{module} {args}: first run should change");
        assert_ne!(
            self.sql(probe),
            before,
            "{module}: the change is not visible"
        );
        let second = self.run(module, args.clone(), Mode::Normal);
        assert!(
            !second.changed,
            "{module} {args}: second run should not change"
        );
        first
    }

    fn exec(&self, cmd: &str) -> Output {
        self.fh.exec(0, cmd)
    }

    fn sh(&self, cmd: &str) -> String {
        self.fh.sh(0, cmd)
    }

    /// Runs SQL as the host's root through the socket; rows as text.
    fn sql(&self, sql: &str) -> String {
        self.sh(&format!("printf '%s\\n' {} | mysql -N -B --raw", q(sql)))
    }

    /// Whether `user` logs in over TCP with `password`.
    fn login_ok(&self, user: &str, password: &str) -> bool {
        self.exec(&format!(
            "MYSQL_PWD={} mysql --protocol=tcp -h 127.0.0.1 -u {} -N -e 'SELECT 1'",
            q(password),
            q(user)
        ))
        .status
        .success()
    }
}

fn diff_text(r: &ModuleResult) -> String {
    r.diff
        .iter()
        .map(|d| {
            similar::TextDiff::from_lines(&d.before, &d.after)
                .unified_diff()
                .header(&d.before_header, &d.after_header)
                .to_string()
        })
        .collect()
}

fn data<'a>(r: &'a ModuleResult, key: &str) -> &'a Value {
    r.data
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", r.data))
}

// ------------------------------------------------------------------ mysql_db

#[test]
fn databases_are_created_with_charset_and_dropped() {
    let db = Db::start();
    // Names that need quoting as identifiers and as string literals.
    let names = ["keel_app", "we`ird db", "o'brien\\x"];
    let probe = "SHOW DATABASES";
    let args = json!({
        "name": names, "encoding": "utf8mb4", "collation": "utf8mb4_bin",
        "check_implicit_admin": true,
    });
    let r = db.converge("mysql_db", args.clone(), probe);
    let dbs = db.sql(probe);
    for n in names {
        assert!(dbs.lines().any(|l| l == n), "{n} missing from {dbs}");
        let cs = db.sql(&format!(
            "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', DEFAULT_COLLATION_NAME) \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = BINARY '{}'",
            n.replace('\\', "\\\\").replace('\'', "\\'")
        ));
        assert_eq!(cs.trim(), "utf8mb4 utf8mb4_bin", "{n}");
    }
    assert_eq!(data(&r, "db").as_str(), Some(names.join(" ").as_str()));
    assert_eq!(data(&r, "executed_commands").len(), Some(3));
    let d = diff_text(&r);
    assert!(
        d.contains("+state: present") && d.contains("+collation: utf8mb4_bin"),
        "{d}"
    );

    // A comma-separated string is a list too; existing ones stay as they are.
    let r = db.run(
        "mysql_db",
        json!({"name": "keel_app,keel_other", "check_implicit_admin": true}),
        Mode::Normal,
    );
    assert!(r.changed);
    assert_eq!(data(&r, "executed_commands").len(), Some(1));

    let gone = json!({"name": names, "state": "absent", "check_implicit_admin": true});
    db.converge("mysql_db", gone, probe);
    let dbs = db.sql(probe);
    for n in names {
        assert!(!dbs.lines().any(|l| l == n), "{n} still in {dbs}");
    }
    assert!(dbs.lines().any(|l| l == "keel_other"));
}

#[test]
fn unsupported_states_and_bad_arguments_fail_cleanly() {
    let db = Db::start();
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "mysql_db",
            json!({"name": "x", "state": "import"}),
            "with state=import, target is required",
        ),
        (
            "mysql_user",
            json!({"name": "u", "priv": "nocolon"}),
            "invalid privileges string",
        ),
        (
            "mysql_user",
            json!({"name": "u", "priv": "db.*:SELECT;DROP"}),
            "invalid privilege",
        ),
        (
            "mysql_user",
            json!({"name": "u", "pasword": "x"}),
            "Unsupported parameters for (mysql_user) module: pasword.",
        ),
        (
            "mysql_user",
            json!({"name": "u", "host_all": true}),
            "host_all cannot be used when creating users",
        ),
        (
            "mysql_user",
            json!({"name": "u", "password": "nothash", "encrypted": true}),
            "not a mysql_native_password hash",
        ),
        (
            "mysql_db",
            json!({"name": "keel_none", "state": "import", "target": "/root/missing.sql",
                   "check_implicit_admin": true}),
            "target /root/missing.sql not found",
        ),
    ];
    for (module, args, want) in cases {
        let msg = match db.try_run(module, args, Mode::Normal) {
            Ok(r) => {
                assert!(r.failed, "{module} {args} should fail");
                r.msg.unwrap_or_default()
            }
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(want), "{module} {args}: {msg}");
    }
}

#[test]
fn dumps_and_imports_round_trip() {
    let db = Db::start();
    db.sql(
        "CREATE DATABASE keel_src; CREATE TABLE keel_src.t (id INT PRIMARY KEY, s TEXT); \
         INSERT INTO keel_src.t VALUES (1, 'plain'), (2, 'it''s \\\\ tricky\\n')",
    );
    let rows = |name: &str| db.sql(&format!("SELECT id, HEX(s) FROM `{name}`.t ORDER BY id"));
    let want = rows("keel_src");
    assert_eq!(want.lines().count(), 2, "{want}");
    for (i, target) in ["/root/keel dump.sql", "/root/keel.sql.gz"]
        .iter()
        .enumerate()
    {
        let dump = json!({"name": "keel_src", "state": "dump", "target": target,
                          "check_implicit_admin": true});
        let exists = format!("test -e {} && echo yes || echo no", q(target));
        let r = db.run("mysql_db", dump.clone(), Mode::Check);
        assert!(r.changed);
        assert_eq!(db.sh(&exists).trim(), "no", "check mode wrote {target}");
        let r = db.run("mysql_db", dump, Mode::Normal);
        assert!(r.changed);
        assert_eq!(db.sh(&exists).trim(), "yes");
        assert_eq!(db.sh(&format!("stat -c %a {}", q(target))).trim(), "600");
        let cmd = data(&r, "executed_commands").get_item_by_index(0).unwrap();
        assert!(
            cmd.to_string().starts_with("mysqldump --quick -- keel_src"),
            "{cmd}"
        );

        // Importing creates the missing database and fills it.
        let copy = format!("keel_copy{i}");
        let r = db.run(
            "mysql_db",
            json!({"name": copy, "state": "import", "target": target,
                   "check_implicit_admin": true}),
            Mode::Normal,
        );
        assert!(r.changed);
        assert_eq!(rows(&copy), want, "{target}");
    }
    // `all` dumps every database with its CREATE DATABASE.
    let r = db.run(
        "mysql_db",
        json!({"name": "all", "state": "dump", "target": "/root/all.sql",
               "check_implicit_admin": true}),
        Mode::Normal,
    );
    assert!(r.changed);
    let dumped = db.sh("grep -c 'CREATE DATABASE.*`keel_copy1`' /root/all.sql");
    assert_eq!(dumped.trim(), "1");
}

// ---------------------------------------------------------------- mysql_user

#[test]
fn user_password_and_privileges_converge() {
    let db = Db::start();
    db.sql("CREATE DATABASE keel_ro; CREATE TABLE keel_ro.t1 (a INT, b INT)");
    let pw1 = "s3cr'et\\pw\"1";
    let pw2 = "another pass #2";
    let grants = "SHOW GRANTS FOR 'keel_app'@'localhost'";
    let users = "SELECT CONCAT(User, '@', Host) FROM mysql.user ORDER BY 1";

    let r = db.converge(
        "mysql_user",
        json!({
            "name": "keel_app", "password": pw1,
            "priv": "keel_app.*:ALL/keel_ro.t1:SELECT,INSERT",
            "check_implicit_admin": true,
        }),
        users,
    );
    assert_eq!(data(&r, "user").as_str(), Some("keel_app"));
    let g = db.sql(grants);
    assert!(
        g.contains("GRANT ALL PRIVILEGES ON `keel_app`.* TO `keel_app`@`localhost`"),
        "{g}"
    );
    assert!(
        g.contains("GRANT SELECT, INSERT ON `keel_ro`.`t1` TO `keel_app`@`localhost`"),
        "{g}"
    );
    assert!(db.login_ok("keel_app", pw1));
    let d = diff_text(&r);
    assert!(
        d.contains("+state: present") && d.contains("+priv: keel_app.*:ALL PRIVILEGES"),
        "{d}"
    );
    let hash = db.sql("SELECT PASSWORD('s3cr\\'et\\\\pw\"1')");
    let shown = format!("{r:?}");
    for secret in [pw1, hash.trim()] {
        assert!(!shown.contains(secret), "result shows a secret: {shown}");
    }

    // A new password: the old one stops working.
    let pw_args = json!({"name": "keel_app", "password": pw2, "check_implicit_admin": true});
    let before = db.sql("SHOW CREATE USER 'keel_app'@'localhost'");
    let r = db.converge(
        "mysql_user",
        pw_args.clone(),
        "SHOW CREATE USER 'keel_app'@'localhost'",
    );
    assert_ne!(before, db.sql("SHOW CREATE USER 'keel_app'@'localhost'"));
    assert!(data(&r, "password_changed").is_true());
    assert!(db.login_ok("keel_app", pw2));
    assert!(!db.login_ok("keel_app", pw1));
    let d = diff_text(&r);
    assert!(d.contains("+password: ******** (changed)"), "{d}");
    assert!(!d.contains(pw2), "{d}");
    // Without `priv`, privileges are left alone (the first line shows the
    // password hash, which did change).
    let object_grants = |g: &str| g.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(object_grants(&db.sql(grants)), object_grants(&g));

    // on_create never touches an existing account's password.
    let r = db.run(
        "mysql_user",
        json!({"name": "keel_app", "password": pw1, "update_password": "on_create",
               "check_implicit_admin": true}),
        Mode::Normal,
    );
    assert!(!r.changed);
    assert!(db.login_ok("keel_app", pw2));

    // The dict form replaces privileges: unlisted ones are revoked.
    let r = db.converge(
        "mysql_user",
        json!({"name": "keel_app",
               "priv": {"keel_ro.t1": ["SELECT", "UPDATE (b)"], "*.*": "PROCESS",
                        "keel_x.*": "SELECT,GRANT"},
               "check_implicit_admin": true}),
        grants,
    );
    let g = db.sql(grants);
    assert!(!g.contains("keel_app`.*"), "{g}");
    assert!(g.contains("GRANT PROCESS ON *.* TO"), "{g}");
    assert!(g.contains("UPDATE (`b`) ON `keel_ro`.`t1` TO"), "{g}");
    assert!(
        g.contains("GRANT SELECT ON `keel_x`.* TO `keel_app`@`localhost` WITH GRANT OPTION"),
        "{g}"
    );
    let d = diff_text(&r);
    assert!(
        d.contains("-priv: keel_app.*:ALL PRIVILEGES/keel_ro.t1:INSERT,SELECT"),
        "{d}"
    );

    // append_privs adds without revoking; subtract_privs takes away.
    db.converge(
        "mysql_user",
        json!({"name": "keel_app", "priv": "keel_ro.*:SELECT", "append_privs": true,
               "check_implicit_admin": true}),
        grants,
    );
    let g = db.sql(grants);
    assert!(
        g.contains("GRANT SELECT ON `keel_ro`.* TO") && g.contains("GRANT PROCESS ON *.*"),
        "{g}"
    );
    db.converge(
        "mysql_user",
        json!({"name": "keel_app", "priv": "*.*:PROCESS", "subtract_privs": true,
               "check_implicit_admin": true}),
        grants,
    );
    let g = db.sql(grants);
    assert!(
        g.contains("GRANT USAGE ON *.* TO") && g.contains("`keel_ro`.*"),
        "{g}"
    );

    // host_all reaches every host of the name; absent drops them all.
    db.sql("CREATE USER 'keel_app'@'127.0.0.1'");
    let r = db.run(
        "mysql_user",
        json!({"name": "keel_app", "host_all": true, "password": pw1,
               "check_implicit_admin": true}),
        Mode::Normal,
    );
    assert!(r.changed);
    assert!(db.login_ok("keel_app", pw1));
    db.converge(
        "mysql_user",
        json!({"name": "keel_app", "host_all": true, "state": "absent",
               "check_implicit_admin": true}),
        users,
    );
    assert!(!db.sql(users).contains("keel_app@"), "{}", db.sql(users));
    assert!(!db.login_ok("keel_app", pw1));
    assert_eq!(
        db.sh("ls -d /tmp/keel-mysql.* 2>/dev/null | wc -l").trim(),
        "0"
    );
}

#[test]
fn account_names_and_passwords_are_escaped() {
    let db = Db::start();
    // A task timeout sends each batch over a channel of its own (the other
    // tests use the persistent shell): stdin must arrive intact either way.
    db.timeout.set(Some(std::time::Duration::from_secs(120)));
    let cases = [
        ("o'neil", "localhost", "pa'ss\\word\"x"),
        ("back\\slash`tick", "localhost", "semi;colon -- $(id) `id`"),
        ("new line", "127.0.0.1", "line1\nline2\ttab"),
        ("ünïcødé", "%", ""),
    ];
    let users = "SELECT CONCAT(User, '|', Host) FROM mysql.user ORDER BY 1";
    for (user, host, password) in cases {
        let args = json!({
            "name": user, "host": host, "password": password,
            "priv": "keel_t.*:SELECT,INSERT", "check_implicit_admin": true,
        });
        db.converge("mysql_user", args, users);
        let listed = db.sql(users);
        assert!(
            listed.lines().any(|l| l == format!("{user}|{host}")),
            "{user}@{host} not in {listed}"
        );
        if !password.is_empty() {
            assert!(db.login_ok(user, password), "{user} cannot log in");
            assert!(
                !db.login_ok(user, "wrong"),
                "{user} logs in with a wrong password"
            );
        }
        let absent = json!({"name": user, "host": host, "state": "absent",
                            "check_implicit_admin": true});
        db.converge("mysql_user", absent, users);
        assert!(!db.sql(users).lines().any(|l| l == format!("{user}|{host}")));
    }
}

/// The MWS role's path: set the root password on a fresh MariaDB, where
/// root authenticates through the unix socket.
#[test]
fn root_password_keeps_unix_socket_login() {
    let db = Db::start();
    let root_pw = "R00t'pw\\!";
    let show = "SHOW CREATE USER 'root'@'localhost'";
    assert!(db.sql(show).contains("OR unix_socket"), "{}", db.sql(show));
    // A client wrapper first in PATH records every command line the modules
    // run and the mode of the option file it is handed.
    let wrapper = r#"#!/bin/sh
echo "argv: $*" >> /root/keel-argv.log
for a; do
  case $a in --defaults-file=*) echo "mode: $(stat -c %a "${a#--defaults-file=}")" >> /root/keel-argv.log;; esac
done
exec /usr/bin/mariadb "$@"
"#;
    db.sh(&format!(
        "printf '%s' {} > /usr/local/bin/mariadb && chmod 755 /usr/local/bin/mariadb",
        q(wrapper)
    ));
    // The arguments roles/mwsclient passes, under the collection's name.
    let args = json!({
        "name": "root", "host": "localhost", "password": root_pw,
        "login_unix_socket": "/run/mysqld/mysqld.sock", "check_implicit_admin": true,
    });
    let r = db.converge("community.mysql.mysql_user", args.clone(), show);
    let created = db.sql(show);
    assert!(
        created.contains("IDENTIFIED VIA mysql_native_password USING '*")
            && created.trim_end().ends_with("OR unix_socket"),
        "{created}"
    );
    let d = diff_text(&r);
    assert!(
        d.contains(" auth: mysql_native_password OR unix_socket")
            && d.contains("+password: ******** (changed)"),
        "{d}"
    );
    assert!(!d.contains(root_pw), "{d}");
    // OS root still gets in through the socket, without a password...
    assert_eq!(
        db.sh("mysql -N -e 'SELECT CURRENT_USER()'").trim(),
        "root@localhost"
    );
    // ...and the password works over TCP.
    assert!(db.login_ok("root", root_pw));
    assert!(!db.login_ok("root", "wrong"));

    // Logging in with the password (no socket shortcut) sees it converged.
    let by_password = json!({
        "name": "root", "password": root_pw,
        "login_user": "root", "login_password": root_pw, "login_host": "127.0.0.1",
    });
    assert!(!db.run("mysql_user", by_password, Mode::Normal).changed);

    // A wrong login password fails the task and is never echoed.
    let bad_pw = "Wr0ng-login-pw";
    let r = db
        .try_run(
            "mysql_db",
            &json!({"name": "x", "login_user": "root", "login_password": bad_pw,
                    "login_host": "127.0.0.1"}),
            Mode::Normal,
        )
        .unwrap();
    let msg = r.msg.clone().unwrap_or_default();
    assert!(
        r.failed && msg.contains("unable to connect to database"),
        "{msg}"
    );
    assert!(
        !msg.contains(bad_pw) && !format!("{r:?}").contains(bad_pw),
        "{msg}"
    );

    // config_file supplies credentials (here over TCP, so the socket can't).
    // The option file spells the password's backslash as `\\`.
    let cnf = "[client]\nuser=root\npassword=\"R00t'pw\\\\!\"\n";
    db.sh(&format!("printf '%s' {} > /root/keel-test.cnf", q(cnf)));
    let via_cfg = json!({"name": "keel_cfg", "config_file": "/root/keel-test.cnf",
                         "login_host": "127.0.0.1"});
    assert!(db.run("mysql_db", via_cfg.clone(), Mode::Normal).changed);
    assert!(db.sql("SHOW DATABASES").lines().any(|l| l == "keel_cfg"));
    db.sh("printf '[client]\\nuser=root\\npassword=nope\\n' > /root/keel-test.cnf");
    let r = db.try_run("mysql_db", &via_cfg, Mode::Normal).unwrap();
    assert!(
        r.failed,
        "a wrong password in config_file should fail: {:?}",
        r.msg
    );

    let log = db.sh("cat /root/keel-argv.log");
    assert!(log.contains("argv: --defaults-file="), "{log}");
    for secret in [root_pw, bad_pw, "R00t"] {
        assert!(
            !log.contains(secret),
            "a secret reached a command line: {log}"
        );
    }
    let modes: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("mode: "))
        .collect();
    assert!(
        !modes.is_empty() && modes.iter().all(|m| *m == "600"),
        "{log}"
    );
    assert_eq!(
        db.sh("ls -d /tmp/keel-mysql.* 2>/dev/null | wc -l").trim(),
        "0"
    );
}
