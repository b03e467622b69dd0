//! A case: its steps, timeline and incidents, and the operators' actions on it.

use askama::Template;
use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::forms::*;
use crate::api::ui::session::Session;
use crate::api::ui::views::{self, incident_sentence, local, local_date};
use crate::api::ui::{UiError, Who, render};
use crate::api::{AppState, cases, operators};
use crate::store::Store;

pub struct StepLine {
    pub id: String,
    pub status: String,
    pub agency: String,
    pub adapter: String,
    pub attempts: u32,
    pub revision: u32,
    pub started_at: String,
    pub finished_at: String,
    pub due: String,
    pub output: String,
    pub refusal: String,
    pub error: String,
    pub note: String,
}

/// An event of the timeline: its time, its lane (0: the case; then one per step, in the
/// workflow's order, so that parallel branches stand side by side) and what it says.
pub struct TimelineRow {
    pub time: String,
    pub lane: usize,
    pub kind: String,
    pub details: Vec<(String, String)>,
}

/// What an operator's form sent, shown again with what was wrong.
#[derive(Default)]
pub struct FormState {
    pub action: String,
    pub step: String,
    pub reason: String,
    pub output: String,
    pub input: String,
    /// The extension's new date and reason code.
    pub until: String,
    pub reason_code: String,
    /// The API's message for the whole form.
    pub error: String,
    /// JSON Pointer → what is wrong there.
    pub fields: Vec<(String, String)>,
}

impl FormState {
    /// The API's refusal, said for the whole form and beside each field (its pointers put
    /// `under` the field the data came in).
    fn refused_by(&mut self, e: &crate::api::ApiError, under: &str) {
        self.error = e.message().to_owned();
        self.fields = e
            .fields()
            .iter()
            .map(|v| (format!("{under}{}", v.field), v.message.clone()))
            .collect();
    }

    /// The errors at `field` (`/reason`), and under it (`/input/child/date_of_birth`, said as
    /// `child/date_of_birth: …`).
    pub fn at(&self, field: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter_map(|(f, m)| match f.strip_prefix(field) {
                Some("") => Some(m.clone()),
                Some(rest) => rest.strip_prefix('/').map(|rest| format!("{rest}: {m}")),
                None => None,
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "ui/case.html")]
struct CasePage {
    who: Option<Who>,
    id: String,
    workflow: String,
    status: String,
    running: bool,
    reason: String,
    started_at: String,
    due: String,
    finished_at: String,
    business_keys: Vec<(String, String)>,
    /// The apology's new date: `from <first due> — <reason> (<by>)`; empty if none.
    extended: String,
    /// The life event's tier and its legal limit.
    tier: String,
    /// What started it when the portal did not: an event, or another case's end.
    origin: String,
    /// When its personal data is erased, or was; empty while it runs.
    personal_data: String,
    /// Escalated steps (`the case` for the whole) and to whom.
    escalated: Vec<(String, String)>,
    /// The agencies' requests for a supplement: id, state, the citizen's deadline, what is
    /// missing and why.
    supplements: Vec<(String, String, String, String)>,
    incidents: Vec<(String, String, String)>,
    steps: Vec<StepLine>,
    lanes: Vec<String>,
    timeline: Vec<TimelineRow>,
    input: String,
    done: String,
    form: FormState,
}

#[derive(Debug, Default, Deserialize)]
pub struct CaseQuery {
    /// The action just done, to say so.
    #[serde(default)]
    done: String,
}

pub async fn case<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<CaseQuery>,
) -> Result<Response, UiError> {
    let page = case_page(&state, session, &id, FormState::default(), q.done).await?;
    Ok(render(&page))
}

async fn case_page<S: Store + Clone>(
    state: &AppState<S>,
    session: Session,
    id: &str,
    form: FormState,
    done: String,
) -> Result<CasePage, UiError> {
    let shown = cases::show(
        State(state.clone()),
        session.caller(),
        Ok(Path(id.to_owned())),
        Ok(Query(typed(json!({}))?)),
    )
    .await?;
    let case: views::Case = decode(shown)?;
    let history = cases::history(
        State(state.clone()),
        session.caller(),
        Ok(Path(id.to_owned())),
    )
    .await?;
    let events: Vec<views::Event> = typed(history.0["events"].clone())?;
    // Lanes in the workflow's order, when the workflow is loaded.
    let order: Vec<String> = state
        .engine
        .definitions()
        .workflow(&case.workflow, Some(case.version))
        .map(|wf| wf.steps.iter().map(|s| s.id.clone()).collect())
        .unwrap_or_else(|| case.steps.keys().cloned().collect());
    let mut lanes = vec!["case".to_owned()];
    lanes.extend(
        order
            .iter()
            .filter(|s| case.steps.contains_key(*s))
            .cloned(),
    );
    let timeline = events
        .iter()
        .map(|e| TimelineRow {
            time: local(&e.at),
            lane: e
                .step
                .as_ref()
                .and_then(|s| lanes.iter().position(|l| l == s))
                .unwrap_or(0),
            kind: e.kind.replace('_', " "),
            details: e.details(),
        })
        .collect();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let at = |t: &Option<Timestamp>| t.as_ref().map(local).unwrap_or_default();
    let steps = lanes[1..]
        .iter()
        .filter_map(|id| case.steps.get(id).map(|s| (id, s)))
        .map(|(id, s)| StepLine {
            id: id.clone(),
            status: s.status.clone(),
            agency: s.agency.clone().unwrap_or_default(),
            adapter: s.adapter.clone().unwrap_or_default(),
            attempts: s.attempts,
            revision: s.revision,
            started_at: at(&s.started_at),
            finished_at: at(&s.finished_at),
            due: s.due_at.as_ref().map(local_date).unwrap_or_default(),
            output: s.output.as_ref().map(pretty).unwrap_or_default(),
            refusal: s
                .rejection
                .as_ref()
                .map(|r| format!("{}: {}", r.reason_code, r.message))
                .unwrap_or_default(),
            error: s.error.clone().unwrap_or_default(),
            note: s.note.clone().unwrap_or_default(),
        })
        .collect();
    let incidents = case
        .incidents
        .iter()
        .map(|i| {
            (
                i.step.clone().unwrap_or_else(|| "the case".to_owned()),
                incident_sentence(&i.reason, None, &i.message),
                local(&i.opened_at),
            )
        })
        .collect();
    let input = if form.input.is_empty() {
        pretty(&case.input)
    } else {
        form.input.clone()
    };
    let extended = case
        .extension
        .as_ref()
        .map(|e| {
            let whose = e
                .step
                .as_ref()
                .map(|s| format!(" for step {s}"))
                .unwrap_or_default();
            format!(
                "extended{whose} from {} — {} ({}; granted by {})",
                local_date(&e.previous_due),
                e.reason,
                e.reason_code,
                e.by
            )
        })
        .unwrap_or_default();
    let tier = case
        .life_event
        .as_ref()
        .map(|l| {
            format!(
                "registered {}: the event on {}, its legal limit {}",
                l.tier.as_str().replace('_', " "),
                l.date.strftime("%d/%m/%Y"),
                l.limit.strftime("%d/%m/%Y")
            )
        })
        .unwrap_or_default();
    let personal_data = match (&case.retention.erased_at, &case.retention.erase_at) {
        (Some(at), _) => format!("erased {}: every personal value is a pseudonym", local(at)),
        (None, Some(at)) => format!("kept until {}, then erased", local(at)),
        (None, None) => String::new(),
    };
    let origin = case
        .origin
        .as_ref()
        .map(|o| match &o.cause {
            crate::case::inbox::Cause::Event {
                source,
                id,
                event_type,
            } => format!("event {id} ({event_type}) from {source}"),
            crate::case::inbox::Cause::Case {
                case_id,
                workflow,
                outcome,
            } => format!(
                "case {case_id} of {workflow}, {outcome} (chain depth {})",
                o.depth
            ),
        })
        .unwrap_or_default();
    let escalated = case
        .escalated
        .iter()
        .map(|(step, to)| {
            let step = if step == crate::case::deadlines::WHOLE_CASE {
                "the case".to_owned()
            } else {
                step.clone()
            };
            (step, to.clone())
        })
        .collect();
    let supplements = case
        .supplements
        .iter()
        .map(|r| {
            let missing: Vec<String> = r
                .missing
                .iter()
                .map(|m| {
                    if m.reason.is_empty() {
                        m.name.clone()
                    } else {
                        format!("{} ({})", m.name, m.reason)
                    }
                })
                .collect();
            let state = match r.state {
                crate::case::RequestState::Open => "waiting for the citizen",
                crate::case::RequestState::Answered => "supplemented",
                crate::case::RequestState::Expired => "not supplemented in time",
                crate::case::RequestState::Closed => "closed: the step ended without it",
            };
            (
                r.id.clone(),
                state.to_owned(),
                local_date(&r.due_at),
                missing.join("; "),
            )
        })
        .collect();
    Ok(CasePage {
        who: Some(session.who),
        extended,
        supplements,
        tier,
        origin,
        personal_data,
        escalated,
        workflow: format!("{}@{}", case.workflow, case.version),
        running: case.status == "running",
        reason: case.reason.unwrap_or_default(),
        started_at: local(&case.started_at),
        due: case.due_at.as_ref().map(local_date).unwrap_or_default(),
        finished_at: at(&case.finished_at),
        business_keys: case.business_keys.into_iter().collect(),
        status: case.status,
        id: case.id,
        incidents,
        steps,
        lanes,
        timeline,
        input,
        done,
        form,
    })
}

#[derive(Debug, Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    action: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    output: String,
    #[serde(default)]
    input: String,
}

/// Retry, skip, fix or cancel, through the API's action; on a refusal the case page again, with
/// the API's message and each field's error beside the field.
pub async fn act<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ActForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &f.csrf)?;
    let mut form = FormState {
        action: f.action.clone(),
        step: f.step.clone(),
        reason: f.reason.clone(),
        output: f.output.clone(),
        input: f.input.clone(),
        ..FormState::default()
    };
    let mut body = Map::new();
    if !f.step.is_empty() {
        body.insert("step".to_owned(), json!(f.step));
    }
    body.insert("reason".to_owned(), json!(f.reason));
    for (name, text) in [("output", &f.output), ("input", &f.input)] {
        let wanted = matches!(
            (name, f.action.as_str()),
            ("output", "skip") | ("input", "fix")
        );
        if !wanted || text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(v) => {
                body.insert(name.to_owned(), v);
            }
            Err(e) => form
                .fields
                .push((format!("/{name}"), format!("this is not JSON: {e}"))),
        }
    }
    if form.fields.is_empty() {
        let done = operators::act(
            State(state.clone()),
            session.caller(),
            Ok(Path((id.clone(), f.action.clone()))),
            Ok(Json(typed(Value::Object(body))?)),
        )
        .await;
        match done {
            Ok(_) => {
                let to = format!("/ui/cases/{id}?done={}", urlencode(&f.action));
                return Ok(Redirect::to(&to).into_response());
            }
            Err(e) if e.status().is_client_error() && e.status() != StatusCode::FORBIDDEN => {
                // A schema's pointers are into the data checked: under the field it came in.
                let under = match e.code() {
                    "invalid_input" => "/input",
                    "invalid_output" => "/output",
                    _ => "",
                };
                form.refused_by(&e, under);
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        form.error = "The form has errors: see each field.".to_owned();
    }
    refused(&state, session, &id, form).await
}

/// The case page again, with the refused form and what was wrong.
async fn refused<S: Store + Clone>(
    state: &AppState<S>,
    session: Session,
    id: &str,
    form: FormState,
) -> Result<Response, UiError> {
    let page = case_page(state, session, id, form, String::new()).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ExtendForm {
    #[serde(default)]
    csrf: String,
    /// Empty: the case as a whole.
    #[serde(default)]
    step: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    reason_code: String,
}

/// The apology and new date, through the API's extension; on a refusal the case page again,
/// with the API's message (a role the workflow does not let grant it included).
pub async fn extend<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<ExtendForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &f.csrf)?;
    let mut form = FormState {
        action: "extend".to_owned(),
        step: f.step.clone(),
        reason: f.reason.clone(),
        until: f.until.clone(),
        reason_code: f.reason_code.clone(),
        ..FormState::default()
    };
    let mut body = json!({"reason": f.reason});
    if !f.step.is_empty() {
        body["step"] = json!(f.step);
    }
    if !f.reason_code.trim().is_empty() {
        body["reason_code"] = json!(f.reason_code.trim());
    }
    match f.until.trim().parse::<jiff::civil::Date>() {
        Ok(until) => body["until"] = json!(until),
        Err(_) if f.until.trim().is_empty() => {}
        Err(e) => form
            .fields
            .push(("/until".to_owned(), format!("not a date (YYYY-MM-DD): {e}"))),
    }
    if form.fields.is_empty() {
        let done = crate::api::deadlines::extend(
            State(state.clone()),
            session.caller(),
            Ok(Path(id.clone())),
            Ok(Json(typed(body)?)),
        )
        .await;
        match done {
            Ok(_) => {
                let to = format!("/ui/cases/{id}?done=extend");
                return Ok(Redirect::to(&to).into_response());
            }
            Err(e) if e.status().is_client_error() => form.refused_by(&e, ""),
            Err(e) => return Err(e.into()),
        }
    } else {
        form.error = "The form has errors: see each field.".to_owned();
    }
    refused(&state, session, &id, form).await
}
