//! Every example in `docs/workflow-language.md` is true: the line-by-line birth chain is the
//! shipped file, every complete YAML example is a valid definition, every `console` block is
//! what the real binary prints, and every error code the checker has is in the table.

use std::path::{Path, PathBuf};
use std::process::Command;

use civicflow::workflow::catalog;

struct Block {
    info: String,
    text: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/workflow-language.md")).unwrap()
}

/// The fenced code blocks of a Markdown text, with their info strings.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => {
                current = Some(Block {
                    info: info.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => out.extend(current.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    out
}

#[test]
fn the_birth_chain_walkthrough_is_the_shipped_file() {
    let shown: String = blocks(&doc())
        .iter()
        .filter(|b| b.info == "yaml file=workflows/birth-registration.yaml")
        .map(|b| b.text.as_str())
        .collect();
    let shipped =
        std::fs::read_to_string(root().join("workflows/birth-registration.yaml")).unwrap();
    assert_eq!(
        shown, shipped,
        "the walkthrough must show every line of the file, in order"
    );
}

#[test]
fn every_complete_yaml_example_is_valid() {
    let dir = std::env::temp_dir().join(format!("civicflow-doc-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let examples: Vec<PathBuf> = blocks(&doc())
        .iter()
        .filter(|b| b.info == "yaml")
        .enumerate()
        .map(|(i, b)| {
            let path = dir.join(format!("example-{i}.yaml"));
            std::fs::write(&path, &b.text).unwrap();
            path
        })
        .collect();
    assert!(examples.len() >= 3, "the examples were not found");
    let mut paths = vec![root().join("workflows")];
    paths.extend(examples);
    let (_, problems) = catalog::load(&paths);
    std::fs::remove_dir_all(&dir).unwrap();
    let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_console_example_is_what_the_binary_prints() {
    let consoles: Vec<Block> = blocks(&doc())
        .into_iter()
        .filter(|b| b.info == "console")
        .collect();
    assert!(!consoles.is_empty());
    for block in consoles {
        let (command, expected) = block.text.split_once('\n').unwrap();
        let args: Vec<&str> = command
            .strip_prefix("$ civicflow ")
            .expect("a console example runs civicflow")
            .split_whitespace()
            .collect();
        let output = Command::new(env!("CARGO_BIN_EXE_civicflow"))
            .args(&args)
            .current_dir(root())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected,
            "{command}"
        );
    }
}

#[test]
fn every_error_code_is_in_the_table() {
    let source =
        std::fs::read_to_string(Path::new(&root()).join("src/workflow/diagnostic.rs")).unwrap();
    let doc = doc();
    let missing: Vec<&str> = source
        .split('"')
        .filter(|s| s.len() == 5 && s.starts_with("CF"))
        .filter(|code| !doc.contains(&format!("| {code} |")))
        .collect();
    assert!(
        missing.is_empty(),
        "codes missing from the table: {missing:?}"
    );
}

#[test]
fn the_openapi_document_is_the_one_the_code_generates() {
    let checked_in = std::fs::read_to_string(root().join("docs/openapi.json")).unwrap();
    assert!(
        checked_in == civicflow::api::openapi_json(),
        "docs/openapi.json is stale: regenerate it with `cargo run -- openapi > docs/openapi.json`"
    );
}

#[test]
fn every_reference_in_the_openapi_document_resolves() {
    let text = civicflow::api::openapi_json();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"#/components/schemas/") {
        let name_start = at + "\"#/components/schemas/".len();
        let len = rest[name_start..].find('"').unwrap();
        let name = &rest[name_start..name_start + len];
        assert!(
            schemas.contains_key(name),
            "docs/openapi.json refers to `{name}`, which it does not define"
        );
        rest = &rest[name_start + len..];
    }
}
