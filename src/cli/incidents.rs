//! `civicflow incidents` (the operators' work list) and `civicflow bulk retry` over the same
//! filters.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::cases::with_next;
use super::client::{Client, ClientError};
use super::table::{age, cell, clip, print, table};

/// Which incidents: every filter narrows.
#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    #[arg(long)]
    pub workflow: Option<String>,
    /// A step id (with --workflow, read straight from its index).
    #[arg(long)]
    pub step: Option<String>,
    #[arg(long)]
    pub agency: Option<String>,
    /// The incident's reason: retries_exhausted, unexpected_reply, deadline_missed,
    /// invalid_data, workflow_not_loaded or refusal_awaiting_action.
    #[arg(long, value_name = "REASON")]
    pub kind: Option<String>,
    /// Opened since: a time (2026-11-23T08:00:00Z) or how long ago (90m, 48h).
    #[arg(long)]
    pub since: Option<String>,
    /// Open for at least this long (90m, 48h).
    #[arg(long)]
    pub older_than: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum BulkCommand {
    /// Retry the step of every incident that matches the filter.
    Retry {
        #[command(flatten)]
        filter: Filter,
        /// Why: recorded in every case's history.
        #[arg(long)]
        reason: String,
    },
}

impl Filter {
    /// The API's form of the filter, with times made absolute.
    fn fields(&self, now: Timestamp) -> Result<Vec<(&'static str, Value)>, ClientError> {
        let mut out = Vec::new();
        let given = [
            ("workflow", &self.workflow),
            ("step", &self.step),
            ("agency", &self.agency),
            ("reason", &self.kind),
        ];
        for (name, value) in given {
            if let Some(v) = value {
                out.push((name, json!(v)));
            }
        }
        if let Some(since) = &self.since {
            let at = match since.parse::<Timestamp>() {
                Ok(t) => t,
                Err(_) => now - ago(since)?,
            };
            out.push(("opened_after", json!(at)));
        }
        if let Some(older) = &self.older_than {
            out.push(("opened_before", json!(now - ago(older)?)));
        }
        Ok(out)
    }
}

fn ago(text: &str) -> Result<SignedDuration, ClientError> {
    text.parse::<SignedDuration>().map_err(|e| {
        ClientError::Input(format!(
            "`{text}` is neither a time nor a duration such as 90m or 48h: {e}"
        ))
    })
}

pub async fn incidents(
    client: &Client,
    filter: &Filter,
    newest: bool,
    limit: usize,
    cursor: Option<String>,
) -> Result<(), ClientError> {
    let now = Timestamp::now();
    let mut query: Vec<(&str, String)> = filter
        .fields(now)?
        .into_iter()
        .map(|(k, v)| (k, cell(&v)))
        .collect();
    query.push(("limit", limit.to_string()));
    if newest {
        query.push(("order", "newest".to_owned()));
    }
    if let Some(c) = cursor {
        query.push(("cursor", c));
    }
    let page = client.get("/v1/incidents", &query).await?;
    print(client.json, &page, |page| {
        let mut t = table(&[
            "opened", "age", "case", "workflow", "step", "agency", "reason", "message",
        ]);
        for i in page["items"].as_array().into_iter().flatten() {
            t.add_row([
                super::table::time(&i["opened_at"]),
                age(&i["opened_at"], now),
                cell(&i["case_id"]),
                cell(&i["workflow"]),
                cell(&i["step"]),
                cell(&i["agency"]),
                cell(&i["reason"]),
                clip(&cell(&i["message"]), 60),
            ]);
        }
        let listed = with_next(t.to_string(), page);
        let mut outages: Vec<String> = page["outages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| match o["opened_by"].as_str() {
                Some(by) => format!(
                    "agency outage: {} is held by hand since {} by {} ({} held steps): {}",
                    cell(&o["agency"]),
                    super::table::time(&o["since"]),
                    cell(&json!(by)),
                    cell(&o["held_steps"]),
                    clip(&cell(&o["reason"]), 80),
                ),
                None => format!(
                    "agency outage: {} has been down since {} ({} held steps); last error: {}",
                    cell(&o["agency"]),
                    super::table::time(&o["since"]),
                    cell(&o["held_steps"]),
                    clip(&cell(&o["last_error"]), 80),
                ),
            })
            .collect();
        outages.extend(page["damaged"].as_array().into_iter().flatten().map(|id| {
            format!(
                "damaged record: case {} cannot be read (`civicflow store check` says which record)",
                cell(id)
            )
        }));
        if outages.is_empty() {
            listed
        } else {
            format!("{}\n\n{listed}", outages.join("\n"))
        }
    });
    Ok(())
}

pub async fn bulk(client: &Client, command: BulkCommand) -> Result<(), ClientError> {
    let BulkCommand::Retry { filter, reason } = command;
    let fields: Map<String, Value> = filter
        .fields(Timestamp::now())?
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let body = json!({"filter": fields, "reason": reason});
    let report = client.post("/v1/bulk/retry", &body, None).await?;
    print(client.json, &report, |r| {
        let mut out = format!(
            "matched {} incident(s); retried {} step(s); refused {}; case-level incidents not retried: {}",
            cell(&r["matched"]),
            cell(&r["retried"]),
            r["refused"].as_array().map_or(0, Vec::len),
            cell(&r["case_incidents_not_retried"]),
        );
        if r["more"] == true {
            out.push_str("\nmore incidents match than one bulk action takes: run it again");
        }
        let refused = r["refused"].as_array().filter(|a| !a.is_empty());
        if let Some(refused) = refused {
            let mut t = table(&["case", "step", "why not"]);
            for x in refused {
                t.add_row([
                    cell(&x["case_id"]),
                    cell(&x["step"]),
                    clip(&cell(&x["message"]), 90),
                ]);
            }
            out.push_str(&format!("\n\n{t}"));
        }
        out
    });
    Ok(())
}
