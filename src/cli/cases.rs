//! `civicflow cases start|show|list|history|supplement` for the portal's view, and `civicflow case
//! retry|skip|fix|cancel|extend` for an operator acting on one case.

use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::client::{Client, ClientError, read_json};
use super::table::{age, cell, clip, http_status, precise_time, print, table, time};

#[derive(Debug, clap::Subcommand)]
pub enum CasesCommand {
    /// Start a case of a workflow with an input document.
    Start {
        #[arg(long)]
        workflow: String,
        /// A version of the workflow; default: the newest.
        #[arg(long)]
        version: Option<u32>,
        /// The input, a JSON file (`-` for standard input).
        #[arg(long)]
        input: PathBuf,
        /// Makes a retried start return the same case instead of a second one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the case to end and print it then.
        #[arg(long)]
        wait: bool,
    },
    /// A case: its status, steps, results and open incidents.
    Show { id: String },
    /// Cases by business key, workflow or status.
    List {
        /// A business key, `name=value` (e.g. `requester=001190123456`).
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Newest first (default: oldest first).
        #[arg(long)]
        newest: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Where the previous page ended.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Every event of a case's history.
    History { id: String },
    /// Supplement an incomplete dossier: answer an agency's request with what it asked for.
    Supplement {
        id: String,
        /// The request answered (`birth-1`), as `cases show` lists it.
        #[arg(long)]
        request: String,
        /// What was missing, shaped as the case's input, a JSON file (`-` for standard input),
        /// e.g. `{"mother": {"personal_id": "001190123456"}}`.
        #[arg(long)]
        input: PathBuf,
        /// Makes a retried supplement answer the case again instead of a conflict.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CaseCommand {
    /// Retry a step now (a failed, backing-off or waiting step), with a fresh retry budget.
    Retry {
        id: String,
        #[arg(long)]
        step: String,
        /// Why: recorded in the case's history.
        #[arg(long)]
        reason: String,
    },
    /// Skip a step, supplying the output later steps need; without it they are skipped too
    /// (for a refusal on hold: the refusal stands).
    Skip {
        id: String,
        #[arg(long)]
        step: String,
        #[arg(long)]
        reason: String,
        /// The step's output, a JSON file (`-` for standard input).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Correct the case's input and re-run a step under a new revision (a new idempotency key).
    Fix {
        id: String,
        #[arg(long)]
        step: String,
        #[arg(long)]
        reason: String,
        /// The corrected input, whole, a JSON file (`-` for standard input).
        #[arg(long)]
        input: PathBuf,
    },
    /// Cancel a running case.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Give the case its one apology and new return date (Decree 61/2018, Art. 19(9)), at
    /// least a day before the due day.
    Extend {
        id: String,
        /// The late step; without it, the case as a whole.
        #[arg(long)]
        step: Option<String>,
        /// The new return date, `YYYY-MM-DD`: due at its close.
        #[arg(long)]
        until: String,
        /// The apology's reason, as the citizen reads it.
        #[arg(long)]
        reason: String,
        /// A short code the on-time table counts reasons by (default `other`).
        #[arg(long)]
        reason_code: Option<String>,
    },
}

pub async fn cases(client: &Client, command: CasesCommand) -> Result<(), ClientError> {
    match command {
        CasesCommand::Start {
            workflow,
            version,
            input,
            idempotency_key,
            wait,
        } => {
            let body =
                json!({"workflow": workflow, "version": version, "input": read_json(&input)?});
            let mut case = client
                .post("/v1/cases", &body, idempotency_key.as_deref())
                .await?;
            // Each read waits up to 30 s on the server: no polling, whatever the case takes.
            while wait && case["status"] == "running" {
                let path = format!("/v1/cases/{}", cell(&case["id"]));
                case = client.get(&path, &[("wait", "30s".to_owned())]).await?;
            }
            print(client.json, &case, show);
        }
        CasesCommand::Show { id } => {
            let case = client.get(&format!("/v1/cases/{id}"), &[]).await?;
            print(client.json, &case, show);
        }
        CasesCommand::List {
            key,
            workflow,
            status,
            newest,
            limit,
            cursor,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            let given = [
                ("key", key),
                ("workflow", workflow),
                ("status", status),
                ("cursor", cursor),
            ];
            for (name, value) in given {
                if let Some(v) = value {
                    query.push((name, v));
                }
            }
            if newest {
                query.push(("order", "newest".to_owned()));
            }
            let page = client.get("/v1/cases", &query).await?;
            print(client.json, &page, list);
        }
        CasesCommand::History { id } => {
            let history = client.get(&format!("/v1/cases/{id}/history"), &[]).await?;
            print(client.json, &history, events);
        }
        CasesCommand::Supplement {
            id,
            request,
            input,
            idempotency_key,
        } => {
            let body = json!({"request_id": request, "input": read_json(&input)?});
            let case = client
                .post(
                    &format!("/v1/cases/{id}/supplements"),
                    &body,
                    idempotency_key.as_deref(),
                )
                .await?;
            print(client.json, &case, show);
        }
    }
    Ok(())
}

pub async fn case(client: &Client, command: CaseCommand) -> Result<(), ClientError> {
    let (id, action, body) = match command {
        CaseCommand::Retry { id, step, reason } => {
            (id, "retry", json!({"step": step, "reason": reason}))
        }
        CaseCommand::Skip {
            id,
            step,
            reason,
            output,
        } => {
            let mut body = json!({"step": step, "reason": reason});
            if let Some(path) = output {
                body["output"] = read_json(&path)?;
            }
            (id, "skip", body)
        }
        CaseCommand::Fix {
            id,
            step,
            reason,
            input,
        } => {
            let body = json!({"step": step, "reason": reason, "input": read_json(&input)?});
            (id, "fix", body)
        }
        CaseCommand::Cancel { id, reason } => (id, "cancel", json!({"reason": reason})),
        CaseCommand::Extend {
            id,
            step,
            until,
            reason,
            reason_code,
        } => {
            let body =
                json!({"step": step, "until": until, "reason": reason, "reason_code": reason_code});
            (id, "extension", body)
        }
    };
    let case = client
        .post(&format!("/v1/cases/{id}/{action}"), &body, None)
        .await?;
    print(client.json, &case, show);
    Ok(())
}

/// A case for a person: a summary, its steps, its open incidents.
fn show(case: &Value) -> String {
    let mut out = format!(
        "case      {}\nworkflow  {} v{}\nstatus    {}\n",
        cell(&case["id"]),
        cell(&case["workflow"]),
        cell(&case["version"]),
        cell(&case["status"]),
    );
    if case["reason"].is_string() {
        out.push_str(&format!("reason    {}\n", cell(&case["reason"])));
    }
    let keys: Vec<String> = case["business_keys"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "keys      {}\nstarted   {}\ndue       {}\n",
        keys.join(" "),
        time(&case["started_at"]),
        time(&case["due_at"]),
    ));
    if let Some(e) = case.get("extension") {
        out.push_str(&format!(
            "extended  from {} by {}: {} ({})\n",
            time(&e["previous_due"]),
            cell(&e["by"]),
            cell(&e["reason"]),
            cell(&e["reason_code"]),
        ));
    }
    if let Some(l) = case.get("life_event") {
        out.push_str(&format!(
            "tier      {} (event {}, limit {})\n",
            cell(&l["tier"]),
            cell(&l["date"]),
            cell(&l["limit"]),
        ));
    }
    for r in case["supplements"].as_array().into_iter().flatten() {
        let missing: Vec<String> = r["missing"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| cell(&m["name"]))
            .collect();
        out.push_str(&format!(
            "supplement {} {} by {}: {}\n",
            cell(&r["id"]),
            cell(&r["state"]),
            time(&r["due_at"]),
            missing.join(", "),
        ));
    }
    if let Some(escalated) = case["escalated"].as_object() {
        let list: Vec<String> = escalated
            .iter()
            .map(|(step, to)| format!("{step} to {}", cell(to)))
            .collect();
        out.push_str(&format!("escalated {}\n", list.join(", ")));
    }
    out.push('\n');
    let mut steps = table(&[
        "step", "status", "agency", "rev", "attempts", "due", "result",
    ]);
    if let Some(all) = case["steps"].as_object() {
        for (id, s) in all {
            let result = if let Some(r) = s.get("rejection") {
                format!(
                    "refused {}: {}",
                    cell(&r["reason_code"]),
                    cell(&r["message"])
                )
            } else if let Some(e) = s.get("error") {
                cell(e)
            } else if let Some(o) = s.get("output") {
                o.to_string()
            } else {
                s.get("note").map(cell).unwrap_or_default()
            };
            steps.add_row([
                id.clone(),
                cell(&s["status"]),
                cell(&s["agency"]),
                cell(&s["revision"]),
                cell(&s["attempts"]),
                time(&s["due_at"]),
                clip(&result, 70),
            ]);
        }
    }
    out.push_str(&steps.to_string());
    if let Some(incidents) = case["incidents"].as_array().filter(|i| !i.is_empty()) {
        let mut t = table(&["incident", "step", "opened", "message"]);
        for i in incidents {
            t.add_row([
                cell(&i["reason"]),
                cell(&i["step"]),
                time(&i["opened_at"]),
                clip(&cell(&i["message"]), 80),
            ]);
        }
        out.push_str(&format!("\n\n{t}"));
    }
    out
}

fn list(page: &Value) -> String {
    let now = Timestamp::now();
    let mut t = table(&[
        "case",
        "workflow",
        "status",
        "keys",
        "started",
        "age",
        "incidents",
    ]);
    for c in page["items"].as_array().into_iter().flatten() {
        let keys: Vec<String> = c["business_keys"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect())
            .unwrap_or_default();
        t.add_row([
            cell(&c["id"]),
            cell(&c["workflow"]),
            cell(&c["status"]),
            keys.join(" "),
            time(&c["started_at"]),
            age(&c["started_at"], now),
            cell(&c["incidents"]),
        ]);
    }
    with_next(t.to_string(), page)
}

/// A table, and how to get the next page if there is one.
pub fn with_next(table: String, page: &Value) -> String {
    match page["next"].as_str() {
        Some(next) => format!("{table}\n\nmore: --cursor {next}"),
        None => table,
    }
}

/// A history for a person: one line per event, its essentials in the last column.
fn events(history: &Value) -> String {
    let mut t = table(&["seq", "at", "event", "step", "detail"]);
    for e in history["events"].as_array().into_iter().flatten() {
        let mut detail = e.clone();
        if let Some(fields) = detail.as_object_mut() {
            for known in ["seq", "at", "type", "step"] {
                fields.remove(known);
            }
        }
        let detail = detail
            .as_object()
            .map(|m| {
                // What a reader looks for first: who acted and why, what the agency said.
                let first = [
                    "action",
                    "by",
                    "reason",
                    "result",
                    "reason_code",
                    "message",
                    "error",
                    "status",
                    "retry_at",
                    "attempt",
                    "idempotency_key",
                ];
                let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
                pairs
                    .sort_by_key(|(k, _)| first.iter().position(|f| f == k).unwrap_or(first.len()));
                pairs
                    .iter()
                    .map(|(k, v)| match k.as_str() {
                        "status" => format!("status={}", http_status(v)),
                        "retry_at" => format!("retry_at={}", precise_time(v)),
                        _ => format!("{k}={}", cell(v)),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        // Whole: a history is read for its details (when a retry is due, what the agency said).
        t.add_row([
            cell(&e["seq"]),
            precise_time(&e["at"]),
            cell(&e["type"]).replace('_', " "),
            cell(&e["step"]),
            detail,
        ]);
    }
    t.to_string()
}
