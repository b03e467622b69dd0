//! Personal data, masked for readers whose role does not allow it (operators see that a
//! citizen's ID is there and how it ends, not the ID). What counts as personal is decided by
//! field name, so it holds for every workflow and agency without each declaring it: names,
//! personal and document numbers, dates and places of birth and death, addresses, contacts.
//! A personal field that holds an object (a mother, an address) is masked whole.

use serde_json::{Map, Value};

/// Field names that are personal wherever they appear.
const PERSONAL: &[&str] = &[
    "full_name",
    "name",
    "date_of_birth",
    "date_of_death",
    "place_of_birth",
    "place_of_death",
    "home_town",
    "passport_number",
    "birth_certificate_number",
    "death_certificate_number",
    "address",
    "permanent_address",
    "detail",
    "phone",
    "email",
    "mother",
    "father",
    "deceased",
    "child",
    "bank_account",
    // Whom an allowance is paid to: a citizen's ID.
    "paid_to",
    // A case's business keys are citizens' IDs and dossier numbers, wherever they are shown
    // (a case, a case list, an incident list).
    "business_keys",
];

/// Whether a field of this name holds personal data: one of [`PERSONAL`], or any personal ID
/// (`personal_id`, `requester_personal_id`, …).
pub fn is_personal(field: &str) -> bool {
    PERSONAL.contains(&field) || field.ends_with("personal_id")
}

/// `value` with every personal field masked.
pub fn mask(value: &Value) -> Value {
    masked(value, false)
}

/// Fields of free text, where an agency may quote a personal number in prose.
const PROSE: &[&str] = &["message", "error", "reason", "note"];

fn masked(value: &Value, personal: bool) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) if !personal && PROSE.contains(&k.as_str()) => {
                            Value::String(mask_numbers(s))
                        }
                        _ => masked(v, personal || is_personal(k)),
                    };
                    (k.clone(), v)
                })
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| masked(v, personal)).collect()),
        Value::String(s) if personal => Value::String(mask_text(s)),
        Value::Number(_) if personal => Value::String("***".to_owned()),
        other => other.clone(),
    }
}

/// Free text (an agency's message, an error) with every run of 9 or more digits masked: personal
/// and document numbers quoted in prose.
pub fn mask_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 9 {
            out.push_str(&mask_text(run));
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
    fn personal_fields_are_masked_at_any_depth_and_others_kept() {
        let input = json!({
            "dossier_number": "HS-1",
            "requester_personal_id": "001190123456",
            "child": {"full_name": "Nguyễn Văn An", "sex": "male"},
            "permanent_address": {"commune_code": "00001", "detail": "12 Hàng Bạc"},
            "steps": [{"output": {"child_personal_id": "001026000001", "card_code": "TE1"}}],
            "started_at": "2026-11-23T11:51:46.123456782Z",
            "message": "the household head 001068777888 did not consent",
        });
        let out = mask(&input);
        assert_eq!(out["dossier_number"], "HS-1");
        assert_eq!(out["requester_personal_id"], "**********56");
        assert_eq!(out["child"]["full_name"], "N************");
        assert_eq!(out["child"]["sex"], "m***");
        assert_eq!(out["permanent_address"]["commune_code"], "***01");
        assert_eq!(
            out["steps"][0]["output"]["child_personal_id"],
            "**********01"
        );
        assert_eq!(out["steps"][0]["output"]["card_code"], "TE1");
        assert_eq!(out["started_at"], "2026-11-23T11:51:46.123456782Z");
        assert_eq!(
            out["message"],
            "the household head **********88 did not consent"
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
    fn whom_an_allowance_is_paid_to_is_masked() {
        let output = json!({"amount_vnd": 23_400_000, "paid_to": "001190123456", "payment_method": "bank_transfer"});
        let shown = mask(&output);
        assert_eq!(shown["paid_to"], "**********56");
        assert_eq!(shown["amount_vnd"], 23_400_000);
        assert_eq!(shown["payment_method"], "bank_transfer");
    }

    #[test]
    fn short_text_is_masked_whole() {
        assert_eq!(mask_text("ab"), "**");
        assert_eq!(mask_text(""), "*");
    }
}
