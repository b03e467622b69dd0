//! `civicflow audit`: check a whole audit log offline (a store, a backup, or a running node
//! through its API) against the public keys an auditor trusts; print a node's public key; and
//! show a case's entries, each proven to be in the signed log.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use super::client::{Client, ClientError, Connection};
use super::table::{cell, print, table};
use crate::audit::merkle::{Hash, leaf_hash, verify_inclusion};
use crate::audit::verify::{Source, StoreSource, Verified, VerifyError, verify};
use crate::audit::{HeadSigner, TreeHead, TrustedKeys};
use crate::store::postgres::{Options, PgStore};
use crate::store::sled::{DEFAULT_CACHE_MIB, SledStore};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check every entry, every signed tree head and the chain between them; names the first
    /// entry (or head) that does not match, and exits with 1.
    Verify {
        #[command(flatten)]
        from: LogSource,
        /// The public keys trusted to sign heads: lines `<key id> <public key>`, as
        /// `civicflow audit public-key` prints them, one per key the log was ever signed with.
        #[arg(long, value_name = "FILE")]
        trusted: PathBuf,
        /// A head kept from before (its JSON, as the API gave it): the log must extend it.
        #[arg(long, value_name = "FILE")]
        kept: Option<PathBuf>,
        /// The auditor's token, with `--server`.
        #[arg(
            long,
            env = "CIVICFLOW_TOKEN",
            hide_env_values = true,
            requires = "server"
        )]
        token: Option<String>,
    },
    /// Print the public half of an audit signing key, `<key id> <public key>`, for auditors.
    PublicKey {
        /// The key file (`serve --audit-key-file`); default `<data>.audit-key`.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// The data directory beside which the default key file is.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// A case's entries in the log of a running civicflow (auditor), each with its inclusion
    /// proof checked against the latest head, itself checked against the trusted keys.
    Case {
        case_id: String,
        #[arg(long, value_name = "FILE")]
        trusted: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Where `audit verify` reads the log: one of a store, a backup, a server.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct LogSource {
    /// A sled data directory (no server running on it).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// A PostgreSQL store, `postgres://…`.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// A backup file (`civicflow store backup`), restored into a temporary directory.
    #[arg(long, value_name = "FILE")]
    backup: Option<PathBuf>,
    /// A running civicflow, read through its API with an auditor's token
    /// (`--token`/`CIVICFLOW_TOKEN`).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

fn trusted_keys(path: &Path) -> anyhow::Result<TrustedKeys> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    TrustedKeys::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs `audit verify`; whether the log verified.
pub async fn verify_command(
    from: LogSource,
    token: Option<String>,
    trusted: &Path,
    kept: Option<&Path>,
) -> anyhow::Result<bool> {
    let trusted = trusted_keys(trusted)?;
    let kept: Option<TreeHead> = match kept {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a tree head", path.display()))?,
            )
        }
        None => None,
    };
    let outcome = if let Some(dir) = &from.data {
        anyhow::ensure!(
            dir.join("db").exists(),
            "{} holds no civicflow store",
            dir.display()
        );
        let store = SledStore::open(dir, DEFAULT_CACHE_MIB << 20)?;
        verify(&StoreSource(store), &trusted, kept.as_ref()).await
    } else if let Some(file) = &from.backup {
        let dir = std::env::temp_dir().join(format!("civicflow-audit-{}", uuid::Uuid::new_v4()));
        let input =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        SledStore::restore_from(std::io::BufReader::new(input), &dir)?;
        let store = SledStore::open(&dir, DEFAULT_CACHE_MIB << 20)?;
        let outcome = verify(&StoreSource(store), &trusted, kept.as_ref()).await;
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    } else if let Some(url) = &from.store {
        let options = Options {
            pool_size: 2,
            ..Options::default()
        };
        let store = PgStore::connect(url, options).await?;
        verify(&StoreSource(store), &trusted, kept.as_ref()).await
    } else {
        let connection = Connection {
            server: from.server.clone().unwrap_or_default(),
            token,
            data: PathBuf::from("data"),
            json: false,
        };
        let client = Client::new(&connection)?;
        verify(&ApiSource(client), &trusted, kept.as_ref()).await
    };
    match outcome {
        Ok(Verified {
            entries,
            heads,
            latest,
            unsigned,
        }) => {
            let latest = latest.map_or_else(
                || "no head signed yet".to_owned(),
                |h| format!("the latest signed at {} by key {}", h.timestamp, h.key_id),
            );
            println!("ok: {entries} entries, {heads} signed tree heads ({latest})");
            if unsigned > 0 {
                println!("{unsigned} entries after the latest head are chained but not signed yet");
            }
            Ok(true)
        }
        Err(VerifyError::Mismatch(m)) => {
            eprintln!("the audit log does not verify: {m}");
            Ok(false)
        }
        Err(e @ VerifyError::Read(_)) => Err(e.into()),
    }
}

/// A running civicflow's log, read through its API.
struct ApiSource(Client);

impl Source for ApiSource {
    async fn entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let query = [
            ("from", from.to_string()),
            ("limit", limit.min(1000).to_string()),
        ];
        let page = self
            .0
            .get("/v1/audit/entries", &query)
            .await
            .map_err(|e| e.to_string())?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .map(|e| {
                let index = e["index"].as_u64().ok_or("an entry without an index")?;
                let raw = e["raw"].as_str().ok_or("an entry without its bytes")?;
                Ok((index, raw.as_bytes().to_vec()))
            })
            .collect()
    }

    async fn heads(&self) -> Result<Vec<TreeHead>, String> {
        let mut heads: Vec<TreeHead> = Vec::new();
        loop {
            let from = heads.last().map_or(0, |h| h.size + 1);
            let page = self
                .0
                .get("/v1/audit/heads", &[("from_size", from.to_string())])
                .await
                .map_err(|e| e.to_string())?;
            let page: Vec<TreeHead> =
                serde_json::from_value(page).map_err(|e| format!("a head cannot be read: {e}"))?;
            let done = page.len() < 1000;
            heads.extend(page);
            if done {
                return Ok(heads);
            }
        }
    }
}

/// Prints the public key of the key file.
pub fn public_key(key_file: Option<&Path>, data: &Path) -> anyhow::Result<()> {
    let path = key_file.map_or_else(
        || {
            let mut name = data.to_owned().into_os_string();
            name.push(".audit-key");
            PathBuf::from(name)
        },
        Path::to_owned,
    );
    let seed = crate::secret_file::load(&path, "audit signing key")?;
    println!("{}", HeadSigner::from_seed(seed).public_line());
    Ok(())
}

fn hash_of(text: &str) -> Result<Hash, ClientError> {
    hex::decode(text)
        .ok()
        .and_then(|b| Hash::try_from(b).ok())
        .ok_or_else(|| ClientError::Input(format!("`{text}` is not a hash")))
}

/// Shows a case's entries, each proven to be in the latest signed head.
pub async fn case(
    client: &Client,
    case_id: &str,
    trusted: &TrustedKeys,
) -> Result<(), ClientError> {
    let head: TreeHead =
        serde_json::from_value(client.get("/v1/audit/heads/latest", &[]).await?)
            .map_err(|e| ClientError::Input(format!("the latest head cannot be read: {e}")))?;
    let root = trusted
        .verify(&head)
        .map_err(|e| ClientError::Input(format!("the latest head is refused: {e}")))?;
    let page = client
        .get("/v1/audit/entries", &[("case_id", case_id.to_owned())])
        .await?;
    let mut shown = Vec::new();
    for e in page["entries"].as_array().into_iter().flatten() {
        let index = e["index"].as_u64().unwrap_or_default();
        let proven = if index >= head.size {
            "not signed yet".to_owned()
        } else {
            let proof = client
                .get(
                    "/v1/audit/proofs/inclusion",
                    &[
                        ("index", index.to_string()),
                        ("size", head.size.to_string()),
                    ],
                )
                .await?;
            let path = proof["proof"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| hash_of(h.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()?;
            let leaf = leaf_hash(e["raw"].as_str().unwrap_or_default().as_bytes());
            if verify_inclusion(&leaf, index, head.size, &path, &root) {
                format!("in the head of size {}", head.size)
            } else {
                "THE PROOF DOES NOT VERIFY".to_owned()
            }
        };
        let mut row = e["entry"]["record"].clone();
        row["index"] = json!(index);
        row["logged_at"] = e["entry"]["logged_at"].clone();
        row["proven"] = json!(proven);
        shown.push(row);
    }
    let failed = shown
        .iter()
        .any(|r| r["proven"] == "THE PROOF DOES NOT VERIFY");
    print(client.json, &Value::Array(shown), |rows| {
        let mut t = table(&[
            "index",
            "logged at",
            "kind",
            "step",
            "outcome or action",
            "by",
            "proven",
        ]);
        for r in rows.as_array().into_iter().flatten() {
            let what = if r["outcome"].is_null() {
                &r["action"]
            } else {
                &r["outcome"]
            };
            t.add_row([
                cell(&r["index"]),
                cell(&r["logged_at"]),
                cell(&r["kind"]),
                cell(&r["step"]),
                cell(what),
                cell(&r["by"]),
                cell(&r["proven"]),
            ]);
        }
        format!(
            "{t}\n\nhead of size {} signed at {} by key {}: its signature verifies",
            head.size, head.timestamp, head.key_id
        )
    });
    if failed {
        return Err(ClientError::Input(
            "an entry's inclusion proof does not verify: the log was altered".into(),
        ));
    }
    Ok(())
}

/// The trusted keys of `audit case`, read before the client runs.
pub fn trusted_for_case(path: &Path) -> Result<TrustedKeys, ClientError> {
    trusted_keys(path).map_err(|e| ClientError::Input(e.to_string()))
}
