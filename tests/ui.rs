//! The operators' page in a real browser: Chromium driven over WebDriver (chromedriver), against
//! `civicflow serve --with-mocks`. An operator signs in, finds the incident a mock fault made,
//! opens the case, retries it with a reason and watches it complete, sees personal IDs masked
//! and no bulk action; a supervisor retries every incident of a filter after a confirmation
//! that says how many; no session, a forged cookie and a cross-site form are refused. The runs
//! write the screenshots of `docs/operations.md` (`docs/screenshots/`).
//!
//! `scripts/test` installs Chromium and chromedriver (scripts/chromium.sh); without them these
//! tests fail, never skip.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator as By};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use support::{Server, birth_input, free_port};

const BOUND: Duration = Duration::from_secs(60);

/// chromedriver and a headless Chromium it drives; both end with the test.
struct Browser {
    driver: Child,
    web: Client,
}

impl Browser {
    /// One browser at a time: three Chromiums and three servers at once on a small machine make
    /// every wait in these tests a race.
    async fn start() -> (tokio::sync::MutexGuard<'static, ()>, Browser) {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = ONE_AT_A_TIME.lock().await;
        (turn, Browser::launch().await)
    }

    async fn launch() -> Browser {
        let chromedriver = std::env::var("CIVICFLOW_CHROMEDRIVER").expect(
            "CIVICFLOW_CHROMEDRIVER names chromedriver: run the tests with ./scripts/test, which installs it",
        );
        let chromium = std::env::var("CIVICFLOW_CHROMIUM").expect(
            "CIVICFLOW_CHROMIUM names Chromium: run the tests with ./scripts/test, which installs it",
        );
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let until = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "chromedriver never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let options = json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                "--lang=vi-VN",
            ],
        });
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".to_owned(), json!("chrome"));
        caps.insert("goog:chromeOptions".to_owned(), options);
        let web = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser { driver, web }
    }

    async fn goto(&self, url: &str) {
        self.web.goto(url).await.unwrap();
    }

    /// The element `by` finds, once the page shows it: a click's navigation, or an htmx swap,
    /// may still be under way.
    async fn element(&self, by: By<'_>) -> Element {
        let until = tokio::time::Instant::now() + BOUND;
        loop {
            match self.web.find(by).await {
                Ok(element) => return element,
                Err(e) if tokio::time::Instant::now() > until => panic!("{by:?}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn fill(&self, id: &str, text: &str) {
        let field = self.element(By::Id(id)).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// The value of the form field `element` as the user left it.
    async fn value(element: &Element) -> String {
        element.prop("value").await.unwrap().unwrap_or_default()
    }

    /// Clicks the element `by` finds; found again if the page replaced it meanwhile (htmx
    /// swaps a part of the page when a filter changes).
    async fn click(&self, by: By<'_>) {
        let mut tries = 0;
        loop {
            let clicked = self.element(by).await.click().await;
            match clicked {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() && tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("clicking {by:?}: {e}"),
            }
        }
    }

    /// The text of the element `id`; found again if the page replaced it meanwhile (the case
    /// page refreshes its status by itself).
    async fn text(&self, id: &str) -> String {
        let mut tries = 0;
        loop {
            match self.element(By::Id(id)).await.text().await {
                Ok(text) => return text,
                Err(e) if e.is_stale_element_reference() && tries < 10 => tries += 1,
                Err(e) => panic!("the text of #{id}: {e}"),
            }
        }
    }

    async fn source(&self) -> String {
        self.web.source().await.unwrap()
    }

    async fn sign_in(&self, server: &Server, token: &str) {
        self.goto(&format!("{}/ui/", server.url)).await;
        assert!(
            self.web.current_url().await.unwrap().path() == "/ui/sign-in",
            "without a session the page asks to sign in"
        );
        self.fill("token", token).await;
        self.click(By::Id("sign-in")).await;
        self.wait_for_path("/ui/incidents").await;
    }

    /// Waits until the browser is at `path` (a click's navigation may still be under way).
    async fn wait_for_path(&self, path: &str) {
        let until = tokio::time::Instant::now() + BOUND;
        loop {
            let at = self.web.current_url().await.unwrap();
            if at.path() == path {
                return;
            }
            assert!(tokio::time::Instant::now() < until, "at {at}, not {path}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element `id` says `text` (the page updates by itself).
    async fn wait_for_text(&self, id: &str, text: &str) {
        let until = tokio::time::Instant::now() + BOUND;
        loop {
            let found = match self.web.find(By::Id(id)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if found == text {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "#{id} says `{found}`, not `{text}`"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes the page as it is now to `docs/screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.web.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn quit(mut self) {
        let web = self.web.clone();
        web.close().await.unwrap();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// A server whose civil-status mock garbles every answer, until a test clears its faults.
async fn garbling_server() -> Server {
    let server = Server::start();
    server
        .set_faults("civil-status", json!({"rates": {"garbled": 1.0}}))
        .await;
    server
}

/// Starts a birth case while the civil-status mock garbles its answers: the case stops with an
/// `unexpected_reply` incident. The fault is cleared afterwards, so a retry succeeds.
async fn case_with_incident(server: &Server, certificate: &str) -> String {
    let id = server
        .start_case("birth-registration", birth_input(certificate))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(
        case["incidents"][0]["reason"], "unexpected_reply",
        "{case:#}"
    );
    id
}

#[tokio::test]
async fn an_operator_finds_an_incident_retries_it_and_watches_the_case_complete() {
    let server = garbling_server().await;
    let id = case_with_incident(&server, "UI-OPERATOR-1").await;
    server.set_faults("civil-status", json!({})).await;
    let operator = server.token("operator").await;

    let (_turn, browser) = Browser::start().await;
    browser.goto(&format!("{}/ui/incidents", server.url)).await;
    browser.screenshot("sign-in").await;
    browser.sign_in(&server, &operator).await;
    let row = format!("tr[data-case='{id}']");
    let found = browser.element(By::Css(&row)).await;
    let said = found.text().await.unwrap();
    assert!(
        said.contains("civil-status answered something its adapter does not understand"),
        "{said}"
    );
    assert!(
        browser
            .web
            .find_all(By::Id("bulk-retry"))
            .await
            .unwrap()
            .is_empty(),
        "an operator has no bulk action"
    );
    browser.screenshot("incidents").await;

    browser
        .click(By::Css(&format!("tr[data-case='{id}'] a")))
        .await;
    assert_eq!(browser.text("case-status").await, "running");
    let page = browser.source().await;
    assert!(
        !page.contains("001190123456") && page.contains("**********56"),
        "an operator sees the requester's personal ID masked"
    );
    browser.screenshot("case").await;

    // Corrected data that breaks the workflow's input schema: refused, and the API's message is
    // shown beside the data, which is kept as typed.
    browser
        .click(By::XPath(
            "//summary[text()=\"Correct the case's data and re-run a step\"]",
        ))
        .await;
    let input = browser.element(By::Id("fix-input")).await;
    let corrected = Browser::value(&input).await;
    let mut corrected: serde_json::Value = serde_json::from_str(&corrected).unwrap();
    corrected["child"]["sex"] = json!("unknown");
    input.clear().await.unwrap();
    input.send_keys(&corrected.to_string()).await.unwrap();
    browser.fill("fix-reason", "the sex was misread").await;
    browser.click(By::Id("fix")).await;
    browser.element(By::Id("form-error")).await;
    let mut at_field = Vec::new();
    for e in browser
        .web
        .find_all(By::XPath(
            "//textarea[@id='fix-input']/../following-sibling::p[@class='field-error']",
        ))
        .await
        .unwrap()
    {
        at_field.push(e.text().await.unwrap());
    }
    assert!(
        at_field.iter().any(|e| e.starts_with("child/sex: ")),
        "{at_field:?}"
    );
    // The personal IDs went back masked, as shown, and kept their stored values.
    assert!(
        at_field.iter().all(|e| !e.contains("personal_id")),
        "{at_field:?}"
    );
    assert!(browser.text("fix-input").await.contains("unknown"));

    // By keyboard alone: the action opens with Enter, the first step is the stuck one, and
    // Enter in the reason sends the form.
    let retry = browser
        .element(By::XPath("//summary[text()='Retry a step']"))
        .await;
    browser
        .web
        .execute("arguments[0].focus()", vec![json!(retry)])
        .await
        .unwrap();
    retry.send_keys(&Key::Enter).await.unwrap();
    let step = browser.element(By::Id("retry-step")).await;
    assert_eq!(Browser::value(&step).await, "birth");
    let reason = browser.element(By::Id("retry-reason")).await;
    reason
        .send_keys(&("civil-status fixed its replies" + &Key::Enter))
        .await
        .unwrap();
    assert!(browser.text("done").await.contains("retry"));
    browser.wait_for_text("case-status", "completed").await;
    let history = browser.text("timeline").await;
    assert!(
        history.contains("civil-status fixed its replies"),
        "the reason is in the history: {history}"
    );
    browser.screenshot("case-completed").await;

    // On a phone's width the pages wrap instead of scrolling sideways (wide tables scroll
    // inside their box).
    browser.web.set_window_rect(0, 0, 390, 844).await.unwrap();
    for page in ["/ui/incidents".to_owned(), format!("/ui/cases/{id}")] {
        browser.goto(&format!("{}{page}", server.url)).await;
        // The elements that reach past the screen's right edge, outside a scrolling box.
        let wider = browser
            .web
            .execute(
                r#"const w = window.innerWidth;
                return [...document.querySelectorAll("body *")]
                    .filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest(".scroll"))
                    .map(e => e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right));"#,
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(wider, json!([]), "{page} is wider than a phone");
    }
    browser.screenshot("case-phone").await;
    browser.web.set_window_rect(0, 0, 1280, 1000).await.unwrap();

    browser.goto(&format!("{}/ui/search", server.url)).await;
    browser.fill("s-value", "G01.123-UI-OPERATOR-1").await;
    browser
        .click(By::XPath("//select[@id='s-name']/option[text()='dossier']"))
        .await;
    browser.click(By::Id("search")).await;
    let listed = browser.text("cases").await;
    assert!(listed.contains(&id), "{listed}");
    browser.screenshot("search").await;

    browser.click(By::XPath("//a[text()='On time']")).await;
    let table = browser.text("kpis").await;
    assert!(table.contains("birth at civil-status"), "{table}");
    let bars = browser
        .web
        .find_all(By::Css("svg#chart rect.on-time"))
        .await
        .unwrap();
    assert!(
        !bars.is_empty(),
        "the chart shows the steps finished on time"
    );
    browser.screenshot("kpis").await;

    browser
        .click(By::XPath("//button[text()='Sign out']"))
        .await;
    browser.wait_for_path("/ui/sign-in").await;
    browser.goto(&format!("{}/ui/incidents", server.url)).await;
    assert_eq!(
        browser.web.current_url().await.unwrap().path(),
        "/ui/sign-in"
    );
    browser.quit().await;
}

#[tokio::test]
async fn a_supervisor_retries_every_incident_of_a_filter_after_a_confirmation() {
    let server = garbling_server().await;
    let ids = [
        case_with_incident(&server, "UI-BULK-1").await,
        case_with_incident(&server, "UI-BULK-2").await,
    ];
    server.set_faults("civil-status", json!({})).await;
    let supervisor = server.token("supervisor").await;

    let (_turn, browser) = Browser::start().await;
    browser.sign_in(&server, &supervisor).await;
    browser
        .click(By::XPath(
            "//select[@id='f-agency']/option[text()='civil-status']",
        ))
        .await;
    // The list follows the filter by itself (htmx), and so does the bulk action under it.
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let filtered = match browser
            .web
            .find(By::Css("#bulk input[name='agency']"))
            .await
        {
            // Replaced by the swap between the find and the read: read again.
            Ok(e) => e.prop("value").await.ok().flatten().unwrap_or_default(),
            Err(_) => String::new(),
        };
        if filtered == "civil-status" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the filter never applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.click(By::Id("bulk-retry")).await;
    let count = browser.text("bulk-count").await;
    assert!(count.contains("This retries 2 incidents"), "{count}");
    browser.fill("bulk-reason", "civil-status is back").await;
    browser.screenshot("bulk-retry").await;
    browser.click(By::Id("bulk-confirm")).await;
    assert!(browser.text("bulk-done").await.contains("Retried 2 steps"));
    for id in &ids {
        let case = server.settled(id, BOUND).await;
        assert_eq!(case["status"], "completed", "{case:#}");
    }
    // A supervisor sees personal data unmasked.
    browser
        .goto(&format!("{}/ui/cases/{}", server.url, ids[0]))
        .await;
    assert!(browser.source().await.contains("001190123456"));
    browser.quit().await;
}

#[tokio::test]
async fn no_session_a_forged_cookie_and_a_cross_site_form_are_refused() {
    let server = garbling_server().await;
    let id = case_with_incident(&server, "UI-REFUSED-1").await;
    let (_turn, browser) = Browser::start().await;

    // No session: every page asks to sign in; a portal's token may not.
    browser.goto(&format!("{}/ui/cases/{id}", server.url)).await;
    assert_eq!(
        browser.web.current_url().await.unwrap().path(),
        "/ui/sign-in"
    );
    let portal = server.token("portal").await;
    browser.fill("token", &portal).await;
    browser.click(By::Id("sign-in")).await;
    assert!(
        browser
            .text("message")
            .await
            .contains("may not sign in here")
    );

    // No other site may frame the page, and no cache keeps it.
    let page = reqwest::get(format!("{}/ui/sign-in", server.url))
        .await
        .unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header("cache-control"), "no-store");

    // A forged cookie is no session.
    // Set by the page's script: chromedriver cannot set a cookie on an IP address's host.
    browser
        .web
        .execute(
            "document.cookie = 'civicflow_session=cf_00000000_000000000000000000000000000000000000000000000000; path=/ui'",
            Vec::new(),
        )
        .await
        .unwrap();
    browser.goto(&format!("{}/ui/incidents", server.url)).await;
    assert!(browser.text("message").await.contains("session has ended"));

    // A form on another site posting to the page, in a browser signed in: the cookie is not
    // sent with it (SameSite=Strict), and nothing happens to the case.
    let operator = server.token("operator").await;
    browser.web.delete_all_cookies().await.unwrap();
    browser.sign_in(&server, &operator).await;
    let before = server.get(&format!("/v1/cases/{id}/history")).await["events"]
        .as_array()
        .unwrap()
        .len();
    let attack = format!(
        "data:text/html,<form id=f method=post action='{}/ui/cases/{id}/act'><input name=action value=cancel><input name=reason value=attack></form><script>document.getElementById('f').submit()</script>",
        server.url
    );
    browser.goto(&attack).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.get(&format!("/v1/cases/{id}/history")).await["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "the cross-site form did nothing");
    let case = server.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(case["status"], "running", "{case:#}");

    // The same form with the session's cookie but without its CSRF token, as a script on
    // another site could send it where cookies were not strict: refused.
    let secret = browser
        .web
        .get_named_cookie("civicflow_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    // And the same form marked cross-site by the browser, which a cookie would not excuse.
    for fetch_site in [None, Some("cross-site")] {
        let mut form = reqwest::Client::new()
            .post(format!("{}/ui/cases/{id}/act", server.url))
            .header("cookie", format!("civicflow_session={secret}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("action=cancel&reason=attack");
        if let Some(site) = fetch_site {
            form = form.header("sec-fetch-site", site);
        }
        let answer = form.send().await.unwrap();
        assert_eq!(
            answer.status().as_u16(),
            403,
            "sec-fetch-site {fetch_site:?}"
        );
    }
    let case = server.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(case["status"], "running", "{case:#}");

    // Revoking the token signed in with ends its sessions.
    let token_id = operator.split('_').nth(1).unwrap();
    let revoked = server
        .http
        .delete(format!("{}/v1/tokens/{token_id}", server.url))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    browser.goto(&format!("{}/ui/incidents", server.url)).await;
    assert!(browser.text("message").await.contains("session has ended"));
    browser.quit().await;
}

/// Issue 34: a supervisor finds a dossier on the deadline list, gives it its apology and one
/// new date from the case page, and the page shows the extended date and why.
#[tokio::test]
async fn a_supervisor_gives_a_late_dossier_a_new_date_and_the_page_shows_it() {
    let server = Server::start();
    let mut input = birth_input("UI-EXTEND");
    input["household_head_personal_id"] = json!(support::MANUAL_HEAD);
    let id = server.start_case("birth-registration", input).await;
    let mut case = server.get(&format!("/v1/cases/{id}")).await;
    let until = tokio::time::Instant::now() + BOUND;
    while case["steps"]["residence"]["status"] != "awaiting_callback" {
        assert!(tokio::time::Instant::now() < until, "{case:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        case = server.get(&format!("/v1/cases/{id}")).await;
    }
    let due: jiff::Timestamp = case["steps"]["residence"]["due_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let calendar = civicflow::calendar::Calendar::vietnam();
    let new_day = civicflow::calendar::due_day(calendar.after_due(due, 2).unwrap());
    let supervisor = server.token("supervisor").await;

    let (_turn, browser) = Browser::start().await;
    browser.sign_in(&server, &supervisor).await;
    browser.goto(&format!("{}/ui/deadlines", server.url)).await;
    let row = format!("//tr[@data-case='{id}']");
    browser.element(By::XPath(&row)).await;
    let listed = browser.text("deadlines").await;
    assert!(listed.contains("residence"), "{listed}");
    browser.screenshot("deadlines").await;

    browser.goto(&format!("{}/ui/cases/{id}", server.url)).await;
    browser
        .click(By::XPath(
            "//summary[text()='Apologise and set one new date']",
        ))
        .await;
    browser
        .click(By::XPath(
            "//select[@id='extend-step']/option[text()='residence']",
        ))
        .await;
    browser
        .web
        .execute(
            "document.getElementById('extend-until').value = arguments[0];",
            vec![json!(new_day.to_string())],
        )
        .await
        .unwrap();
    browser.fill("extend-reason-code", "verification").await;
    browser
        .fill("extend-reason", "the household's address is being verified")
        .await;
    browser.click(By::Id("extend")).await;
    let shown = new_day.strftime("%d/%m/%Y").to_string();
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let due = browser.text("case-due").await;
        if due.contains(&shown) && due.contains("being verified") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the page says `{due}`, not the new date {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let extended = browser.text("case-extended").await;
    assert!(extended.contains("verification"), "{extended}");
    browser.screenshot("case-extended").await;
    // Once given, the form is gone: a new date is set once.
    assert!(
        !browser
            .source()
            .await
            .contains("Apologise and set one new date"),
        "the extension form is still offered"
    );
    let case = server.get(&format!("/v1/cases/{id}")).await;
    assert_eq!(case["extension"]["reason_code"], "verification", "{case:#}");
    browser.quit().await;
}
