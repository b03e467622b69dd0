//! `civicflow validate` and `civicflow schema` through the real binary.

use std::process::Command;

fn civicflow(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_shipped_workflows_are_valid() {
    let (ok, out) = civicflow(&["validate"]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "ok: 11 files valid (4 workflow versions, 7 adapter versions)\n"
    );
}

#[test]
fn committed_schemas_match_the_code() {
    for kind in ["workflow", "adapter"] {
        let (ok, generated) = civicflow(&["schema", kind]);
        assert!(ok);
        let committed = std::fs::read_to_string(format!(
            "{}/docs/schema/{kind}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(
            committed, generated,
            "docs/schema/{kind}.json is stale: run `cargo run -- schema {kind} > docs/schema/{kind}.json`"
        );
    }
}

#[test]
fn every_problem_is_reported_and_the_exit_code_is_one() {
    let dir = std::env::temp_dir().join(format!("civicflow-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), "kind: workflow\nname: x\nversoin: 1\n").unwrap();
    std::fs::write(dir.join("b.yaml"), "kind: adapter\nid: [\n").unwrap();
    let (ok, out) = civicflow(&["validate", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!ok);
    assert!(
        out.contains(
            "a.yaml:3:1: error[CF010]: unknown field `versoin`\n  help: did you mean `version`?"
        ),
        "{out}"
    );
    assert!(out.contains("b.yaml:"), "{out}");
    assert!(out.ends_with("problems found\n"), "{out}");
}

#[test]
fn a_device_or_an_endless_file_is_refused_not_read_for_ever() {
    let (ok, out) = civicflow(&["validate", "/dev/zero"]);
    assert!(!ok, "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    let dir = std::env::temp_dir().join(format!("civicflow-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.yaml");
    std::fs::write(&big, "a: 1\n".repeat(300_000)).unwrap();
    let (ok, out) = civicflow(&["validate", big.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("larger than the limit"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}
