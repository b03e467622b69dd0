//! The incident list, filtered, paged by cursor.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::forms::*;
use crate::api::ui::session::Session;
use crate::api::ui::views::{self, IncidentPage, incident_sentence, local, waited};
use crate::api::ui::{UiError, Who, render};
use crate::api::{AppState, operators};
use crate::case::IncidentReason;
use crate::store::Store;

#[derive(Debug, Deserialize)]
pub struct IncidentsQuery {
    #[serde(flatten)]
    filter: IncidentFilterForm,
    cursor: Option<String>,
}

/// One row of the incident list as shown.
pub struct IncidentLine {
    pub case_id: String,
    pub what: String,
    pub workflow: String,
    pub step: String,
    pub agency: String,
    pub reason: String,
    pub waited: String,
    pub opened_at: String,
}

#[derive(Template)]
#[template(path = "ui/incidents.html")]
struct IncidentsPage {
    who: Option<Who>,
    filter: IncidentFilterForm,
    workflows: Vec<String>,
    agencies: Vec<String>,
    reasons: Vec<&'static str>,
    rows: Vec<IncidentLine>,
    outages: Vec<views::Outage>,
    damaged: Vec<String>,
    next: Option<String>,
}

pub async fn incidents<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    Query(q): Query<IncidentsQuery>,
) -> Result<Response, UiError> {
    let now = state.engine.now();
    let mut query = q.filter.api_fields(now);
    if q.filter.order == "newest" {
        query.insert("order".to_owned(), json!("newest"));
    }
    if let Some(cursor) = &q.cursor {
        query.insert("cursor".to_owned(), json!(cursor));
    }
    query.insert("limit".to_owned(), json!(PAGE));
    let answer = operators::incidents(
        State(state.clone()),
        session.caller(),
        Ok(Query(typed(Value::Object(query))?)),
    )
    .await?;
    let page: IncidentPage = decode(answer)?;
    let rows = page
        .items
        .into_iter()
        .map(|r| IncidentLine {
            what: views::shortened(&incident_sentence(
                &r.reason,
                r.agency.as_deref(),
                &r.message,
            )),
            waited: waited(&r.opened_at, &now),
            opened_at: local(&r.opened_at),
            workflow: format!("{}@{}", r.workflow, r.version),
            step: r.step.unwrap_or_default(),
            agency: r.agency.unwrap_or_default(),
            reason: r.reason,
            case_id: r.case_id,
        })
        .collect();
    let next = page.next.map(|c| {
        format!(
            "/ui/incidents?{}&cursor={}",
            q.filter.query(),
            urlencode(&c)
        )
    });
    let page = IncidentsPage {
        who: Some(session.who),
        workflows: workflow_names(&state),
        agencies: state.engine.agencies().keys().cloned().collect(),
        reasons: IncidentReason::ALL.iter().map(|r| r.as_str()).collect(),
        filter: q.filter,
        rows,
        outages: page.outages,
        damaged: page.damaged,
        next,
    };
    Ok(render(&page))
}
