//! Data-driven check of `civicflow validate` messages: each file in `tests/corpus/` holds one
//! mistake and, in its `# expect:` lines (at the end, so line numbers stay put), the exact messages it must produce. Files are
//! checked beside the shipped `workflows/`, so they can refer to real adapters and clash with real
//! workflows.

use std::path::{Path, PathBuf};

use civicflow::workflow::catalog;

fn check(file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap();
    let expected: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (_, problems) = catalog::load(&[root.join("workflows"), file.to_owned()]);
    let dir = format!("{}/", file.parent().unwrap().display());
    let root = format!("{}/", root.display());
    let actual: Vec<String> = problems
        .iter()
        .flat_map(|p| {
            p.to_string()
                .lines()
                .map(|l| l.replace(&dir, "").replace(&root, ""))
                .collect::<Vec<_>>()
        })
        .collect();
    if actual == expected {
        Ok(())
    } else {
        let actual: String = actual.iter().map(|l| format!("# expect: {l}\n")).collect();
        Err(format!("{}: got\n{actual}", file.display()))
    }
}

#[test]
fn every_broken_file_gives_its_exact_messages() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let failures: Vec<String> = files.iter().filter_map(|f| check(f).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
