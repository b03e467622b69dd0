//! `civicflow adapters publish|list|show|deprecate|test|history` and `civicflow workflows
//! publish`: an agency engineer's side of the registry.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::client::{Client, ClientError, read_json, read_text};
use super::table::{cell, print, table, time};

#[derive(Debug, clap::Subcommand)]
pub enum AdaptersCommand {
    /// Publish an adapter manifest; it is checked as `civicflow validate` checks files.
    Publish { manifest: PathBuf },
    /// Every loaded adapter version, bundled or published.
    List,
    /// One adapter version and its manifest, e.g. `police/residence-registration@2`.
    Show { adapter: String },
    /// Deprecate a published version: running cases keep it, new workflows may not pin it.
    Deprecate {
        adapter: String,
        #[arg(long)]
        reason: String,
        /// The version to use instead.
        #[arg(long)]
        replacement: Option<u32>,
    },
    /// Run a manifest against the agency (or a sandbox) with a sample input; no case is touched.
    Test {
        manifest: PathBuf,
        /// The sample step input, a JSON file (`-` for standard input).
        #[arg(long)]
        input: PathBuf,
        /// Where to send it; default: the agency's URL configured on the server.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Every change to the registry: who published or deprecated what, when.
    History,
}

#[derive(Debug, clap::Subcommand)]
pub enum WorkflowsCommand {
    /// Publish a workflow (admin); new cases may start on it at once.
    Publish { workflow: PathBuf },
    /// Every loaded workflow version, with its deadline and steps.
    List,
}

/// `agency/name@version` → the API path of that version.
fn path_of(adapter: &str) -> Result<String, ClientError> {
    let bad = || {
        ClientError::Input(format!(
            "`{adapter}` is not an adapter version; write it as agency/name@version"
        ))
    };
    let (id, version) = adapter.rsplit_once('@').ok_or_else(bad)?;
    let (agency, name) = id.split_once('/').ok_or_else(bad)?;
    let version: u32 = version.parse().map_err(|_| bad())?;
    Ok(format!("/v1/adapters/{agency}/{name}/{version}"))
}

fn published(p: &Value) -> String {
    format!(
        "published {} {}@{} ({})",
        cell(&p["kind"]),
        cell(&p["id"]),
        cell(&p["version"]),
        cell(&p["published_by"])
    )
}

pub async fn adapters(client: &Client, command: AdaptersCommand) -> Result<(), ClientError> {
    match command {
        AdaptersCommand::Publish { manifest } => {
            let done = client
                .post_yaml("/v1/adapters", read_text(&manifest)?)
                .await?;
            print(client.json, &done, published);
        }
        AdaptersCommand::List => {
            let list = client.get("/v1/adapters", &[]).await?;
            print(client.json, &list, |l| {
                let mut t = table(&["adapter", "source", "published", "by", "deprecated"]);
                for a in l["items"].as_array().into_iter().flatten() {
                    let deprecated = match a["deprecated"]["replacement"].as_u64() {
                        Some(r) => format!("yes (use @{r})"),
                        None if a["deprecated"].is_object() => "yes".to_owned(),
                        None => String::new(),
                    };
                    t.add_row([
                        cell(&a["adapter"]),
                        cell(&a["source"]),
                        time(&a["published_at"]),
                        cell(&a["published_by"]),
                        deprecated,
                    ]);
                }
                t.to_string()
            });
        }
        AdaptersCommand::Show { adapter } => {
            let shown = client.get(&path_of(&adapter)?, &[]).await?;
            print(client.json, &shown, |a| {
                format!(
                    "{} ({})\n\n{}",
                    cell(&a["adapter"]),
                    cell(&a["source"]),
                    cell(&a["manifest"])
                )
            });
        }
        AdaptersCommand::Deprecate {
            adapter,
            reason,
            replacement,
        } => {
            let body = json!({"reason": reason, "replacement": replacement});
            let path = format!("{}/deprecate", path_of(&adapter)?);
            let done = client.post(&path, &body, None).await?;
            print(client.json, &done, |p| {
                format!(
                    "deprecated {}@{}: {}",
                    cell(&p["id"]),
                    cell(&p["version"]),
                    cell(&p["deprecated"]["reason"])
                )
            });
        }
        AdaptersCommand::Test {
            manifest,
            input,
            base_url,
        } => {
            let body = json!({
                "manifest": read_text(&manifest)?,
                "input": read_json(&input)?,
                "base_url": base_url,
            });
            let outcome = client.post("/v1/adapters/test", &body, None).await?;
            print(client.json, &outcome, |o| {
                let detail = match o["outcome"].as_str() {
                    Some("success") => format!("output: {}", o["output"]),
                    Some("rejected") => {
                        format!("{}: {}", cell(&o["reason_code"]), cell(&o["message"]))
                    }
                    Some("pending") => cell(&o["message"]),
                    _ => cell(&o["error"]),
                };
                format!(
                    "{}\n{}\n\nrequest: {} {}\nreply:   {}",
                    cell(&o["outcome"]),
                    detail,
                    cell(&o["request"]["method"]),
                    cell(&o["request"]["url"]),
                    o["reply"]
                )
            });
        }
        AdaptersCommand::History => {
            let changes = client.get("/v1/registry/changes", &[]).await?;
            print(client.json, &changes, |c| {
                let mut t = table(&["at", "action", "definition", "by", "note"]);
                for x in c["items"].as_array().into_iter().flatten() {
                    t.add_row([
                        time(&x["at"]),
                        cell(&x["action"]),
                        format!(
                            "{} {}@{}",
                            cell(&x["kind"]),
                            cell(&x["id"]),
                            cell(&x["version"])
                        ),
                        cell(&x["by"]),
                        cell(&x["note"]),
                    ]);
                }
                t.to_string()
            });
        }
    }
    Ok(())
}

pub async fn workflows(client: &Client, command: WorkflowsCommand) -> Result<(), ClientError> {
    match command {
        WorkflowsCommand::Publish { workflow } => {
            let done = client
                .post_yaml("/v1/workflows", read_text(&workflow)?)
                .await?;
            print(client.json, &done, published);
        }
        WorkflowsCommand::List => {
            let list = client.get("/v1/workflows", &[]).await?;
            print(client.json, &list, |l| {
                let mut t = table(&["workflow", "deadline", "steps", "source", "new cases"]);
                for w in l["items"].as_array().into_iter().flatten() {
                    let steps: Vec<String> = w["steps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| format!("{} ({})", cell(&s["id"]), cell(&s["adapter"])))
                        .collect();
                    t.add_row([
                        format!("{}@{}", cell(&w["workflow"]), cell(&w["version"])),
                        cell(&w["deadline"]),
                        steps.join(", "),
                        cell(&w["source"]),
                        if w["newest"] == true { "yes" } else { "" }.to_owned(),
                    ]);
                }
                t.to_string()
            });
        }
    }
    Ok(())
}
