//! Schemathesis (PyPI) against the OpenAPI document the server serves: generated requests to
//! every operation, the operators' actions included, with its checks that no answer is a server
//! error and that every answer matches its documented schema, as an admin, an agency and an
//! event source. `./scripts/test` installs it
//! (`scripts/schemathesis.sh`); without it this test fails, it does not skip.

mod support;

use std::process::Command;

use support::Server;

/// Runs Schemathesis as `token` (on the operations `only` selects, e.g. `--include-path`) and
/// asserts it found nothing.
fn schemathesis(server: &Server, token: &str, examples: &str, only: &[&str]) {
    let program =
        std::env::var("CIVICFLOW_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let out = Command::new(&program)
        .args([
            "run",
            &format!("{}/v1/openapi.json", server.url),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            examples,
            "--seed",
            "7",
        ])
        .args(only)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "`{program}` cannot run ({e}): ./scripts/test installs it (scripts/schemathesis.sh)"
            )
        });
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

#[tokio::test]
async fn generated_requests_to_every_operation_get_no_server_error_and_documented_answers() {
    let server = Server::start_with(&["--rate-limit", "1000000", "--rate-burst", "1000000"]);
    // A case for the generated reads and actions to find.
    server
        .start_case("birth-registration", support::birth_input("FUZZ-1"))
        .await;
    // Every token first: a run takes longer than the server keeps an idle connection open.
    let agency = server.token("agency:police").await;
    let hospital = server.token("source:urn:vn:moh:hospital:bach-mai").await;
    schemathesis(&server, &server.admin, "50", &[]);
    // The callbacks, as an agency.
    schemathesis(&server, &agency, "20", &[]);
    // The events, as a hospital (everything else only answers it 403).
    schemathesis(&server, &hospital, "50", &["--include-path", "/v1/events"]);
}
