//! System modules against real Debian hosts with systemd as PID 1
//! (`keel_testhosts::full`): plays run in-process through the executor
//! (`run_playbook`), and the hosts' real state is then read from inside with
//! `systemctl`, `getent`, `crontab -l`, `dpkg -s`, the boot id. Covers
//! `systemd`/`service` (state, enabled, masked, daemon_reload, check mode,
//! idempotency), `user`/`group`/`authorized_key`/`cron`, `apt` from the
//! harness's local repository, `reboot` (the play carries on after it) and
//! `modprobe`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use keel::executor::{run_playbook, RunOptions};
use keel::inventory::Inventory;
use keel::output::{Event, MemorySink, Sink, Status};
use keel::playbook::{load_playbook, ResolveOptions};
use keel_testhosts::full::FullHosts;
use serde_json::Value as Json;

/// One full host, and a place to write playbooks.
struct Lab {
    fh: FullHosts,
    dir: tempfile::TempDir,
    inventory: PathBuf,
    rt: tokio::runtime::Runtime,
    runs: std::cell::Cell<u32>,
}

/// What one play run reported.
struct PlayRun {
    events: Vec<Event>,
    recap: keel::output::HostStats,
}

impl PlayRun {
    /// The (last) result of the task named `name` on the host.
    fn result(&self, name: &str) -> (Status, Json) {
        let mut current = String::new();
        let mut found = None;
        for e in &self.events {
            match e {
                Event::TaskStart { name: n, .. } => current = n.clone(),
                Event::HostResult(r) if current == name => {
                    found = Some((r.status, r.result.clone()))
                }
                _ => {}
            }
        }
        found.unwrap_or_else(|| panic!("no result for task {name:?}"))
    }

    fn status(&self, name: &str) -> Status {
        self.result(name).0
    }
}

impl Lab {
    fn start(preinstall: &[&str]) -> Lab {
        let t = Instant::now();
        let fh = FullHosts::builder()
            .preinstall(preinstall)
            .start(1)
            .expect("starting a full host");
        eprintln!("full host up in {:.1?}", t.elapsed());
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("hosts.ini");
        std::fs::write(&inventory, fh.inventory_ini("")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Lab {
            fh,
            dir,
            inventory,
            rt,
            runs: Default::default(),
        }
    }

    /// Runs `tasks` (a YAML task list, indented by 4) in one play.
    fn play_with(&self, tasks: &str, check: bool) -> PlayRun {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let book = self.dir.path().join(format!("play{n}.yml"));
        std::fs::write(
            &book,
            format!("- hosts: all\n  gather_facts: false\n  tasks:\n{tasks}"),
        )
        .unwrap();
        let pb = load_playbook(&book, &ResolveOptions::default())
            .unwrap_or_else(|d| panic!("playbook {n} does not load: {d}"));
        let inv = Inventory::load(&[self.inventory.display().to_string()]).unwrap();
        let opts = RunOptions {
            check,
            ..Default::default()
        };
        let sink = Arc::new(MemorySink::default());
        let summary = self
            .rt
            .block_on(run_playbook(&pb, inv, opts, sink.clone() as Arc<dyn Sink>));
        let events = sink.events.lock().clone();
        let recap = summary
            .stats
            .first()
            .map(|(_, s)| *s)
            .expect("a recap for the host");
        PlayRun { events, recap }
    }

    fn play(&self, tasks: &str) -> PlayRun {
        self.play_with(tasks, false)
    }

    /// A play that must not fail.
    fn ok_play(&self, tasks: &str, check: bool) -> PlayRun {
        let r = self.play_with(tasks, check);
        assert!(
            r.recap.failed == 0 && r.recap.unreachable == 0,
            "play failed: {:?}\n{tasks}\n{:#?}",
            r.recap,
            r.events
        );
        r
    }

    /// Runs a shell command inside the host (as root); its trimmed stdout,
    /// whatever the exit status.
    fn out(&self, cmd: &str) -> String {
        let o = self.fh.exec(0, cmd);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn sh(&self, cmd: &str) -> String {
        self.fh.sh(0, cmd).trim().to_string()
    }
}

fn one_task(name: &str, module: &str, args: &str) -> String {
    format!("    - name: {name}\n      {module}: {args}\n")
}

const UNIT: &str = "[Unit]\nDescription=Keel demo\n\n[Service]\n\
ExecStart=/bin/sh -c 'while :; do sleep 1; done'\nExecReload=/bin/true\n\n\
[Install]\nWantedBy=multi-user.target\n";

/// Runs one task in check mode (must say changed and leave `probe` alone),
/// for real (changed, `probe` becomes `want`), and again (ok).
fn converge(lab: &Lab, module: &str, args: &str, probe: &str, want: &str) {
    let before = lab.out(probe);
    let t = one_task("t", module, args);
    let check = lab.ok_play(&t, true);
    assert_eq!(
        check.status("t"),
        Status::Changed,
        "{module} {args} (check)"
    );
    assert_eq!(
        lab.out(probe),
        before,
        "{module} {args}: check mode changed the host"
    );
    let first = lab.ok_play(&t, false);
    assert_eq!(first.status("t"), Status::Changed, "{module} {args}");
    assert_eq!(lab.out(probe), want, "{module} {args}: `{probe}`");
    let second = lab.ok_play(&t, false);
    assert_eq!(
        second.status("t"),
        Status::Ok,
        "{module} {args}: not idempotent"
    );
}

#[test]
fn systemd_and_service_drive_a_real_unit() {
    let lab = Lab::start(&[]);
    lab.sh(&format!(
        "cat > /lib/systemd/system/keel-demo.service <<'UNIT'\n{UNIT}UNIT"
    ));
    // `daemon_reload` alone never reports a change, and makes the unit known.
    let r = lab.ok_play(
        &one_task("reload", "systemd", "{daemon_reload: true}"),
        false,
    );
    assert_eq!(r.status("reload"), Status::Ok);
    assert_eq!(lab.out("systemctl is-enabled keel-demo"), "disabled");

    let active = "systemctl is-active keel-demo";
    let enabled = "systemctl is-enabled keel-demo";
    converge(
        &lab,
        "systemd",
        "{name: keel-demo, state: started}",
        active,
        "active",
    );
    converge(
        &lab,
        "systemd",
        "{name: keel-demo, enabled: true}",
        enabled,
        "enabled",
    );

    // restarted and reloaded always change; restart gives a new main PID.
    let pid = lab.sh("systemctl show -p MainPID --value keel-demo");
    let r = lab.ok_play(
        &one_task("restart", "systemd", "{name: keel-demo, state: restarted}"),
        false,
    );
    assert_eq!(r.status("restart"), Status::Changed);
    assert_ne!(lab.sh("systemctl show -p MainPID --value keel-demo"), pid);
    let r = lab.ok_play(
        &one_task(
            "reload",
            "systemd",
            "{name: keel-demo.service, state: reloaded}",
        ),
        false,
    );
    assert_eq!(r.status("reload"), Status::Changed);
    assert_eq!(lab.out(active), "active");

    converge(
        &lab,
        "systemd",
        "{name: keel-demo, state: stopped, enabled: false}",
        &format!("{active}; {enabled}"),
        "inactive\ndisabled",
    );
    converge(
        &lab,
        "systemd_service",
        "{name: keel-demo, masked: true}",
        enabled,
        "masked",
    );
    converge(
        &lab,
        "systemd",
        "{name: keel-demo, masked: false}",
        enabled,
        "disabled",
    );

    // `service` dispatches to systemd on a systemd host.
    converge(
        &lab,
        "ansible.builtin.service",
        "{name: keel-demo, state: started, enabled: true}",
        &format!("{active}; {enabled}"),
        "active\nenabled",
    );
    let r = lab.play(&one_task(
        "ghost",
        "systemd",
        "{name: keel-no-such-unit, state: started}",
    ));
    let (st, res) = r.result("ghost");
    assert_eq!(st, Status::Failed);
    assert!(
        res["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("keel-no-such-unit"),
        "{res}"
    );
}

#[test]
fn accounts_keys_cron_and_apt_on_a_full_host() {
    let lab = Lab::start(&[]);
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelKeelKeelKeelKeelKeelKeelKeelKeelKeelKeelK demo@keel";
    let tasks = format!(
        "    - name: group\n      group: {{name: keelops, gid: 2345}}\n\
         \x20   - name: user\n      user: {{name: keeldemo, uid: 2345, group: keelops, shell: /bin/sh, comment: Keel Demo}}\n\
         \x20   - name: key\n      authorized_key: {{user: keeldemo, key: '{key}'}}\n\
         \x20   - name: cron\n      cron: {{name: tidy, user: keeldemo, minute: '5', hour: '3', job: /bin/true}}\n\
         \x20   - name: apt\n      apt: {{name: tree, state: present}}\n"
    );
    assert_ne!(lab.out("dpkg -s tree >/dev/null 2>&1 && echo yes"), "yes");
    // Check mode on the tasks that do not need an earlier task's result
    // (the user needs its group, the key and cron entry need the user).
    let independent = "    - name: group\n      group: {name: keelops, gid: 2345}\n\
                       \x20   - name: apt\n      apt: {name: tree, state: present}\n";
    let check = lab.ok_play(independent, true);
    assert_eq!(check.status("group"), Status::Changed);
    assert_eq!(check.status("apt"), Status::Changed);
    assert_eq!(lab.out("getent group keelops"), "");
    assert_ne!(lab.out("dpkg -s tree >/dev/null 2>&1 && echo yes"), "yes");

    let t = Instant::now();
    let first = lab.ok_play(&tasks, false);
    eprintln!("accounts + apt play: {:.1?}", t.elapsed());
    for name in ["group", "user", "key", "cron", "apt"] {
        assert_eq!(first.status(name), Status::Changed, "{name}");
    }
    assert_eq!(lab.sh("getent group keelops"), "keelops:x:2345:");
    assert_eq!(
        lab.sh("getent passwd keeldemo"),
        "keeldemo:x:2345:2345:Keel Demo:/home/keeldemo:/bin/sh"
    );
    assert_eq!(lab.sh("cat /home/keeldemo/.ssh/authorized_keys"), key);
    assert_eq!(
        lab.sh("stat -c '%U %a' /home/keeldemo/.ssh /home/keeldemo/.ssh/authorized_keys"),
        "keeldemo 700\nkeeldemo 600"
    );
    assert_eq!(
        lab.sh("crontab -l -u keeldemo"),
        "#Ansible: tidy\n5 3 * * * /bin/true"
    );
    assert!(lab
        .sh("dpkg -s tree")
        .contains("Status: install ok installed"));

    let second = lab.ok_play(&tasks, false);
    assert_eq!(second.recap.changed, 0, "second run changed something");
    assert_eq!(second.recap.ok, 5);
}

#[test]
fn reboot_waits_for_a_new_boot_and_the_play_goes_on() {
    let lab = Lab::start(&[]);
    let boot0 = lab.sh("cat /proc/sys/kernel/random/boot_id");
    let marker = "    - name: before\n      command: cat /proc/sys/kernel/random/boot_id\n";

    // Check mode: reported, nothing rebooted.
    let check = lab.ok_play(
        &format!("{marker}{}", one_task("reboot", "reboot", "{}")),
        true,
    );
    let (st, res) = check.result("reboot");
    assert_eq!(st, Status::Changed);
    assert_eq!(res["rebooted"], Json::Bool(true));
    assert_eq!(lab.sh("cat /proc/sys/kernel/random/boot_id"), boot0);

    let tasks = format!(
        "{marker}{}\
         \x20   - name: after\n      command: cat /proc/sys/kernel/random/boot_id\n\
         \x20   - name: whoami\n      command: whoami\n",
        one_task(
            "reboot",
            "ansible.builtin.reboot",
            "{reboot_timeout: 180, connect_timeout: 5, msg: keel test reboot}"
        )
    );
    let t = Instant::now();
    let run = lab.ok_play(&tasks, false);
    let took = t.elapsed();
    let (st, res) = run.result("reboot");
    eprintln!("reboot play took {took:.1?}; reboot result {res}");
    assert_eq!(st, Status::Changed);
    assert_eq!(res["rebooted"], Json::Bool(true));
    assert!(res["elapsed"].as_u64().is_some(), "{res}");
    let before = run.result("before").1["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let after = run.result("after").1["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(before, boot0);
    assert_ne!(after, boot0, "the boot id did not change");
    assert_eq!(run.result("whoami").1["stdout"], "root");
    // The host really is the rebooted one: same boot id seen from inside.
    assert_eq!(lab.sh("cat /proc/sys/kernel/random/boot_id"), after);
    let state = lab.out("systemctl is-system-running --wait");
    assert!(state == "running" || state == "degraded", "{state}");

    // A reboot command that fails is reported, and nothing reboots.
    let r = lab.play(&one_task("bad", "reboot", "{reboot_command: 'false'}"));
    assert_eq!(r.status("bad"), Status::Failed);
    assert_eq!(lab.sh("cat /proc/sys/kernel/random/boot_id"), after);
}

#[test]
fn modprobe_persists_and_reports_what_a_container_cannot_load() {
    let lab = Lab::start(&[]);
    // The kernel is shared with this machine: `loop` is loaded (or built
    // in) there, `dummy` is not, and the host has no modules of its own.
    assert_eq!(lab.out("[ -d /sys/module/loop ] && echo yes"), "yes");
    assert_eq!(lab.out("[ -d /sys/module/dummy ] || echo no"), "no");

    let r = lab.ok_play(&one_task("loaded", "modprobe", "{name: loop}"), false);
    assert_eq!(r.status("loaded"), Status::Ok);

    let files = "cat /etc/modules-load.d/loop.conf /etc/modprobe.d/loop.conf";
    converge(
        &lab,
        "community.general.modprobe",
        "{name: loop, params: 'max_loop=8', persistent: present}",
        files,
        "loop\noptions loop max_loop=8",
    );
    // New params replace the old ones.
    converge(
        &lab,
        "modprobe",
        "{name: loop, params: 'max_loop=16', persistent: present}",
        files,
        "loop\noptions loop max_loop=16",
    );
    converge(
        &lab,
        "modprobe",
        "{name: loop, persistent: absent}",
        files,
        "",
    );

    for check in [true, false] {
        let r = lab.play_with(
            &one_task("dummy", "modprobe", "{name: dummy, persistent: present}"),
            check,
        );
        let (st, res) = r.result("dummy");
        assert_eq!(st, Status::Failed, "check={check}: {res}");
        let msg = res["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("Failed to load kernel module dummy") && msg.contains("no modules"),
            "{msg}"
        );
    }
    // A failed load writes nothing.
    assert_eq!(
        lab.out("[ -e /etc/modules-load.d/dummy.conf ] || echo absent"),
        "absent"
    );
}

/// Ansible refuses to reboot the controller; so does Keel (in check mode
/// here, so that a regression could never reboot the machine running tests).
#[test]
fn reboot_refuses_a_local_connection() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("hosts.ini");
    std::fs::write(&inv, "ctl ansible_connection=local\n").unwrap();
    let book = dir.path().join("play.yml");
    std::fs::write(
        &book,
        "- hosts: all\n  gather_facts: false\n  check_mode: true\n  tasks:\n\
         \x20   - name: reboot\n      reboot: {}\n",
    )
    .unwrap();
    let pb = load_playbook(&book, &ResolveOptions::default()).unwrap();
    let inv = Inventory::load(&[inv.display().to_string()]).unwrap();
    let sink = Arc::new(MemorySink::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt.block_on(run_playbook(
        &pb,
        inv,
        RunOptions::default(),
        sink.clone() as Arc<dyn Sink>,
    ));
    let run = PlayRun {
        events: sink.events.lock().clone(),
        recap: summary.stats[0].1,
    };
    let (st, res) = run.result("reboot");
    assert_eq!(st, Status::Failed);
    assert_eq!(
        res["msg"],
        "Running reboot with local connection would reboot the control node."
    );
    assert_eq!(res["rebooted"], Json::Bool(false));
    assert_eq!(run.recap.failed, 1);
}
