//! The meaning of a workflow: its steps against the adapters they use, data flowing only from
//! steps a step needs, deadlines.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::graph::ancestry;
use super::values::{duration, expression, json_schema, retry, template};
use crate::workflow::diagnostic::{Diagnostic, code, did_you_mean};
use crate::workflow::source::{Located, escape};
use crate::workflow::spec::{self, AdapterSpec, WorkflowSpec};

/// Adapters known to a workflow check, by id then version.
pub type AdapterIndex = BTreeMap<String, BTreeMap<u32, AdapterSpec>>;

pub fn workflow(
    file: &str,
    spec: &WorkflowSpec,
    located: &Located,
    adapters: &AdapterIndex,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    json_schema(file, located, "/input_schema", &spec.input_schema, &mut out);
    if let Some(d) = &spec.deadline {
        deadline(file, located, "/deadline", d, &mut out);
    }
    for (name, text) in &spec.business_keys {
        let pointer = format!("/business_keys/{}", escape(name));
        if let Some(e) = expression(file, located, &pointer, text, &mut out) {
            let refs = e.step_refs();
            if refs.dynamic || !refs.ids.is_empty() {
                out.push(Diagnostic::new(file, located.value_pos(&pointer), code::NOT_AN_ANCESTOR, format!("business key `{name}` reads step data, but a case is indexed by its keys before any step runs"))
                    .help("build business keys from `.input` only"));
            }
        }
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        if let Some(first) = index.insert(step.id.as_str(), i) {
            index.insert(step.id.as_str(), first);
            out.push(
                Diagnostic::new(
                    file,
                    located.value_pos(&format!("/steps/{i}/id")),
                    code::DUPLICATE_STEP,
                    format!("step id `{}` is used twice", step.id),
                )
                .help(format!(
                    "the first is step {} (line {}); give each step its own id",
                    first + 1,
                    located.value_pos(&format!("/steps/{first}/id")).line
                )),
            );
        }
    }
    let mut needs_ok = true;
    for (i, step) in spec.steps.iter().enumerate() {
        for (j, need) in step.needs.iter().enumerate() {
            if !index.contains_key(need.as_str()) {
                needs_ok = false;
                let mut d = Diagnostic::new(
                    file,
                    located.value_pos(&format!("/steps/{i}/needs/{j}")),
                    code::UNKNOWN_NEED,
                    format!(
                        "step `{}` needs `{need}`, which is not a step of this workflow",
                        step.id
                    ),
                );
                if let Some(m) = did_you_mean(need, index.keys().copied()) {
                    d = d.help(format!("did you mean `{m}`?"));
                }
                out.push(d);
            } else if need == &step.id {
                needs_ok = false;
                out.push(Diagnostic::new(
                    file,
                    located.value_pos(&format!("/steps/{i}/needs/{j}")),
                    code::CYCLE,
                    format!("step `{}` needs itself", step.id),
                ));
            }
        }
    }
    let ancestors = if needs_ok {
        ancestry(file, spec, located, &index, &mut out)
    } else {
        None
    };
    for (i, step) in spec.steps.iter().enumerate() {
        let at = |field: &str| format!("/steps/{i}/{field}");
        let mut exprs = Vec::new();
        if let Some(c) = &step.condition
            && let Some(e) = expression(file, located, &at("if"), c, &mut out)
        {
            exprs.push((at("if"), e));
        }
        exprs.extend(template(file, located, &at("with"), &step.with, &mut out));
        if let Some(ancestors) = &ancestors {
            let mine = &ancestors[i];
            for (pointer, e) in &exprs {
                let refs = e.step_refs();
                if refs.dynamic {
                    out.push(Diagnostic::new(file, located.value_pos(pointer), code::DYNAMIC_STEPS, format!("expression `{}` reads `.steps` without naming a step", e.source()))
                        .help("name the step, as in `.steps.<id>.output`, so that civicflow can check it runs first"));
                }
                for id in refs.ids {
                    if !mine.contains(id.as_str()) {
                        let known = index.contains_key(id.as_str());
                        let mut d = Diagnostic::new(
                            file,
                            located.value_pos(pointer),
                            code::NOT_AN_ANCESTOR,
                            if known {
                                format!(
                                    "step `{}` reads `.steps.{id}`, but `{id}` is not among the steps it needs",
                                    step.id
                                )
                            } else {
                                format!(
                                    "step `{}` reads `.steps.{id}`, but there is no step `{id}`",
                                    step.id
                                )
                            },
                        );
                        d = if known {
                            d.help(format!("add `{id}` to `needs` of `{}`", step.id))
                        } else if let Some(m) = did_you_mean(&id, index.keys().copied()) {
                            d.help(format!("did you mean `{m}`?"))
                        } else {
                            d
                        };
                        out.push(d);
                    }
                }
            }
        }
        if let Some(d) = &step.deadline {
            deadline(file, located, &at("deadline"), d, &mut out);
            beyond_case(file, located, &at("deadline"), &step.id, d, spec, &mut out);
        }
        if let Some(t) = &step.timeout {
            duration(file, located, &at("timeout"), t, &mut out);
        }
        if let Some(r) = &step.retry {
            retry(file, located, &at("retry"), r, &mut out);
        }
        adapter_ref(
            file,
            located,
            &at("adapter"),
            &at("with"),
            step,
            adapters,
            &mut out,
        );
    }
    out
}

fn deadline(file: &str, located: &Located, pointer: &str, text: &str, out: &mut Vec<Diagnostic>) {
    if crate::workflow::deadline::Deadline::parse(text).is_none() {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::DURATION,
                format!("`{text}` is not a deadline"),
            )
            .help("write `<n> working days` or `<n> hours`"),
        );
    }
}

/// A step's own deadline longer than its whole case's (in the same unit): the case would be
/// late whenever the step takes the time it is allowed, so the definition contradicts itself.
fn beyond_case(
    file: &str,
    located: &Located,
    pointer: &str,
    step: &str,
    text: &str,
    spec: &WorkflowSpec,
    out: &mut Vec<Diagnostic>,
) {
    use crate::workflow::deadline::Deadline;
    let case = spec.deadline.as_deref().and_then(Deadline::parse);
    let longer = match (Deadline::parse(text), case) {
        (Some(Deadline::WorkingDays(s)), Some(Deadline::WorkingDays(c))) => s > c,
        (Some(Deadline::Hours(s)), Some(Deadline::Hours(c))) => s > c,
        _ => false,
    };
    if let (true, Some(case)) = (longer, case) {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::DEADLINE_BEYOND_CASE,
                format!(
                    "step `{step}` may take {text}, longer than the whole case's deadline ({case}): the case would be late whenever the step takes its time"
                ),
            )
            .help("shorten the step's deadline, or lengthen the case's"),
        );
    }
}

/// The version of a reference that follows the newest one.
pub const LATEST: &str = "latest";

fn adapter_ref(
    file: &str,
    located: &Located,
    pointer: &str,
    with_pointer: &str,
    step: &spec::StepSpec,
    adapters: &AdapterIndex,
    out: &mut Vec<Diagnostic>,
) {
    let Some((id, version)) = step.adapter.split_once('@') else {
        return;
    };
    let Some(versions) = adapters.get(id) else {
        let mut d = Diagnostic::new(
            file,
            located.value_pos(pointer),
            code::UNKNOWN_ADAPTER,
            format!("no adapter `{id}` is registered"),
        );
        if let Some(m) = did_you_mean(id, adapters.keys().map(String::as_str)) {
            d = d.help(format!("did you mean `{m}`?"));
        }
        out.push(d);
        return;
    };
    let version = match version {
        LATEST => versions.keys().next_back().copied(),
        v => v.parse::<u32>().ok(),
    };
    let Some(version) = version else {
        return;
    };
    let Some(adapter) = versions.get(&version) else {
        let known: Vec<String> = versions.keys().map(|v| v.to_string()).collect();
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::UNKNOWN_ADAPTER_VERSION,
                format!("adapter `{id}` has no version {version}"),
            )
            .help(format!("registered versions: {}", known.join(", "))),
        );
        return;
    };
    let schema = Value::Object(adapter.input_schema.clone().into_iter().collect());
    missing_inputs(
        file,
        located,
        with_pointer,
        &step.with,
        &schema,
        &step.adapter,
        out,
    );
}

/// Reports fields the adapter's input schema requires that a literal `with` object leaves out.
fn missing_inputs(
    file: &str,
    located: &Located,
    pointer: &str,
    with: &Value,
    schema: &Value,
    adapter: &str,
    out: &mut Vec<Diagnostic>,
) {
    let Value::Object(given) = with else { return };
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        match given.get(name) {
            None => {
                let field = format!("{}/{name}", pointer.rsplit('/').next().unwrap_or("with"));
                out.push(
                    Diagnostic::new(
                        file,
                        located.key_pos(pointer),
                        code::MISSING_INPUT,
                        format!(
                            "`{field}` is missing: {adapter} requires `{name}`",
                            field = field.replace('/', ".")
                        ),
                    )
                    .help(format!(
                        "add `{name}:` under this `with`, mapped from the case data"
                    )),
                );
            }
            Some(nested @ Value::Object(_)) => {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(name)) {
                    missing_inputs(
                        file,
                        located,
                        &format!("{pointer}/{}", escape(name)),
                        nested,
                        sub,
                        adapter,
                        out,
                    );
                }
            }
            Some(_) => {}
        }
    }
}
