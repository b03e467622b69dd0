//! Who may do what, proven over the real binary's HTTP API: every endpoint, called with every
//! role, without a token and with a revoked one; and the limits on body size and request rate.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::Server;

const ROLES: [&str; 5] = ["portal", "operator", "supervisor", "agency:police", "admin"];

/// An endpoint, a body that is harmless whoever may call it (it names nothing that exists, or
/// breaks the schema), and the roles that may call it: the policy, written down independently
/// of the code that enforces it.
fn endpoints(case: &str) -> Vec<(Method, String, Option<Value>, &'static [&'static str])> {
    let act = json!({"step": "birth", "reason": "matrix"});
    let unknown = "01a20000-0000-7000-8000-000000000000";
    vec![
        (
            Method::POST,
            "/v1/cases".into(),
            Some(json!({"workflow": "birth-registration", "input": {}})),
            &["portal", "admin"],
        ),
        (
            Method::GET,
            "/v1/cases?workflow=birth-registration".into(),
            None,
            &["portal", "operator", "supervisor", "admin"],
        ),
        (
            Method::GET,
            format!("/v1/cases/{case}"),
            None,
            &["portal", "operator", "supervisor", "admin"],
        ),
        (
            Method::GET,
            format!("/v1/cases/{case}/history"),
            None,
            &["operator", "supervisor", "admin"],
        ),
        (
            Method::GET,
            "/v1/incidents".into(),
            None,
            &["operator", "supervisor", "admin"],
        ),
        (
            Method::POST,
            format!("/v1/cases/{unknown}/retry"),
            Some(act.clone()),
            &["operator", "supervisor", "admin"],
        ),
        (
            Method::POST,
            format!("/v1/cases/{unknown}/skip"),
            Some(act.clone()),
            &["operator", "supervisor", "admin"],
        ),
        (
            Method::POST,
            format!("/v1/cases/{unknown}/fix"),
            Some(json!({"step": "birth", "reason": "matrix", "input": {}})),
            &["operator", "supervisor", "admin"],
        ),
        (
            Method::POST,
            format!("/v1/cases/{unknown}/cancel"),
            Some(json!({"reason": "matrix"})),
            &["operator", "supervisor", "admin"],
        ),
        (
            Method::POST,
            "/v1/bulk/retry".into(),
            Some(json!({"filter": {"agency": "nowhere"}, "reason": "matrix"})),
            &["supervisor", "admin"],
        ),
        (
            Method::POST,
            "/v1/callbacks/no-such-token".into(),
            Some(json!({})),
            &["agency:police"],
        ),
        (Method::GET, "/v1/tokens".into(), None, &["admin"]),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"role": "nobody", "name": "matrix"})),
            &["admin"],
        ),
        (
            Method::DELETE,
            "/v1/tokens/no-such-id".into(),
            None,
            &["admin"],
        ),
    ]
}

#[tokio::test]
async fn every_endpoint_refuses_every_role_that_must_not_use_it() {
    let server = Server::start();
    let case = server
        .start_case("birth-registration", support::birth_input("ACCESS-1"))
        .await;
    let mut tokens = Vec::new();
    for role in ROLES {
        tokens.push((role, server.token(role).await));
    }
    let revoked = server.token("admin").await;
    let id = revoked.split('_').nth(1).unwrap();
    let (status, _) = server
        .call(
            Some(&server.admin),
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);

    for (method, path, body, allowed) in endpoints(&case) {
        for (role, token) in &tokens {
            let (status, reply) = server
                .call(Some(token), method.clone(), &path, body.as_ref())
                .await;
            if allowed.contains(role) {
                assert!(
                    !matches!(status, 401 | 403 | 500),
                    "{role} may {method} {path}, got {status} {reply}"
                );
            } else {
                assert_eq!(status, 403, "{role} must not {method} {path}: {reply}");
                assert_eq!(reply["error"]["code"], "forbidden");
            }
        }
        for (token, what) in [
            (None, "no token"),
            (Some("cf_forged_token"), "a forged token"),
            (Some(revoked.as_str()), "a revoked token"),
        ] {
            let (status, reply) = server
                .call(token, method.clone(), &path, body.as_ref())
                .await;
            assert_eq!(status, 401, "{what}: {method} {path}: {reply}");
            assert_eq!(reply["error"]["code"], "unauthenticated");
        }
    }
    let (status, _) = server.call(None, Method::GET, "/v1/health", None).await;
    assert_eq!(status, 200, "the health check needs no token");
}

#[tokio::test]
async fn tokens_are_issued_listed_and_revoked_and_their_secrets_never_shown_again() {
    let server = Server::start();
    let (status, issued) = server
        .call(
            Some(&server.admin),
            Method::POST,
            "/v1/tokens",
            Some(&json!({"role": "operator", "name": "alice"})),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let secret = issued["token"].as_str().unwrap();
    assert!(issued.get("digest").is_none());
    let (_, list) = server
        .call(Some(&server.admin), Method::GET, "/v1/tokens", None)
        .await;
    let text = list.to_string();
    assert!(!text.contains(secret), "a listed token shows its secret");
    assert!(text.contains("alice"));
    let (status, _) = server
        .call(Some(secret), Method::GET, "/v1/incidents", None)
        .await;
    assert_eq!(status, 200);
    let path = format!("/v1/tokens/{}", issued["id"].as_str().unwrap());
    let (status, revoked) = server
        .call(Some(&server.admin), Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_by"].as_str().unwrap().contains("admin"));
    let (status, _) = server
        .call(Some(secret), Method::GET, "/v1/incidents", None)
        .await;
    assert_eq!(status, 401);
    let (status, again) = server
        .call(Some(&server.admin), Method::DELETE, &path, None)
        .await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (409, &json!("already_revoked"))
    );
    let (status, bad) = server
        .call(
            Some(&server.admin),
            Method::POST,
            "/v1/tokens",
            Some(&json!({"role": "root", "name": "mallory"})),
        )
        .await;
    assert_eq!(
        (status, &bad["error"]["code"]),
        (422, &json!("unknown_role"))
    );
}

#[tokio::test]
async fn each_token_has_its_own_request_budget() {
    let server = Server::start_with(&["--rate-limit", "1", "--rate-burst", "3"]);
    let operator = server.token("operator").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            server
                .call(Some(&operator), Method::GET, "/v1/incidents", None)
                .await,
        );
    }
    let limited = statuses
        .iter()
        .find(|(s, _)| *s == 429)
        .expect("a 429 within 5 quick requests");
    assert_eq!(limited.1["error"]["code"], "rate_limited");
    // Another token is not slowed down by this one.
    let supervisor = server.token("supervisor").await;
    let (status, _) = server
        .call(Some(&supervisor), Method::GET, "/v1/incidents", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn requests_with_unknown_tokens_are_rate_limited_too() {
    let server = Server::start_with(&["--rate-limit", "1", "--rate-burst", "3"]);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let guess = format!("guess-{i}");
        let (status, body) = server
            .call(Some(&guess), Method::GET, "/v1/incidents", None)
            .await;
        statuses.push((status, body["error"]["code"].clone()));
    }
    assert_eq!(statuses[0], (401, json!("unauthenticated")));
    assert!(
        statuses.contains(&(429, json!("rate_limited"))),
        "guessing tokens is throttled: {statuses:?}"
    );
    // A valid token keeps its own budget.
    let (status, _) = server
        .call(Some(&server.admin), Method::GET, "/v1/incidents", None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_refused_adapter_test_says_what_was_refused() {
    let server = Server::start();
    let operator = server.token("operator").await;
    let (status, body) = server
        .call(
            Some(&operator),
            Method::POST,
            "/v1/adapters/test",
            Some(&json!({"manifest": "", "input": {}})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("test adapters"), "{message}");
    assert!(!message.contains("publish"), "{message}");
}

#[tokio::test]
async fn the_authorization_scheme_is_case_insensitive() {
    let server = Server::start();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/incidents", server.url))
            .header("authorization", format!("{scheme} {}", server.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    let response = reqwest::Client::new()
        .get(format!("{}/v1/incidents", server.url))
        .header("authorization", format!("Basic {}", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_idempotency_key_is_neither_empty_nor_unbounded() {
    let server = Server::start();
    let body = json!({"workflow": "birth-registration", "input": support::birth_input("KEY-1")});
    for key in ["", "   ", &"k".repeat(10_000)] {
        let (status, answer) = server.post("/v1/cases", &body, Some(key)).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_header", "{answer}");
    }
    let (status, answer) = server
        .post("/v1/cases", &body, Some(&"k".repeat(255)))
        .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn a_key_given_twice_inside_the_input_is_refused_like_one_at_the_top() {
    let server = Server::start();
    let input = support::birth_input("DUP-1").to_string();
    let inner = input.replacen('{', r#"{"dossier_number": "G01.123-OTHER", "#, 1);
    for body in [
        format!(r#"{{"workflow": "birth-registration", "workflow": "x", "input": {input}}}"#),
        format!(r#"{{"workflow": "birth-registration", "input": {inner}}}"#),
    ] {
        let response = support::client_with(&server.admin)
            .post(format!("{}/v1/cases", server.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert!((400..500).contains(&status), "{status} {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("twice")
                || answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("duplicate"),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn a_path_that_does_not_parse_is_a_json_error() {
    let server = Server::start();
    for path in [
        "/v1/adapters/police/residence-registration/one",
        "/v1/adapters/police/residence-registration/99999999999",
        "/v1/cases/%FF",
        "/v1/cases/%FF/history",
    ] {
        let response = support::client_with(&server.admin)
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}: {:?}",
            response.headers()
        );
        let body: Value = response.json().await.unwrap();
        assert!((400..500).contains(&status), "{path}: {status} {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn an_oversized_or_malformed_body_is_a_clear_4xx() {
    let server = Server::start();
    let huge = json!({"workflow": "birth-registration", "input": {"pad": "x".repeat(2 << 20)}});
    let (status, body) = server.post("/v1/cases", &huge, None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    // A new connection: the server closes the one whose oversized body it did not read.
    let response = support::client_with(&server.admin)
        .post(format!("{}/v1/cases", server.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body");
    let (status, body) = server
        .call(
            Some(&server.admin),
            Method::GET,
            "/v1/incidents?reason=sleepy",
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query");
}

/// The OpenAPI document's schema `name`, as a JSON Schema whose references resolve in the
/// document.
fn openapi_schema(name: &str) -> jsonschema::Validator {
    let doc: Value = serde_json::from_str(&civicflow::api::openapi_json()).unwrap();
    let schema = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&schema).unwrap()
}

#[tokio::test]
async fn case_and_history_answers_match_their_openapi_schemas() {
    let server = Server::start();
    let id = server
        .start_case("birth-registration", support::birth_input("SCHEMA-1"))
        .await;
    let case = server
        .settled(&id, std::time::Duration::from_secs(60))
        .await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let operator = server.token("operator").await;
    let (_, masked) = server
        .call(
            Some(&operator),
            Method::GET,
            &format!("/v1/cases/{id}"),
            None,
        )
        .await;
    let history = server.get(&format!("/v1/cases/{id}/history")).await;
    for (name, answer) in [
        ("CaseView", &case),
        ("CaseView", &masked),
        ("HistoryView", &history),
    ] {
        let errors: Vec<String> = openapi_schema(name)
            .iter_errors(answer)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}\n{answer:#}");
    }
}

#[tokio::test]
async fn oversized_headers_get_a_json_431() {
    let server = Server::start();
    let response = support::client_with(&server.admin)
        .get(format!("{}/v1/incidents", server.url))
        .header("x-padding", "p".repeat(1 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large", "{body}");
    // The server goes on serving.
    let (status, _) = server
        .call(Some(&server.admin), Method::GET, "/v1/incidents", None)
        .await;
    assert_eq!(status, 200);
}

/// Reads what the server sends on `stream` until it closes the connection (or `bound` passes:
/// then `None`).
async fn until_closed(stream: &mut tokio::net::TcpStream, bound: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    match tokio::time::timeout(bound, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

/// Issue 33: slow clients cannot pin the server's memory. A request head that never ends
/// loses its connection; a body that never ends gets a JSON 408; connections beyond the cap
/// wait until one of those being served ends.
#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let server = Server::start_with(&[
        "--header-read-timeout",
        "1s",
        "--request-timeout",
        "2s",
        "--max-connections",
        "3",
    ]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Connections the test's client kept open are cut off by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut head = TcpStream::connect(&addr).await.unwrap();
    head.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let closed = until_closed(&mut head, Duration::from_secs(20)).await;
    assert!(closed.is_some(), "an unfinished head kept its connection");

    let mut body = TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /v1/cases HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"workflow\"",
        server.admin
    );
    body.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut body, Duration::from_secs(20))
        .await
        .expect("an unfinished body kept its connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // Three stalled connections take every place; a fourth request waits for one to end.
    let began = tokio::time::Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/health HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    let ends: Vec<_> = stalled
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                until_closed(&mut s, Duration::from_secs(20)).await;
                began.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut fourth, Duration::from_secs(20))
        .await
        .expect("the fourth connection was never served");
    let answered = began.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut first_end = Duration::MAX;
    for end in ends {
        first_end = first_end.min(end.await.unwrap());
    }
    // The two ends are seen by two tasks: the slow client's may notice its closed socket a
    // moment after the fourth got its answer through the place it freed. Without the cap, the
    // fourth would be answered at once, near 0.1 s, not near the first end.
    assert!(
        answered + Duration::from_millis(100) >= first_end,
        "the fourth was served at {answered:?}, before a place was free at {first_end:?}"
    );
}

/// Issue 33: the operators' page spends the rate budget of the token its session was signed
/// in with, as the API does.
#[tokio::test]
async fn the_operators_page_spends_the_rate_budget_of_its_token() {
    let server = Server::start_with(&["--rate-limit", "1", "--rate-burst", "3"]);
    let operator = server.token("operator").await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = browser
        .post(format!("{}/ui/sign-in", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={operator}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let page = browser
            .get(format!("{}/ui/incidents", server.url))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        statuses.push(page.status().as_u16());
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}
