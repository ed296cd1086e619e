//! Connection settings of one host, read from its (already templated)
//! connection variables.
//!
//! The executor builds a [`ConnectSpec`] per host from `hostvars` before the
//! first task that needs the host, then asks the
//! [`ConnectionPool`](super::ConnectionPool) for the connection. Supported
//! `-o` options in `ansible_ssh_common_args`/`ansible_ssh_extra_args` are
//! translated; the others are ignored (Keel has no ControlMaster: it keeps
//! one connection per host anyway).

use std::path::PathBuf;
use std::time::Duration;

use super::known_hosts::default_known_hosts;
use super::r#become::{Become, BecomeMethod};
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHop {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl JumpHop {
    /// Parses `[user@]host[:port]`, with `[v6addr]:port` allowed.
    pub fn parse(s: &str) -> Option<JumpHop> {
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
                Some(p) => p.parse().ok()?,
                None => 22,
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (rest.to_string(), 22),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(JumpHop { user, host, port })
    }
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
    /// `--ssh-common-args`, `[ssh_connection] ssh_common_args`.
    pub ssh_common_args: Option<String>,
    /// `--ssh-extra-args`, `[ssh_connection] ssh_extra_args`.
    pub ssh_extra_args: Option<String>,
    /// `host_key_checking` (`ANSIBLE_HOST_KEY_CHECKING`).
    pub host_key_checking: bool,
    /// `-k`/`--ask-pass`.
    pub password: Option<String>,
}

impl Default for ConnectDefaults {
    fn default() -> Self {
        ConnectDefaults {
            ssh_common_args: None,
            ssh_extra_args: None,
            host_key_checking: true,
            password: None,
        }
    }
}

impl std::fmt::Debug for ConnectDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectDefaults")
            .field("ssh_common_args", &self.ssh_common_args)
            .field("ssh_extra_args", &self.ssh_extra_args)
            .field("host_key_checking", &self.host_key_checking)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
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
    pub connect_timeout: Duration,
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
            .field("connect_timeout", &self.connect_timeout)
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

        // `-o` options first, so explicit ansible_* variables win over them.
        let mut user_known: Option<Vec<PathBuf>> = None;
        let mut global_known: Option<Vec<PathBuf>> = None;
        let mut args_user = None;
        let mut args_port = None;
        let mut args_identities = Vec::new();
        let mut strict_option: Option<HostKeyPolicy> = None;
        for (var, fallback) in [
            ("ansible_ssh_common_args", &defaults.ssh_common_args),
            ("ansible_ssh_extra_args", &defaults.ssh_extra_args),
        ] {
            let Some(args) = get(vars, &[var]).or_else(|| fallback.clone()) else {
                continue;
            };
            let words = shell_words::split(&args).map_err(|e| bad(name, format!("{var}: {e}")))?;
            let mut i = 0;
            while i < words.len() {
                let w = &words[i];
                let (flag, inline) = if w.len() > 2 && w.starts_with('-') && !w.starts_with("--") {
                    (&w[..2], Some(w[2..].to_string()))
                } else {
                    (w.as_str(), None)
                };
                let takes_value = matches!(
                    flag,
                    "-o" | "-J"
                        | "-i"
                        | "-p"
                        | "-l"
                        | "-F"
                        | "-S"
                        | "-E"
                        | "-c"
                        | "-m"
                        | "-L"
                        | "-R"
                        | "-D"
                        | "-b"
                        | "-W"
                        | "-Q"
                        | "-O"
                        | "-w"
                        | "-B"
                        | "-e"
                        | "-I"
                );
                let value = if takes_value {
                    match inline {
                        Some(v) => Some(v),
                        None => {
                            i += 1;
                            words.get(i).cloned()
                        }
                    }
                } else {
                    None
                };
                i += 1;
                let Some(value) = value else { continue };
                match flag {
                    "-J" => spec.jump = parse_jumps(name, var, &value)?,
                    "-i" => args_identities.push(expand_tilde(&value)),
                    "-p" => args_port = Some(value),
                    "-l" => args_user = Some(value),
                    "-o" => {
                        let (k, v) = match value.split_once('=') {
                            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                            None => match value.trim().split_once(char::is_whitespace) {
                                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                                None => continue,
                            },
                        };
                        match k.to_ascii_lowercase().as_str() {
                            "userknownhostsfile" => {
                                user_known = Some(v.split_whitespace().map(expand_tilde).collect())
                            }
                            "globalknownhostsfile" => {
                                global_known =
                                    Some(v.split_whitespace().map(expand_tilde).collect())
                            }
                            "stricthostkeychecking" => {
                                strict_option = Some(match v.to_ascii_lowercase().as_str() {
                                    "accept-new" => HostKeyPolicy::AcceptNew,
                                    "no" | "off" => {
                                        spec.warnings.push(format!(
                                            "StrictHostKeyChecking={v} is read as accept-new: \
                                             Keel learns unknown host keys but still refuses \
                                             a changed one"
                                        ));
                                        HostKeyPolicy::AcceptNew
                                    }
                                    _ => HostKeyPolicy::Strict,
                                });
                            }
                            "proxyjump" => spec.jump = parse_jumps(name, var, &v)?,
                            "identityfile" => args_identities.push(expand_tilde(&v)),
                            "port" => args_port = Some(v),
                            "user" => args_user = Some(v),
                            "connecttimeout" => {
                                spec.connect_timeout = duration_secs(name, var, &v)?
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }

        let port = get(vars, &["ansible_port", "ansible_ssh_port"]).or(args_port);
        if let Some(p) = port {
            spec.port = p.trim().parse().map_err(|_| {
                bad(
                    name,
                    format!("ansible_port must be a port number, got `{p}`"),
                )
            })?;
        }
        spec.user = get(vars, &["ansible_user", "ansible_ssh_user"])
            .or(args_user)
            .unwrap_or_else(current_user);
        if let Some(k) = get(
            vars,
            &["ansible_ssh_private_key_file", "ansible_private_key_file"],
        ) {
            spec.identity_files.push(expand_tilde(&k));
        }
        spec.identity_files.extend(args_identities);
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
        // The variable wins over the `-o` option, which wins over the
        // configuration.
        spec.host_key_policy = match get(
            vars,
            &["ansible_host_key_checking", "ansible_ssh_host_key_checking"],
        ) {
            Some(v) if crate::config::truthy(&v) => HostKeyPolicy::Strict,
            Some(_) => HostKeyPolicy::AcceptNew,
            None => strict_option.unwrap_or(if defaults.host_key_checking {
                HostKeyPolicy::Strict
            } else {
                HostKeyPolicy::AcceptNew
            }),
        };
        if let Some(j) = get(vars, &["keel_jump_host"]) {
            spec.jump = parse_jumps(name, "keel_jump_host", &j)?;
        }
        if let Some(t) = get(vars, &["ansible_ssh_timeout", "ansible_timeout"]) {
            spec.connect_timeout = duration_secs(name, "ansible_timeout", &t)?;
        }
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
                    "-o UserKnownHostsFile='/a/kh /b/kh' -o StrictHostKeyChecking=no \
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
                    port: 2200
                },
                JumpHop {
                    user: None,
                    host: "inner".into(),
                    port: 22
                },
            ]
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.host_key_policy, HostKeyPolicy::AcceptNew);
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
