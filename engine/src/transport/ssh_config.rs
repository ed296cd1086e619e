//! The OpenSSH client configuration (`~/.ssh/config`, `/etc/ssh/ssh_config`,
//! or the file `-F` names), read for one host as `ssh` would read it.
//!
//! [`super::spec`] asks [`SshConfigFiles::query`] for what the configuration
//! says about the name a host is dialled by (`ansible_host`) once the
//! inventory and the `ssh_args` have had their say, and fills in only what
//! those left unset: Ansible passes its settings to `ssh` as `-o` options,
//! and in OpenSSH the first value obtained wins, command line before files.
//! Parsing (Host patterns with `!` and wildcards, `Include`, quoting) is the
//! `ssh2-config` crate's; this file adds what it leaves to its caller:
//! `Match` blocks (only `Match all` is applied, the others are reported and
//! skipped), `%` tokens, `ProxyCommand` (which the crate keeps as words),
//! the first of `ProxyJump`/`ProxyCommand` winning, and the names of the
//! options Keel does not honour, which the caller turns into warnings.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use ssh2_config::{HostParams, ParseRule, SshConfig};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("cannot read the ssh configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse the ssh configuration {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{option} `{value}`: unknown token %{token} (known: %h %p %r %n %u %d %i %%)")]
    Token {
        option: &'static str,
        value: String,
        token: char,
    },
}

/// Options that only tune a connection Keel makes its own way, so ignoring
/// them changes nothing a playbook can see: Keel keeps one connection per
/// host (the `Control*` options), never prompts, and
/// Debian's `/etc/ssh/ssh_config` sets some of these for every host.
const NO_EFFECT: &[&str] = &[
    "addkeystoagent",
    "batchmode",
    "checkhostip",
    "compression",
    "connectionattempts",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "hashknownhosts",
    "identitiesonly",
    "kbdinteractiveauthentication",
    "loglevel",
    "numberofpasswordprompts",
    "passwordauthentication",
    "preferredauthentications",
    "sendenv",
    "tcpkeepalive",
    "updatehostkeys",
    "usekeychain",
    "visualhostkey",
    "ignoreunknown",
    "pubkeyauthentication",
];

/// Options Keel applies (read by [`SshConfigFiles::query`]).
const HONOURED: &[&str] = &[
    "hostname",
    "port",
    "user",
    "identityfile",
    "proxyjump",
    "proxycommand",
    "connecttimeout",
    "serveraliveinterval",
    "serveralivecountmax",
    "userknownhostsfile",
    "globalknownhostsfile",
    "stricthostkeychecking",
];

/// Whether Keel honours an ssh option (by its lower-case name), or ignores
/// it without any visible difference. Everything else earns a warning.
pub fn silently_ok(option: &str) -> bool {
    let o = option.to_ascii_lowercase();
    HONOURED.contains(&o.as_str()) || NO_EFFECT.contains(&o.as_str())
}

/// How a connection gets to its host when not over TCP directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump` (the hops as written, `none` already taken out).
    Jump(String),
    /// `ProxyCommand`, its `%` tokens not yet expanded.
    Command(String),
    /// `ProxyJump none` or `ProxyCommand none`: connect directly.
    Direct,
}

/// What the configuration says about one host. `None` means "not said".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostOptions {
    pub host_name: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Every `IdentityFile` of every matching block, in order (they add up),
    /// `%` tokens not yet expanded.
    pub identity_files: Vec<String>,
    pub proxy: Option<Proxy>,
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (zero: no keepalives).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`, as written.
    pub server_alive_count_max: Option<String>,
    pub user_known_hosts: Option<Vec<String>>,
    pub global_known_hosts: Option<Vec<String>>,
    pub strict_host_key_checking: Option<String>,
    /// Warnings: options set for this host that Keel does not honour,
    /// `Match` blocks it skipped.
    pub unhonoured: Vec<String>,
}

/// One parsed configuration file.
struct ParsedFile {
    config: SshConfig,
    /// `Match` lines the file had (line number, text): their blocks are
    /// not applied.
    skipped_match: Vec<(usize, String)>,
}

/// The files `ssh` would read, in order, first value winning.
#[derive(Clone)]
pub struct SshConfigFiles {
    files: Vec<(PathBuf, Arc<ParsedFile>)>,
}

impl std::fmt::Debug for SshConfigFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|(p, _)| p))
            .finish()
    }
}

/// Which files to read: `ssh -F FILE` reads only that file (`none`: no file
/// at all); otherwise the user's then the system's, as `ssh` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChoice {
    Default,
    File(PathBuf),
    None,
}

impl SshConfigFiles {
    /// Loads the chosen files; missing default files are skipped, a missing
    /// `-F` file is an error (as for `ssh`). Files are parsed once per
    /// process and read again only when they change.
    pub fn load(choice: &ConfigChoice) -> Result<SshConfigFiles, SshConfigError> {
        let paths: Vec<(PathBuf, bool)> = match choice {
            ConfigChoice::None => Vec::new(),
            ConfigChoice::File(p) => vec![(p.clone(), true)],
            ConfigChoice::Default => {
                let mut v = Vec::new();
                if let Some(home) = dirs::home_dir() {
                    v.push((home.join(".ssh").join("config"), false));
                }
                v.push((PathBuf::from("/etc/ssh/ssh_config"), false));
                v
            }
        };
        let mut files = Vec::new();
        for (path, required) in paths {
            match parsed(&path) {
                Ok(Some(f)) => files.push((path, f)),
                Ok(None) if required => {
                    return Err(SshConfigError::Read {
                        path,
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    })
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(SshConfigFiles { files })
    }

    /// The files actually read (for messages).
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }

    /// What the files say about `host` (the name `ssh` is given, i.e.
    /// `ansible_host`): the first value wins, file by file, block by block.
    pub fn query(&self, host: &str) -> HostOptions {
        // OpenSSH matches Host patterns against the lower-cased name.
        let host = host.to_ascii_lowercase();
        let mut params: Option<HostParams> = None;
        let mut proxy: Option<Proxy> = None;
        let mut out = HostOptions::default();
        for (path, file) in &self.files {
            let p = file.config.query(&host);
            // ProxyJump and ProxyCommand exclude each other: whichever a
            // matching block sets first is the one `ssh` uses.
            if proxy.is_none() {
                for block in file.config.intersecting_hosts(&host) {
                    let jump = block.params.proxy_jump.as_ref().map(|j| j.join(","));
                    let command = block
                        .params
                        .unsupported_fields
                        .get("proxycommand")
                        .map(|w| w.join(" "));
                    if let Some(v) = jump.or(command.clone().map(|c| format!("\0{c}"))) {
                        proxy = Some(
                            if v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("\0none") {
                                Proxy::Direct
                            } else if let Some(c) = v.strip_prefix('\0') {
                                Proxy::Command(c.to_string())
                            } else {
                                Proxy::Jump(v)
                            },
                        );
                        break;
                    }
                }
            }
            for (name, words) in p.unsupported_fields.iter().chain(p.ignored_fields.iter()) {
                if !silently_ok(name) {
                    out.unhonoured.push(format!(
                        "the ssh option `{} {}` (in {}) is not applied by Keel",
                        name.to_ascii_lowercase(),
                        words.join(" "),
                        path.display()
                    ));
                }
            }
            for typed in typed_unhonoured(&p) {
                out.unhonoured.push(format!(
                    "the ssh option `{typed}` (in {}) is not applied by Keel",
                    path.display()
                ));
            }
            params = Some(match params {
                None => p,
                Some(mut first) => {
                    first.overwrite_if_none(&p);
                    first
                }
            });
        }
        for (path, file) in &self.files {
            for (line, text) in &file.skipped_match {
                out.unhonoured.push(format!(
                    "the ssh configuration's `{text}` (at {}:{line}) is skipped: Keel applies \
                     only `Match all`",
                    path.display()
                ));
            }
        }
        out.unhonoured.sort();
        out.unhonoured.dedup();
        let Some(p) = params else { return out };
        let field = |name: &str| p.unsupported_fields.get(name).map(|w| w.join(" "));
        let list = |name: &str| {
            p.unsupported_fields
                .get(name)
                .map(|w| w.iter().map(|s| unquote(s)).collect::<Vec<_>>())
        };
        out.host_name = p.host_name.clone();
        out.port = p.port;
        out.user = p.user.clone();
        out.identity_files = p
            .identity_file
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        out.proxy = proxy;
        out.connect_timeout = p.connect_timeout;
        out.server_alive_interval = p.server_alive_interval;
        out.server_alive_count_max = field("serveralivecountmax");
        out.user_known_hosts = list("userknownhostsfile");
        out.global_known_hosts = list("globalknownhostsfile");
        out.strict_host_key_checking = field("stricthostkeychecking");
        out
    }
}

/// The options the crate reads into typed fields that Keel does not apply.
fn typed_unhonoured(p: &HostParams) -> Vec<String> {
    let mut v = Vec::new();
    if p.forward_agent == Some(true) {
        v.push("forwardagent yes".to_string());
    }
    if let Some(a) = &p.bind_address {
        v.push(format!("bindaddress {a}"));
    }
    if let Some(i) = &p.bind_interface {
        v.push(format!("bindinterface {i}"));
    }
    if let Some(c) = &p.certificate_file {
        v.push(format!("certificatefile {}", c.display()));
    }
    if !p.remote_forward.is_empty() {
        v.push("remoteforward".to_string());
    }
    for (name, algos) in [
        ("ciphers", &p.ciphers),
        ("kexalgorithms", &p.kex_algorithms),
        ("macs", &p.mac),
        ("hostkeyalgorithms", &p.host_key_algorithms),
        ("pubkeyacceptedalgorithms", &p.pubkey_accepted_algorithms),
        ("casignaturealgorithms", &p.ca_signature_algorithms),
    ] {
        if !algos.is_default() {
            v.push(name.to_string());
        }
    }
    v
}

fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

type Cache = Mutex<HashMap<PathBuf, (Option<SystemTime>, u64, Arc<ParsedFile>)>>;

/// Parses `path`, or returns the copy parsed earlier if the file has not
/// changed since. `Ok(None)`: the file does not exist.
fn parsed(path: &Path) -> Result<Option<Arc<ParsedFile>>, SshConfigError> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SshConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let stamp = (meta.modified().ok(), meta.len());
    let cache = CACHE.get_or_init(Default::default);
    if let Some((m, l, f)) = cache.lock().get(path) {
        if (*m, *l) == stamp {
            return Ok(Some(f.clone()));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| SshConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = Arc::new(parse_text(path, &text)?);
    cache
        .lock()
        .insert(path.to_path_buf(), (stamp.0, stamp.1, file.clone()));
    Ok(Some(file))
}

/// Parses one file's text. `Match all` becomes `Host *`; any other `Match`
/// becomes a block that matches no host (the crate has no `Match`, and
/// would otherwise add its options to the block before it).
fn parse_text(path: &Path, text: &str) -> Result<ParsedFile, SshConfigError> {
    let mut skipped_match = Vec::new();
    let mut rewritten = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let keyword: String = t
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '=')
            .collect();
        if keyword.eq_ignore_ascii_case("match") {
            let rest = t[keyword.len()..]
                .trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                .trim();
            if rest.eq_ignore_ascii_case("all") {
                rewritten.push_str("Host *\n");
            } else {
                skipped_match.push((i + 1, t.trim_end().to_string()));
                rewritten.push_str("Host !*\n");
            }
            continue;
        }
        rewritten.push_str(line);
        rewritten.push('\n');
    }
    let config = SshConfig::default()
        .parse(
            &mut BufReader::new(rewritten.as_bytes()),
            ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
        )
        .map_err(|e| SshConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(ParsedFile {
        config,
        skipped_match,
    })
}

/// The values `%` tokens stand for, as `ssh` defines them.
pub struct Tokens<'a> {
    /// `%h`: the host name connected to (after `HostName`).
    pub host: &'a str,
    /// `%n`: the name as given (`ansible_host`).
    pub original: &'a str,
    /// `%p`
    pub port: u16,
    /// `%r`: the remote user.
    pub user: &'a str,
    /// `%u`: the local user.
    pub local_user: &'a str,
}

/// Expands `%h %p %r %n %u %d %i %%` in `value` (an option named `option`);
/// an unknown token is an error, as in `ssh`.
pub fn expand(option: &'static str, value: &str, t: &Tokens) -> Result<String, SshConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(t.host),
            Some('n') => out.push_str(t.original),
            Some('p') => out.push_str(&t.port.to_string()),
            Some('r') => out.push_str(t.user),
            Some('u') => out.push_str(t.local_user),
            Some('d') => out.push_str(
                &dirs::home_dir()
                    .map(|h| h.display().to_string())
                    .unwrap_or_default(),
            ),
            // SAFETY: getuid cannot fail.
            Some('i') => out.push_str(&unsafe { libc::getuid() }.to_string()),
            Some(other) => {
                return Err(SshConfigError::Token {
                    option,
                    value: value.to_string(),
                    token: other,
                })
            }
            None => {
                return Err(SshConfigError::Token {
                    option,
                    value: value.to_string(),
                    token: ' ',
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(text: &str) -> SshConfigFiles {
        let path = PathBuf::from("/test/config");
        SshConfigFiles {
            files: vec![(path.clone(), Arc::new(parse_text(&path, text).unwrap()))],
        }
    }

    #[test]
    fn first_value_wins_and_identity_files_add_up() {
        let f = files(
            "Host web*\n  HostName %h.example\n  User deploy\n  IdentityFile ~/.ssh/web\n\
             Host web1\n  User other\n  Port 2201\n\
             Host *\n  Port 22\n  IdentityFile /k/all\n  User fallback\n",
        );
        let o = f.query("web1");
        assert_eq!(o.host_name.as_deref(), Some("%h.example"));
        assert_eq!(o.user.as_deref(), Some("deploy"));
        assert_eq!(o.port, Some(2201));
        assert_eq!(o.identity_files.len(), 2, "{:?}", o.identity_files);
        assert!(o.identity_files[0].ends_with(".ssh/web"));
        assert_eq!(o.identity_files[1], "/k/all");
        let o = f.query("db1");
        assert_eq!(o.user.as_deref(), Some("fallback"));
        assert_eq!(o.host_name, None);
    }

    #[test]
    fn negated_patterns_and_case() {
        let f = files("Host *.lan !bastion.lan\n  User inner\nHost *\n  User outer\n");
        assert_eq!(f.query("DB.lan").user.as_deref(), Some("inner"));
        assert_eq!(f.query("bastion.lan").user.as_deref(), Some("outer"));
    }

    #[test]
    fn the_first_proxy_setting_wins() {
        let f = files(
            "Host a\n  ProxyCommand ssh -W %h:%p \"jump host\"\n\
             Host *\n  ProxyJump bastion\n\
             Host c\n  ProxyCommand none\n",
        );
        assert_eq!(
            f.query("a").proxy,
            Some(Proxy::Command("ssh -W %h:%p \"jump host\"".into()))
        );
        assert_eq!(f.query("b").proxy, Some(Proxy::Jump("bastion".into())));
        let f = files("Host c\n  ProxyJump none\nHost *\n  ProxyJump bastion\n");
        assert_eq!(f.query("c").proxy, Some(Proxy::Direct));
    }

    #[test]
    fn match_blocks_are_skipped_and_reported() {
        let f = files(
            "Host a\n  User one\nMatch host a exec \"true\"\n  User two\n  Port 2\n\
             Match all\n  Port 3\n",
        );
        let o = f.query("a");
        assert_eq!(o.user.as_deref(), Some("one"));
        assert_eq!(o.port, Some(3));
        assert!(
            o.unhonoured
                .iter()
                .any(|u| u.contains("Match host a") && u.contains(":3")),
            "{:?}",
            o.unhonoured
        );
    }

    #[test]
    fn unhonoured_options_are_named_and_harmless_ones_are_not() {
        let f = files("Host *\n  ForwardAgent yes\n  LocalForward 8080 localhost:80\n  SendEnv LANG\n  ControlMaster auto\n  Frobnicate 1\n");
        let o = f.query("x");
        let names: Vec<String> = o
            .unhonoured
            .iter()
            .filter_map(|u| u.split('`').nth(1))
            .map(|u| u.split(' ').next().unwrap().to_string())
            .collect();
        assert!(names.contains(&"localforward".to_string()), "{names:?}");
        assert!(names.contains(&"frobnicate".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n == "sendenv" || n == "controlmaster"));
    }

    #[test]
    fn tokens() {
        let t = Tokens {
            host: "10.0.0.5",
            original: "web1",
            port: 2222,
            user: "deploy",
            local_user: "me",
        };
        assert_eq!(
            expand("ProxyCommand", "nc %h %p # %n %r %u 100%%", &t).unwrap(),
            "nc 10.0.0.5 2222 # web1 deploy me 100%"
        );
        let e = expand("ProxyCommand", "nc %z", &t).unwrap_err();
        assert!(e.to_string().contains("%z"), "{e}");
    }
}
