//! Connection settings of one host, read from its (already templated)
//! connection variables.
//!
//! The executor builds a [`ConnectSpec`] per host from `hostvars` before the
//! first task that needs the host, then asks the
//! [`ConnectionPool`](super::ConnectionPool) for the connection. The order
//! is Ansible's and OpenSSH's: ansible-core hands `ssh` its `ansible_*`
//! settings as `-o` options ahead of `ssh_args`' and the common and extra
//! arguments' options, and `ssh` takes the first value it obtains, the
//! command line before its configuration files. So the variables win, then
//! the arguments in that order, then the OpenSSH client configuration
//! (`ssh_config.rs`: `-F FILE`, else `KEEL_SSH_CONFIG`, else
//! `~/.ssh/config` and `/etc/ssh/ssh_config`), then OpenSSH's defaults.
//! Options Keel does not apply become warnings (never dropped unsaid);
//! those that change nothing visible (`ControlMaster`, `-C`...) are not
//! worth one.

use std::path::PathBuf;
use std::time::Duration;

use super::known_hosts::default_known_hosts;
use super::r#become::{Become, BecomeMethod};
use super::ssh_config::{self, ConfigChoice, Proxy, SshConfigFiles, Tokens};
use crate::diag::Diagnostic;
use crate::vars::VarMap;

/// Which transport a host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionKind {
    #[default]
    Ssh,
    Local,
}

/// One hop on the way to a host (`ProxyJump` syntax `[user@]host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JumpHop {
    /// `None`: the target's user.
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    /// Keys offered to this hop before the target's (its `IdentityFile`s
    /// in the ssh configuration).
    pub identity_files: Vec<PathBuf>,
}

impl JumpHop {
    /// Parses `[user@]host[:port]`, with `[v6addr]:port` allowed.
    pub fn parse(s: &str) -> Option<JumpHop> {
        let (user, host, port) = parse_hop(s)?;
        Some(JumpHop {
            user,
            host,
            port: port.unwrap_or(22),
            identity_files: Vec::new(),
        })
    }
}

/// `[user@]host[:port]` as written: the port is `None` when not given, so
/// the ssh configuration may supply it.
fn parse_hop(s: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let s = s.trim().strip_prefix("ssh://").unwrap_or(s.trim());
    if s.is_empty() {
        return None;
    }
    let (user, rest) = match s.rsplit_once('@') {
        Some((u, r)) => (Some(u.to_string()), r),
        None => (None, s),
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((user, host, port))
}

/// What to do with a host key that no known_hosts file lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse it (the host is unreachable).
    #[default]
    Strict,
    /// `host_key_checking = False` or `StrictHostKeyChecking=accept-new`/`no`:
    /// learn it into the first known_hosts file, with a warning. A changed
    /// or revoked key is still refused, as OpenSSH's `accept-new` does.
    AcceptNew,
}

/// Connection settings from the command line and `ansible.cfg` that are not
/// variables: they apply where a host's variables do not say.
#[derive(Clone)]
pub struct ConnectDefaults {
    /// `[ssh_connection] ssh_args` (`ANSIBLE_SSH_ARGS`), read before the
    /// common and extra arguments, where `ansible_ssh_args` is not set.
    pub ssh_args: Option<String>,
    /// The OpenSSH client configuration to read instead of `~/.ssh/config`
    /// and `/etc/ssh/ssh_config` (`KEEL_SSH_CONFIG`); a `-F` in the ssh
    /// arguments wins over it.
    pub ssh_config: Option<PathBuf>,
    /// `--ssh-common-args`, `[ssh_connection] ssh_common_args`.
    pub ssh_common_args: Option<String>,
    /// `--ssh-extra-args`, `[ssh_connection] ssh_extra_args`.
    pub ssh_extra_args: Option<String>,
    /// `host_key_checking` (`ANSIBLE_HOST_KEY_CHECKING`).
    pub host_key_checking: bool,
    /// `-k`/`--ask-pass`.
    pub password: Option<String>,
    /// `[ssh_connection] retries` (`ANSIBLE_SSH_RETRIES`), where
    /// `ansible_ssh_retries` is not set.
    pub retries: u32,
}

impl Default for ConnectDefaults {
    fn default() -> Self {
        ConnectDefaults {
            ssh_args: None,
            ssh_config: None,
            ssh_common_args: None,
            ssh_extra_args: None,
            host_key_checking: true,
            password: None,
            retries: 0,
        }
    }
}

impl std::fmt::Debug for ConnectDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectDefaults")
            .field("ssh_args", &self.ssh_args)
            .field("ssh_config", &self.ssh_config)
            .field("ssh_common_args", &self.ssh_common_args)
            .field("ssh_extra_args", &self.ssh_extra_args)
            .field("host_key_checking", &self.host_key_checking)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("retries", &self.retries)
            .finish()
    }
}

/// SSH keepalives: after `interval` without a word from the server the
/// client asks for one, and after `max` unanswered asks it drops the
/// connection, so a host that stops answering is unreachable within about
/// `interval × (max + 1)` instead of hanging until TCP gives up.
/// OpenSSH's `ServerAliveInterval` and `ServerAliveCountMax` set it (an
/// interval of 0 turns keepalives off, as for `ssh`). Keel's default is
/// 15 s × 3, where plain `ssh` (and so ansible-core) sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Option<Duration>,
    pub max: usize,
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        Keepalive {
            interval: Some(Duration::from_secs(15)),
            max: 3,
        }
    }
}

/// Everything needed to open a connection to one host, taken from its
/// connection variables (`ansible_host`, `ansible_port`, `ansible_user`, ...).
#[derive(Clone, Default)]
pub struct ConnectSpec {
    /// The inventory name (used in messages).
    pub name: String,
    pub kind: ConnectionKind,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Tried in order before the password and the agent.
    pub identity_files: Vec<PathBuf>,
    pub key_passphrase: Option<String>,
    pub password: Option<String>,
    /// Host keys are checked against these only.
    pub known_hosts: Vec<PathBuf>,
    /// Unknown host keys: refused, or learned into `known_hosts[0]`.
    pub host_key_policy: HostKeyPolicy,
    /// Hops in order; the last one opens the connection to `address`.
    pub jump: Vec<JumpHop>,
    /// `ProxyCommand`, `%` tokens expanded: run with `sh -c`, its stdin and
    /// stdout carry the first SSH connection of the chain (the first hop's
    /// if there are hops, else the target's).
    pub proxy_command: Option<String>,
    pub connect_timeout: Duration,
    /// How many times a connection that cannot be opened is tried again
    /// (`ansible_ssh_retries`, ansible-core's `reconnection_retries`;
    /// default 0), after pauses of 0, 1, 3, 7, 15 and then 30 s.
    pub retries: u32,
    /// How a connection that stops answering is noticed.
    pub keepalive: Keepalive,
    /// Concurrent channels on the connection (below sshd's MaxSessions).
    pub max_channels: usize,
    pub become_method: BecomeMethod,
    pub become_user: String,
    pub become_password: Option<String>,
    pub become_exe: Option<String>,
    pub become_flags: Option<String>,
    /// Things the user asked for that Keel does differently (printed once).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |p: &Option<String>| p.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("identity_files", &self.identity_files)
            .field("key_passphrase", &redact(&self.key_passphrase))
            .field("password", &redact(&self.password))
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("jump", &self.jump)
            .field("proxy_command", &self.proxy_command)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("keepalive", &self.keepalive)
            .field("max_channels", &self.max_channels)
            .field("become_method", &self.become_method)
            .field("become_user", &self.become_user)
            .field("become_password", &redact(&self.become_password))
            .field("become_exe", &self.become_exe)
            .field("become_flags", &self.become_flags)
            .finish()
    }
}

fn get(vars: &VarMap, names: &[&str]) -> Option<String> {
    for n in names {
        if let Some(v) = vars.get(*n) {
            if v.is_undefined() || v.is_none() {
                continue;
            }
            let s = match v.as_str() {
                Some(s) => s.to_string(),
                None => v.to_string(),
            };
            return Some(s);
        }
    }
    None
}

fn expand_tilde(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = dirs::home_dir() {
            return home.join(rest);
        }
    }
    PathBuf::from(p)
}

fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            // SAFETY: getpwuid returns a pointer into static storage or null.
            unsafe {
                let pw = libc::getpwuid(libc::geteuid());
                if pw.is_null() {
                    None
                } else {
                    Some(
                        std::ffi::CStr::from_ptr((*pw).pw_name)
                            .to_string_lossy()
                            .into_owned(),
                    )
                }
            }
        })
        .unwrap_or_else(|| "root".to_string())
}

fn bad(name: &str, msg: String) -> Diagnostic {
    Diagnostic::new(format!("host {name}: {msg}"))
}

fn parse_jumps(name: &str, var: &str, s: &str) -> Result<Vec<JumpHop>, Diagnostic> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|h| {
            JumpHop::parse(h).ok_or_else(|| {
                bad(name, format!("{var}: cannot read jump host `{h}`"))
                    .hint("expected [user@]host[:port], several separated by commas")
            })
        })
        .collect()
}

fn duration_secs(name: &str, var: &str, s: &str) -> Result<Duration, Diagnostic> {
    let secs: f64 = s.trim().parse().map_err(|_| {
        bad(
            name,
            format!("{var} must be a number of seconds, got `{s}`"),
        )
    })?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(bad(name, format!("{var} must be positive, got `{s}`")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `ServerAliveInterval` as `ssh` reads it: seconds, or a time with a unit
/// (`30s`, `2m`, `1h`); 0 turns keepalives off.
fn alive_interval(name: &str, s: &str) -> Result<Option<Duration>, Diagnostic> {
    let t = s.trim().to_ascii_lowercase();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t.as_str(), ""),
    };
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if factor > 0 => Ok((n > 0).then(|| Duration::from_secs(n * factor))),
        _ => Err(bad(
            name,
            format!("ServerAliveInterval must be a time such as 15 or 1m, got `{s}`"),
        )),
    }
}

/// The ssh command-line arguments that `ansible_ssh_args`,
/// `ansible_ssh_common_args` and `ansible_ssh_extra_args` hold, read as
/// `ssh`'s option parser reads them.
#[derive(Default)]
struct SshArgs {
    /// `-o` options, and the flags that stand for one (`-J`, `-i`, `-p`,
    /// `-l`), as lower-case name and value, in the order written.
    options: Vec<(String, String)>,
    /// The first `-F`.
    config: Option<String>,
    warnings: Vec<String>,
}

/// Flags that take a value.
const VALUE_FLAGS: &str = "BbcDEeFIiJLlmOopQRSWw";
/// Flags and flags' values that change nothing Keel's connection shows:
/// compression, verbosity, ttys (Keel asks for a pty itself when a become
/// password needs one), no stdin, no X11, the control socket and log file.
const HARMLESS_FLAGS: &str = "CqvTtnxakSEe";

impl SshArgs {
    fn read(&mut self, name: &str, var: &str, text: &str) -> Result<(), Diagnostic> {
        let words = shell_words::split(text).map_err(|e| bad(name, format!("{var}: {e}")))?;
        let mut words = words.into_iter();
        while let Some(w) = words.next() {
            let Some(flags) = w.strip_prefix('-').filter(|f| !f.is_empty()) else {
                self.warnings.push(format!(
                    "{var}: the ssh argument `{w}` is not applied by Keel"
                ));
                continue;
            };
            for (i, f) in flags.char_indices() {
                if !VALUE_FLAGS.contains(f) {
                    if !HARMLESS_FLAGS.contains(f) {
                        self.warnings
                            .push(format!("{var}: the ssh flag -{f} is not applied by Keel"));
                    }
                    continue;
                }
                let inline = &flags[i + f.len_utf8()..];
                let value = if inline.is_empty() {
                    match words.next() {
                        Some(v) => v,
                        None => {
                            return Err(bad(name, format!("{var}: ssh flag -{f} needs a value")))
                        }
                    }
                } else {
                    inline.to_string()
                };
                let option = match f {
                    'o' => {
                        let v = value.trim();
                        let (k, v) = match v.find(|c: char| c == '=' || c.is_whitespace()) {
                            Some(at) => (
                                &v[..at],
                                v[at..]
                                    .trim_start_matches(|c: char| c == '=' || c.is_whitespace())
                                    .trim(),
                            ),
                            None => {
                                return Err(bad(name, format!("{var}: `-o {v}` has no value"))
                                    .hint("write -o Name=value"))
                            }
                        };
                        Some((k.to_ascii_lowercase(), v.to_string()))
                    }
                    'J' => Some(("proxyjump".to_string(), value)),
                    'i' => Some(("identityfile".to_string(), value)),
                    'p' => Some(("port".to_string(), value)),
                    'l' => Some(("user".to_string(), value)),
                    'F' => {
                        self.config.get_or_insert(value);
                        None
                    }
                    other if HARMLESS_FLAGS.contains(other) => None,
                    other => {
                        self.warnings.push(format!(
                            "{var}: the ssh flag -{other} {value} is not applied by Keel"
                        ));
                        None
                    }
                };
                if let Some((k, v)) = option {
                    if !ssh_config::silently_ok(&k) {
                        self.warnings.push(format!(
                            "{var}: the ssh option {k}={v} is not applied by Keel"
                        ));
                    }
                    self.options.push((k, v));
                }
                break;
            }
        }
        Ok(())
    }

    /// The first value given for `key` (OpenSSH keeps the first).
    fn first(&self, key: &str) -> Option<String> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Every value given for `key` (`IdentityFile`s add up).
    fn all(&self, key: &str) -> Vec<String> {
        self.options
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first of several options that exclude each other.
    fn first_of(&self, keys: &[&str]) -> Option<(String, String)> {
        self.options
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .cloned()
    }
}

/// A `StrictHostKeyChecking` value as a policy; `no` is read as
/// `accept-new` (with a warning): Keel never accepts a changed key.
fn strictness(v: &str, place: &str, warnings: &mut Vec<String>) -> HostKeyPolicy {
    match v.trim().to_ascii_lowercase().as_str() {
        "accept-new" => HostKeyPolicy::AcceptNew,
        "no" | "off" => {
            warnings.push(format!(
                "StrictHostKeyChecking={v}{place} is read as accept-new: Keel learns unknown \
                 host keys but still refuses a changed one"
            ));
            HostKeyPolicy::AcceptNew
        }
        _ => HostKeyPolicy::Strict,
    }
}

/// A `ProxyJump` list resolved as `ssh -J` does: each hop's name goes
/// through the ssh configuration (its `HostName`, `Port`, `User`,
/// `IdentityFile`; an unnamed user is the local one), and the first hop's
/// own `ProxyJump` or `ProxyCommand` carries the chain. Returns the hops
/// and that command, if any.
fn resolve_jumps(
    name: &str,
    text: &str,
    files: &SshConfigFiles,
    local_user: &str,
    depth: usize,
) -> Result<(Vec<JumpHop>, Option<String>), Diagnostic> {
    if depth > 8 {
        return Err(bad(
            name,
            format!("ProxyJump `{text}`: jump hosts lead to each other in a loop"),
        ));
    }
    let conf_err = |e: ssh_config::SshConfigError| bad(name, e.to_string());
    let mut hops = Vec::new();
    let mut command = None;
    for (i, part) in text.split(',').enumerate() {
        let (user, alias, port) = parse_hop(part).ok_or_else(|| {
            bad(name, format!("ProxyJump: cannot read jump host `{part}`"))
                .hint("expected [user@]host[:port], several separated by commas")
        })?;
        let c = files.query(&alias);
        let port = port.or(c.port).unwrap_or(22);
        let user = user
            .or(c.user.clone())
            .unwrap_or_else(|| local_user.to_string());
        let host = match &c.host_name {
            Some(h) => {
                let t = Tokens {
                    host: &alias,
                    original: &alias,
                    port,
                    user: &user,
                    local_user,
                };
                ssh_config::expand("HostName", h, &t).map_err(conf_err)?
            }
            None => alias.clone(),
        };
        let t = Tokens {
            host: &host,
            original: &alias,
            port,
            user: &user,
            local_user,
        };
        let mut identity_files = Vec::new();
        for k in &c.identity_files {
            let k = ssh_config::expand("IdentityFile", k, &t).map_err(conf_err)?;
            identity_files.push(expand_tilde(&k));
        }
        if i == 0 {
            match &c.proxy {
                Some(Proxy::Jump(j)) => {
                    let (before, cmd) = resolve_jumps(name, j, files, local_user, depth + 1)?;
                    hops.extend(before);
                    command = cmd;
                }
                Some(Proxy::Command(cmd)) => {
                    command = Some(ssh_config::expand("ProxyCommand", cmd, &t).map_err(conf_err)?);
                }
                Some(Proxy::Direct) | None => {}
            }
        }
        hops.push(JumpHop {
            user: Some(user),
            host,
            port,
            identity_files,
        });
    }
    Ok((hops, command))
}

impl ConnectSpec {
    /// Reads the connection variables of `inventory_hostname`.
    pub fn from_vars(inventory_hostname: &str, vars: &VarMap) -> Result<ConnectSpec, Diagnostic> {
        Self::from_vars_with(inventory_hostname, vars, &ConnectDefaults::default())
    }

    /// Reads the connection variables of `inventory_hostname`; `defaults`
    /// fill in what the variables leave unset.
    pub fn from_vars_with(
        inventory_hostname: &str,
        vars: &VarMap,
        defaults: &ConnectDefaults,
    ) -> Result<ConnectSpec, Diagnostic> {
        let name = inventory_hostname;
        let kind = match get(vars, &["ansible_connection"]).as_deref() {
            None | Some("ssh") | Some("paramiko") | Some("smart") => ConnectionKind::Ssh,
            Some("local") => ConnectionKind::Local,
            Some(other) => {
                return Err(
                    bad(name, format!("unsupported ansible_connection `{other}`"))
                        .hint("Keel supports `ssh` (also for `paramiko`/`smart`) and `local`"),
                )
            }
        };
        let mut spec = ConnectSpec {
            name: name.to_string(),
            kind,
            address: get(vars, &["ansible_host", "ansible_ssh_host"])
                .unwrap_or_else(|| name.to_string()),
            port: 22,
            user: String::new(),
            connect_timeout: Duration::from_secs(10),
            max_channels: 8,
            become_user: "root".to_string(),
            ..Default::default()
        };

        // The ssh arguments in the order `ssh` sees them.
        let mut args = SshArgs::default();
        for (var, fallback) in [
            ("ansible_ssh_args", &defaults.ssh_args),
            ("ansible_ssh_common_args", &defaults.ssh_common_args),
            ("ansible_ssh_extra_args", &defaults.ssh_extra_args),
        ] {
            if let Some(text) = get(vars, &[var]).or_else(|| fallback.clone()) {
                args.read(name, var, &text)?;
            }
        }
        spec.warnings.append(&mut args.warnings);

        // The name `ssh` is given; the configuration's Host patterns match it.
        let dialled = spec.address.clone();
        let choice = match &args.config {
            Some(f) if f.eq_ignore_ascii_case("none") => ConfigChoice::None,
            Some(f) => ConfigChoice::File(expand_tilde(f)),
            None => match &defaults.ssh_config {
                Some(p) => ConfigChoice::File(p.clone()),
                None => ConfigChoice::Default,
            },
        };
        let files = SshConfigFiles::load(&choice).map_err(|e| bad(name, e.to_string()))?;
        let conf = files.query(&dialled);
        spec.warnings.extend(conf.unhonoured.iter().cloned());
        let local_user = current_user();

        let port = get(vars, &["ansible_port", "ansible_ssh_port"]).or(args.first("port"));
        spec.port = match port {
            Some(p) => p.trim().parse().map_err(|_| {
                bad(
                    name,
                    format!("ansible_port must be a port number, got `{p}`"),
                )
            })?,
            None => conf.port.unwrap_or(22),
        };
        spec.user = get(vars, &["ansible_user", "ansible_ssh_user"])
            .or(args.first("user"))
            .or(conf.user.clone())
            .unwrap_or_else(|| local_user.clone());
        let conf_err = |e: ssh_config::SshConfigError| bad(name, e.to_string());
        let host_name = args.first("hostname").or(conf.host_name.clone());
        if let Some(h) = host_name {
            let t = Tokens {
                host: &dialled,
                original: &dialled,
                port: spec.port,
                user: &spec.user,
                local_user: &local_user,
            };
            spec.address = ssh_config::expand("HostName", &h, &t).map_err(conf_err)?;
        }
        let tokens = Tokens {
            host: &spec.address,
            original: &dialled,
            port: spec.port,
            user: &spec.user,
            local_user: &local_user,
        };
        if let Some(k) = get(
            vars,
            &["ansible_ssh_private_key_file", "ansible_private_key_file"],
        ) {
            spec.identity_files.push(expand_tilde(&k));
        }
        for k in args
            .all("identityfile")
            .into_iter()
            .chain(conf.identity_files.clone())
        {
            let k = ssh_config::expand("IdentityFile", &k, &tokens).map_err(conf_err)?;
            spec.identity_files.push(expand_tilde(&k));
        }
        spec.key_passphrase = get(
            vars,
            &[
                "ansible_ssh_private_key_passphrase",
                "keel_ssh_key_passphrase",
            ],
        );
        spec.password = get(
            vars,
            &[
                "ansible_ssh_pass",
                "ansible_password",
                "ansible_ssh_password",
            ],
        )
        .or_else(|| defaults.password.clone());

        // Host keys. The variable wins over the `-o` option, which wins over
        // `host_key_checking` and then the ssh configuration.
        let strict_option = match args.first("stricthostkeychecking") {
            Some(v) => Some(strictness(&v, "", &mut spec.warnings)),
            None => None,
        };
        spec.host_key_policy = match get(
            vars,
            &["ansible_host_key_checking", "ansible_ssh_host_key_checking"],
        ) {
            Some(v) if crate::config::truthy(&v) => HostKeyPolicy::Strict,
            Some(_) => HostKeyPolicy::AcceptNew,
            None => match strict_option {
                Some(p) => p,
                None if !defaults.host_key_checking => HostKeyPolicy::AcceptNew,
                None => match &conf.strict_host_key_checking {
                    Some(v) => strictness(v, " in the ssh configuration", &mut spec.warnings),
                    None => HostKeyPolicy::Strict,
                },
            },
        };
        let known_list = |words: Vec<String>| -> Result<Vec<PathBuf>, Diagnostic> {
            words
                .iter()
                .map(|w| {
                    ssh_config::expand("UserKnownHostsFile", w, &tokens)
                        .map(|w| expand_tilde(&w))
                        .map_err(conf_err)
                })
                .collect()
        };
        let split = |v: String| v.split_whitespace().map(String::from).collect::<Vec<_>>();
        let user_known = match args.first("userknownhostsfile").map(split) {
            Some(w) => Some(known_list(w)?),
            None => conf.user_known_hosts.clone().map(known_list).transpose()?,
        };
        let global_known = match args.first("globalknownhostsfile").map(split) {
            Some(w) => Some(known_list(w)?),
            None => conf
                .global_known_hosts
                .clone()
                .map(known_list)
                .transpose()?,
        };
        spec.known_hosts = if let Some(k) = get(vars, &["keel_known_hosts"]) {
            k.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(expand_tilde)
                .collect()
        } else if user_known.is_some() || global_known.is_some() {
            let defaults = default_known_hosts();
            let mut v = user_known.unwrap_or_else(|| defaults[..1].to_vec());
            v.extend(global_known.unwrap_or_else(|| defaults[1..].to_vec()));
            v
        } else {
            default_known_hosts()
        };

        if let Some(t) = get(vars, &["ansible_ssh_timeout", "ansible_timeout"]) {
            spec.connect_timeout = duration_secs(name, "ansible_timeout", &t)?;
        } else if let Some(t) = args.first("connecttimeout") {
            spec.connect_timeout = duration_secs(name, "ConnectTimeout", &t)?;
        } else if let Some(t) = conf.connect_timeout {
            spec.connect_timeout = t;
        }

        spec.retries = match get(vars, &["ansible_ssh_retries"]) {
            Some(r) => r.trim().parse().map_err(|_| {
                bad(
                    name,
                    format!("ansible_ssh_retries must be a whole number, got `{r}`"),
                )
            })?,
            None => defaults.retries,
        };

        if let Some(t) = args.first("serveraliveinterval") {
            spec.keepalive.interval = alive_interval(name, &t)?;
        } else if let Some(t) = conf.server_alive_interval {
            spec.keepalive.interval = (!t.is_zero()).then_some(t);
        }
        if let Some(n) = args
            .first("serveralivecountmax")
            .or_else(|| conf.server_alive_count_max.clone())
        {
            spec.keepalive.max = n.trim().parse().map_err(|_| {
                bad(
                    name,
                    format!("ServerAliveCountMax must be a whole number, got `{n}`"),
                )
            })?;
        }

        // The way there: `keel_jump_host` (Keel's own variable) over the
        // first ProxyJump/ProxyCommand of the arguments, over the
        // configuration's.
        if let Some(j) = get(vars, &["keel_jump_host"]) {
            spec.jump = parse_jumps(name, "keel_jump_host", &j)?;
        } else {
            let proxy = match args.first_of(&["proxyjump", "proxycommand"]) {
                Some((_, v)) if v.eq_ignore_ascii_case("none") => Some(Proxy::Direct),
                Some((k, v)) if k == "proxyjump" => Some(Proxy::Jump(v)),
                Some((_, v)) => Some(Proxy::Command(v)),
                None => conf.proxy.clone(),
            };
            match proxy {
                None | Some(Proxy::Direct) => {}
                Some(Proxy::Command(c)) => {
                    spec.proxy_command =
                        Some(ssh_config::expand("ProxyCommand", &c, &tokens).map_err(conf_err)?);
                }
                Some(Proxy::Jump(j)) => {
                    let (hops, command) = resolve_jumps(name, &j, &files, &local_user, 0)?;
                    spec.jump = hops;
                    spec.proxy_command = command;
                }
            }
        }
        if let Some(m) = get(vars, &["keel_max_channels"]) {
            let n: usize = m.trim().parse().map_err(|_| {
                bad(
                    name,
                    format!("keel_max_channels must be a number, got `{m}`"),
                )
            })?;
            if n == 0 || n >= 10 {
                return Err(
                    bad(name, format!("keel_max_channels must be 1..=9, got {n}"))
                        .hint("sshd refuses the 11th session on a connection (MaxSessions 10)"),
                );
            }
            spec.max_channels = n;
        }
        spec.become_method = match get(vars, &["ansible_become_method"]).as_deref() {
            None | Some("sudo") => BecomeMethod::Sudo,
            Some("su") => BecomeMethod::Su,
            Some(other) => {
                return Err(bad(name, format!("unsupported become method `{other}`"))
                    .hint("Keel supports `sudo` and `su`"))
            }
        };
        if let Some(u) = get(vars, &["ansible_become_user", "ansible_sudo_user"]) {
            spec.become_user = u;
        }
        spec.become_password = get(
            vars,
            &[
                "ansible_become_password",
                "ansible_become_pass",
                "ansible_sudo_pass",
            ],
        );
        spec.become_exe = get(vars, &["ansible_become_exe"]);
        spec.become_flags = get(vars, &["ansible_become_flags"]);
        Ok(spec)
    }

    /// The escalation settings of this host (used when a task has `become`).
    pub fn become_settings(&self) -> Become {
        Become {
            method: self.become_method.clone(),
            user: self.become_user.clone(),
            password: self.become_password.clone(),
            flags: self.become_flags.clone(),
            exe: self.become_exe.clone(),
        }
    }

    /// `user@address:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.address, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Value;

    fn vars(pairs: &[(&str, Value)]) -> VarMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn defaults() {
        let s = ConnectSpec::from_vars("web1", &VarMap::new()).unwrap();
        assert_eq!(s.address, "web1");
        assert_eq!(s.port, 22);
        assert_eq!(s.kind, ConnectionKind::Ssh);
        assert_eq!(s.max_channels, 8);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.known_hosts, default_known_hosts());
    }

    #[test]
    fn ssh_args_are_translated() {
        let v = vars(&[
            ("ansible_port", Value::from(2222)),
            (
                "ansible_ssh_common_args",
                Value::from(
                    "-F none -o UserKnownHostsFile='/a/kh /b/kh' -o StrictHostKeyChecking=no \
                     -o ProxyJump=jump@bastion:2200,inner -o ControlMaster=auto -o ConnectTimeout=3",
                ),
            ),
            ("ansible_ssh_extra_args", Value::from("-i /k/id -l admin")),
        ]);
        let s = ConnectSpec::from_vars("h", &v).unwrap();
        assert_eq!(s.port, 2222);
        assert_eq!(s.user, "admin");
        assert_eq!(s.identity_files, vec![PathBuf::from("/k/id")]);
        assert_eq!(
            s.known_hosts[..2],
            [PathBuf::from("/a/kh"), PathBuf::from("/b/kh")]
        );
        assert_eq!(
            s.jump,
            vec![
                JumpHop {
                    user: Some("jump".into()),
                    host: "bastion".into(),
                    port: 2200,
                    ..Default::default()
                },
                // As for `ssh -J`: a hop without a user is the local user's.
                JumpHop {
                    user: Some(current_user()),
                    host: "inner".into(),
                    port: 22,
                    ..Default::default()
                },
            ]
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        // StrictHostKeyChecking=no; ControlMaster needs no word.
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert_eq!(s.host_key_policy, HostKeyPolicy::AcceptNew);
    }

    #[test]
    fn server_alive_options_set_the_keepalive() {
        let with = |args: &str| {
            let v = vars(&[("ansible_ssh_common_args", Value::from(args))]);
            ConnectSpec::from_vars("h", &v)
        };
        assert_eq!(with("").unwrap().keepalive, Keepalive::default());
        let s = with("-o ServerAliveInterval=2 -o ServerAliveCountMax=4").unwrap();
        assert_eq!(
            s.keepalive,
            Keepalive {
                interval: Some(Duration::from_secs(2)),
                max: 4
            }
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(
            with("-o ServerAliveInterval=1m")
                .unwrap()
                .keepalive
                .interval,
            Some(Duration::from_secs(60))
        );
        // As for `ssh`: 0 sends none.
        assert_eq!(
            with("-o ServerAliveInterval=0").unwrap().keepalive.interval,
            None
        );
        let e = with("-o ServerAliveInterval=soon").unwrap_err().to_string();
        assert!(e.contains("ServerAliveInterval"), "{e}");
        let e = with("-o ServerAliveCountMax=-1").unwrap_err().to_string();
        assert!(e.contains("ServerAliveCountMax"), "{e}");
    }

    #[test]
    fn host_key_checking_precedence() {
        let off = ConnectDefaults {
            host_key_checking: false,
            ..Default::default()
        };
        let s = ConnectSpec::from_vars_with("h", &VarMap::new(), &off).unwrap();
        assert_eq!(s.host_key_policy, HostKeyPolicy::AcceptNew);
        let s = ConnectSpec::from_vars("h", &VarMap::new()).unwrap();
        assert_eq!(s.host_key_policy, HostKeyPolicy::Strict);
        // The variable wins over the configuration...
        let v = vars(&[("ansible_host_key_checking", Value::from(true))]);
        let s = ConnectSpec::from_vars_with("h", &v, &off).unwrap();
        assert_eq!(s.host_key_policy, HostKeyPolicy::Strict);
        // ...and `-o StrictHostKeyChecking=yes` too.
        let strict = ConnectDefaults {
            ssh_common_args: Some("-o StrictHostKeyChecking=yes".into()),
            ..off
        };
        let s = ConnectSpec::from_vars_with("h", &VarMap::new(), &strict).unwrap();
        assert_eq!(s.host_key_policy, HostKeyPolicy::Strict);
    }

    /// A temporary OpenSSH client configuration, named by `-F`.
    fn with_config(text: &str, extra: &[(&str, Value)]) -> (tempfile::TempDir, VarMap) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_config");
        std::fs::write(&path, text).unwrap();
        let mut v = vars(extra);
        v.insert(
            "ansible_ssh_args".into(),
            Value::from(format!("-C -o ControlMaster=auto -F {}", path.display())),
        );
        (dir, v)
    }

    #[test]
    fn ssh_config_fills_in_what_the_inventory_leaves_unset() {
        let conf = "Host web*\n  HostName 10.1.%h\n  User deploy\n  Port 2201\n  \
                    IdentityFile /keys/%r-%n\n  UserKnownHostsFile /kh/%h\n\
                    Host *\n  User nobody\n  IdentityFile /keys/all\n";
        let (_d, v) = with_config(conf, &[("ansible_host", Value::from("web7"))]);
        let s = ConnectSpec::from_vars("w", &v).unwrap();
        assert_eq!(s.address, "10.1.web7");
        assert_eq!((s.user.as_str(), s.port), ("deploy", 2201));
        assert_eq!(
            s.identity_files,
            [
                PathBuf::from("/keys/deploy-web7"),
                PathBuf::from("/keys/all")
            ]
        );
        assert_eq!(s.known_hosts[0], PathBuf::from("/kh/10.1.web7"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // The Host pattern matches ansible_host (what `ssh` is given), not
        // the inventory name.
        let (_d, v) = with_config(conf, &[]);
        let s = ConnectSpec::from_vars("web7", &v).unwrap();
        assert_eq!(s.address, "10.1.web7");
        let s = ConnectSpec::from_vars("db1", &v).unwrap();
        assert_eq!((s.address.as_str(), s.user.as_str()), ("db1", "nobody"));
    }

    #[test]
    fn inventory_and_ssh_args_win_over_ssh_config() {
        let conf = "Host web\n  User deploy\n  Port 2201\n  IdentityFile /keys/conf\n";
        let (_d, mut v) = with_config(
            conf,
            &[
                ("ansible_user", Value::from("admin")),
                ("ansible_port", Value::from(22)),
                ("ansible_ssh_private_key_file", Value::from("/keys/inv")),
            ],
        );
        let s = ConnectSpec::from_vars("web", &v).unwrap();
        assert_eq!((s.user.as_str(), s.port), ("admin", 22));
        // Both keys are offered, the inventory's first.
        assert_eq!(
            s.identity_files,
            [PathBuf::from("/keys/inv"), PathBuf::from("/keys/conf")]
        );
        v.shift_remove("ansible_user");
        v.shift_remove("ansible_port");
        v.insert(
            "ansible_ssh_common_args".into(),
            Value::from("-o User=first -l second -p 2300"),
        );
        let s = ConnectSpec::from_vars("web", &v).unwrap();
        assert_eq!((s.user.as_str(), s.port), ("first", 2300));
    }

    #[test]
    fn proxy_command_and_proxy_jump_from_ssh_config() {
        let conf = "Host inner\n  HostName 10.0.0.9\n  ProxyJump gate\n\
                    Host gate\n  HostName 192.0.2.1\n  User hop\n  Port 2022\n  \
                    IdentityFile /keys/gate\n  ProxyCommand nc -x proxy %h %p\n\
                    Host piped\n  ProxyCommand ssh -W %h:%p -l %r gate\n  User u\n";
        let (_d, v) = with_config(conf, &[]);
        let s = ConnectSpec::from_vars("inner", &v).unwrap();
        assert_eq!(s.address, "10.0.0.9");
        assert_eq!(
            s.jump,
            vec![JumpHop {
                user: Some("hop".into()),
                host: "192.0.2.1".into(),
                port: 2022,
                identity_files: vec![PathBuf::from("/keys/gate")],
            }]
        );
        // The first hop's own ProxyCommand carries the chain.
        assert_eq!(
            s.proxy_command.as_deref(),
            Some("nc -x proxy 192.0.2.1 2022")
        );
        let s = ConnectSpec::from_vars("piped", &v).unwrap();
        assert!(s.jump.is_empty());
        assert_eq!(
            s.proxy_command.as_deref(),
            Some("ssh -W piped:22 -l u gate")
        );
        // The inventory's ProxyCommand wins over the configuration's
        // ProxyJump (the first of the two obtained is used).
        let mut v = v;
        v.insert(
            "ansible_ssh_common_args".into(),
            Value::from("-o ProxyCommand='nc %h %p'"),
        );
        let s = ConnectSpec::from_vars("inner", &v).unwrap();
        assert!(s.jump.is_empty());
        assert_eq!(s.proxy_command.as_deref(), Some("nc 10.0.0.9 22"));
        v.insert(
            "ansible_ssh_common_args".into(),
            Value::from("-o ProxyJump=none"),
        );
        let s = ConnectSpec::from_vars("inner", &v).unwrap();
        assert!(s.jump.is_empty() && s.proxy_command.is_none());
    }

    #[test]
    fn options_keel_does_not_apply_are_warned_about() {
        let conf = "Host *\n  ForwardAgent yes\n  LocalForward 8080 localhost:80\n\
                    SendEnv LANG\n";
        let (_d, mut v) = with_config(conf, &[]);
        v.insert(
            "ansible_ssh_extra_args".into(),
            Value::from("-o HostKeyAlias=x -A -vvv -L 1:h:2"),
        );
        let s = ConnectSpec::from_vars("h", &v).unwrap();
        let all = s.warnings.join("\n");
        for needle in [
            "forwardagent",
            "localforward",
            "hostkeyalias=x",
            "-A",
            "-L 1:h:2",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
        assert!(!all.contains("sendenv") && !all.contains("-v"), "{all}");
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let v = vars(&[(
            "ansible_ssh_common_args",
            Value::from("-F /nonexistent/cfg"),
        )]);
        let e = ConnectSpec::from_vars("h", &v).unwrap_err();
        assert!(e.message.contains("/nonexistent/cfg"), "{}", e.message);
    }

    #[test]
    fn unknown_connection_is_an_error() {
        let v = vars(&[("ansible_connection", Value::from("winrm"))]);
        let e = ConnectSpec::from_vars("h", &v).unwrap_err();
        assert!(e.message.contains("winrm"), "{}", e.message);
    }

    #[test]
    fn debug_redacts_secrets() {
        let v = vars(&[
            ("ansible_password", Value::from("hunter2")),
            ("ansible_become_password", Value::from("hunter3")),
            ("keel_ssh_key_passphrase", Value::from("hunter4")),
        ]);
        let s = ConnectSpec::from_vars("h", &v).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }
}
