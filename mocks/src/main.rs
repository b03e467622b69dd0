//! `civicflow-mocks`: starts the mock agencies and prints where they listen.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use civicflow_mocks::faults::Faults;
use civicflow_mocks::{MocksConfig, start};
use clap::Parser;

/// Mock government agencies (civil status, police, social security) for civicflow.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the first agency (civil status); police, social security, social assistance and
    /// the hospital take the next four.
    /// 0 picks free ports.
    #[arg(long, default_value_t = 7101)]
    port: u16,
    /// Seed of every random choice (generated citizens, IDs, faults), for reproducible runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No artificial delay (benchmarks): consent and card issuing answer at once.
    #[arg(long)]
    fast: bool,
    /// Citizens to generate beyond the directory's known ones.
    #[arg(long, default_value_t = 1000)]
    population: usize,
    /// JSON file with the faults every agency starts with (see docs/mocks.md).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Bearer token the police present when they call civicflow back.
    #[arg(long, env = "CIVICFLOW_MOCKS_CALLBACK_TOKEN")]
    callback_token: Option<String>,
    /// Where the hospital sends its CloudEvents, e.g. `http://127.0.0.1:7100/v1/events`.
    #[arg(long, env = "CIVICFLOW_MOCKS_EVENT_SINK", requires = "event_token")]
    event_sink: Option<String>,
    /// Bearer token the hospital sends its events with (role `source:urn:vn:moh:hospital:bach-mai`).
    #[arg(long, env = "CIVICFLOW_MOCKS_EVENT_TOKEN")]
    event_token: Option<String>,
    /// A fixed "today" (YYYY-MM-DD) instead of the date in Vietnam.
    #[arg(long)]
    today: Option<jiff::civil::Date>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let faults = match &args.faults {
        None => Faults::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid fault configuration", path.display()))?
        }
    };
    let mocks = start(MocksConfig {
        host: args.host,
        base_port: args.port,
        seed: args.seed,
        fast: args.fast,
        population: args.population,
        faults,
        callback_token: args.callback_token,
        today: args.today,
        event_sink: args
            .event_sink
            .zip(args.event_token)
            .map(|(url, token)| civicflow_mocks::hospital::Sink { url, token }),
    })
    .await
    .context("starting the mock agencies")?;
    for agency in &mocks.agencies {
        println!("{:<16} {:<24} {}", agency.id, agency.base_url, agency.name);
    }
    shutdown_signal().await;
    mocks.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
