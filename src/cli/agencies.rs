//! `civicflow agencies`: which agencies are down, since when, how many steps wait for each;
//! opening a circuit by hand for a planned maintenance, and closing it.

use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::table::{cell, print, table};

#[derive(Debug, clap::Subcommand)]
pub enum AgenciesCommand {
    /// Every agency and its circuit (the default).
    List,
    /// One agency, with its circuit's openings and closings.
    Show { agency: String },
    /// Hold every call to the agency until it is closed again (a planned maintenance).
    Open {
        agency: String,
        /// Why: recorded in the circuit's audit trail.
        #[arg(long)]
        reason: String,
    },
    /// Let calls to the agency go out again; the steps held for it are released at once.
    Close {
        agency: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn agencies(
    client: &Client,
    command: Option<AgenciesCommand>,
) -> Result<(), ClientError> {
    match command.unwrap_or(AgenciesCommand::List) {
        AgenciesCommand::List => {
            let list = client.get("/v1/agencies", &[]).await?;
            print(client.json, &list, |l| {
                let mut t = table(&COLUMNS);
                for a in l["items"].as_array().into_iter().flatten() {
                    t.add_row(row(a));
                }
                t.to_string()
            });
            Ok(())
        }
        AgenciesCommand::Show { agency } => {
            let a = client.get(&format!("/v1/agencies/{agency}"), &[]).await?;
            show(client, &a);
            Ok(())
        }
        AgenciesCommand::Open { agency, reason } => set(client, &agency, "open", &reason).await,
        AgenciesCommand::Close { agency, reason } => set(client, &agency, "closed", &reason).await,
    }
}

async fn set(client: &Client, agency: &str, state: &str, reason: &str) -> Result<(), ClientError> {
    let body = json!({"state": state, "reason": reason});
    let a = client
        .post(&format!("/v1/agencies/{agency}/circuit"), &body, None)
        .await?;
    show(client, &a);
    Ok(())
}

/// The columns of an agency's line; [`row`] fills them.
const COLUMNS: [&str; 6] = [
    "agency",
    "circuit",
    "since",
    "held steps",
    "opened by",
    "last error",
];

fn row(a: &Value) -> [String; 6] {
    [
        cell(&a["agency"]),
        cell(&a["state"]),
        super::table::time(&a["since"]),
        cell(&a["held_steps"]),
        cell(&a["opened_by"]),
        cell(&a["last_error"]),
    ]
}

fn show(client: &Client, a: &Value) {
    print(client.json, a, |a| {
        let mut t = table(&COLUMNS);
        t.add_row(row(a));
        let mut trail = table(&["at", "circuit", "by", "reason"]);
        for c in a["changes"].as_array().into_iter().flatten() {
            trail.add_row([
                super::table::time(&c["at"]),
                cell(&c["state"]),
                cell(&c["by"]),
                cell(&c["reason"]),
            ]);
        }
        format!("{t}\n\n{trail}")
    });
}
