//! Connecting: the pool of connections, the schema version check (and the migrations, when
//! asked), and how errors name the database.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Client, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use super::batch::{Pending, Workers};
use super::migrate::{self, SCHEMA_VERSION};
use crate::store::StoreError;

/// How long the server lets a civicflow transaction sit idle before ending it. civicflow sends
/// a transaction's statements at once and its commit as soon as their answers are in, so only a
/// stalled node (frozen, swapping, cut off) leaves one idle this long.
const IDLE_IN_TRANSACTION: &str = "5s";

/// How a node connects.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Connections in the pool: the most statements in flight at once (concurrent commits
    /// share PostgreSQL's own group commit).
    pub pool_size: usize,
    /// Apply the migrations the database lacks before anything else.
    pub migrate: bool,
    /// The longest the store waits for the database: to open a connection, for a connection
    /// of the pool, for one statement (`statement_timeout`). A hung server or a lock held
    /// elsewhere is then an error that says so, not a request that never ends.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pool_size: 16,
            migrate: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A civicflow store in a PostgreSQL database, shared by every node connected to it. Cheap to
/// clone.
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: Pool,
    pub(super) place: Place,
    pub(super) exchanges: Arc<Counters>,
    /// Where commits go to be applied, batched, by the workers.
    pub(super) commits: mpsc::Sender<Pending>,
}

/// What this node has asked of the database, counted as it goes.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) round_trips: AtomicU64,
    pub(super) transactions: AtomicU64,
    /// Commits made durable, and the transactions that carried them.
    pub(super) committed: AtomicU64,
    pub(super) groups: AtomicU64,
}

/// How much this node has asked of the database so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchanges {
    /// Requests answered by the database: each read, each claim, each transaction (its
    /// begin, statements and commit are pipelined).
    pub round_trips: u64,
    /// Transactions committed (or rolled back after a failed check): a transaction carries
    /// the commits that arrived together.
    pub transactions: u64,
}

/// Where the database is, as errors and logs name it: user, host, port and database, never
/// the password.
#[derive(Debug, Clone)]
pub(super) struct Place(Arc<str>);

impl Place {
    fn of(config: &tokio_postgres::Config) -> Place {
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("");
        let db = config.get_dbname().unwrap_or(user);
        Place(format!("postgres://{user}@{host}:{port}/{db}").into())
    }

    pub(super) fn error(&self, e: tokio_postgres::Error) -> StoreError {
        // The server's own words (a constraint, a lost connection) are what helps.
        let Some(db) = e.as_db_error() else {
            return StoreError::Io {
                path: self.to_string(),
                detail: e.to_string(),
            };
        };
        let detail = format!("{}: {}", db.code().code(), db.message());
        // Insufficient resources (a full disk, no memory) and a read-only transaction: the
        // server cannot write for now, and takes writes again by itself once it can.
        let code = db.code().code();
        if code.starts_with("53") || code == "25006" {
            return StoreError::Unavailable {
                path: self.to_string(),
                detail,
            };
        }
        StoreError::Io {
            path: self.to_string(),
            detail,
        }
    }

    pub(super) fn pool_error(&self, e: deadpool_postgres::PoolError) -> StoreError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => self.error(e),
            other => StoreError::Io {
                path: self.to_string(),
                detail: other.to_string(),
            },
        }
    }

    pub(super) fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.to_string(),
            detail,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a `postgres://` URL (or `key=value` string) and sets every session's terms:
/// `synchronous_commit` on, whatever the server's default or the URL's options, since a commit
/// must be on disk before civicflow acts on it; and a transaction left idle for
/// [`IDLE_IN_TRANSACTION`] ended by the server, so a node frozen in the middle of a commit does
/// not hold its rows from the other nodes, and a statement cut off after the store's timeout
/// (the URL's `options` may set other values).
fn config(url: &str, timeout: Duration) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Io {
        path: "the --store URL".to_owned(),
        detail: format!("not a PostgreSQL connection URL: {e}"),
    })?;
    let idle = format!(
        "-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION} -c statement_timeout={}",
        timeout.as_millis().max(1)
    );
    let options = match config.get_options() {
        Some(o) => format!("{idle} {o} -c synchronous_commit=on"),
        None => format!("{idle} -c synchronous_commit=on"),
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("civicflow");
    }
    Ok(config)
}

impl PgStore {
    /// Connects to the database at `url`, checks its schema version (applying the migrations
    /// it lacks if `options.migrate`), and keeps a pool of connections.
    pub async fn connect(url: &str, options: Options) -> Result<PgStore, StoreError> {
        let store = PgStore::pool(url, options.pool_size, options.timeout)?;
        let mut client = store.client().await?;
        if options.migrate {
            migrate::migrate(&mut client, &store.place).await?;
        }
        let found = migrate::schema_version(&client, &store.place).await?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: store.place.to_string(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::Unmigrated {
                path: store.place.to_string(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        tokio::spawn(keep_partitions(store.pool.clone(), store.place.clone()));
        Ok(store)
    }

    /// Applies the migrations the database at `url` lacks: the versions applied (none if it
    /// was up to date).
    pub async fn migrate(url: &str) -> Result<Vec<u32>, StoreError> {
        let store = PgStore::pool(url, 1, Options::default().timeout)?;
        let mut client = store.client().await?;
        migrate::migrate(&mut client, &store.place).await
    }

    /// A pool of at most `size` connections to `url`, none opened yet, each wait on the
    /// database at most `timeout`.
    fn pool(url: &str, size: usize, timeout: Duration) -> Result<PgStore, StoreError> {
        let config = config(url, timeout)?;
        let place = Place::of(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Io {
                path: place.to_string(),
                detail: e.to_string(),
            })?;
        let exchanges = Arc::<Counters>::default();
        let workers = Workers {
            pool: pool.clone(),
            place: place.clone(),
            counters: exchanges.clone(),
        };
        Ok(PgStore {
            commits: workers.start(size),
            pool,
            place,
            exchanges,
        })
    }

    /// What this node has asked of the database since it connected.
    pub fn exchanges(&self) -> Exchanges {
        Exchanges {
            round_trips: self.exchanges.round_trips.load(Ordering::Relaxed),
            transactions: self.exchanges.transactions.load(Ordering::Relaxed),
        }
    }

    pub(super) async fn client(&self) -> Result<Client, StoreError> {
        self.pool.get().await.map_err(|e| self.place.pool_error(e))
    }
}

/// How often a node makes sure the history has its partitions for the months ahead.
const PARTITIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Makes the history's monthly partitions for this month and the next three, now and every
/// few hours, for as long as the runtime runs: a partition must exist before its first event,
/// or the event lands in the default partition.
async fn keep_partitions(pool: Pool, place: Place) {
    loop {
        let made = async {
            let client = pool.get().await.map_err(|e| place.pool_error(e))?;
            client
                .execute("SELECT civicflow_event_partitions(3)", &[])
                .await
                .map_err(|e| place.error(e))
        };
        if let Err(e) = made.await {
            tracing::warn!(error = %e, "cannot make the history's partitions for the months ahead");
        }
        tokio::time::sleep(PARTITIONS_EVERY).await;
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgStore({})", self.place)
    }
}
