//! An outage of the police under a steady load of new birth cases, against the real mocks:
//! what the outage test checks and the engine benchmark's `--outage` mode measures.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::{InProcess, birth_input, effects, fetch, put_faults, start_birth};

/// `cases` new cases, `rate` a second, the first `before` the outage starts; the outage lasts
/// `outage`.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub cases: usize,
    pub rate: u32,
    pub before: Duration,
    pub outage: Duration,
}

/// What a run showed.
#[derive(Debug)]
pub struct Run {
    /// Every case as it ended, or stopped on an incident (or as it was when the wait gave up).
    pub cases: Vec<Value>,
    /// Cases stopped on an incident (their police step ran out of retries).
    pub incidents: usize,
    /// Police requests the outage answered 503, and all police requests.
    pub calls_in_outage: usize,
    pub police_calls: usize,
    /// From the end of the outage to the end of the last case.
    pub recovery: SignedDuration,
    /// The most attempts any case's police step made.
    pub max_attempts: u64,
    /// Cases whose registration took effect at the police other than once.
    pub effects_not_once: Vec<String>,
    /// `GET /v1/agencies` and `GET /v1/incidents` near the end of the outage.
    pub agencies_during: Value,
    pub incidents_during: Value,
}

/// Starts birth cases through the API at `load.rate` a second while the police answer 503 to
/// everything for `load.outage`, and waits (at most `bound`) for every case to end or stop on
/// an incident.
pub async fn run(app: &InProcess, load: Load, tag: &str, bound: Duration) -> Run {
    let police = app.agencies["police"].clone();
    let outage_from = Timestamp::now() + load.before;
    let outage_until = outage_from + load.outage;
    put_faults(
        &app.http,
        &police,
        json!({"outages": [{"from": outage_from, "until": outage_until}]}),
    )
    .await;
    let snapshot_at = outage_from + load.outage.mul_f64(0.8);
    let (mut agencies_during, mut incidents_during) = (Value::Null, Value::Null);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load.rate)));
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..load.cases {
        ticks.tick().await;
        let (http, url) = (app.http.clone(), app.url.clone());
        let input = birth_input(&format!("{tag}-{i:05}"));
        starting.spawn(async move { start_birth(&http, &url, input).await });
        if agencies_during.is_null() && Timestamp::now() >= snapshot_at {
            agencies_during = fetch(&app.http, &format!("{}/v1/agencies", app.url)).await;
            incidents_during = fetch(&app.http, &format!("{}/v1/incidents", app.url)).await;
        }
    }
    let ids = starting.join_all().await;
    let until = tokio::time::Instant::now() + bound;
    let mut cases = Vec::with_capacity(ids.len());
    for id in &ids {
        let case = loop {
            let case = app.case(id).await;
            let stopped = case["incidents"].as_array().is_some_and(|i| !i.is_empty());
            if case["status"] != "running" || stopped || tokio::time::Instant::now() > until {
                break case;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        cases.push(case);
    }
    let requests = fetch(&app.http, &format!("{police}/admin/requests")).await;
    let requests = requests.as_array().cloned().unwrap_or_default();
    let calls_in_outage = requests.iter().filter(|r| r["fault"] == "Outage").count();
    let incidents = cases
        .iter()
        .filter(|c| c["incidents"].as_array().is_some_and(|i| !i.is_empty()))
        .count();
    let last_end = cases
        .iter()
        .filter_map(|c| c["finished_at"].as_str())
        .filter_map(|t| t.parse::<Timestamp>().ok())
        .max()
        .unwrap_or(outage_until);
    let mut effects_not_once = Vec::new();
    for case in &cases {
        let id = case["id"].as_str().unwrap_or_default();
        if effects(&app.http, &police, id).await != [1] {
            effects_not_once.push(id.to_owned());
        }
    }
    Run {
        max_attempts: cases
            .iter()
            .filter_map(|c| c["steps"]["residence"]["attempts"].as_u64())
            .max()
            .unwrap_or(0),
        cases,
        incidents,
        calls_in_outage,
        police_calls: requests.len(),
        recovery: last_end.duration_since(outage_until),
        effects_not_once,
        agencies_during,
        incidents_during,
    }
}
