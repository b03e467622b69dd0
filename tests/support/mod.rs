//! Starting the real `civicflow` binary with its mock agencies, for end-to-end tests.
//!
//! Each test crate compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

#[path = "../pg/mod.rs"]
pub mod pg;

pub mod outage;

/// The store a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store, in the server's data directory.
    Sled,
    /// A fresh schema of the test database.
    Postgres,
}

impl Backend {
    /// The `serve` arguments that put a new server on this store.
    pub fn serve_args(self) -> Vec<String> {
        match self {
            Backend::Sled => Vec::new(),
            Backend::Postgres => {
                // A runtime of its own: callers may be inside one that must not block.
                let url = std::thread::spawn(|| {
                    tokio::runtime::Runtime::new()
                        .unwrap()
                        .block_on(pg::fresh_url())
                })
                .join()
                .unwrap();
                vec!["--store".to_owned(), url, "--migrate".to_owned()]
            }
        }
    }
}

pub struct Server {
    pub url: String,
    pub agencies: BTreeMap<String, String>,
    child: Child,
    /// Sends the admin token with every request.
    pub http: reqwest::Client,
    /// The admin token `serve` wrote to the data directory at its first start.
    pub admin: String,
}

/// A client that sends `token` with every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

impl Server {
    /// `civicflow serve --with-mocks` on free ports, mocks in fast mode, in a fresh data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Like [`Server::start`], on `backend`.
    pub fn start_on(backend: Backend) -> Server {
        let store = backend.serve_args();
        let store: Vec<&str> = store.iter().map(String::as_str).collect();
        Server::start_with(&store)
    }

    /// Like [`Server::start`], with more `serve` arguments.
    pub fn start_with(more: &[&str]) -> Server {
        let data = std::env::temp_dir().join(format!("civicflow-e2e-{}", uuid::Uuid::new_v4()));
        Server::spawn(&data, "127.0.0.1:0", &with_mocks(more))
    }

    /// Like [`Server::start`], loading definitions from `workflows` instead of the shipped ones.
    pub fn with_workflows(workflows: &Path) -> Server {
        Server::with_workflows_on(workflows, Backend::Sled)
    }

    /// Like [`Server::with_workflows`], on `backend`.
    pub fn with_workflows_on(workflows: &Path, backend: Backend) -> Server {
        let store = backend.serve_args();
        let mut args = vec!["--workflows", workflows.to_str().unwrap()];
        args.extend(store.iter().map(String::as_str));
        Server::start_with(&args)
    }

    /// `civicflow serve` on `data`, listening on `listen`, with more arguments.
    pub fn spawn(data: &Path, listen: &str, args: &[&str]) -> Server {
        Server::spawn_logging(data, listen, args, None)
    }

    /// As [`Server::spawn`], and every line the server logs (its stderr) is kept in `log`.
    pub fn spawn_logged(
        data: &Path,
        listen: &str,
        args: &[&str],
        log: Arc<Mutex<Vec<String>>>,
    ) -> Server {
        Server::spawn_logging(data, listen, args, Some(log))
    }

    fn spawn_logging(
        data: &Path,
        listen: &str,
        args: &[&str],
        log: Option<Arc<Mutex<Vec<String>>>>,
    ) -> Server {
        let stderr = if log.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_civicflow"))
            .args([
                "serve",
                "--listen",
                listen,
                "--drain-timeout",
                "2s",
                "--data",
            ])
            .arg(data)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("the civicflow binary starts");
        if let (Some(log), Some(err)) = (log, child.stderr.take()) {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut agencies = BTreeMap::new();
        let url = loop {
            let line = lines
                .next()
                .expect("civicflow printed its address before exiting")
                .unwrap();
            if let Some(rest) = line.strip_prefix("mock agency ") {
                let mut parts = rest.split_whitespace();
                let (id, url) = (parts.next().unwrap(), parts.next().unwrap());
                agencies.insert(id.to_owned(), url.to_owned());
            }
            if let Some(rest) = line.strip_prefix("civicflow listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .expect("serve wrote the admin token")
            .trim()
            .to_owned();
        Server {
            url,
            agencies,
            child,
            http: client_with(&admin),
            admin,
        }
    }

    /// Issues a token with `role` and returns its secret.
    pub async fn token(&self, role: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/tokens",
                &json!({"role": role, "name": format!("test {role}")}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Gives the mock agencies at `agency_url` (their admin side) an `agency:police` token to
    /// call this server back with, as an agency is given its credentials.
    pub async fn connect_mocks(&self, agency_url: &str) {
        let token = self.token("agency:police").await;
        let response = self
            .http
            .put(format!("{agency_url}/admin/callback-token"))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// `method path` with `token` (none: no Authorization header) and `body`: status and JSON.
    pub async fn call(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        self.get_json(format!("{}{path}", self.url)).await
    }

    /// A GET of one of `agency`'s routes, with the X-Road headers its procedures ask.
    pub async fn agency(&self, agency: &str, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.agencies[agency]))
            .header("X-Road-Client", "VN/GOV/TEST/tests")
            .header("X-Road-Service", format!("VN/GOV/{agency}/read/v1"))
            .header("X-Road-Id", uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    async fn get_json(&self, url: String) -> Value {
        fetch(&self.http, &url).await
    }

    pub async fn set_faults(&self, agency: &str, faults: Value) {
        put_faults(&self.http, &self.agencies[agency], faults).await;
    }

    /// Starts a case and returns its id.
    pub async fn start_case(&self, workflow: &str, input: Value) -> String {
        let (status, body) = self
            .post(
                "/v1/cases",
                &json!({"workflow": workflow, "input": input}),
                None,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the case is no longer running, or until `bound` passes (then returns it as
    /// it is, and the caller's assertions say what is wrong).
    pub async fn settled(&self, id: &str, bound: Duration) -> Value {
        let until = tokio::time::Instant::now() + bound;
        loop {
            let case = self.get(&format!("/v1/cases/{id}")).await;
            let open = case["incidents"].as_array().is_some_and(|i| !i.is_empty());
            if case["status"] != "running" || open || tokio::time::Instant::now() > until {
                return case;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit, at most `bound`; `None` if it did not exit by then.
    pub fn terminate(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let until = std::time::Instant::now() + bound;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A date `days` before today in Vietnam, as `YYYY-MM-DD`.
pub fn days_ago(days: i64) -> String {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
        .date();
    today
        .checked_sub(jiff::Span::new().days(days))
        .unwrap()
        .to_string()
}

/// A death dossier for a known citizen of commune 00004, the allowance asked by the mother of
/// the mocks' known family.
pub fn death_input(personal_id: &str, full_name: &str) -> Value {
    json!({
        "dossier_number": format!("G01.123-DEATH-{personal_id}"),
        "requester_personal_id": "001190123456",
        "deceased": {
            "personal_id": personal_id,
            "full_name": full_name,
            "date_of_death": days_ago(2),
            "place_of_death": "Bệnh viện Bạch Mai"
        },
        "death_notice_number": format!("GBT-{personal_id}"),
        "last_address": {"commune_code": "00004", "detail": "5 Phố Kim Mã"},
        "funeral_allowance": {
            "requested": true,
            "organizer": {"personal_id": "001190123456", "full_name": "Nguyễn Thị Lan", "relationship": "con dâu"},
            "payment": {"method": "bank_transfer", "bank_code": "VCB", "account_number": "0011001234567"}
        },
        "result_delivery": "online"
    })
}

/// `serve`'s arguments for the mock agencies in its process (fast, on free ports), then `extra`.
pub fn with_mocks<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--with-mocks", "--mocks-port", "0", "--mocks-fast"];
    args.extend_from_slice(extra);
    args
}

/// The household head whose consent the police mock waits for until its operator gives it.
pub const MANUAL_HEAD: &str = "001075111222";

/// The police mock's operator gives the consent of [`MANUAL_HEAD`] to the registration that
/// waits for it.
pub async fn grant_consent(http: &reqwest::Client, police: &str) {
    let records: Value = fetch(http, &format!("{police}/admin/records")).await;
    let registration = records["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["household_head_personal_id"] == MANUAL_HEAD && r["state"] == "awaiting_consent"
        })
        .unwrap_or_else(|| panic!("no registration awaits consent: {records:#}"))["registration_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let consent = http
        .post(format!(
            "{police}/admin/residence-registrations/{registration}/consent"
        ))
        .json(&json!({"granted": true}))
        .send()
        .await
        .unwrap();
    assert!(consent.status().is_success());
}

/// A birth dossier for the known family of the mocks' directory (mother 001190123456, father and
/// household head 001089654321, commune 00004), with a unique certificate number.
pub fn birth_input(certificate: &str) -> Value {
    json!({
        "dossier_number": format!("G01.123-{certificate}"),
        "requester_personal_id": "001190123456",
        "child": {
            "full_name": "Trần Minh An",
            "date_of_birth": days_ago(3),
            "sex": "male",
            "ethnicity": "Kinh",
            "nationality": "Việt Nam",
            "place_of_birth": "Bệnh viện Xanh Pôn, Hà Nội",
            "home_town": "Nam Định"
        },
        "birth_certificate_number": certificate,
        "mother": {"full_name": "Nguyễn Thị Lan", "personal_id": "001190123456"},
        "father": {"full_name": "Trần Văn Minh", "personal_id": "001089654321"},
        "permanent_address": {"commune_code": "00004", "detail": "12 Phố Đội Cấn"},
        "household_head_personal_id": "001089654321",
        "relationship_to_head": "con",
        "result_delivery": "online"
    })
}

/// A copy of the shipped `workflows/` in a fresh directory, with `edit(relative path, text)`
/// applied to each file: a test's variant of the definitions (shorter timeouts, fewer attempts).
pub fn workflows_copy(edit: impl Fn(&str, String) -> String) -> std::path::PathBuf {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let target = std::env::temp_dir().join(format!("civicflow-wf-{}", uuid::Uuid::new_v4()));
    let mut files = Vec::new();
    walk(&shipped, &shipped, &mut files);
    for file in files {
        let text = std::fs::read_to_string(shipped.join(&file)).unwrap();
        let name = file.to_str().unwrap().replace('\\', "/");
        let path = target.join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, edit(&name, text)).unwrap();
    }
    target
}

/// The shipped `workflows/` directory.
pub fn workflows_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

/// A free TCP port on the loopback interface, for a server that restarts on the same address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The notifications a portal's receiver took, `(delivery id, body)` in arrival order, read as
/// their first deliveries: the ids in the order they first came, and each case's notifications
/// (`type step`) in that order. A delivery id that carried two notifications fails the test.
pub fn first_deliveries(
    taken: impl IntoIterator<Item = (u64, Value)>,
) -> (Vec<u64>, BTreeMap<String, Vec<String>>) {
    let mut bodies: BTreeMap<u64, Value> = BTreeMap::new();
    let mut first_seen = Vec::new();
    let mut by_case: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, mut n) in taken {
        // The body carries its id as well; a repeat is the same notification under it.
        n.as_object_mut().unwrap().remove("id");
        if let Some(before) = bodies.get(&id) {
            assert_eq!(before, &n, "delivery id {id} carried two notifications");
            continue;
        }
        first_seen.push(id);
        let kind = format!(
            "{} {}",
            n["type"].as_str().unwrap(),
            n["step"].as_str().unwrap_or("")
        );
        by_case
            .entry(n["case_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(kind);
        bodies.insert(id, n);
    }
    (first_seen, by_case)
}

/// Starts a birth case with `input` as a portal does while the server may be down or
/// restarting: the same request, under Idempotency-Key `key`, until it is accepted. The case id.
pub async fn start_retrying(http: &reqwest::Client, url: &str, key: &str, input: Value) -> String {
    let body = json!({"workflow": "birth-registration", "input": input});
    loop {
        let sent = http
            .post(format!("{url}/v1/cases"))
            .header("idempotency-key", key)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = sent
            && r.status().is_success()
        {
            let case: Value = r.json().await.unwrap();
            return case["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The mock agencies in the test's own process, so their records and effect counters outlive
/// every stop of the server; and the `--agency NAME=URL` arguments that point a server at them.
pub async fn mocks_in_test(seed: u64) -> (civicflow_mocks::RunningMocks, Vec<String>) {
    let mocks = civicflow_mocks::start(civicflow_mocks::MocksConfig {
        fast: true,
        seed,
        ..civicflow_mocks::MocksConfig::default()
    })
    .await
    .unwrap();
    let mut args = Vec::new();
    for agency in &mocks.agencies {
        args.push("--agency".to_owned());
        args.push(format!("{}={}", agency.id, agency.base_url));
    }
    (mocks, args)
}

/// Agency id → base URL of mocks running in this process.
pub fn agency_urls(mocks: &civicflow_mocks::RunningMocks) -> BTreeMap<String, String> {
    mocks
        .agencies
        .iter()
        .map(|a| (a.id.to_owned(), a.base_url.clone()))
        .collect()
}

/// Gives the police mock at `police_url` the token it calls civicflow back with, as an agency
/// is given its credentials.
pub async fn set_callback_token(http: &reqwest::Client, police_url: &str, token: &str) {
    let response = http
        .put(format!("{police_url}/admin/callback-token"))
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

/// Every card status request the social-security office at `social` saw for each case is one
/// poll the case's history (read through `via`) answered, pending or the card at last: no poll
/// timer fired twice.
pub async fn assert_each_poll_answered_once(
    http: &reqwest::Client,
    social: &str,
    via: &str,
    ids: &[String],
) {
    for id in ids {
        let requests = fetch(http, &format!("{social}/admin/requests?case_id={id}")).await;
        let polls = requests
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == "GET")
            .count();
        let history = fetch(http, &format!("{via}/v1/cases/{id}/history")).await;
        let answered = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "poll_answered" && e["step"] == "health_insurance")
            .count();
        assert!(polls > 0, "{id}: the card was polled for");
        assert_eq!(polls, answered + 1, "{id}: {requests:#}");
    }
}

/// Replaces an agency's fault configuration.
pub async fn put_faults(http: &reqwest::Client, base_url: &str, faults: Value) {
    let response = http
        .put(format!("{base_url}/admin/faults?seed=3"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

/// `GET url` as JSON.
pub async fn fetch(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap();
    response.json().await.unwrap()
}

/// The effects an agency counted for one case, one number per procedure: a correct orchestrator
/// makes each exactly 1.
pub async fn effects(http: &reqwest::Client, agency_url: &str, case: &str) -> Vec<u64> {
    fetch(http, &format!("{agency_url}/admin/effects")).await["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["case_id"] == case)
        .map(|c| c["effects"].as_u64().unwrap())
        .collect()
}

/// Issues an API token with `role`, held by `name`, straight into `store`: its secret.
pub async fn issue_token<S: civicflow::store::Store>(
    store: &S,
    role: civicflow::auth::Role,
    name: &str,
) -> String {
    let now = jiff::Timestamp::now();
    let (_, secret) = civicflow::auth::issue(store, role, name, "test", now)
        .await
        .unwrap();
    secret
}

/// Starts a birth case with `input` through the API at `url`; its id.
pub async fn start_birth(http: &reqwest::Client, url: &str, input: Value) -> String {
    let started: Value = http
        .post(format!("{url}/v1/cases"))
        .json(&json!({"workflow": "birth-registration", "input": input}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    started["id"].as_str().unwrap().to_owned()
}

/// One civicflow node in this process: the application over `store` (which other nodes may
/// share), started, its API served on a free port.
pub struct Node<S = civicflow::store::sled::SledStore> {
    pub url: String,
    pub app: civicflow::app::App<S>,
}

impl<S: civicflow::store::Store + Clone> Node<S> {
    pub async fn start(
        store: S,
        agencies: &BTreeMap<String, String>,
        clock: civicflow::engine::Clock,
    ) -> Node<S> {
        let off = Arc::new(civicflow::traces::Traces::off());
        Node::start_traced(store, agencies, clock, off).await
    }

    /// A node whose cases' traces go to `traces`.
    pub async fn start_traced(
        store: S,
        agencies: &BTreeMap<String, String>,
        clock: civicflow::engine::Clock,
        traces: Arc<civicflow::traces::Traces>,
    ) -> Node<S> {
        let circuits = civicflow::circuits::Settings::default();
        Node::start_with(store, agencies, clock, traces, circuits).await
    }

    /// A node whose traces go to `traces`, with the agencies' circuits under `circuits`.
    pub async fn start_with(
        store: S,
        agencies: &BTreeMap<String, String>,
        clock: civicflow::engine::Clock,
        traces: Arc<civicflow::traces::Traces>,
        circuits: civicflow::circuits::Settings,
    ) -> Node<S> {
        Node::start_in(store, agencies, clock, traces, circuits, workflows_dir()).await
    }

    /// A node running the definitions under `workflows`.
    pub async fn start_in(
        store: S,
        agencies: &BTreeMap<String, String>,
        clock: civicflow::engine::Clock,
        traces: Arc<civicflow::traces::Traces>,
        circuits: civicflow::circuits::Settings,
        workflows: std::path::PathBuf,
    ) -> Node<S> {
        use civicflow::app::{App, Settings};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = Settings {
            workflows,
            engine: civicflow::engine::Config {
                public_url: url.clone(),
                agencies: agencies.clone(),
                drain_timeout: Duration::from_secs(1),
                claim_lease: Duration::from_secs(30),
                clock,
                circuits,
                pseudonyms: pseudonym_key(),
                xroad_client: civicflow::adapters::xroad::DEFAULT_CLIENT.to_owned(),
                audit: audit_signing(),
            },
            limits: civicflow::api::Limits {
                per_second: std::num::NonZeroU32::new(1_000_000).unwrap(),
                burst: std::num::NonZeroU32::new(1_000_000).unwrap(),
            },
            traces,
            // The tests' receivers listen on this machine.
            webhook_targets: civicflow::webhooks::Targets {
                allow_internal: true,
            },
        };
        let mut app = App::build(store, settings).await.unwrap();
        app.start();
        // The production server, as `civicflow serve` runs it (`axum::serve` rebuilds the
        // whole router for every connection).
        tokio::spawn(civicflow::api::serve(
            listener,
            app.router(),
            civicflow::api::Connections::default(),
            std::future::pending(),
        ));
        Node { url, app }
    }
}

/// The hospital the mocks run: the source of death certificates.
pub const HOSPITAL: &str = "urn:vn:moh:hospital:bach-mai";

/// The key of the pseudonyms every node of this test process shares, as the nodes sharing a
/// store share theirs.
pub fn pseudonym_key() -> civicflow::personal_data::PseudonymKey {
    static KEY: std::sync::LazyLock<civicflow::personal_data::PseudonymKey> =
        std::sync::LazyLock::new(civicflow::personal_data::PseudonymKey::generate);
    KEY.clone()
}

/// `civicflow audit …`: whether it succeeded, and what it printed (stdout, then stderr).
pub fn audit_cli(args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The audit key of the server on `data`, as `civicflow audit public-key` prints it, in a file
/// of trusted keys for `audit verify`: the file, and the line.
pub fn trusted_keys_file(data: &Path) -> (std::path::PathBuf, String) {
    let (ok, line) = audit_cli(&[
        "public-key".into(),
        "--data".into(),
        data.display().to_string(),
    ]);
    assert!(ok, "{line}");
    let file = data.with_extension("trusted");
    std::fs::write(&file, format!("# civicflow's audit key\n{line}")).unwrap();
    (file, line)
}

/// Whether the audit log has what it must of case `id` (issue 38): the request of every call
/// an agency received (as its request log tells, by `X-Road-Id`), and for every step that
/// succeeded, the answer the case acted on (a reply that succeeded or was accepted, or the
/// agency's callback).
pub async fn exchanges_logged(
    http: &reqwest::Client,
    url: &str,
    agencies: &BTreeMap<String, String>,
    id: &str,
) -> Result<(), String> {
    let case = fetch(http, &format!("{url}/v1/cases/{id}")).await;
    let page = fetch(http, &format!("{url}/v1/audit/entries?case_id={id}")).await;
    let records: Vec<&Value> = page["entries"]
        .as_array()
        .ok_or_else(|| format!("no entries for {id}: {page}"))?
        .iter()
        .map(|e| &e["entry"]["record"])
        .collect();
    for (step, state) in case["steps"].as_object().into_iter().flatten() {
        if state["status"] != "succeeded" {
            continue;
        }
        let answered = records.iter().any(|r| {
            r["step"] == step.as_str()
                && ((r["kind"] == "exchange"
                    && (r["outcome"] == "succeeded" || r["outcome"] == "pending"))
                    || r["kind"] == "callback")
        });
        if !answered {
            return Err(format!(
                "case {id}: step {step} succeeded without its answer in the log: {records:#?}"
            ));
        }
    }
    for base in agencies.values() {
        let received = fetch(http, &format!("{base}/admin/requests?case_id={id}")).await;
        for call in received.as_array().into_iter().flatten() {
            let logged = records
                .iter()
                .any(|r| r["kind"] == "request" && r["message_id"] == call["message_id"]);
            if !logged {
                return Err(format!(
                    "case {id}: the agency at {base} received {} with no request in the log",
                    call["message_id"]
                ));
            }
        }
    }
    Ok(())
}

/// The key the tests' nodes sign the audit log's tree heads with (one for the whole run, as
/// the nodes of one deployment share theirs).
pub fn audit_key() -> civicflow::audit::HeadSigner {
    static KEY: std::sync::LazyLock<civicflow::audit::HeadSigner> =
        std::sync::LazyLock::new(|| {
            civicflow::audit::HeadSigner::from_seed(civicflow::secret_file::random_key())
        });
    KEY.clone()
}

/// The tests' signing: a head every 200 ms once the log grew, so a test sees one soon.
pub fn audit_signing() -> civicflow::audit::SignerConfig {
    civicflow::audit::SignerConfig {
        key: audit_key(),
        every_entries: 1_000,
        every: Duration::from_millis(200),
    }
}

/// The engine, its HTTP API and the mock agencies (fast mode) in this process, on a fresh
/// store (sled by default, or PostgreSQL), with a clock the caller may skip forward.
pub struct InProcess<S: civicflow::store::Store + Clone = civicflow::store::sled::SledStore> {
    pub url: String,
    pub engine: std::sync::Arc<civicflow::engine::Engine<S>>,
    pub clock: civicflow::engine::Clock,
    /// Agency id → base URL.
    pub agencies: BTreeMap<String, String>,
    pub http: reqwest::Client,
    /// The sled store's directory (none on PostgreSQL).
    pub data: Option<std::path::PathBuf>,
    /// Keeps the node's background work running.
    _node: Node<S>,
    _mocks: civicflow_mocks::RunningMocks,
}

impl InProcess {
    pub async fn start() -> InProcess {
        InProcess::start_with(civicflow::circuits::Settings::default()).await
    }

    /// With the agencies' circuits under `circuits`.
    pub async fn start_with(circuits: civicflow::circuits::Settings) -> InProcess {
        let data = std::env::temp_dir().join(format!("civicflow-in-{}", uuid::Uuid::new_v4()));
        let store = civicflow::store::sled::SledStore::open(
            &data,
            civicflow::store::sled::DEFAULT_CACHE_MIB << 20,
        )
        .unwrap();
        InProcess::on(store, Some(data), circuits, workflows_dir()).await
    }

    /// Running the definitions under `workflows`, on sled.
    pub async fn with_workflows(workflows: std::path::PathBuf) -> InProcess {
        let data = std::env::temp_dir().join(format!("civicflow-in-{}", uuid::Uuid::new_v4()));
        let store = civicflow::store::sled::SledStore::open(
            &data,
            civicflow::store::sled::DEFAULT_CACHE_MIB << 20,
        )
        .unwrap();
        let circuits = civicflow::circuits::Settings::default();
        InProcess::on(store, Some(data), circuits, workflows).await
    }
}

impl InProcess<civicflow::store::postgres::PgStore> {
    /// Running the definitions under `workflows`, on a fresh schema of the test database.
    pub async fn postgres_with_workflows(
        workflows: std::path::PathBuf,
    ) -> InProcess<civicflow::store::postgres::PgStore> {
        let store = pg::fresh_store().await;
        let circuits = civicflow::circuits::Settings::default();
        InProcess::on(store, None, circuits, workflows).await
    }

    /// Running the definitions under `workflows`, on the store at `url` (a schema
    /// [`pg::fresh_url`] made).
    pub async fn postgres_at(
        url: &str,
        workflows: std::path::PathBuf,
    ) -> InProcess<civicflow::store::postgres::PgStore> {
        let store = pg::store_at(url).await;
        let circuits = civicflow::circuits::Settings::default();
        InProcess::on(store, None, circuits, workflows).await
    }
}

impl<S: civicflow::store::Store + Clone> InProcess<S> {
    async fn on(
        store: S,
        data: Option<std::path::PathBuf>,
        circuits: civicflow::circuits::Settings,
        workflows: std::path::PathBuf,
    ) -> InProcess<S> {
        let (mocks, _) = mocks_in_test(1).await;
        let agencies = agency_urls(&mocks);
        let clock = civicflow::engine::Clock::system();
        let off = Arc::new(civicflow::traces::Traces::off());
        let node = Node::start_in(store, &agencies, clock.clone(), off, circuits, workflows).await;
        let (url, engine) = (node.url.clone(), node.app.engine.clone());
        let admin = issue_token(engine.store(), civicflow::auth::Role::Admin, "test").await;
        let police = civicflow::auth::Role::Agency("police".into());
        let police = issue_token(engine.store(), police, "test").await;
        let http = client_with(&admin);
        set_callback_token(&http, &agencies["police"], &police).await;
        InProcess {
            url,
            engine,
            clock,
            agencies,
            http,
            data,
            _node: node,
            _mocks: mocks,
        }
    }

    pub async fn case(&self, id: &str) -> Value {
        fetch(&self.http, &format!("{}/v1/cases/{id}", self.url)).await
    }

    /// A new API token with `role`, held by `name`: its secret.
    pub async fn token(&self, role: civicflow::auth::Role, name: &str) -> String {
        issue_token(self.engine.store(), role, name).await
    }

    /// Moves the engine's clock forward to `at` (RFC 3339).
    pub fn skip_to(&self, at: &str) {
        let at: jiff::Timestamp = at.parse().unwrap();
        let by = at.duration_since(self.clock.now());
        assert!(
            by > jiff::SignedDuration::ZERO,
            "the clock only moves forward"
        );
        self.clock.skip(by);
    }

    /// Starts a birth case with `input` through the API; its id.
    pub async fn start_birth(&self, input: Value) -> String {
        start_birth(&self.http, &self.url, input).await
    }

    /// Starts a case of `workflow` (its newest version) with `input` through the API; its id.
    pub async fn start_case_of(&self, workflow: &str, input: Value) -> String {
        let reply = self
            .http
            .post(format!("{}/v1/cases", self.url))
            .json(&json!({"workflow": workflow, "input": input}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        let started: Value = reply.json().await.unwrap();
        started["id"].as_str().unwrap().to_owned()
    }

    /// Gives the hospital mock its token and points it at this civicflow: the client it posts
    /// with, for the test to post events as the hospital would.
    pub async fn connect_hospital(&self) -> reqwest::Client {
        let token = self
            .token(civicflow::auth::Role::Source(HOSPITAL.into()), "hospital")
            .await;
        let sink = json!({"url": format!("{}/v1/events", self.url), "token": token});
        let put = self
            .http
            .put(format!("{}/admin/event-sink", self.agencies["hospital"]))
            .json(&sink)
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success());
        client_with(&token)
    }

    /// A doctor certifies the death of `deceased`; the hospital's answer (certificate and event).
    pub async fn certify(&self, deceased: &str) -> Value {
        let body = json!({
            "deceased_personal_id": deceased,
            "date_of_death": days_ago(1),
            "declarant": {"personal_id": "001190123456", "full_name": "Nguyễn Thị Lan", "relationship": "con dâu"},
        });
        let reply = self
            .http
            .post(format!(
                "{}/v1/death-certificates",
                self.agencies["hospital"]
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 201);
        reply.json().await.unwrap()
    }

    /// The hospital's record of event `id` once civicflow took it.
    pub async fn delivered(&self, id: &str) -> Value {
        let url = format!("{}/admin/events", self.agencies["hospital"]);
        for _ in 0..600 {
            let events = fetch(&self.http, &url).await;
            let sent = events
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["event"]["id"] == id)
                .cloned()
                .unwrap();
            if sent["state"] != "pending" {
                assert_eq!(sent["state"], "delivered", "{sent:#}");
                return sent;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("event {id} was never delivered");
    }

    /// Registers a webhook for the portal's notifications at `url`: the status and the answer.
    pub async fn register_webhook(&self, url: &str) -> (u16, Value) {
        let reply = self
            .http
            .post(format!("{}/v1/webhooks", self.url))
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        (reply.status().as_u16(), reply.json().await.unwrap())
    }

    /// Polls the case until `done` holds, for at most a minute.
    pub async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let case = self.case(id).await;
            if done(&case) || tokio::time::Instant::now() > until {
                return case;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl<S: civicflow::store::Store + Clone> Drop for InProcess<S> {
    fn drop(&mut self) {
        if let Some(data) = &self.data {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}
