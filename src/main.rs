//! The `civicflow` binary: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use civicflow::cli;
use civicflow::cli::client::{Client, ClientError, Connection};
use civicflow::traces::Traces;
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the engine allocates and frees across threads all
/// the time (a commit is encoded on a Tokio worker and freed on the store's writer), which is
/// where glibc's allocator spent a quarter of the CPU under load (docs/performance.md). Built
/// without transparent huge pages: with them its arenas made the idle server 55 MiB larger.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// civicflow: durable orchestration of interlinked public services.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow and adapter files; print every problem.
    Validate {
        /// Files or directories (default: workflows/).
        paths: Vec<PathBuf>,
    },
    /// Run one node: the engine and the HTTP API, on the embedded store or a shared database.
    Serve(Box<cli::serve::ServeArgs>),
    /// Bring a PostgreSQL database's schema up to this civicflow's version.
    Migrate {
        /// The database, `postgres://user@host:port/db`.
        #[arg(long, env = "CIVICFLOW_STORE", value_name = "URL")]
        store: String,
    },
    /// Print the JSON Schema of a definition file kind.
    Schema {
        #[arg(value_enum)]
        kind: cli::schema::FileKind,
    },
    /// Print the OpenAPI document of the HTTP API (docs/openapi.json is its output).
    Openapi,
    /// Start, show and list cases (the portal's view).
    Cases {
        #[command(subcommand)]
        command: cli::cases::CasesCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Act on one case: retry, skip or fix a step, cancel the case, or give it its apology and
    /// new date.
    Case {
        #[command(subcommand)]
        command: cli::cases::CaseCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open incidents: the cases that need a person, oldest first.
    Incidents {
        #[command(flatten)]
        filter: cli::incidents::Filter,
        /// Newest first.
        #[arg(long)]
        newest: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open dossiers by due time, the most overdue first: each step still at its agency and
    /// each running case, with its escalation, extension and tier.
    Deadlines {
        #[command(flatten)]
        filter: cli::deadlines::Filter,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Act on every case an incident filter matches.
    Bulk {
        #[command(subcommand)]
        command: cli::incidents::BulkCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// The on-time table: per workflow and per step at each agency, finished on time or late,
    /// open in time or overdue, the on-time rate and working days taken.
    Kpi {
        #[command(flatten)]
        period: cli::kpi::Period,
        #[command(flatten)]
        connection: Connection,
    },
    /// The agencies and their circuits: which are down, the steps held for them; open or
    /// close a circuit by hand (a planned maintenance).
    Agencies {
        #[command(subcommand)]
        command: Option<cli::agencies::AgenciesCommand>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Back up the store of a running civicflow, or restore one from a backup.
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
    },
    /// Check the audit log (a store, a backup or a running civicflow) against the trusted
    /// keys, print a signing key's public half, show a case's entries with their proofs.
    Audit {
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// Publish, list, show, deprecate and test adapters (agencies, admin).
    Adapters {
        #[command(subcommand)]
        command: cli::adapters::AdaptersCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Publish workflows (admin).
    Workflows {
        #[command(subcommand)]
        command: cli::adapters::WorkflowsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Issue, revoke and list API tokens (admin).
    Tokens {
        #[command(subcommand)]
        command: cli::tokens::TokensCommand,
        #[command(flatten)]
        connection: Connection,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    match args.command {
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("workflows")]
            } else {
                paths
            };
            match cli::validate::run(&paths, &mut std::io::stdout().lock()) {
                Ok(true) => Ok(ExitCode::SUCCESS),
                Ok(false) => Ok(ExitCode::FAILURE),
                // The reader went away (`… | head`): end quietly, as SIGPIPE ends a Unix tool.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    Ok(ExitCode::from(cli::CLOSED_PIPE))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Serve(serve) => {
            let traces = Arc::new(Traces::from_config(serve.otlp_endpoint.as_deref())?);
            logging(serve.log_format, &traces);
            tokio::runtime::Runtime::new()?.block_on(cli::serve::run(*serve, traces))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { store } => {
            let applied = tokio::runtime::Runtime::new()?
                .block_on(civicflow::store::postgres::PgStore::migrate(&store))?;
            match applied.as_slice() {
                [] => println!(
                    "the database is at schema version {} already",
                    civicflow::store::postgres::SCHEMA_VERSION
                ),
                versions => println!(
                    "applied migration(s) {}; the database is at schema version {}",
                    versions
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    civicflow::store::postgres::SCHEMA_VERSION
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { kind } => {
            print!("{}", cli::schema::render(kind));
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", civicflow::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cases {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::cases::cases(&c, command).await
        }),
        Command::Case {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::cases::case(&c, command).await
        }),
        Command::Incidents {
            filter,
            newest,
            limit,
            cursor,
            connection,
        } => client(&connection, |c| async move {
            cli::incidents::incidents(&c, &filter, newest, limit, cursor).await
        }),
        Command::Deadlines {
            filter,
            limit,
            cursor,
            connection,
        } => client(&connection, |c| async move {
            cli::deadlines::deadlines(&c, &filter, limit, cursor).await
        }),
        Command::Bulk {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::incidents::bulk(&c, command).await
        }),
        Command::Kpi { period, connection } => {
            client(
                &connection,
                |c| async move { cli::kpi::kpi(&c, &period).await },
            )
        }
        Command::Store { command } => match command {
            cli::store::StoreCommand::Backup { file, connection } => {
                client(&connection, |c| async move {
                    cli::store::backup(&c, &file).await
                })
            }
            cli::store::StoreCommand::Check {
                data,
                workflows,
                json,
            } => {
                if cli::store::check(&data, &workflows, json)? {
                    Ok(ExitCode::SUCCESS)
                } else {
                    Ok(ExitCode::FAILURE)
                }
            }
            cli::store::StoreCommand::Restore { file, data } => {
                cli::store::restore(&file, &data)?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Audit { command } => match command {
            cli::audit::AuditCommand::Verify {
                from,
                trusted,
                kept,
                token,
            } => {
                let verified = tokio::runtime::Runtime::new()?.block_on(
                    cli::audit::verify_command(from, token, &trusted, kept.as_deref()),
                )?;
                Ok(if verified {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            cli::audit::AuditCommand::PublicKey { key_file, data } => {
                cli::audit::public_key(key_file.as_deref(), &data)?;
                Ok(ExitCode::SUCCESS)
            }
            cli::audit::AuditCommand::Case {
                case_id,
                trusted,
                connection,
            } => client(&connection, |c| async move {
                let trusted = cli::audit::trusted_for_case(&trusted)?;
                cli::audit::case(&c, &case_id, &trusted).await
            }),
        },
        Command::Agencies {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::agencies::agencies(&c, command).await
        }),
        Command::Adapters {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::adapters::adapters(&c, command).await
        }),
        Command::Workflows {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::adapters::workflows(&c, command).await
        }),
        Command::Tokens {
            command,
            connection,
        } => client(&connection, |c| async move {
            cli::tokens::tokens(&c, command).await
        }),
    }
}

/// Runs a client command; an API refusal or an unreachable server is a message on stderr and
/// exit status 1, not a backtrace.
fn client<F, Fut>(connection: &Connection, run: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let outcome = Client::new(connection).and_then(|c| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Input(e.to_string()))?
            .block_on(run(c))
    });
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The server's log (stderr), as text or JSON lines, filtered by `RUST_LOG` (default: civicflow
/// at `info`); and, when traces are exported, the spans of `tracing` (each API request's) sent
/// with them.
fn logging(format: cli::serve::LogFormat, traces: &Traces) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "civicflow=info".into());
    let text = (format == cli::serve::LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (format == cli::serve::LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let otel = traces
        .tracer()
        .map(|t| tracing_opentelemetry::layer().with_tracer(t.clone()));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Args::command().debug_assert();
    }
}
