//! The settings Keel reads from `ansible.cfg` and the environment, one row
//! each: ansible-core's name for it (what `ansible-config dump` prints), the
//! INI keys and environment variables that set it (lowest precedence first,
//! as ansible-core lists them), its type and its default. Rows marked
//! `plugin` are options of ansible-core's `ssh` connection plugin rather than
//! base settings: `ansible-config dump` without `-t` leaves them out.
//!
//! A key of the file that no row names is reported as ignored.

/// A setting Keel knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Inventory,
    RolesPath,
    CollectionsPath,
    Forks,
    RemoteUser,
    RemotePort,
    PrivateKeyFile,
    Timeout,
    Transport,
    AskPass,
    Become,
    BecomeMethod,
    BecomeUser,
    BecomeAskPass,
    BecomeFlags,
    BecomeExe,
    Gathering,
    FactCaching,
    FactCachingConnection,
    FactCachingTimeout,
    FactCachingPrefix,
    VaultPasswordFile,
    VaultIdentityList,
    VaultEncryptIdentity,
    VaultIdMatch,
    ForceHandlers,
    AllowBrokenConditionals,
    LocalhostWarning,
    Debug,
    RetryFilesEnabled,
    HostKeyChecking,
    PollInterval,
    SshHostKeyChecking,
    SshTimeout,
    SshRetries,
    SshArgs,
    SshCommonArgs,
    SshExtraArgs,
    Pipelining,
    ControlPath,
    ControlPathDir,
}

/// How ansible-core types the raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Str,
    /// One path, relative to the configuration file's directory.
    Path,
    /// Paths separated by `:`.
    PathSpec,
    /// Paths separated by `,`.
    PathList,
    /// Items separated by `,`.
    List,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Default {
    None,
    Bool(bool),
    Int(Option<i64>),
    Str(Option<&'static str>),
    /// `~/` is the user's home.
    Paths(&'static [&'static str]),
}

/// What Keel does with a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// Read and acted on.
    Honoured,
    /// Read without complaint but without effect; the note, if any, is
    /// printed when the value differs from the default.
    Accepted(Option<&'static str>),
}

pub(super) struct Def {
    pub key: Key,
    pub name: &'static str,
    pub ini: &'static [(&'static str, &'static str)],
    pub env: &'static [&'static str],
    pub kind: Kind,
    pub default: Default,
    pub usage: Use,
    pub plugin: bool,
}

impl Def {
    /// `[section] key` of its first INI entry, for messages.
    pub fn label(&self) -> String {
        match self.ini.first() {
            Some((s, k)) => format!("[{s}] {k}"),
            None => self.name.to_string(),
        }
    }
}

const D: &str = "defaults";
const PE: &str = "privilege_escalation";
const SSH: &str = "ssh_connection";
const H: Use = Use::Honoured;
const KEEPS_ONE_CONNECTION: Use = Use::Accepted(None);

const fn base(
    key: Key,
    name: &'static str,
    ini: &'static [(&'static str, &'static str)],
    env: &'static [&'static str],
    kind: Kind,
    default: Default,
) -> Def {
    Def {
        key,
        name,
        ini,
        env,
        kind,
        default,
        usage: H,
        plugin: false,
    }
}

const fn ssh(
    key: Key,
    name: &'static str,
    ini: &'static [(&'static str, &'static str)],
    env: &'static [&'static str],
    kind: Kind,
    default: Default,
    usage: Use,
) -> Def {
    Def {
        key,
        name,
        ini,
        env,
        kind,
        default,
        usage,
        plugin: true,
    }
}

pub(super) static TABLE: &[Def] = &[
    base(
        Key::Inventory,
        "DEFAULT_HOST_LIST",
        &[(D, "inventory")],
        &["ANSIBLE_INVENTORY"],
        Kind::PathList,
        Default::Paths(&["/etc/ansible/hosts"]),
    ),
    base(
        Key::RolesPath,
        "DEFAULT_ROLES_PATH",
        &[(D, "roles_path")],
        &["ANSIBLE_ROLES_PATH"],
        Kind::PathSpec,
        Default::Paths(&[
            "~/.ansible/roles",
            "/usr/share/ansible/roles",
            "/etc/ansible/roles",
        ]),
    ),
    base(
        Key::CollectionsPath,
        "COLLECTIONS_PATHS",
        &[(D, "collections_path")],
        &["ANSIBLE_COLLECTIONS_PATH"],
        Kind::PathSpec,
        Default::Paths(&["~/.ansible/collections", "/usr/share/ansible/collections"]),
    ),
    base(
        Key::Forks,
        "DEFAULT_FORKS",
        &[(D, "forks")],
        &["ANSIBLE_FORKS"],
        Kind::Int,
        Default::Int(Some(5)),
    ),
    base(
        Key::RemoteUser,
        "DEFAULT_REMOTE_USER",
        &[(D, "remote_user")],
        &["ANSIBLE_REMOTE_USER"],
        Kind::Str,
        Default::None,
    ),
    base(
        Key::RemotePort,
        "DEFAULT_REMOTE_PORT",
        &[(D, "remote_port")],
        &["ANSIBLE_REMOTE_PORT"],
        Kind::Int,
        Default::None,
    ),
    base(
        Key::PrivateKeyFile,
        "DEFAULT_PRIVATE_KEY_FILE",
        &[(D, "private_key_file")],
        &["ANSIBLE_PRIVATE_KEY_FILE"],
        Kind::Path,
        Default::None,
    ),
    base(
        Key::Timeout,
        "DEFAULT_TIMEOUT",
        &[(D, "timeout")],
        &["ANSIBLE_TIMEOUT"],
        Kind::Int,
        Default::Int(Some(10)),
    ),
    base(
        Key::Transport,
        "DEFAULT_TRANSPORT",
        &[(D, "transport")],
        &["ANSIBLE_TRANSPORT"],
        Kind::Str,
        Default::Str(Some("ssh")),
    ),
    base(
        Key::AskPass,
        "DEFAULT_ASK_PASS",
        &[(D, "ask_pass")],
        &["ANSIBLE_ASK_PASS"],
        Kind::Bool,
        Default::Bool(false),
    ),
    base(
        Key::Become,
        "DEFAULT_BECOME",
        &[(PE, "become")],
        &["ANSIBLE_BECOME"],
        Kind::Bool,
        Default::Bool(false),
    ),
    base(
        Key::BecomeMethod,
        "DEFAULT_BECOME_METHOD",
        &[(PE, "become_method")],
        &["ANSIBLE_BECOME_METHOD"],
        Kind::Str,
        Default::Str(Some("sudo")),
    ),
    base(
        Key::BecomeUser,
        "DEFAULT_BECOME_USER",
        &[(PE, "become_user")],
        &["ANSIBLE_BECOME_USER"],
        Kind::Str,
        Default::Str(Some("root")),
    ),
    base(
        Key::BecomeAskPass,
        "DEFAULT_BECOME_ASK_PASS",
        &[(PE, "become_ask_pass")],
        &["ANSIBLE_BECOME_ASK_PASS"],
        Kind::Bool,
        Default::Bool(false),
    ),
    base(
        Key::BecomeFlags,
        "DEFAULT_BECOME_FLAGS",
        &[(PE, "become_flags")],
        &["ANSIBLE_BECOME_FLAGS"],
        Kind::Str,
        Default::Str(Some("")),
    ),
    base(
        Key::BecomeExe,
        "DEFAULT_BECOME_EXE",
        &[(PE, "become_exe")],
        &["ANSIBLE_BECOME_EXE"],
        Kind::Str,
        Default::None,
    ),
    base(
        Key::Gathering,
        "DEFAULT_GATHERING",
        &[(D, "gathering")],
        &["ANSIBLE_GATHERING"],
        Kind::Str,
        Default::Str(Some("implicit")),
    ),
    base(
        Key::FactCaching,
        "CACHE_PLUGIN",
        &[(D, "fact_caching")],
        &["ANSIBLE_CACHE_PLUGIN"],
        Kind::Str,
        Default::Str(Some("memory")),
    ),
    base(
        Key::FactCachingConnection,
        "CACHE_PLUGIN_CONNECTION",
        &[(D, "fact_caching_connection")],
        &["ANSIBLE_CACHE_PLUGIN_CONNECTION"],
        Kind::Str,
        Default::None,
    ),
    base(
        Key::FactCachingTimeout,
        "CACHE_PLUGIN_TIMEOUT",
        &[(D, "fact_caching_timeout")],
        &["ANSIBLE_CACHE_PLUGIN_TIMEOUT"],
        Kind::Int,
        Default::Int(Some(86400)),
    ),
    base(
        Key::FactCachingPrefix,
        "CACHE_PLUGIN_PREFIX",
        &[(D, "fact_caching_prefix")],
        &["ANSIBLE_CACHE_PLUGIN_PREFIX"],
        Kind::Str,
        Default::Str(Some("ansible_facts")),
    ),
    base(
        Key::VaultPasswordFile,
        "DEFAULT_VAULT_PASSWORD_FILE",
        &[(D, "vault_password_file")],
        &["ANSIBLE_VAULT_PASSWORD_FILE"],
        Kind::Path,
        Default::None,
    ),
    base(
        Key::VaultIdentityList,
        "DEFAULT_VAULT_IDENTITY_LIST",
        &[(D, "vault_identity_list")],
        &["ANSIBLE_VAULT_IDENTITY_LIST"],
        Kind::List,
        Default::None,
    ),
    base(
        Key::VaultEncryptIdentity,
        "DEFAULT_VAULT_ENCRYPT_IDENTITY",
        &[(D, "vault_encrypt_identity")],
        &["ANSIBLE_VAULT_ENCRYPT_IDENTITY"],
        Kind::Str,
        Default::None,
    ),
    base(
        Key::VaultIdMatch,
        "DEFAULT_VAULT_ID_MATCH",
        &[(D, "vault_id_match")],
        &["ANSIBLE_VAULT_ID_MATCH"],
        Kind::Bool,
        Default::Bool(false),
    ),
    base(
        Key::ForceHandlers,
        "DEFAULT_FORCE_HANDLERS",
        &[(D, "force_handlers")],
        &["ANSIBLE_FORCE_HANDLERS"],
        Kind::Bool,
        Default::Bool(false),
    ),
    base(
        Key::AllowBrokenConditionals,
        "ALLOW_BROKEN_CONDITIONALS",
        &[(D, "allow_broken_conditionals")],
        &["ANSIBLE_ALLOW_BROKEN_CONDITIONALS"],
        Kind::Bool,
        Default::Bool(false),
    ),
    // `keel play`'s warning when the inventory holds no host.
    base(
        Key::LocalhostWarning,
        "LOCALHOST_WARNING",
        &[(D, "localhost_warning")],
        &["ANSIBLE_LOCALHOST_WARNING"],
        Kind::Bool,
        Default::Bool(true),
    ),
    // Only the executor's `META:` lines of implicit handler flushes, of
    // ansible-core's debug output.
    base(
        Key::Debug,
        "DEFAULT_DEBUG",
        &[(D, "debug")],
        &["ANSIBLE_DEBUG"],
        Kind::Bool,
        Default::Bool(false),
    ),
    Def {
        key: Key::RetryFilesEnabled,
        name: "RETRY_FILES_ENABLED",
        ini: &[(D, "retry_files_enabled")],
        env: &["ANSIBLE_RETRY_FILES_ENABLED"],
        kind: Kind::Bool,
        default: Default::Bool(false),
        usage: Use::Accepted(Some("Keel writes no retry files")),
        plugin: false,
    },
    base(
        Key::HostKeyChecking,
        "HOST_KEY_CHECKING",
        &[(D, "host_key_checking")],
        &["ANSIBLE_HOST_KEY_CHECKING"],
        Kind::Bool,
        Default::Bool(true),
    ),
    base(
        Key::PollInterval,
        "DEFAULT_POLL_INTERVAL",
        &[(D, "poll_interval")],
        &["ANSIBLE_POLL_INTERVAL"],
        Kind::Int,
        Default::Int(Some(15)),
    ),
    ssh(
        Key::SshHostKeyChecking,
        "host_key_checking",
        &[(D, "host_key_checking"), (SSH, "host_key_checking")],
        &["ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_HOST_KEY_CHECKING"],
        Kind::Bool,
        Default::Bool(true),
        H,
    ),
    ssh(
        Key::SshTimeout,
        "timeout",
        &[(D, "timeout"), (SSH, "timeout")],
        &["ANSIBLE_TIMEOUT", "ANSIBLE_SSH_TIMEOUT"],
        Kind::Int,
        Default::Int(Some(10)),
        H,
    ),
    ssh(
        Key::SshRetries,
        "reconnection_retries",
        &[("connection", "retries"), (SSH, "retries")],
        &["ANSIBLE_SSH_RETRIES"],
        Kind::Int,
        Default::Int(Some(0)),
        H,
    ),
    ssh(
        Key::SshArgs,
        "ssh_args",
        &[(SSH, "ssh_args")],
        &["ANSIBLE_SSH_ARGS"],
        Kind::Str,
        Default::Str(Some("-C -o ControlMaster=auto -o ControlPersist=60s")),
        H,
    ),
    ssh(
        Key::SshCommonArgs,
        "ssh_common_args",
        &[(SSH, "ssh_common_args")],
        &["ANSIBLE_SSH_COMMON_ARGS"],
        Kind::Str,
        Default::Str(Some("")),
        H,
    ),
    ssh(
        Key::SshExtraArgs,
        "ssh_extra_args",
        &[(SSH, "ssh_extra_args")],
        &["ANSIBLE_SSH_EXTRA_ARGS"],
        Kind::Str,
        Default::Str(Some("")),
        H,
    ),
    ssh(
        Key::Pipelining,
        "pipelining",
        &[
            (D, "pipelining"),
            ("connection", "pipelining"),
            (SSH, "pipelining"),
        ],
        &["ANSIBLE_PIPELINING", "ANSIBLE_SSH_PIPELINING"],
        Kind::Bool,
        Default::Bool(false),
        KEEPS_ONE_CONNECTION,
    ),
    ssh(
        Key::ControlPath,
        "control_path",
        &[(SSH, "control_path")],
        &["ANSIBLE_SSH_CONTROL_PATH"],
        Kind::Str,
        Default::None,
        KEEPS_ONE_CONNECTION,
    ),
    ssh(
        Key::ControlPathDir,
        "control_path_dir",
        &[(SSH, "control_path_dir")],
        &["ANSIBLE_SSH_CONTROL_PATH_DIR"],
        Kind::Str,
        Default::Str(Some("~/.ansible/cp")),
        KEEPS_ONE_CONNECTION,
    ),
];

pub(super) fn def(key: Key) -> &'static Def {
    TABLE
        .iter()
        .find(|d| d.key == key)
        .expect("every key has a row")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_key_and_names_unique() {
        let mut names: Vec<(&str, bool)> = TABLE.iter().map(|d| (d.name, d.plugin)).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
        let mut keys: Vec<String> = TABLE.iter().map(|d| format!("{:?}", d.key)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), TABLE.len());
    }
}
