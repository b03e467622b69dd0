//! Expressions: jq, through `jaq`, the expression language of the CNCF Serverless Workflow
//! standard. An expression is written `${ <jq> }`; its input (`.`) is a JSON context object whose
//! shape depends on where it appears (see `docs/workflow-language.md`).
//!
//! Functions that would make evaluation depend on anything but its input (`now`, `env`, `input`,
//! `debug`, …) are not available: an expression must give the same answer when a case is
//! replayed after a crash.

use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::Opt;
use jaq_core::path::Part as PathPart;
use jaq_core::{Compiler, Ctx, Vars, data};
use jaq_json::{Num, Val};
use serde::Deserialize;
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

/// The input of expressions. Most expressions in definitions are plain lookups (`.input.child`)
/// or comparisons of one with a literal (`.status == 201`); those read the JSON directly. The
/// rest need jq's own values, converted from the JSON once, on first need, however many
/// expressions read them.
///
/// The JSON may be assembled from [`Part`]s that live elsewhere (a step's context is the case's
/// input, the steps' outputs and the case's metadata): a lookup reads them where they are, and
/// only jq, or a read of a whole assembled object, makes one value of them.
pub struct Input<'a> {
    root: Part<'a>,
    /// The root as one value, when it is assembled and something needs it whole.
    whole: OnceCell<Value>,
    val: OnceCell<Val>,
}

/// A JSON value read in place, or an object assembled from such values by name.
pub enum Part<'a> {
    Borrowed(&'a Value),
    Owned(Value),
    /// An object of these members; a name given twice means its last member, as in JSON.
    Object(Vec<(&'a str, Part<'a>)>),
}

impl Part<'_> {
    /// The value this part holds as it is; `None` for an assembled object.
    fn value(&self) -> Option<&Value> {
        match self {
            Part::Borrowed(v) => Some(v),
            Part::Owned(v) => Some(v),
            Part::Object(_) => None,
        }
    }

    /// The value this part stands for, copied.
    fn to_value(&self) -> Value {
        match self {
            Part::Borrowed(v) => (*v).clone(),
            Part::Owned(v) => v.clone(),
            Part::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(name, part)| ((*name).to_owned(), part.to_value()))
                    .collect(),
            ),
        }
    }

    /// What [`lookup`] gives on this part's value, without copying it; `Err(())` when the
    /// keys end at an assembled object, which has no value of its own to point to.
    fn lookup(&self, keys: &[String]) -> Result<Option<&Value>, ()> {
        const NULL: &Value = &Value::Null;
        let Part::Object(members) = self else {
            return Ok(self.value().and_then(|v| lookup(v, keys)));
        };
        let (key, rest) = keys.split_first().ok_or(())?;
        match members.iter().rfind(|(name, _)| name == key) {
            Some((_, part)) => part.lookup(rest),
            None => Ok(lookup(NULL, rest)),
        }
    }
}

impl<'a> Input<'a> {
    pub fn new(context: &'a Value) -> Input<'a> {
        Input::of(Part::Borrowed(context))
    }

    /// An input assembled from parts.
    pub fn of(root: Part<'a>) -> Input<'a> {
        Input {
            root,
            whole: OnceCell::new(),
            val: OnceCell::new(),
        }
    }

    /// The root as one JSON value.
    fn json(&self) -> &Value {
        self.root
            .value()
            .unwrap_or_else(|| self.whole.get_or_init(|| self.root.to_value()))
    }

    /// What `.k1.k2…` gives (see [`lookup`]), read in place where it can be.
    fn lookup(&self, keys: &[String]) -> Option<&Value> {
        self.root
            .lookup(keys)
            .unwrap_or_else(|()| lookup(self.json(), keys))
    }

    /// Whether the root is an object or null, which jq's `{a}` requires to index it.
    fn indexable(&self) -> bool {
        self.root
            .value()
            .is_none_or(|v| matches!(v, Value::Object(_) | Value::Null))
    }

    fn val(&self) -> Result<&Val, EvalError> {
        if let Some(val) = self.val.get() {
            return Ok(val);
        }
        let val = Val::deserialize(self.json()).map_err(|e| EvalError::Input {
            message: e.to_string(),
        })?;
        Ok(self.val.get_or_init(|| val))
    }
}

/// An expression simple enough to evaluate on JSON without jq, with jq's result.
#[derive(Debug, Clone, PartialEq)]
enum Fast {
    /// `.`, `.a.b`: a lookup by literal keys.
    Lookup(Vec<String>),
    /// `<lookup> == <literal>`.
    Equals(Vec<String>, Value),
    /// `<lookup> // <literal>`.
    Or(Vec<String>, Value),
    /// `<fast> and <fast>`.
    And(Box<Fast>, Box<Fast>),
    /// A number, a plain string, `true`, `false` or `null` (a rule's `when: ${ false }`).
    Literal(Value),
    /// `{a, b: <fast>}`: an object with literal keys, `{a}` standing for `{a: .a}`.
    Object(Vec<(String, Fast)>),
    /// `<fast> | <fast>`, as in `.body | {a, b}`.
    Pipe(Box<Fast>, Box<Fast>),
    /// `<fast> + <fast>` of two objects (or null): the right one's keys win.
    Merge(Box<Fast>, Box<Fast>),
}

impl Fast {
    /// The fast form of a parsed expression, if it has one.
    fn of(term: &Term<&str>) -> Option<Fast> {
        match term {
            Term::BinOp(l, BinaryOp::Cmp(Cmp::Eq), r) => {
                Some(Fast::Equals(keys_of(l)?, literal_value(r)?))
            }
            Term::BinOp(l, BinaryOp::Alt, r) => Some(Fast::Or(keys_of(l)?, literal_value(r)?)),
            Term::BinOp(l, BinaryOp::And, r) => {
                Some(Fast::And(Box::new(Fast::of(l)?), Box::new(Fast::of(r)?)))
            }
            Term::BinOp(l, BinaryOp::Pipe(None), r) => {
                Some(Fast::Pipe(Box::new(Fast::of(l)?), Box::new(Fast::of(r)?)))
            }
            Term::BinOp(l, BinaryOp::Math(Math::Add), r) => {
                Some(Fast::Merge(Box::new(Fast::of(l)?), Box::new(Fast::of(r)?)))
            }
            Term::Obj(entries) => entries
                .iter()
                .map(|(key, value)| {
                    let Term::Str(None, parts) = key else {
                        return None;
                    };
                    let key = literal(parts)?.to_owned();
                    let value = match value {
                        None => Fast::Lookup(vec![key.clone()]),
                        Some(v) => Fast::of(v)?,
                    };
                    Some((key, value))
                })
                .collect::<Option<_>>()
                .map(Fast::Object),
            other => literal_value(other)
                .map(Fast::Literal)
                .or_else(|| keys_of(other).map(Fast::Lookup)),
        }
    }

    /// `None` when jq must decide: a lookup into something that is neither an object nor null
    /// is an error, and jq words it.
    fn eval(&self, input: &Input) -> Option<Value> {
        match self {
            Fast::Lookup(keys) => input.lookup(keys).cloned(),
            Fast::Equals(keys, literal) => {
                Some(Value::Bool(jq_equal(input.lookup(keys)?, literal)))
            }
            Fast::Or(keys, fallback) => match input.lookup(keys)? {
                Value::Null | Value::Bool(false) => Some(fallback.clone()),
                found => Some(found.clone()),
            },
            Fast::And(l, r) => {
                let truthy = |v: Value| !matches!(v, Value::Null | Value::Bool(false));
                if !truthy(l.eval(input)?) {
                    return Some(Value::Bool(false));
                }
                Some(Value::Bool(truthy(r.eval(input)?)))
            }
            Fast::Literal(value) => Some(value.clone()),
            Fast::Object(entries) => {
                // jq indexes its input for `{a}` only if it is an object or null.
                if !input.indexable() {
                    return None;
                }
                entries
                    .iter()
                    .map(|(key, value)| Some((key.clone(), value.eval(input)?)))
                    .collect::<Option<_>>()
                    .map(Value::Object)
            }
            Fast::Pipe(l, r) => r.eval(&Input::new(&l.eval(input)?)),
            Fast::Merge(l, r) => match (l.eval(input)?, r.eval(input)?) {
                (Value::Object(mut left), Value::Object(right)) => {
                    left.extend(right);
                    Some(Value::Object(left))
                }
                (Value::Null, other @ Value::Object(_))
                | (other @ Value::Object(_), Value::Null) => Some(other),
                // Numbers, strings, arrays: jq's own arithmetic.
                _ => None,
            },
        }
    }
}

/// `.` and `.a.b.c` with literal keys, none optional.
fn keys_of(term: &Term<&str>) -> Option<Vec<String>> {
    match term {
        Term::Id => Some(Vec::new()),
        Term::Path(base, path) => {
            let mut keys = keys_of(base)?;
            for (part, opt) in &path.0 {
                match (part, opt) {
                    (PathPart::Index(Term::Str(None, parts)), Opt::Essential) => {
                        keys.push(literal(parts)?.to_owned());
                    }
                    _ => return None,
                }
            }
            Some(keys)
        }
        _ => None,
    }
}

/// A number, a string without escapes or interpolation, `true`, `false` or `null`.
fn literal_value(term: &Term<&str>) -> Option<Value> {
    match term {
        Term::Num(text) => match serde_json::from_str(text) {
            Ok(n @ Value::Number(_)) => Some(n),
            _ => None,
        },
        Term::Str(None, parts) => literal(parts).map(Value::from),
        Term::Call(name, args) if args.is_empty() => match *name {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            "null" => Some(Value::Null),
            _ => None,
        },
        _ => None,
    }
}

/// What jq's `.a.b` gives: the value under the keys, `null` where one is missing or the value
/// is null; `None` where the value is something else, which jq refuses to index.
fn lookup<'v>(json: &'v Value, keys: &[String]) -> Option<&'v Value> {
    const NULL: &Value = &Value::Null;
    keys.iter().try_fold(json, |at, key| match at {
        Value::Object(map) => Some(map.get(key).unwrap_or(NULL)),
        Value::Null => Some(NULL),
        _ => None,
    })
}

/// jq's `==`: numbers compare by value (`1 == 1.0`), everything else structurally.
fn jq_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// jq's value as JSON, when it is plainly JSON; `None` for what only its text form can tell
/// (big or decimal numbers, byte strings, non-finite numbers, invalid UTF-8).
fn to_json(val: &Val) -> Option<Value> {
    Some(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(i64::try_from(*i).ok()?),
        Val::Num(Num::Float(f)) => Value::Number(serde_json::Number::from_f64(*f)?),
        Val::TStr(bytes) => Value::String(std::str::from_utf8(bytes).ok()?.to_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match k {
                    Val::TStr(key) => {
                        Some((std::str::from_utf8(key).ok()?.to_owned(), to_json(v)?))
                    }
                    _ => None,
                })
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// A compiled expression.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    filter: Arc<Filter>,
    fast: Option<Arc<Fast>>,
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
    fn first_output(&self, input: &Input) -> Result<Option<jaq_json::ValR>, EvalError> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = self
            .filter
            .id
            .run((ctx, input.val()?.clone()))
            .map(jaq_core::unwrap_valr);
        Ok(out.next())
    }

    fn eval_jq(&self, input: &Input) -> Result<Value, EvalError> {
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
            && let Some((PathPart::Index(Term::Str(None, parts)), _)) = path.0.first()
            && literal(parts) == Some("steps")
        {
            match path.0.get(1) {
                Some((PathPart::Index(Term::Str(None, id)), _)) if literal(id).is_some() => {
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
                    PathPart::Index(i) => visit(i, f),
                    PathPart::Range(a, b) => {
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
    fn lookups_and_comparisons_skip_jq() {
        let fast = |src: &str| Expr::compile(src).unwrap().fast.is_some();
        for src in [
            ".",
            ".input.child.full_name",
            ".status == 201",
            r#".body.outcome == "refused""#,
            r#".status == 200 and .body.state == "issued""#,
            r#".input.relationship_to_head // "con""#,
            ".a == null",
            ".body | {a}",
            "false",
            ".input + {callback_url: .callback.url}",
        ] {
            assert!(fast(src), "{src}");
        }
        for src in [
            ".a?",
            ".a[0]",
            r#".a == "x\n""#,
            ".a == .b",
            ".a | tostring",
            "{(.k): 1}",
            ".a - .b",
        ] {
            assert!(!fast(src), "{src}");
        }
    }

    #[test]
    fn an_assembled_input_answers_as_its_whole_value_does() {
        let input = json!({"child": {"name": "An", "born": "2026-11-20"}, "n": [1, 2]});
        let output = json!({"id": "079226000123"});
        let contexts = || {
            [
                Part::Object(vec![
                    ("input", Part::Borrowed(&input)),
                    (
                        "steps",
                        Part::Object(vec![(
                            "birth",
                            Part::Object(vec![("output", Part::Borrowed(&output))]),
                        )]),
                    ),
                    (
                        "case",
                        Part::Owned(json!({"id": "c1", "started_on": "2026-11-30"})),
                    ),
                ]),
                Part::Object(vec![
                    ("a", Part::Owned(json!(1))),
                    ("a", Part::Owned(json!({"x": 2}))),
                ]),
                Part::Object(Vec::new()),
                Part::Owned(json!("text")),
                Part::Borrowed(&output),
            ]
        };
        let exprs = [
            ".",
            ".input",
            ".input.child.name",
            ".input.child.name.deeper",
            ".steps",
            ".steps.birth",
            ".steps.birth.output.id",
            ".steps.residence.output",
            r#".case.id == "c1""#,
            ".a.x",
            ".a",
            "{input}",
            ".steps | {birth}",
            ".input + .case",
            ".input | keys",
            r#"(.input.child.born | split("-") | .[0] |= (tonumber + 6 | tostring) | join("-")) > .case.started_on"#,
        ];
        for src in exprs {
            let expr = Expr::compile(src).unwrap();
            for part in contexts() {
                let whole = part.to_value();
                let expected = expr.eval_in(&Input::new(&whole));
                let assembled = Input::of(part);
                assert_eq!(expr.eval_in(&assembled), expected, "{src} on {whole}");
                // Read again: the whole value made on first need is kept, not made twice.
                assert_eq!(expr.eval_in(&assembled), expected, "{src} on {whole}");
            }
        }
    }

    #[test]
    fn the_fast_path_answers_as_jq_does() {
        let contexts = [
            json!({"status": 201, "body": {"state": "issued", "n": 1.0, "list": [1, 2]}}),
            json!({"status": 201.0, "body": {"state": "refused", "n": 1}}),
            json!({"status": "201", "body": null}),
            json!({"status": 200, "body": {"state": false}}),
            json!({"body": "text"}),
            json!({"body": [1], "status": {"a": 1}}),
            json!({"body": {"status": 3, "x": {"y": 1}}, "status": {"a": 1}}),
            json!(null),
            json!([1, 2]),
        ];
        let exprs = [
            ".",
            ".status",
            ".body.state",
            ".body.state.deeper",
            ".status == 201",
            ".body.n == 1",
            r#".body.state == "issued""#,
            r#".status == 201 and .body.state == "issued""#,
            ".body.state and .status",
            r#".body.state // "none""#,
            ".missing == null",
            ".body.list == 1",
            "false",
            "1.5",
            r#""text""#,
            ".body | {state, n}",
            ".body | {}",
            "{s: .status, body}",
            ".body + {k: .status}",
            ".status + .body",
            ".missing + .body",
            ".body | {x} + {status}",
        ];
        for src in exprs {
            let expr = Expr::compile(src).unwrap();
            assert!(expr.fast.is_some(), "{src}");
            for ctx in &contexts {
                let input = Input::new(ctx);
                assert_eq!(expr.eval_in(&input), expr.eval_jq(&input), "{src} on {ctx}");
            }
        }
    }

    #[test]
    fn jq_values_become_the_json_their_text_gives() {
        let ctx = json!({"a": {"b": [1, 2.5, "x", null, true]}});
        for src in [
            ".a | {b, c: 1}",
            "[.a.b[] | tostring]",
            "1 / 3",
            "6 / 2",
            "1e1000",
            "100000000000000000000000",
            "nan",
            r#"{"k": "é\u0000"}"#,
        ] {
            let expr = Expr::compile(src).unwrap();
            let input = Input::new(&ctx);
            let val = expr.first_output(&input).unwrap().unwrap().unwrap();
            let by_text = serde_json::from_str::<Value>(&val.to_string()).ok();
            if let Some(direct) = to_json(&val) {
                assert_eq!(Some(direct), by_text, "{src}");
            }
            assert_eq!(expr.eval_in(&input).ok(), by_text, "{src}");
        }
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
