//! Checks of the values a definition writes inside its fields.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::workflow::diagnostic::{Diagnostic, code};
use crate::workflow::expr::{self, Expr};
use crate::workflow::source::{Located, escape};
use crate::workflow::spec::RetrySpec;

pub(super) fn article(kind: &str) -> String {
    let an = kind.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {kind}", if an { "an" } else { "a" })
}

/// Compiles an expression written `${ … }`, reporting at `pointer`.
pub(super) fn expression(
    file: &str,
    located: &Located,
    pointer: &str,
    text: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Expr> {
    let Some(inner) = expr::inner(text) else {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::EXPRESSION,
                format!("`{text}` is not an expression"),
            )
            .help("write an expression as `${ <jq> }`"),
        );
        return None;
    };
    match Expr::compile(inner) {
        Ok(e) => Some(e),
        Err(message) => {
            out.push(Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::EXPRESSION,
                format!("expression `{inner}` does not compile: {message}"),
            ));
            None
        }
    }
}

/// Compiles every `${ … }` string inside a template value.
pub(super) fn template(
    file: &str,
    located: &Located,
    pointer: &str,
    value: &Value,
    out: &mut Vec<Diagnostic>,
) -> Vec<(String, Expr)> {
    let mut found = Vec::new();
    match value {
        Value::String(s) if expr::inner(s).is_some() => {
            if let Some(e) = expression(file, located, pointer, s, out) {
                found.push((pointer.to_owned(), e));
            }
        }
        Value::String(s) if s.contains("${") => out.push(
            Diagnostic::new(file, located.value_pos(pointer), code::PARTIAL_EXPRESSION, "`${` inside a longer string is not an expression")
                .help(r#"make the whole string one expression, using jq string interpolation: `${ "text \(.input.x)" }`"#),
        ),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                found.extend(template(file, located, &format!("{pointer}/{i}"), item, out));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                found.extend(template(file, located, &format!("{pointer}/{}", escape(k)), v, out));
            }
        }
        _ => {}
    }
    found
}

pub(super) fn duration(
    file: &str,
    located: &Located,
    pointer: &str,
    text: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<jiff::SignedDuration> {
    match text.parse::<jiff::SignedDuration>() {
        Ok(d) if d.is_positive() => Some(d),
        _ => {
            out.push(Diagnostic::new(
                file,
                located.value_pos(pointer),
                code::DURATION,
                format!("`{text}` is not a positive duration"),
            ));
            None
        }
    }
}

pub(super) fn retry(
    file: &str,
    located: &Located,
    pointer: &str,
    policy: &RetrySpec,
    out: &mut Vec<Diagnostic>,
) {
    let initial = duration(
        file,
        located,
        &format!("{pointer}/initial_interval"),
        &policy.initial_interval,
        out,
    );
    let max = duration(
        file,
        located,
        &format!("{pointer}/max_interval"),
        &policy.max_interval,
        out,
    );
    duration(
        file,
        located,
        &format!("{pointer}/max_duration"),
        &policy.max_duration,
        out,
    );
    if let (Some(i), Some(m)) = (initial, max)
        && i > m
    {
        out.push(Diagnostic::new(
            file,
            located.value_pos(&format!("{pointer}/initial_interval")),
            code::DURATION,
            format!(
                "initial_interval ({}) is longer than max_interval ({})",
                policy.initial_interval, policy.max_interval
            ),
        ));
    }
}

pub(super) fn json_schema(
    file: &str,
    located: &Located,
    pointer: &str,
    schema: &BTreeMap<String, Value>,
    out: &mut Vec<Diagnostic>,
) {
    let document = Value::Object(schema.clone().into_iter().collect());
    if let Err(e) = jsonschema::validator_for(&document) {
        let inner = e.instance_path().to_string();
        let at = format!("{pointer}{inner}");
        let message = if inner.ends_with("/type") || inner == "/type" {
            format!(
                "not a valid JSON Schema: {} is not a JSON Schema type",
                e.instance()
            )
        } else if inner.is_empty() {
            format!("not a valid JSON Schema: {e}")
        } else {
            let field = inner.trim_start_matches('/').replace('/', ".");
            format!("not a valid JSON Schema: at `{field}`, {e}")
        };
        let mut d = Diagnostic::new(file, located.value_pos(&at), code::JSON_SCHEMA, message);
        if inner.ends_with("/type") {
            d = d.help("the types are array, boolean, integer, null, number, object and string");
        }
        out.push(d);
    }
}
