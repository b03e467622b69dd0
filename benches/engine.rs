//! The engine's benchmark: birth cases against the mock agencies in fast mode, durability on.
//!
//! `cargo bench --bench engine` (or `-- --cases 20000 --half-rate 300 --waiting 100000`).
//!
//! 1. Throughput: cases submitted through the HTTP API as fast as they are accepted; cases/s
//!    from the first start to the last finish, and each case's latency (start to finish, as the
//!    engine recorded them).
//! 2. Overhead at half load: cases at a fixed rate; the engine's own time per step (see
//!    `civicflow::engine::Overhead`).
//! 3. Memory: the real `civicflow` binary with cases waiting on callbacks (the household head
//!    never consents); its resident memory once they all wait.
//!
//! `-- --backend postgres --nodes 2 --throughput-only` runs the throughput phase on
//! PostgreSQL (the database `./scripts/test` would use: `CIVICFLOW_TEST_DATABASE`, else the
//! machine's own on 127.0.0.1:5432, in a fresh schema) with that many nodes in this process,
//! and reports the round trips and commits per case and PostgreSQL's share of the CPU.
//! `-- --traces` exports every case's trace (to a receiver in this process), to measure what
//! tracing costs.
//! `-- --pinned` puts the engine (its API, engine and store threads) on core 0 and the mocks
//! and this load generator on core 1, and reports the engine's own CPU time per case beside
//! the throughput, and its step overhead at half load, so that neither measures the neighbours.
//! `-- --listings 1000000` runs only the listings: that many birth cases written to a fresh
//! sled store (each a copy of a real one, with its history; one in fifty with an open
//! incident), then the operators' and the portal's reads through the HTTP API, each filter of
//! the incident list, a citizen's cases by business key and a case's history, 200 times each,
//! and the disk bytes per case.
//! Under callgrind, `CIVICFLOW_BENCH_CALLGRIND=1` zeroes the counters when the throughput run
//! starts and dumps them (`callgrind.out.<pid>.<n>`, "throughput") when its last case ends, so
//! the figures leave out start-up (the definitions compiled) and the drain.
//! `-- --events 800` runs only the events: that many death cases started by the portal
//! (`POST /v1/cases`), then as many started by a hospital's death certificates (`POST
//! /v1/events`, each matched to the death workflow's trigger, its business key looked up, the
//! event recorded), twice each, alternately, each run on a fresh sled store; cases/s from the
//! first request to the last case's end; then, after the events' run, the clock is moved past
//! the workflow's retention and the time until every case is erased is reported.
//! `-- --outage 60` runs only an outage of the police of that many seconds while
//! `--outage-cases` new cases are started, `--outage-rate` a second from 5 s before it, once
//! with the agencies' circuits and once without, and reports the calls the outage met, the
//! attempts, the incidents and the time from the agency's return to the last case's end.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use civicflow::engine::{Clock, Percentiles};
use civicflow::store::postgres::{Options, PgStore};
use civicflow::store::sled::{DEFAULT_CACHE_MIB, SledStore};
use civicflow::store::{Order, Store};
use civicflow::traces::Traces;
use clap::Parser;
use serde_json::{Value, json};
use support::{InProcess, Node, Server, birth_input, fetch, free_port, mocks_in_test, outage, pg};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// The allocator the `civicflow` binary uses, so the in-process figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// Cases in the throughput run.
    #[arg(long, default_value_t = 20_000)]
    cases: usize,
    /// Requests to start cases in flight at once in the throughput run.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Cases per second in the overhead run; default: half the throughput just measured.
    #[arg(long)]
    half_rate: Option<u64>,
    /// Seconds of the overhead run, after one second of warm-up.
    #[arg(long, default_value_t = 10)]
    half_secs: u64,
    /// Cases left waiting on a callback in the memory run; 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    waiting: usize,
    /// The store of the throughput run.
    #[arg(long, value_enum, default_value_t = Backend::Sled)]
    backend: Backend,
    /// Nodes sharing the store in the throughput run (PostgreSQL).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Only the throughput run.
    #[arg(long)]
    throughput_only: bool,
    /// Connections each node keeps to PostgreSQL.
    #[arg(long, default_value_t = Options::default().pool_size)]
    pool_size: usize,
    /// Only the on-time report's time, on a store holding the counters of this many finished
    /// cases (spread over a year), on `--backend`.
    #[arg(long)]
    kpi_cases: Option<usize>,
    /// Export every case's trace (to a receiver in this process that drops them), to measure
    /// what tracing costs.
    #[arg(long)]
    traces: bool,
    /// Only an outage of the police of this many seconds, with circuits and without.
    #[arg(long)]
    outage: Option<u64>,
    /// New birth cases per second in the outage run.
    #[arg(long, default_value_t = 50)]
    outage_rate: u32,
    /// Birth cases started in the outage run.
    #[arg(long, default_value_t = 1_000)]
    outage_cases: usize,
    /// The engine on core 0, the mocks and the load generator on core 1 (throughput and
    /// overhead runs, sled).
    #[arg(long)]
    pinned: bool,
    /// Only the listings, on a sled store holding this many birth cases.
    #[arg(long)]
    listings: Option<usize>,
    /// A portal's webhook registered for the throughput run (a receiver in this process that
    /// acknowledges each notification): the feed written, sealed and delivered as cases run.
    #[arg(long)]
    webhook: bool,
    /// Only the events run: this many death cases started by the portal, then as many started
    /// by a hospital's CloudEvents, twice each, alternately (sled, in this process).
    #[arg(long)]
    events: Option<usize>,
    /// Cargo passes `--bench`; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Sled,
    Postgres,
}

/// The household head whose consent the police mock waits for forever.
const MANUAL_HEAD: &str = "001075111222";

/// The core of the engine's threads, and the core of the mocks' and the load generator's, in
/// the pinned mode.
const ENGINE_CORE: usize = 0;
const LOAD_CORE: usize = 1;

/// Keeps the calling thread, and the threads it starts from now on, on `core`.
fn pin_to(core: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bit set the kernel reads; its size is passed with it.
    let failed = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Pinned: this thread (and so the engine's runtime and the store's threads, which it
    // starts) on the engine's core; the load's runtime on the other.
    if args.pinned {
        pin_to(ENGINE_CORE).context("pinning the engine's threads")?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let load_runtime = if args.pinned {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("load")
                .on_thread_start(|| pin_to(LOAD_CORE).expect("pinning a load thread"))
                .enable_all()
                .build()?,
        )
    } else {
        None
    };
    let load = load_runtime
        .as_ref()
        .map_or_else(|| runtime.handle().clone(), |r| r.handle().clone());
    runtime.block_on(async {
        println!("# civicflow engine benchmark");
        if let Some(cases) = args.kpi_cases {
            return kpi_report(&args, cases).await;
        }
        if let Some(secs) = args.outage {
            return outage_runs(&args, secs).await;
        }
        if let Some(cases) = args.events {
            return event_runs(&args, cases).await;
        }
        if let Some(cases) = args.listings {
            return listings(cases).await;
        }
        let measured = match args.backend {
            Backend::Sled => {
                let dir = std::env::temp_dir().join(format!("civicflow-bench-{}", std::process::id()));
                let store = SledStore::open(&dir, DEFAULT_CACHE_MIB << 20)?;
                let measured = throughput(&args, &load, vec![store]).await?;
                let _ = std::fs::remove_dir_all(&dir);
                measured
            }
            Backend::Postgres => {
                let url = pg::fresh_url().await;
                let options = Options {
                    migrate: true,
                    pool_size: args.pool_size,
                    ..Options::default()
                };
                let mut stores = Vec::new();
                for _ in 0..args.nodes.max(1) {
                    stores.push(PgStore::connect(&url, options).await?);
                }
                let before = postgres_cpu_seconds()?;
                let measured = throughput(&args, &load, stores.clone()).await?;
                let cases = args.cases as f64;
                let (mut round_trips, mut transactions) = (0, 0);
                for store in &stores {
                    let e = store.exchanges();
                    round_trips += e.round_trips;
                    transactions += e.transactions;
                }
                println!(
                    "PostgreSQL: {:.1} round trips and {:.2} transactions per case (a transaction carries the commits that arrived together); its server processes used {:.2} CPU seconds per 1,000 cases",
                    round_trips as f64 / cases,
                    transactions as f64 / cases,
                    (postgres_cpu_seconds()? - before) * 1000.0 / cases
                );
                drop(stores);
                pg::drop_schema(&url).await;
                measured
            }
        };
        if args.throughput_only {
            return Ok(());
        }
        let half = args
            .half_rate
            .unwrap_or((measured / 2.0).round().max(1.0) as u64);
        overhead(&args, &load, half).await?;
        if args.waiting > 0 {
            memory(&args).await?;
        }
        Ok(())
    })
}

/// Whether any case is still running, from the store's status index.
async fn running<S: Store>(store: &S) -> anyhow::Result<bool> {
    let page = store
        .cases_by("status", "running", None, Order::Ascending, 1)
        .await?;
    Ok(!page.ids.is_empty())
}

/// The request that starts birth case `i` of run `run`, with the given household head.
fn birth(run: &str, i: usize, head: &str) -> Value {
    let mut input = birth_input(&format!("{run}-{i}"));
    input["household_head_personal_id"] = json!(head);
    json!({"workflow": "birth-registration", "input": input})
}

/// Starts one case over HTTP; returns its id.
async fn start_case(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<String> {
    let reply = http
        .post(format!("{url}/v1/cases"))
        .json(body)
        .send()
        .await?;
    let status = reply.status();
    let body: Value = reply.json().await?;
    if status.as_u16() != 201 {
        bail!("starting a case: {status} {body}");
    }
    Ok(body["id"].as_str().context("a case id")?.to_owned())
}

/// Starts `n` cases with at most `concurrency` requests in flight, spread over `urls`.
async fn submit_all(
    http: &reqwest::Client,
    urls: &[String],
    run: &'static str,
    n: usize,
    concurrency: usize,
    head: &'static str,
) -> anyhow::Result<Vec<String>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), urls[i % urls.len()].clone());
        tasks.spawn(async move {
            let id = start_case(&http, &url, &birth(run, i, head)).await;
            drop(permit);
            id
        });
    }
    let mut ids = Vec::with_capacity(n);
    while let Some(id) = tasks.join_next().await {
        ids.push(id??);
    }
    Ok(ids)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> anyhow::Result<f64> {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat")?)
}

/// The CPU seconds (user + system) a `/proc/…/stat` line counts, in clock ticks of 1/100 s.
fn stat_cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    let (user, system) = stat_user_system(stat)?;
    Ok(user + system)
}

/// The user and the system CPU seconds of a `/proc/…/stat` line.
fn stat_user_system(stat: &str) -> anyhow::Result<(f64, f64)> {
    let after_name = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Ok((
        fields[11].parse::<f64>()? / 100.0,
        fields[12].parse::<f64>()? / 100.0,
    ))
}

/// Sends `action` to the callgrind this process runs under, when `CIVICFLOW_BENCH_CALLGRIND`
/// says it does.
fn callgrind(action: &str) -> anyhow::Result<()> {
    if std::env::var_os("CIVICFLOW_BENCH_CALLGRIND").is_none() {
        return Ok(());
    }
    let status = std::process::Command::new("callgrind_control")
        .arg(action)
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .context("running callgrind_control")?;
    if !status.success() {
        bail!("callgrind_control {action} failed: {status}");
    }
    Ok(())
}

/// CPU seconds (user, system) of this process's threads kept on the engine's core: the
/// engine's, in the pinned mode (none otherwise). A thread that ended meanwhile is not counted;
/// the engine's threads live as long as the run. The system part is the kernel's work for the
/// engine (sockets, fsync, futexes), which instruction counts do not see.
fn engine_cpu_seconds() -> anyhow::Result<(f64, f64)> {
    let mut total = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?.path();
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(task.join("status")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue;
        };
        let on_engine_core = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .is_some_and(|cores| cores.trim() == ENGINE_CORE.to_string());
        if !on_engine_core {
            continue;
        }
        let (user, system) = stat_user_system(&stat)?;
        total = (total.0 + user, total.1 + system);
    }
    Ok(total)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

/// CPU seconds PostgreSQL's server processes on this machine have used, from /proc.
fn postgres_cpu_seconds() -> anyhow::Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(stat) = std::fs::read_to_string(entry?.path().join("stat")) else {
            continue;
        };
        let name = stat.split_once(" (").and_then(|(_, r)| r.split_once(") "));
        if name.is_some_and(|(name, _)| name == "postgres") {
            total += stat_cpu_seconds(&stat)?;
        }
    }
    Ok(total)
}

/// The on-time report's time (a year, a month, a month for one agency) on a store holding the
/// counters `cases` finished birth cases added, spread over 2026 (a tenth late, working days
/// taken from 0 to 5, one in fifty still open): the counters a report reads are all a case
/// leaves for it, so the cases' own records are not written.
async fn kpi_report(args: &Args, cases: usize) -> anyhow::Result<()> {
    use civicflow::kpi::report::{self, Period};
    use civicflow::kpi::{Finished, Open, State, Tally};
    async fn fill<S: Store>(store: &S, cases: usize) -> anyhow::Result<usize> {
        let first: jiff::civil::Date = "2026-01-01".parse()?;
        let mut rng = fastrand::Rng::with_seed(7);
        let mut names = std::collections::BTreeSet::new();
        for chunk in (0..cases).step_by(10_000) {
            let mut counts: std::collections::BTreeMap<String, i64> = Default::default();
            for _ in chunk..(chunk + 10_000).min(cases) {
                let day = first.checked_add(jiff::Span::new().days(rng.i64(0..365)))?;
                for (agency, step) in [
                    ("civil-status", "birth"),
                    ("police", "residence"),
                    ("social-security", "health_insurance"),
                    ("*", "*"),
                ] {
                    let state = if rng.u32(0..50) == 0 {
                        State::Open {
                            day,
                            class: Open::InTime,
                        }
                    } else {
                        let class = if rng.u32(0..10) == 0 {
                            Finished::Late
                        } else {
                            Finished::OnTime
                        };
                        State::Done {
                            day,
                            class,
                            working_days: rng.u32(0..6),
                        }
                    };
                    let tally = Tally {
                        workflow: "birth-registration".into(),
                        agency: agency.into(),
                        step: step.into(),
                        state,
                    };
                    *counts.entry(tally.name()).or_default() += 1;
                }
            }
            names.extend(counts.keys().cloned());
            let tx = civicflow::store::Transaction {
                counts: counts.into_iter().collect(),
                ..Default::default()
            };
            store.commit(&tx).await?;
        }
        Ok(names.len())
    }
    async fn time<S: Store>(store: &S, label: &str, period: Period) -> anyhow::Result<()> {
        let mut took = Vec::new();
        for _ in 0..200 {
            let began = Instant::now();
            let r = report::read(store, &period).await?;
            took.push(began.elapsed());
            assert!(!r.workflows.is_empty());
        }
        took.sort();
        println!(
            "{label}: p50 {:.2} ms, p99 {:.2} ms (200 reads)",
            took[100].as_secs_f64() * 1e3,
            took[197].as_secs_f64() * 1e3
        );
        Ok(())
    }
    async fn run<S: Store>(store: &S, cases: usize) -> anyhow::Result<()> {
        let began = Instant::now();
        let names = fill(store, cases).await?;
        println!(
            "## The on-time report with the counters of {cases} birth cases ({names} counter names, written in {:.1} s)",
            began.elapsed().as_secs_f64()
        );
        let period = |from: &str, to: &str, agency: Option<&str>| -> anyhow::Result<Period> {
            Ok(Period {
                from: from.parse()?,
                to: to.parse()?,
                workflow: None,
                agency: agency.map(str::to_owned),
            })
        };
        time(
            store,
            "a year (2026)",
            period("2026-01-01", "2026-12-31", None)?,
        )
        .await?;
        time(
            store,
            "a month (June 2026)",
            period("2026-06-01", "2026-06-30", None)?,
        )
        .await?;
        time(
            store,
            "a month, one agency",
            period("2026-06-01", "2026-06-30", Some("police"))?,
        )
        .await
    }
    match args.backend {
        Backend::Sled => {
            let dir = std::env::temp_dir().join(format!("civicflow-kpi-{}", std::process::id()));
            let store = SledStore::open(&dir, DEFAULT_CACHE_MIB << 20)?;
            run(&store, cases).await?;
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
        Backend::Postgres => {
            let url = pg::fresh_url().await;
            let store = PgStore::connect(
                &url,
                Options {
                    migrate: true,
                    pool_size: args.pool_size,
                    ..Options::default()
                },
            )
            .await?;
            run(&store, cases).await?;
            drop(store);
            pg::drop_schema(&url).await;
        }
    }
    Ok(())
}

/// An OTLP/HTTP receiver in this process that takes every export and keeps nothing: its URL.
async fn trace_sink() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
    tokio::spawn(axum::serve(listener, app).into_future());
    Ok(url)
}

/// The throughput run on one node per store in `stores` (all sharing one database, or one
/// sled store): returns the cases/s measured.
/// The mock agencies (fast mode), served by the load's runtime: the benchmark's own core in
/// the pinned mode, the engine's runtime otherwise.
async fn mocks_on(
    load: &Handle,
) -> anyhow::Result<(
    civicflow_mocks::RunningMocks,
    std::collections::BTreeMap<String, String>,
)> {
    Ok(load
        .spawn(async {
            let (mocks, _) = mocks_in_test(1).await;
            let agencies = support::agency_urls(&mocks);
            (mocks, agencies)
        })
        .await?)
}

/// Starts `n` cases as [`submit_all`] does, from the load's runtime, with a client of its own
/// (a client's connections are driven by the runtime that opened them).
async fn submit_on(
    load: &Handle,
    (token, urls): (&str, &[String]),
    (run, n, concurrency, head): (&'static str, usize, usize, &'static str),
) -> anyhow::Result<Vec<String>> {
    let (token, urls) = (token.to_owned(), urls.to_vec());
    load.spawn(async move {
        let http = support::client_with(&token);
        submit_all(&http, &urls, run, n, concurrency, head).await
    })
    .await?
}

/// A portal's webhook receiver on the load's runtime that acknowledges every notification and
/// counts them; its URL.
async fn webhook_receiver(
    load: &Handle,
    delivered: Arc<std::sync::atomic::AtomicUsize>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            delivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    load.spawn(axum::serve(listener, app).into_future());
    Ok(url)
}

async fn throughput<S: Store + Clone>(
    args: &Args,
    load: &Handle,
    stores: Vec<S>,
) -> anyhow::Result<f64> {
    let (_mocks, agencies) = mocks_on(load).await?;
    let traces = if args.traces {
        Arc::new(Traces::from_config(Some(&trace_sink().await?))?)
    } else {
        Arc::new(Traces::off())
    };
    let mut nodes = Vec::new();
    for store in stores {
        nodes.push(Node::start_traced(store, &agencies, Clock::system(), traces.clone()).await);
    }
    let store = nodes[0].app.engine.store().clone();
    let issue =
        |role| civicflow::auth::issue(&store, role, "bench", "bench", jiff::Timestamp::now());
    let (_, admin) = issue(civicflow::auth::Role::Admin).await?;
    let (_, police) = issue(civicflow::auth::Role::Agency("police".into())).await?;
    let http = support::client_with(&admin);
    support::set_callback_token(&http, &agencies["police"], &police).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let delivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if args.webhook {
        let receiver = webhook_receiver(load, delivered.clone()).await?;
        let reply = http
            .post(format!("{}/v1/webhooks", urls[0]))
            .json(&json!({"url": receiver}))
            .send()
            .await?;
        if reply.status().as_u16() != 201 {
            bail!("registering the webhook: {}", reply.status());
        }
    }
    // A webhook's registration moves the configuration version: every node reloads its
    // definitions within a poll. Out of the measured run.
    tokio::time::sleep(civicflow::app::CONFIG_POLL * 2).await;
    let committed = || -> u64 {
        nodes
            .iter()
            .map(|n| n.app.engine.store().groups().commits)
            .sum()
    };
    let commits_before = committed();
    callgrind("--zero")?;
    let (cpu_before, wall) = (cpu_seconds()?, Instant::now());
    let engine_before = engine_cpu_seconds()?;
    let ids = submit_on(
        load,
        (&admin, &urls),
        ("T", args.cases, args.concurrency, "001089654321"),
    )
    .await?;
    while running(&store).await? {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    callgrind("--dump=throughput")?;
    let cores = (cpu_seconds()? - cpu_before) / wall.elapsed().as_secs_f64();
    let ended = Instant::now();
    if args.webhook {
        // Three step results and the end of every case.
        let expected = 4 * args.cases;
        while delivered.load(std::sync::atomic::Ordering::SeqCst) < expected {
            if ended.elapsed() > Duration::from_secs(300) {
                bail!(
                    "the webhook took {} of {expected} notifications",
                    delivered.load(std::sync::atomic::Ordering::SeqCst)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "webhook: {expected} notifications delivered, the last {:.2} s after the last case ended",
            ended.elapsed().as_secs_f64()
        );
    }
    let engine_after = engine_cpu_seconds()?;
    let engine_cpu = (
        engine_after.0 - engine_before.0,
        engine_after.1 - engine_before.1,
    );
    let commits = committed() - commits_before;
    let mut latencies = Vec::with_capacity(ids.len());
    let (mut first, mut last) = (jiff::Timestamp::MAX, jiff::Timestamp::MIN);
    for id in &ids {
        let case = store
            .case(id.parse()?)
            .await?
            .context("an accepted case exists")?;
        if case.status.as_str() != "completed" {
            bail!(
                "case {id} ended {}: {:?}",
                case.status.as_str(),
                case.reason
            );
        }
        let finished = case.finished_at.context("a finished case has an end")?;
        first = first.min(case.started_at);
        last = last.max(finished);
        latencies.push(finished.duration_since(case.started_at).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let span = last.duration_since(first).as_secs_f64();
    println!(
        "\n## Throughput ({} birth cases, {} starts in flight, {:?} store, {} node{})",
        ids.len(),
        args.concurrency,
        args.backend,
        urls.len(),
        if urls.len() == 1 { "" } else { "s" }
    );
    println!(
        "cases/s: {:.0} ({:.0} agency calls/s), CPU {cores:.2} cores of 2 (engine, API, mocks and this client)",
        ids.len() as f64 / span,
        3.0 * ids.len() as f64 / span
    );
    if args.pinned {
        let per_case = |seconds: f64| seconds * 1000.0 / ids.len() as f64;
        println!(
            "engine CPU (its threads, on core {ENGINE_CORE}): {:.3} ms per case (user {:.3}, system {:.3})",
            per_case(engine_cpu.0 + engine_cpu.1),
            per_case(engine_cpu.0),
            per_case(engine_cpu.1)
        );
    }
    println!(
        "durable commits: {:.2} per case",
        commits as f64 / ids.len() as f64
    );
    println!(
        "case latency: p50 {:.0} ms, p99 {:.0} ms (includes the card step's 2 s poll interval)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let metrics = nodes[0].app.engine.overhead();
    println!(
        "engine overhead per step at full load (node 1): {}",
        described(metrics.step_overhead(), "samples")
    );
    println!(
        "of which each durable commit: {}",
        described(metrics.commit_latency(), "commits")
    );
    audit_log(&store, ids.len()).await?;
    Ok(ids.len() as f64 / span)
}

/// Issue 38: what the run left in the audit log, and what checking it costs: the log's root
/// computed from the stored entries (what a node does at its first head after a start),
/// and `audit verify` of the whole log against the node's key.
async fn audit_log<S: Store + Clone>(store: &S, cases: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let log = civicflow::audit::Log::new(store.clone());
    let (size, root) = log.head().await?;
    let built = started.elapsed().as_secs_f64();
    let key = support::audit_key();
    store
        .commit(&civicflow::store::Transaction {
            put_tree_heads: vec![key.sign(size, &root, jiff::Timestamp::now())],
            ..civicflow::store::Transaction::default()
        })
        .await?;
    let started = Instant::now();
    let trusted = civicflow::audit::TrustedKeys::of(&key);
    let source = civicflow::audit::verify::StoreSource(store.clone());
    let verified = civicflow::audit::verify::verify(&source, &trusted, None).await?;
    let checked = started.elapsed().as_secs_f64();
    println!(
        "audit log: {size} entries ({:.1} per case); its root computed from the store in {built:.2} s; verified whole ({} heads) in {checked:.2} s, {:.0} entries/s",
        size as f64 / cases as f64,
        verified.heads,
        size as f64 / checked
    );
    Ok(())
}

async fn overhead(args: &Args, load: &Handle, rate: u64) -> anyhow::Result<()> {
    let (_mocks, agencies) = mocks_on(load).await?;
    let dir = std::env::temp_dir().join(format!("civicflow-bench-half-{}", std::process::id()));
    let store = SledStore::open(&dir, DEFAULT_CACHE_MIB << 20)?;
    let node = Node::start(store.clone(), &agencies, Clock::system()).await;
    let issue =
        |role| civicflow::auth::issue(&store, role, "bench", "bench", jiff::Timestamp::now());
    let (_, admin) = issue(civicflow::auth::Role::Admin).await?;
    let (_, police) = issue(civicflow::auth::Role::Agency("police".into())).await?;
    support::set_callback_token(&support::client_with(&admin), &agencies["police"], &police).await;
    // The offered load, from the load's runtime; the overhead is reset after a second of it.
    let total = (args.half_secs + 1) * rate;
    let (url, engine) = (node.url.clone(), node.app.engine.clone());
    let sent_in = load
        .spawn(async move {
            let http = support::client_with(&admin);
            let mut tasks = tokio::task::JoinSet::new();
            let started = Instant::now();
            let mut reset = false;
            for i in 0..total {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                if !reset && started.elapsed() >= Duration::from_secs(1) {
                    engine.overhead().reset();
                    reset = true;
                }
                let (http, url) = (http.clone(), url.clone());
                tasks.spawn(async move {
                    start_case(&http, &url, &birth("H", i as usize, "001089654321")).await
                });
            }
            while let Some(id) = tasks.join_next().await {
                id??;
            }
            anyhow::Ok(started.elapsed().as_secs_f64())
        })
        .await??;
    while running(&store).await? {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = node.app.engine.overhead();
    println!(
        "\n## Engine overhead at half load ({} cases/s offered, {:.0} achieved, {} s after 1 s warm-up)",
        rate,
        total as f64 / sent_in,
        args.half_secs
    );
    println!(
        "engine overhead per step: {}",
        described(metrics.step_overhead(), "samples")
    );
    println!(
        "of which each durable commit: {}",
        described(metrics.commit_latency(), "commits")
    );
    drop((node, store));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `p50 …, p99 …, max … (count what)`, in milliseconds.
fn described(p: Percentiles, what: &str) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({} {what})",
        p.p50_us as f64 / 1000.0,
        p.p99_us as f64 / 1000.0,
        p.max_us as f64 / 1000.0,
        p.count
    )
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("VmRSS in /proc/<pid>/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}

async fn memory(args: &Args) -> anyhow::Result<()> {
    let (_mocks, args_for_server) = mocks_in_test(1).await;
    let mut agency_args: Vec<&str> = args_for_server.iter().map(String::as_str).collect();
    agency_args.extend(["--rate-limit", "1000000", "--rate-burst", "1000000"]);
    let data = std::env::temp_dir().join(format!("civicflow-bench-memory-{}", std::process::id()));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::spawn(&data, &listen, &agency_args);
    let http = server.http.clone();
    let idle = rss_mib(server.pid())?;
    let started = Instant::now();
    let ids = submit_all(
        &http,
        std::slice::from_ref(&server.url),
        "M",
        args.waiting,
        args.concurrency,
        MANUAL_HEAD,
    )
    .await?;
    // Every case waits once its residence step has been accepted and its card was issued.
    for id in &ids {
        loop {
            let case = fetch(&http, &format!("{}/v1/cases/{id}", server.url)).await;
            let steps = &case["steps"];
            if steps["residence"]["status"] == "awaiting_callback"
                && steps["health_insurance"]["status"] == "succeeded"
            {
                break;
            }
            if case["status"] != "running"
                || case["incidents"].as_array().is_some_and(|i| !i.is_empty())
            {
                bail!("case {id} did not wait: {case}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let took = started.elapsed().as_secs_f64();
    // Let caches and allocator settle as a long-running server would.
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("\n## Memory with {} cases waiting on callbacks", ids.len());
    println!(
        "resident memory: {:.0} MiB (idle before: {idle:.0} MiB); the cases were started in {took:.0} s",
        rss_mib(server.pid())?
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// The police down for `secs` seconds while `--outage-cases` new cases are started,
/// `--outage-rate` a second from 5 s before: with the agencies' circuits (the default policy),
/// then without (a threshold never reached).
async fn outage_runs(args: &Args, secs: u64) -> anyhow::Result<()> {
    let load = outage::Load {
        cases: args.outage_cases,
        rate: args.outage_rate,
        before: Duration::from_secs(5),
        outage: Duration::from_secs(secs),
    };
    println!(
        "\n## Agency outage: the police answer 503 to everything for {secs} s; {} new birth cases, {} a second from 5 s before it",
        load.cases, load.rate
    );
    for (label, threshold) in [
        ("with circuits", None),
        ("without circuits", Some(u32::MAX)),
    ] {
        let mut settings = civicflow::circuits::Settings::default();
        if let Some(t) = threshold {
            settings.default.threshold = t;
        }
        let app = InProcess::start_with(settings).await;
        let run = outage::run(&app, load, "B-OUT", Duration::from_secs(900)).await;
        let completed = run
            .cases
            .iter()
            .filter(|c| c["status"] == "completed")
            .count();
        println!(
            "{label}: {} cases, {completed} completed, {} stopped on an incident (retries spent); police requests met by the outage: {} (of {}); most attempts of a police step: {}; the last case ended {:.1} s after the police came back",
            run.cases.len(),
            run.incidents,
            run.calls_in_outage,
            run.police_calls,
            run.max_attempts,
            run.recovery.as_secs_f64()
        );
    }
    Ok(())
}

/// A real birth case, run to its end against the mocks: its record and its history, the model
/// of the cases [`listings`] writes.
async fn model_case() -> anyhow::Result<(civicflow::case::Case, Vec<civicflow::case::Event>)> {
    let server = InProcess::start().await;
    let id = server.start_birth(birth_input("LISTINGS-MODEL")).await;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let case = server.case(&id).await;
        if case["status"] == "completed" {
            break;
        }
        if Instant::now() > until {
            bail!("the model case did not complete: {case}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = server.engine.store();
    let case = store.case(id.parse()?).await?.context("the model case")?;
    let events = store.history(case.id, 0, 10_000).await?;
    Ok((case, events))
}

/// Case `i` of the listings' store: the model under a new id, citizen and dossier, started on
/// a day of the past year; one in fifty still running with an open incident (reasons, steps
/// and ages spread).
fn listed_case(
    (model, events): &(civicflow::case::Case, Vec<civicflow::case::Event>),
    i: usize,
    now: jiff::Timestamp,
) -> anyhow::Result<(civicflow::case::Case, Vec<civicflow::case::Event>)> {
    use civicflow::case::{CaseId, CaseStatus, Incident, IncidentReason, StepStatus};
    let mut case = model.clone();
    case.id = CaseId::now_v7();
    case.rev = 0;
    case.timers.clear();
    case.business_keys
        .insert("requester".into(), format!("{:012}", 1_000_000_000 + i));
    case.business_keys
        .insert("dossier".into(), format!("G01.123-LIST-{i}"));
    let age = jiff::SignedDuration::from_secs((i as i64 * 7_919) % (365 * 86_400));
    let shift = (now - age).duration_since(model.started_at);
    let moved = |t: jiff::Timestamp| t.checked_add(shift).unwrap_or(t);
    case.started_at = moved(model.started_at);
    case.finished_at = model.finished_at.map(moved);
    if i.is_multiple_of(50) {
        const REASONS: [IncidentReason; 3] = [
            IncidentReason::RetriesExhausted,
            IncidentReason::UnexpectedReply,
            IncidentReason::DeadlineMissed,
        ];
        let steps: Vec<String> = case.steps.keys().cloned().collect();
        let step = steps[(i / 50) % steps.len()].clone();
        case.status = CaseStatus::Running;
        case.finished_at = None;
        if let Some(s) = case.steps.get_mut(&step) {
            s.status = StepStatus::Failed;
        }
        case.incidents.push(Incident {
            step: Some(step),
            reason: REASONS[(i / 50) % REASONS.len()],
            message: "the agency did not answer in time, three times".into(),
            opened_at: now - jiff::SignedDuration::from_secs((i as i64 * 331) % (60 * 86_400)),
        });
    }
    let events = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.at = moved(e.at);
            e
        })
        .collect();
    Ok((case, events))
}

/// A read the listings time: its label, and the path of its next request.
type ListingRead = (String, Box<dyn FnMut(&mut fastrand::Rng) -> String>);

/// The listings with `n` cases stored: see the module's comment.
async fn listings(n: usize) -> anyhow::Result<()> {
    use civicflow::store::{CaseWrite, Transaction};
    let model = model_case().await?;
    let dir = std::env::temp_dir().join(format!("civicflow-bench-list-{}", std::process::id()));
    let store = SledStore::open(&dir, DEFAULT_CACHE_MIB << 20)?;
    let now = jiff::Timestamp::now();
    let loading = Instant::now();
    let (mut ids, mut incidents) = (Vec::with_capacity(n), 0);
    for chunk in (0..n).step_by(500) {
        let mut tx = Transaction::default();
        for i in chunk..(chunk + 500).min(n) {
            let (case, events) = listed_case(&model, i, now)?;
            incidents += case.incidents.len();
            ids.push(case.id);
            tx.events.extend(events.into_iter().map(|e| (case.id, e)));
            tx.cases.push(CaseWrite {
                case,
                expected_rev: None,
            });
        }
        store.commit(&tx).await?;
        if chunk.is_multiple_of(100_000) && chunk > 0 {
            eprintln!(
                "{chunk} cases written in {:.0} s",
                loading.elapsed().as_secs_f64()
            );
        }
    }
    let loaded_in = loading.elapsed().as_secs_f64();
    let bytes = directory_bytes(&dir)?;
    println!(
        "\n## Listings ({n} birth cases stored, {incidents} with an open incident, sled)\n\
         written in {loaded_in:.0} s ({:.0} cases/s); {:.0} MiB on disk, {:.0} bytes per case",
        n as f64 / loaded_in,
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / n as f64
    );

    let mut agencies = std::collections::BTreeMap::new();
    for agency in ["civil-status", "police", "social-security"] {
        agencies.insert(agency.to_owned(), "http://127.0.0.1:9".to_owned());
    }
    let node = Node::start(store.clone(), &agencies, Clock::system()).await;
    let (_, admin) =
        civicflow::auth::issue(&store, civicflow::auth::Role::Admin, "bench", "bench", now).await?;
    let http = support::client_with(&admin);
    let mut rng = fastrand::Rng::with_seed(21);
    let day = move |days: i64| (now - jiff::SignedDuration::from_secs(days * 86_400)).to_string();
    let mut reads: Vec<ListingRead> = vec![
        (
            "incidents, oldest first".into(),
            Box::new(|_| "/v1/incidents".into()),
        ),
        (
            "incidents, newest first".into(),
            Box::new(|_| "/v1/incidents?order=newest".into()),
        ),
        (
            "incidents of a workflow".into(),
            Box::new(|_| "/v1/incidents?workflow=birth-registration".into()),
        ),
        (
            "incidents of a step".into(),
            Box::new(|_| "/v1/incidents?step=residence".into()),
        ),
        (
            "incidents of a workflow's step".into(),
            Box::new(|_| "/v1/incidents?workflow=birth-registration&step=residence".into()),
        ),
        (
            "incidents at an agency".into(),
            Box::new(|_| "/v1/incidents?agency=police".into()),
        ),
        (
            "incidents for a reason".into(),
            Box::new(|_| "/v1/incidents?reason=deadline_missed".into()),
        ),
        (
            "incidents opened in a week, a month ago".into(),
            Box::new(move |_| {
                format!(
                    "/v1/incidents?opened_after={}&opened_before={}",
                    day(37),
                    day(30)
                )
            }),
        ),
        (
            "a citizen's cases by personal ID".into(),
            Box::new(move |r| {
                format!(
                    "/v1/cases?key=requester={:012}",
                    1_000_000_000 + r.usize(0..n)
                )
            }),
        ),
        (
            "a dossier's case by number".into(),
            Box::new(move |r| format!("/v1/cases?key=dossier=G01.123-LIST-{}", r.usize(0..n))),
        ),
    ];
    let history_ids = ids.clone();
    reads.push((
        "a case's history".into(),
        Box::new(move |r| {
            format!(
                "/v1/cases/{}/history",
                history_ids[r.usize(0..history_ids.len())]
            )
        }),
    ));
    for (label, path) in &mut reads {
        let mut took = Vec::with_capacity(200);
        let mut items = 0;
        for _ in 0..200 {
            let url = format!("{}{}", node.url, path(&mut rng));
            let began = Instant::now();
            let reply = http.get(&url).send().await?;
            let status = reply.status();
            let body: Value = reply.json().await?;
            took.push(began.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                bail!("{url}: {status} {body}");
            }
            items += body["items"]
                .as_array()
                .or(body["events"].as_array())
                .map_or(0, Vec::len);
        }
        took.sort_by(f64::total_cmp);
        println!(
            "{label}: p50 {:.2} ms, p99 {:.2} ms ({:.0} rows a read)",
            percentile(&took, 0.5),
            percentile(&took, 0.99),
            items as f64 / 200.0
        );
    }
    drop((node, store));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The bytes of every file under `dir`.
fn directory_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            directory_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Death cases started by the portal and by a hospital's events, alternately: what taking an
/// event (its trigger, the business-key lookup, its record) costs beside a portal's start.
async fn event_runs(args: &Args, n: usize) -> anyhow::Result<()> {
    println!("## {n} death cases, started by the portal or by CloudEvents (sled)");
    for round in 0..2 {
        for by_events in [false, true] {
            let h = InProcess::start().await;
            let civil = h.agencies["civil-status"].clone();
            let citizens = fetch(
                &h.http,
                &format!("{civil}/admin/citizens?living=true&limit={}", n + 50),
            )
            .await;
            let people: Vec<Value> = citizens
                .as_array()
                .context("citizens")?
                .iter()
                .filter(|c| c["commune"].is_string() && c["personal_id"] != "001190123456")
                .take(n)
                .cloned()
                .collect();
            anyhow::ensure!(people.len() == n, "only {} citizens to die", people.len());
            let source = "urn:vn:moh:hospital:bach-mai";
            let role = civicflow::auth::Role::Source(source.into());
            let hospital = support::client_with(&h.token(role, "bench hospital").await);
            let today = jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
                .date()
                .to_string();
            let permits = Arc::new(Semaphore::new(args.concurrency.min(64)));
            let began = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (i, c) in people.iter().enumerate() {
                let permit = permits.clone().acquire_owned().await?;
                let deceased = json!({"personal_id": c["personal_id"], "full_name": c["full_name"],
                    "date_of_death": today, "place_of_death": "Bach Mai Hospital"});
                let address = json!({"commune_code": c["commune"], "detail": "on record"});
                let declarant = json!({"personal_id": "001190123456", "full_name": "Nguyễn Thị Lan", "relationship": "con dâu"});
                let (http, url) = if by_events {
                    (hospital.clone(), format!("{}/v1/events", h.url))
                } else {
                    (h.http.clone(), format!("{}/v1/cases", h.url))
                };
                let body = if by_events {
                    json!({"specversion": "1.0", "id": format!("GBT-{i}/certified"), "source": source,
                        "type": "vn.gov.moh.death.certified.v1", "datacontenttype": "application/json",
                        "data": {"certificate_number": format!("GBT-{i}"), "deceased": deceased,
                            "last_address": address, "declarant": declarant}})
                } else {
                    json!({"workflow": "death-registration", "input": {
                        "dossier_number": format!("HOSP-GBT-{i}"), "requester_personal_id": "001190123456",
                        "deceased": deceased, "death_notice_number": format!("GBT-{i}"),
                        "last_address": address,
                        "funeral_allowance": {"requested": false, "organizer": declarant},
                        "result_delivery": "online"}})
                };
                let media = if by_events {
                    "application/cloudevents+json"
                } else {
                    "application/json"
                };
                tasks.spawn(async move {
                    let reply = http
                        .post(url)
                        .header("content-type", media)
                        .body(body.to_string())
                        .send()
                        .await;
                    drop(permit);
                    match reply {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(anyhow::anyhow!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Err(e.into()),
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            while running(h.engine.store()).await? {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let secs = began.elapsed().as_secs_f64();
            println!(
                "round {}, {}: {n} cases in {secs:.2} s, {:.0} cases/s",
                round + 1,
                if by_events {
                    "by events"
                } else {
                    "by the portal"
                },
                n as f64 / secs
            );
            if by_events {
                // Their retention passes: each case's record, history and the start record
                // naming the deceased pseudonymised, one commit per case, as the timers fire.
                let later = h.clock.now() + jiff::SignedDuration::from_hours(24 * 91);
                h.skip_to(&later.to_string());
                let began = Instant::now();
                while erasures_due(h.engine.store(), later).await? {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let secs = began.elapsed().as_secs_f64();
                println!(
                    "round {}, erased when their retention was up: {n} cases in {secs:.2} s, {:.0} cases/s",
                    round + 1,
                    n as f64 / secs
                );
            }
        }
    }
    Ok(())
}

/// Whether any case's erasure is still to do by `until`.
async fn erasures_due<S: Store>(store: &S, until: jiff::Timestamp) -> anyhow::Result<bool> {
    let due = store.due_timers(until, 100_000).await?;
    Ok(due
        .iter()
        .any(|t| t.kind == civicflow::case::TimerKind::Erasure))
}
