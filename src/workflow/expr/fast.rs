//! The fast path: plain lookups, comparisons with a literal, `//` and `and` of those, and the
//! rest of what reads the JSON directly, answering as jq does; and jq's values as JSON.

use jaq_core::load::parse::{BinaryOp, Term};
use jaq_core::ops::{Cmp, Math};
use jaq_core::path::Opt;
use jaq_core::path::Part as PathPart;
use jaq_json::{Num, Val};
use serde_json::Value;

use super::input::Input;
use super::step_refs::literal;

/// An expression simple enough to evaluate on JSON without jq, with jq's result.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fast {
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
    pub(super) fn of(term: &Term<&str>) -> Option<Fast> {
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
    pub(super) fn eval(&self, input: &Input) -> Option<Value> {
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
pub(super) fn keys_of(term: &Term<&str>) -> Option<Vec<String>> {
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
pub(super) fn literal_value(term: &Term<&str>) -> Option<Value> {
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
pub(super) fn lookup<'v>(json: &'v Value, keys: &[String]) -> Option<&'v Value> {
    const NULL: &Value = &Value::Null;
    keys.iter().try_fold(json, |at, key| match at {
        Value::Object(map) => Some(map.get(key).unwrap_or(NULL)),
        Value::Null => Some(NULL),
        _ => None,
    })
}

/// jq's `==`: numbers compare by value (`1 == 1.0`), everything else structurally.
pub(super) fn jq_equal(a: &Value, b: &Value) -> bool {
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
pub(super) fn to_json(val: &Val) -> Option<Value> {
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
