//! The steps' dependencies as a graph: cycles, and what each step (transitively) needs.

use std::collections::{BTreeSet, HashMap};

use crate::workflow::diagnostic::{Diagnostic, code};
use crate::workflow::source::Located;
use crate::workflow::spec::WorkflowSpec;

/// Each step's transitive `needs`; reports cycles and returns `None` when there is one.
pub(super) fn ancestry(
    file: &str,
    spec: &WorkflowSpec,
    located: &Located,
    index: &HashMap<&str, usize>,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<BTreeSet<String>>> {
    // 0 = unvisited, 1 = on the path, 2 = done
    fn visit(
        i: usize,
        spec: &WorkflowSpec,
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        path: &mut Vec<usize>,
        done: &mut [BTreeSet<String>],
    ) -> Result<(), Vec<usize>> {
        state[i] = 1;
        path.push(i);
        let mut mine = BTreeSet::new();
        for need in &spec.steps[i].needs {
            let j = index[need.as_str()];
            match state[j] {
                1 => {
                    let from = path.iter().position(|&p| p == j).unwrap_or(0);
                    return Err(path[from..].to_vec());
                }
                0 => visit(j, spec, index, state, path, done)?,
                _ => {}
            }
            mine.insert(need.clone());
            mine.extend(done[j].iter().cloned());
        }
        path.pop();
        state[i] = 2;
        done[i] = mine;
        Ok(())
    }
    let n = spec.steps.len();
    let mut state = vec![0u8; n];
    let mut done = vec![BTreeSet::new(); n];
    for i in 0..n {
        if state[i] == 0 {
            let mut path = Vec::new();
            if let Err(cycle) = visit(i, spec, index, &mut state, &mut path, &mut done) {
                let names: Vec<&str> = cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|&k| spec.steps[k].id.as_str())
                    .collect();
                out.push(
                    Diagnostic::new(
                        file,
                        located.value_pos(&format!("/steps/{}/needs", cycle[0])),
                        code::CYCLE,
                        format!("the steps' `needs` form a cycle: {}", names.join(" → ")),
                    )
                    .help("a workflow's steps must form a DAG: remove one of these needs"),
                );
                return None;
            }
        }
    }
    Some(done)
}
