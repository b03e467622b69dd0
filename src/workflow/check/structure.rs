//! The YAML and structure stages: a file read within limits, then checked against the JSON
//! Schema of its kind.

use std::sync::OnceLock;

use serde_json::Value;

use super::values::article;
use crate::workflow::diagnostic::{Diagnostic, code, did_you_mean};
use crate::workflow::source::{self, Located, escape};
use crate::workflow::spec::{self, AdapterSpec, PATTERN_HELP, WorkflowSpec};

/// A definition file that passed the YAML and structure stages.
#[derive(Debug, Clone)]
pub enum Parsed {
    Workflow(Box<WorkflowSpec>, Located),
    Adapter(Box<AdapterSpec>, Located),
}

/// Reads one file's text as a workflow or an adapter, by its `kind`.
pub fn parse_file(file: &str, text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    let located = source::parse(text).map_err(|e| {
        let c = if e.limit {
            code::INPUT_LIMIT
        } else {
            code::YAML_SYNTAX
        };
        vec![Diagnostic::new(file, e.pos, c, e.message)]
    })?;
    let kind = located
        .value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (schema, is_workflow) = match kind.as_deref() {
        Some("workflow") => (schemas().0, true),
        Some("adapter") => (schemas().1, false),
        other => {
            let pos = if other.is_some() {
                located.value_pos("/kind")
            } else {
                located.value_pos("")
            };
            let found = other.map_or("no `kind`".to_owned(), |k| format!("`kind: {k}`"));
            return Err(vec![
                Diagnostic::new(
                    file,
                    pos,
                    code::UNKNOWN_KIND,
                    format!("{found}: a definition file is a workflow or an adapter"),
                )
                .help("start the file with `kind: workflow` or `kind: adapter`"),
            ]);
        }
    };
    let problems = structure(file, &located, schema);
    if !problems.is_empty() {
        return Err(problems);
    }
    let value = located.value.clone();
    let parsed = if is_workflow {
        serde_json::from_value(value).map(|s| Parsed::Workflow(Box::new(s), located.clone()))
    } else {
        serde_json::from_value(value).map(|s| Parsed::Adapter(Box::new(s), located.clone()))
    };
    parsed.map_err(|e| {
        vec![Diagnostic::new(
            file,
            located.value_pos(""),
            code::INVALID_VALUE,
            e.to_string(),
        )]
    })
}

struct Schema {
    document: Value,
    validator: jsonschema::Validator,
}

fn schemas() -> (&'static Schema, &'static Schema) {
    static SCHEMAS: OnceLock<(Schema, Schema)> = OnceLock::new();
    let (w, a) = SCHEMAS.get_or_init(|| {
        let build = |document: Value| {
            let validator =
                jsonschema::validator_for(&document).expect("generated schemas are valid");
            Schema {
                document,
                validator,
            }
        };
        (
            build(spec::workflow_schema()),
            build(spec::adapter_schema()),
        )
    });
    (w, a)
}

/// The names a schema node allows, following `$ref`s within the document.
fn property_names(schema: &Value, node_path: &str) -> Vec<String> {
    let mut node = schema.pointer(node_path).unwrap_or(&Value::Null);
    for _ in 0..8 {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                node = schema
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or(&Value::Null)
            }
            None => break,
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn structure(file: &str, located: &Located, schema: &Schema) -> Vec<Diagnostic> {
    use jsonschema::error::ValidationErrorKind as K;
    let mut out = Vec::new();
    for error in schema.validator.iter_errors(&located.value) {
        let at = error.instance_path().to_string();
        let field = if at.is_empty() {
            "the file".to_owned()
        } else {
            format!("`{}`", at.trim_start_matches('/').replace('/', "."))
        };
        match error.kind() {
            K::AdditionalProperties { unexpected } => {
                let schema_path = error.schema_path().to_string();
                let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
                let known = property_names(&schema.document, parent);
                for name in unexpected {
                    let pointer = format!("{at}/{}", escape(name));
                    let mut d = Diagnostic::new(
                        file,
                        located.key_pos(&pointer),
                        code::UNKNOWN_FIELD,
                        format!("unknown field `{name}`"),
                    );
                    d = match did_you_mean(name, known.iter().map(String::as_str)) {
                        Some(m) => d.help(format!("did you mean `{m}`?")),
                        None => d.help(format!("expected one of: {}", known.join(", "))),
                    };
                    out.push(d);
                }
            }
            K::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.push(Diagnostic::new(
                    file,
                    located.value_pos(&at),
                    code::MISSING_FIELD,
                    format!(
                        "missing field `{name}` in {}",
                        if at.is_empty() {
                            "the file".to_owned()
                        } else {
                            field
                        }
                    ),
                ));
            }
            K::Type { kind } => {
                let want = match kind {
                    jsonschema::error::TypeKind::Single(t) => t.to_string(),
                    jsonschema::error::TypeKind::Multiple(ts) => ts
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                out.push(Diagnostic::new(
                    file,
                    located.value_pos(&at),
                    code::WRONG_TYPE,
                    format!("{field} must be {}", article(&want)),
                ));
            }
            K::Enum { options } => {
                let options: Vec<String> = options
                    .as_array()
                    .map(|o| o.iter().map(|v| v.to_string()).collect())
                    .unwrap_or_default();
                out.push(Diagnostic::new(
                    file,
                    located.value_pos(&at),
                    code::INVALID_VALUE,
                    format!(
                        "{field} is {}, not one of {}",
                        error.instance(),
                        options.join(", ")
                    ),
                ));
            }
            K::OneOfNotValid { context } | K::AnyOf { context } => {
                let constants: Option<Vec<String>> = context
                    .iter()
                    .map(|errors| match errors.as_slice() {
                        [e] => match e.kind() {
                            K::Constant { expected_value } => Some(expected_value.to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                let message = match &constants {
                    Some(options) => format!(
                        "{field} is {}, not one of {}",
                        error.instance(),
                        options.join(", ")
                    ),
                    None => format!("{field}: {error}"),
                };
                let mut d =
                    Diagnostic::new(file, located.value_pos(&at), code::INVALID_VALUE, message);
                if let (Some(options), Some(found)) = (&constants, error.instance().as_str()) {
                    let quoted = format!("{found:?}");
                    if let Some(m) = did_you_mean(&quoted, options.iter().map(String::as_str)) {
                        d = d.help(format!("did you mean {m}?"));
                    }
                }
                out.push(d);
            }
            K::MinItems { limit } => out.push(Diagnostic::new(
                file,
                located.value_pos(&at),
                code::INVALID_VALUE,
                format!("{field} needs at least {limit} item{}", plural(*limit)),
            )),
            K::Minimum { limit } => out.push(Diagnostic::new(
                file,
                located.value_pos(&at),
                code::INVALID_VALUE,
                format!(
                    "{field} is {}, but must be at least {limit}",
                    error.instance()
                ),
            )),
            K::Pattern { pattern } => {
                let help = PATTERN_HELP
                    .iter()
                    .find(|(p, _)| p == pattern)
                    .map(|(_, h)| *h);
                let mut d = Diagnostic::new(
                    file,
                    located.value_pos(&at),
                    code::INVALID_VALUE,
                    format!("{field} is {}, which is not valid here", error.instance()),
                );
                if let Some(h) = help {
                    d = d.help(h);
                }
                out.push(d);
            }
            _ => out.push(Diagnostic::new(
                file,
                located.value_pos(&at),
                code::INVALID_VALUE,
                format!("{field}: {error}"),
            )),
        }
    }
    out
}

pub(super) fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
