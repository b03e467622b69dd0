//! `civicflow serve`: the engine on the embedded store, the HTTP API and, with `--with-mocks`,
//! the mock agencies in the same process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use civicflow_mocks::{MocksConfig, start as start_mocks};

use crate::engine::{Clock, Config, Engine};
use crate::store::sled::SledStore;
use crate::workflow::definition::{Definitions, LoadError, duration};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The data directory of the embedded store.
    #[arg(long, env = "CIVICFLOW_DATA", default_value = "data")]
    pub data: PathBuf,
    /// Where the API listens.
    #[arg(long, env = "CIVICFLOW_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// The URL agencies use to reach this server (callbacks); default: http://<listen>.
    #[arg(long, env = "CIVICFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Workflow and adapter files.
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
    /// Also start the mock agencies in this process and call them.
    #[arg(long)]
    pub with_mocks: bool,
    /// Port of the first mock agency (the others follow); 0 picks free ports.
    #[arg(long, default_value_t = 7101)]
    pub mocks_port: u16,
    /// Mocks without artificial delays (benchmarks).
    #[arg(long)]
    pub mocks_fast: bool,
    /// An agency's base URL, `name=url`; repeatable. Overrides the mocks' URLs.
    #[arg(long = "agency", value_name = "NAME=URL")]
    pub agencies: Vec<String>,
    /// How long SIGTERM waits for in-flight agency calls before parking them.
    #[arg(long, default_value = "10s")]
    pub drain_timeout: String,
    /// The store's page cache, in MiB. sled counts it in on-disk bytes and uses several times
    /// that in memory; 16 keeps 100,000 waiting cases under 300 MB (docs/performance.md).
    #[arg(long, default_value_t = 16)]
    pub cache_mib: u64,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let defs = match Definitions::load(std::slice::from_ref(&args.workflows)) {
        Ok(defs) => Arc::new(defs),
        Err(LoadError::Invalid(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            bail!(
                "{} problem(s) in {}; `civicflow validate` shows the same",
                problems.len(),
                args.workflows.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    let drain_timeout = duration(&args.drain_timeout).map_err(anyhow::Error::msg)?;
    let store = SledStore::open(&args.data, args.cache_mib << 20)?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    let mut agencies = BTreeMap::new();
    let mocks = if args.with_mocks {
        let mocks = start_mocks(MocksConfig {
            base_port: args.mocks_port,
            fast: args.mocks_fast,
            ..MocksConfig::default()
        })
        .await
        .context("cannot start the mock agencies")?;
        for agency in &mocks.agencies {
            println!("mock agency {:<16} {}", agency.id, agency.base_url);
            agencies.insert(agency.id.to_owned(), agency.base_url.clone());
        }
        Some(mocks)
    } else {
        None
    };
    for pair in &args.agencies {
        let (name, url) = pair
            .split_once('=')
            .with_context(|| format!("--agency {pair}: expected NAME=URL"))?;
        agencies.insert(name.to_owned(), url.to_owned());
    }
    let missing: Vec<&str> = defs
        .agencies()
        .filter(|a| !agencies.contains_key(*a))
        .collect();
    if !missing.is_empty() {
        bail!(
            "no base URL for agency {}: give --agency NAME=URL, or --with-mocks",
            missing.join(", ")
        );
    }

    let engine = Engine::new(
        store,
        defs,
        Config {
            public_url,
            agencies,
            drain_timeout,
            clock: Clock::system(),
        },
    );
    let timers = engine.run();
    println!(
        "civicflow listening on http://{addr} (data in {})",
        args.data.display()
    );
    axum::serve(listener, crate::api::router(engine.clone()))
        .with_graceful_shutdown(stop_signal())
        .await
        .context("the HTTP server failed")?;
    let parked = engine.shutdown().await;
    timers.abort();
    if parked > 0 {
        eprintln!(
            "{parked} agency call(s) still in flight were parked; they resume on the next start"
        );
    }
    if let Some(mocks) = mocks {
        mocks.shutdown().await;
    }
    drop(engine);
    println!("civicflow stopped");
    Ok(())
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
