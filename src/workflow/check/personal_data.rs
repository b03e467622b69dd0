//! Personal data passed to agencies (Law 91/2025/QH15): a step whose `with` sends an input field
//! marked `x-personal` declares the exchange (its purpose, its lawful basis, the fields), and a
//! workflow that takes personal data says how long it keeps it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::values::expression;
use crate::case::masking::Personal;
use crate::workflow::diagnostic::{Diagnostic, code};
use crate::workflow::expr::Expr;
use crate::workflow::source::Located;
use crate::workflow::spec::{StepSpec, WorkflowSpec};

/// The input fields whose schema marks anything in them personal, with what is.
pub(super) fn personal_fields(spec: &WorkflowSpec) -> BTreeMap<String, Personal> {
    let schema = Value::Object(spec.input_schema.clone().into_iter().collect());
    let whole = Personal::of_schema(&schema).is_whole();
    spec.input_schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let p = if whole {
                Personal::everything()
            } else {
                Personal::of_schema(s)
            };
            (name.clone(), p)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// A workflow that takes personal data keeps it for a stated time.
pub(super) fn retention(
    file: &str,
    located: &Located,
    spec: &WorkflowSpec,
    personal: &BTreeMap<String, Personal>,
    out: &mut Vec<Diagnostic>,
) {
    if spec.retention.is_none() && !personal.is_empty() {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/input_schema"),
                code::RETENTION,
                format!(
                    "the input holds personal data ({}), but the workflow says not how long it is kept",
                    list(personal.keys().map(String::as_str))
                ),
            )
            .help("add `retention: {after_end: <n> days, legal_basis: …}`: when it is up, the cases' personal data is erased"),
        );
    }
}

/// What step `i` sends of the personal input, against what its `exchange` declares.
pub(super) fn exchange(
    file: &str,
    located: &Located,
    i: usize,
    step: &StepSpec,
    with: &[(String, Expr)],
    personal: &BTreeMap<String, Personal>,
    out: &mut Vec<Diagnostic>,
) {
    let at = format!("/steps/{i}/exchange");
    let declared: BTreeSet<&str> = step
        .exchange
        .iter()
        .flat_map(|e| e.personal_data.iter().map(String::as_str))
        .collect();
    let mut undeclared = BTreeSet::new();
    let mut first = None;
    for (pointer, e) in with {
        let (paths, dynamic) = e.input_paths();
        let sent = personal.iter().filter(|(field, p)| {
            dynamic
                || paths
                    .iter()
                    .any(|path| path[0] == **field && p.reaches(&path[1..]))
        });
        for (field, _) in sent {
            if !declared.contains(field.as_str()) && undeclared.insert(field.as_str()) {
                first.get_or_insert(pointer);
            }
        }
    }
    if let Some(pointer) = first {
        let fields = list(undeclared.iter().copied());
        let help = if step.exchange.is_some() {
            format!("add {fields} to the step's `exchange.personal_data`")
        } else {
            format!(
                "declare the exchange: `exchange: {{purpose: …, lawful_basis: …, law: …, personal_data: [{}]}}`",
                undeclared.iter().copied().collect::<Vec<_>>().join(", ")
            )
        };
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::PERSONAL_DATA_UNDECLARED,
                format!(
                    "step `{}` sends personal data ({fields}) to its agency without declaring the exchange",
                    step.id
                ),
            )
            .help(help),
        );
    }
    let Some(exchange) = &step.exchange else {
        return;
    };
    let basis = exchange.lawful_basis.as_str();
    let mut refuse = |pointer: String, message: String, help: &str| {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(&pointer),
                code::LAWFUL_BASIS,
                message,
            )
            .help(help),
        );
    };
    for (j, field) in exchange.personal_data.iter().enumerate() {
        if !personal.contains_key(field) {
            refuse(
                format!("{at}/personal_data/{j}"),
                format!("`{field}` is not an input field marked personal"),
                "name the input fields marked `x-personal` that `with` sends",
            );
        }
    }
    match (&exchange.consent, exchange.basis_is_consent()) {
        (None, true) => refuse(
            format!("{at}/lawful_basis"),
            format!(
                "step `{}` exchanges personal data on consent, but names no consent",
                step.id
            ),
            "add `consent: {agreement: …, from: ${ .input.<personal id> }, within: <n> working days}`",
        ),
        (Some(_), false) => refuse(
            format!("{at}/consent"),
            format!(
                "step `{}` names a consent, but its basis is `{basis}`",
                step.id
            ),
            "use `lawful_basis: consent`, or remove `consent`",
        ),
        _ => {}
    }
    if !exchange.basis_is_consent() && exchange.law.as_deref().is_none_or(|l| l.trim().is_empty()) {
        refuse(
            format!("{at}/lawful_basis"),
            format!(
                "step `{}` exchanges personal data on `{basis}` without naming the law",
                step.id
            ),
            "add `law: <the law and article>`: a state agency processes without consent only where a law says so",
        );
    }
    if let Some(consent) = &exchange.consent {
        let pointer = format!("{at}/consent/from");
        if let Some(e) = expression(file, located, &pointer, &consent.from, out)
            && (e.step_refs().dynamic || !e.step_refs().ids.is_empty() || e.reads_root("event"))
        {
            out.push(
                Diagnostic::new(
                    file,
                    located.value_pos(&pointer),
                    code::LAWFUL_BASIS,
                    "whose consent it is reads more than the input, but a consent finds its cases from their start",
                )
                .help("read the personal ID of who consents from `.input` only"),
            );
        }
    }
}

fn list<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    fields
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
