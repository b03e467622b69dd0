//! Checking definition files: every problem in every file, located, not just the first.
//!
//! A file goes through three stages: YAML (syntax and input limits), structure (the JSON Schema
//! generated from [`crate::workflow::spec`], which also drives editor completion), and meaning
//! (references between steps and adapters, expressions, the step DAG). A stage runs only when the
//! one before found nothing, so one mistake gives one message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde_json::Value;

use crate::workflow::diagnostic::{Diagnostic, code, did_you_mean};
use crate::workflow::expr::{self, Expr};
use crate::workflow::source::{self, Located, escape};
use crate::workflow::spec::{
    self, AdapterSpec, Mode, OutcomesSpec, PATTERN_HELP, RetrySpec, WorkflowSpec,
};

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

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn article(kind: &str) -> String {
    let an = kind.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {kind}", if an { "an" } else { "a" })
}

/// Adapters known to a workflow check, by id then version.
pub type AdapterIndex = BTreeMap<String, BTreeMap<u32, AdapterSpec>>;

/// Compiles an expression written `${ … }`, reporting at `pointer`.
fn expression(
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
fn template(
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

fn duration(
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

fn retry(
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

fn json_schema(
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

/// Checks the meaning of an adapter manifest.
pub fn adapter(file: &str, spec: &AdapterSpec, located: &Located) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let owner = spec.id.split('/').next().unwrap_or_default();
    if owner != spec.agency {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/agency"),
                code::AGENCY_MISMATCH,
                format!(
                    "adapter `{}` belongs to agency `{owner}`, not `{}`",
                    spec.id, spec.agency
                ),
            )
            .help("an adapter's id starts with its agency: `agency/name`"),
        );
    }
    json_schema(file, located, "/input_schema", &spec.input_schema, &mut out);
    json_schema(
        file,
        located,
        "/output_schema",
        &spec.output_schema,
        &mut out,
    );
    let path_value = Value::String(spec.request.path.clone());
    let mut request_exprs = template(file, located, "/request/path", &path_value, &mut out);
    for (name, value) in &spec.request.headers {
        request_exprs.extend(template(
            file,
            located,
            &format!("/request/headers/{}", escape(name)),
            &Value::String(value.clone()),
            &mut out,
        ));
    }
    if let Some(body) = &spec.request.body {
        request_exprs.extend(template(file, located, "/request/body", body, &mut out));
    }
    outcomes(file, located, "/reply", &spec.reply, &mut out);
    duration(file, located, "/timeout", &spec.timeout, &mut out);
    retry(file, located, "/retry", &spec.retry, &mut out);
    let completion = &spec.completion;
    let wants_pending = completion.mode != Mode::Sync;
    if wants_pending && spec.reply.pending.is_none() {
        out.push(
            Diagnostic::new(file, located.value_pos("/reply"), code::COMPLETION, format!("a `{:?}` adapter needs `reply.pending`: how civicflow recognises that the agency took the request in", completion.mode).to_lowercase())
                .help("add `pending: { when: ${ .status == 202 } }` under `reply`"),
        );
    }
    if !wants_pending && spec.reply.pending.is_some() {
        out.push(
            Diagnostic::new(
                file,
                located.value_pos("/reply/pending"),
                code::COMPLETION,
                "a `sync` adapter has no pending replies: its reply is the result",
            )
            .help("remove `reply.pending`, or set `completion.mode` to `callback` or `poll`"),
        );
    }
    match completion.mode {
        Mode::Sync => {
            for (section, present) in [("callback", completion.callback.is_some()), ("poll", completion.poll.is_some())] {
                if present {
                    out.push(Diagnostic::new(file, located.key_pos(&format!("/completion/{section}")), code::COMPLETION, format!("`completion.{section}` has no meaning for a `sync` adapter")));
                }
            }
        }
        Mode::Callback => {
            match &completion.callback {
                Some(rules) => outcomes(file, located, "/completion/callback", rules, &mut out),
                None => out.push(Diagnostic::new(file, located.value_pos("/completion"), code::COMPLETION, "a `callback` adapter needs `completion.callback`: how the agency's callback is classified")),
            }
            if !request_exprs.iter().any(|(_, e)| e.reads_root("callback")) {
                out.push(
                    Diagnostic::new(file, located.value_pos("/request"), code::COMPLETION, "a `callback` adapter must tell the agency where to call back, but the request never uses `.callback.url`")
                        .help("put `${ .callback.url }` in the request body or a header"),
                );
            }
        }
        Mode::Poll => match &completion.poll {
            Some(poll) => {
                expression(file, located, "/completion/poll/url", &poll.url, &mut out);
                duration(file, located, "/completion/poll/interval", &poll.interval, &mut out);
                outcomes(file, located, "/completion/poll/reply", &poll.reply, &mut out);
                if poll.reply.pending.is_none() {
                    out.push(Diagnostic::new(file, located.value_pos("/completion/poll/reply"), code::COMPLETION, "polling needs `completion.poll.reply.pending`: how a status reply says \"not yet\""));
                }
            }
            None => out.push(Diagnostic::new(file, located.value_pos("/completion"), code::COMPLETION, "a `poll` adapter needs `completion.poll`: the status URL, the interval and how status replies are classified")),
        },
    }
    out
}

fn outcomes(
    file: &str,
    located: &Located,
    pointer: &str,
    rules: &OutcomesSpec,
    out: &mut Vec<Diagnostic>,
) {
    expression(
        file,
        located,
        &format!("{pointer}/success/when"),
        &rules.success.when,
        out,
    );
    template(
        file,
        located,
        &format!("{pointer}/success/output"),
        &rules.success.output,
        out,
    );
    if let Some(r) = &rules.rejection {
        expression(
            file,
            located,
            &format!("{pointer}/rejection/when"),
            &r.when,
            out,
        );
        expression(
            file,
            located,
            &format!("{pointer}/rejection/reason_code"),
            &r.reason_code,
            out,
        );
        expression(
            file,
            located,
            &format!("{pointer}/rejection/message"),
            &r.message,
            out,
        );
    }
    if let Some(p) = &rules.pending {
        expression(
            file,
            located,
            &format!("{pointer}/pending/when"),
            &p.when,
            out,
        );
    }
}

/// Checks the meaning of a workflow against the adapters it may use.
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

/// Each step's transitive `needs`; reports cycles and returns `None` when there is one.
fn ancestry(
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
