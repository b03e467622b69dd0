//! `GET /metrics`: after real cases against the mock agencies (one attempt refused and retried,
//! one case waiting past its deadlines), the series say what happened, in numbers, with no case
//! id in them; Prometheus's own `promtool` accepts the scrape; only the `metrics` role (and
//! admins) may read it on the API's address, and `--metrics-listen` serves it to scrapers alone.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::SignedDuration;
use reqwest::Method;
use serde_json::json;
use support::{InProcess, MANUAL_HEAD, Server, birth_input, free_port, put_faults, with_mocks};

/// The samples of a scrape: `name{labels}` (labels as civicflow writes them, in order) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The value of the one sample of `name` whose labels include every one of `labels`.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {labels:?}: {found:?} in {:#?}",
        samples
            .keys()
            .filter(|k| k.starts_with(name))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// `promtool check metrics` on the scrape: Prometheus's own parser and linter.
fn promtool_accepts(text: &str) {
    let promtool = std::env::var("CIVICFLOW_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "`{promtool}` cannot run ({e}): ./scripts/test installs it (scripts/promtool.sh)"
            )
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn series_count_what_the_cases_did_and_promtool_accepts_them() {
    let harness = InProcess::start().await;
    // Tuesday 1 June 2027, 10:00 in Hanoi: the month's figures below stay within June.
    harness.skip_to("2027-06-01T03:00:00Z");

    // Civil status refuses the first attempt (503): the step is retried and the case completes.
    let civil = harness.agencies["civil-status"].clone();
    put_faults(
        &harness.http,
        &civil,
        json!({"rates": {"unavailable": 1.0}}),
    )
    .await;
    let retried = harness.start_birth(birth_input("METRICS-1")).await;
    harness
        .wait_for(&retried, |c| c["steps"]["birth"]["status"] == "backoff")
        .await;
    put_faults(&harness.http, &civil, json!({})).await;
    harness
        .wait_for(&retried, |c| c["status"] == "completed")
        .await;
    // A case whose household head never answers misses both its deadlines.
    let mut input = birth_input("METRICS-2");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let waiting = harness.start_birth(input).await;
    harness
        .wait_for(&waiting, |c| {
            c["steps"]["residence"]["status"] == "awaiting_callback"
                && c["steps"]["health_insurance"]["status"] == "succeeded"
        })
        .await;
    harness.clock.skip(SignedDuration::from_hours(24 * 10));
    harness
        .wait_for(&waiting, |c| c["incidents"].as_array().unwrap().len() == 2)
        .await;

    let response = harness
        .http
        .get(format!("{}/metrics", harness.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    for id in [&retried, &waiting] {
        assert!(
            !text.contains(id.as_str()),
            "a case id in the metrics: {text}"
        );
    }
    assert!(
        !text.contains("001190123456"),
        "a personal id in the metrics"
    );
    let s = samples(&text);
    let birth = [("workflow", "birth-registration")];
    assert_eq!(value(&s, "civicflow_cases_started_total", &birth), 2.0);
    assert_eq!(
        value(
            &s,
            "civicflow_cases_finished_total",
            &[("workflow", "birth-registration"), ("status", "completed")]
        ),
        1.0
    );
    let call = |outcome| {
        value(
            &s,
            "civicflow_agency_call_duration_seconds_count",
            &[
                ("agency", "civil-status"),
                ("step", "birth"),
                ("kind", "attempt"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!((call("5xx"), call("2xx")), (1.0, 2.0));
    assert_eq!(
        value(
            &s,
            "civicflow_step_retries_total",
            &[("agency", "civil-status"), ("step", "birth")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "civicflow_step_results_total",
            &[("step", "birth"), ("outcome", "succeeded")]
        ),
        2.0
    );
    let deadline = [("reason", "deadline_missed")];
    assert_eq!(
        value(&s, "civicflow_incidents_opened_total", &deadline),
        2.0
    );
    assert_eq!(value(&s, "civicflow_incidents_open", &deadline), 2.0);
    assert!(
        value(
            &s,
            "civicflow_timer_lateness_seconds_count",
            &[("kind", "step_deadline")]
        ) >= 1.0
    );
    assert!(
        value(
            &s,
            "civicflow_timer_lateness_seconds_count",
            &[("kind", "retry")]
        ) >= 1.0
    );
    assert!(value(&s, "civicflow_store_commit_duration_seconds_count", &[]) >= 10.0);
    let commits = value(&s, "civicflow_store_commits_total", &[]);
    let groups = value(&s, "civicflow_store_commit_groups_total", &[]);
    assert!(
        commits >= 10.0 && (1.0..=commits).contains(&groups),
        "{commits} in {groups}"
    );
    assert!(value(&s, "civicflow_timers_due", &[]) >= 0.0);
    assert_eq!(value(&s, "civicflow_store_writable", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "civicflow_api_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/v1/cases"),
                ("status", "201")
            ]
        ),
        2.0
    );
    let kpi = |agency, step, state| {
        value(
            &s,
            "civicflow_kpi_month_steps",
            &[
                ("workflow", "birth-registration"),
                ("agency", agency),
                ("step", step),
                ("state", state),
            ],
        )
    };
    assert_eq!(kpi("civil-status", "birth", "finished_on_time"), 2.0);
    assert_eq!(kpi("police", "residence", "finished_on_time"), 1.0);
    assert_eq!(kpi("police", "residence", "open_overdue"), 1.0);
    assert_eq!(kpi("*", "*", "open_overdue"), 1.0);
    assert_eq!(
        value(
            &s,
            "civicflow_kpi_month_on_time_ratios",
            &[("agency", "civil-status"), ("step", "birth")]
        ),
        1.0
    );

    // Another scrape, in the classic format (no Accept): Prometheus's own linter accepts it,
    // and the API request that made the first scrape is counted.
    let response = harness
        .http
        .get(format!("{}/metrics", harness.url))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    promtool_accepts(&text);
    let s = samples(&text);
    assert_eq!(
        value(
            &s,
            "civicflow_api_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
        ),
        1.0
    );
}

#[tokio::test]
async fn only_scrapers_and_admins_read_the_metrics_and_scrapers_may_have_their_own_address() {
    let data = std::env::temp_dir().join(format!("civicflow-metrics-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let scrapers = format!("127.0.0.1:{}", free_port());
    let server = Server::spawn(
        &data,
        &listen,
        &with_mocks(&["--metrics-listen", &scrapers]),
    );
    let scraper = server.token("metrics").await;
    let operator = server.token("operator").await;
    let get = |token: Option<String>| {
        let url = format!("{}/metrics", server.url);
        async move {
            let mut request = reqwest::Client::new().get(url);
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, text) = get(Some(scraper.clone())).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("civicflow_api_request_duration_seconds"),
        "{text}"
    );
    assert_eq!(get(Some(operator.clone())).await.0, 403);
    assert_eq!(get(None).await.0, 401);
    // A method no standard names is one label, never the method as sent.
    let odd = reqwest::Client::new()
        .request(
            Method::from_bytes(b"PURGE-X").unwrap(),
            format!("{}/v1/cases", server.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 405);
    let (status, text) = get(Some(server.admin.clone())).await;
    assert_eq!(status, 200);
    assert!(!text.contains("PURGE-X"), "{text}");
    assert!(text.contains("method=\"other\""), "{text}");
    // A metrics token reads nothing else.
    let (status, _) = server
        .call(Some(&scraper), Method::GET, "/v1/incidents", None)
        .await;
    assert_eq!(status, 403);

    // The scrapers' address: the metrics without a token, and nothing else.
    let bound = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        match reqwest::get(format!("http://{scrapers}/metrics")).await {
            Ok(r) if r.status() == 200 => break r.text().await.unwrap(),
            other => {
                assert!(tokio::time::Instant::now() < bound, "{other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        text.contains("civicflow_store_commit_duration_seconds"),
        "{text}"
    );
    let other = reqwest::get(format!("http://{scrapers}/v1/cases"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}
