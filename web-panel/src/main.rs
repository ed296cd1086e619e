//! `keel-panel`: the panel's command line. It parses arguments and calls
//! the `keel_panel` library: `serve` (workers for now; HTTP comes later),
//! `worker` (workers only, for scale-out), `admin migrate`.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel_panel::queue::worker::{QueueConfig, Registry, Worker, WorkerConfig};
use keel_panel::store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "keel-panel", version, about = "Keel's VM self-service panel")]
struct Cli {
    /// sqlite:PATH (embedded, default) or postgres://… (several nodes).
    #[arg(
        long,
        env = "KEEL_DATABASE_URL",
        default_value = "sqlite://keel-panel.db",
        global = true
    )]
    database_url: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the panel (for now: its job workers).
    Serve(WorkerArgs),
    /// Run job workers only.
    Worker(WorkerArgs),
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
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Queues to serve, as NAME or NAME=LIMIT (cluster-wide concurrency limit).
    #[arg(long = "queue", default_values_t = ["default".to_string(), "hypervisor=8".to_string()])]
    queues: Vec<String>,
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

async fn run_workers(store: Store, args: WorkerArgs) -> anyhow::Result<()> {
    let config = WorkerConfig {
        concurrency: args.concurrency,
        queues: args
            .queues
            .iter()
            .map(|q| parse_queue(q))
            .collect::<anyhow::Result<_>>()?,
        ..WorkerConfig::default()
    };
    // Handlers are registered by the panel as its features land.
    let worker = Arc::new(Worker::new(store, Registry::new(), config));
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    let store = Store::connect(&cli.database_url)
        .await
        .context("opening the database")?;
    match cli.command {
        Cmd::Serve(args) => {
            println!("panel HTTP not built yet; running job workers");
            run_workers(store, args).await
        }
        Cmd::Worker(args) => run_workers(store, args).await,
        Cmd::Admin {
            command: AdminCmd::Migrate,
        } => {
            println!("database schema is up to date");
            Ok(())
        }
    }
}
