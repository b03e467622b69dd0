//! `civicflow deadlines`: open dossiers by due time, the most overdue first, with their
//! escalation, the case's apology and new date, and the life event's tier.

use jiff::Timestamp;
use serde_json::Value;

use super::cases::with_next;
use super::client::{Client, ClientError};
use super::table::{age, cell, clip, print, table, time};

/// Which due times: every filter narrows.
#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    #[arg(long)]
    pub workflow: Option<String>,
    #[arg(long)]
    pub agency: Option<String>,
    /// Escalated to: `supervisor`, `operator` or `agency:<id>`.
    #[arg(long)]
    pub escalated_to: Option<String>,
    /// Only those whose due time has passed.
    #[arg(long)]
    pub overdue: bool,
}

pub async fn deadlines(
    client: &Client,
    filter: &Filter,
    limit: usize,
    cursor: Option<String>,
) -> Result<(), ClientError> {
    let mut query = vec![("limit", limit.to_string())];
    let given = [
        ("workflow", &filter.workflow),
        ("agency", &filter.agency),
        ("escalated_to", &filter.escalated_to),
        ("cursor", &cursor),
    ];
    for (name, value) in given {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    if filter.overdue {
        query.push(("overdue", "true".to_owned()));
    }
    let page = client.get("/v1/deadlines", &query).await?;
    print(client.json, &page, rows);
    Ok(())
}

fn rows(page: &Value) -> String {
    let now = Timestamp::now();
    let mut t = table(&[
        "due",
        "overdue",
        "case",
        "step",
        "agency",
        "escalated",
        "extended",
        "tier",
    ]);
    for r in page["items"].as_array().into_iter().flatten() {
        let overdue = if r["overdue"] == true {
            age(&r["due_at"], now)
        } else {
            String::new()
        };
        let extended = r
            .get("extension")
            .map(|e| {
                clip(
                    &format!("from {}: {}", time(&e["previous_due"]), cell(&e["reason"])),
                    50,
                )
            })
            .unwrap_or_default();
        t.add_row([
            time(&r["due_at"]),
            overdue,
            cell(&r["case_id"]),
            r.get("step")
                .map(cell)
                .unwrap_or_else(|| "(case)".to_owned()),
            cell(&r["agency"]),
            cell(&r["escalated_to"]),
            extended,
            cell(&r["tier"]),
            r.get("supplement")
                .map(|s| format!("the citizen ({})", cell(&s["id"])))
                .unwrap_or_default(),
        ]);
    }
    with_next(t.to_string(), page)
}
