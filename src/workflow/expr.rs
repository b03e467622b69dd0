//! Expressions: jq, through `jaq`, the expression language of the CNCF Serverless Workflow
//! standard. An expression is written `${ <jq> }`; its input (`.`) is a JSON context object whose
//! shape depends on where it appears (see `docs/workflow-language.md`).
//!
//! Functions that would make evaluation depend on anything but its input (`now`, `env`, `input`,
//! `debug`, …) are not available: an expression must give the same answer when a case is
//! replayed after a crash.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use jaq_core::load::parse::Term;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::path::Part;
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::Filter<data::JustLut<Val>>;

/// Filters that read the clock, the environment or standard input, or write to logs.
const IMPURE: &[&str] = &[
    "now",
    "env",
    "input",
    "inputs",
    "debug",
    "stderr",
    "input_filename",
];

/// The input of expressions, converted from JSON once however many expressions read it.
pub struct Input(Val);

impl Input {
    pub fn new(context: &Value) -> Result<Input, EvalError> {
        serde_json::from_value(context.clone())
            .map(Input)
            .map_err(|e| EvalError::Input {
                message: e.to_string(),
            })
    }
}

/// A compiled expression.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    filter: Arc<Filter>,
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

/// The steps an expression reads: `.steps.<id>` with a literal id, and whether it reads
/// `.steps` in any way that cannot be resolved statically.
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
        Ok(Expr {
            source: source.into(),
            filter: Arc::new(filter),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression on `context` and returns its first value.
    pub fn eval(&self, context: &Value) -> Result<Value, EvalError> {
        self.eval_in(&Input::new(context)?)
    }

    /// Evaluates on an input converted once for several expressions (a template's leaves, a
    /// reply's rules).
    pub fn eval_in(&self, input: &Input) -> Result<Value, EvalError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = self
            .filter
            .id
            .run((ctx, input.0.clone()))
            .map(jaq_core::unwrap_valr);
        match out.next() {
            None => Err(EvalError::NoValue {
                expr: self.source.to_string(),
            }),
            Some(Err(e)) => Err(self.failed(e.to_string())),
            Some(Ok(val)) => {
                let text = val.to_string();
                serde_json::from_str(&text).map_err(|_| EvalError::NotJson {
                    expr: self.source.to_string(),
                    value: text,
                })
            }
        }
    }

    /// Evaluates a condition with jq's truthiness: `false`, `null` and no value are false.
    pub fn eval_bool(&self, context: &Value) -> Result<bool, EvalError> {
        self.eval_bool_in(&Input::new(context)?)
    }

    pub fn eval_bool_in(&self, input: &Input) -> Result<bool, EvalError> {
        match self.eval_in(input) {
            Ok(v) => Ok(!matches!(v, Value::Null | Value::Bool(false))),
            Err(EvalError::NoValue { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn failed(&self, message: String) -> EvalError {
        EvalError::Failed {
            expr: self.source.to_string(),
            message,
        }
    }

    /// Which steps' data the expression reads, found in its syntax tree.
    pub fn step_refs(&self) -> StepRefs {
        let mut refs = StepRefs::default();
        if let Some(term) = jaq_core::load::parse(&self.source, |p| p.term()) {
            walk(&term, &mut refs);
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
                    && let Some((Part::Index(Term::Str(None, parts)), _)) = path.0.first()
                    && literal(parts) == Some(root)
                {
                    found = true;
                }
            });
        }
        found
    }
}

fn literal<'a>(
    parts: &'a [jaq_core::load::lex::StrPart<&'a str, Term<&'a str>>],
) -> Option<&'a str> {
    match parts {
        [jaq_core::load::lex::StrPart::Str(s)] => Some(s),
        _ => None,
    }
}

/// Finds `.steps.<id>` paths; any other use of `.steps` is dynamic.
fn walk(term: &Term<&str>, refs: &mut StepRefs) {
    visit(term, &mut |t| {
        if let Term::Path(base, path) = t
            && matches!(**base, Term::Id)
            && let Some((Part::Index(Term::Str(None, parts)), _)) = path.0.first()
            && literal(parts) == Some("steps")
        {
            match path.0.get(1) {
                Some((Part::Index(Term::Str(None, id)), _)) if literal(id).is_some() => {
                    refs.ids.insert(literal(id).unwrap_or_default().to_owned());
                }
                _ => refs.dynamic = true,
            }
        }
    });
}

/// Calls `f` on every term of the tree.
fn visit<'a>(term: &Term<&'a str>, f: &mut impl FnMut(&Term<&'a str>)) {
    use jaq_core::load::lex::StrPart;
    f(term);
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => {}
        Term::Str(_, parts) => {
            for part in parts {
                if let StrPart::Term(t) = part {
                    visit(t, f);
                }
            }
        }
        Term::Arr(inner) => {
            if let Some(t) = inner {
                visit(t, f);
            }
        }
        Term::Obj(entries) => {
            for (k, v) in entries {
                visit(k, f);
                if let Some(v) = v {
                    visit(v, f);
                }
            }
        }
        Term::Neg(t) | Term::Label(_, t) => visit(t, f),
        Term::BinOp(l, _, r) => {
            visit(l, f);
            visit(r, f);
        }
        Term::Fold(_, xs, _, args) => {
            visit(xs, f);
            for a in args {
                visit(a, f);
            }
        }
        Term::TryCatch(t, c) => {
            visit(t, f);
            if let Some(c) = c {
                visit(c, f);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (c, t) in branches {
                visit(c, f);
                visit(t, f);
            }
            if let Some(o) = otherwise {
                visit(o, f);
            }
        }
        Term::Def(defs, body) => {
            for d in defs {
                visit(&d.body, f);
            }
            visit(body, f);
        }
        Term::Call(_, args) => {
            for a in args {
                visit(a, f);
            }
        }
        Term::Path(base, path) => {
            visit(base, f);
            for (part, _) in &path.0 {
                match part {
                    Part::Index(i) => visit(i, f),
                    Part::Range(a, b) => {
                        if let Some(a) = a {
                            visit(a, f);
                        }
                        if let Some(b) = b {
                            visit(b, f);
                        }
                    }
                }
            }
        }
    }
}

fn describe_load(source: &str, errors: jaq_core::load::Errors<&str, ()>) -> String {
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

fn offset(source: &str, rest: &str) -> usize {
    source.len().saturating_sub(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, ctx: Value) -> Result<Value, EvalError> {
        Expr::compile(expr).unwrap().eval(&ctx)
    }

    #[test]
    fn evaluates_over_the_context() {
        let ctx = json!({"input": {"child": {"full_name": "An"}}, "steps": {"birth": {"output": {"id": "1"}}}});
        assert_eq!(eval(".input.child.full_name", ctx.clone()), Ok(json!("An")));
        assert_eq!(
            eval("{id: .steps.birth.output.id, n: 1}", ctx),
            Ok(json!({"id": "1", "n": 1}))
        );
    }

    #[test]
    fn child_under_six_is_expressible() {
        let under_six = r#"(.input.child.date_of_birth | split("-") | .[0] |= (tonumber + 6 | tostring) | join("-")) > .case.started_on"#;
        let ctx = |born: &str| json!({"input": {"child": {"date_of_birth": born}}, "case": {"started_on": "2026-11-23"}});
        let expr = Expr::compile(under_six).unwrap();
        assert_eq!(expr.eval_bool(&ctx("2026-11-20")), Ok(true));
        assert_eq!(expr.eval_bool(&ctx("2020-11-24")), Ok(true));
        assert_eq!(expr.eval_bool(&ctx("2020-11-23")), Ok(false));
    }

    #[test]
    fn refuses_bad_and_impure_expressions() {
        assert!(Expr::compile(".a | ").is_err());
        assert!(
            Expr::compile("now").unwrap_err().contains("now"),
            "{}",
            Expr::compile("now").unwrap_err()
        );
        assert!(Expr::compile("env.HOME").is_err());
        assert!(Expr::compile("nosuchfunction(1)").is_err());
    }

    #[test]
    fn finds_step_references() {
        let refs = Expr::compile(r#"{a: .steps.birth.output.x, b: (.steps.card.output | .y), c: "\(.steps.police.status)"}"#).unwrap().step_refs();
        assert_eq!(
            refs.ids.into_iter().collect::<Vec<_>>(),
            ["birth", "card", "police"]
        );
        assert!(!refs.dynamic);
        assert!(Expr::compile(".steps | keys").unwrap().step_refs().dynamic);
        assert!(
            Expr::compile(r#".steps[.input.which]"#)
                .unwrap()
                .step_refs()
                .dynamic
        );
        assert!(
            Expr::compile(".callback.url")
                .unwrap()
                .reads_root("callback")
        );
    }

    #[test]
    fn failures_are_errors_not_panics() {
        assert!(matches!(
            eval(".a.b", json!({"a": "text"})),
            Err(EvalError::Failed { .. })
        ));
        assert!(matches!(
            eval("empty", json!({})),
            Err(EvalError::NoValue { .. })
        ));
        assert_eq!(
            Expr::compile("empty").unwrap().eval_bool(&json!({})),
            Ok(false)
        );
    }
}
