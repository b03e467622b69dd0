//! Notifications to the portal: signed, in order, and not lost while the portal's receiver is
//! down, even across a `kill -9` of civicflow.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use support::{InProcess, Server, birth_input, client_with, fetch, free_port, with_mocks};

const BOUND: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Receiver {
    /// (event id, signature header, body) of every request, acknowledged or not.
    seen: Vec<(String, String, String)>,
    /// Requests still to refuse with 503.
    refuse: usize,
}

async fn receive(
    State(r): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut r = r.lock().unwrap();
    r.seen.push((
        header("civicflow-event-id"),
        header("civicflow-signature"),
        body,
    ));
    if r.refuse > 0 {
        r.refuse -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::OK
}

/// Registers a webhook to `url` as the portal; returns it as created (its secret included).
async fn register(server: &Server, portal: &str, url: &str) -> Value {
    let (status, hook) = server
        .call(
            Some(portal),
            Method::POST,
            "/v1/webhooks",
            Some(&json!({"url": url})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    hook
}

#[tokio::test]
async fn a_portal_that_was_down_gets_every_notification_signed_and_in_order() {
    let data = std::env::temp_dir().join(format!("civicflow-hooks-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mocks = with_mocks(&["--allow-internal-webhooks"]);
    let mut server = Server::spawn(&data, &listen, &mocks);
    let portal = server.token("portal").await;
    // The portal's receiver is not listening yet. Its port is bound (so that nothing else, such
    // as the mocks of the restarted server, can take it) but refuses connections until `listen`.
    let receiver_socket = tokio::net::TcpSocket::new_v4().unwrap();
    receiver_socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = receiver_socket.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/civicflow-events");
    let hook = register(&server, &portal, &url).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let (status, bad) = server
        .call(
            Some(&portal),
            Method::POST,
            "/v1/webhooks",
            Some(&json!({"url": "ftp://x"})),
        )
        .await;
    assert_eq!(
        (status, &bad["error"]["code"]),
        (422, &json!("invalid_url"))
    );

    let id = server
        .start_case("birth-registration", birth_input("HOOK-1"))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let (_, list) = server
            .call(Some(&portal), Method::GET, "/v1/webhooks", None)
            .await;
        let h = &list["items"][0];
        assert!(
            h.get("secret").is_none(),
            "a listed webhook shows its secret"
        );
        if h["pending"] == 4 && h["last_error"].is_string() {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{list:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // civicflow dies while the portal is down; the portal comes back, flaky at first.
    server.kill();
    let server = Server::spawn(&data, &listen, &mocks);
    let (_, list) = server
        .call(Some(&portal), Method::GET, "/v1/webhooks", None)
        .await;
    let failures = list["items"][0]["failures"].as_u64().unwrap();
    let receiver = Arc::new(Mutex::new(Receiver {
        refuse: 2,
        ..Receiver::default()
    }));
    let app = axum::Router::new()
        .route("/civicflow-events", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = receiver_socket.listen(64).unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());

    // The backoff goes on from the failures stored before the restart: the longer the portal
    // was down (a loaded machine takes longer to finish the case), the longer the waits before
    // the tries to come (one more refused connection at most, then the two refusals).
    let until = tokio::time::Instant::now() + BOUND + backoff_ceilings(failures + 1..=failures + 3);
    let seen = loop {
        let seen = receiver.lock().unwrap().seen.clone();
        if seen
            .iter()
            .filter(|(_, _, b)| b.contains("case.finished"))
            .count()
            > 0
            && seen.len() >= 6
        {
            break seen;
        }
        assert!(tokio::time::Instant::now() < until, "{seen:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every request is signed over its time and body with the webhook's secret.
    for (_, signature, body) in &seen {
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            *signature,
            civicflow::webhooks::signature(&secret, t, body.as_bytes())
        );
    }
    // The two refused tries were of the first event; then each event once, in order.
    let ids: Vec<u64> = seen.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    let mut delivered = ids[2..].to_vec();
    delivered.dedup();
    assert!(delivered.is_sorted(), "{ids:?}");
    let events: Vec<Value> = seen[2..]
        .iter()
        .map(|(_, _, b)| serde_json::from_str(b).unwrap())
        .collect();
    let steps: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "step.finished")
        .map(|e| (e["step"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(steps.len(), 3, "{events:#?}");
    assert!(steps.iter().all(|(_, s)| *s == "succeeded"), "{steps:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "case.finished");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["case_id"], id.as_str());
    let birth = events.iter().find(|e| e["step"] == "birth").unwrap();
    assert_eq!(
        birth["data"]["child_personal_id"].as_str().unwrap().len(),
        12
    );

    let (_, list) = server
        .call(Some(&portal), Method::GET, "/v1/webhooks", None)
        .await;
    assert_eq!(list["items"][0]["pending"], 0, "{list:#}");
    let path = format!("/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let (status, _) = server
        .call(Some(&portal), Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .call(Some(&portal), Method::DELETE, &path, None)
        .await;
    assert_eq!(status, 404);
}

/// The longest waits the deliverer may take after each of these failure counts: 0.5 s doubled
/// per failure, at most 5 minutes.
fn backoff_ceilings(failures: std::ops::RangeInclusive<u64>) -> Duration {
    failures
        .map(|n| Duration::from_millis(500 << n.min(16)).min(Duration::from_secs(300)))
        .sum()
}

/// A receiver that takes each request and answers only once the test lets it.
#[derive(Clone)]
struct Held {
    requests: Arc<Mutex<usize>>,
    release: Arc<tokio::sync::Semaphore>,
}

async fn hold(State(h): State<Held>) -> StatusCode {
    *h.requests.lock().unwrap() += 1;
    let _ = h.release.acquire().await.unwrap();
    StatusCode::OK
}

/// Serves `app` on a free local port; returns its URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    url
}

#[tokio::test]
async fn a_receiver_that_does_not_answer_holds_back_only_its_own_notifications() {
    let server = Server::start_with(&["--allow-internal-webhooks"]);
    let portal = server.token("portal").await;

    let held = Held {
        requests: Arc::default(),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let slow_url = serve(
        axum::Router::new()
            .route("/events", axum::routing::post(hold))
            .with_state(held.clone()),
    )
    .await;
    let receiver = Arc::new(Mutex::new(Receiver::default()));
    let fast_url = serve(
        axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(receiver.clone()),
    )
    .await;
    for url in [&slow_url, &fast_url] {
        register(&server, &portal, url).await;
    }

    let id = server
        .start_case("birth-registration", birth_input("HOOK-2"))
        .await;
    let until = tokio::time::Instant::now() + BOUND;
    while !receiver
        .lock()
        .unwrap()
        .seen
        .iter()
        .any(|(_, _, body)| body.contains("case.finished"))
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the answering receiver did not get the case's end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The whole case reached the answering receiver while the other still holds its first
    // notification, not yet given up on (the deliverer's timeout is 10 s; the case takes ~2).
    assert_eq!(*held.requests.lock().unwrap(), 1);
    let (_, list) = server
        .call(Some(&portal), Method::GET, "/v1/webhooks", None)
        .await;
    let slow = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["url"] == slow_url.as_str())
        .unwrap();
    assert!(slow["last_error"].is_null(), "{list:#}");
    assert!(slow["pending"].as_u64().unwrap() > 1, "{list:#}");

    // Once it answers, it gets the rest, in order.
    held.release.add_permits(1000);
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let (_, list) = server
            .call(Some(&portal), Method::GET, "/v1/webhooks", None)
            .await;
        if list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["pending"] == 0)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{list:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
}

#[tokio::test]
async fn a_webhook_may_not_point_inside_unless_the_server_allows_it() {
    let data = std::env::temp_dir().join(format!("civicflow-hooks-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::spawn(&data, &listen, &with_mocks(&[]));
    let portal = server.token("portal").await;
    let mocks_admin = format!("{}/admin/faults", server.agencies["police"]);
    for url in [
        mocks_admin.as_str(),
        "http://localhost:9/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let (status, body) = server
            .call(
                Some(&portal),
                Method::POST,
                "/v1/webhooks",
                Some(&json!({"url": url})),
            )
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("internal_target")),
            "{url}: {body}"
        );
    }
    // A public address is taken (nothing is sent until there is something to notify).
    let (status, body) = server
        .call(
            Some(&portal),
            Method::POST,
            "/v1/webhooks",
            Some(&json!({"url": "https://93.184.216.34/civicflow"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_registration_retried_under_its_idempotency_key_registers_one_webhook() {
    let app = InProcess::start().await;
    let register = |key: &'static str, url: &'static str, http: reqwest::Client| {
        let at = format!("{}/v1/webhooks", app.url);
        async move {
            let response = http
                .post(at)
                .header("idempotency-key", key)
                .json(&json!({"url": url}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let url = "https://93.184.216.34/civicflow";
    let (status, first) = register("hook-1", url, app.http.clone()).await;
    assert_eq!(status, 201, "{first}");
    // The answer was lost: the retry gets the same webhook, its secret included.
    let (status, again) = register("hook-1", url, app.http.clone()).await;
    assert_eq!((status, &again), (200, &first));
    // Retries racing each other still make one.
    let racing: Vec<_> = (0..8)
        .map(|_| tokio::spawn(register("hook-2", url, app.http.clone())))
        .collect();
    let mut made = Vec::new();
    for r in racing {
        made.push(r.await.unwrap());
    }
    assert_eq!(
        made.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{made:?}"
    );
    assert!(made.iter().all(|(_, h)| h == &made[0].1), "{made:?}");
    let hooks = fetch(&app.http, &format!("{}/v1/webhooks", app.url)).await;
    assert_eq!(hooks["items"].as_array().unwrap().len(), 2, "{hooks}");
    // The same key for another URL is a conflict, not a second webhook.
    let (status, body) = register("hook-1", "https://93.184.216.35/x", app.http.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("idempotency_key_reused"))
    );
    // Another token's key is its own: the secret is not handed to it.
    let portal = app
        .token(civicflow::auth::Role::Portal, "other portal")
        .await;
    let (status, other) = register("hook-1", url, client_with(&portal)).await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["id"], first["id"]);
    // A key whose webhook was deleted since does not bring it back.
    let id = first["id"].as_str().unwrap();
    let deleted = app
        .http
        .delete(format!("{}/v1/webhooks/{id}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    let (status, body) = register("hook-1", url, app.http.clone()).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("idempotency_key_reused")),
        "{body}"
    );
}

/// How many distinct cases' ends the receiver has taken.
fn ends_seen(receiver: &Mutex<Receiver>) -> usize {
    let seen = &receiver.lock().unwrap().seen;
    let mut ends: Vec<&str> = seen
        .iter()
        .filter(|(_, _, b)| b.contains("\"case.finished\""))
        .map(|(id, _, _)| id.as_str())
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends.len()
}

/// Issue 33: the portal must hear of every case, whatever happens to the node. Cases run in
/// rounds; the node is killed with SIGKILL under load, and stopped or killed again after an idle
/// while in which the deliverer took everything and trimmed the feed empty, and restarted each
/// time. Every
/// case's step results and end arrive, each delivery id always carries the same notification,
/// and ids only grow from one delivery to the next new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_arrives_across_kills_under_load_and_after_idle_trims() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 12;
    let (mocks, args) = support::mocks_in_test(33).await;
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--allow-internal-webhooks");
    let data = std::env::temp_dir().join(format!("civicflow-hooks-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let mut server = Server::spawn(&data, &listen, &args);
    server.connect_mocks(&mocks.agencies[0].base_url).await;
    let portal_token = server.token("portal").await;
    let portal = client_with(&portal_token);
    let receiver = Arc::new(Mutex::new(Receiver::default()));
    let hook_url = serve(
        axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(receiver.clone()),
    )
    .await;
    register(&server, &portal_token, &hook_url).await;

    let mut ids = Vec::new();
    for round in 0..ROUNDS {
        let starts: Vec<_> = (0..PER_ROUND)
            .map(|i| {
                let (portal, url) = (portal.clone(), url.clone());
                tokio::spawn(async move {
                    let key = format!("HOOK-KILL-{round}-{i}");
                    support::start_retrying(&portal, &url, &key, birth_input(&key)).await
                })
            })
            .collect();
        if round % 2 == 1 {
            // Under load: the cases of this round are being started and run.
            tokio::time::sleep(Duration::from_millis(fastrand::u64(100..600))).await;
            server.kill();
            server = Server::spawn(&data, &listen, &args);
        }
        for start in starts {
            ids.push(start.await.unwrap());
        }
        for id in &ids {
            let case = server.settled(id, BOUND).await;
            assert_eq!(case["status"], "completed", "{case:#}");
        }
        let until = tokio::time::Instant::now() + BOUND;
        while ends_seen(&receiver) < ids.len() {
            assert!(
                tokio::time::Instant::now() < until,
                "round {round}: {} of {} cases' ends arrived",
                ends_seen(&receiver),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Idle: the deliverer trims what the webhook took (it looks every 200 ms); then the
        // node stops, as an operator stops it or killed, and comes back on a feed trimmed
        // empty (a trim is made durable by the next sync: a stop's or a later commit's).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if round % 2 == 0 {
            assert!(server.terminate(BOUND).is_some(), "the server did not stop");
        } else {
            server.kill();
        }
        server = Server::spawn(&data, &listen, &args);
    }

    let seen = receiver.lock().unwrap().seen.clone();
    let (first_seen, by_case) = support::first_deliveries(
        seen.iter()
            .map(|(id, _, body)| (id.parse().unwrap(), serde_json::from_str(body).unwrap())),
    );
    assert!(
        first_seen.windows(2).all(|w| w[0] < w[1]),
        "delivery ids move back: {first_seen:?}"
    );
    for id in &ids {
        let got = by_case.get(id).cloned().unwrap_or_default();
        assert_eq!(got.len(), 4, "{id}: {got:?}");
        assert_eq!(
            got[3], "case.finished ",
            "{id}: the end comes last: {got:?}"
        );
        let mut steps = got[..3].to_vec();
        steps.sort();
        assert_eq!(
            steps,
            [
                "step.finished birth",
                "step.finished health_insurance",
                "step.finished residence"
            ],
            "{id}"
        );
    }
}

/// Issue 33: a registered receiver may answer with a redirect to an address the server would
/// never register (loopback, the cloud's metadata service): the notification is not posted
/// there, and the redirect counts as a failure of the receiver.
#[tokio::test]
async fn a_receiver_redirect_is_a_failure_not_followed() {
    let server = Server::start_with(&["--allow-internal-webhooks"]);
    let portal = server.token("portal").await;
    let followed = Arc::new(Mutex::new(Receiver::default()));
    let target = serve(
        axum::Router::new()
            .route("/events", axum::routing::post(receive))
            .with_state(followed.clone()),
    )
    .await;
    let redirecting = serve(axum::Router::new().route(
        "/events",
        axum::routing::post(move || {
            let target = target.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", target)]) }
        }),
    ))
    .await;
    let hook = register(&server, &portal, &redirecting).await;
    server
        .start_case("birth-registration", birth_input("HOOK-REDIRECT"))
        .await;
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let (_, list) = server
            .call(Some(&portal), Method::GET, "/v1/webhooks", None)
            .await;
        let h = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == hook["id"])
            .unwrap()
            .clone();
        if h["last_error"].is_string() {
            assert!(h["last_error"].as_str().unwrap().contains("307"), "{h:#}");
            break;
        }
        assert!(
            followed.lock().unwrap().seen.is_empty(),
            "the redirect was followed"
        );
        assert!(tokio::time::Instant::now() < until, "{list:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        followed.lock().unwrap().seen.is_empty(),
        "the redirect was followed"
    );
}
