//! `civicflow validate [PATH...]`: checks definition files and prints every problem.

use std::io::Write;
use std::path::PathBuf;

use crate::workflow::catalog;

/// Prints each problem (or a one-line summary) to `out` and returns whether all files are valid.
pub fn run(paths: &[PathBuf], out: &mut impl Write) -> std::io::Result<bool> {
    let (catalog, problems) = catalog::load(paths);
    for problem in &problems {
        writeln!(out, "{problem}")?;
    }
    if problems.is_empty() {
        let versions = |n: usize| if n == 1 { "" } else { "s" };
        let workflows: usize = catalog.workflows.values().map(|v| v.len()).sum();
        let adapters: usize = catalog.adapters.values().map(|v| v.len()).sum();
        writeln!(
            out,
            "ok: {} file{} valid ({workflows} workflow version{}, {adapters} adapter version{})",
            catalog.files,
            versions(catalog.files),
            versions(workflows),
            versions(adapters)
        )?;
    } else {
        let n = problems.len();
        writeln!(
            out,
            "error: {n} problem{} found",
            if n == 1 { "" } else { "s" }
        )?;
    }
    Ok(problems.is_empty())
}
