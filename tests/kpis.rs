//! The on-time figures: steps and cases finished before and after their statutory due times,
//! across a weekend and public holidays, counted exactly. The engine runs in this process with a
//! clock the test moves to a chosen day; the HTTP API and the mock agencies are the real ones.

mod support;

use serde_json::{Value, json};
use support::{InProcess, MANUAL_HEAD, birth_input, fetch, grant_consent};

async fn kpis(harness: &InProcess, query: &str) -> Value {
    fetch(&harness.http, &format!("{}/v1/kpis?{query}", harness.url)).await
}

/// The figures of one step (or of the cases as a whole, with step `*`) of the birth workflow.
fn figures<'a>(report: &'a Value, step: &str) -> &'a Value {
    let w = report["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workflow"] == "birth-registration")
        .unwrap_or_else(|| panic!("no birth-registration in {report:#}"));
    if step == "*" {
        return &w["cases"];
    }
    w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step} in {report:#}"))
}

/// (on time, late, open in time, open overdue, rate, median, p90) of a row.
fn row(f: &Value) -> (u64, u64, u64, u64, Value, Value, Value) {
    (
        f["finished_on_time"].as_u64().unwrap(),
        f["finished_late"].as_u64().unwrap(),
        f["open_in_time"].as_u64().unwrap(),
        f["open_overdue"].as_u64().unwrap(),
        f["on_time_rate"].clone(),
        f["working_days_median"].clone(),
        f["working_days_p90"].clone(),
    )
}

#[tokio::test]
async fn counts_on_time_and_late_in_working_days_across_a_weekend_and_holidays() {
    let harness = InProcess::start().await;
    // Thursday 29 April 2027, 10:00 in Hanoi. Friday 30 April (Reunification Day) and Monday
    // 3 May (Labour Day, which falls on Saturday 1 May) are holidays: the police's 2 working
    // days end at Wednesday 5 May's close, the case's 3 at Thursday 6 May's.
    harness.skip_to("2027-04-29T03:00:00Z");
    let quick = harness.start_birth(birth_input("KPI-QUICK")).await;
    let mut input = birth_input("KPI-SLOW");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let slow = harness.start_birth(input).await;
    harness
        .wait_for(&quick, |c| c["status"] == "completed")
        .await;
    harness
        .wait_for(&slow, |c| {
            c["steps"]["residence"]["status"] == "awaiting_callback"
                && c["steps"]["health_insurance"]["status"] == "succeeded"
        })
        .await;

    let r = kpis(&harness, "from=2027-04-29&to=2027-04-29").await;
    let (one, zero) = (json!(1.0), json!(0));
    assert_eq!(
        row(figures(&r, "birth")),
        (2, 0, 0, 0, one.clone(), zero.clone(), zero.clone())
    );
    assert_eq!(
        row(figures(&r, "residence")),
        (1, 0, 1, 0, one.clone(), zero.clone(), zero.clone())
    );
    assert_eq!(
        row(figures(&r, "*")),
        (1, 0, 1, 0, one.clone(), zero.clone(), zero.clone())
    );
    assert_eq!(figures(&r, "residence")["agency"], "police");

    // Monday 10 May, 10:00 in Hanoi: both due times have passed while the police wait.
    harness.skip_to("2027-05-10T03:00:00Z");
    harness
        .wait_for(&slow, |c| c["incidents"].as_array().unwrap().len() == 2)
        .await;
    let r = kpis(&harness, "from=2027-04-29&to=2027-05-10").await;
    assert_eq!(
        row(figures(&r, "residence")),
        (1, 0, 0, 1, one.clone(), zero.clone(), zero.clone())
    );
    assert_eq!(
        row(figures(&r, "*")),
        (1, 0, 0, 1, one.clone(), zero.clone(), zero.clone())
    );

    // The household head consents; the police answer on Monday 10 May: 5 working days taken
    // (4, 5, 6, 7 and 10 May), late.
    grant_consent(&harness.http, &harness.agencies["police"]).await;
    harness
        .wait_for(&slow, |c| c["status"] == "completed")
        .await;

    let half = json!(0.5);
    let r = kpis(&harness, "from=2027-04-29&to=2027-05-10").await;
    assert_eq!(
        row(figures(&r, "residence")),
        (1, 1, 0, 0, half.clone(), zero.clone(), json!(5))
    );
    assert_eq!(
        row(figures(&r, "*")),
        (1, 1, 0, 0, half.clone(), zero.clone(), json!(5))
    );
    assert_eq!(
        row(figures(&r, "birth")),
        (2, 0, 0, 0, one.clone(), zero.clone(), zero.clone())
    );
    // A period of the last day alone holds only what finished on it.
    let r = kpis(&harness, "from=2027-05-10&to=2027-05-10").await;
    assert_eq!(
        row(figures(&r, "residence")),
        (0, 1, 0, 0, json!(0.0), json!(5), json!(5))
    );
    let steps: Vec<&Value> = r["workflows"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["step"])
        .collect();
    assert_eq!(steps, [&json!("residence")], "{r:#}");
    // Narrowed to an agency: its steps only, not the cases as a whole.
    let r = kpis(&harness, "from=2027-04-29&to=2027-05-10&agency=police").await;
    assert!(r["workflows"][0].get("cases").is_none(), "{r:#}");
    assert_eq!(r["workflows"][0]["steps"].as_array().unwrap().len(), 1);

    // A period backwards or longer than a year is the client's mistake, said plainly.
    for query in [
        "from=2027-05-10&to=2027-04-29",
        "from=2026-01-01&to=2027-05-10",
    ] {
        let answer = harness
            .http
            .get(format!("{}/v1/kpis?{query}", harness.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_period", "{body:#}");
    }
}
