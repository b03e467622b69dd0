//! A supervisor's retry of every incident a filter matches, after a confirmation.

use askama::Template;
use axum::Json;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::forms::*;
use crate::api::ui::session::Session;
use crate::api::ui::views::IncidentPage;
use crate::api::ui::{UiError, Who, render};
use crate::api::{AppState, operators};
use crate::store::Store;

#[derive(Debug, Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    filter: IncidentFilterForm,
    /// How many incidents the operator was shown and confirmed; absent on the first post. Text:
    /// a flattened form reads every value as text.
    confirmed: Option<String>,
    /// Why (the filter has a `reason` of its own: the incidents' reason).
    #[serde(default)]
    bulk_reason: String,
}

#[derive(Template)]
#[template(path = "ui/bulk.html")]
struct BulkPage {
    who: Option<Who>,
    filter: IncidentFilterForm,
    /// Before: how many incidents match. After: how many were retried.
    count: usize,
    capped: bool,
    confirmed: bool,
    reason: String,
    error: String,
    retried: u64,
    refused: Vec<String>,
    more: bool,
}

/// A supervisor's retry of every incident the list's filter matches: first a confirmation that
/// says how many it touches, then the retry.
pub async fn bulk_retry<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    headers: HeaderMap,
    Form(f): Form<BulkForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &f.csrf)?;
    let now = state.engine.now();
    let fields = f.filter.api_fields(now);
    let mut page = BulkPage {
        who: Some(session.who.clone()),
        filter: f.filter.clone(),
        count: 0,
        capped: false,
        confirmed: false,
        reason: f.bulk_reason.clone(),
        error: String::new(),
        retried: 0,
        refused: Vec::new(),
        more: false,
    };
    if let Some(count) = f.confirmed.as_deref().and_then(|c| c.parse().ok()) {
        page.count = count;
        let body = json!({
            "filter": Value::Object(fields.clone()),
            "reason": f.bulk_reason,
            "confirmed": count,
        });
        let done = operators::bulk_retry(
            State(state.clone()),
            session.caller(),
            Ok(Json(typed(body)?)),
        )
        .await;
        match done {
            Ok(Json(answer)) => {
                page.confirmed = true;
                page.retried = answer["retried"].as_u64().unwrap_or_default();
                page.more = answer["more"].as_bool().unwrap_or_default();
                page.refused = answer["refused"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let case = r["case_id"].as_str().unwrap_or_default();
                        let why = r["message"].as_str().unwrap_or_default();
                        format!("{case}: {why}")
                    })
                    .collect();
                return Ok(render(&page));
            }
            // No reason, or more match than were shown: shown again, counted afresh.
            Err(e)
                if matches!(
                    e.status(),
                    StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT
                ) =>
            {
                page.error = e.message().to_owned();
                page.count = 0;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Counted the way the list reads them, page after page, up to the bulk action's bound.
    let mut cursor: Option<String> = None;
    loop {
        let mut query = fields.clone();
        query.insert("limit".to_owned(), json!(500));
        if let Some(c) = &cursor {
            query.insert("cursor".to_owned(), json!(c));
        }
        let answer = operators::incidents(
            State(state.clone()),
            session.caller(),
            Ok(Query(typed(Value::Object(query))?)),
        )
        .await?;
        let listed: IncidentPage = decode(answer)?;
        page.count += listed.items.len();
        cursor = listed.next;
        if cursor.is_none() || page.count >= MAX_BULK {
            page.capped = cursor.is_some();
            break;
        }
    }
    Ok(render(&page))
}
