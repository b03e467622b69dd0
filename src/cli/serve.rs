//! `civicflow serve`: one node: the engine on the embedded store (or, with `--store
//! postgres://…`, on a PostgreSQL database that several nodes share), the HTTP API and, with
//! `--with-mocks`, the mock agencies in the same process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use civicflow_mocks::{MocksConfig, start as start_mocks};

use jiff::Timestamp;

use crate::api::Limits;
use crate::app::{App, BuildError, Settings};
use crate::audit::{HeadSigner, SignerConfig};
use crate::auth::{self, ApiToken, Role};
use crate::circuits;
use crate::engine::{Clock, Config};
use crate::personal_data::PseudonymKey;
use crate::store::postgres::{Options, PgStore};
use crate::store::sled::{DEFAULT_CACHE_MIB, SledStore};
use crate::store::{Store, StoreError, Transaction};
use crate::traces::Traces;
use crate::webhooks::Targets;
use crate::workflow::definition::duration;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The data directory: the embedded store (unless --store names a database) and the first
    /// admin token.
    #[arg(long, env = "CIVICFLOW_DATA", default_value = "data")]
    pub data: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:port/db`) to share with other nodes,
    /// instead of the embedded store in --data.
    #[arg(long, env = "CIVICFLOW_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// The key of the pseudonyms that stand for citizens' IDs (consents, erased cases): a file of
    /// 64 hexadecimal digits, kept apart from the store and its backups; made on first start if
    /// missing. Every node sharing a store needs the same one. Default: beside --data, as
    /// `<data>.pseudonym-key`.
    #[arg(long, env = "CIVICFLOW_PSEUDONYM_KEY_FILE", value_name = "FILE")]
    pub pseudonym_key_file: Option<PathBuf>,
    /// The Ed25519 key that signs the audit log's tree heads: a file of 64 hexadecimal digits
    /// (the key's seed), kept apart from the store; made on first start if missing. To rotate
    /// it, point here at a new file: heads name the key that signed them, and an auditor keeps
    /// every public key (`civicflow audit public-key`). Default: beside --data, as
    /// `<data>.audit-key`.
    #[arg(long, env = "CIVICFLOW_AUDIT_KEY_FILE", value_name = "FILE")]
    pub audit_key_file: Option<PathBuf>,
    /// A signed tree head once the audit log grew by this many entries …
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub audit_head_entries: u64,
    /// … or once this long passed, if it grew at all.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub audit_head_every: String,
    /// This node's X-Road client, `INSTANCE/CLASS/MEMBER/SUBSYSTEM`, sent on every agency
    /// call as `X-Road-Client`.
    #[arg(long, env = "CIVICFLOW_XROAD_CLIENT", default_value = crate::adapters::xroad::DEFAULT_CLIENT, value_name = "ID")]
    pub xroad_client: String,
    /// Apply the database's missing migrations before serving (PostgreSQL).
    #[arg(long)]
    pub migrate: bool,
    /// Connections to PostgreSQL this node keeps.
    #[arg(long, default_value_t = 16)]
    pub pool_size: usize,
    /// The longest this node waits for PostgreSQL: to connect, for a pooled connection, for
    /// one statement.
    #[arg(long, default_value = "30s")]
    pub store_timeout: String,
    /// Where the API listens.
    #[arg(long, env = "CIVICFLOW_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// The server's log on stderr: `text` for people, `json` (one object per line, with
    /// `case_id`, `step` and `trace_id` on every line about a case) for a log collector.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Let webhooks reach loopback, private and link-local addresses (a portal inside the same
    /// network); by default they may not.
    #[arg(long)]
    pub allow_internal_webhooks: bool,
    /// Export the cases' traces to this OpenTelemetry collector (its base URL; OTLP over
    /// HTTP, protobuf). Without it, the standard `OTEL_EXPORTER_OTLP_ENDPOINT` variables are
    /// read; with neither, no trace is sent anywhere.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Also serve `GET /metrics` here, without a token, for Prometheus (a network only the
    /// scrapers reach); on the API's address it needs a token of role `metrics`.
    #[arg(long, env = "CIVICFLOW_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
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
    /// When an agency's circuit opens and how its held steps are released when it closes:
    /// failures in a row that open it, steps released per second, releases in flight at once
    /// (default 5,200,32).
    #[arg(long, value_name = "THRESHOLD[,RATE[,CONCURRENCY]]")]
    pub circuits: Option<String>,
    /// The same for one agency, `name=THRESHOLD[,RATE[,CONCURRENCY]]`; repeatable.
    #[arg(long = "circuit", value_name = "NAME=THRESHOLD[,RATE[,CONCURRENCY]]")]
    pub circuit: Vec<String>,
    /// How long SIGTERM waits for in-flight agency calls before parking them.
    #[arg(long, default_value = "10s")]
    pub drain_timeout: String,
    /// How long work this node claims (a due timer, a webhook's deliveries) stays its own
    /// without renewal: how soon another node takes over from one that died or stalled.
    #[arg(long, default_value = "30s")]
    pub claim_lease: String,
    /// The store's page cache, in MiB: sled uses several times that in memory.
    #[arg(long, default_value_t = DEFAULT_CACHE_MIB)]
    pub cache_mib: u64,
    /// Requests per second each API token may make, sustained.
    #[arg(long, default_value_t = NonZeroU32::new(200).expect("non-zero"))]
    pub rate_limit: NonZeroU32,
    /// Requests each API token may make in a burst above the sustained rate.
    #[arg(long, default_value_t = NonZeroU32::new(400).expect("non-zero"))]
    pub rate_burst: NonZeroU32,
    /// Connections served at once; more wait in the listen backlog until one ends.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// How long a client may take to send a request's head before its connection is closed;
    /// an idle kept-alive connection is closed after as long. Keep clients' idle connections
    /// shorter.
    #[arg(long, default_value = "30s")]
    pub header_read_timeout: String,
    /// How long a request may take to be received and answered (a streamed answer has only
    /// to start) before it is answered 408; above the longest `?wait=` (60 s).
    #[arg(long, default_value = "120s")]
    pub request_timeout: String,
    /// Start the engine's clock at this time (RFC 3339, later than now) and let it run on from
    /// there: a rehearsal of the deadlines a future date brings (a holiday, a month's end).
    /// Never in production: every due time and every record's time follows this clock.
    #[arg(long, value_name = "TIME")]
    pub clock_start: Option<jiff::Timestamp>,
}

/// The file, in the data directory, that holds the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The name of the token the in-process mocks call back with; replaced at every start.
const MOCKS_TOKEN_NAME: &str = "in-process mock agencies";
/// The name of the token the in-process hospital sends its events with.
const MOCKS_HOSPITAL_TOKEN_NAME: &str = "in-process mock hospital";

pub async fn run(args: ServeArgs, traces: Arc<Traces>) -> anyhow::Result<()> {
    match &args.store {
        Some(url) => {
            let options = Options {
                pool_size: args.pool_size,
                migrate: args.migrate,
                timeout: duration(&args.store_timeout)
                    .map_err(|e| anyhow::anyhow!("--store-timeout: {e}"))?,
            };
            let store = PgStore::connect(url, options).await?;
            std::fs::create_dir_all(&args.data)
                .with_context(|| format!("cannot create {}", args.data.display()))?;
            let place = format!("store {store:?}");
            serve(store, &place, args, traces).await
        }
        None => {
            let store = SledStore::open(&args.data, args.cache_mib << 20)?;
            let place = format!("data in {}", args.data.display());
            serve(store, &place, args, traces).await
        }
    }
}

/// How the server writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Serves on `store`, described to the operator as `place`.
async fn serve<S: Store + Clone>(
    store: S,
    place: &str,
    args: ServeArgs,
    traces: Arc<Traces>,
) -> anyhow::Result<()> {
    let drain_timeout = duration(&args.drain_timeout).map_err(anyhow::Error::msg)?;
    let claim_lease = duration(&args.claim_lease).map_err(anyhow::Error::msg)?;
    if args.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    let connections = crate::api::Connections {
        max: args.max_connections,
        header_read: duration(&args.header_read_timeout)
            .map_err(|e| anyhow::anyhow!("--header-read-timeout: {e}"))?,
        request: duration(&args.request_timeout)
            .map_err(|e| anyhow::anyhow!("--request-timeout: {e}"))?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));

    bootstrap_admin(&store, &args.data).await?;
    let mut agencies = BTreeMap::new();
    let mocks = if args.with_mocks {
        let callback_token =
            mocks_token(&store, MOCKS_TOKEN_NAME, Role::Agency("police".into())).await?;
        let hospital = Role::Source(civicflow_mocks::hospital::SOURCE.to_owned());
        let event_token = mocks_token(&store, MOCKS_HOSPITAL_TOKEN_NAME, hospital).await?;
        let mocks = start_mocks(MocksConfig {
            base_port: args.mocks_port,
            fast: args.mocks_fast,
            callback_token: Some(callback_token),
            event_sink: Some(civicflow_mocks::hospital::Sink {
                url: format!("{public_url}/v1/events"),
                token: event_token,
            }),
            ..MocksConfig::default()
        })
        .await
        .context("cannot start the mock agencies")?;
        for agency in &mocks.agencies {
            println!("mock agency {:<16} {}", agency.id, agency.base_url);
            // The hospital is a source of events, not an agency civicflow calls.
            if agency.id != civicflow_mocks::server::HOSPITAL {
                agencies.insert(agency.id.to_owned(), agency.base_url.clone());
            }
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
    let circuits = circuit_settings(&args)?;
    let clock = Clock::system();
    if let Some(start) = args.clock_start {
        let by = start.duration_since(clock.now());
        anyhow::ensure!(
            by > jiff::SignedDuration::ZERO,
            "--clock-start {start} is not later than now: the engine's clock only moves forward"
        );
        clock.skip(by);
        tracing::warn!(clock = %clock.now(), "the engine's clock was moved forward by --clock-start: a rehearsal, not production");
    }
    let key_file = args.pseudonym_key_file.clone().unwrap_or_else(|| {
        let mut name = args.data.clone().into_os_string();
        name.push(".pseudonym-key");
        PathBuf::from(name)
    });
    let pseudonyms = PseudonymKey::load_or_create(&key_file)?;
    let audit_key_file = args.audit_key_file.clone().unwrap_or_else(|| {
        let mut name = args.data.clone().into_os_string();
        name.push(".audit-key");
        PathBuf::from(name)
    });
    let audit = SignerConfig {
        key: HeadSigner::load_or_create(&audit_key_file)?,
        every_entries: args.audit_head_entries.max(1),
        every: duration(&args.audit_head_every).map_err(anyhow::Error::msg)?,
    };
    anyhow::ensure!(
        crate::adapters::xroad::valid_client(&args.xroad_client),
        "--xroad-client `{}`: expected INSTANCE/CLASS/MEMBER/SUBSYSTEM, e.g. {}",
        args.xroad_client,
        crate::adapters::xroad::DEFAULT_CLIENT
    );
    let settings = Settings {
        workflows: args.workflows.clone(),
        engine: Config {
            public_url,
            agencies,
            drain_timeout,
            claim_lease,
            clock,
            circuits,
            pseudonyms,
            xroad_client: args.xroad_client.clone(),
            audit,
        },
        limits: Limits {
            per_second: args.rate_limit,
            burst: args.rate_burst,
        },
        traces: traces.clone(),
        webhook_targets: Targets {
            allow_internal: args.allow_internal_webhooks,
        },
    };
    let mut app = match App::build(store, settings).await {
        Ok(app) => app,
        Err(e) => {
            if let BuildError::Definitions { problems, .. } = &e {
                for p in problems {
                    eprintln!("{p}");
                }
            }
            return Err(e.into());
        }
    };
    app.start();
    if let Some(at) = args.metrics_listen {
        let scrapers = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen for metrics on {at}"))?;
        println!(
            "civicflow metrics on http://{}/metrics",
            scrapers.local_addr()?
        );
        let router = crate::api::metrics_router(app.engine.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(scrapers, router).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }
    println!("civicflow node {}", app.engine.node());
    println!("civicflow listening on http://{addr} ({place})");
    crate::api::serve(listener, app.router(), connections, stop_signal())
        .await
        .context("the HTTP server failed")?;
    let parked = app.shutdown().await;
    if parked > 0 {
        eprintln!(
            "{parked} agency call(s) still in flight were parked; they resume on the next start"
        );
    }
    if let Some(mocks) = mocks {
        mocks.shutdown().await;
    }
    // The exporter's last batch: its own thread sends it; wait for it off the runtime.
    tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    println!("civicflow stopped");
    Ok(())
}

/// A store without an active admin token gets one, written to `admin.token` in the data
/// directory (readable by its owner only): how the first `civicflow tokens issue` is possible.
/// The token is committed only if the configuration has not changed since the check, so two
/// nodes starting together on an empty store make one admin token, not two.
async fn bootstrap_admin<S: Store>(store: &S, data: &Path) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let (token, secret) = loop {
        let version = store.config_version().await?;
        let tokens = store.api_tokens().await?;
        if tokens
            .iter()
            .any(|t| t.is_active(now) && t.session_of.is_none() && t.role() == Some(Role::Admin))
        {
            return Ok(());
        }
        let (token, secret) =
            ApiToken::issue(Role::Admin, "bootstrap admin", "civicflow serve", now);
        let tx = Transaction {
            audit: vec![auth::token_record("issued", &token, "civicflow serve")],
            put_api_tokens: vec![token.clone()],
            expect_config: Some(version),
            ..Transaction::default()
        };
        match store.commit(&tx).await {
            Ok(()) => break (token, secret),
            Err(StoreError::ConfigChanged { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let path = data.join(ADMIN_TOKEN_FILE);
    write_secret(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "admin token {} written to {}: use it to issue tokens (`civicflow tokens issue`)",
        token.id,
        path.display()
    );
    Ok(())
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())
}

/// A fresh token for the in-process mocks: `agency:police` for their callbacks (the police are
/// the agency that calls back), the hospital's `source:` role for its events; the previous
/// start's of the same name is revoked.
async fn mocks_token<S: Store>(store: &S, name: &str, role: Role) -> anyhow::Result<String> {
    let now = Timestamp::now();
    for old in store.api_tokens().await? {
        if old.is_active(now) && old.name == name {
            auth::revoke(store, &old.id, "civicflow serve", now).await?;
        }
    }
    let (_, secret) = auth::issue(store, role, name, "civicflow serve", now).await?;
    Ok(secret)
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

/// The circuits' policies from `--circuits` and each `--circuit`.
fn circuit_settings(args: &ServeArgs) -> anyhow::Result<circuits::Settings> {
    let mut settings = circuits::Settings::default();
    if let Some(spec) = &args.circuits {
        settings.default = settings
            .default
            .with(spec)
            .map_err(|e| anyhow::anyhow!("--circuits {spec}: {e}"))?;
    }
    for pair in &args.circuit {
        let (name, spec) = pair.split_once('=').with_context(|| {
            format!("--circuit {pair}: expected NAME=THRESHOLD[,RATE[,CONCURRENCY]]")
        })?;
        let policy = settings
            .default
            .with(spec)
            .map_err(|e| anyhow::anyhow!("--circuit {pair}: {e}"))?;
        settings.agencies.insert(name.to_owned(), policy);
    }
    Ok(settings)
}
