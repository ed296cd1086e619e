//! `keel-panel`: the panel's command line. It parses arguments and calls
//! the `keel_panel` library: `serve` (HTTP server plus job workers),
//! `worker` (workers only, for scale-out), `demo` (seeded data + libvirt),
//! `admin migrate`, `admin backup FILE`, `admin restore FILE`,
//! `admin create-user`, `admin reset-password`, `admin import-pool`,
//! `admin template run NAME`, `admin schedule list`.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_panel::config::Config;
use keel_panel::queue::cron::{Schedule, Scheduler};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::queue::JobSpec;
use keel_panel::store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "keel-panel", version, about = "Keel's VM self-service panel")]
struct Cli {
    /// sqlite:PATH (embedded, default) or postgres://… (several nodes).
    /// Without it, every command uses the configured one (`database_url` in
    /// the config file or `KEEL_DATABASE_URL`; SQLite in the data dir by
    /// default), so `serve` and `worker` given the same config share a queue.
    #[arg(long, env = "KEEL_DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// Panel configuration file (TOML); `KEEL_*` variables override it.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// Directory for the embedded database.
    #[arg(long, global = true)]
    data_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the panel: HTTP server and job workers.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run job workers only.
    Worker(WorkerArgs),
    /// The demo: seed an admin account (new random password), a site, a
    /// server type and an address pool, then serve with the libvirt driver
    /// so "Create server" boots a real VM on this machine.
    Demo {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The base image VMs boot (built by images/build-debian).
        #[arg(long, default_value = "debian-bookworm")]
        image: String,
    },
    /// Administration.
    Admin {
        #[command(subcommand)]
        command: AdminCmd,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create or upgrade the database schema.
    Migrate,
    /// Write a consistent backup of the running panel to FILE (a new file,
    /// 0600): the database (SQLite `VACUUM INTO`, or `pg_dump`) and the data
    /// directory's secrets (automation.key, ssh/, acme/, known_hosts.d/).
    Backup { file: std::path::PathBuf },
    /// Restore a backup into an empty data directory and an empty database
    /// (the ones configured); refuses anything else.
    Restore { file: std::path::PathBuf },
    /// Create a local user; the password is read from stdin or a file.
    CreateUser {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
    /// Set a user's password (from stdin or a file).
    ResetPassword {
        name: String,
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
    /// Job templates (playbook runs).
    Template {
        #[command(subcommand)]
        command: TemplateCmd,
    },
    /// Schedules of job templates.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCmd,
    },
    /// Load an address pool from a YAML or CSV file.
    ImportPool {
        file: std::path::PathBuf,
        /// Pool name (CSV files).
        #[arg(long)]
        pool: Option<String>,
        /// Pool type: public, private or v6only (CSV files).
        #[arg(long = "type")]
        pool_type: Option<String>,
    },
    /// List the hypervisor hosts, or set one's state (active, draining,
    /// down) without a restart: `admin host hv2 draining`.
    Host {
        /// The host whose state to set; none lists every host.
        name: Option<String>,
        /// The new state.
        state: Option<String>,
    },
}

#[derive(Subcommand)]
enum TemplateCmd {
    /// Launch a run of the template NAME (as the system); prints the run's
    /// id. Workers (`serve` or `worker`) carry it out.
    Run {
        name: String,
        /// A survey answer, VARIABLE=VALUE (repeatable).
        #[arg(long = "answer", value_name = "VARIABLE=VALUE")]
        answers: Vec<String>,
        /// Wait for the run to finish; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum ScheduleCmd {
    /// Every schedule with its template and next fire time (UTC).
    List,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Queues to serve, as NAME or NAME=LIMIT (cluster-wide concurrency limit).
    #[arg(long = "queue", default_values_t = ["default".to_string(), "hypervisor=8".to_string()])]
    queues: Vec<String>,
    /// Seconds running jobs get to finish after SIGTERM before their leases
    /// are given back to other workers.
    #[arg(long, default_value_t = 20)]
    shutdown_grace: u64,
}

fn parse_queue(s: &str) -> anyhow::Result<QueueConfig> {
    Ok(match s.split_once('=') {
        Some((name, limit)) => QueueConfig::new(name).limit(
            limit
                .parse()
                .with_context(|| format!("queue limit in {s:?}"))?,
        ),
        None => QueueConfig::new(s),
    })
}

/// The panel's job handlers: the provisioning flow (which, without a
/// hypervisor driver, fails new servers with a reason and still deletes),
/// the daily LDAP lookup-group refresh when LDAP is configured, and with a
/// driver the reconciliation job. Returns the cron schedules
/// those handlers need.
fn panel_handlers(
    registry: &mut Registry,
    db: &keel_panel::db::Db,
    config: &Config,
) -> anyhow::Result<Vec<Schedule>> {
    let mut schedules = Vec::new();
    let hosts = keel_panel::provision::HostDrivers::from_config(config)?;
    let p = Arc::new(
        keel_panel::provision::Provisioner::with_hosts(db.clone(), hosts.clone(), config)
            .context("setting up the provisioning flow")?,
    );
    keel_panel::provision::register(registry, p.clone());
    let automation = keel_panel::automation::Automation::new(p)
        .context("setting up playbook runs (the secret key file)")?;
    keel_panel::automation::register(registry, Arc::new(automation));
    schedules.extend(keel_panel::services::lookup::refresh_schedule(&config.ldap));
    schedules.extend(keel_panel::services::certificates::renewal_schedule(
        &config.acme,
    ));
    if !hosts.is_empty() {
        // Figures are read through the panel's key, which exists with a
        // driver only.
        schedules.extend(keel_panel::services::analytics::collect_schedule(
            &config.analytics,
        ));
    }
    if !hosts.is_empty() {
        registry.register(
            "reconcile",
            keel_panel::reconcile::ReconcileHandler {
                db: db.clone(),
                hosts,
                prefix: config.hypervisor.vm_prefix.clone(),
            },
        );
        let every = config.hypervisor.reconcile_every_secs;
        if every > 0 {
            let job = JobSpec::new("reconcile", serde_json::json!({}))
                .queue("hypervisor")
                .unique_key("reconcile");
            schedules.push(Schedule::interval(
                "reconcile",
                std::time::Duration::from_secs(every),
                job,
            ));
        }
    }
    Ok(schedules)
}

async fn run_workers(
    store: Store,
    url: &str,
    panel: &Config,
    args: WorkerArgs,
) -> anyhow::Result<()> {
    let config = WorkerConfig {
        concurrency: args.concurrency,
        queues: args
            .queues
            .iter()
            .map(|q| parse_queue(q))
            .collect::<anyhow::Result<_>>()?,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
        ..WorkerConfig::default()
    };
    let mut registry = Registry::with_builtins();
    let db = keel_panel::db::Db::from_store(store.clone(), url).await?;
    sync_hosts(&db, panel).await?;
    let schedules = panel_handlers(&mut registry, &db, panel)?;
    let scheduler = Scheduler::new(store.clone(), schedules)
        .with_source(Arc::new(keel_panel::automation::schedules::DbSchedules(
            db.clone(),
        )))
        .with_source(Arc::new(
            keel_panel::services::snapshots::ScheduledSnapshots(db.clone()),
        ));
    let worker = Worker::new(store.clone(), registry, config).with_scheduler(scheduler);
    let worker = Arc::new(worker);
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        signal.cancel();
    });
    worker.run(shutdown).await?;
    Ok(())
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &cli.database_url {
        config.database_url = url.clone();
    }
    Ok(config)
}

/// The hypervisor hosts of the configuration into the database
/// (`services::hosts::sync`), before anything places a server.
async fn sync_hosts(db: &keel_panel::db::Db, config: &Config) -> anyhow::Result<()> {
    let added = keel_panel::services::hosts::sync(db, &config.hypervisor)
        .await
        .context("recording the hypervisor hosts")?;
    for name in added {
        tracing::info!(host = %name, "hypervisor host added");
    }
    Ok(())
}

async fn open_panel_db(config: &Config) -> anyhow::Result<keel_panel::db::Db> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
    }
    keel_panel::db::Db::open(&url)
        .await
        .context("opening the database")
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            std::io::read_to_string(std::io::stdin()).context("reading the password from stdin")?
        }
    };
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// The built-in job templates, next to the playbook of new servers.
async fn seed_builtin(db: &keel_panel::db::Db, config: &Config) {
    let dir = config
        .hypervisor
        .playbook
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    match keel_panel::automation::builtin::seed(db, &dir).await {
        Ok(0) => {}
        Ok(n) => println!("seeded {n} built-in job templates (disabled)"),
        Err(e) => eprintln!("warning: could not seed the built-in job templates: {e}"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use keel_panel::http::AppState;
    use keel_panel::server;
    if config.chaos.enabled() {
        eprintln!(
            "warning: fault injection is on ([chaos] in the configuration): for the chaos soak only"
        );
    }
    let db = open_panel_db(&config).await?;
    seed_builtin(&db, &config).await;
    sync_hosts(&db, &config).await?;
    let listen = config.listen;
    let shutdown = CancellationToken::new();
    // The console page's serial lines go through the drivers too.
    let mut state = AppState::new(db.clone(), config.clone())?
        .with_drivers(keel_panel::provision::HostDrivers::from_config(&config)?);
    state.shutdown = shutdown.clone();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        signal.cancel();
        keel_panel::api::stop_live_streams();
    });
    let workers = if config.workers.concurrency > 0 {
        let mut registry = Registry::new();
        let schedules = panel_handlers(&mut registry, &db, &config)?;
        let wc = WorkerConfig {
            concurrency: config.workers.concurrency,
            queues: config
                .workers
                .queues
                .iter()
                .map(|q| parse_queue(q))
                .collect::<anyhow::Result<_>>()?,
            ..WorkerConfig::default()
        };
        let scheduler = Scheduler::new(db.store().clone(), schedules)
            .with_source(Arc::new(keel_panel::automation::schedules::DbSchedules(
                db.clone(),
            )))
            .with_source(Arc::new(
                keel_panel::services::snapshots::ScheduledSnapshots(db.clone()),
            ));
        let worker = Worker::new(db.store().clone(), registry, wc).with_scheduler(scheduler);
        let worker = Arc::new(worker);
        Some(tokio::spawn(worker.run(shutdown.clone())))
    } else {
        None
    };
    let callback = match config.hypervisor.callback_listen()? {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for VM callbacks on {addr}"))?;
            println!("keel-panel VM callbacks on http://{addr}");
            let app = keel_panel::api::callback_router(state.clone())
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        None => None,
    };
    if config.tls.enabled() {
        let tls = server::tls_config(&config.tls.cert_file, &config.tls.key_file)?;
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("listening on {listen}"))?;
        println!("keel-panel listening on https://{listen}");
        server::serve_tls(state, listener, tls, shutdown.clone()).await?;
    } else {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        println!("keel-panel listening on http://{listen}");
        server::serve(state, listener, shutdown.clone()).await?;
    }
    shutdown.cancel();
    if let Some(c) = callback {
        c.await??;
    }
    if let Some(w) = workers {
        w.await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let config = load_config(&cli)?;
    let system = keel_panel::domain::Principal::system();
    match cli.command {
        Cmd::Serve { listen } => {
            let mut config = config;
            if let Some(l) = listen {
                config.listen = l;
            }
            serve(config).await
        }
        Cmd::Demo { listen, image } => {
            let mut config = config;
            if let Some(l) = listen {
                config.listen = l;
            }
            if config.hypervisor.driver == "none" && config.hypervisor.hosts.is_empty() {
                config.hypervisor.driver = "libvirt".to_string();
            }
            let db = open_panel_db(&config).await?;
            let passwords = keel_panel::auth::Passwords::new(&config.auth)?;
            let creds = keel_panel::demo::seed(&db, &passwords, &image)
                .await
                .context("seeding the demo data")?;
            drop(db);
            println!("Keel demo: open http://{} and log in", config.listen);
            println!("  user:     {}", creds.user);
            println!("  password: {}", creds.password);
            println!(
                "then Servers → Create server (site {}, type {}); VMs boot under {} from {}",
                keel_panel::demo::DEMO_SITE,
                keel_panel::demo::DEMO_SERVER_TYPE,
                config.hypervisor.uri,
                config.hypervisor.image_dir.join(&image).display()
            );
            serve(config).await
        }
        Cmd::Worker(args) => {
            // The same database as `serve` with the same configuration: a
            // worker started beside it must claim from its queue.
            let url = config.database_url();
            if url.starts_with("sqlite:") {
                std::fs::create_dir_all(&config.data_dir)
                    .with_context(|| format!("creating {}", config.data_dir.display()))?;
            }
            let store = Store::connect(&url).await.context("opening the database")?;
            run_workers(store, &url, &config, args).await
        }
        Cmd::Admin {
            command: AdminCmd::Migrate,
        } => {
            open_panel_db(&config).await?;
            println!("database schema is up to date");
            Ok(())
        }
        Cmd::Admin {
            command: AdminCmd::Backup { file },
        } => {
            let m = keel_panel::backup::backup(&config, &file)
                .await
                .with_context(|| format!("backing up into {}", file.display()))?;
            println!(
                "backup written to {} ({:?} database, schema {}, {} entries):",
                file.display(),
                m.backend,
                m.schema_version,
                m.entries.len()
            );
            for e in &m.entries {
                println!("  {} ({} bytes)", e.path, e.bytes);
            }
            println!(
                "it holds the panel's secrets: keep it private (mode 0600) and encrypted at rest"
            );
            Ok(())
        }
        Cmd::Admin {
            command: AdminCmd::Restore { file },
        } => {
            let r = keel_panel::backup::restore(&config, &file)
                .await
                .with_context(|| format!("restoring {}", file.display()))?;
            println!(
                "restored {} ({:?} database, schema {}, {} entries) into {} and {}",
                file.display(),
                r.manifest.backend,
                r.manifest.schema_version,
                r.manifest.entries.len(),
                r.data_dir.display(),
                redact_url(&config.database_url())
            );
            Ok(())
        }
        Cmd::Admin {
            command:
                AdminCmd::CreateUser {
                    name,
                    admin,
                    email,
                    password_file,
                },
        } => {
            let password = read_password(password_file.as_deref())?;
            let db = open_panel_db(&config).await?;
            let pw = keel_panel::auth::Passwords::new(&config.auth)?;
            let user = keel_panel::auth::create_user(
                &db,
                &pw,
                &system,
                &name,
                email.as_deref(),
                Some(password),
                admin,
            )
            .await?;
            println!(
                "created user {} (id {}){}",
                user.name,
                user.id,
                if admin { " as platform admin" } else { "" }
            );
            Ok(())
        }
        Cmd::Admin {
            command:
                AdminCmd::ResetPassword {
                    name,
                    password_file,
                },
        } => {
            let password = read_password(password_file.as_deref())?;
            let db = open_panel_db(&config).await?;
            let pw = keel_panel::auth::Passwords::new(&config.auth)?;
            let user = keel_panel::auth::user_by_name(&db, &name)
                .await?
                .with_context(|| format!("no user named {name:?}"))?;
            keel_panel::auth::set_password(&db, &pw, &system, user.id, password).await?;
            println!("password of {name} reset; their sessions were ended");
            Ok(())
        }
        Cmd::Admin {
            command:
                AdminCmd::Template {
                    command:
                        TemplateCmd::Run {
                            name,
                            answers,
                            wait,
                        },
                },
        } => {
            let db = open_panel_db(&config).await?;
            let tpl = keel_panel::automation::templates::by_name(&db, &system, &name).await?;
            let mut launch = keel_panel::automation::templates::Launch::default();
            for a in answers {
                let (k, v) = a
                    .split_once('=')
                    .with_context(|| format!("--answer {a:?}: expected VARIABLE=VALUE"))?;
                launch
                    .answers
                    .insert(k.to_string(), serde_json::Value::from(v));
            }
            let run =
                keel_panel::automation::templates::launch(&db, &system, tpl.id, &launch).await?;
            println!(
                "run {} of template {} queued (job {})",
                run.id,
                tpl.name,
                run.job_id.unwrap_or(0)
            );
            if !wait {
                return Ok(());
            }
            loop {
                let r = keel_panel::automation::runs::get(&db, &system, run.id).await?;
                if r.status.is_finished() {
                    if let Some(recap) = &r.recap {
                        println!("{recap}");
                    }
                    println!("run {} {}", r.id, r.status);
                    if r.status != keel_panel::automation::model::RunStatus::Successful {
                        std::process::exit(1);
                    }
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        Cmd::Admin {
            command: AdminCmd::Schedule {
                command: ScheduleCmd::List,
            },
        } => {
            let db = open_panel_db(&config).await?;
            let list = keel_panel::automation::schedules::list(&db, &system).await?;
            let templates = keel_panel::automation::templates::list(&db, &system).await?;
            println!(
                "{:<5} {:<28} {:<28} {:<8} {:<22} NEXT (UTC)",
                "ID", "SCHEDULE", "TEMPLATE", "ENABLED", "WHEN"
            );
            for v in list {
                let s = &v.schedule;
                let tpl = templates.iter().find(|t| t.id == s.template_id);
                let when = match (&s.cron, s.every_secs) {
                    (Some(c), _) => format!("{c} {}", s.time_zone),
                    (None, Some(n)) => format!("every {n} s"),
                    _ => "-".into(),
                };
                let enabled = s.enabled && tpl.is_some_and(|t| t.enabled);
                let next = v
                    .next_fires
                    .first()
                    .and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms))
                    .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<5} {:<28} {:<28} {:<8} {:<22} {}",
                    s.id,
                    s.name,
                    tpl.map(|t| t.name.as_str()).unwrap_or("?"),
                    if enabled { "yes" } else { "no" },
                    when,
                    if enabled { next } else { "-".into() }
                );
            }
            Ok(())
        }
        Cmd::Admin {
            command:
                AdminCmd::ImportPool {
                    file,
                    pool,
                    pool_type,
                },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let csv_pool = pool.as_deref().zip(pool_type.as_deref());
            let parsed =
                keel_panel::alloc::parse_pool_file(&file.display().to_string(), &text, csv_pool)?;
            let db = open_panel_db(&config).await?;
            let n = keel_panel::alloc::import(
                &db,
                &system,
                &parsed,
                config.alloc.default_quarantine_secs,
            )
            .await?;
            println!("imported {n} addresses into pool {}", parsed.pool);
            Ok(())
        }
        Cmd::Admin {
            command: AdminCmd::Host { name, state },
        } => {
            let db = open_panel_db(&config).await?;
            sync_hosts(&db, &config).await?;
            use keel_panel::services::hosts;
            match (name, state) {
                (Some(name), Some(state)) => {
                    let h = hosts::set_state(&db, &system, &name, &state).await?;
                    println!("{} is {}", h.name, h.state);
                }
                (Some(_), None) => anyhow::bail!("give the new state: active, draining or down"),
                _ => {
                    for h in hosts::list(&db, &system).await? {
                        let lim = |l: Option<i64>| l.map_or("-".to_string(), |v| v.to_string());
                        println!(
                            "{}\t{}\t{}\t{} servers\tvCPUs {}/{}\tRAM {}/{} MB\tdisk {}/{} GB",
                            h.name,
                            h.driver,
                            h.state,
                            h.servers,
                            h.used_vcpus,
                            lim(h.limit_vcpus),
                            h.used_ram_mb,
                            lim(h.limit_ram_mb),
                            h.used_disk_gb,
                            lim(h.limit_disk_gb)
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
