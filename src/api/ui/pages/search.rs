//! A citizen's cases, by business key.

use std::collections::BTreeSet;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::forms::*;
use crate::api::ui::session::Session;
use crate::api::ui::views::{self, local, local_date};
use crate::api::ui::{UiError, Who, render};
use crate::api::{AppState, cases};
use crate::store::Store;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

pub struct CaseLine {
    pub id: String,
    pub workflow: String,
    pub status: String,
    pub started_at: String,
    pub due: String,
    pub keys: String,
}

#[derive(Template)]
#[template(path = "ui/search.html")]
struct SearchPage {
    who: Option<Who>,
    names: Vec<String>,
    name: String,
    value: String,
    searched: bool,
    cases: Vec<CaseLine>,
}

/// A citizen's cases by a business key (a personal ID, a dossier number).
pub async fn search<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    Query(q): Query<SearchQuery>,
) -> Result<Response, UiError> {
    let names: Vec<String> = state
        .engine
        .definitions()
        .workflows()
        .flat_map(|wf| wf.business_keys.iter().map(|(name, _)| name.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut cases = Vec::new();
    let searched = !q.value.trim().is_empty();
    if searched {
        let listed = cases::list(
            State(state.clone()),
            session.caller(),
            Ok(Query(typed(json!({
                "key": format!("{}={}", q.name, q.value.trim()),
                "order": "newest",
                "limit": PAGE,
            }))?)),
        )
        .await?;
        let found: Vec<views::CaseSummary> = typed(listed.0["items"].clone())?;
        cases = found
            .into_iter()
            .map(|c| CaseLine {
                keys: c
                    .business_keys
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                started_at: local(&c.started_at),
                due: c.due_at.as_ref().map(local_date).unwrap_or_default(),
                id: c.id,
                workflow: c.workflow,
                status: c.status,
            })
            .collect();
    }
    let page = SearchPage {
        who: Some(session.who),
        names,
        name: q.name,
        value: q.value,
        searched,
        cases,
    };
    Ok(render(&page))
}
