//! A compiled expression: jq through `jaq`, without impure filters, its fast path when it has
//! one, and the errors it gives.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use jaq_core::load::parse::Term;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::path::Part as PathPart;
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;
use serde_json::Value;

use super::fast::{Fast, to_json};
use super::input::Input;
use super::step_refs::{literal, paths, visit, walk};

pub(super) type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Filters that read the clock, the environment or standard input, or write to logs.
pub(super) const IMPURE: &[&str] = &[
    "now",
    "env",
    "input",
    "inputs",
    "debug",
    "stderr",
    "input_filename",
];

/// A compiled expression.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    filter: Arc<Filter>,
    pub(super) fast: Option<Arc<Fast>>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{ {} }}", self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("expression `{expr}` failed: {message}")]
    Failed { expr: String, message: String },
    #[error("the expressions' input cannot be read: {message}")]
    Input { message: String },
    #[error("expression `{expr}` produced no value")]
    NoValue { expr: String },
    #[error("expression `{expr}` produced a value that is not JSON: {value}")]
    NotJson { expr: String, value: String },
}

/// The steps (or input fields) an expression reads: `.steps.<id>` with a literal id, and
/// whether it reads `.steps` in any way that cannot be resolved statically.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StepRefs {
    pub ids: BTreeSet<String>,
    pub dynamic: bool,
}

/// Splits `${ … }` into its inner jq text; `None` when the string is not an expression.
pub fn inner(text: &str) -> Option<&str> {
    let t = text.trim();
    t.strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .map(str::trim)
}

impl Expr {
    /// Compiles a jq program (the text inside `${ }`).
    pub fn compile(source: &str) -> Result<Expr, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !IMPURE.contains(name));
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|errors| describe_load(source, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let names: Vec<String> = errors
                    .into_iter()
                    .flat_map(|(_, errs)| errs.into_iter().map(|(name, _)| format!("`{name}`")))
                    .collect();
                format!("unknown function or variable {}", names.join(", "))
            })?;
        let fast = jaq_core::load::parse(source, |p| p.term())
            .as_ref()
            .and_then(Fast::of)
            .map(Arc::new);
        Ok(Expr {
            source: source.into(),
            filter: Arc::new(filter),
            fast,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression on `context` and returns its first value.
    pub fn eval(&self, context: &Value) -> Result<Value, EvalError> {
        self.eval_in(&Input::new(context))
    }

    /// Evaluates on an input shared by several expressions (a template's leaves, a reply's
    /// rules).
    pub fn eval_in(&self, input: &Input) -> Result<Value, EvalError> {
        if let Some(value) = self.fast.as_ref().and_then(|f| f.eval(input)) {
            return Ok(value);
        }
        self.eval_jq(input)
    }

    /// jq's first output on the input, `None` if it gives none.
    pub(super) fn first_output(&self, input: &Input) -> Result<Option<jaq_json::ValR>, EvalError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = self
            .filter
            .id
            .run((ctx, input.val()?.clone()))
            .map(jaq_core::unwrap_valr);
        Ok(out.next())
    }

    pub(super) fn eval_jq(&self, input: &Input) -> Result<Value, EvalError> {
        match self.first_output(input)? {
            None => Err(EvalError::NoValue {
                expr: self.source.to_string(),
            }),
            Some(Err(e)) => Err(self.failed(e.to_string())),
            Some(Ok(val)) => to_json(&val).map_or_else(
                || {
                    let text = val.to_string();
                    serde_json::from_str(&text).map_err(|_| EvalError::NotJson {
                        expr: self.source.to_string(),
                        value: text,
                    })
                },
                Ok,
            ),
        }
    }

    /// Evaluates a condition with jq's truthiness: `false`, `null` and no value are false.
    pub fn eval_bool(&self, context: &Value) -> Result<bool, EvalError> {
        self.eval_bool_in(&Input::new(context))
    }

    pub fn eval_bool_in(&self, input: &Input) -> Result<bool, EvalError> {
        match self.eval_in(input) {
            Ok(v) => Ok(!matches!(v, Value::Null | Value::Bool(false))),
            Err(EvalError::NoValue { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(super) fn failed(&self, message: String) -> EvalError {
        EvalError::Failed {
            expr: self.source.to_string(),
            message,
        }
    }

    /// Which steps' data the expression reads, found in its syntax tree.
    pub fn step_refs(&self) -> StepRefs {
        self.refs_under("steps")
    }

    /// The key paths of the case's input the expression reads (`.input.child.full_name` is
    /// `[child, full_name]`), and whether it reads `.input` in a way that may reach any part.
    pub fn input_paths(&self) -> (Vec<Vec<String>>, bool) {
        jaq_core::load::parse(&self.source, |p| p.term())
            .map(|term| paths(&term, "input"))
            .unwrap_or_default()
    }

    fn refs_under(&self, root: &str) -> StepRefs {
        let mut refs = StepRefs::default();
        if let Some(term) = jaq_core::load::parse(&self.source, |p| p.term()) {
            walk(&term, root, &mut refs);
        }
        refs
    }

    /// Whether the expression reads `.<root>` at all (e.g. `callback`).
    pub fn reads_root(&self, root: &str) -> bool {
        let mut found = false;
        if let Some(term) = jaq_core::load::parse(&self.source, |p| p.term()) {
            visit(&term, &mut |t| {
                if let Term::Path(base, path) = t
                    && matches!(**base, Term::Id)
                    && let Some((PathPart::Index(Term::Str(None, parts)), _)) = path.0.first()
                    && literal(parts) == Some(root)
                {
                    found = true;
                }
            });
        }
        found
    }
}

pub(super) fn describe_load(source: &str, errors: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error;
    let mut messages = Vec::new();
    for (_, error) in errors {
        match error {
            Error::Io(errs) => messages.extend(errs.into_iter().map(|(_, e)| e)),
            Error::Lex(errs) => {
                for (expected, rest) in errs {
                    messages.push(format!(
                        "expected {} at offset {}",
                        expected.as_str(),
                        offset(source, rest)
                    ));
                }
            }
            Error::Parse(errs) => {
                for (expected, found) in errs {
                    let found = if found.is_empty() {
                        "the end".to_owned()
                    } else {
                        format!("`{found}`")
                    };
                    messages.push(format!("expected {}, found {found}", expected.as_str()));
                }
            }
        }
    }
    if messages.is_empty() {
        "invalid jq".to_owned()
    } else {
        messages.join("; ")
    }
}

pub(super) fn offset(source: &str, rest: &str) -> usize {
    source.len().saturating_sub(rest.len())
}
