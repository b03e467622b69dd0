//! What starts a workflow and what its steps wait for: triggers name one thing to follow, with
//! a business key the workflow has; a step's wait is matched by a value of the input, known when
//! the case starts; only a waiting step reads `.event`; chains between workflows end.

use std::collections::{BTreeMap, BTreeSet};

use super::values::{expression, template};
use crate::workflow::diagnostic::{Diagnostic, code, did_you_mean};
use crate::workflow::expr::Expr;
use crate::workflow::source::Located;
use crate::workflow::spec::{StepSpec, WorkflowSpec};

pub(super) fn triggers(
    file: &str,
    located: &Located,
    spec: &WorkflowSpec,
    out: &mut Vec<Diagnostic>,
) {
    for (i, trigger) in spec.on.iter().enumerate() {
        let at = format!("/on/{i}");
        match (&trigger.event, &trigger.case) {
            (Some(_), Some(_)) | (None, None) => out.push(
                Diagnostic::new(
                    file,
                    located.value_pos(&at),
                    code::TRIGGER,
                    "a trigger follows one thing: an `event` or a `case`",
                )
                .help("write one trigger per event type or workflow"),
            ),
            (Some(event), None) => {
                if let Some(key) = &event.key
                    && !spec.business_keys.contains_key(key)
                {
                    let mut d = Diagnostic::new(
                        file,
                        located.value_pos(&format!("{at}/event/key")),
                        code::TRIGGER,
                        format!("`{key}` is not a business key of this workflow"),
                    );
                    if let Some(m) =
                        did_you_mean(key, spec.business_keys.keys().map(String::as_str))
                    {
                        d = d.help(format!("did you mean `{m}`?"));
                    }
                    out.push(d);
                }
                if event.sources.iter().any(String::is_empty) {
                    out.push(
                        Diagnostic::new(
                            file,
                            located.value_pos(&format!("{at}/event/sources")),
                            code::TRIGGER,
                            "an empty source would take events from anyone",
                        )
                        .help("name the sources, e.g. `urn:vn:moh:hospital:`"),
                    );
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(when) = &trigger.when {
            expression(file, located, &format!("{at}/when"), when, out);
        }
        let exprs = template(file, located, &format!("{at}/with"), &trigger.with, out);
        for (pointer, e) in exprs {
            let root = if trigger.event.is_some() {
                "event"
            } else {
                "case"
            };
            if e.step_refs().dynamic && trigger.event.is_some() {
                out.push(Diagnostic::new(
                    file,
                    located.value_pos(&pointer),
                    code::TRIGGER,
                    format!(
                        "expression `{}` reads `.steps`, but an event has none: read `.{root}`",
                        e.source()
                    ),
                ));
            }
        }
    }
}

/// A waiting step's match, its time and what reads `.event`.
pub(super) fn wait_for(
    file: &str,
    located: &Located,
    i: usize,
    step: &StepSpec,
    exprs: &[(String, Expr)],
    out: &mut Vec<Diagnostic>,
) {
    let Some(wait) = &step.wait_for else {
        for (pointer, e) in exprs {
            if e.reads_root("event") {
                out.push(
                    Diagnostic::new(
                        file,
                        located.value_pos(pointer),
                        code::EVENT_NOT_AWAITED,
                        format!(
                            "step `{}` reads `.event`, but it waits for no event",
                            step.id
                        ),
                    )
                    .help("add `wait_for` to the step, or read the data from `.input`"),
                );
            }
        }
        return;
    };
    let at = format!("/steps/{i}/wait_for");
    expression(
        file,
        located,
        &format!("{at}/match/from"),
        &wait.matching.from,
        out,
    );
    if let Some(e) = expression(
        file,
        located,
        &format!("{at}/match/expect"),
        &wait.matching.expect,
        out,
    ) && (e.step_refs().dynamic || !e.step_refs().ids.is_empty() || e.reads_root("event"))
    {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(&format!("{at}/match/expect")),
                code::NOT_AN_ANCESTOR,
                "the expected value reads more than the input, but a case is found by it from its start (an event may come before the step waits)",
            )
            .help("read the expected value from `.input` only"),
        );
    }
    if crate::workflow::deadline::working_days(&wait.within).is_none_or(|n| n == 0) {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(&format!("{at}/within")),
                code::DURATION,
                format!(
                    "`{}` is not a wait of at least one working day",
                    wait.within
                ),
            )
            .help("write `<n> working days`, e.g. `5 working days`"),
        );
    }
    if let Some(keep) = &wait.keep_early
        && crate::workflow::deadline::working_days(keep).is_none_or(|n| n == 0)
    {
        out.push(Diagnostic::new(
            file,
            located.value_pos(&format!("{at}/keep_early")),
            code::DURATION,
            format!("`{keep}` is not a time of at least one working day"),
        ));
    }
    if wait.sources.iter().any(String::is_empty) {
        out.push(Diagnostic::new(
            file,
            located.value_pos(&format!("{at}/sources")),
            code::TRIGGER,
            "an empty source would take events from anyone",
        ));
    }
}

/// What only the whole set can tell of chains: the workflow a chain follows is loaded, and no
/// chain leads back to where it started. A loop is reported once, at the trigger that closes
/// it in the first workflow of the loop by name.
pub fn chains<'a>(
    workflows: impl Iterator<Item = (&'a str, &'a WorkflowSpec, &'a Located)>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let all: Vec<_> = workflows.collect();
    let names: BTreeSet<&str> = all.iter().map(|(_, s, _)| s.name.as_str()).collect();
    // followed → its followers (the workflows whose trigger follows it)
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (file, spec, located) in &all {
        for (i, trigger) in spec.on.iter().enumerate() {
            let Some(case) = &trigger.case else { continue };
            if !names.contains(case.workflow.as_str()) {
                let mut d = Diagnostic::new(
                    file,
                    located.value_pos(&format!("/on/{i}/case/workflow")),
                    code::UNKNOWN_CHAIN,
                    format!(
                        "workflow `{}` is not loaded, so this chain would never start",
                        case.workflow
                    ),
                );
                if let Some(m) = did_you_mean(&case.workflow, names.iter().copied()) {
                    d = d.help(format!("did you mean `{m}`?"));
                }
                out.push(d);
                continue;
            }
            next.entry(case.workflow.as_str())
                .or_default()
                .insert(spec.name.as_str());
        }
    }
    let mut reported = BTreeSet::new();
    for (file, spec, located) in &all {
        for (i, trigger) in spec.on.iter().enumerate() {
            let Some(case) = &trigger.case else { continue };
            // This trigger runs `case.workflow` → `spec.name`: a loop if `spec.name` leads
            // back to `case.workflow`.
            let Some(path) = path(&next, &spec.name, &case.workflow) else {
                continue;
            };
            let mut members: Vec<&str> = path.clone();
            members.sort_unstable();
            members.dedup();
            if !reported.insert(members) {
                continue;
            }
            let shown = std::iter::once(case.workflow.as_str())
                .chain(path.iter().copied())
                .collect::<Vec<_>>()
                .join(" → ");
            out.push(
                Diagnostic::new(
                    file,
                    located.value_pos(&format!("/on/{i}/case/workflow")),
                    code::CHAIN_LOOP,
                    format!("this chain would start `{}` again: {shown}", case.workflow),
                )
                .help(
                    "a chain ends: start another workflow, or let an operator start the next case",
                ),
            );
        }
    }
    out
}

/// The workflows from `from` to `to` along chains (both included), if `to` can be reached.
fn path<'a>(
    next: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    from: &'a str,
    to: &str,
) -> Option<Vec<&'a str>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from]];
    while let Some(route) = stack.pop() {
        let last = *route.last().expect("a route is never empty");
        if last == to {
            return Some(route);
        }
        if !seen.insert(last) {
            continue;
        }
        for n in next.get(last).into_iter().flatten() {
            let mut longer = route.clone();
            longer.push(n);
            stack.push(longer);
        }
    }
    None
}
