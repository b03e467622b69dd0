//! Several `civicflow serve` processes on one PostgreSQL database, as a province runs them: a
//! load balancer in front (agencies call back through it), nodes killed with SIGKILL at random
//! moments and restarted, one lost for good, one frozen past its lease. Whatever happens to the
//! nodes, every accepted case finishes and every agency effect happens once.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::{
    agency_urls, assert_each_poll_answered_once, birth_input, client_with, fetch, free_port, pg,
    set_callback_token,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a node's claims last in these tests: short, so that takeovers happen within them.
const LEASE: &str = "2s";

/// One `serve` process, restartable on the same port.
struct Node {
    port: u16,
    data: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// The engine's node id of the current process.
    id: String,
    /// stdout and stderr of every process this node ran, appended.
    log: PathBuf,
}

impl Node {
    fn start(args: Vec<String>) -> Node {
        let data = std::env::temp_dir().join(format!("civicflow-mn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data).unwrap();
        let mut node = Node {
            port: free_port(),
            log: data.join("node.log"),
            data,
            args,
            child: None,
            id: String::new(),
        };
        node.restart();
        node
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again), and waits until it listens.
    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_civicflow"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "civicflow=info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the civicflow binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("civicflow printed its address before exiting")
                .unwrap();
            if let Some(id) = line.strip_prefix("civicflow node ") {
                self.id = id.to_owned();
            }
            if line.starts_with("civicflow listening on ") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `serve` arguments every node of a test shares.
fn shared_args(store: &str, public_url: &str, agencies: &BTreeMap<String, String>) -> Vec<String> {
    let mut args = vec![
        "--store".to_owned(),
        store.to_owned(),
        "--public-url".to_owned(),
        public_url.to_owned(),
        "--claim-lease".to_owned(),
        LEASE.to_owned(),
        "--drain-timeout".to_owned(),
        "1s".to_owned(),
        // The test's webhook receiver listens on this machine.
        "--allow-internal-webhooks".to_owned(),
    ];
    for (id, url) in agencies {
        args.push("--agency".to_owned());
        args.push(format!("{id}={url}"));
    }
    args
}

/// A load balancer: each request goes to the next node that answers.
#[derive(Clone)]
struct Balancer {
    nodes: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl Balancer {
    /// A balancer's socket, bound now so that its port is not taken meanwhile (a port found
    /// free and let go is any outgoing connection's to take), and its URL.
    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    /// Serves on `listener`, in front of `nodes`.
    async fn serve(listener: tokio::net::TcpListener, nodes: Vec<String>) {
        let lb = Balancer {
            nodes: Arc::new(nodes),
            next: Arc::default(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(balance).with_state(lb);
        tokio::spawn(axum::serve(listener, app).into_future());
    }
}

async fn balance(
    State(lb): State<Balancer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    for _ in 0..lb.nodes.len() * 20 {
        let i = lb.next.fetch_add(1, Ordering::Relaxed) % lb.nodes.len();
        let mut request = lb
            .http
            .request(method.clone(), format!("{}{path}", lb.nodes[i]))
            .body(body.clone());
        for (name, value) in &headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(reply) => {
                let status = reply.status();
                let headers = reply.headers().clone();
                let bytes = reply.bytes().await.unwrap_or_default();
                let mut response = (status, bytes).into_response();
                if let Some(ct) = headers.get("content-type") {
                    response.headers_mut().insert("content-type", ct.clone());
                }
                return response;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    StatusCode::BAD_GATEWAY.into_response()
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    url
}

/// The portal's webhook receiver: every notification, in arrival order.
type Inbox = Arc<Mutex<Vec<(u64, Value)>>>;

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: String) -> StatusCode {
    let id: u64 = headers["civicflow-event-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    inbox
        .lock()
        .unwrap()
        .push((id, serde_json::from_str(&body).unwrap()));
    StatusCode::NO_CONTENT
}

/// Mock agencies in this process (they outlive every node), with `fast` or realistic timing.
async fn agencies(fast: bool) -> (civicflow_mocks::RunningMocks, BTreeMap<String, String>) {
    let mocks = civicflow_mocks::start(civicflow_mocks::MocksConfig {
        fast,
        seed: 5,
        ..civicflow_mocks::MocksConfig::default()
    })
    .await
    .unwrap();
    let urls = agency_urls(&mocks);
    (mocks, urls)
}

/// Issues a token through `node` and returns its secret.
async fn token(admin: &reqwest::Client, node: &str, role: &str) -> String {
    let response = admin
        .post(format!("{node}/v1/tokens"))
        .json(&json!({"role": role, "name": format!("test {role}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Starts a case through the nodes, as a portal does: on no answer or a 5xx, the same request
/// again (same Idempotency-Key) to the next node.
async fn start_case(portal: &reqwest::Client, nodes: &[String], key: &str, input: Value) -> String {
    let body = json!({"workflow": "birth-registration", "input": input});
    for attempt in 0..400 {
        let node = &nodes[(key.len() + attempt) % nodes.len()];
        let sent = portal
            .post(format!("{node}/v1/cases"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await;
        if let Ok(reply) = sent {
            let status = reply.status();
            if status.is_success() {
                let case: Value = reply.json().await.unwrap();
                return case["id"].as_str().unwrap().to_owned();
            }
            assert!(
                status.is_server_error(),
                "{status}: {:?}",
                reply.text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node accepted case {key}");
}

/// Waits until every case has left `running` (or `bound` passed): the cases, read through `via`.
async fn settle(
    http: &reqwest::Client,
    via: &str,
    ids: &[String],
    bound: Duration,
) -> HashMap<String, Value> {
    let until = tokio::time::Instant::now() + bound;
    let mut cases = HashMap::new();
    for id in ids {
        loop {
            let case = fetch(http, &format!("{via}/v1/cases/{id}")).await;
            if case["status"] != "running" || tokio::time::Instant::now() > until {
                cases.insert(id.clone(), case);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    cases
}

/// Every case completed, each agency acted once per (case, procedure), every history gapless.
async fn assert_done_once(
    http: &reqwest::Client,
    via: &str,
    agencies: &BTreeMap<String, String>,
    cases: &HashMap<String, Value>,
) {
    let mut effects: HashMap<String, Vec<u64>> = HashMap::new();
    for url in agencies.values() {
        for c in fetch(http, &format!("{url}/admin/effects")).await["cases"]
            .as_array()
            .unwrap()
        {
            effects
                .entry(c["case_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(c["effects"].as_u64().unwrap());
        }
    }
    for (id, case) in cases {
        assert_eq!(case["status"], "completed", "{id}: {case:#}");
        assert_eq!(effects.get(id), Some(&vec![1, 1, 1]), "{id}: effects");
        let history = fetch(http, &format!("{via}/v1/cases/{id}/history")).await;
        let seqs: Vec<u64> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{id}: gapless"
        );
    }
}

const CASES: usize = 500;
const KILLS: usize = 6;
/// Cases started once every node was restarted on an idle, trimmed feed.
const AFTER_IDLE: usize = 30;

/// Waits (at most two minutes) until the webhook has taken the ends of `cases` cases.
async fn wait_for_ends(inbox: &Inbox, cases: usize) {
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut ends: Vec<u64> = inbox
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n["type"] == "case.finished")
            .map(|(id, _)| *id)
            .collect();
        ends.sort_unstable();
        ends.dedup();
        if ends.len() >= cases || tokio::time::Instant::now() > until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_lose_nothing_and_repeat_nothing_while_they_are_killed() {
    let store = pg::fresh_url().await;
    let (_mocks, agencies) = agencies(true).await;
    let (lb, lb_url) = Balancer::bind().await;
    let args = shared_args(&store, &lb_url, &agencies);
    // The first node migrates the empty database and makes the first admin token.
    let first = {
        let mut args = args.clone();
        args.push("--migrate".to_owned());
        Node::start(args)
    };
    let admin = client_with(
        std::fs::read_to_string(first.data.join("admin.token"))
            .unwrap()
            .trim(),
    );
    let mut nodes = [first, Node::start(args.clone()), Node::start(args)];
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    Balancer::serve(lb, urls.clone()).await;

    let police = token(&admin, &urls[0], "agency:police").await;
    set_callback_token(&admin, &agencies["police"], &police).await;
    let portal = client_with(&token(&admin, &urls[0], "portal").await);
    let inbox = Inbox::default();
    let receiver = serve(
        axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inbox.clone()),
    )
    .await;
    let response = portal
        .post(format!("{lb_url}/v1/webhooks"))
        .json(&json!({"url": format!("{receiver}/hook")}))
        .send()
        .await
        .unwrap();
    // From the answer on, every node's changes are notified: no wait for the nodes to learn of
    // the webhook.
    assert_eq!(response.status(), 201);

    // The portal starts the cases, 25 at a time, over the three nodes.
    let began = tokio::time::Instant::now();
    let starting = Arc::new(AtomicBool::new(true));
    let started = Arc::new(AtomicUsize::new(0));
    let portal_task = {
        let (portal, urls, starting) = (portal.clone(), urls.clone(), starting.clone());
        let started = started.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut batch = tokio::task::JoinSet::new();
            for i in 0..CASES {
                let (portal, urls) = (portal.clone(), urls.clone());
                let started = started.clone();
                batch.spawn(async move {
                    let input = birth_input(&format!("MN-{i}"));
                    let id = start_case(&portal, &urls, &format!("mn-{i}"), input).await;
                    started.fetch_add(1, Ordering::SeqCst);
                    (i, id)
                });
                if batch.len() >= 25 {
                    ids.push(batch.join_next().await.unwrap().unwrap());
                }
            }
            ids.extend(batch.join_all().await);
            starting.store(false, Ordering::SeqCst);
            ids.sort();
            ids.into_iter().map(|(_, id)| id).collect::<Vec<String>>()
        })
    };

    // Meanwhile nodes die at random moments and come back; the last one stays down.
    let mut rng = fastrand::Rng::with_seed(16);
    let mut kills = 0;
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(rng.u64(400..1200))).await;
        let victim = kills % nodes.len();
        nodes[victim].kill();
        kills += 1;
        eprintln!(
            "kill {kills}: node {victim} at {:.1} s, {} cases started",
            began.elapsed().as_secs_f64(),
            started.load(Ordering::SeqCst)
        );
        if kills == KILLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
        let node = &mut nodes[victim];
        tokio::task::block_in_place(|| node.restart());
    }
    let ids = portal_task.await.unwrap();
    eprintln!(
        "{CASES} cases started in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    assert!(!starting.load(Ordering::SeqCst));
    assert_eq!(ids.len(), CASES);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), CASES, "one case per Idempotency-Key");

    let cases = settle(&admin, &lb_url, &ids, Duration::from_secs(240)).await;
    assert_done_once(&admin, &lb_url, &agencies, &cases).await;
    wait_for_ends(&inbox, ids.len()).await;

    // Idle: the feed is trimmed below what the webhook took. Then every node dies and comes
    // back, and the next cases' notifications still reach the webhook (issue 33).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for node in &mut nodes {
        node.kill();
        tokio::task::block_in_place(|| node.restart());
    }
    let mut after = tokio::task::JoinSet::new();
    for i in 0..AFTER_IDLE {
        let (portal, urls) = (portal.clone(), urls.clone());
        after.spawn(async move {
            let input = birth_input(&format!("MN-IDLE-{i}"));
            start_case(&portal, &urls, &format!("mn-idle-{i}"), input).await
        });
    }
    let later = after.join_all().await;
    let cases = settle(&admin, &lb_url, &later, Duration::from_secs(120)).await;
    assert_done_once(&admin, &lb_url, &agencies, &cases).await;
    let mut ids = ids;
    ids.extend(later);
    wait_for_ends(&inbox, ids.len()).await;

    // The webhook got every case's three step results and its end, first deliveries in order,
    // and a delivery id never carried two notifications.
    let taken = inbox.lock().unwrap().clone();
    let (first_seen, by_case) = support::first_deliveries(taken);
    assert!(
        first_seen.windows(2).all(|w| w[0] < w[1]),
        "notifications in feed order"
    );
    for id in &ids {
        let mut got = by_case.get(id).cloned().unwrap_or_default();
        got.sort();
        assert_eq!(
            got,
            [
                "case.finished ",
                "step.finished birth",
                "step.finished health_insurance",
                "step.finished residence"
            ],
            "{id}"
        );
    }
}

/// A TCP proxy to PostgreSQL whose replies can be held back: a node behind it sends its
/// statements, the database runs them, and the node hears nothing until they are let through.
#[derive(Clone, Default)]
struct Valve {
    held: Arc<AtomicBool>,
}

impl Valve {
    async fn proxy(&self, upstream: String) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = self.held.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let held = held.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = server_read.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        while held.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }
}

/// The database's host:port in a postgres:// URL.
fn upstream(url: &str) -> String {
    let rest = url.split("@").nth(1).unwrap();
    rest.split('/').next().unwrap().to_owned()
}

/// The same URL, through 127.0.0.1:`port`.
fn through(url: &str, port: u16) -> String {
    url.replace(&upstream(url), &format!("127.0.0.1:{port}"))
}

async fn claimed_by(db: &tokio_postgres::Client, node: &str) -> Vec<(String, i64)> {
    db.query(
        "SELECT case_id::text || ' ' || kind, epoch FROM timers WHERE owner = $1",
        &[&node],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_frozen_past_its_lease_commits_nothing_it_decided_under_it() {
    let store = pg::fresh_url().await;
    let (db, connection) = tokio_postgres::connect(&store, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (_mocks, agencies) = agencies(false).await;
    let (lb, lb_url) = Balancer::bind().await;
    let args = shared_args(&store, &lb_url, &agencies);
    let mut b_args = args.clone();
    b_args.push("--migrate".to_owned());
    let b = Node::start(b_args);
    let admin = client_with(
        std::fs::read_to_string(b.data.join("admin.token"))
            .unwrap()
            .trim(),
    );
    // Node A reaches the database through a valve.
    let valve = Valve::default();
    let port = valve.proxy(upstream(&store)).await;
    let a = Node::start(shared_args(&through(&store, port), &lb_url, &agencies));
    Balancer::serve(lb, vec![a.url(), b.url()]).await;
    let police = token(&admin, &b.url(), "agency:police").await;
    set_callback_token(&admin, &agencies["police"], &police).await;
    let portal = client_with(&token(&admin, &b.url(), "portal").await);

    // Cases whose card applications are polled every 2 s for a while: timers come due all the
    // time, on both nodes.
    let urls = [a.url(), b.url()];
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            start_case(
                &portal,
                &urls,
                &format!("fz-{i}"),
                birth_input(&format!("FZ-{i}")),
            )
            .await,
        );
    }
    // Hold back the database's replies to A until A has claimed timers it has not heard of,
    // then freeze A.
    let mut stale = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20 {
        // At varying moments of A's work.
        tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
        valve.held.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(400)).await;
        stale = claimed_by(&db, &a.id).await;
        if !stale.is_empty() {
            break;
        }
        valve.held.store(false, Ordering::SeqCst);
    }
    assert!(
        !stale.is_empty(),
        "A claimed timers while its replies were held"
    );
    a.signal("-STOP");
    // Past A's lease, B takes the timers over and fires them.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let still: Vec<_> = claimed_by(&db, &a.id).await;
        if stale.iter().all(|s| !still.contains(s)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "B never took over {still:?}"
        );
    }
    // A wakes up, hears of its old claims, decides on them, and must commit nothing.
    valve.held.store(false, Ordering::SeqCst);
    a.signal("-CONT");

    let cases = settle(&admin, &lb_url, &ids, Duration::from_secs(120)).await;
    assert_done_once(&admin, &lb_url, &agencies, &cases).await;
    // Every poll the social-security office answered is one the histories recorded: no poll
    // was sent on a claim that had been taken over.
    assert_each_poll_answered_once(&admin, &agencies["social-security"], &lb_url, &ids).await;
    let log = a.log();
    assert!(
        log.contains("a timer firing is dropped: its claim was taken over"),
        "A's stale firings were refused by the store:\n{log}"
    );
}
