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
    consequences(
        file,
        located,
        "",
        Terms {
            whose: "the case",
            deadline: spec.deadline.as_deref(),
            remind_before: spec.remind_before.as_deref(),
            on_breach: spec.on_breach.as_ref(),
            extension: spec.extension.as_ref(),
        },
        &mut out,
    );
    if let Some(life) = &spec.life_event {
        life_event(file, located, life, &mut out);
    }
    if let Some(s) = &spec.supplement {
        supplement(file, located, "/supplement", s, &mut out);
    }
    super::triggers::triggers(file, located, spec, &mut out);
    let personal = super::personal_data::personal_fields(spec);
    super::personal_data::retention(file, located, spec, &personal, &mut out);
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
        let with = template(file, located, &at("with"), &step.with, &mut out);
        super::personal_data::exchange(file, located, i, step, &with, &personal, &mut out);
        exprs.extend(with);
        super::triggers::wait_for(file, located, i, step, &exprs, &mut out);
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
        let adapter_deadline = adapter_spec(&step.adapter, adapters).map(|a| a.deadline.as_str());
        consequences(
            file,
            located,
            &format!("/steps/{i}"),
            Terms {
                whose: &format!("step `{}`", step.id),
                deadline: step.deadline.as_deref().or(adapter_deadline),
                remind_before: step.remind_before.as_deref(),
                on_breach: step.on_breach.as_ref(),
                extension: step.extension.as_ref(),
            },
            &mut out,
        );
        if let Some(silence) = &step.on_silence {
            on_silence(
                file,
                located,
                &at("on_silence"),
                &step.id,
                silence,
                &mut out,
            );
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

/// The deadline consequences of a step or of the whole case, as written.
struct Terms<'a> {
    /// `the case` or `` step `x` ``, for messages.
    whose: &'a str,
    /// The deadline in force: the step's own, or its adapter's.
    deadline: Option<&'a str>,
    remind_before: Option<&'a str>,
    on_breach: Option<&'a spec::BreachSpec>,
    extension: Option<&'a spec::ExtensionSpec>,
}

fn consequences(
    file: &str,
    located: &Located,
    at: &str,
    terms: Terms<'_>,
    out: &mut Vec<Diagnostic>,
) {
    use crate::workflow::deadline::{Deadline, working_days};
    let whose = terms.whose;
    if let Some(text) = terms.remind_before {
        let pointer = format!("{at}/remind_before");
        let pos = located.value_pos(&pointer);
        match (working_days(text), terms.deadline.and_then(Deadline::parse)) {
            (None, _) => out.push(
                Diagnostic::new(file, pos, code::DURATION, format!("`{text}` is not a time in working days"))
                    .help("write `<n> working days`, e.g. `1 working day`"),
            ),
            (Some(0), _) => out.push(
                Diagnostic::new(file, pos, code::REMINDER, format!("a reminder `{text}` before the due time is the due time itself"))
                    .help("remind at least `1 working day` before"),
            ),
            (Some(_), None) => out.push(
                Diagnostic::new(file, pos, code::REMINDER, format!("{whose} has no deadline to remind before"))
                    .help("give it a `deadline`, or remove `remind_before`"),
            ),
            (Some(_), Some(Deadline::Hours(_))) => out.push(
                Diagnostic::new(file, pos, code::REMINDER, format!("{whose}'s deadline is in hours; a reminder in working days cannot be placed before it"))
                    .help("give it a deadline in working days, or remove `remind_before`"),
            ),
            (Some(n), Some(Deadline::WorkingDays(d))) if n >= d => out.push(
                Diagnostic::new(file, pos, code::REMINDER, format!("{whose} may take {d} working day(s); a reminder {n} working day(s) before its due time would come at or before its start"))
                    .help(format!("remind fewer than {d} working day(s) before")),
            ),
            _ => {}
        }
    }
    if terms
        .on_breach
        .is_some_and(|b| b.escalate_to == spec::Party::Agency)
        && at.is_empty()
    {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/on_breach/escalate_to"),
                code::ESCALATION,
                "the case as a whole is at no one agency: it cannot be escalated to `agency`",
            )
            .help("escalate the case to `supervisor` or `operator`, and a step to its `agency`"),
        );
    }
    if let Some(e) = terms.extension {
        if let Some(text) = &e.at_most
            && working_days(text).is_none_or(|n| n == 0)
        {
            out.push(
                Diagnostic::new(
                    file,
                    located.value_pos(&format!("{at}/extension/at_most")),
                    code::DURATION,
                    format!("`{text}` is not a reach for a new date"),
                )
                .help("write `<n> working days`, at least 1"),
            );
        }
        if at.is_empty()
            && let Some(j) = e.granted_by.iter().position(|p| *p == spec::Party::Agency)
        {
            out.push(
                Diagnostic::new(
                    file,
                    located.value_pos(&format!("/extension/granted_by/{j}")),
                    code::ESCALATION,
                    "the case as a whole is at no one agency: `agency` cannot grant its extension",
                )
                .help("let an agency extend its own step, under the step's `extension`"),
            );
        }
    }
}

/// A deemed outcome is off unless a law gives silence that meaning: the basis is required, and
/// an approval needs the output later steps read.
fn on_silence(
    file: &str,
    located: &Located,
    pointer: &str,
    step: &str,
    silence: &spec::SilenceSpec,
    out: &mut Vec<Diagnostic>,
) {
    if silence
        .legal_basis
        .as_deref()
        .is_none_or(|b| b.trim().is_empty())
    {
        out.push(
            Diagnostic::new(
                file,
                located.key_pos(pointer),
                code::SILENCE_WITHOUT_LEGAL_BASIS,
                format!("step `{step}` gives the agency's silence a meaning without a `legal_basis`"),
            )
            .help("silence is neither approval nor refusal unless a law says so: cite the provision in `legal_basis`, or remove `on_silence`"),
        );
    }
    match (silence.outcome, &silence.output) {
        (spec::SilenceOutcome::Approved, None) => out.push(
            Diagnostic::new(
                file,
                located.key_pos(pointer),
                code::SILENCE_OUTPUT,
                format!("step `{step}` is deemed approved on silence, but gives no `output` for the steps that follow"),
            )
            .help("add `output:` as the adapter's output schema asks, mapped from the case data"),
        ),
        (spec::SilenceOutcome::Refused, Some(_)) => out.push(
            Diagnostic::new(
                file,
                located.value_pos(&format!("{pointer}/output")),
                code::SILENCE_OUTPUT,
                format!("step `{step}` is deemed refused on silence: a refusal has no `output`"),
            )
            .help("remove `output`"),
        ),
        (_, Some(output)) => {
            template(file, located, &format!("{pointer}/output"), output, out);
        }
        _ => {}
    }
}

/// The life event's date is read from the input alone, at the start, and its time limit is in
/// calendar days.
fn life_event(
    file: &str,
    located: &Located,
    life: &spec::LifeEventSpec,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(e) = expression(file, located, "/life_event/date", &life.date, out) {
        let refs = e.step_refs();
        if refs.dynamic || !refs.ids.is_empty() {
            out.push(
                Diagnostic::new(
                    file,
                    located.value_pos("/life_event/date"),
                    code::NOT_AN_ANCESTOR,
                    "the life event's date reads step data, but its tier is set when the case starts",
                )
                .help("read the date from `.input` only"),
            );
        }
    }
    if crate::workflow::deadline::calendar_days(&life.within).is_none() {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/life_event/within"),
                code::DURATION,
                format!("`{}` is not a time limit in days", life.within),
            )
            .help("write `<n> days`, calendar days as the law counts them, e.g. `60 days`"),
        );
    }
}

/// The citizen's time to supplement is at least a working day.
fn supplement(
    file: &str,
    located: &Located,
    pointer: &str,
    spec: &spec::SupplementSpec,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(text) = &spec.within
        && crate::workflow::deadline::working_days(text).is_none_or(|n| n == 0)
    {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(&format!("{pointer}/within")),
                code::DURATION,
                format!("`{text}` gives the citizen no time to supplement the dossier"),
            )
            .help("write `<n> working days`, at least 1"),
        );
    }
}

/// The adapter a step's reference names, if it is known.
fn adapter_spec<'a>(reference: &str, adapters: &'a AdapterIndex) -> Option<&'a AdapterSpec> {
    let (id, version) = reference.split_once('@')?;
    let versions = adapters.get(id)?;
    match version {
        LATEST => versions.values().next_back(),
        v => versions.get(&v.parse::<u32>().ok()?),
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
