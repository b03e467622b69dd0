//! `civicflow store backup FILE` (from a serving civicflow, through its API) and `civicflow
//! store restore FILE --data DIR` (a new store, with no server running on it).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::client::{Client, ClientError, Connection};
use super::table::{cell, print, table};
use crate::store::sled::{DEFAULT_CACHE_MIB, SledStore, read_backup};

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Take a consistent copy of the store of a running civicflow (admin), and check it.
    Backup {
        /// Where the copy goes; written under a temporary name and renamed once checked.
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
    /// Read every record of a store (with no server running on it) and report each damaged
    /// one, with its table and case; exits with 1 if any.
    Check {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// The workflow and adapter files the store's cases ran: how long each keeps personal
        /// data, for cases that ended before their workflow said.
        #[arg(long, default_value = "workflows")]
        workflows: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a store in a new, empty directory from a backup (checked first).
    Restore {
        file: PathBuf,
        /// The data directory to create; it must not hold anything.
        #[arg(long)]
        data: PathBuf,
    },
}

/// Downloads the backup to `file`, checks its format version and checksum, then names it.
pub async fn backup(client: &Client, file: &Path) -> Result<(), ClientError> {
    let partial = file.with_extension("partial");
    let fail = |e: std::io::Error, path: &Path| {
        ClientError::Input(format!("cannot write {}: {e}", path.display()))
    };
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(&partial).map_err(|e| fail(e, &partial))?);
    let downloaded = client.download("/v1/store/backup", &mut out).await;
    let written = downloaded.and_then(|_| {
        let file = out
            .into_inner()
            .map_err(|e| fail(e.into_error(), &partial))?;
        file.sync_all().map_err(|e| fail(e, &partial))
    });
    let checked = written.and_then(|()| {
        let input = std::fs::File::open(&partial).map_err(|e| fail(e, &partial))?;
        read_backup(std::io::BufReader::new(input), |_, _| {}).map_err(|e| {
            ClientError::Input(format!(
                "the backup arrived incomplete or damaged ({e}); take it again"
            ))
        })
    });
    let copied = match checked {
        Ok(copied) => copied,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, file).map_err(|e| fail(e, file))?;
    println!(
        "backup of {} records ({:.1} MB) written to {} and checked",
        copied.records,
        copied.bytes as f64 / 1e6,
        file.display()
    );
    Ok(())
}

/// Builds a store in `data` from the backup in `file`.
pub fn restore(file: &Path, data: &Path) -> anyhow::Result<()> {
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let copied = SledStore::restore_from(std::io::BufReader::new(input), data)?;
    println!(
        "store restored in {} from {} ({} records); start it with `civicflow serve --data {}`",
        data.display(),
        file.display(),
        copied.records,
        data.display()
    );
    Ok(())
}

/// Reads every record of the store in `data`; whether all could be read and no personal data
/// outlived its retention.
pub fn check(data: &Path, workflows: &Path, as_json: bool) -> anyhow::Result<bool> {
    if !data.join("db").exists() {
        anyhow::bail!("{} holds no civicflow store", data.display());
    }
    let store = SledStore::open(data, DEFAULT_CACHE_MIB << 20)?;
    let now = jiff::Timestamp::now();
    let mut checked = store.check(now)?;
    // A case that ended before its workflow had a retention has no time set: it is past it if
    // the retention, counted from its end, is.
    let defs = crate::workflow::definition::Definitions::load(&[workflows.to_owned()]).ok();
    checked.unerased.retain(|u| {
        u.erase_at.is_some()
            || defs
                .as_ref()
                .and_then(|d| d.workflow(&u.workflow, Some(u.version)))
                .and_then(|wf| wf.retention.as_ref().map(|r| r.days))
                .zip(u.finished_at)
                .is_some_and(|(days, ended)| {
                    ended + jiff::SignedDuration::from_hours(24 * i64::from(days)) <= now
                })
    });
    print(as_json, &json!(checked), |c| {
        let mut t = table(&["table", "case", "record", "problem"]);
        for d in c["damaged"].as_array().into_iter().flatten() {
            t.add_row([
                cell(&d["table"]),
                cell(&d["case_id"]),
                cell(&d["record"]),
                cell(&d["detail"]),
            ]);
        }
        let mut out = format!(
            "{} records read, {} damaged",
            checked.records,
            checked.damaged.len()
        );
        if !checked.damaged.is_empty() {
            out = format!("{t}\n\n{out}: restore the cases named from a backup");
        }
        if !checked.unerased.is_empty() {
            let mut u = table(&["case", "workflow", "ended", "erase by"]);
            for e in c["unerased"].as_array().into_iter().flatten() {
                u.add_row([
                    cell(&e["case_id"]),
                    cell(&e["workflow"]),
                    cell(&e["finished_at"]),
                    cell(&e["erase_at"]),
                ]);
            }
            out = format!(
                "{out}\n\n{u}\n\n{} ended case(s) hold personal data past their retention: start the server on this store (it erases them), or ask why its erasure failed in its log",
                checked.unerased.len()
            );
        }
        out
    });
    Ok(checked.damaged.is_empty() && checked.unerased.is_empty())
}
