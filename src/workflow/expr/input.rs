//! The input of expressions, read in place: a context may be assembled from parts that live
//! elsewhere, and only jq or a whole read makes one value of them.

use std::cell::OnceCell;

use jaq_json::Val;
use serde::Deserialize;
use serde_json::Value;

use super::compiled::EvalError;
use super::fast::lookup;

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
    pub(super) fn value(&self) -> Option<&Value> {
        match self {
            Part::Borrowed(v) => Some(v),
            Part::Owned(v) => Some(v),
            Part::Object(_) => None,
        }
    }

    /// The value this part stands for, copied.
    pub(super) fn to_value(&self) -> Value {
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
    pub(super) fn lookup(&self, keys: &[String]) -> Result<Option<&Value>, ()> {
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

    /// This input with one more member at its root (an assembled root only; a value's root
    /// is kept as it is).
    pub fn with(self, name: &'a str, value: Value) -> Input<'a> {
        match self.root {
            Part::Object(mut members) => {
                members.push((name, Part::Owned(value)));
                Input::of(Part::Object(members))
            }
            root => Input::of(root),
        }
    }

    /// The root as one JSON value.
    pub(super) fn json(&self) -> &Value {
        self.root
            .value()
            .unwrap_or_else(|| self.whole.get_or_init(|| self.root.to_value()))
    }

    /// What `.k1.k2…` gives (see [`lookup`]), read in place where it can be.
    pub(super) fn lookup(&self, keys: &[String]) -> Option<&Value> {
        self.root
            .lookup(keys)
            .unwrap_or_else(|()| lookup(self.json(), keys))
    }

    /// Whether the root is an object or null, which jq's `{a}` requires to index it.
    pub(super) fn indexable(&self) -> bool {
        self.root
            .value()
            .is_none_or(|v| matches!(v, Value::Object(_) | Value::Null))
    }

    pub(super) fn val(&self) -> Result<&Val, EvalError> {
        if let Some(val) = self.val.get() {
            return Ok(val);
        }
        let val = Val::deserialize(self.json()).map_err(|e| EvalError::Input {
            message: e.to_string(),
        })?;
        Ok(self.val.get_or_init(|| val))
    }
}
