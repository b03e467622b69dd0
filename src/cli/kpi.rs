//! `civicflow kpi`: the on-time table, as the government reads it.

use serde_json::Value;

use super::client::{Client, ClientError};
use super::table::{cell, print, table};

/// The period and what narrows it; the server's defaults (this month so far) when left out.
#[derive(Debug, Clone, clap::Args)]
pub struct Period {
    /// First day, included (2026-11-01).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, included (default: today).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub workflow: Option<String>,
    /// Only this agency's steps.
    #[arg(long)]
    pub agency: Option<String>,
}

/// A rate as a percentage with one decimal, or `-` when there is none.
fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

pub async fn kpi(client: &Client, period: &Period) -> Result<(), ClientError> {
    let given = [
        ("from", &period.from),
        ("to", &period.to),
        ("workflow", &period.workflow),
        ("agency", &period.agency),
    ];
    let query: Vec<(&str, String)> = given
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
    let report = client.get("/v1/kpis", &query).await?;
    print(client.json, &report, |r| {
        let mut t = table(&[
            "workflow",
            "agency",
            "step",
            "on time",
            "extended",
            "late",
            "open in time",
            "open overdue",
            "awaiting citizen",
            "on-time rate",
            "days p50",
            "days p90",
        ]);
        for w in r["workflows"].as_array().into_iter().flatten() {
            let whole = std::iter::once(&w["cases"]).filter(|c| !c.is_null());
            let rows = whole
                .map(|c| ("(whole case)".to_owned(), "".to_owned(), c))
                .chain(
                    w["steps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| (cell(&s["agency"]), cell(&s["step"]), s)),
                );
            for (agency, step, f) in rows {
                t.add_row([
                    cell(&w["workflow"]),
                    agency,
                    step,
                    cell(&f["finished_on_time"]),
                    cell(&f["finished_extended"]),
                    cell(&f["finished_late"]),
                    cell(&f["open_in_time"]),
                    cell(&f["open_overdue"]),
                    cell(&f["open_awaiting_citizen"]),
                    percent(&f["on_time_rate"]),
                    cell(&f["working_days_median"]),
                    cell(&f["working_days_p90"]),
                ]);
            }
        }
        let mut law = table(&["workflow", "started by tier", "new dates by reason"]);
        let counted = |v: &serde_json::Value| {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| format!("{k} {}", cell(n)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let mut any = false;
        for w in r["workflows"].as_array().into_iter().flatten() {
            if w["tiers"].is_object() || w["extensions"].is_object() {
                any = true;
                law.add_row([
                    cell(&w["workflow"]),
                    counted(&w["tiers"]),
                    counted(&w["extensions"]),
                ]);
            }
        }
        let law = if any {
            format!("\n\n{law}")
        } else {
            String::new()
        };
        format!(
            "{} to {} (finished in the period by their due time, extended: by the apology's new date; open: started in it)\n\n{t}{law}",
            cell(&r["from"]),
            cell(&r["to"])
        )
    });
    Ok(())
}
