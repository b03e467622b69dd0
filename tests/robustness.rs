//! The definition-file checker never panics, whatever bytes it is given: arbitrary input, and the
//! shipped files with random damage (the most realistic hostile input: almost-valid files).

use std::path::PathBuf;
use std::sync::OnceLock;

use civicflow::workflow::catalog;
use civicflow::workflow::check::{self, AdapterIndex};
use proptest::prelude::*;

fn shipped(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// Runs every stage a file can reach: YAML, structure, then meaning against the shipped adapters.
fn check_text(text: &str) {
    static ADAPTERS: OnceLock<AdapterIndex> = OnceLock::new();
    let adapters = ADAPTERS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        catalog::load(&[root.join("workflows/adapters")]).0.adapters
    });
    match check::parse_file("input.yaml", text) {
        Ok(check::Parsed::Workflow(spec, located)) => {
            check::workflow("input.yaml", &spec, &located, adapters);
        }
        Ok(check::Parsed::Adapter(spec, located)) => {
            check::adapter("input.yaml", &spec, &located);
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
}

/// Replaces, inserts or deletes bytes at the given positions of `text`.
fn damage(text: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for &(at, op, byte) in edits {
        let at = at % (bytes.len() + 1);
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

const YAML_BYTES: &[u8] = b"{}[]:-,&*!|>'\"#%@` \n\t$.abc019";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_text(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_punctuation(picks in proptest::collection::vec(0..YAML_BYTES.len(), 0..512)) {
        let text: String = picks.iter().map(|&i| YAML_BYTES[i] as char).collect();
        check_text(&text);
    }

    #[test]
    fn damaged_birth_workflow(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        check_text(&damage(&shipped("workflows/birth-registration.yaml"), &edits));
    }

    #[test]
    fn damaged_poll_adapter(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        check_text(&damage(&shipped("workflows/adapters/social-security/child-health-insurance-card.yaml"), &edits));
    }
}
