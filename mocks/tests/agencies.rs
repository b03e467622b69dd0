//! The mock agencies over real HTTP: each procedure's happy path, each refusal reason, idempotent
//! replay, and each injected fault.

use std::time::Duration;

use civicflow_mocks::server::{CIVIL_STATUS, POLICE, SOCIAL_ASSISTANCE, SOCIAL_SECURITY};
use civicflow_mocks::{MocksConfig, RunningMocks, start};
use serde_json::{Value, json};

const TODAY: &str = "2026-11-23";

struct Mocks {
    running: RunningMocks,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Mocks {
    async fn start() -> Mocks {
        Mocks::start_with(MocksConfig {
            today: Some(TODAY.parse().unwrap()),
            population: 50,
            ..MocksConfig::default()
        })
        .await
    }

    async fn start_with(config: MocksConfig) -> Mocks {
        let running = start(config).await.expect("mocks start");
        Mocks {
            running,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, agency: &str, path: &str) -> String {
        format!("{}{path}", self.running.base_url(agency).unwrap())
    }

    /// A request to one of `agency`'s procedures, with the X-Road headers its gateway asks.
    fn call(&self, method: reqwest::Method, agency: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(agency, path))
            .header("X-Road-Client", "VN/GOV/TEST/agencies")
            .header("X-Road-Service", format!("VN/GOV/{agency}/test/v1"))
            .header("X-Road-Id", uuid_like())
    }

    async fn post(&self, agency: &str, path: &str, key: &str, body: &Value) -> Answer {
        let reply = self
            .call(reqwest::Method::POST, agency, path)
            .header("Idempotency-Key", key)
            .header("X-Road-Issue", format!("case-{key}"))
            .json(body)
            .send()
            .await
            .expect("request");
        answer(reply).await
    }

    async fn get(&self, agency: &str, path: &str) -> Answer {
        answer(
            self.call(reqwest::Method::GET, agency, path)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn put(&self, agency: &str, path: &str, body: &Value) -> Answer {
        answer(
            self.http
                .put(self.url(agency, path))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn admin_post(&self, agency: &str, path: &str, body: &Value) -> Answer {
        answer(
            self.http
                .post(self.url(agency, path))
                .json(body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn effects_of(&self, agency: &str, key: &str) -> (u64, u64) {
        let effects = self.get(agency, "/admin/effects").await.body;
        let entry = effects["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["idempotency_key"] == key);
        entry.map_or((0, 0), |e| {
            (
                e["effects"].as_u64().unwrap(),
                e["replays"].as_u64().unwrap(),
            )
        })
    }

    /// Registers a birth and returns the reply body (child's personal ID, extract number).
    async fn born(&self, key: &str, mutate: impl FnOnce(&mut Value)) -> Value {
        let mut body = birth();
        mutate(&mut body);
        let answer = self
            .post(CIVIL_STATUS, "/v1/birth-registrations", key, &body)
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body
    }
}

/// A message id no other request of the run has.
fn uuid_like() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "msg-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

async fn answer(reply: reqwest::Response) -> Answer {
    let status = reply.status().as_u16();
    let headers = reply.headers().clone();
    let text = reply.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

fn birth() -> Value {
    json!({
        "office_commune_code": "00004",
        "requester_personal_id": "001190123456",
        "child": {
            "full_name": "Trần Minh An",
            "date_of_birth": "2026-11-20",
            "sex": "male",
            "ethnicity": "Kinh",
            "nationality": "Việt Nam",
            "place_of_birth": "Bệnh viện Xanh Pôn, Hà Nội",
            "home_town": "Nam Định"
        },
        "birth_certificate_number": "GCS-2026-0001",
        "mother": { "full_name": "Nguyễn Thị Lan", "personal_id": "001190123456" },
        "father": { "full_name": "Trần Văn Minh", "personal_id": "001089654321" },
        "permanent_address": { "commune_code": "00004", "detail": "12 Điện Biên Phủ" }
    })
}

fn death(personal_id: &str, full_name: &str) -> Value {
    json!({
        "office_commune_code": "00004",
        "requester_personal_id": "001089654321",
        "deceased": {
            "personal_id": personal_id,
            "full_name": full_name,
            "date_of_death": "2026-11-21",
            "place_of_death": "Bệnh viện Bạch Mai"
        },
        "death_notice_number": "BTC-2026-77"
    })
}

fn set(body: &mut Value, pointer: &str, value: Value) {
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = value;
}

fn remove(body: &mut Value, pointer: &str) {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    body.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(field);
}

#[tokio::test]
async fn birth_registration_issues_a_personal_id_and_replays_by_key() {
    let mocks = Mocks::start().await;
    let first = mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "k-1", &birth())
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.body["child_personal_id"].as_str().unwrap();
    assert_eq!(id.len(), 12);
    assert!(
        id.starts_with("001226"),
        "province 001, 21st-century male (2), born 2026: {id}"
    );
    assert!(
        first.body["birth_extract_number"]
            .as_str()
            .unwrap()
            .starts_with("TLKS-00004-2026-")
    );

    let again = mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "k-1", &birth())
        .await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(mocks.effects_of(CIVIL_STATUS, "k-1").await, (1, 1));

    let mut other = birth();
    set(&mut other, "/child/full_name", json!("Trần Minh Bảo"));
    let conflict = mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "k-1", &other)
        .await;
    assert_eq!(
        (conflict.status, conflict.body["reason_code"].as_str()),
        (409, Some("IDEMPOTENCY_KEY_REUSED"))
    );

    let records = mocks.get(CIVIL_STATUS, "/admin/records").await.body;
    assert_eq!(records["births"].as_array().unwrap().len(), 1);
    assert_eq!(records["births"][0]["child_personal_id"], id);
}

#[tokio::test]
async fn birth_registration_refusals() {
    let mocks = Mocks::start().await;
    mocks.born("first", |_| {}).await;
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, &str, Mutation)> = vec![
        ("MISSING_FIELD", "child.home_town", |b| {
            remove(b, "/child/home_town")
        }),
        ("INVALID_FIELD", "child.date_of_birth", |b| {
            set(b, "/child/date_of_birth", json!("20/11/2026"))
        }),
        ("INVALID_FIELD", "mother.personal_id", |b| {
            set(b, "/mother/personal_id", json!("12345"))
        }),
        ("INVALID_FIELD", "child.full_name", |b| {
            set(b, "/child/full_name", json!("  "))
        }),
        ("UNKNOWN_COMMUNE", "office_commune_code", |b| {
            set(b, "/office_commune_code", json!("99999"))
        }),
        ("OUTSIDE_COMMUNE", "permanent_address.commune_code", |b| {
            set(b, "/permanent_address/commune_code", json!("26734"))
        }),
        ("BIRTH_DATE_IN_FUTURE", "child.date_of_birth", |b| {
            set(b, "/child/date_of_birth", json!("2026-12-01"))
        }),
        ("BIRTH_TOO_OLD", "child.date_of_birth", |b| {
            set(b, "/child/date_of_birth", json!("2026-09-01"))
        }),
        ("REQUESTER_UNKNOWN", "requester_personal_id", |b| {
            set(b, "/requester_personal_id", json!("001190999999"))
        }),
        ("PARENT_UNKNOWN", "father.personal_id", |b| {
            set(b, "/father/personal_id", json!("001089000000"))
        }),
        (
            "BIRTH_ALREADY_REGISTERED",
            "birth_certificate_number",
            |_| {},
        ),
    ];
    for (i, (code, field, mutate)) in cases.into_iter().enumerate() {
        let mut body = birth();
        mutate(&mut body);
        let answer = mocks
            .post(
                CIVIL_STATUS,
                "/v1/birth-registrations",
                &format!("refusal-{i}"),
                &body,
            )
            .await;
        assert_eq!(answer.status, 422, "{code}: {}", answer.body);
        assert_eq!(answer.body["reason_code"], code, "{}", answer.body);
        assert_eq!(answer.body["field"], field, "{}", answer.body);
        assert!(!answer.body["message"].as_str().unwrap().is_empty());
        assert_eq!(
            mocks
                .effects_of(CIVIL_STATUS, &format!("refusal-{i}"))
                .await,
            (0, 0)
        );
    }
    let foreign_father = {
        let mut b = birth();
        set(
            &mut b,
            "/father",
            json!({"full_name": "John Smith", "passport_number": "P1234567"}),
        );
        set(&mut b, "/birth_certificate_number", json!("GCS-2026-0002"));
        b
    };
    assert_eq!(
        mocks
            .post(
                CIVIL_STATUS,
                "/v1/birth-registrations",
                "foreign",
                &foreign_father
            )
            .await
            .status,
        201
    );
    let garbage = mocks
        .call(
            reqwest::Method::POST,
            CIVIL_STATUS,
            "/v1/birth-registrations",
        )
        .header("Idempotency-Key", "garbage")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let keyless = mocks
        .call(
            reqwest::Method::POST,
            CIVIL_STATUS,
            "/v1/birth-registrations",
        )
        .json(&birth())
        .send()
        .await
        .unwrap();
    assert_eq!(keyless.status(), 400);
    assert_eq!(
        answer(keyless).await.body["reason_code"],
        "IDEMPOTENCY_KEY_REQUIRED"
    );
}

/// Issue 35: a parent without an identity document is a missing paper, asked for with every
/// other at once (form 02), not a refusal; the same dossier completed is registered.
#[tokio::test]
async fn an_incomplete_birth_dossier_lists_every_missing_part_and_records_nothing() {
    let mocks = Mocks::start().await;
    let mut body = birth();
    remove(&mut body, "/mother/personal_id");
    set(&mut body, "/father", json!({"full_name": "Trần Văn Minh"}));
    let answer = mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "incomplete", &body)
        .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.body["reason_code"], "DOSSIER_INCOMPLETE");
    let names: Vec<&str> = answer.body["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mother.personal_id", "father.personal_id"]);
    assert!(
        answer.body["missing"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("identity")
    );
    assert_eq!(mocks.effects_of(CIVIL_STATUS, "incomplete").await, (0, 0));
    let complete = birth();
    let answer = mocks
        .post(
            CIVIL_STATUS,
            "/v1/birth-registrations",
            "complete",
            &complete,
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
}

#[tokio::test]
async fn death_registration_and_its_refusals() {
    let mocks = Mocks::start().await;
    let ok = mocks
        .post(
            CIVIL_STATUS,
            "/v1/death-registrations",
            "d-1",
            &death("001045333444", "Lê Văn Thọ"),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert!(
        ok.body["death_extract_number"]
            .as_str()
            .unwrap()
            .starts_with("TLKT-00004-2026-")
    );
    let cases = [
        (
            "DEATH_ALREADY_REGISTERED",
            death("001045333444", "Lê Văn Thọ"),
        ),
        (
            "PERSON_NOT_IN_POPULATION_DB",
            death("001045000000", "Lê Văn Thọ"),
        ),
        ("NAME_MISMATCH", death("001075111222", "Trần Văn Hùng Sai")),
        ("OUTSIDE_COMMUNE", death("079158555666", "Phạm Thị Hoa")),
        ("DATE_OF_DEATH_IN_FUTURE", {
            let mut b = death("001075111222", "Trần Văn Hùng");
            set(&mut b, "/deceased/date_of_death", json!("2027-01-01"));
            b
        }),
        ("MISSING_FIELD", {
            let mut b = death("001075111222", "Trần Văn Hùng");
            remove(&mut b, "/death_notice_number");
            b
        }),
    ];
    for (i, (code, body)) in cases.into_iter().enumerate() {
        let answer = mocks
            .post(
                CIVIL_STATUS,
                "/v1/death-registrations",
                &format!("d-refusal-{i}"),
                &body,
            )
            .await;
        assert_eq!(
            (answer.status, answer.body["reason_code"].as_str()),
            (422, Some(code)),
            "{}",
            answer.body
        );
    }
}

/// A stand-in for civicflow's callback endpoint: collects what the police post, failing the first
/// `fail_first` deliveries with 503.
async fn callback_receiver(
    fail_first: usize,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(Value, Option<String>)>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/callbacks/{token}",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let tx = tx.clone();
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    tx.send((body, auth)).ok();
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callbacks/tok-1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn registration(child: &Value, head: &str, callback_url: &str) -> Value {
    json!({
        "personal_id": child["child_personal_id"],
        "full_name": "Trần Minh An",
        "date_of_birth": "2026-11-20",
        "address": { "commune_code": "00004", "detail": "12 Điện Biên Phủ" },
        "household_head_personal_id": head,
        "relationship_to_head": "con",
        "birth_extract_number": child["birth_extract_number"],
        "callback_url": callback_url
    })
}

async fn next_callback(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Value, Option<String>)>,
) -> (Value, Option<String>) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("callback within 10 s")
        .expect("callback")
}

#[tokio::test]
async fn residence_registration_calls_back_after_consent() {
    let mocks = Mocks::start_with(MocksConfig {
        today: Some(TODAY.parse().unwrap()),
        callback_token: Some("police-secret".into()),
        population: 10,
        ..MocksConfig::default()
    })
    .await;
    let (url, mut callbacks) = callback_receiver(2).await;

    let child = mocks.born("b-auto", |_| {}).await;
    let accepted = mocks
        .post(
            POLICE,
            "/v1/residence-registrations",
            "r-auto",
            &registration(&child, "001190123456", &url),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.body["state"], "awaiting_consent");
    let (body, auth) = next_callback(&mut callbacks).await;
    assert_eq!(body["outcome"], "registered", "{body}");
    assert_eq!(body["registration_id"], accepted.body["registration_id"]);
    assert!(
        body["residence"]["household_number"]
            .as_str()
            .unwrap()
            .starts_with("HK-00004-")
    );
    assert_eq!(auth.as_deref(), Some("Bearer police-secret"));
    let status_url = accepted.body["status_url"].as_str().unwrap();
    assert_eq!(
        mocks.get(POLICE, status_url).await.body["outcome"],
        "registered"
    );
    let records = mocks.get(POLICE, "/admin/records").await.body;
    assert_eq!(
        records["registrations"][0]["callback"]["attempts"], 3,
        "two 503s, then delivered"
    );

    let child = mocks
        .born("b-manual", |b| {
            set(b, "/birth_certificate_number", json!("GCS-2"))
        })
        .await;
    let accepted = mocks
        .post(
            POLICE,
            "/v1/residence-registrations",
            "r-manual",
            &registration(&child, "001075111222", &url),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let not_yet = tokio::time::timeout(Duration::from_millis(600), callbacks.recv()).await;
    assert!(
        not_yet.is_err(),
        "a manual household head has not answered yet"
    );
    let id = accepted.body["registration_id"].as_str().unwrap();
    let decided = mocks
        .admin_post(
            POLICE,
            &format!("/admin/residence-registrations/{id}/consent"),
            &json!({"granted": true}),
        )
        .await;
    assert_eq!(decided.status, 200, "{}", decided.body);
    assert_eq!(
        next_callback(&mut callbacks).await.0["outcome"],
        "registered"
    );
    let twice = mocks
        .admin_post(
            POLICE,
            &format!("/admin/residence-registrations/{id}/consent"),
            &json!({"granted": false}),
        )
        .await;
    assert_eq!(
        (twice.status, twice.body["reason_code"].as_str()),
        (409, Some("ALREADY_DECIDED"))
    );

    let child = mocks
        .born("b-refuse", |b| {
            set(b, "/birth_certificate_number", json!("GCS-3"))
        })
        .await;
    let accepted = mocks
        .post(
            POLICE,
            "/v1/residence-registrations",
            "r-refuse",
            &registration(&child, "001068777888", &url),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let (body, _) = next_callback(&mut callbacks).await;
    assert_eq!(
        (body["outcome"].as_str(), body["reason_code"].as_str()),
        (Some("refused"), Some("HOUSEHOLD_HEAD_REFUSED"))
    );
}

#[tokio::test]
async fn residence_registration_refusals() {
    let mocks = Mocks::start().await;
    let (url, _callbacks) = callback_receiver(0).await;
    let child = mocks.born("b", |_| {}).await;
    let registered = mocks
        .post(
            POLICE,
            "/v1/residence-registrations",
            "r-ok",
            &registration(&child, "001190123456", &url),
        )
        .await;
    assert_eq!(registered.status, 202);
    let other = mocks
        .born("b2", |b| {
            set(b, "/birth_certificate_number", json!("GCS-9"))
        })
        .await;
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, &str, Mutation)> = vec![
        ("PERSON_NOT_IN_POPULATION_DB", "personal_id", |b| {
            set(b, "/personal_id", json!("001226000000"))
        }),
        ("DATA_MISMATCH", "full_name", |b| {
            set(b, "/full_name", json!("Someone Else"))
        }),
        (
            "HOUSEHOLD_HEAD_UNKNOWN",
            "household_head_personal_id",
            |b| set(b, "/household_head_personal_id", json!("001190000001")),
        ),
        ("OUTSIDE_COMMUNE", "address.commune_code", |b| {
            set(b, "/household_head_personal_id", json!("079158555666"))
        }),
        ("UNKNOWN_COMMUNE", "address.commune_code", |b| {
            set(b, "/address/commune_code", json!("99999"))
        }),
        ("INVALID_FIELD", "callback_url", |b| {
            set(b, "/callback_url", json!("ftp://x"))
        }),
        ("MISSING_FIELD", "callback_url", |b| {
            remove(b, "/callback_url")
        }),
    ];
    for (i, (code, field, mutate)) in cases.into_iter().enumerate() {
        let mut body = registration(&other, "001190123456", &url);
        mutate(&mut body);
        let answer = mocks
            .post(
                POLICE,
                "/v1/residence-registrations",
                &format!("r-{i}"),
                &body,
            )
            .await;
        assert_eq!(
            (answer.status, answer.body["reason_code"].as_str()),
            (422, Some(code)),
            "{}",
            answer.body
        );
        assert_eq!(answer.body["field"], field, "{}", answer.body);
    }
    // A blank relationship to the household head is a part the desk asks the family for.
    let mut body = registration(&other, "001190123456", &url);
    set(&mut body, "/relationship_to_head", json!(" "));
    let answer = mocks
        .post(POLICE, "/v1/residence-registrations", "r-incomplete", &body)
        .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(answer.body["reason_code"], "DOSSIER_INCOMPLETE");
    assert_eq!(answer.body["missing"][0]["name"], "relationship_to_head");
    let again = mocks
        .post(
            POLICE,
            "/v1/residence-registrations",
            "r-again",
            &registration(&child, "001190123456", &url),
        )
        .await;
    assert_eq!(
        again.body["reason_code"], "ALREADY_REQUESTED",
        "{}",
        again.body
    );
}

#[tokio::test]
async fn residence_deregistration_after_a_registered_death() {
    let mocks = Mocks::start().await;
    let body = json!({
        "personal_id": "001045333444",
        "full_name": "Lê Văn Thọ",
        "death_extract_number": "TLKT-00004-2026-000001",
        "date_of_death": "2026-11-21",
        "address": { "commune_code": "00004", "detail": "5 Hoàng Diệu" },
        "requester_personal_id": "001089654321"
    });
    let early = mocks
        .post(POLICE, "/v1/residence-deregistrations", "x-early", &body)
        .await;
    assert_eq!(
        early.body["reason_code"], "DEATH_NOT_REGISTERED",
        "{}",
        early.body
    );
    assert_eq!(
        mocks
            .post(
                CIVIL_STATUS,
                "/v1/death-registrations",
                "d",
                &death("001045333444", "Lê Văn Thọ")
            )
            .await
            .status,
        201
    );
    let mut elsewhere = body.clone();
    set(&mut elsewhere, "/address/commune_code", json!("00070"));
    let outside = mocks
        .post(
            POLICE,
            "/v1/residence-deregistrations",
            "x-outside",
            &elsewhere,
        )
        .await;
    assert_eq!(
        outside.body["reason_code"], "OUTSIDE_COMMUNE",
        "{}",
        outside.body
    );
    let ok = mocks
        .post(POLICE, "/v1/residence-deregistrations", "x-ok", &body)
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert!(
        ok.body["deregistration_number"]
            .as_str()
            .unwrap()
            .starts_with("XTT-00004-")
    );
    let twice = mocks
        .post(POLICE, "/v1/residence-deregistrations", "x-twice", &body)
        .await;
    assert_eq!(
        twice.body["reason_code"], "ALREADY_DEREGISTERED",
        "{}",
        twice.body
    );
    let mut unknown = body.clone();
    set(&mut unknown, "/personal_id", json!("001045000001"));
    assert_eq!(
        mocks
            .post(
                POLICE,
                "/v1/residence-deregistrations",
                "x-unknown",
                &unknown
            )
            .await
            .body["reason_code"],
        "PERSON_NOT_IN_POPULATION_DB"
    );
}

fn card_application(child: &Value) -> Value {
    json!({
        "child_personal_id": child["child_personal_id"],
        "full_name": "Trần Minh An",
        "date_of_birth": "2026-11-20",
        "sex": "male",
        "address": { "commune_code": "00004", "detail": "12 Điện Biên Phủ" },
        "birth_extract_number": child["birth_extract_number"]
    })
}

#[tokio::test]
async fn child_health_insurance_card_is_issued_on_the_status_url() {
    let mocks = Mocks::start().await;
    let child = mocks.born("b", |_| {}).await;
    let accepted = mocks
        .post(
            SOCIAL_SECURITY,
            "/v1/child-health-insurance-cards",
            "c-1",
            &card_application(&child),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let status_url = accepted.body["status_url"].as_str().unwrap();
    assert_eq!(
        mocks.get(SOCIAL_SECURITY, status_url).await.body["state"],
        "processing"
    );
    assert_eq!(
        mocks.get(SOCIAL_SECURITY, status_url).await.body["state"],
        "processing"
    );
    let issued = mocks.get(SOCIAL_SECURITY, status_url).await.body;
    assert_eq!(issued["state"], "issued", "{issued}");
    let card = &issued["card"];
    let number = card["social_insurance_number"].as_str().unwrap();
    assert_eq!(number.len(), 10);
    assert!(number.starts_with("01"));
    assert_eq!(card["card_code"], format!("TE101{number}"));
    assert_eq!(
        (card["valid_from"].as_str(), card["valid_to"].as_str()),
        (Some("2026-11-20"), Some("2032-11-19"))
    );
    assert_eq!(card["initial_hospital"]["code"], "01-015");

    let again = mocks
        .post(
            SOCIAL_SECURITY,
            "/v1/child-health-insurance-cards",
            "c-2",
            &card_application(&child),
        )
        .await;
    assert_eq!(again.body["reason_code"], "ALREADY_INSURED");
    let mut old = card_application(&child);
    set(&mut old, "/child_personal_id", json!("001089654321"));
    set(&mut old, "/full_name", json!("Trần Văn Minh"));
    set(&mut old, "/date_of_birth", json!("1989-09-02"));
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/child-health-insurance-cards",
                "c-3",
                &old
            )
            .await
            .body["reason_code"],
        "NOT_UNDER_SIX"
    );
    let mut unknown = card_application(&child);
    set(&mut unknown, "/child_personal_id", json!("001226000001"));
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/child-health-insurance-cards",
                "c-4",
                &unknown
            )
            .await
            .body["reason_code"],
        "PERSON_NOT_IN_POPULATION_DB"
    );
    let mut mismatch = card_application(&child);
    set(&mut mismatch, "/sex", json!("female"));
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/child-health-insurance-cards",
                "c-5",
                &mismatch
            )
            .await
            .body["reason_code"],
        "DATA_MISMATCH"
    );
    let mut hospital = card_application(&child);
    hospital["initial_hospital_code"] = json!("00-000");
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/child-health-insurance-cards",
                "c-6",
                &hospital
            )
            .await
            .body["reason_code"],
        "UNKNOWN_HOSPITAL"
    );
    assert_eq!(
        mocks
            .get(
                SOCIAL_SECURITY,
                "/v1/child-health-insurance-cards/TE-9999999"
            )
            .await
            .status,
        404
    );
}

fn funeral(deceased: &str) -> Value {
    json!({
        "deceased_personal_id": deceased,
        "death_extract_number": "TLKT-00004-2026-000001",
        "date_of_death": "2026-11-21",
        "organizer": { "personal_id": "001089654321", "full_name": "Trần Văn Minh", "relationship": "con" },
        "payment": { "method": "bank_transfer", "bank_code": "VCB", "account_number": "0011004455667" }
    })
}

#[tokio::test]
async fn funeral_allowance_is_ten_reference_levels_for_eligible_deceased() {
    let mocks = Mocks::start().await;
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/funeral-allowances",
                "f-0",
                &funeral("001045333444")
            )
            .await
            .body["reason_code"],
        "DEATH_NOT_REGISTERED"
    );
    assert_eq!(
        mocks
            .post(
                CIVIL_STATUS,
                "/v1/death-registrations",
                "d-1",
                &death("001045333444", "Lê Văn Thọ")
            )
            .await
            .status,
        201
    );
    let paid = mocks
        .post(
            SOCIAL_SECURITY,
            "/v1/funeral-allowances",
            "f-1",
            &funeral("001045333444"),
        )
        .await;
    assert_eq!(paid.status, 201, "{}", paid.body);
    assert_eq!(
        (
            paid.body["amount_vnd"].as_u64(),
            paid.body["category"].as_str()
        ),
        (Some(23_400_000), Some("pensioner"))
    );
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/funeral-allowances",
                "f-2",
                &funeral("001045333444")
            )
            .await
            .body["reason_code"],
        "ALREADY_PAID"
    );

    let mut not_eligible = death("001190123456", "Nguyễn Thị Lan");
    set(
        &mut not_eligible,
        "/requester_personal_id",
        json!("001089654321"),
    );
    assert_eq!(
        mocks
            .post(
                CIVIL_STATUS,
                "/v1/death-registrations",
                "d-2",
                &not_eligible
            )
            .await
            .status,
        201
    );
    let refused = mocks
        .post(
            SOCIAL_SECURITY,
            "/v1/funeral-allowances",
            "f-3",
            &funeral("001190123456"),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["reason_code"].as_str()),
        (422, Some("DECEASED_NOT_ELIGIBLE"))
    );

    assert_eq!(
        mocks
            .post(
                CIVIL_STATUS,
                "/v1/death-registrations",
                "d-3",
                &death("001075111222", "Trần Văn Hùng")
            )
            .await
            .status,
        201
    );
    let mut no_account = funeral("001075111222");
    remove(&mut no_account, "/payment/account_number");
    let missing = mocks
        .post(
            SOCIAL_SECURITY,
            "/v1/funeral-allowances",
            "f-4",
            &no_account,
        )
        .await;
    assert_eq!(
        (
            missing.body["reason_code"].as_str(),
            missing.body["field"].as_str()
        ),
        (Some("MISSING_FIELD"), Some("payment.account_number"))
    );
    let mut dead_organizer = funeral("001075111222");
    set(
        &mut dead_organizer,
        "/organizer/personal_id",
        json!("001045333444"),
    );
    assert_eq!(
        mocks
            .post(
                SOCIAL_SECURITY,
                "/v1/funeral-allowances",
                "f-5",
                &dead_organizer
            )
            .await
            .body["reason_code"],
        "ORGANIZER_UNKNOWN"
    );
    let mut cash = funeral("001075111222");
    set(&mut cash, "/payment", json!({"method": "cash"}));
    let paid = mocks
        .post(SOCIAL_SECURITY, "/v1/funeral-allowances", "f-6", &cash)
        .await;
    assert_eq!(
        (paid.status, paid.body["category"].as_str()),
        (201, Some("compulsory_contributor")),
        "{}",
        paid.body
    );
}

async fn with_fault(mocks: &Mocks, rates: Value) {
    let set = mocks
        .put(
            CIVIL_STATUS,
            "/admin/faults?seed=3",
            &json!({ "rates": rates, "retry_after_secs": 7, "timeout_hold_ms": 2000 }),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
}

#[tokio::test]
async fn faults_before_the_effect_create_nothing() {
    let mocks = Mocks::start().await;
    for (rates, status) in [
        (json!({"unavailable": 1.0}), 503),
        (json!({"internal_error": 1.0}), 500),
        (json!({"too_many_requests": 1.0}), 429),
    ] {
        with_fault(&mocks, rates).await;
        let answer = mocks
            .post(CIVIL_STATUS, "/v1/birth-registrations", "f", &birth())
            .await;
        assert_eq!(answer.status, status, "{}", answer.body);
        if status != 500 {
            assert_eq!(answer.headers["retry-after"], "7");
        }
        assert_eq!(mocks.effects_of(CIVIL_STATUS, "f").await, (0, 0));
    }
    with_fault(&mocks, json!({})).await;
    let outage = mocks
        .admin_post(CIVIL_STATUS, "/admin/outages", &json!({"duration_ms": 300}))
        .await;
    assert_eq!(outage.status, 201);
    assert_eq!(
        mocks
            .post(CIVIL_STATUS, "/v1/birth-registrations", "f", &birth())
            .await
            .status,
        503
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        mocks
            .post(CIVIL_STATUS, "/v1/birth-registrations", "f", &birth())
            .await
            .status,
        201
    );
    assert_eq!(mocks.effects_of(CIVIL_STATUS, "f").await, (1, 0));
    let invalid = mocks
        .put(
            CIVIL_STATUS,
            "/admin/faults",
            &json!({"rates": {"unavailable": 0.8, "garbled": 0.8}}),
        )
        .await;
    assert_eq!(
        (invalid.status, invalid.body["reason_code"].as_str()),
        (422, Some("INVALID_FAULTS"))
    );
}

#[tokio::test]
async fn lost_replies_happen_after_the_effect_and_replay_by_key() {
    let mocks = Mocks::start().await;
    with_fault(&mocks, json!({"reset": 1.0})).await;
    let reset = mocks
        .call(
            reqwest::Method::POST,
            CIVIL_STATUS,
            "/v1/birth-registrations",
        )
        .header("Idempotency-Key", "lost")
        .json(&birth())
        .send()
        .await;
    let broken = match reset {
        Err(_) => true,
        Ok(reply) => reply.bytes().await.is_err(),
    };
    assert!(broken, "a reset connection must fail on the client");

    with_fault(&mocks, json!({"timeout": 1.0})).await;
    let timed_out = mocks
        .call(
            reqwest::Method::POST,
            CIVIL_STATUS,
            "/v1/birth-registrations",
        )
        .header("Idempotency-Key", "lost")
        .timeout(Duration::from_millis(300))
        .json(&birth())
        .send()
        .await;
    assert!(timed_out.is_err());

    with_fault(&mocks, json!({"garbled": 1.0})).await;
    let garbled = mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "lost", &birth())
        .await;
    assert_eq!(garbled.status, 201);
    assert!(
        garbled.body.is_string(),
        "a garbled body is not JSON: {}",
        garbled.body
    );

    with_fault(&mocks, json!({})).await;
    let clean = mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "lost", &birth())
        .await;
    assert_eq!(clean.status, 201);
    assert!(clean.body["child_personal_id"].is_string());
    assert_eq!(
        mocks.effects_of(CIVIL_STATUS, "lost").await,
        (1, 3),
        "one effect, three replays"
    );
}

#[tokio::test]
async fn latency_is_injected() {
    let mocks = Mocks::start().await;
    let set = mocks
        .put(
            CIVIL_STATUS,
            "/admin/faults",
            &json!({"latency": {"distribution": "fixed", "ms": 200}}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let started = std::time::Instant::now();
    mocks
        .post(CIVIL_STATUS, "/v1/birth-registrations", "slow", &birth())
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn request_metadata_is_logged() {
    let mocks = Mocks::start().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    mocks
        .call(
            reqwest::Method::POST,
            CIVIL_STATUS,
            "/v1/birth-registrations",
        )
        .header("Idempotency-Key", "meta")
        .header("traceparent", traceparent)
        .header("X-Road-Issue", "case-42")
        .header("X-Road-UserId", "ps_0123")
        .json(&birth())
        .send()
        .await
        .unwrap();
    let log = mocks
        .get(CIVIL_STATUS, "/admin/requests?case_id=case-42")
        .await
        .body;
    let entry = &log[0];
    assert_eq!(entry["traceparent"], traceparent);
    assert_eq!(entry["client"], "VN/GOV/TEST/agencies");
    assert_eq!(entry["service"], "VN/GOV/civil-status/test/v1");
    assert_eq!(entry["user_id"], "ps_0123");
    assert_eq!(entry["idempotency_key"], "meta");
    let effects = mocks.get(CIVIL_STATUS, "/admin/effects").await.body;
    assert_eq!(
        effects["cases"][0],
        json!({"case_id": "case-42", "procedure": "birth-registration", "effects": 1})
    );
}

#[tokio::test]
async fn seeded_runs_are_reproducible() {
    let run = |seed: u64| async move {
        let mocks = Mocks::start_with(MocksConfig {
            seed,
            today: Some(TODAY.parse().unwrap()),
            population: 20,
            ..MocksConfig::default()
        })
        .await;
        let citizens = mocks
            .get(CIVIL_STATUS, "/admin/citizens?limit=100")
            .await
            .body;
        let child = mocks.born("b", |_| {}).await;
        (citizens, child["child_personal_id"].clone())
    };
    let (a, b, c) = (run(5).await, run(5).await, run(6).await);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(a.0.as_array().unwrap().len(), 26);
}

#[tokio::test]
async fn a_birth_allowance_is_granted_once_to_a_poor_household_of_the_commune() {
    let mocks = Mocks::start().await;
    let child = mocks.born("b-allowance", |_| {}).await["child_personal_id"].clone();
    let claim = |certificate: Value| json!({"child_personal_id": child, "commune_code": "00004", "poor_household_certificate": certificate});
    for (key, certificate, code) in [
        ("a-none", Value::Null, "NOT_POOR_HOUSEHOLD"),
        ("a-bad", json!("poor"), "NOT_POOR_HOUSEHOLD"),
        (
            "a-other",
            json!("HN-00001-0001"),
            "CERTIFICATE_OTHER_COMMUNE",
        ),
    ] {
        let refused = mocks
            .post(
                SOCIAL_ASSISTANCE,
                "/v1/birth-allowances",
                key,
                &claim(certificate),
            )
            .await;
        assert_eq!(
            (refused.status, refused.body["reason_code"].as_str()),
            (422, Some(code))
        );
    }
    let granted = mocks
        .post(
            SOCIAL_ASSISTANCE,
            "/v1/birth-allowances",
            "a-ok",
            &claim(json!("HN-00004-0012")),
        )
        .await;
    assert_eq!(granted.status, 201, "{}", granted.body);
    assert_eq!(granted.body["amount_vnd"], 4_680_000);
    let again = mocks
        .post(
            SOCIAL_ASSISTANCE,
            "/v1/birth-allowances",
            "a-again",
            &claim(json!("HN-00004-0012")),
        )
        .await;
    assert_eq!(again.body["reason_code"], "ALREADY_GRANTED");
    assert_eq!(mocks.effects_of(SOCIAL_ASSISTANCE, "a-ok").await, (1, 0));
}

#[tokio::test]
async fn a_procedure_needs_x_road_headers_and_answers_with_the_request_hash() {
    let mocks = Mocks::start().await;
    let bare = mocks
        .http
        .post(mocks.url(CIVIL_STATUS, "/v1/birth-registrations"))
        .header("Idempotency-Key", "bare")
        .json(&birth())
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 400);
    let refused: Value = bare.json().await.unwrap();
    assert_eq!(refused["reason_code"], "XROAD_HEADERS_INVALID");
    assert_eq!(mocks.effects_of(CIVIL_STATUS, "bare").await, (0, 0));

    let elsewhere = mocks
        .http
        .post(mocks.url(CIVIL_STATUS, "/v1/birth-registrations"))
        .header("X-Road-Client", "VN/GOV/TEST/agencies")
        .header("X-Road-Service", "VN/GOV/police/residence-registration/v1")
        .header("X-Road-Id", "m-elsewhere")
        .json(&birth())
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 400, "a service of another agency");

    let body = serde_json::to_vec(&birth()).unwrap();
    let reply = mocks
        .http
        .post(mocks.url(CIVIL_STATUS, "/v1/birth-registrations"))
        .header("X-Road-Client", "VN/GOV/TEST/agencies")
        .header(
            "X-Road-Service",
            "VN/GOV/civil-status/birth-registration/v1",
        )
        .header("Idempotency-Key", "hashed")
        .header("X-Road-Id", "m-hashed")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    let expected =
        civicflow_mocks::xroad::request_hash("POST", "/v1/birth-registrations", "m-hashed", &body);
    assert_eq!(reply.headers()["x-road-request-hash"], expected.as_str());
    assert_eq!(reply.headers()["x-road-id"], "m-hashed");

    with_fault(&mocks, json!({"wrong_request_hash": 1.0})).await;
    let wrong = mocks
        .http
        .post(mocks.url(CIVIL_STATUS, "/v1/birth-registrations"))
        .header("X-Road-Client", "VN/GOV/TEST/agencies")
        .header(
            "X-Road-Service",
            "VN/GOV/civil-status/birth-registration/v1",
        )
        .header("Idempotency-Key", "hashed")
        .header("X-Road-Id", "m-hashed")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_ne!(wrong.headers()["x-road-request-hash"], expected.as_str());
}
