//! Open dossiers by due date, the most overdue first: the one-stop office's watch over its
//! statutory deadlines (Decree 61/2018, Art. 19(9)), with each escalation, apology and tier.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::forms::*;
use crate::api::ui::session::Session;
use crate::api::ui::views::{local_date, waited};
use crate::api::ui::{UiError, Who, render};
use crate::api::{AppState, deadlines};
use crate::store::Store;
use crate::store::query::{DueRow, Listing};

#[derive(Debug, Default, Deserialize)]
pub struct DeadlinesForm {
    #[serde(default)]
    pub workflow: String,
    #[serde(default)]
    pub agency: String,
    #[serde(default)]
    pub escalated_to: String,
    /// `on`: only those past their due time.
    #[serde(default)]
    pub overdue: String,
    pub cursor: Option<String>,
}

impl DeadlinesForm {
    fn query(&self) -> String {
        [
            ("workflow", &self.workflow),
            ("agency", &self.agency),
            ("escalated_to", &self.escalated_to),
            ("overdue", &self.overdue),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// One row as shown.
pub struct DueLine {
    pub case_id: String,
    pub due: String,
    pub workflow: String,
    /// How long past due; empty while in time.
    pub overdue: String,
    pub step: String,
    pub agency: String,
    pub escalated_to: String,
    pub extended: String,
    pub tier: String,
    /// The citizen's supplement it waits for: the request and what is missing.
    pub waiting: String,
}

#[derive(Template)]
#[template(path = "ui/deadlines.html")]
struct DeadlinesPage {
    who: Option<Who>,
    filter: DeadlinesForm,
    workflows: Vec<String>,
    agencies: Vec<String>,
    targets: Vec<String>,
    rows: Vec<DueLine>,
    damaged: Vec<String>,
    next: Option<String>,
}

pub async fn deadlines<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    Query(filter): Query<DeadlinesForm>,
) -> Result<Response, UiError> {
    let now = state.engine.now();
    let mut query = Map::new();
    for (name, value) in [
        ("workflow", &filter.workflow),
        ("agency", &filter.agency),
        ("escalated_to", &filter.escalated_to),
    ] {
        if !value.is_empty() {
            query.insert(name.to_owned(), json!(value));
        }
    }
    if !filter.overdue.is_empty() {
        query.insert("overdue".to_owned(), json!(true));
    }
    if let Some(cursor) = &filter.cursor {
        query.insert("cursor".to_owned(), json!(cursor));
    }
    query.insert("limit".to_owned(), json!(PAGE));
    let answer = deadlines::list(
        State(state.clone()),
        session.caller(),
        Ok(Query(typed(Value::Object(query))?)),
    )
    .await?;
    let Listing {
        items,
        next,
        damaged,
    }: Listing<DueRow> = answer.0;
    let rows = items
        .into_iter()
        .map(|r| DueLine {
            case_id: r.case_id.to_string(),
            due: local_date(&r.due_at),
            workflow: format!("{}@{}", r.workflow, r.version),
            overdue: if r.overdue {
                waited(&r.due_at, &now)
            } else {
                String::new()
            },
            step: r.step.unwrap_or_else(|| "the case".to_owned()),
            agency: r.agency.unwrap_or_default(),
            escalated_to: r.escalated_to.unwrap_or_default(),
            extended: r
                .extension
                .map(|e| format!("from {}: {}", local_date(&e.previous_due), e.reason))
                .unwrap_or_default(),
            tier: r
                .tier
                .map(|t| t.as_str().replace('_', " "))
                .unwrap_or_default(),
            waiting: r
                .supplement
                .map(|s| {
                    let names: Vec<String> = s.missing.into_iter().map(|m| m.name).collect();
                    format!("the citizen ({}): {}", s.id, names.join(", "))
                })
                .unwrap_or_default(),
        })
        .collect();
    let agencies: Vec<String> = state.engine.agencies().keys().cloned().collect();
    let targets = ["supervisor".to_owned(), "operator".to_owned()]
        .into_iter()
        .chain(agencies.iter().map(|a| format!("agency:{a}")))
        .collect();
    let next = next.map(|c| format!("/ui/deadlines?{}&cursor={}", filter.query(), urlencode(&c)));
    let page = DeadlinesPage {
        who: Some(session.who),
        workflows: workflow_names(&state),
        agencies,
        targets,
        filter,
        rows,
        damaged: damaged.iter().map(|d| d.to_string()).collect(),
        next,
    };
    Ok(render(&page))
}
