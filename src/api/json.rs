//! JSON from clients, read strictly: an object that names a key twice is refused, at any depth,
//! as serde refuses it for the request's own fields (`serde_json` would keep the last value of
//! a free-form object silently, and a dossier would then say something else than was sent).

use std::fmt;

use serde::Deserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// For `#[serde(deserialize_with = "…")]` on a free-form field: the value, or an error naming
/// the first key given twice.
pub fn unique_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    d.deserialize_any(Strict)
}

/// As [`unique_keys`], for an optional field (with `#[serde(default)]`).
pub fn unique_keys_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    d.deserialize_any(Strict).map(|v| match v {
        Value::Null => None,
        v => Some(v),
    })
}

struct Strict;

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(StrictSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key `{key}` is given twice in one object"
                )));
            }
            let value = map.next_value_seed(StrictSeed)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// [`Strict`] for the values inside arrays and objects.
struct StrictSeed;

impl<'de> de::DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "unique_keys")]
        input: Value,
    }

    #[test]
    fn a_key_given_twice_at_any_depth_is_refused() {
        for text in [
            r#"{"input": {"a": 1, "a": 2}}"#,
            r#"{"input": {"child": {"full_name": "A", "full_name": "B"}}}"#,
            r#"{"input": [{"x": 1}, {"y": 1, "y": 2}]}"#,
        ] {
            let err = serde_json::from_str::<Body>(text).unwrap_err();
            assert!(err.to_string().contains("given twice"), "{text}: {err}");
        }
    }

    #[test]
    fn everything_else_reads_as_serde_json_reads_it() {
        let text = r#"{"input": {"a": [1, -2, 3.5, "x", true, null, {"b": {}}], "c": "Trần"}}"#;
        let body: Body = serde_json::from_str(text).unwrap();
        assert_eq!(
            body.input,
            json!({"a": [1, -2, 3.5, "x", true, null, {"b": {}}], "c": "Trần"})
        );
    }
}
