//! `synchronize` (ansible.posix), push form: `rsync` on the controller
//! copies `src` to `dest` on the host, over SSH reached exactly as Keel's
//! own connection reaches it.
//!
//! Where it sits: unlike other modules it runs nothing through the host's
//! connection. It asks the executor for the connection's settings (the
//! [`Reconnect`](crate::modules::Reconnect) handle's [`ConnectSpec`]) and
//! writes them into a private `ssh_config` (address, port, user, identity
//! files, known_hosts files and host key policy, jump hosts each with their
//! own keys, a `ProxyCommand`), so the `ssh` rsync starts, and the `ssh`
//! each `ProxyJump` hop starts with `-F`, trust and authenticate exactly as
//! the play does: Ansible's default of not checking host keys is not
//! copied. rsync runs as an argument vector (no shell); its `--rsh` value is
//! a command line rsync itself splits, so each word is single-quoted.
//!
//! `changed` comes from rsync's itemised output (`--out-format` with a
//! marker, as ansible.posix reads it); check mode adds `--dry-run`, so the
//! module is [`Plan::fused`]. The result (`cmd`, `msg`, `rc`,
//! `stdout_lines`, `diff.prepared`) is ansible.posix's.

use std::path::{Path, PathBuf};

use minijinja::Value;

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;
use crate::transport::{ConnectSpec, ConnectionKind, HostKeyPolicy};

pub struct Synchronize;

static PARAMS: Params = Params {
    module: "synchronize",
    sets: &[&[
        &["src"],
        &["dest"],
        &["dest_port"],
        &["mode"],
        &["delete"],
        &["private_key"],
        &["rsync_path"],
        &["archive"],
        &["checksum"],
        &["compress"],
        &["existing_only"],
        &["dirs"],
        &["recursive"],
        &["links"],
        &["copy_links"],
        &["perms"],
        &["times"],
        &["owner"],
        &["group"],
        &["set_remote_user"],
        &["rsync_timeout"],
        &["rsync_opts"],
        &["use_ssh_args"],
        &["ssh_connection_multiplexing"],
        &["partial"],
        &["verify_host"],
        &["delay_updates"],
        &["link_dest"],
    ]],
};

const MARKER: &str = "<<CHANGED>>";

/// The arguments, as read.
struct SyncArgs {
    src: String,
    dest: String,
    dest_port: Option<i64>,
    delete: bool,
    private_key: Option<String>,
    rsync_path: Option<String>,
    archive: bool,
    checksum: bool,
    compress: bool,
    existing_only: bool,
    dirs: bool,
    recursive: Option<bool>,
    links: Option<bool>,
    copy_links: bool,
    perms: Option<bool>,
    times: Option<bool>,
    owner: Option<bool>,
    group: Option<bool>,
    set_remote_user: bool,
    rsync_timeout: i64,
    rsync_opts: Vec<String>,
    partial: bool,
    delay_updates: bool,
    link_dest: Vec<String>,
}

/// A value for `ssh_config`, quoted when it needs to be.
fn cfg_value(s: &str) -> String {
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '#') {
        format!("\"{}\"", s.replace('"', ""))
    } else {
        s.to_string()
    }
}

/// The `ssh_config` that reaches the host as `spec` does. The target is
/// named `keel-target` (its real address is `HostName`), so its settings
/// cannot leak onto a jump host of the same address.
fn ssh_config(spec: &ConnectSpec, private_key: Option<&str>, port: u16) -> String {
    let mut c = String::new();
    let policy = match spec.host_key_policy {
        HostKeyPolicy::Strict => "yes",
        HostKeyPolicy::AcceptNew => "accept-new",
    };
    let known: Vec<String> = spec
        .known_hosts
        .iter()
        .map(|p| cfg_value(&p.display().to_string()))
        .collect();
    let common = |c: &mut String| {
        if !known.is_empty() {
            c.push_str(&format!("  UserKnownHostsFile {}\n", known.join(" ")));
        }
        c.push_str(&format!("  StrictHostKeyChecking {policy}\n"));
        c.push_str("  BatchMode yes\n");
        c.push_str(&format!(
            "  ConnectTimeout {}\n",
            spec.connect_timeout.as_secs().max(1)
        ));
    };
    c.push_str("Host keel-target\n");
    c.push_str(&format!("  HostName {}\n", cfg_value(&spec.address)));
    c.push_str(&format!("  Port {port}\n"));
    c.push_str(&format!("  User {}\n", cfg_value(&spec.user)));
    // Host keys are recorded under the address, not the alias.
    c.push_str(&format!(
        "  HostKeyAlias {}\n",
        if port == 22 {
            spec.address.clone()
        } else {
            format!("[{}]:{port}", spec.address)
        }
    ));
    if let Some(k) = private_key {
        c.push_str(&format!("  IdentityFile {}\n", cfg_value(k)));
    }
    for k in &spec.identity_files {
        c.push_str(&format!(
            "  IdentityFile {}\n",
            cfg_value(&k.display().to_string())
        ));
    }
    if !spec.jump.is_empty() {
        let hops: Vec<String> = spec
            .jump
            .iter()
            .enumerate()
            .map(|(i, _)| format!("keel-hop-{i}"))
            .collect();
        c.push_str(&format!("  ProxyJump {}\n", hops.join(",")));
    } else if let Some(p) = &spec.proxy_command {
        c.push_str(&format!("  ProxyCommand {p}\n"));
    }
    common(&mut c);
    for (i, hop) in spec.jump.iter().enumerate() {
        c.push_str(&format!("Host keel-hop-{i}\n"));
        c.push_str(&format!("  HostName {}\n", cfg_value(&hop.host)));
        c.push_str(&format!("  Port {}\n", hop.port));
        c.push_str(&format!(
            "  User {}\n",
            cfg_value(hop.user.as_deref().unwrap_or(&spec.user))
        ));
        c.push_str(&format!(
            "  HostKeyAlias {}\n",
            if hop.port == 22 {
                hop.host.clone()
            } else {
                format!("[{}]:{}", hop.host, hop.port)
            }
        ));
        for k in hop.identity_files.iter().chain(&spec.identity_files) {
            c.push_str(&format!(
                "  IdentityFile {}\n",
                cfg_value(&k.display().to_string())
            ));
        }
        if i == 0 {
            if let Some(p) = &spec.proxy_command {
                c.push_str(&format!("  ProxyCommand {p}\n"));
            }
        }
        common(&mut c);
    }
    c
}

/// `get_bin_path`: `name`'s absolute path on the controller's `PATH` (the
/// name itself when it is not found, so the error names it).
fn controller_bin(name: &str) -> String {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| name.to_string())
}

/// A word for the command line rsync splits for `--rsh` (it honours
/// single quotes as a shell does).
fn rsh_word(w: &str) -> String {
    quote(w)
}

/// ansible.posix's argument list, up to the marker, source and
/// destination.
fn rsync_argv(p: &SyncArgs, check: bool, rsh: &str) -> Vec<String> {
    let mut cmd: Vec<String> = vec![controller_bin("rsync")];
    let mut push = |s: &str| cmd.push(s.to_string());
    if p.delay_updates {
        push("--delay-updates");
        push("-F");
    }
    if p.compress {
        push("--compress");
    }
    if p.rsync_timeout != 0 {
        push(&format!("--timeout={}", p.rsync_timeout));
    }
    if check {
        push("--dry-run");
    }
    if p.delete {
        push("--delete-after");
    }
    if p.existing_only {
        push("--existing");
    }
    if p.checksum {
        push("--checksum");
    }
    if p.copy_links {
        push("--copy-links");
    }
    let flags = [
        (p.recursive, "recursive"),
        (p.links, "links"),
        (p.perms, "perms"),
        (p.times, "times"),
        (p.owner, "owner"),
        (p.group, "group"),
    ];
    if p.archive {
        push("--archive");
        for (v, name) in flags {
            if v == Some(false) {
                push(&format!("--no-{name}"));
            }
        }
    } else {
        for (v, name) in flags {
            if v == Some(true) {
                push(&format!("--{name}"));
            }
        }
    }
    if p.dirs {
        push("--dirs");
    }
    if !p.rsync_opts.iter().any(|o| o.contains("--rsh")) {
        push(&format!("--rsh={rsh}"));
    }
    if let Some(r) = &p.rsync_path {
        push(&format!("--rsync-path={r}"));
    }
    for o in &p.rsync_opts {
        push(o);
    }
    if p.partial {
        push("--partial");
    }
    if !p.link_dest.is_empty() {
        push("-H");
        push("-vv");
        for l in &p.link_dest {
            push(&format!("--link-dest={l}"));
        }
    }
    push(&format!("--out-format={MARKER}%i %n%L"));
    cmd
}

/// Runs rsync on the controller; the result as ansible.posix returns it.
async fn run_rsync(
    argv: Vec<String>,
    cmdstr: String,
    diff: bool,
    link_dest: bool,
    config: String,
) -> Result<ModuleResult, ModuleError> {
    let dir = match tempfile::Builder::new().prefix("keel-sync-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Ok(ModuleResult::failed(format!(
                "cannot make a directory for the ssh settings: {e}"
            )))
        }
    };
    let cfg_path = dir.path().join("ssh_config");
    if let Err(e) = std::fs::write(&cfg_path, config) {
        return Ok(ModuleResult::failed(format!(
            "cannot write {}: {e}",
            cfg_path.display()
        )));
    }
    let cfg = cfg_path.display().to_string();
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| a.replace("@@CONFIG@@", &quote(&cfg)))
        .collect();
    let cmdstr = cmdstr.replace("@@CONFIG@@", &cfg);
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Ok(ModuleResult::failed(format!(
                "Failed to find required executable \"rsync\": {e}"
            )))
        }
    };
    let rc = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if rc != 0 {
        return Ok(
            ModuleResult::failed(String::from_utf8_lossy(&out.stderr).into_owned())
                .with("rc", rc)
                .with("cmd", cmdstr),
        );
    }
    let changed = if link_dest {
        !stdout.contains(&format!("{MARKER}."))
    } else {
        stdout.contains(MARKER)
    };
    let clean = stdout.replace(MARKER, "");
    let lines: Vec<Value> = clean
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(Value::from)
        .collect();
    let mut r = ModuleResult::changed(changed)
        .with_msg(clean.clone())
        .with("rc", rc)
        .with("cmd", cmdstr)
        .with("stdout_lines", Value::from(lines));
    if diff {
        r.data
            .insert("diff".into(), dict([("prepared", Value::from(clean))]));
    }
    Ok(r)
}

#[async_trait::async_trait]
impl Module for Synchronize {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    /// The executor's handle carries the connection's settings.
    fn reconnects(&self) -> bool {
        true
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let p = SyncArgs {
            src: a.req_string(&["src"])?,
            dest: a.req_string(&["dest"])?,
            dest_port: a.int(&["dest_port"])?,
            delete: a.bool(&["delete"], false)?,
            private_key: a.string(&["private_key"])?,
            rsync_path: a.string(&["rsync_path"])?,
            archive: a.bool(&["archive"], true)?,
            checksum: a.bool(&["checksum"], false)?,
            compress: a.bool(&["compress"], true)?,
            existing_only: a.bool(&["existing_only"], false)?,
            dirs: a.bool(&["dirs"], false)?,
            recursive: a.opt_bool(&["recursive"])?,
            links: a.opt_bool(&["links"])?,
            copy_links: a.bool(&["copy_links"], false)?,
            perms: a.opt_bool(&["perms"])?,
            times: a.opt_bool(&["times"])?,
            owner: a.opt_bool(&["owner"])?,
            group: a.opt_bool(&["group"])?,
            set_remote_user: a.bool(&["set_remote_user"], true)?,
            rsync_timeout: a.int(&["rsync_timeout"])?.unwrap_or(0),
            rsync_opts: a.list_no_split(&["rsync_opts"])?.unwrap_or_default(),
            partial: a.bool(&["partial"], false)?,
            delay_updates: a.bool(&["delay_updates"], true)?,
            link_dest: a.list_no_split(&["link_dest"])?.unwrap_or_default(),
        };
        let mode = a
            .choice(&["mode"], &["pull", "push"], Some("push"))?
            .unwrap_or_default();
        a.bool(&["use_ssh_args"], false)?;
        a.bool(&["ssh_connection_multiplexing"], false)?;
        a.bool(&["verify_host"], false)?;
        a.finish()?;

        let fail = |m: String| Ok(Plan::done(ModuleResult::failed(m)));
        if mode != "push" {
            return fail(
                "Keel's synchronize supports the push form (mode: push); pull is not supported yet"
                    .into(),
            );
        }
        let Some(handle) = ctx.reconnect_handle() else {
            return fail(
                "synchronize needs the host's own connection: it cannot run delegated".into(),
            );
        };
        let Some(spec) = handle.spec() else {
            return fail("the executor gave no connection settings for synchronize".into());
        };
        if spec.kind == ConnectionKind::Local {
            return fail(
                "synchronize to a host with connection: local is a local copy; Keel's \
                 synchronize supports SSH hosts"
                    .into(),
            );
        }
        if spec.key_passphrase.is_some() && std::env::var_os("SSH_AUTH_SOCK").is_none() {
            return fail(
                "synchronize runs ssh, which cannot be given the key passphrase: load the \
                 key into an ssh-agent"
                    .into(),
            );
        }
        // The source is on the controller, relative to the playbook's (or
        // role's) files, as the action plugin finds it.
        let src = if Path::new(&p.src).is_absolute() {
            p.src.clone()
        } else {
            let trailing = p.src.ends_with('/');
            match ctx.find_file("files", p.src.trim_end_matches('/')) {
                Some(found) => {
                    let mut s = found.display().to_string();
                    if trailing {
                        s.push('/');
                    }
                    s
                }
                None => PathBuf::from(&p.src).display().to_string(),
            }
        };
        let port = p
            .dest_port
            .and_then(|x| u16::try_from(x).ok())
            .unwrap_or(spec.port);
        let user_prefix = if p.set_remote_user {
            format!("{}@", spec.user)
        } else {
            String::new()
        };
        let dest = format!("{user_prefix}keel-target:{}", p.dest);
        let shown_dest = format!(
            "{user_prefix}{}:{}",
            if spec.address.contains(':') {
                format!("[{}]", spec.address)
            } else {
                spec.address.clone()
            },
            p.dest
        );
        let config = ssh_config(&spec, p.private_key.as_deref(), port);
        let ssh = controller_bin("ssh");
        let rsh = [ssh.as_str(), "-F", "@@CONFIG@@", "-S", "none"]
            .iter()
            .map(|w| rsh_word(w))
            .collect::<Vec<_>>()
            .join(" ");
        let argv_for = |check: bool| {
            let mut v = rsync_argv(&p, check, &rsh);
            v.push(src.clone());
            v.push(dest.clone());
            v
        };
        // `cmd` as ansible.posix shows it: the words joined, the source
        // and destination quoted, the real address instead of the alias.
        let cmdstr = |check: bool| {
            let mut v = rsync_argv(&p, check, &rsh);
            v.push(quote(&src));
            v.push(quote(&shown_dest));
            v.iter()
                .map(|w| {
                    if let Some(r) = w.strip_prefix("--rsh=") {
                        format!("--rsh={}", quote(r))
                    } else if let Some(o) = w.strip_prefix("--out-format=") {
                        format!("--out-format={}", quote(o))
                    } else if let Some(r) = w.strip_prefix("--rsync-path=") {
                        format!("--rsync-path={}", quote(r))
                    } else {
                        w.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let link = !p.link_dest.is_empty();
        Ok(Plan::fused(
            run_rsync(argv_for(true), cmdstr(true), ctx.diff, link, config.clone()),
            run_rsync(argv_for(false), cmdstr(false), ctx.diff, link, config),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::JumpHop;

    #[test]
    fn the_ssh_settings_are_the_connections() {
        let spec = ConnectSpec {
            address: "10.0.0.5".into(),
            port: 2222,
            user: "deploy".into(),
            identity_files: vec![PathBuf::from("/k/id_ed25519")],
            known_hosts: vec![PathBuf::from("/k/known hosts")],
            host_key_policy: HostKeyPolicy::Strict,
            jump: vec![JumpHop {
                user: Some("jump".into()),
                host: "bastion".into(),
                port: 22,
                identity_files: vec![PathBuf::from("/k/bastion")],
            }],
            connect_timeout: std::time::Duration::from_secs(10),
            ..Default::default()
        };
        let c = ssh_config(&spec, None, 2222);
        for line in [
            "Host keel-target\n  HostName 10.0.0.5\n  Port 2222\n  User deploy\n  HostKeyAlias [10.0.0.5]:2222\n  IdentityFile /k/id_ed25519\n  ProxyJump keel-hop-0\n",
            "  UserKnownHostsFile \"/k/known hosts\"\n  StrictHostKeyChecking yes\n",
            "Host keel-hop-0\n  HostName bastion\n  Port 22\n  User jump\n  HostKeyAlias bastion\n  IdentityFile /k/bastion\n  IdentityFile /k/id_ed25519\n",
        ] {
            assert!(c.contains(line), "{line:?} not in\n{c}");
        }
    }
}
