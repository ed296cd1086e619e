//! `ansible.cfg` and the `ANSIBLE_*` environment: the settings that apply
//! before any command-line flag, read once by the `keel` CLI and turned into
//! [`RunOptions`](crate::executor::RunOptions), resolve options and vault
//! secret options. It imports nothing from the crate but its own files, so
//! every layer can take plain values from it.
//!
//! The file is found where ansible-core looks (`ANSIBLE_CONFIG` — a file, or a
//! directory holding `ansible.cfg` —, `./ansible.cfg` unless the working
//! directory is world-writable, `~/.ansible.cfg`, `/etc/ansible/ansible.cfg`;
//! the first readable one wins, none is merged). Each setting is then taken
//! from its environment variables, else the file, else its default, and
//! typed as ansible-core types it (booleans, integers, paths relative to the
//! file's directory, `:`-separated path specs, `,`-separated lists).
//! Command-line flags win over all of it; the CLI applies them.
//!
//! Layout: `table.rs` (every setting Keel reads or accepts: its ansible-core
//! name, INI keys, environment variables, type and default), `ini.rs` (the
//! `configparser`-compatible reader), this file (finding, typing, the
//! `ansible-config dump` text and the warnings).

mod ini;
mod table;

use std::path::{Path, PathBuf};

pub use ini::IniError;
pub(crate) use ini::IniFile;
pub use table::{Key, Kind};

use table::{Def, Default as Dflt, Use, TABLE};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The environment variable that set it.
    Env(&'static str),
    /// The configuration file.
    File,
}

/// A typed setting.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(Option<i64>),
    Str(Option<String>),
    Path(Option<PathBuf>),
    Paths(Vec<PathBuf>),
    List(Vec<String>),
}

/// A configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Error reading config file ({path}): {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Error reading config file ({path}): {source}")]
    Syntax { path: PathBuf, source: IniError },
    #[error("Unsupported configuration file extension for {path}: expected .cfg or .ini")]
    Extension { path: PathBuf },
    #[error("Config {name} from {origin} has an invalid value: `{value}` is not {expected}")]
    Invalid {
        name: &'static str,
        origin: String,
        value: String,
        expected: &'static str,
    },
}

/// What the process sees: its environment, working directory and home.
/// Tests build one by hand; [`Environment::current`] reads the real one.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
}

impl Environment {
    pub fn current() -> Environment {
        Environment {
            vars: std::env::vars().collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .or_else(dirs::home_dir),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The settings in effect, each with its origin.
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    values: Vec<(Key, Value, Origin)>,
    /// `[section] key` entries of the file that Keel does not act on.
    pub ignored: Vec<String>,
    /// Things to tell the user once (world-writable directory, settings
    /// Keel reads differently).
    pub warnings: Vec<String>,
}

impl Default for Config {
    /// Every setting at its default, no file.
    fn default() -> Config {
        Config::from_file(None, None, &Environment::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Finds and reads the configuration of this process.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_in(&Environment::current())
    }

    /// Finds and reads the configuration `env` would see.
    pub fn load_in(env: &Environment) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let file = find_file(env, &mut warnings);
        let ini = match &file {
            Some(p) => {
                match p.extension().and_then(|e| e.to_str()) {
                    Some("cfg" | "ini") => {}
                    _ => return Err(ConfigError::Extension { path: p.clone() }),
                }
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                Some(IniFile::parse(&text).map_err(|source| ConfigError::Syntax {
                    path: p.clone(),
                    source,
                })?)
            }
            None => None,
        };
        let mut cfg = Config::from_file(file, ini.as_ref(), env)?;
        warnings.append(&mut cfg.warnings);
        cfg.warnings = warnings;
        Ok(cfg)
    }

    fn from_file(
        file: Option<PathBuf>,
        ini: Option<&IniFile>,
        env: &Environment,
    ) -> Result<Config, ConfigError> {
        let mut values = Vec::new();
        let mut warnings = Vec::new();
        let base = file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| env.cwd.clone());
        for def in TABLE {
            // The last environment variable listed wins, as in ansible-core.
            let from_env = def
                .env
                .iter()
                .rev()
                .find_map(|n| env.var(n).map(|v| (*n, v.to_string())));
            let from_file = ini.and_then(|f| {
                def.ini
                    .iter()
                    .rev()
                    .find_map(|(s, k)| f.get(s, k).map(|v| ini::unquote(v).to_string()))
            });
            let (raw, origin, dir) = match (from_env, from_file) {
                // An empty variable for a non-string setting means "unset".
                (Some((_, v)), file_value) if v.is_empty() && def.kind != Kind::Str => {
                    match file_value {
                        Some(f) => (Some(f), Origin::File, base.clone()),
                        None => (None, Origin::Default, env.cwd.clone()),
                    }
                }
                (Some((n, v)), _) => (Some(v), Origin::Env(n), env.cwd.clone()),
                (None, Some(v)) => (Some(v), Origin::File, base.clone()),
                (None, None) => (None, Origin::Default, env.cwd.clone()),
            };
            let value = match raw {
                Some(raw) => typed(def, &raw, &dir, env, &origin)?,
                None => default_value(def, env),
            };
            if let (Use::Accepted(Some(note)), false) =
                (def.usage, value == default_value(def, env))
            {
                warnings.push(format!("{} is accepted, but {note}", def.label()));
            }
            values.push((def.key, value, origin));
        }
        let mut ignored = Vec::new();
        if let Some(f) = ini {
            for (section, keys) in &f.sections {
                for key in keys.keys() {
                    let known = TABLE
                        .iter()
                        .any(|d| d.ini.iter().any(|(s, k)| s == section && k == key));
                    if !known {
                        ignored.push(format!("[{section}] {key}"));
                    }
                }
            }
        }
        Ok(Config {
            file,
            values,
            ignored,
            warnings,
        })
    }

    fn entry(&self, key: Key) -> &(Key, Value, Origin) {
        self.values
            .iter()
            .find(|(k, _, _)| *k == key)
            .expect("every key is in the table")
    }

    pub fn value(&self, key: Key) -> &Value {
        &self.entry(key).1
    }

    pub fn origin(&self, key: Key) -> &Origin {
        &self.entry(key).2
    }

    /// Set by the environment or the file (not a default).
    pub fn is_set(&self, key: Key) -> bool {
        *self.origin(key) != Origin::Default
    }

    pub fn bool(&self, key: Key) -> bool {
        match self.value(key) {
            Value::Bool(b) => *b,
            other => panic!("{key:?} is not a boolean: {other:?}"),
        }
    }

    pub fn int(&self, key: Key) -> Option<i64> {
        match self.value(key) {
            Value::Int(i) => *i,
            other => panic!("{key:?} is not an integer: {other:?}"),
        }
    }

    pub fn str(&self, key: Key) -> Option<&str> {
        match self.value(key) {
            Value::Str(s) => s.as_deref(),
            other => panic!("{key:?} is not a string: {other:?}"),
        }
    }

    pub fn path(&self, key: Key) -> Option<&Path> {
        match self.value(key) {
            Value::Path(p) => p.as_deref(),
            other => panic!("{key:?} is not a path: {other:?}"),
        }
    }

    pub fn paths(&self, key: Key) -> &[PathBuf] {
        match self.value(key) {
            Value::Paths(p) => p,
            other => panic!("{key:?} is not a path list: {other:?}"),
        }
    }

    pub fn list(&self, key: Key) -> &[String] {
        match self.value(key) {
            Value::List(l) => l,
            other => panic!("{key:?} is not a list: {other:?}"),
        }
    }

    /// A base setting by its ansible-core name (`DEFAULT_FORKS`), with
    /// where its value came from as ansible-core words it (`default`,
    /// `env: ANSIBLE_FORKS`, or the file's path). `None` for a name Keel
    /// does not know and for connection-plugin options.
    pub fn setting(&self, name: &str) -> Option<(&Value, String)> {
        let (_, value, origin) = self.values.iter().find(|(key, _, _)| {
            let def = table::def(*key);
            !def.plugin && def.name == name
        })?;
        Some((value, self.origin_text(origin)))
    }

    fn origin_text(&self, origin: &Origin) -> String {
        match origin {
            Origin::Default => "default".to_string(),
            Origin::Env(n) => format!("env: {n}"),
            Origin::File => self
                .file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }
    }

    /// The warning about file entries Keel does not act on, if there are any.
    pub fn ignored_warning(&self) -> Option<String> {
        if self.ignored.is_empty() {
            return None;
        }
        Some(format!(
            "Keel ignores these settings of {}: {}",
            self.file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.ignored.join(", ")
        ))
    }

    /// `ansible-config dump` text: `NAME(origin) = value` for every base
    /// setting Keel reads, sorted by name, `CONFIG_FILE()` among them, then
    /// the (empty) Galaxy server list. `only_changed` leaves out defaults.
    pub fn dump(&self, only_changed: bool) -> String {
        let mut lines: Vec<(String, String)> = Vec::new();
        lines.push((
            "CONFIG_FILE".into(),
            format!(
                "CONFIG_FILE() = {}",
                self.file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "None".into())
            ),
        ));
        for (key, value, origin) in &self.values {
            let def = table::def(*key);
            if def.plugin || (only_changed && *origin == Origin::Default) {
                continue;
            }
            let origin = self.origin_text(origin);
            lines.push((
                def.name.to_string(),
                format!("{}({origin}) = {}", def.name, python_repr(value)),
            ));
        }
        lines.sort();
        let mut out: String = lines.into_iter().map(|(_, l)| l + "\n").collect();
        out.push_str("\nGALAXY_SERVERS:\n");
        out
    }
}

/// ansible-core's search: the first readable candidate wins.
fn find_file(env: &Environment, warnings: &mut Vec<String>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    let from_env = env.var("ANSIBLE_CONFIG").map(|v| {
        let p = resolve(v, &env.cwd, env);
        if p.is_dir() {
            p.join("ansible.cfg")
        } else {
            p
        }
    });
    candidates.extend(from_env.clone());
    let cwd_cfg = env.cwd.join("ansible.cfg");
    let mut skipped_cwd = false;
    match std::fs::metadata(&env.cwd) {
        Ok(meta) if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o002 != 0 => {
            // Anyone could have put it there: ansible-core refuses it.
            skipped_cwd = cwd_cfg.exists();
        }
        Ok(_) => candidates.push(cwd_cfg),
        Err(_) => {}
    }
    if let Some(home) = &env.home {
        candidates.push(home.join(".ansible.cfg"));
    }
    candidates.push(PathBuf::from("/etc/ansible/ansible.cfg"));
    let found = candidates.into_iter().find(|p| readable(p));
    if skipped_cwd && (from_env.is_none() || from_env != found) {
        warnings.push(format!(
            "Ansible is being run in a world writable directory ({}), ignoring it as an \
             ansible.cfg source. For more information see \
             https://docs.ansible.com/ansible/devel/reference_appendices/config.html#cfg-in-world-writable-dir",
            env.cwd.display()
        ));
    }
    found
}

fn readable(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    p.exists() && unsafe { libc::access(c.as_ptr(), libc::R_OK) } == 0
}

/// ansible-core's `unfrackpath` without following links: `$VAR` and `~`
/// expanded, relative paths taken from `base`, `.`/`..` folded.
fn resolve(raw: &str, base: &Path, env: &Environment) -> PathBuf {
    let raw = raw.replace("{{CWD}}", &env.cwd.display().to_string());
    let expanded = expand_vars(&raw, env);
    let expanded = match expanded.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match &env.home {
            Some(h) => format!("{}{rest}", h.display()),
            None => expanded.clone(),
        },
        _ => expanded.clone(),
    };
    let p = Path::new(&expanded);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `$NAME` and `${NAME}` from the environment; unknown names stay, as in
/// Python's `os.path.expandvars`.
fn expand_vars(s: &str, env: &Environment) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, used) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match env.var(name).filter(|_| !name.is_empty()) {
            Some(v) => {
                out.push_str(v);
                rest = &after[used..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// ansible-core's non-strict boolean.
pub fn truthy(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "on" | "1" | "true" | "t" | "1.0"
    )
}

fn typed(
    def: &Def,
    raw: &str,
    base: &Path,
    env: &Environment,
    origin: &Origin,
) -> Result<Value, ConfigError> {
    let invalid = |expected: &'static str| ConfigError::Invalid {
        name: def.name,
        origin: match origin {
            Origin::Env(n) => format!("env: {n}"),
            _ => "the configuration file".into(),
        },
        value: raw.to_string(),
        expected,
    };
    Ok(match def.kind {
        Kind::Bool => Value::Bool(truthy(raw)),
        Kind::Int => {
            let t = raw.trim();
            let n = t
                .parse::<i64>()
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && f.is_finite())
                        .map(|f| f as i64)
                })
                .ok_or_else(|| invalid("an integer"))?;
            Value::Int(Some(n))
        }
        Kind::Str => Value::Str(Some(raw.to_string())),
        Kind::Path => Value::Path(Some(resolve(raw, base, env))),
        Kind::PathSpec => Value::Paths(
            raw.split(':')
                .map(|p| resolve(p, base, env))
                .collect::<Vec<_>>(),
        ),
        Kind::PathList => Value::Paths(
            raw.split(',')
                .map(|p| resolve(p.trim(), base, env))
                .collect::<Vec<_>>(),
        ),
        Kind::List => Value::List(
            raw.split(',')
                .map(|x| ini::unquote(x.trim()).to_string())
                .collect(),
        ),
    })
}

fn default_value(def: &Def, env: &Environment) -> Value {
    let home = |rest: &str| match &env.home {
        Some(h) => h.join(rest),
        None => PathBuf::from("~").join(rest),
    };
    match (&def.default, def.kind) {
        (Dflt::Bool(b), _) => Value::Bool(*b),
        (Dflt::Int(i), _) => Value::Int(*i),
        (Dflt::Str(s), _) => Value::Str(s.map(String::from)),
        (Dflt::None, Kind::Path) => Value::Path(None),
        (Dflt::None, Kind::Str) => Value::Str(None),
        (Dflt::None, Kind::Int) => Value::Int(None),
        (Dflt::None, Kind::List) => Value::List(Vec::new()),
        (Dflt::None, Kind::Bool) => Value::Bool(false),
        (Dflt::None, Kind::PathSpec | Kind::PathList) => Value::Paths(Vec::new()),
        (Dflt::Paths(ps), _) => Value::Paths(
            ps.iter()
                .map(|p| match p.strip_prefix("~/") {
                    Some(rest) => home(rest),
                    None => PathBuf::from(p),
                })
                .collect(),
        ),
    }
}

/// A value as Python prints it (what `ansible-config dump` shows).
fn python_repr(v: &Value) -> String {
    fn quoted(s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
    match v {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(Some(i)) => i.to_string(),
        Value::Int(None) | Value::Str(None) | Value::Path(None) => "None".into(),
        Value::Str(Some(s)) => s.clone(),
        Value::Path(Some(p)) => p.display().to_string(),
        Value::Paths(ps) => format!(
            "[{}]",
            ps.iter()
                .map(|p| quoted(&p.display().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::List(l) => format!(
            "[{}]",
            l.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(dir: &Path, vars: &[(&str, &str)]) -> Environment {
        Environment {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: dir.to_path_buf(),
            home: Some(dir.join("home")),
        }
    }

    #[test]
    fn env_beats_file_beats_default() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("ansible.cfg"),
            "[defaults]\nforks = 7\nremote_user = deploy\ninventory = ./hosts, /x/y\n",
        )
        .unwrap();
        let cfg = Config::load_in(&env_in(d.path(), &[("ANSIBLE_FORKS", "9")])).unwrap();
        assert_eq!(
            cfg.file.as_deref(),
            Some(d.path().join("ansible.cfg").as_path())
        );
        assert_eq!(cfg.int(Key::Forks), Some(9));
        assert_eq!(*cfg.origin(Key::Forks), Origin::Env("ANSIBLE_FORKS"));
        assert_eq!(cfg.str(Key::RemoteUser), Some("deploy"));
        assert_eq!(
            cfg.paths(Key::Inventory),
            [d.path().join("hosts"), PathBuf::from("/x/y")]
        );
        assert_eq!(cfg.int(Key::Timeout), Some(10));
        assert!(!cfg.is_set(Key::Timeout));
    }

    #[test]
    fn world_writable_cwd_is_refused_with_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ansible.cfg"), "[defaults]\nforks = 7\n").unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let cfg = Config::load_in(&env_in(d.path(), &[])).unwrap();
        assert_eq!(cfg.file, None);
        assert_eq!(cfg.int(Key::Forks), Some(5));
        assert!(
            cfg.warnings[0].contains("world writable"),
            "{:?}",
            cfg.warnings
        );
        // Named by ANSIBLE_CONFIG (here as its directory), it is read.
        let d2 = d.path().display().to_string();
        let cfg = Config::load_in(&env_in(d.path(), &[("ANSIBLE_CONFIG", &d2)])).unwrap();
        assert_eq!(cfg.int(Key::Forks), Some(7));
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn home_file_after_cwd() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("home")).unwrap();
        std::fs::write(
            d.path().join("home/.ansible.cfg"),
            "[privilege_escalation]\nbecome = yes\n",
        )
        .unwrap();
        let cfg = Config::load_in(&env_in(d.path(), &[])).unwrap();
        assert!(cfg.bool(Key::Become));
        assert_eq!(
            cfg.file.as_deref(),
            Some(d.path().join("home/.ansible.cfg").as_path())
        );
    }

    #[test]
    fn bad_values_and_ignored_keys() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ansible.cfg"), "[defaults]\nforks = many\n").unwrap();
        let e = Config::load_in(&env_in(d.path(), &[])).unwrap_err();
        assert!(e.to_string().contains("DEFAULT_FORKS"), "{e}");
        std::fs::write(
            d.path().join("ansible.cfg"),
            "[defaults]\nstdout_callback = yaml\nnocows = 1\n[ssh_connection]\npipelining = True\n",
        )
        .unwrap();
        let cfg = Config::load_in(&env_in(d.path(), &[])).unwrap();
        assert_eq!(
            cfg.ignored,
            ["[defaults] stdout_callback", "[defaults] nocows"]
        );
    }

    #[test]
    fn paths_expand_vars_and_home() {
        let d = tempfile::tempdir().unwrap();
        let env = env_in(d.path(), &[("TOP", "/srv")]);
        assert_eq!(
            resolve("$TOP/a/../b", d.path(), &env),
            PathBuf::from("/srv/b")
        );
        assert_eq!(resolve("~/r", d.path(), &env), d.path().join("home/r"));
        assert_eq!(
            resolve("${NOPE}/x", Path::new("/b"), &env),
            PathBuf::from("/b/${NOPE}/x")
        );
    }
}
