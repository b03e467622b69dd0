//! The pages: the incident list, a case, a citizen's cases, and the actions. Each asks the API's
//! handler as the signed-in token and renders what it answers.

use std::collections::BTreeSet;

use askama::Template;
use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::session::Session;
use super::views::{self, IncidentPage, incident_sentence, local, local_date, waited};
use super::{UiError, Who, render};
use crate::api::auth::Caller;
use crate::api::{ApiError, AppState, cases, operators};
use crate::case::IncidentReason;
use crate::store::Store;

/// How many incidents a page lists.
const PAGE: usize = 50;
/// The most incidents a bulk retry is counted over before it is confirmed (the API's own bound).
const MAX_BULK: usize = 10_000;

impl Session {
    fn caller(&self) -> Caller {
        Caller(self.caller.0.clone())
    }
}

/// The API's typed input built from JSON, as a request body or query would be: an error here
/// is a bug of the page, not the operator's.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, UiError> {
    serde_json::from_value(v).map_err(|e| UiError::Api(ApiError::internal(e)))
}

fn decode<T: serde::de::DeserializeOwned>(Json(v): Json<Value>) -> Result<T, UiError> {
    typed(v)
}

/// The incident list's filter, as the page's form sends it: empty fields mean "any".
#[derive(Debug, Default, Clone, Deserialize)]
pub struct IncidentFilterForm {
    #[serde(default)]
    pub workflow: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub agency: String,
    #[serde(default)]
    pub reason: String,
    /// Waiting at least this long: `1h`, `1d`, `3d`, `7d`.
    #[serde(default)]
    pub age: String,
    /// `oldest` (default) or `newest`.
    #[serde(default)]
    pub order: String,
}

impl IncidentFilterForm {
    /// The API's filter fields (`workflow`, `step`, `agency`, `reason`, `opened_before`).
    fn api_fields(&self, now: Timestamp) -> Map<String, Value> {
        let mut fields = Map::new();
        for (name, value) in [
            ("workflow", &self.workflow),
            ("step", &self.step),
            ("agency", &self.agency),
            ("reason", &self.reason),
        ] {
            if !value.trim().is_empty() {
                fields.insert(name.to_owned(), json!(value.trim()));
            }
        }
        if let Some(age) = age(&self.age) {
            fields.insert("opened_before".to_owned(), json!(now - age));
        }
        fields
    }

    /// This filter as a query string, for the links of the next page.
    fn query(&self) -> String {
        let pairs = [
            ("workflow", &self.workflow),
            ("step", &self.step),
            ("agency", &self.agency),
            ("reason", &self.reason),
            ("age", &self.age),
            ("order", &self.order),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn age(text: &str) -> Option<SignedDuration> {
    match text {
        "1h" => Some(SignedDuration::from_hours(1)),
        "1d" => Some(SignedDuration::from_hours(24)),
        "3d" => Some(SignedDuration::from_hours(72)),
        "7d" => Some(SignedDuration::from_hours(168)),
        _ => None,
    }
}

/// `text` as a URL's query value.
fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The loaded workflows' names, once each, for a filter's choices.
fn workflow_names<S: Store + Clone>(state: &AppState<S>) -> Vec<String> {
    let names: BTreeSet<String> = state
        .engine
        .definitions()
        .workflow_names()
        .map(str::to_owned)
        .collect();
    names.into_iter().collect()
}

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

/// A step of a case as shown.
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
    /// The API's message for the whole form.
    pub error: String,
    /// JSON Pointer → what is wrong there.
    pub fields: Vec<(String, String)>,
}

impl FormState {
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
    Ok(CasePage {
        who: Some(session.who),
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
                form.error = e.message().to_owned();
                // A schema's pointers are into the data checked: under the field it came in.
                let under = match e.code() {
                    "invalid_input" => "/input",
                    "invalid_output" => "/output",
                    _ => "",
                };
                form.fields = e
                    .fields()
                    .iter()
                    .map(|v| (format!("{under}{}", v.field), v.message.clone()))
                    .collect();
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        form.error = "The form has errors: see each field.".to_owned();
    }
    let page = case_page(&state, session, &id, form, String::new()).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
}

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

#[derive(Debug, Default, Deserialize)]
pub struct KpiForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    agency: String,
}

/// One line of the on-time table, and its bar in the chart.
pub struct KpiLine {
    pub workflow: String,
    /// `the cases as a whole`, or `step at agency`.
    pub what: String,
    pub figures: crate::kpi::report::Figures,
    pub rate: String,
    pub bar: Vec<BarPart>,
}

/// A part of a bar: its colour class, where it starts and how wide it is (in the chart's
/// units), and what it counts.
pub struct BarPart {
    pub class: &'static str,
    pub x: u64,
    pub width: u64,
    pub label: String,
}

/// The chart's width for the longest bar.
const BAR_WIDTH: u64 = 400;

#[derive(Template)]
#[template(path = "ui/kpis.html")]
struct KpiPage {
    who: Option<Who>,
    form: KpiForm,
    from: String,
    to: String,
    lines: Vec<KpiLine>,
    workflows: Vec<String>,
    agencies: Vec<String>,
}

/// The on-time table per workflow, agency and step, with a bar chart of on time, late, open and
/// overdue.
pub async fn kpis<S: Store + Clone>(
    State(state): State<AppState<S>>,
    session: Session,
    Query(f): Query<KpiForm>,
) -> Result<Response, UiError> {
    let mut query = Map::new();
    for (name, value) in [
        ("from", &f.from),
        ("to", &f.to),
        ("workflow", &f.workflow),
        ("agency", &f.agency),
    ] {
        if !value.trim().is_empty() {
            query.insert(name.to_owned(), json!(value.trim()));
        }
    }
    let Json(report) = crate::api::kpis::read(
        State(state.clone()),
        session.caller(),
        Ok(Query(typed(Value::Object(query))?)),
    )
    .await?;
    let mut lines = Vec::new();
    for wf in report.workflows {
        if let Some(cases) = wf.cases {
            lines.push((
                wf.workflow.clone(),
                "the cases as a whole".to_owned(),
                cases,
            ));
        }
        for step in wf.steps {
            let what = format!("{} at {}", step.step, step.agency);
            lines.push((wf.workflow.clone(), what, step.figures));
        }
    }
    let total = |f: &crate::kpi::report::Figures| {
        f.finished_on_time + f.finished_late + f.open_in_time + f.open_overdue
    };
    let longest = lines
        .iter()
        .map(|(_, _, f)| total(f))
        .max()
        .unwrap_or(0)
        .max(1);
    let lines = lines
        .into_iter()
        .map(|(workflow, what, figures)| {
            let mut x = 0;
            let mut bar = Vec::new();
            for (class, n, label) in [
                ("on-time", figures.finished_on_time, "finished on time"),
                ("late", figures.finished_late, "finished late"),
                ("open", figures.open_in_time, "open, in time"),
                ("overdue", figures.open_overdue, "open, overdue"),
            ] {
                if n == 0 {
                    continue;
                }
                let width = (n * BAR_WIDTH).div_ceil(longest);
                bar.push(BarPart {
                    class,
                    x,
                    width,
                    label: format!("{n} {label}"),
                });
                x += width;
            }
            KpiLine {
                rate: figures
                    .on_time_rate
                    .map(|r| format!("{:.1} %", r * 100.0))
                    .unwrap_or_else(|| "—".to_owned()),
                workflow,
                what,
                figures,
                bar,
            }
        })
        .collect();
    let page = KpiPage {
        who: Some(session.who),
        from: report.from.strftime("%d/%m/%Y").to_string(),
        to: report.to.strftime("%d/%m/%Y").to_string(),
        workflows: workflow_names(&state),
        agencies: state.engine.agencies().keys().cloned().collect(),
        form: f,
        lines,
    };
    Ok(render(&page))
}
