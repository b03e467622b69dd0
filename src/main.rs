//! The `civicflow` binary: a thin shell over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use civicflow::cli;
use clap::{Parser, Subcommand};

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
    /// Run the engine and the HTTP API on the embedded store.
    Serve(cli::serve::ServeArgs),
    /// Print the JSON Schema of a definition file kind.
    Schema {
        #[arg(value_enum)]
        kind: cli::schema::FileKind,
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
            let ok = cli::validate::run(&paths, &mut std::io::stdout().lock())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Serve(serve) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "civicflow=info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            tokio::runtime::Runtime::new()?.block_on(cli::serve::run(serve))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { kind } => {
            print!("{}", cli::schema::render(kind));
            Ok(ExitCode::SUCCESS)
        }
    }
}
