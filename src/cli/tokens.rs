//! `civicflow tokens issue|revoke|list`: an admin hands out and takes back API credentials.

use serde_json::json;

use super::client::{Client, ClientError};
use super::table::{cell, print, table, time};

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Issue a token; its secret is printed once and never shown again.
    Issue {
        /// portal, operator, supervisor, agency:<agency id>, admin or metrics.
        #[arg(long)]
        role: String,
        /// Who holds it ("alice", "portal production").
        #[arg(long)]
        name: String,
    },
    /// Revoke a token by its id: it stops working at once.
    Revoke { id: String },
    /// Every token, revoked ones included.
    List,
}

pub async fn tokens(client: &Client, command: TokensCommand) -> Result<(), ClientError> {
    match command {
        TokensCommand::Issue { role, name } => {
            let body = json!({"role": role, "name": name});
            let issued = client.post("/v1/tokens", &body, None).await?;
            print(client.json, &issued, |t| {
                format!(
                    "token {} ({}, {}):\n{}\n\nkeep it safe: civicflow stores only its digest and cannot show it again",
                    cell(&t["id"]),
                    cell(&t["role"]),
                    cell(&t["name"]),
                    cell(&t["token"])
                )
            });
        }
        TokensCommand::Revoke { id } => {
            let revoked = client.delete(&format!("/v1/tokens/{id}")).await?;
            print(client.json, &revoked, |t| {
                format!(
                    "token {} revoked at {}",
                    cell(&t["id"]),
                    time(&t["revoked_at"])
                )
            });
        }
        TokensCommand::List => {
            let list = client.get("/v1/tokens", &[]).await?;
            print(client.json, &list, |l| {
                let mut t = table(&["id", "role", "name", "created", "by", "revoked"]);
                for x in l["items"].as_array().into_iter().flatten() {
                    t.add_row([
                        cell(&x["id"]),
                        cell(&x["role"]),
                        cell(&x["name"]),
                        time(&x["created_at"]),
                        cell(&x["created_by"]),
                        time(&x["revoked_at"]),
                    ]);
                }
                t.to_string()
            });
        }
    }
    Ok(())
}
