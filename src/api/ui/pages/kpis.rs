//! The on-time table per workflow, agency and step, with its chart.

use askama::Template;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::chart::{self, BarPart};
use super::forms::*;
use crate::api::AppState;
use crate::api::ui::session::Session;
use crate::api::ui::{UiError, Who, render};
use crate::store::Store;

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

#[derive(Template)]
#[template(path = "ui/kpis.html")]
struct KpiPage {
    who: Option<Who>,
    form: KpiForm,
    from: String,
    to: String,
    lines: Vec<KpiLine>,
    /// Per workflow: cases started by their life event's tier, new dates by reason.
    law: Vec<(String, String, String)>,
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
    let counted = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, n)| format!("{} {n}", k.replace('_', " ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let law: Vec<(String, String, String)> = report
        .workflows
        .iter()
        .filter(|w| !w.tiers.is_empty() || !w.extensions.is_empty())
        .map(|w| {
            (
                w.workflow.clone(),
                counted(&w.tiers),
                counted(&w.extensions),
            )
        })
        .collect();
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
        f.finished_on_time + f.finished_extended + f.finished_late + f.open_in_time + f.open_overdue
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
            let bar = chart::bar(&figures, longest);
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
        law,
    };
    Ok(render(&page))
}
