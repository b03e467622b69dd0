//! A set of definition files checked together: adapters first, then the workflows that use them,
//! then what only the whole set can tell (two files claiming one name and version).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::workflow::check::{self, AdapterIndex, Parsed};
use crate::workflow::diagnostic::{Diagnostic, code};
use crate::workflow::source::{MAX_FILE_BYTES, Pos};
use crate::workflow::spec::WorkflowSpec;

/// The checked definitions of a set of files.
#[derive(Debug, Default)]
pub struct Catalog {
    pub adapters: AdapterIndex,
    /// By name, then version.
    pub workflows: BTreeMap<String, BTreeMap<u32, WorkflowSpec>>,
    pub files: usize,
}

/// Every `.yaml`/`.yml` file under the given paths (files are taken as given), sorted.
pub fn find_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut found = Vec::new();
    for path in paths {
        collect(path, &mut found).map_err(|e| {
            Diagnostic::new(
                &path.display().to_string(),
                Pos { line: 1, col: 1 },
                code::UNREADABLE,
                format!("cannot read: {e}"),
            )
        })?;
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn collect(path: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            if p.is_dir() || matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            {
                collect(&p, found)?;
            }
        }
    } else {
        std::fs::metadata(path)?;
        found.push(path.to_owned());
    }
    Ok(())
}

/// A definition's text and the name its diagnostics use (a file's path, or a published
/// definition's registry name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Reads the definition files under `paths`; a file that cannot be read is a problem.
pub fn read_files(paths: &[PathBuf]) -> (Vec<Source>, Vec<Diagnostic>) {
    let files = match find_files(paths) {
        Ok(f) => f,
        Err(d) => return (Vec::new(), vec![d]),
    };
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let unreadable = |message: String| {
            Diagnostic::new(&name, Pos { line: 1, col: 1 }, code::UNREADABLE, message)
        };
        match read_bounded(path) {
            Ok(bytes) if bytes.len() > MAX_FILE_BYTES => problems.push(unreadable(format!(
                "the file is larger than the limit of {MAX_FILE_BYTES} bytes"
            ))),
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source { name, text }),
                Err(_) => problems.push(unreadable("the file is not UTF-8 text".to_owned())),
            },
            Err(e) => problems.push(unreadable(format!("cannot read: {e}"))),
        }
    }
    (sources, problems)
}

/// A regular file's bytes, at most one more than [`MAX_FILE_BYTES`]: a device (`/dev/zero`)
/// or a pipe is refused before it is read, and a file that never ends is read no further than
/// the limit.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks the files and returns what is valid with every problem found.
pub fn load(paths: &[PathBuf]) -> (Catalog, Vec<Diagnostic>) {
    let (sources, mut problems) = read_files(paths);
    let files = sources.len() + problems.len();
    let (mut catalog, mut found) = check_sources(&sources);
    catalog.files = files;
    problems.append(&mut found);
    (catalog, problems)
}

/// Checks definitions given as text, together: adapters first, then the workflows that use them.
pub fn check_sources(sources: &[Source]) -> (Catalog, Vec<Diagnostic>) {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for Source { name, text } in sources {
        match check::parse_file(name, text) {
            Ok(p) => parsed.push((name.clone(), p)),
            Err(mut ds) => problems.append(&mut ds),
        }
    }
    let mut catalog = Catalog {
        files: sources.len(),
        ..Catalog::default()
    };
    let mut adapter_files: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (name, p) in &parsed {
        if let Parsed::Adapter(spec, located) = p {
            let found = check::adapter(name, spec, located);
            let key = (spec.id.clone(), spec.version);
            if let Some(first) = adapter_files.get(&key) {
                problems.push(
                    Diagnostic::new(
                        name,
                        located.value_pos("/id"),
                        code::DUPLICATE_ADAPTER,
                        format!(
                            "adapter `{}@{}` is also defined in {first}",
                            spec.id, spec.version
                        ),
                    )
                    .help("publish a change as a new version"),
                );
            } else if found.is_empty() {
                adapter_files.insert(key, name.clone());
                catalog
                    .adapters
                    .entry(spec.id.clone())
                    .or_default()
                    .insert(spec.version, (**spec).clone());
            }
            problems.extend(found);
        }
    }
    let mut workflow_files: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (name, p) in &parsed {
        if let Parsed::Workflow(spec, located) = p {
            let found = check::workflow(name, spec, located, &catalog.adapters);
            let key = (spec.name.clone(), spec.version);
            if let Some(first) = workflow_files.get(&key) {
                problems.push(
                    Diagnostic::new(
                        name,
                        located.value_pos("/version"),
                        code::DUPLICATE_WORKFLOW,
                        format!(
                            "workflow `{}` version {} is also defined in {first}",
                            spec.name, spec.version
                        ),
                    )
                    .help("give the new definition the next version number"),
                );
                continue;
            }
            workflow_files.insert(key, name.clone());
            if found.is_empty() {
                catalog
                    .workflows
                    .entry(spec.name.clone())
                    .or_default()
                    .insert(spec.version, (**spec).clone());
            }
            problems.extend(found);
        }
    }
    problems.extend(check::chains(parsed.iter().filter_map(
        |(name, p)| match p {
            Parsed::Workflow(spec, located) => Some((name.as_str(), &**spec, located)),
            Parsed::Adapter(..) => None,
        },
    )));
    (catalog, problems)
}
