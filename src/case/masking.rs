//! Personal data, masked for readers whose role does not allow it (operators see that a
//! citizen's ID is there and how it ends, not the ID).
//!
//! What is personal is said by the definitions, not guessed from field names: a property of a
//! workflow's input schema or of an adapter's output schema marked `x-personal: true` is
//! personal, with everything it holds ([`Personal`]). So an account number or a card code that
//! embeds a citizen's number is masked because its definition says so, and a hospital's name is
//! shown because nothing says it is personal. What civicflow itself writes in prose (an agency's
//! message, an error, an operator's reason) is masked where it quotes a long number
//! ([`mask_numbers`]); business keys, citizens' IDs and dossier numbers, are always masked.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Where a value's personal parts are, as its JSON Schema marks them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Personal {
    /// The whole value is personal.
    whole: bool,
    /// Properties with personal parts.
    fields: BTreeMap<String, Personal>,
    /// Every item of an array (`items`), or every other property (`additionalProperties`).
    items: Option<Box<Personal>>,
}

/// The keyword that marks a property personal.
pub const MARK: &str = "x-personal";

impl Personal {
    /// Everything personal: what a value whose definition is not loaded is taken to be.
    pub fn everything() -> Personal {
        Personal {
            whole: true,
            ..Personal::default()
        }
    }

    /// The personal parts a JSON Schema marks with [`MARK`], at any depth of `properties`,
    /// `items` and `additionalProperties`.
    pub fn of_schema(schema: &Value) -> Personal {
        let whole = schema.get(MARK).and_then(Value::as_bool) == Some(true);
        let fields = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .iter()
                    .map(|(k, s)| (k.clone(), Personal::of_schema(s)))
                    .filter(|(_, p)| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let items = ["items", "additionalProperties"]
            .into_iter()
            .filter_map(|k| schema.get(k).filter(|s| s.is_object()))
            .map(Personal::of_schema)
            .find(|p| !p.is_empty())
            .map(Box::new);
        Personal {
            whole,
            fields,
            items,
        }
    }

    /// Calls `f` on every scalar of `value` that is personal (each one inside a part that is
    /// personal whole).
    pub fn for_each_personal(&self, value: &mut Value, f: &mut impl FnMut(&mut Value)) {
        if self.whole {
            return for_each_scalar(value, f);
        }
        match value {
            Value::Object(fields) => {
                for (k, v) in fields.iter_mut() {
                    if let Some(p) = self.fields.get(k).or(self.items.as_deref()) {
                        p.for_each_personal(v, f);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(p) = &self.items {
                    items.iter_mut().for_each(|v| p.for_each_personal(v, f));
                }
            }
            _ => {}
        }
    }

    /// Whether anything at `path`, or under it, is personal.
    pub fn reaches(&self, path: &[String]) -> bool {
        if self.whole {
            return true;
        }
        match path.split_first() {
            None => !self.is_empty(),
            Some((key, rest)) => self
                .fields
                .get(key)
                .or(self.items.as_deref())
                .is_some_and(|p| p.reaches(rest)),
        }
    }

    /// All of it is personal.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// Nothing in it is personal.
    pub fn is_empty(&self) -> bool {
        !self.whole && self.fields.is_empty() && self.items.is_none()
    }

    /// `value` with its personal parts masked.
    pub fn mask(&self, value: &Value) -> Value {
        if self.whole {
            return mask_all(value);
        }
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        let part = self.fields.get(k).or(self.items.as_deref());
                        (k.clone(), part.map_or_else(|| v.clone(), |p| p.mask(v)))
                    })
                    .collect::<Map<String, Value>>(),
            ),
            Value::Array(items) => match &self.items {
                Some(p) => Value::Array(items.iter().map(|v| p.mask(v)).collect()),
                None => value.clone(),
            },
            other => other.clone(),
        }
    }
}

fn for_each_scalar(value: &mut Value, f: &mut impl FnMut(&mut Value)) {
    match value {
        Value::Object(fields) => fields.values_mut().for_each(|v| for_each_scalar(v, f)),
        Value::Array(items) => items.iter_mut().for_each(|v| for_each_scalar(v, f)),
        scalar => f(scalar),
    }
}

/// What a reader who sees personal data masked sent back (a corrected input): each value still
/// as it was shown, masked, is the `stored` value again, so that a correction changes only what
/// its author changed. Anything else is taken as sent.
pub fn kept_where_masked(sent: &Value, stored: &Value) -> Value {
    match (sent, stored) {
        (Value::Object(sent), Value::Object(stored)) => Value::Object(
            sent.iter()
                .map(|(k, v)| {
                    let kept = stored
                        .get(k)
                        .map_or_else(|| v.clone(), |s| kept_where_masked(v, s));
                    (k.clone(), kept)
                })
                .collect(),
        ),
        (Value::Array(sent), Value::Array(stored)) => Value::Array(
            sent.iter()
                .enumerate()
                .map(|(i, v)| {
                    stored
                        .get(i)
                        .map_or_else(|| v.clone(), |s| kept_where_masked(v, s))
                })
                .collect(),
        ),
        (Value::String(_), Value::String(_) | Value::Number(_)) if *sent == mask_all(stored) => {
            stored.clone()
        }
        _ => sent.clone(),
    }
}

/// `value` with everything in it masked: each text as [`mask_text`], each number as `***`.
pub fn mask_all(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), mask_all(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_all).collect()),
        Value::String(s) => Value::String(mask_text(s)),
        Value::Number(_) => Value::String("***".to_owned()),
        other => other.clone(),
    }
}

/// Prose civicflow keeps (a message, an error, a reason), with the long numbers it quotes
/// masked: a string value through [`mask_numbers`], anything else as it is.
pub fn mask_prose(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(mask_numbers(s)),
        other => other.clone(),
    }
}

/// Free text (an agency's message, an error) with every run of 9 or more digits masked: personal
/// and document numbers quoted in prose.
pub fn mask_numbers(s: &str) -> String {
    map_numbers(s, mask_text)
}

/// `s` with every run of nine digits or more (a citizen's ID, an account number) replaced by
/// what `f` makes of it.
pub fn map_numbers(s: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 9 {
            out.push_str(&f(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A number keeps its last two digits (enough to tell two citizens apart on the phone), any
/// other text its first letter.
pub fn mask_text(s: &str) -> String {
    let n = s.chars().count();
    if n <= 2 {
        return "*".repeat(n.max(1));
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        let tail: String = s.chars().skip(n - 2).collect();
        return format!("{}{tail}", "*".repeat(n - 2));
    }
    let first = s.chars().next().unwrap_or('*');
    format!("{first}{}", "*".repeat(n - 1))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_masked_value_sent_back_unchanged_is_the_stored_one() {
        let stored = json!({
            "requester_personal_id": "001190123456",
            "fee": 120000,
            "child": {"full_name": "Trần Minh An", "sex": "male"},
            "parents": ["001089654321"]
        });
        let mut sent = json!({
            "requester_personal_id": "**********56",
            "fee": "***",
            "child": {"full_name": "T***********", "sex": "male"},
            "parents": ["**********21"]
        });
        sent["child"]["sex"] = json!("female");
        sent["parents"][0] = json!("001089654322");
        let kept = kept_where_masked(&sent, &stored);
        assert_eq!(kept["requester_personal_id"], "001190123456");
        assert_eq!(kept["fee"], 120000);
        assert_eq!(kept["child"]["full_name"], "Trần Minh An");
        assert_eq!(kept["child"]["sex"], "female");
        assert_eq!(kept["parents"][0], "001089654322");
    }

    fn card_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "card_code": {"type": "string", "x-personal": true},
                "social_insurance_number": {"type": "string", "x-personal": true},
                "initial_hospital": {
                    "type": "object",
                    "properties": {"code": {"type": "string"}, "name": {"type": "string"}}
                },
                "holders": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"personal_id": {"type": "string", "x-personal": true}}
                }},
                "mother": {"type": "object", "x-personal": true}
            }
        })
    }

    #[test]
    fn what_a_schema_marks_personal_is_masked_and_nothing_else() {
        let personal = Personal::of_schema(&card_schema());
        let shown = personal.mask(&json!({
            "card_code": "TE1010105305039",
            "social_insurance_number": "0105305039",
            "initial_hospital": {"code": "01-015", "name": "Bệnh viện Xanh Pôn"},
            "holders": [{"personal_id": "001190123456", "role": "mother"}],
            "mother": {"full_name": "Nguyễn Thị Lan", "age": 30},
            "valid_to": "2032-11-27"
        }));
        assert_eq!(shown["card_code"], "T**************");
        assert_eq!(shown["social_insurance_number"], "********39");
        assert_eq!(shown["initial_hospital"]["name"], "Bệnh viện Xanh Pôn");
        assert_eq!(shown["initial_hospital"]["code"], "01-015");
        assert_eq!(shown["holders"][0]["personal_id"], "**********56");
        assert_eq!(shown["holders"][0]["role"], "mother");
        assert_eq!(shown["mother"]["full_name"], "N*************");
        assert_eq!(shown["mother"]["age"], "***");
        assert_eq!(shown["valid_to"], "2032-11-27");
    }

    #[test]
    fn a_schema_without_marks_masks_nothing_and_everything_masks_all() {
        let none = Personal::of_schema(&json!({"type": "object"}));
        assert!(none.is_empty());
        let value = json!({"personal_id": "001190123456"});
        assert_eq!(none.mask(&value), value);
        assert_eq!(
            Personal::everything().mask(&value),
            json!({"personal_id": "**********56"})
        );
    }

    #[test]
    fn long_numbers_in_free_text_are_masked_and_short_ones_kept() {
        assert_eq!(
            mask_numbers("the household head 001068777888 did not consent (HTTP 422, 2026)"),
            "the household head **********88 did not consent (HTTP 422, 2026)"
        );
        assert_eq!(
            mask_numbers("TLKS-00004-2026-000001"),
            "TLKS-00004-2026-000001"
        );
    }

    #[test]
    fn short_text_is_masked_whole() {
        assert_eq!(mask_text("ab"), "**");
        assert_eq!(mask_text(""), "*");
    }
}
