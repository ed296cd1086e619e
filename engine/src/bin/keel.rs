//! `keel`: the command line. It parses arguments and calls the library.
//!
//! `keel play` behaves like ansible-playbook; `keel inventory` like
//! ansible-inventory.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Parser, Subcommand};
use keel::executor::{run_playbook, RunOptions, TagSelection};
use keel::inventory::Inventory;
use keel::output::{Fanout, HumanSink, JsonSink, Sink};
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
    Play(PlayArgs),
    /// Show the inventory (like ansible-inventory).
    Inventory(InventoryArgs),
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
    /// Hosts to run at once.
    #[arg(short = 'f', long, default_value_t = 50)]
    forks: usize,
    #[arg(short = 'v', action = ArgAction::Count)]
    verbose: u8,
    #[arg(long)]
    start_at_task: Option<String>,
    #[arg(long)]
    force_handlers: bool,
    /// Ask for the become (sudo/su) password.
    #[arg(short = 'K', long = "ask-become-pass")]
    ask_become_pass: bool,
    /// Machine-readable events: `json`.
    #[arg(long, value_parser = ["json"])]
    events: Option<String>,
    /// Where events go: a path, `-` for stdout, or `fd:N`.
    #[arg(long, default_value = "-")]
    events_to: String,
    /// Extra role search paths (colon-separated).
    #[arg(long, env = "KEEL_ROLES_PATH")]
    roles_path: Option<String>,
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
}

fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Play(a) => play(a),
        Cmd::Inventory(a) => inventory(a),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("ERROR! {e:#}");
            ExitCode::from(1)
        }
    }
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

fn play(a: PlayArgs) -> Result<i32> {
    let extra_vars = parse_extra_vars(&a.extra_vars)?;
    let roles_path: Vec<PathBuf> = a
        .roles_path
        .as_deref()
        .unwrap_or("")
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let ropts = ResolveOptions {
        roles_path: roles_path.clone(),
        extra_vars: extra_vars.clone(),
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
    for b in &books {
        for w in &b.warnings {
            eprintln!("[WARNING]: {w}");
        }
    }
    let tags = TagSelection {
        only: split_list(&a.tags),
        skip: split_list(&a.skip_tags),
    };
    if a.syntax_check {
        for p in &a.playbooks {
            println!("\nplaybook: {}", p.display());
        }
        return Ok(0);
    }
    let mut inv = load_inventory(&a.inventory)?;
    for w in &inv.warnings {
        eprintln!("[WARNING]: {}", w.message);
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
    let become_password = if a.ask_become_pass {
        Some(ask_password("BECOME password: ")?)
    } else {
        None
    };
    let mut fan = Fanout::new();
    let human_to_stdout = !(a.events.is_some() && a.events_to == "-");
    if human_to_stdout {
        fan.add(Box::new(HumanSink::new(
            Box::new(std::io::stdout()),
            a.verbose,
        )));
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
    let sink: Arc<dyn Sink> = Arc::new(fan);
    let opts = RunOptions {
        forks: a.forks,
        check: a.check,
        diff: a.diff,
        tags,
        limit: a.limit.clone(),
        extra_vars,
        start_at_task: a.start_at_task.clone(),
        force_handlers: a.force_handlers,
        verbosity: a.verbose,
        become_password,
        roles_path,
        inventory_sources: a.inventory.clone(),
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
    let inv = load_inventory(&a.inventory)?;
    if let Some(h) = a.host {
        let j = cli::try_host_json(&inv, &h).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{}", cli::to_ansible_json(&j));
    } else if let Some(g) = a.graph {
        print!(
            "{}",
            cli::try_graph(&inv, Some(g.as_str()), a.vars).map_err(|e| anyhow::anyhow!("{e}"))?
        );
    } else {
        println!("{}", cli::to_ansible_json(&cli::list_json(&inv)));
    }
    Ok(0)
}
