//! System module tests against real Debian test hosts (`keel-testhosts`):
//! each test starts its own sshd host (a copy-on-write overlay over this
//! machine's `/`), runs modules through an SSH [`Connection`], and checks the
//! host's real state (`getent`, `crontab -l`, `dpkg -s`, files) from inside
//! its namespace, plus idempotency, check mode and diffs.

use std::path::PathBuf;

use serde_json::json;

mod common;
use common::*;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/system_modules")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ------------------------------------------------------------ user, group

#[test]
fn group_and_user_converge_and_are_removed() {
    let h = Host::start();
    let g = h.converge(
        "group",
        json!({"name": "keelops", "gid": 4711}),
        "getent group keelops",
    );
    assert_eq!(data(&g, "gid").as_i64(), Some(4711));
    assert_eq!(h.sh("getent group keelops").trim(), "keelops:x:4711:");
    h.run("group", json!({"name": "keeldev"}), NORMAL);

    let args = json!({
        "name": "alice", "uid": 2101, "group": "keelops", "groups": ["keeldev"],
        "shell": "/bin/sh", "comment": "Alice A", "home": "/srv/alice",
        "password": "$6$salt$abcdefghijklmnopqrstuvwxyz",
    });
    let u = h.converge("user", args, "getent passwd alice");
    assert_eq!(
        h.sh("getent passwd alice").trim(),
        "alice:x:2101:4711:Alice A:/srv/alice:/bin/sh"
    );
    assert_eq!(h.sh("id -Gn alice").trim(), "keelops keeldev");
    assert!(
        h.sh("test -d /srv/alice && echo yes").contains("yes"),
        "home made"
    );
    assert_eq!(
        h.sh("getent shadow alice | cut -d: -f2").trim(),
        "$6$salt$abcdefghijklmnopqrstuvwxyz"
    );
    assert_eq!(data(&u, "uid").as_i64(), Some(2101));
    assert_eq!(data(&u, "home").as_str(), Some("/srv/alice"));
    assert_eq!(data(&u, "password").as_str(), Some("NOT_LOGGING_PASSWORD"));

    // Changing the shell only touches the shell; a diff shows it.
    let r = h.run("user", json!({"name": "alice", "shell": "/bin/bash"}), DIFF);
    assert!(r.changed);
    assert!(r.diff[0].after.contains("shell: /bin/bash"), "{:?}", r.diff);
    assert!(r.diff[0].before.contains("shell: /bin/sh"));
    assert!(h.sh("getent passwd alice").trim().ends_with(":/bin/bash"));

    // `append` adds a group and keeps the others; without it the list is exact.
    h.run("group", json!({"name": "keelqa"}), NORMAL);
    let r = h.run(
        "user",
        json!({"name": "alice", "groups": "keelqa", "append": true}),
        NORMAL,
    );
    assert!(r.changed);
    assert_eq!(h.sh("id -Gn alice").trim(), "keelops keeldev keelqa");
    let r = h.run(
        "user",
        json!({"name": "alice", "groups": "keelqa", "append": true}),
        NORMAL,
    );
    assert!(!r.changed);
    let r = h.run(
        "user",
        json!({"name": "alice", "groups": ["keelqa"]}),
        NORMAL,
    );
    assert!(r.changed);
    assert_eq!(h.sh("id -Gn alice").trim(), "keelops keelqa");

    // update_password: on_create leaves an existing hash alone.
    let r = h.run(
        "user",
        json!({"name": "alice", "password": "$6$other$x", "update_password": "on_create"}),
        NORMAL,
    );
    assert!(!r.changed);
    let r = h.run(
        "user",
        json!({"name": "alice", "password": "$6$other$x"}),
        NORMAL,
    );
    assert!(r.changed);
    assert_eq!(
        h.sh("getent shadow alice | cut -d: -f2").trim(),
        "$6$other$x"
    );

    // A group that does not exist fails before anything runs.
    let r = h.run(
        "user",
        json!({"name": "bob", "groups": ["nosuchgroup"]}),
        NORMAL,
    );
    assert!(r.failed);
    assert_eq!(r.msg.as_deref(), Some("Group nosuchgroup does not exist"));
    assert!(h.out("getent passwd bob").is_empty());

    // Removal with `remove` deletes the home directory.
    let r = h.run(
        "user",
        json!({"name": "alice", "state": "absent", "remove": true}),
        CHECK,
    );
    assert!(r.changed);
    assert!(
        !h.sh("getent passwd alice").is_empty(),
        "check mode removed the user"
    );
    let r = h.run(
        "user",
        json!({"name": "alice", "state": "absent", "remove": true}),
        NORMAL,
    );
    assert!(r.changed);
    assert!(h.out("getent passwd alice").is_empty());
    assert!(h.out("test -e /srv/alice || echo gone").contains("gone"));
    let r = h.run("user", json!({"name": "alice", "state": "absent"}), NORMAL);
    assert!(!r.changed);
    let r = h.converge(
        "group",
        json!({"name": "keelops", "state": "absent"}),
        "getent group keelops",
    );
    assert_eq!(data(&r, "state").as_str(), Some("absent"));
}

#[test]
fn user_system_account_expiry_and_ssh_key() {
    let h = Host::start();
    let r = h.run(
        "user",
        json!({"name": "svc", "system": true, "create_home": false, "shell": "/usr/sbin/nologin",
               "generate_ssh_key": true, "ssh_key_type": "ed25519",
               "ssh_key_file": "/etc/svc_key"}),
        NORMAL,
    );
    assert!(r.changed, "{:?}", r.msg);
    assert!(!r.failed, "{:?}", r.msg);
    let uid: u32 = h.sh("id -u svc").trim().parse().unwrap();
    assert!(uid < 1000, "a system account gets a low uid, got {uid}");
    assert!(h
        .sh("head -c 11 /etc/svc_key.pub")
        .starts_with("ssh-ed25519"));
    assert_eq!(h.sh("stat -c %U /etc/svc_key").trim(), "svc");
    assert!(data(&r, "ssh_public_key")
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 "));
    assert!(data(&r, "ssh_fingerprint")
        .as_str()
        .unwrap()
        .contains("SHA256:"));
    let key = h.sh("cat /etc/svc_key.pub");
    let again = h.run(
        "user",
        json!({"name": "svc", "system": true, "create_home": false, "shell": "/usr/sbin/nologin",
               "generate_ssh_key": true, "ssh_key_type": "ed25519",
               "ssh_key_file": "/etc/svc_key"}),
        NORMAL,
    );
    assert!(!again.changed, "an existing key is kept");
    assert_eq!(h.sh("cat /etc/svc_key.pub"), key);
    // Expiry is a day count in shadow; a negative `expires` clears it.
    let probe = "getent shadow exp | cut -d: -f8";
    h.sh("useradd exp");
    h.converge(
        "user",
        json!({"name": "exp", "expires": 1_700_000_000.0}),
        probe,
    );
    assert_eq!(h.sh(probe).trim(), "19675");
    h.converge("user", json!({"name": "exp", "expires": -1}), probe);
    assert_eq!(h.sh(probe).trim(), "");
}

#[test]
fn user_module_rejects_unknown_arguments_in_ansible_cores_words() {
    let h = Host::start();
    let err = h
        .try_run("user", json!({"name": "x", "shel": "/bin/sh"}), NORMAL)
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "Unsupported parameters for (user) module: shel. Supported parameters include: "
        ),
        "{err}"
    );
}

// --------------------------------------------------------- authorized_key

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelKeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA alice@laptop";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelKeyBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB bob@desk";

#[test]
fn authorized_key_adds_updates_and_removes_keys() {
    let h = Host::start();
    h.sh("useradd -m -s /bin/sh carol");
    let probe = "cat /home/carol/.ssh/authorized_keys";
    let r = h.converge(
        "authorized_key",
        json!({"user": "carol", "key": format!("{KEY_A}\n{KEY_B}\n")}),
        probe,
    );
    assert_eq!(h.sh(probe), format!("{KEY_A}\n{KEY_B}\n"));
    assert_eq!(r.diff[0].before_header, "/dev/null");
    assert_eq!(
        h.sh("stat -c '%a %U' /home/carol/.ssh /home/carol/.ssh/authorized_keys"),
        "700 carol\n600 carol\n"
    );
    assert_eq!(
        data(&r, "keyfile").as_str(),
        Some("/home/carol/.ssh/authorized_keys")
    );

    // Options replace the key's line in place; a hand-written comment stays.
    h.sh("sed -i '1i # hand-written' /home/carol/.ssh/authorized_keys");
    let r = h.run(
        "authorized_key",
        json!({"user": "carol", "key": KEY_A, "key_options": "no-pty,from=\"10.0.0.1\""}),
        DIFF,
    );
    assert!(r.changed);
    assert_eq!(
        h.sh(probe),
        format!("# hand-written\nno-pty,from=\"10.0.0.1\" {KEY_A}\n{KEY_B}\n")
    );
    let r = h.run(
        "authorized_key",
        json!({"user": "carol", "key": KEY_A, "key_options": "no-pty,from=\"10.0.0.1\""}),
        NORMAL,
    );
    assert!(!r.changed);

    // exclusive leaves only the given key; absent removes it.
    let r = h.run(
        "authorized_key",
        json!({"user": "carol", "key": KEY_B, "exclusive": true}),
        NORMAL,
    );
    assert!(r.changed);
    assert_eq!(h.sh(probe), format!("# hand-written\n{KEY_B}\n"));
    let r = h.converge(
        "authorized_key",
        json!({"user": "carol", "key": KEY_B, "state": "absent"}),
        probe,
    );
    assert!(!r.failed);
    assert_eq!(h.sh(probe), "# hand-written\n");

    // A custom path without manage_dir, and a user that does not exist.
    let r = h.run(
        "authorized_key",
        json!({"user": "carol", "key": KEY_A, "path": "/etc/ssh/keys-carol", "manage_dir": false}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(h.sh("cat /etc/ssh/keys-carol"), format!("{KEY_A}\n"));
    let r = h.run(
        "authorized_key",
        json!({"user": "nobody-here", "key": KEY_A}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("nobody-here"));
    let r = h.run(
        "authorized_key",
        json!({"user": "carol", "key": "not a key"}),
        NORMAL,
    );
    assert!(r.failed);
}

// ------------------------------------------------------------------- cron

#[test]
fn cron_manages_marked_jobs_in_a_user_crontab() {
    let h = Host::start();
    h.sh("useradd -m dave");
    let probe = "crontab -l -u dave";
    let r = h.converge(
        "cron",
        json!({"name": "backup", "user": "dave", "minute": "30", "hour": "2", "job": "/usr/local/bin/backup >/dev/null 2>&1"}),
        probe,
    );
    assert_eq!(
        h.sh(probe),
        "#Ansible: backup\n30 2 * * * /usr/local/bin/backup >/dev/null 2>&1\n"
    );
    assert_eq!(r.diff[0].before_header, "crontab for user \"dave\"");
    assert_eq!(data(&r, "jobs").to_string(), "['backup']");

    // Env var at the top, a second one after it, a special-time job, a
    // disabled job; then edit the first job in place.
    h.run(
        "cron",
        json!({"name": "MAILTO", "env": true, "job": "ops@example.com", "user": "dave"}),
        NORMAL,
    );
    h.run(
        "cron",
        json!({"name": "PATH", "env": true, "value": "/usr/bin:/bin", "insertafter": "MAILTO", "user": "dave"}),
        NORMAL,
    );
    h.run(
        "cron",
        json!({"name": "boot", "special_time": "reboot", "job": "/bin/true", "user": "dave"}),
        NORMAL,
    );
    h.run(
        "cron",
        json!({"name": "off", "job": "/bin/false", "disabled": true, "user": "dave"}),
        NORMAL,
    );
    let r = h.run(
        "cron",
        json!({"name": "backup", "user": "dave", "minute": "45", "hour": "2", "job": "/usr/local/bin/backup >/dev/null 2>&1"}),
        DIFF,
    );
    assert!(r.changed);
    assert_eq!(h.sh(probe), fixture("dave.crontab"));
    assert!(r.diff[0].before.contains("30 2 * * *"));
    assert!(r.diff[0].after.contains("45 2 * * *"));

    // Removing a job and a variable.
    let r = h.converge(
        "cron",
        json!({"name": "boot", "state": "absent", "user": "dave"}),
        probe,
    );
    assert!(!h.sh(probe).contains("@reboot"), "{:?}", r.data);
    let r = h.run(
        "cron",
        json!({"name": "MAILTO", "env": true, "state": "absent", "user": "dave"}),
        NORMAL,
    );
    assert!(r.changed);
    assert!(!h.sh(probe).contains("MAILTO"));

    // Bad combinations fail with Ansible's messages.
    let r = h.run(
        "cron",
        json!({"name": "x", "minute": "1", "special_time": "daily", "job": "y"}),
        NORMAL,
    );
    assert_eq!(
        r.msg.as_deref(),
        Some("You must specify time and date fields or special time.")
    );
    let r = h.run(
        "cron",
        json!({"name": "x", "env": true, "value": "1", "insertafter": "NOPE"}),
        NORMAL,
    );
    assert_eq!(r.msg.as_deref(), Some("Variable named 'NOPE' not found."));
}

#[test]
fn cron_file_in_cron_d_has_the_user_field_and_can_be_removed() {
    let h = Host::start();
    let probe = "cat /etc/cron.d/keel-app";
    let r = h.run(
        "cron",
        json!({"name": "sync", "cron_file": "keel-app", "job": "/bin/sync"}),
        NORMAL,
    );
    assert!(r.failed, "cron_file needs a user");
    h.converge(
        "cron",
        json!({"name": "sync", "cron_file": "keel-app", "user": "root", "special_time": "hourly", "job": "/bin/sync"}),
        probe,
    );
    assert_eq!(h.sh(probe), "#Ansible: sync\n@hourly root /bin/sync\n");
    assert_eq!(h.sh("stat -c %a /etc/cron.d/keel-app").trim(), "644");
    // Without a name, absent removes the whole file.
    h.converge(
        "cron",
        json!({"cron_file": "keel-app", "state": "absent"}),
        "ls /etc/cron.d",
    );
    assert!(h.out(probe).contains("No such file"));
}

#[test]
fn cron_without_crontab_uses_the_spool_or_says_what_is_missing() {
    let h = Host::start();
    h.sh("useradd erin; rm -f /usr/bin/crontab; mkdir -p /var/spool/cron/crontabs");
    let r = h.run(
        "cron",
        json!({"name": "n", "user": "erin", "job": "/bin/true"}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(
        h.sh("cat /var/spool/cron/crontabs/erin"),
        "#Ansible: n\n* * * * * /bin/true\n"
    );
    assert_eq!(
        h.sh("stat -c '%a %U' /var/spool/cron/crontabs/erin").trim(),
        "600 erin"
    );
    let r = h.run(
        "cron",
        json!({"name": "n", "user": "erin", "job": "/bin/true"}),
        NORMAL,
    );
    assert!(!r.changed);
    h.sh("rm -rf /var/spool/cron/crontabs");
    let r = h.run(
        "cron",
        json!({"name": "n", "user": "erin", "job": "/bin/true"}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("install the `cron` package"));
}

// --------------------------------------------------------------- packages

/// Builds `/tmp/pkgs/<name>_<version>_all.deb` inside the host.
fn build_deb(h: &Host, name: &str, version: &str) -> String {
    let root = format!("/tmp/build/{name}-{version}");
    h.sh(&format!(
        "set -e; mkdir -p {root}/DEBIAN {root}/usr/share/{name} /tmp/pkgs
         printf 'Package: {name}\\nVersion: {version}\\nArchitecture: all\\nMaintainer: keel <keel@example.com>\\nDescription: keel test package\\n' > {root}/DEBIAN/control
         echo {version} > {root}/usr/share/{name}/version
         dpkg-deb --root-owner-group --build {root} /tmp/pkgs/{name}_{version}_all.deb >/dev/null"
    ));
    format!("/tmp/pkgs/{name}_{version}_all.deb")
}

/// Points apt at a file repository holding only `/tmp/pkgs`.
fn local_repo(h: &Host) {
    h.sh(
        "set -e; rm -f /etc/apt/sources.list.d/* /etc/apt/sources.list
         cd /tmp/pkgs && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null
         echo 'deb [trusted=yes] file:/tmp/pkgs ./' > /etc/apt/sources.list.d/keel-local.list
         chmod 755 /tmp/pkgs",
    );
}

fn dpkg_status(h: &Host, name: &str) -> String {
    h.out(&format!(
        "dpkg-query -W -f '${{Status}} ${{Version}}' {name}"
    ))
}

#[test]
fn apt_installs_a_local_deb_and_removes_it() {
    let h = Host::start();
    let deb = build_deb(&h, "keelhello", "1.0");
    let probe = "dpkg-query -W -f '${Status} ${Version}' keelhello";
    let r = h.converge("apt", json!({"deb": deb}), probe);
    assert_eq!(dpkg_status(&h, "keelhello"), "install ok installed 1.0");
    assert!(!r.diff.is_empty(), "diff lists the package");
    assert_eq!(h.sh("cat /usr/share/keelhello/version"), "1.0\n");

    // A newer .deb of the same package upgrades it.
    let deb2 = build_deb(&h, "keelhello", "1.1");
    let r = h.run("apt", json!({"deb": deb2}), NORMAL);
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(dpkg_status(&h, "keelhello"), "install ok installed 1.1");

    // Hold it, then remove it (present → absent, and purge).
    let r = h.converge(
        "dpkg_selections",
        json!({"name": "keelhello", "selection": "hold"}),
        "dpkg --get-selections keelhello",
    );
    assert_eq!(data(&r, "before").as_str(), Some("install"));
    assert_eq!(
        h.sh("dpkg --get-selections keelhello")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["keelhello", "hold"]
    );
    h.run(
        "dpkg_selections",
        json!({"name": "keelhello", "selection": "install"}),
        NORMAL,
    );
    h.converge(
        "apt",
        json!({"name": "keelhello", "state": "absent", "purge": true}),
        probe,
    );
    assert!(!dpkg_status(&h, "keelhello").contains(" installed"));
    assert!(h
        .out("test -e /usr/share/keelhello/version || echo gone")
        .contains("gone"));

    // A missing .deb fails clearly.
    let r = h.run("apt", json!({"deb": "/tmp/pkgs/nope.deb"}), NORMAL);
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("/tmp/pkgs/nope.deb"));
}

#[test]
fn apt_with_a_local_repository_installs_pins_and_upgrades() {
    let h = Host::start();
    build_deb(&h, "keelrepo", "1.0");
    local_repo(&h);
    let probe = "dpkg-query -W -f '${Status} ${Version}' keelrepo";
    let r = h.converge(
        "apt",
        json!({"name": "keelrepo", "update_cache": true}),
        probe,
    );
    assert!(data(&r, "cache_updated").is_true());
    assert_eq!(dpkg_status(&h, "keelrepo"), "install ok installed 1.0");

    // A fresh cache is not updated again within cache_valid_time.
    let r = h.run(
        "apt",
        json!({"update_cache": true, "cache_valid_time": 3600}),
        NORMAL,
    );
    assert!(!r.changed, "cache is fresh");
    assert!(!data(&r, "cache_updated").is_true());

    // A newer version in the repo: present keeps 1.0, latest upgrades.
    build_deb(&h, "keelrepo", "2.0");
    local_repo(&h);
    let r = h.run(
        "apt",
        json!({"name": "keelrepo", "update_cache": true, "cache_valid_time": 0}),
        NORMAL,
    );
    assert!(!r.failed, "{:?}", r.msg);
    assert_eq!(dpkg_status(&h, "keelrepo"), "install ok installed 1.0");
    let r = h.run(
        "apt",
        json!({"name": ["keelrepo"], "state": "latest"}),
        CHECK,
    );
    assert!(r.changed);
    assert_eq!(dpkg_status(&h, "keelrepo"), "install ok installed 1.0");
    let r = h.run(
        "apt",
        json!({"name": ["keelrepo"], "state": "latest"}),
        NORMAL,
    );
    assert!(r.changed, "{:?}", r.msg);
    assert_eq!(dpkg_status(&h, "keelrepo"), "install ok installed 2.0");
    let r = h.run(
        "apt",
        json!({"name": ["keelrepo"], "state": "latest"}),
        NORMAL,
    );
    assert!(!r.changed);

    // A version pin downgrades only with allow_downgrade.
    let r = h.run("apt", json!({"name": "keelrepo=1.0"}), NORMAL);
    assert!(r.failed, "a downgrade without allow_downgrade must fail");
    let r = h.run(
        "apt",
        json!({"name": "keelrepo=1.0", "allow_downgrade": true}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(dpkg_status(&h, "keelrepo"), "install ok installed 1.0");

    // `package` dispatches to apt (no facts: it probes for apt-get).
    let r = h.converge(
        "package",
        json!({"name": "keelrepo", "state": "absent"}),
        probe,
    );
    assert!(!r.failed);
    let r = h.run("apt", json!({"name": "no-such-package-keel"}), NORMAL);
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("no-such-package-keel"));
}

#[test]
fn package_uses_the_pkg_mgr_fact() {
    let h = Host::with_vars(json!({"ansible_pkg_mgr": "dnf"}));
    let r = h.run("package", json!({"name": "x"}), NORMAL);
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("'dnf'"));
}

#[test]
fn debconf_sets_and_reads_answers() {
    let h = Host::start();
    let probe = "debconf-show tzdata | grep Zones/Etc";
    let r = h.converge(
        "debconf",
        json!({"name": "tzdata", "question": "tzdata/Zones/Etc", "vtype": "select", "value": "UTC+1"}),
        probe,
    );
    assert!(r.diff[0].after.contains("UTC+1"));
    assert!(h.sh(probe).contains("tzdata/Zones/Etc: UTC+1"));
    let r = h.run("debconf", json!({"name": "tzdata"}), NORMAL);
    assert!(!r.changed);
    assert_eq!(
        data(&r, "current")
            .get_attr("tzdata/Zones/Etc")
            .unwrap()
            .as_str(),
        Some("UTC+1")
    );
}

// --------------------------------------------------------------- services

const INIT_SCRIPT: &str = r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          keeltestd
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: keel test daemon
### END INIT INFO
P=/run/keeltestd.pid
case "$1" in
  start) echo start >> /var/log/keeltestd.log; sleep 1000 >/dev/null 2>&1 & echo $! > $P ;;
  stop) [ -f $P ] && kill $(cat $P) && rm -f $P; echo stop >> /var/log/keeltestd.log ;;
  restart) $0 stop; $0 start ;;
  reload) echo reload >> /var/log/keeltestd.log ;;
  status) [ -f $P ] && kill -0 $(cat $P) 2>/dev/null ;;
  *) exit 3 ;;
esac
"#;

#[test]
fn service_falls_back_to_init_scripts_without_systemd() {
    let h = Host::start();
    h.controller_file("unused", b"");
    h.sh(&format!(
        "cat > /etc/init.d/keeltestd <<'EOS'\n{INIT_SCRIPT}EOS\nchmod 755 /etc/init.d/keeltestd; rm -f /var/log/keeltestd.log"
    ));
    let probe =
        "/etc/init.d/keeltestd status && echo running; ls /etc/rc2.d | grep keeltestd; true";
    let r = h.converge(
        "service",
        json!({"name": "keeltestd", "state": "started", "enabled": true}),
        probe,
    );
    assert_eq!(data(&r, "state").as_str(), Some("started"));
    assert!(h.sh(probe).contains("running"));
    assert!(h.sh("ls /etc/rc2.d").contains("S01keeltestd"));
    assert_eq!(h.sh("cat /var/log/keeltestd.log"), "start\n");

    // restarted and reloaded always act.
    assert!(
        h.run(
            "service",
            json!({"name": "keeltestd", "state": "restarted"}),
            NORMAL
        )
        .changed
    );
    assert!(
        h.run(
            "service",
            json!({"name": "keeltestd", "state": "reloaded"}),
            NORMAL
        )
        .changed
    );
    assert_eq!(
        h.sh("cat /var/log/keeltestd.log"),
        "start\nstop\nstart\nreload\n"
    );

    h.converge(
        "service",
        json!({"name": "keeltestd", "state": "stopped", "enabled": false}),
        probe,
    );
    assert!(!h.sh(probe).contains("running"));
    assert!(h.sh("ls /etc/rc2.d").contains("K01keeltestd"));

    let r = h.run(
        "service",
        json!({"name": "nosuchd", "state": "started"}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("nosuchd"));
    // The systemd module says plainly that systemd is not running.
    let r = h.run(
        "systemd",
        json!({"name": "keeltestd", "state": "started"}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(
        r.msg.unwrap().contains("systemd is not running"),
        "{:?}",
        r.data
    );
}

// ------------------------------------- hostname, timezone, sysctl, mount

#[test]
fn hostname_sets_file_and_kernel_name() {
    let h = Host::start();
    let probe = "hostname; cat /etc/hostname";
    let r = h.converge("hostname", json!({"name": "web-01.example.com"}), probe);
    assert_eq!(h.sh(probe), "web-01.example.com\nweb-01.example.com\n");
    let facts = r.facts.expect("hostname sets facts");
    assert_eq!(facts["ansible_hostname"].as_str(), Some("web-01"));
    assert_eq!(facts["ansible_domain"].as_str(), Some("example.com"));
    assert!(r.diff[0].before.contains("hostname: h1"));
}

#[test]
fn timezone_relinks_localtime_and_writes_etc_timezone() {
    let h = Host::start();
    let probe = "readlink /etc/localtime; cat /etc/timezone";
    h.converge("timezone", json!({"name": "Europe/Paris"}), probe);
    assert_eq!(
        h.sh(probe),
        "/usr/share/zoneinfo/Europe/Paris\nEurope/Paris\n"
    );
    assert_eq!(h.sh("env -u TZ date +%Z -d 2024-01-15").trim(), "CET");
    let r = h.run("timezone", json!({"name": "Mars/Olympus"}), NORMAL);
    assert_eq!(
        r.msg.as_deref(),
        Some("given timezone \"Mars/Olympus\" is not available")
    );
}

#[test]
fn sysctl_edits_the_file_in_place() {
    let h = Host::start();
    h.sh("printf '# keel\\nvm.swappiness = 60\\nfs.inotify.max_user_watches=8192\\n' > /etc/sysctl.d/90-keel.conf");
    let probe = "cat /etc/sysctl.d/90-keel.conf";
    let r = h.converge(
        "sysctl",
        json!({"name": "vm.swappiness", "value": "10", "sysctl_file": "/etc/sysctl.d/90-keel.conf", "reload": false}),
        probe,
    );
    assert_eq!(
        h.sh(probe),
        "# keel\nvm.swappiness=10\nfs.inotify.max_user_watches=8192\n"
    );
    assert!(r.diff[0].before.contains("vm.swappiness = 60"));
    h.converge(
        "sysctl",
        json!({"name": "fs.inotify.max_user_watches", "state": "absent", "sysctl_file": "/etc/sysctl.d/90-keel.conf", "reload": false}),
        probe,
    );
    assert_eq!(h.sh(probe), "# keel\nvm.swappiness=10\n");
    // sysctl_set compares with the running kernel: the current value of a
    // key is no change to the kernel (nothing is written to /proc here).
    let cur = h.sh("sysctl -n kernel.pid_max").trim().to_string();
    let r = h.converge(
        "sysctl",
        json!({"name": "kernel.pid_max", "value": cur, "sysctl_file": "/etc/sysctl.d/91-keel.conf", "sysctl_set": true, "reload": false}),
        "cat /etc/sysctl.d/91-keel.conf",
    );
    assert!(!r.failed);
    assert_eq!(
        h.sh("cat /etc/sysctl.d/91-keel.conf"),
        format!("kernel.pid_max={cur}\n")
    );
}

#[test]
fn mount_manages_fstab_and_live_mounts() {
    let h = Host::start();
    h.sh("cp /etc/fstab /tmp/fstab.orig 2>/dev/null || touch /tmp/fstab.orig; touch /etc/fstab");
    let orig = h.sh("cat /etc/fstab");
    let args = json!({"path": "/mnt/keel scratch", "src": "tmpfs", "fstype": "tmpfs", "opts": "size=8m", "state": "mounted"});
    let r = h.converge(
        "mount",
        args,
        "cat /etc/fstab; findmnt -n '/mnt/keel scratch'",
    );
    assert_eq!(
        h.sh("cat /etc/fstab"),
        format!("{orig}tmpfs /mnt/keel\\040scratch tmpfs size=8m 0 0\n")
    );
    assert!(h
        .sh("findmnt -n -o FSTYPE '/mnt/keel scratch'")
        .contains("tmpfs"));
    assert_eq!(data(&r, "name").as_str(), Some("/mnt/keel scratch"));

    h.converge(
        "mount",
        json!({"path": "/mnt/keel scratch", "state": "unmounted"}),
        "findmnt -n '/mnt/keel scratch'",
    );
    assert!(
        h.sh("cat /etc/fstab").contains("/mnt/keel\\040scratch"),
        "unmounted keeps fstab"
    );
    // present only edits fstab; absent removes the entry.
    let r = h.run(
        "mount",
        json!({"path": "/mnt/keel scratch", "src": "tmpfs", "fstype": "tmpfs", "opts": "size=16m", "state": "present"}),
        DIFF,
    );
    assert!(r.changed);
    assert!(r.diff[0].after.contains("size=16m"));
    assert!(
        h.out("findmnt -n '/mnt/keel scratch'").is_empty(),
        "present does not mount"
    );
    h.converge(
        "mount",
        json!({"path": "/mnt/keel scratch", "state": "absent"}),
        "cat /etc/fstab",
    );
    assert_eq!(h.sh("cat /etc/fstab"), orig);
    let r = h.run("mount", json!({"path": "/x", "state": "mounted"}), NORMAL);
    assert!(r.failed);
}

// ------------------------------------------------------------ get_url, git

#[test]
fn get_url_downloads_on_the_host_and_verifies_checksums() {
    let h = Host::start();
    h.sh("mkdir -p /srv/files && printf 'payload v1\\n' > /srv/files/app.txt");
    let sum = h
        .sh("sha256sum /srv/files/app.txt | cut -d' ' -f1")
        .trim()
        .to_string();
    let probe = "cat /opt/app.txt; stat -c %a /opt/app.txt";
    let r = h.converge(
        "get_url",
        json!({"url": "file:///srv/files/app.txt", "dest": "/opt/app.txt", "mode": "0640", "checksum": format!("sha256:{sum}")}),
        probe,
    );
    assert_eq!(h.sh(probe), "payload v1\n640\n");
    assert_eq!(data(&r, "checksum_dest").as_str(), Some(sum.as_str()));
    // A directory dest takes the URL's file name; force re-downloads but
    // reports no change when the content is the same.
    h.sh("mkdir -p /opt/dl");
    let r = h.run(
        "get_url",
        json!({"url": "file:///srv/files/app.txt", "dest": "/opt/dl/"}),
        NORMAL,
    );
    assert!(r.changed, "{:?}", r.msg);
    assert_eq!(h.sh("cat /opt/dl/app.txt"), "payload v1\n");
    let r = h.run(
        "get_url",
        json!({"url": "file:///srv/files/app.txt", "dest": "/opt/app.txt", "force": true}),
        NORMAL,
    );
    assert!(!r.changed);
    // A wrong checksum fails and leaves the old file alone.
    h.sh("printf 'payload v2\\n' > /srv/files/app.txt");
    let r = h.run(
        "get_url",
        json!({"url": "file:///srv/files/app.txt", "dest": "/opt/app.txt", "checksum": format!("sha256:{sum}")}),
        NORMAL,
    );
    assert!(
        !r.changed,
        "a file with the right checksum is not downloaded again"
    );
    let r = h.run(
        "get_url",
        json!({"url": "file:///srv/files/app.txt", "dest": "/opt/app.txt", "checksum": format!("sha256:{sum}"), "force": true}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("did not match"));
    assert_eq!(h.sh("cat /opt/app.txt"), "payload v1\n");
    let r = h.run(
        "get_url",
        json!({"url": "file:///srv/files/missing", "dest": "/opt/m"}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().starts_with("Request failed"));
}

#[test]
fn git_clones_and_moves_between_versions() {
    let h = Host::start();
    h.sh(
        "set -e; export HOME=/root GIT_AUTHOR_NAME=k GIT_AUTHOR_EMAIL=k@e GIT_COMMITTER_NAME=k GIT_COMMITTER_EMAIL=k@e
         git init -q -b main /srv/src && cd /srv/src && echo one > f && git add f && git commit -qm one && git tag v1
         echo two > f && git commit -qam two
         git clone -q --bare /srv/src /srv/repo.git",
    );
    let v1 = h
        .sh("git -C /srv/src rev-parse v1^{commit}")
        .trim()
        .to_string();
    let main = h.sh("git -C /srv/src rev-parse main").trim().to_string();
    let probe = "cat /opt/app/f";
    let r = h.converge(
        "git",
        json!({"repo": "/srv/repo.git", "dest": "/opt/app", "version": "main"}),
        probe,
    );
    assert_eq!(h.sh(probe), "two\n");
    assert_eq!(data(&r, "after").as_str(), Some(main.as_str()));
    assert!(data(&r, "before").is_none());
    let r = h.run(
        "git",
        json!({"repo": "/srv/repo.git", "dest": "/opt/app", "version": "v1"}),
        NORMAL,
    );
    assert!(r.changed, "{:?}", r.msg);
    assert_eq!(data(&r, "after").as_str(), Some(v1.as_str()));
    assert_eq!(h.sh(probe), "one\n");
    // Local edits block an update unless forced.
    h.sh("echo local > /opt/app/f");
    let r = h.run(
        "git",
        json!({"repo": "/srv/repo.git", "dest": "/opt/app", "version": "main"}),
        NORMAL,
    );
    assert!(r.failed);
    assert!(r.msg.unwrap().contains("Local modifications exist"));
    let r = h.run(
        "git",
        json!({"repo": "/srv/repo.git", "dest": "/opt/app", "version": "main", "force": true}),
        NORMAL,
    );
    assert!(r.changed && !r.failed, "{:?}", r.msg);
    assert_eq!(h.sh(probe), "two\n");
    let r = h.run(
        "git",
        json!({"repo": "/srv/repo.git", "dest": "/opt/app", "version": main}),
        NORMAL,
    );
    assert!(!r.changed, "a commit id that is checked out is no change");
}
