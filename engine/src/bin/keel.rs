//! `keel`: the command line. It parses arguments and calls the library.
//!
//! `keel play` behaves like ansible-playbook; `keel inventory` like
//! ansible-inventory; `keel vault` like ansible-vault; `keel config` like
//! ansible-config. Settings come from the command line, then the
//! `ANSIBLE_*` environment and `ansible.cfg` (`keel::config`), then defaults.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use keel::config::{Config, Key};
use keel::executor::{run_playbook, FactCache, Gathering, RunOptions, TagSelection};
use keel::inventory::Inventory;
use keel::output::{Fanout, HumanSink, JsonSink, MinimalSink, Sink, VaultMask};
use keel::playbook::{load_playbook, ResolveOptions};
use keel::vars::VarMap;

#[derive(Parser)]
#[command(name = "keel", version, about = "Run Ansible-syntax playbooks, fast")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run playbooks (like ansible-playbook).
    Play(Box<PlayArgs>),
    /// Show the inventory (like ansible-inventory).
    Inventory(InventoryArgs),
    /// Encrypt and decrypt vault files and strings (like ansible-vault).
    Vault(VaultArgs),
    /// Show the configuration (like ansible-config).
    Config(ConfigArgs),
    /// Install roles and collections (like ansible-galaxy).
    Galaxy(GalaxyArgs),
    /// Run one module on the hosts a pattern selects, ad hoc (like
    /// `ansible`). The run is a one-task play, reported in
    /// ansible-playbook's format.
    Ansible(Box<AdhocArgs>),
}

#[derive(Args)]
struct AdhocArgs {
    /// Host pattern, as a play's `hosts:` (`all`, `web:&prod`, `h1,h2`).
    pattern: String,
    /// Inventory: a file, a directory, a script, a URL, or `host1,host2,`.
    #[arg(short = 'i', long = "inventory", action = ArgAction::Append)]
    inventory: Vec<String>,
    /// The module to run.
    #[arg(short = 'm', long = "module-name", default_value = "command")]
    module_name: String,
    /// The module's arguments: `k=v ...` or free-form text (JSON too).
    #[arg(short = 'a', long = "args")]
    args: Option<String>,
    /// Further limit the selected hosts with a pattern.
    #[arg(short = 'l', long)]
    limit: Option<String>,
    /// Extra variables: `k=v ...`, JSON/YAML, or `@file`.
    #[arg(short = 'e', long = "extra-vars", action = ArgAction::Append)]
    extra_vars: Vec<String>,
    /// List the matching hosts and run nothing.
    #[arg(long)]
    list_hosts: bool,
    #[arg(short = 'C', long)]
    check: bool,
    #[arg(short = 'D', long)]
    diff: bool,
    #[arg(short = 'f', long)]
    forks: Option<usize>,
    #[arg(short = 'v', action = ArgAction::Count)]
    verbose: u8,
    #[arg(short = 'b', long = "become")]
    become_: bool,
    #[arg(long)]
    become_user: Option<String>,
    #[arg(long)]
    become_method: Option<String>,
    #[arg(short = 'K', long = "ask-become-pass")]
    ask_become_pass: bool,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(short = 'c', long)]
    connection: Option<String>,
    #[arg(short = 'T', long)]
    timeout: Option<u64>,
    #[arg(long = "private-key", visible_alias = "key-file")]
    private_key: Option<PathBuf>,
    #[command(flatten)]
    vault: VaultFlags,
}

#[derive(Args)]
struct GalaxyArgs {
    #[command(subcommand)]
    action: GalaxyAction,
}

#[derive(Subcommand)]
enum GalaxyAction {
    /// Install roles, and with `-r` the file's collections too.
    Install(GalaxyInstall),
    /// Role commands.
    Role {
        #[command(subcommand)]
        action: GalaxyTyped,
    },
    /// Collection commands.
    Collection {
        #[command(subcommand)]
        action: GalaxyTyped,
    },
}

#[derive(Subcommand)]
enum GalaxyTyped {
    /// Install from git URLs, tarballs and directories.
    Install(GalaxyInstall),
}

#[derive(Args)]
struct GalaxyInstall {
    /// Roles (`src[,version[,name]]`) or collections (`ns.name[:version]`,
    /// a path, a URL, `git+URL[#subdir][,ref]`).
    names: Vec<String>,
    /// A requirements file.
    #[arg(short = 'r', long = "role-file", visible_alias = "requirements-file")]
    requirements: Option<PathBuf>,
    /// Where to install (instead of the first configured roles_path or
    /// collections_path).
    #[arg(
        short = 'p',
        long = "roles-path",
        visible_alias = "collections-path",
        visible_alias = "path"
    )]
    path: Option<PathBuf>,
    /// Reinstall what is already installed.
    #[arg(short = 'f', long)]
    force: bool,
    /// Leave dependencies out.
    #[arg(short = 'n', long)]
    no_deps: bool,
    /// Go on after a role fails.
    #[arg(short = 'i', long)]
    ignore_errors: bool,
    /// Accepted for ansible-galaxy compatibility.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Args)]
struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Every setting Keel reads, with where its value came from.
    Dump {
        /// Only the settings not at their default.
        #[arg(long)]
        only_changed: bool,
    },
    /// The configuration file's text.
    View,
}

/// Where vault passwords come from (every subcommand that loads variables).
#[derive(Args, Default, Clone)]
struct VaultFlags {
    /// A vault password file, or an executable that prints the password.
    #[arg(long = "vault-password-file", visible_alias = "vault-pass-file", action = ArgAction::Append)]
    vault_password_file: Vec<PathBuf>,
    /// Ask for the vault password.
    #[arg(
        short = 'J',
        long = "ask-vault-pass",
        visible_alias = "ask-vault-password"
    )]
    ask_vault_pass: bool,
    /// A vault identity: `label@source`, where the source is a file, `prompt` or a script.
    #[arg(long = "vault-id", action = ArgAction::Append)]
    vault_id: Vec<String>,
}

impl VaultFlags {
    fn options(&self) -> keel::vault::SecretOptions {
        let cfg = config();
        let mut o = keel::vault::SecretOptions {
            vault_ids: self.vault_id.clone(),
            password_files: self.vault_password_file.clone(),
            ask_vault_pass: self.ask_vault_pass,
            ..Default::default()
        }
        .with_env();
        // The configuration covers the environment variables too.
        o.identity_list = cfg.list(Key::VaultIdentityList).to_vec();
        o.id_match = cfg.bool(Key::VaultIdMatch);
        o.configured_password_file = cfg.path(Key::VaultPasswordFile).map(PathBuf::from);
        o
    }

    /// Reads the secrets. `auto_prompt`: ask when nothing names a password
    /// (ansible-vault does, ansible-playbook does not).
    fn keyring(&self, auto_prompt: bool, new_password: bool) -> Result<keel::vault::Keyring> {
        for id in &self.vault_id {
            if id.contains(';') {
                bail!(
                    "'{id}' is not a valid vault id. The character ';' is not allowed in vault ids"
                );
            }
        }
        let mut prompt = |p: &str| prompt_secret(p);
        let (ring, warnings) =
            keel::vault::load_secrets(&self.options(), auto_prompt, new_password, &mut prompt)?;
        for w in warnings {
            eprintln!("[WARNING]: {w}");
        }
        Ok(ring)
    }

    /// Reads the secrets and makes them the ones every load decrypts with.
    fn install(&self) -> Result<()> {
        keel::vault::install(self.keyring(false, false)?);
        Ok(())
    }
}

#[derive(Args)]
struct VaultArgs {
    #[command(subcommand)]
    action: VaultAction,
    /// Accepted for ansible-vault compatibility; vault commands print no more with it.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand)]
enum VaultAction {
    /// Create a new vault file in $EDITOR.
    Create {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(long = "encrypt-vault-id")]
        encrypt_vault_id: Option<String>,
        /// Open the editor even when stdout is not a terminal.
        #[arg(long)]
        skip_tty_check: bool,
        file: String,
    },
    /// Encrypt files (or stdin).
    Encrypt {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(long = "encrypt-vault-id")]
        encrypt_vault_id: Option<String>,
        /// Write here instead of in place (`-` for stdout).
        #[arg(long = "output")]
        output: Option<String>,
        files: Vec<String>,
    },
    /// Decrypt files (or stdin).
    Decrypt {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(long = "output")]
        output: Option<String>,
        files: Vec<String>,
    },
    /// Show the plaintext of vault files.
    View {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Edit vault files in $EDITOR.
    Edit {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Encrypt vault files again with a new password.
    Rekey {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(long = "encrypt-vault-id")]
        encrypt_vault_id: Option<String>,
        #[arg(long = "new-vault-password-file", conflicts_with = "new_vault_id")]
        new_vault_password_file: Option<PathBuf>,
        #[arg(long = "new-vault-id")]
        new_vault_id: Option<String>,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Encrypt strings into `!vault` YAML.
    #[command(name = "encrypt_string", visible_alias = "encrypt-string")]
    EncryptString {
        #[command(flatten)]
        vault: VaultFlags,
        #[arg(long = "encrypt-vault-id")]
        encrypt_vault_id: Option<String>,
        #[arg(long = "output")]
        output: Option<String>,
        /// Variable names, one per string, in order.
        #[arg(short = 'n', long = "name", action = ArgAction::Append)]
        name: Vec<String>,
        /// Variable name for the string read from stdin.
        #[arg(long = "stdin-name")]
        stdin_name: Option<String>,
        /// Prompt for the string.
        #[arg(short = 'p', long)]
        prompt: bool,
        #[arg(long)]
        show_input: bool,
        strings: Vec<String>,
    },
}

#[derive(Args)]
struct PlayArgs {
    /// Inventory: a file, a directory, a script, a URL, or `host1,host2,`.
    #[arg(short = 'i', long = "inventory", action = ArgAction::Append)]
    inventory: Vec<String>,
    /// Playbooks to run, in order.
    #[arg(required = true)]
    playbooks: Vec<PathBuf>,
    /// Limit to hosts matching this pattern.
    #[arg(short = 'l', long)]
    limit: Option<String>,
    /// Only run tasks with these tags (comma-separated).
    #[arg(short = 't', long = "tags", action = ArgAction::Append)]
    tags: Vec<String>,
    /// Skip tasks with these tags.
    #[arg(long = "skip-tags", action = ArgAction::Append)]
    skip_tags: Vec<String>,
    /// Extra variables: `k=v ...`, JSON/YAML, or `@file`.
    #[arg(short = 'e', long = "extra-vars", action = ArgAction::Append)]
    extra_vars: Vec<String>,
    /// Resolve the playbook and stop.
    #[arg(long)]
    syntax_check: bool,
    /// Set by `keel ansible`, whose one-task play is not checked as a
    /// playbook's host list is (ansible's ad-hoc command has its own rules).
    #[arg(skip)]
    adhoc: bool,
    /// The module `keel ansible` runs and the task as ansible's error
    /// blocks show it: its output is the ad-hoc command's (`host | SUCCESS
    /// => …`), not the playbook's.
    #[arg(skip)]
    adhoc_module: Option<(String, String)>,
    /// Ask before each task whether to run it.
    #[arg(long)]
    step: bool,
    #[arg(long)]
    list_hosts: bool,
    #[arg(long)]
    list_tasks: bool,
    #[arg(long)]
    list_tags: bool,
    /// Check mode: report what would change.
    #[arg(short = 'C', long)]
    check: bool,
    /// Show diffs of what changes.
    #[arg(short = 'D', long)]
    diff: bool,
    /// Hosts to run at once (default: `forks` from ansible.cfg, else 50).
    #[arg(short = 'f', long)]
    forks: Option<usize>,
    #[arg(short = 'v', action = ArgAction::Count)]
    verbose: u8,
    #[arg(long)]
    start_at_task: Option<String>,
    #[arg(long)]
    force_handlers: bool,
    /// Ask for the become (sudo/su) password.
    #[arg(short = 'K', long = "ask-become-pass")]
    ask_become_pass: bool,
    /// Read the become password from this file.
    #[arg(long = "become-password-file", visible_alias = "become-pass-file")]
    become_password_file: Option<PathBuf>,
    /// Run tasks with become (sudo/su), where the play and task do not say.
    #[arg(short = 'b', long = "become")]
    become_: bool,
    /// The user to become.
    #[arg(long)]
    become_user: Option<String>,
    /// How to become: `sudo` or `su`.
    #[arg(long)]
    become_method: Option<String>,
    /// Connect as this user, where the inventory does not say.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Ask for the SSH password.
    #[arg(short = 'k', long = "ask-pass")]
    ask_pass: bool,
    /// Read the SSH password from this file.
    #[arg(long = "connection-password-file", visible_alias = "conn-pass-file")]
    connection_password_file: Option<PathBuf>,
    /// The SSH private key, where the inventory does not name one.
    #[arg(long = "private-key", visible_alias = "key-file")]
    private_key: Option<PathBuf>,
    /// Connection timeout in seconds.
    #[arg(short = 'T', long)]
    timeout: Option<u64>,
    /// Connection type: `ssh` (also for `paramiko`/`smart`) or `local`.
    #[arg(short = 'c', long)]
    connection: Option<String>,
    /// Arguments for every ssh connection: `-o` options Keel understands
    /// (HostName, Port, User, IdentityFile, ProxyJump, ProxyCommand,
    /// UserKnownHostsFile, GlobalKnownHostsFile, StrictHostKeyChecking,
    /// ConnectTimeout), `-J`, `-i`, `-p`, `-l`, `-F`; the rest are named in
    /// a warning.
    #[arg(long, allow_hyphen_values = true)]
    ssh_common_args: Option<String>,
    /// Like --ssh-common-args (ansible-core passes these to `ssh` only).
    #[arg(long, allow_hyphen_values = true)]
    ssh_extra_args: Option<String>,
    /// Accepted for ansible-playbook compatibility: Keel copies files over its
    /// SSH connection, not with sftp.
    #[arg(long, allow_hyphen_values = true, hide = true)]
    sftp_extra_args: Option<String>,
    /// Accepted for ansible-playbook compatibility: Keel never runs scp.
    #[arg(long, allow_hyphen_values = true, hide = true)]
    scp_extra_args: Option<String>,
    /// Empty the fact cache of the inventory's hosts before running.
    #[arg(long)]
    flush_cache: bool,
    /// Machine-readable events: `json`.
    #[arg(long, value_parser = ["json"])]
    events: Option<String>,
    /// Where events go: a path, `-` for stdout, or `fd:N`.
    #[arg(long, default_value = "-")]
    events_to: String,
    /// Extra role search paths (colon-separated).
    #[arg(long, env = "KEEL_ROLES_PATH")]
    roles_path: Option<String>,
    #[command(flatten)]
    vault: VaultFlags,
}

#[derive(Args)]
struct InventoryArgs {
    #[arg(short = 'i', long = "inventory", action = ArgAction::Append)]
    inventory: Vec<String>,
    #[arg(long)]
    list: bool,
    /// Print the group tree (optionally from GROUP).
    #[arg(long, num_args = 0..=1, default_missing_value = "all")]
    graph: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    vars: bool,
    /// More detail (accepted as ansible-inventory does; the listing is the same).
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    vault: VaultFlags,
}

/// How warnings reach the terminal when `KEEL_LOG` does not ask for logs:
/// as ansible-core shows them (`[WARNING]: …`), each text once per run.
#[derive(Default)]
struct AnsibleStyle {
    shown: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for AnsibleStyle
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut text = String::new();
        ctx.field_format().format_fields(
            tracing_subscriber::fmt::format::Writer::new(&mut text),
            event,
        )?;
        if !self
            .shown
            .lock()
            .map(|mut s| s.insert(text.clone()))
            .unwrap_or(true)
        {
            return Ok(());
        }
        let label = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            _ => "DEBUG",
        };
        writeln!(writer, "[{label}]: {text}")
    }
}

fn main() -> ExitCode {
    match tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG") {
        // Logs asked for: the full format, with times and targets.
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .with_writer(std::io::stderr)
            .event_format(AnsibleStyle::default())
            .init(),
    }
    let cli = Cli::parse();
    let result = load_config().and_then(|()| match cli.cmd {
        Cmd::Play(a) => play(*a),
        Cmd::Inventory(a) => inventory(a),
        Cmd::Vault(a) => vault(a),
        Cmd::Config(a) => config_cmd(a),
        Cmd::Galaxy(a) => galaxy(a),
        Cmd::Ansible(a) => adhoc(*a),
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("ERROR! {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `keel ansible`: `--list-hosts` as `ansible` prints it, else a one-task
/// play (`hosts:` the pattern, no fact gathering, the module with its
/// arguments) written to a private temporary file and run by `keel play`
/// with the same options.
fn adhoc(a: AdhocArgs) -> Result<i32> {
    if a.list_hosts {
        a.vault.install()?;
        let inv = load_inventory(&inventory_sources(&a.inventory))?;
        for w in &inv.warnings {
            eprintln!("[WARNING]: {w}");
        }
        let mut hosts = inv.select(&a.pattern).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(l) = &a.limit {
            let allowed = inv.select(l).map_err(|e| anyhow::anyhow!("{e}"))?;
            hosts.retain(|h| allowed.contains(h));
        }
        println!("  hosts ({}):", hosts.len());
        for h in hosts {
            println!("    {h}");
        }
        return Ok(0);
    }
    // A string keeps `k=v` and free-form arguments as the task would
    // have them written; no arguments is an empty mapping.
    let args = match &a.args {
        Some(s) => serde_json::Value::String(s.clone()),
        None => serde_json::json!({}),
    };
    let mut task = serde_json::Map::new();
    task.insert(a.module_name.clone(), args);
    let book_json = serde_json::json!([{
        "name": "Ansible Ad-Hoc",
        "hosts": a.pattern,
        "gather_facts": false,
        "tasks": [task],
    }]);
    let dir = tempfile::tempdir().context("creating a directory for the ad-hoc play")?;
    let book = dir.path().join("adhoc.yml");
    std::fs::write(&book, serde_json::to_string_pretty(&book_json)?)
        .with_context(|| format!("writing {}", book.display()))?;
    let mut argv: Vec<std::ffi::OsString> = vec!["keel".into(), "play".into(), book.into()];
    let mut push = |flag: &str, v: &str| {
        argv.push(flag.into());
        argv.push(v.into());
    };
    // ansible's ad-hoc play has the working directory as its base, so
    // `include_role`/`import_role` find `./roles/NAME` and `./NAME`; the
    // temporary play's own directory has none.
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let mut roles_path = format!("{}:{}", cwd.join("roles").display(), cwd.display());
    if let Ok(more) = std::env::var("KEEL_ROLES_PATH") {
        roles_path = format!("{roles_path}:{more}");
    }
    push("--roles-path", &roles_path);
    for i in &a.inventory {
        push("-i", i);
    }
    for e in &a.extra_vars {
        push("-e", e);
    }
    if let Some(l) = &a.limit {
        push("--limit", l);
    }
    if let Some(f) = a.forks {
        push("--forks", &f.to_string());
    }
    if let Some(u) = &a.become_user {
        push("--become-user", u);
    }
    if let Some(m) = &a.become_method {
        push("--become-method", m);
    }
    if let Some(u) = &a.user {
        push("--user", u);
    }
    if let Some(c) = &a.connection {
        push("--connection", c);
    }
    if let Some(t) = a.timeout {
        push("--timeout", &t.to_string());
    }
    if let Some(k) = &a.private_key {
        push("--private-key", &k.display().to_string());
    }
    for f in &a.vault.vault_password_file {
        push("--vault-password-file", &f.display().to_string());
    }
    for id in &a.vault.vault_id {
        push("--vault-id", id);
    }
    for (on, flag) in [
        (a.check, "--check"),
        (a.diff, "--diff"),
        (a.become_, "--become"),
        (a.ask_become_pass, "--ask-become-pass"),
    ] {
        if on {
            argv.push(flag.into());
        }
    }
    for _ in 0..a.verbose {
        argv.push("-v".into());
    }
    if a.vault.ask_vault_pass {
        argv.push("--ask-vault-pass".into());
    }
    match Cli::try_parse_from(argv)?.cmd {
        Cmd::Play(mut p) => {
            p.adhoc = true;
            // ansible's error blocks show the ad-hoc task as Python sees it.
            let (parsed, _) = keel::kv::parse_kv(&a.module_name, a.args.as_deref().unwrap_or(""));
            let task = format!(
                "{{'action': {}, 'args': {}, 'timeout': 0, 'async_val': 0, 'poll': 15}}",
                keel::template::python_repr(&minijinja::Value::from(a.module_name.as_str())),
                keel::template::python_repr(&minijinja::Value::from_pairs(
                    parsed.into_iter().collect::<Vec<_>>()
                ))
            );
            p.adhoc_module = Some((a.module_name.clone(), task));
            play(*p)
        }
        _ => unreachable!("the ad-hoc play is parsed as `keel play`"),
    }
}

static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// Reads `ansible.cfg` and the environment once, and says what it could not
/// use.
fn load_config() -> Result<()> {
    let cfg = Config::load()?;
    for w in &cfg.warnings {
        eprintln!("[WARNING]: {w}");
    }
    if let Some(w) = cfg.ignored_warning() {
        eprintln!("[WARNING]: {w}");
    }
    let _ = CONFIG.set(cfg);
    Ok(())
}

fn config() -> &'static Config {
    CONFIG.get_or_init(Config::default)
}

fn config_cmd(a: ConfigArgs) -> Result<i32> {
    let cfg = config();
    match a.action {
        ConfigAction::Dump { only_changed } => print!("{}", cfg.dump(only_changed)),
        ConfigAction::View => match &cfg.file {
            Some(f) => print!(
                "{}",
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
            ),
            None => bail!("No config file found"),
        },
    }
    Ok(0)
}

/// Prints an installer's lines as ansible-galaxy does: messages on
/// standard output, warnings on standard error.
fn galaxy_line(line: keel::galaxy::Line) {
    use std::io::Write;
    match line {
        keel::galaxy::Line::Info(t) => {
            println!("{t}");
            let _ = std::io::stdout().flush();
        }
        keel::galaxy::Line::Warning(t) => eprintln!("[WARNING]: {t}"),
    }
}

#[derive(PartialEq)]
enum GalaxyKind {
    Any,
    Role,
    Collection,
}

fn galaxy(a: GalaxyArgs) -> Result<i32> {
    let (kind, i) = match a.action {
        GalaxyAction::Install(i) => (GalaxyKind::Any, i),
        GalaxyAction::Role {
            action: GalaxyTyped::Install(i),
        } => (GalaxyKind::Role, i),
        GalaxyAction::Collection {
            action: GalaxyTyped::Install(i),
        } => (GalaxyKind::Collection, i),
    };
    galaxy_install(kind, i)
}

fn galaxy_install(kind: GalaxyKind, i: GalaxyInstall) -> Result<i32> {
    use keel::galaxy::{self, GalaxyError, InstallOptions, Requirements};
    let cfg = config();
    let opts = InstallOptions {
        force: i.force,
        no_deps: i.no_deps,
        ignore_errors: i.ignore_errors,
    };
    let home = |p: &std::path::Path| -> PathBuf {
        match p.strip_prefix("~") {
            Ok(rest) => dirs::home_dir()
                .map(|h| h.join(rest))
                .unwrap_or(p.to_path_buf()),
            Err(_) => p.to_path_buf(),
        }
    };
    let mut reqs = match &i.requirements {
        Some(file) => galaxy::load_requirements(file).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Requirements::default(),
    };
    if i.requirements.is_some() && !i.names.is_empty() {
        bail!("The positional collection_name arg and --requirements-file are mutually exclusive.");
    }
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for n in &i.names {
        if kind == GalaxyKind::Collection {
            reqs.collections
                .push(galaxy::parse_collection_arg(n, &base));
        } else {
            reqs.roles.push(galaxy::parse_role_arg(n));
        }
    }
    let configured_collections: Vec<PathBuf> = cfg
        .paths(Key::CollectionsPath)
        .iter()
        .map(|p| home(p))
        .collect();
    let do_roles = kind != GalaxyKind::Collection;
    let mut do_collections = kind != GalaxyKind::Role;
    if kind == GalaxyKind::Any && i.path.is_some() && reqs.has_collections_key {
        eprintln!(
            "[WARNING]: The requirements file '{}' contains collections which will be ignored. \
             To install these collections run 'keel galaxy collection install -r' or to install \
             both at the same time run 'keel galaxy install -r' without a custom install path.",
            i.requirements
                .as_deref()
                .map(|p| std::path::absolute(p).unwrap_or(p.to_path_buf()))
                .unwrap_or_default()
                .display()
        );
        do_collections = false;
    }
    let roles_to_do = do_roles && !reqs.roles.is_empty();
    let collections_to_do = do_collections && !reqs.collections.is_empty();
    if !roles_to_do && !collections_to_do {
        println!("Skipping install, no requirements found");
        return Ok(0);
    }
    let mut report = galaxy_line;
    if roles_to_do {
        let roles_path = match &i.path {
            Some(p) => std::path::absolute(p).unwrap_or(p.clone()),
            None => cfg
                .paths(Key::RolesPath)
                .first()
                .map(|p| home(p))
                .context("no roles_path is configured")?,
        };
        match galaxy::install_roles(&reqs.roles, &roles_path, &opts, &mut report) {
            Ok(()) => {}
            Err(GalaxyError::RolesFailed(_)) => {
                eprintln!(
                    "ERROR! - you can use --ignore-errors to skip failed roles and finish \
                     processing the list."
                );
                return Ok(1);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if collections_to_do {
        let install_root = match &i.path {
            Some(p) => {
                let p = std::path::absolute(p).unwrap_or(p.clone());
                let outer = if p.ends_with("ansible_collections") {
                    p.parent().map(|x| x.to_path_buf()).unwrap_or(p.clone())
                } else {
                    p.clone()
                };
                if !configured_collections.contains(&outer) {
                    let list: Vec<String> = configured_collections
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                    eprintln!(
                        "[WARNING]: The specified collections path '{}' is not part of the \
                         configured Ansible collections paths '{}'. The installed collection \
                         will not be picked up in an Ansible run, unless within a \
                         playbook-adjacent collections directory.",
                        p.display(),
                        list.join(":")
                    );
                }
                outer
            }
            None => configured_collections
                .first()
                .cloned()
                .context("no collections_path is configured")?,
        };
        galaxy::install_collections(
            &reqs.collections,
            &install_root,
            &configured_collections,
            &opts,
            &mut report,
        )?;
    }
    Ok(0)
}

/// `-i`, or else the configured inventory (its default only when it exists,
/// as ansible-core then runs with an empty inventory).
fn inventory_sources(flags: &[String]) -> Vec<String> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    let cfg = config();
    cfg.paths(Key::Inventory)
        .iter()
        .filter(|p| cfg.is_set(Key::Inventory) || p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

fn split_list(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `-e` in its three forms.
fn parse_extra_vars(items: &[String]) -> Result<VarMap> {
    let mut out = VarMap::new();
    for item in items {
        let item = item.trim();
        if let Some(path) = item.strip_prefix('@') {
            let node = keel::yaml::load_one(std::path::Path::new(path))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            merge_map(&mut out, &node.to_value(), path)?;
        } else if item.starts_with('{') || item.starts_with('[') {
            let docs = keel::yaml::load_str("<extra vars>", item, &Default::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for d in docs {
                merge_map(&mut out, &d.to_value(), "-e")?;
            }
        } else {
            for word in shell_words::split(item).context("parsing -e")? {
                let Some((k, v)) = word.split_once('=') else {
                    bail!("invalid extra vars '{word}': expected key=value, JSON, or @file");
                };
                out.insert(k.to_string(), minijinja::Value::from(v));
            }
        }
    }
    Ok(out)
}

fn merge_map(out: &mut VarMap, v: &minijinja::Value, what: &str) -> Result<()> {
    if v.kind() != minijinja::value::ValueKind::Map {
        bail!("extra vars from {what} must be a mapping");
    }
    for k in v.try_iter().map_err(|e| anyhow::anyhow!("{e}"))? {
        out.insert(k.to_string(), v.get_item(&k).unwrap_or_default());
    }
    Ok(())
}

fn load_inventory(sources: &[String]) -> Result<Inventory> {
    Inventory::load(sources).map_err(|e| anyhow::anyhow!("{e}"))
}

/// ansible-playbook's check of the inventory before anything else, even
/// `--syntax-check` and the listings: a warning when it holds no host, and
/// an error when `--limit` leaves none of its hosts.
fn check_host_list(inv: &Inventory, limit: Option<&str>, cfg: &Config) -> Result<()> {
    use keel::inventory::{EMPTY_HOST_LIST, NO_HOSTS_TO_TARGET};
    let check = inv
        .check_host_list(limit)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if check.empty && cfg.bool(Key::LocalhostWarning) {
        eprintln!("[WARNING]: {EMPTY_HOST_LIST}");
    }
    if check.no_hosts {
        // A run that goes on prints the limit's warnings itself.
        for w in &check.warnings {
            eprintln!("[WARNING]: {w}");
        }
        bail!("{NO_HOSTS_TO_TARGET}");
    }
    Ok(())
}

fn play(a: PlayArgs) -> Result<i32> {
    let cfg = config();
    a.vault.install()?;
    let extra_vars = parse_extra_vars(&a.extra_vars)?;
    let mut roles_path: Vec<PathBuf> = a
        .roles_path
        .as_deref()
        .unwrap_or("")
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    roles_path.extend(cfg.paths(Key::RolesPath).iter().cloned());
    let inventory_sources = inventory_sources(&a.inventory);
    // ansible-playbook asks `vars_prompt` questions only when its
    // standard input is a terminal.
    let prompter = std::io::stdin()
        .is_terminal()
        .then(|| keel::playbook::Prompter(Arc::new(ask_var_prompt)));
    let collections_path: Vec<PathBuf> = cfg
        .paths(Key::CollectionsPath)
        .iter()
        .map(|p| match p.strip_prefix("~") {
            Ok(rest) => dirs::home_dir().map(|h| h.join(rest)).unwrap_or(p.clone()),
            Err(_) => p.clone(),
        })
        .collect();
    let ropts = ResolveOptions {
        roles_path: roles_path.clone(),
        collections_path: collections_path.clone(),
        extra_vars: extra_vars.clone(),
        prompter,
    };
    // ansible-playbook works with absolute playbook paths: `playbook_dir`
    // and every relative lookup hang off the playbook's directory, not the
    // working directory.
    let playbooks: Vec<PathBuf> = a
        .playbooks
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut books = Vec::new();
    for p in &playbooks {
        // Nothing is contacted when a playbook fails to resolve.
        books.push(load_playbook(p, &ropts).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    // The ad-hoc play's base is the working directory, as ansible's is:
    // `include_vars`, `copy src=` and `playbook_dir` look there, not in the
    // temporary directory the play was written to.
    if a.adhoc {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        for b in &mut books {
            b.rebase_on_working_dir(&cwd);
        }
    }
    for b in &books {
        for w in &b.warnings {
            eprintln!("[WARNING]: {w}");
        }
    }
    let tags = TagSelection {
        only: split_list(&a.tags),
        skip: split_list(&a.skip_tags),
    };
    let mut inv = load_inventory(&inventory_sources)?;
    for w in &inv.warnings {
        eprintln!("[WARNING]: {w}");
    }
    if !a.adhoc {
        check_host_list(&inv, a.limit.as_deref(), cfg)?;
    }
    if a.syntax_check {
        for p in &a.playbooks {
            println!("\nplaybook: {}", p.display());
        }
        return Ok(0);
    }
    if let Some(dir) = playbooks.first().and_then(|p| p.parent()) {
        inv.add_vars_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if a.list_hosts || a.list_tasks || a.list_tags {
        for b in &books {
            print!(
                "{}",
                keel::playbook::listing(
                    b,
                    &inv,
                    a.limit.as_deref(),
                    &tags,
                    a.list_hosts,
                    a.list_tasks,
                    a.list_tags
                )
            );
        }
        return Ok(0);
    }
    let run = run_settings(&a, &inv)?;
    let mut fan = Fanout::new();
    let human_to_stdout = !(a.events.is_some() && a.events_to == "-");
    if human_to_stdout {
        match &a.adhoc_module {
            Some((module, task)) => fan.add(Box::new(MinimalSink::new(
                Box::new(std::io::stdout()),
                module,
                task,
            ))),
            None => fan.add(Box::new(HumanSink::new(
                Box::new(std::io::stdout()),
                a.verbose,
            ))),
        }
    }
    if a.events.is_some() {
        let w: Box<dyn std::io::Write + Send> = if a.events_to == "-" {
            Box::new(std::io::stdout())
        } else if let Some(fd) = a.events_to.strip_prefix("fd:") {
            let fd: i32 = fd.parse().context("--events-to fd:N")?;
            use std::os::fd::FromRawFd;
            // SAFETY: the caller handed us this descriptor for events.
            Box::new(unsafe { std::fs::File::from_raw_fd(fd) })
        } else {
            Box::new(
                std::fs::File::create(&a.events_to)
                    .with_context(|| format!("creating {}", a.events_to))?,
            )
        };
        fan.add(Box::new(JsonSink::new(w)));
    }
    let sink: Arc<dyn Sink> = Arc::new(VaultMask(fan));
    let opts = RunOptions {
        forks: a.forks.or(run.forks).unwrap_or(50),
        check: a.check,
        diff: a.diff,
        tags,
        limit: a.limit.clone(),
        extra_vars,
        start_at_task: a.start_at_task.clone(),
        force_handlers: a.force_handlers || cfg.bool(Key::ForceHandlers),
        allow_broken_conditionals: cfg.bool(Key::AllowBrokenConditionals),
        debug: cfg.bool(Key::Debug),
        verbosity: a.verbose,
        become_password: run.become_password,
        roles_path,
        collections_path,
        inventory_sources,
        connection_vars: run.connection_vars,
        become_defaults: run.become_defaults,
        connect: run.connect,
        gathering: run.gathering,
        fact_cache: run.fact_cache,
        poll_interval: cfg.int(Key::PollInterval).unwrap_or(15).max(0) as u64,
        // Only library callers (the panel) stop a run; Ctrl-C ends the CLI.
        stop: Default::default(),
        step: a.step.then(step_prompt),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut code = 0;
    for b in &books {
        let summary = rt.block_on(run_playbook(b, inv.clone(), opts.clone(), sink.clone()));
        code = summary.exit_code();
        if code != 0 {
            break;
        }
    }
    Ok(code)
}

/// `--step`'s question, as ansible-playbook asks it: `y` runs the task,
/// `c` runs it and every later one without asking, anything else skips it.
fn step_prompt() -> keel::executor::StepPrompt {
    use std::io::{BufRead, Write};
    let go_on = std::sync::atomic::AtomicBool::new(false);
    keel::executor::StepPrompt(Arc::new(move |name: &str| {
        if go_on.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let question = format!("Perform task: TASK: {name} (N)o/(y)es/(c)ontinue: ");
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{question}");
        let _ = out.flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        // ansible-playbook then prints the question again as a banner.
        let width = 80usize.saturating_sub(question.chars().count());
        let _ = writeln!(out, "{question}{}", "*".repeat(width.max(3)));
        let _ = out.flush();
        match line.trim().to_lowercase().as_str() {
            "y" | "yes" => true,
            "c" | "continue" => {
                go_on.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }))
}

/// What `keel play` takes from its connection and privilege flags and the
/// configuration, flags first.
struct RunSettings {
    forks: Option<usize>,
    become_password: Option<String>,
    connection_vars: VarMap,
    become_defaults: keel::playbook::plan::BecomeSettings,
    connect: keel::transport::ConnectDefaults,
    gathering: Gathering,
    fact_cache: FactCache,
}

fn run_settings(a: &PlayArgs, inv: &Inventory) -> Result<RunSettings> {
    use minijinja::Value;
    let cfg = config();
    let forks = match cfg.int(Key::Forks) {
        // ansible-core's default is 5; Keel's own default stays unless
        // the configuration names a number.
        Some(n) if cfg.is_set(Key::Forks) => {
            if n < 1 {
                bail!("forks must be at least 1, got {n} (from the configuration)");
            }
            Some(n as usize)
        }
        _ => None,
    };
    // Shown to tasks as ansible-core's play context shows them: only what
    // was set, below every inventory and play variable.
    let mut vars = VarMap::new();
    if let Some(u) = a
        .user
        .clone()
        .or(cfg.str(Key::RemoteUser).map(String::from))
    {
        vars.insert("ansible_user".into(), Value::from(u));
    }
    if let Some(p) = cfg.int(Key::RemotePort) {
        vars.insert("ansible_port".into(), Value::from(p));
    }
    if let Some(k) = a
        .private_key
        .clone()
        .or(cfg.path(Key::PrivateKeyFile).map(PathBuf::from))
    {
        vars.insert(
            "ansible_private_key_file".into(),
            Value::from(k.display().to_string()),
        );
    }
    let timeout = a.timeout.map(|t| t as i64).or(cfg.int(Key::SshTimeout));
    if let Some(t) = timeout {
        if t <= 0 {
            bail!("the timeout must be a positive number of seconds, got {t}");
        }
        vars.insert("ansible_timeout".into(), Value::from(t));
    }
    let connection = a.connection.clone().or(cfg
        .is_set(Key::Transport)
        .then(|| cfg.str(Key::Transport).map(String::from))
        .flatten());
    if let Some(c) = connection {
        if !matches!(c.as_str(), "ssh" | "paramiko" | "smart" | "local") {
            bail!("unsupported connection type '{c}': Keel runs `ssh` (also for paramiko/smart) and `local`");
        }
        vars.insert("ansible_connection".into(), Value::from(c));
    }
    let become_method = a
        .become_method
        .clone()
        .or(cfg.str(Key::BecomeMethod).map(String::from));
    if let Some(m) = &become_method {
        if !matches!(m.as_str(), "sudo" | "su") {
            bail!("become method '{m}' is not supported: Keel runs `sudo` and `su`");
        }
    }
    let become_defaults = keel::playbook::plan::BecomeSettings {
        become_: Some(a.become_ || cfg.bool(Key::Become)),
        become_user: a
            .become_user
            .clone()
            .or(cfg.str(Key::BecomeUser).map(String::from)),
        become_method,
        become_flags: cfg
            .str(Key::BecomeFlags)
            .filter(|f| !f.is_empty())
            .map(String::from),
    };
    // Passwords: the SSH one first, as ansible-playbook asks.
    let password = if let Some(f) = &a.connection_password_file {
        Some(read_password_file(f)?)
    } else if a.ask_pass || cfg.bool(Key::AskPass) {
        Some(ask_password("SSH password: ")?)
    } else {
        None
    };
    let become_password = if let Some(f) = &a.become_password_file {
        Some(read_password_file(f)?)
    } else if a.ask_become_pass || cfg.bool(Key::BecomeAskPass) {
        let prompt = if password.is_some() {
            "BECOME password[defaults to SSH password]: "
        } else {
            "BECOME password: "
        };
        let p = ask_password(prompt)?;
        if p.is_empty() {
            password.clone()
        } else {
            Some(p)
        }
    } else {
        None
    };
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(String::from);
    let connect = keel::transport::ConnectDefaults {
        ssh_args: non_empty(cfg.str(Key::SshArgs)),
        ssh_config: std::env::var_os("KEEL_SSH_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        ssh_common_args: a
            .ssh_common_args
            .clone()
            .or(non_empty(cfg.str(Key::SshCommonArgs))),
        ssh_extra_args: a
            .ssh_extra_args
            .clone()
            .or(non_empty(cfg.str(Key::SshExtraArgs))),
        host_key_checking: cfg.bool(Key::SshHostKeyChecking),
        password,
        retries: cfg
            .int(Key::SshRetries)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0),
    };
    let gathering = cfg
        .str(Key::Gathering)
        .map(|g| {
            Gathering::parse(g).with_context(|| {
                format!("gathering must be implicit, explicit or smart, got '{g}'")
            })
        })
        .transpose()?
        .unwrap_or_default();
    let fact_cache = match cfg.str(Key::FactCaching).unwrap_or("memory") {
        "memory" => FactCache::Memory,
        "jsonfile" | "ansible.builtin.jsonfile" => {
            let Some(dir) = cfg.str(Key::FactCachingConnection) else {
                bail!("fact_caching = jsonfile needs fact_caching_connection (a directory)");
            };
            FactCache::JsonFile {
                dir: expand_home(dir),
                timeout: std::time::Duration::from_secs(
                    cfg.int(Key::FactCachingTimeout).unwrap_or(86400).max(0) as u64,
                ),
                prefix: if cfg.is_set(Key::FactCachingPrefix) {
                    cfg.str(Key::FactCachingPrefix)
                        .unwrap_or_default()
                        .to_string()
                } else {
                    String::new()
                },
            }
        }
        other => bail!("fact cache '{other}' is not supported: Keel has `memory` and `jsonfile`"),
    };
    if a.flush_cache {
        for h in inv.hosts.keys() {
            fact_cache.forget(h)?;
        }
    }
    Ok(RunSettings {
        forks,
        become_password,
        connection_vars: vars,
        become_defaults,
        connect,
        gathering,
        fact_cache,
    })
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => dirs::home_dir()
            .map(|h| h.join(rest))
            .unwrap_or_else(|| p.into()),
        None => PathBuf::from(p),
    }
}

/// A password file's first line (as ansible-core reads `--*-password-file`).
fn read_password_file(p: &std::path::Path) -> Result<String> {
    let text = if p == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
    };
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Asks one `vars_prompt` question on the terminal, as ansible-core does:
/// without echo when `private`, twice when `confirm` (until both match).
fn ask_var_prompt(q: &keel::playbook::VarPrompt) -> std::io::Result<String> {
    let ask = |msg: &str| {
        if q.private {
            prompt_secret(msg)
        } else {
            prompt_visible(msg)
        }
    };
    loop {
        let first = ask(&q.message)?;
        if !q.confirm {
            return Ok(first);
        }
        let second = ask(&format!("confirm {}", q.message))?;
        if first == second {
            return Ok(first);
        }
        eprintln!("***** VALUES ENTERED DO NOT MATCH ****");
    }
}

/// Reads one line from the terminal with echo on.
fn prompt_visible(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut err = std::io::stderr();
    write!(err, "{prompt}")?;
    err.flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "EOF",
        ));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn ask_password(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut s = String::new();
    if std::io::stdin().is_terminal() {
        // Turn echo off while reading.
        let _ = std::process::Command::new("stty").arg("-echo").status();
        std::io::stdin().read_line(&mut s)?;
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
    } else {
        std::io::stdin().read_to_string(&mut s)?;
    }
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn inventory(a: InventoryArgs) -> Result<i32> {
    use keel::inventory::cli;
    a.vault.install()?;
    let inv = load_inventory(&inventory_sources(&a.inventory))?;
    // On stderr, as ansible-inventory warns, so `--list` output stays JSON.
    for w in &inv.warnings {
        eprintln!("[WARNING]: {w}");
    }
    if let Some(h) = a.host {
        let j = cli::try_host_json(&inv, &h).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{}", cli::to_ansible_json(&j));
    } else if let Some(g) = a.graph {
        print!(
            "{}",
            cli::try_graph(&inv, Some(g.as_str()), a.vars).map_err(|e| anyhow::anyhow!("{e}"))?
        );
    } else {
        let doc = cli::list_json(&inv);
        println!("{}", cli::to_ansible_json(&doc));
        // The process ends next: freeing a 10,000-host document and its
        // inventory piece by piece cost a tenth of the command's time.
        std::mem::forget(doc);
        std::mem::forget(inv);
        return Ok(0);
    }
    Ok(0)
}

/// Reads a secret from the terminal without echo; from stdin when there is no
/// terminal (one line).
fn prompt_secret(prompt: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    if let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    {
        let mut w = &tty;
        write!(w, "{prompt}")?;
        w.flush()?;
        let _ = std::process::Command::new("stty")
            .arg("-echo")
            .stdin(tty.try_clone()?)
            .status();
        let mut line = String::new();
        let read = std::io::BufReader::new(&tty).read_line(&mut line);
        let _ = std::process::Command::new("stty")
            .arg("echo")
            .stdin(tty.try_clone()?)
            .status();
        writeln!(w)?;
        if read? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF",
            ));
        }
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    eprint!("{prompt}");
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "EOF",
        ));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The secret `create`, `encrypt` and `encrypt_string` seal with: the
/// `--encrypt-vault-id` one, or the only one (several need the flag).
fn encrypting_ring(vault: &VaultFlags, encrypt_id: Option<&str>) -> Result<keel::vault::Keyring> {
    let ring = vault.keyring(true, true)?;
    // `vault_encrypt_identity`, when --encrypt-vault-id is not given.
    let configured = config()
        .str(Key::VaultEncryptIdentity)
        .filter(|s| !s.is_empty())
        .map(String::from);
    let encrypt_id = encrypt_id.or(configured.as_deref());
    if ring.is_empty() {
        return Err(
            OptionsError("A vault password is required to use Ansible's Vault".into()).into(),
        );
    }
    if ring.secrets.len() > 1 && encrypt_id.is_none() {
        let ids: Vec<&str> = ring.secrets.iter().map(|s| s.id.as_str()).collect();
        return Err(OptionsError(format!(
            "The vault-ids {} are available to encrypt. Specify the vault-id to encrypt with --encrypt-vault-id",
            ids.join(",")
        ))
        .into());
    }
    let secret = ring.encrypting_secret(encrypt_id)?.clone();
    Ok(ring.with_only(secret))
}

fn opening_ring(vault: &VaultFlags) -> Result<keel::vault::Keyring> {
    let ring = vault.keyring(true, false)?;
    if ring.is_empty() {
        return Err(
            OptionsError("A vault password is required to use Ansible's Vault".into()).into(),
        );
    }
    Ok(ring)
}

fn editor() -> String {
    std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

/// A command-line mistake: ansible-vault exits 5 for these, 1 for the rest.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct OptionsError(String);

fn vault(a: VaultArgs) -> Result<i32> {
    match vault_run(a) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("[ERROR]: {e:#}");
            Ok(if e.is::<OptionsError>() { 5 } else { 1 })
        }
    }
}

fn vault_run(a: VaultArgs) -> Result<i32> {
    use keel::vault::files;
    // Files written here hold secrets or ciphertext: private by default, as
    // ansible-vault sets its umask.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let tty_out = std::io::stdout().is_terminal();
    match a.action {
        VaultAction::Create {
            vault,
            encrypt_vault_id,
            skip_tty_check,
            file,
        } => {
            if !tty_out && !skip_tty_check {
                return Err(OptionsError("not a tty, editor cannot be opened".into()).into());
            }
            let ring = encrypting_ring(&vault, encrypt_vault_id.as_deref())?;
            files::create_file(&file, &ring, None, &editor())?;
        }
        VaultAction::Encrypt {
            vault,
            encrypt_vault_id,
            output,
            files: names,
        } => {
            let names = input_files(names, output.is_some())?;
            let ring = encrypting_ring(&vault, encrypt_vault_id.as_deref())?;
            for f in &names {
                files::encrypt_file(f, output.as_deref(), &ring, None)?;
            }
            if tty_out {
                eprintln!("Encryption successful");
            }
        }
        VaultAction::Decrypt {
            vault,
            output,
            files: names,
        } => {
            let names = input_files(names, output.is_some())?;
            let ring = opening_ring(&vault)?;
            for f in &names {
                files::decrypt_file(f, output.as_deref(), &ring)?;
            }
            if tty_out {
                eprintln!("Decryption successful");
            }
        }
        VaultAction::View {
            vault,
            files: names,
        } => {
            let ring = opening_ring(&vault)?;
            for f in &names {
                let plain = files::plaintext(f, &ring)?;
                files::write_data("-", &plain)?;
            }
        }
        VaultAction::Edit {
            vault,
            files: names,
        } => {
            let ring = opening_ring(&vault)?;
            for f in &names {
                files::edit_file(f, &ring, &editor())?;
            }
        }
        VaultAction::Rekey {
            vault,
            encrypt_vault_id,
            new_vault_password_file,
            new_vault_id,
            files: names,
        } => {
            let ring = opening_ring(&vault)?;
            let new_flags = VaultFlags {
                vault_password_file: new_vault_password_file.into_iter().collect(),
                ask_vault_pass: false,
                vault_id: new_vault_id.into_iter().collect(),
            };
            let new_ring = new_flags.keyring(true, true)?;
            let new = new_ring
                .encrypting_secret(encrypt_vault_id.as_deref())
                .context("A new vault password is required to use Ansible's Vault rekey")?;
            for f in &names {
                files::rekey_file(f, &ring, new)?;
            }
            eprintln!("Rekey successful");
        }
        VaultAction::EncryptString {
            vault,
            encrypt_vault_id,
            output,
            name,
            stdin_name,
            prompt,
            show_input,
            strings,
        } => {
            let read_stdin = strings.iter().any(|s| s == "-")
                || stdin_name.is_some()
                || (strings.is_empty() && !prompt);
            if prompt && read_stdin {
                return Err(OptionsError(
                    "The --prompt option is not supported if also reading input from stdin".into(),
                )
                .into());
            }
            let ring = encrypting_ring(&vault, encrypt_vault_id.as_deref())?;
            // (plaintext, where it came from, its name)
            let mut items: Vec<(zeroize::Zeroizing<String>, &str, Option<String>)> = Vec::new();
            if prompt {
                let var = prompt_line("Variable name (enter for no name): ")?;
                let text = if show_input {
                    prompt_line("String to encrypt:")?
                } else {
                    prompt_secret("String to encrypt (hidden): ")?
                };
                if text.is_empty() {
                    return Err(OptionsError(
                        "The plaintext provided from the prompt was empty, not encrypting".into(),
                    )
                    .into());
                }
                items.push((
                    text.into(),
                    "the interactive prompt",
                    Some(var).filter(|v| !v.is_empty()),
                ));
            }
            if read_stdin {
                if tty_out {
                    eprintln!("Reading plaintext input from stdin. (ctrl-d to end input, twice if your content does not already have a newline)");
                }
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                if text.is_empty() {
                    return Err(OptionsError("stdin was empty, not encrypting".into()).into());
                }
                items.push((text.into(), "stdin", stdin_name.clone()));
            }
            let args: Vec<&String> = strings.iter().filter(|s| *s != "-").collect();
            if !name.is_empty() && args.len() > name.len() {
                eprintln!("The number of --name options do not match the number of args.");
                eprintln!(
                    "The last named variable will be \"{}\". The rest will not have names.",
                    name[name.len() - 1]
                );
            }
            for (i, text) in args.iter().enumerate() {
                if text.is_empty() {
                    return Err(OptionsError("The plaintext provided from the command line args was empty, not encrypting".into()).into());
                }
                items.push((
                    text.to_string().into(),
                    "the command line args",
                    name.get(i).cloned(),
                ));
            }
            let several = items.len() > 1;
            let mut outs = Vec::new();
            for (i, (text, from, var)) in items.iter().enumerate() {
                let sealed = ring.encrypt(text.as_bytes(), None)?;
                if several {
                    match var {
                        Some(v) => eprintln!(
                            "# The encrypted version of variable (\"{v}\", the string #{} from {from}).",
                            i + 1
                        ),
                        None => eprintln!(
                            "# The encrypted version of the string #{} from {from}.)",
                            i + 1
                        ),
                    }
                }
                outs.push(files::format_yaml(&sealed, var.as_deref()));
            }
            outs.push(String::new());
            files::write_data(output.as_deref().unwrap_or("-"), outs.join("\n").as_bytes())?;
            if tty_out {
                eprintln!("Encryption successful");
            }
        }
    }
    Ok(0)
}

fn prompt_line(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// The files `keel vault encrypt|decrypt` read: standard input (`-`) when
/// none is named, and only one when `--output` is given.
fn input_files(names: Vec<String>, has_output: bool) -> anyhow::Result<Vec<String>> {
    if has_output && names.len() > 1 {
        return Err(OptionsError(
            "At most one input file may be used with the --output option".into(),
        )
        .into());
    }
    Ok(if names.is_empty() {
        vec!["-".to_string()]
    } else {
        names
    })
}
