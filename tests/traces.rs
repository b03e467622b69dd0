//! Traces: the real server exports a case's trace over OTLP/HTTP to a receiver in this test
//! (one trace, whose id is the case id; a span per attempt under the case's root with the
//! agency, adapter, attempt and outcome; the portal's `traceparent` linked and its request
//! followed in), and with no endpoint configured sends nothing anywhere.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::{MANUAL_HEAD, Server, birth_input, free_port, grant_consent, with_mocks};

/// An OTLP/HTTP receiver: every span it was sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<usize>>,
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> axum::http::StatusCode {
    *r.requests.lock().unwrap() += 1;
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let mut spans = r.spans.lock().unwrap();
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
    axum::http::StatusCode::OK
}

async fn receiver_on(listener: tokio::net::TcpListener) -> Receiver {
    let receiver = Receiver::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(axum::serve(listener, app).into_future());
    receiver
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Any::IntValue(n)) => *n,
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const PORTAL_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PORTAL_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_one_trace_with_a_span_per_attempt_under_its_root() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let receiver = receiver_on(listener).await;
    let data = std::env::temp_dir().join(format!("civicflow-traces-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server::spawn(
        &data,
        &listen,
        &with_mocks(&["--otlp-endpoint", &collector]),
    );

    // Civil status refuses the first attempt; the household head consents when told.
    server
        .set_faults("civil-status", json!({"rates": {"unavailable": 1.0}}))
        .await;
    let mut input = birth_input("TRACE-1");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let response = server
        .http
        .post(format!("{}/v1/cases", server.url))
        .header("traceparent", format!("00-{PORTAL_TRACE}-{PORTAL_SPAN}-01"))
        .json(&json!({"workflow": "birth-registration", "input": input}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let case: serde_json::Value = response.json().await.unwrap();
    let id = case["id"].as_str().unwrap().to_owned();
    let bound = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let case = server.get(&format!("/v1/cases/{id}")).await;
        if case["steps"]["birth"]["status"] == "backoff" {
            break;
        }
        assert!(tokio::time::Instant::now() < bound, "{case:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.set_faults("civil-status", json!({})).await;
    loop {
        let case = server.get(&format!("/v1/cases/{id}")).await;
        if case["steps"]["residence"]["status"] == "awaiting_callback" {
            break;
        }
        assert!(tokio::time::Instant::now() < bound, "{case:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    grant_consent(&server.http, &server.agencies["police"]).await;
    let case = server.settled(&id, Duration::from_secs(60)).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    // A clean stop sends what the exporter still holds.
    assert!(server.terminate(Duration::from_secs(20)).is_some());

    let spans = receiver.spans.lock().unwrap().clone();
    let case_id: uuid::Uuid = id.parse().unwrap();
    let trace = case_id.as_bytes().to_vec();
    let of_case: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let names: Vec<&str> = of_case.iter().map(|s| s.name.as_str()).collect();

    let root = of_case
        .iter()
        .find(|s| s.name == "case birth-registration")
        .unwrap_or_else(|| panic!("no root span among {names:?}"));
    assert_eq!(root.span_id, case_id.as_bytes()[8..].to_vec());
    assert!(root.parent_span_id.is_empty());
    assert_eq!(text(root, "civicflow.workflow"), "birth-registration");
    let linked: Vec<(String, String)> = root
        .links
        .iter()
        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
        .collect();
    assert_eq!(linked, [(PORTAL_TRACE.to_owned(), PORTAL_SPAN.to_owned())]);

    let mut attempts: Vec<&&Span> = of_case
        .iter()
        .filter(|s| s.name == "attempt birth")
        .collect();
    attempts.sort_by_key(|s| int(s, "civicflow.attempt"));
    assert_eq!(attempts.len(), 2, "{names:?}");
    for (n, span) in attempts.iter().enumerate() {
        assert_eq!(span.parent_span_id, root.span_id, "{}", span.name);
        assert_eq!(int(span, "civicflow.attempt"), n as i64 + 1);
        assert_eq!(text(span, "civicflow.agency"), "civil-status");
        assert_eq!(
            text(span, "civicflow.adapter"),
            "civil-status/birth-registration@1"
        );
        assert_eq!(text(span, "civicflow.step"), "birth");
    }
    assert_eq!(int(attempts[0], "http.response.status_code"), 503);
    assert_eq!(text(attempts[0], "civicflow.outcome"), "retryable");
    assert_eq!(text(attempts[1], "civicflow.outcome"), "succeeded");
    assert_ne!(attempts[0].span_id, attempts[1].span_id);
    for expected in [
        "attempt residence",
        "callback residence",
        "attempt health_insurance",
    ] {
        let span = of_case
            .iter()
            .find(|s| s.name == expected)
            .unwrap_or_else(|| panic!("no {expected} among {names:?}"));
        assert_eq!(span.parent_span_id, root.span_id, "{expected}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("poll health_insurance")),
        "{names:?}"
    );

    // The portal's request, followed in: a span of its trace, under its span.
    let portal_trace = hex_to_bytes(PORTAL_TRACE);
    let request = spans
        .iter()
        .find(|s| s.trace_id == portal_trace && s.name == "POST /v1/cases")
        .unwrap_or_else(|| {
            panic!(
                "no request span in the portal's trace: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(request.parent_span_id, hex_to_bytes(PORTAL_SPAN));

    // Nothing personal in any name or attribute.
    for span in &spans {
        let mut said = span.name.clone();
        for a in &span.attributes {
            said.push_str(&format!(" {a:?}"));
        }
        for personal in ["001190123456", MANUAL_HEAD, "Trần", "TRACE-1"] {
            assert!(!said.contains(personal), "{personal} in {said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_endpoint_no_trace_is_sent_anywhere() {
    // The OTLP/HTTP default address: were traces on without an endpoint, they would go here.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4318")
        .await
        .expect("this test listens on OTLP's default port 4318, which must be free");
    let receiver = receiver_on(listener).await;
    let data = std::env::temp_dir().join(format!("civicflow-notrace-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server::spawn(&data, &listen, &with_mocks(&[]));
    let id = server
        .start_case("birth-registration", birth_input("NOTRACE-1"))
        .await;
    let case = server.settled(&id, Duration::from_secs(60)).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert!(server.terminate(Duration::from_secs(20)).is_some());
    assert_eq!(*receiver.requests.lock().unwrap(), 0);
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
