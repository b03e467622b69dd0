//! A case's personal data erased: when its workflow's retention is up after it ended, or early
//! on a data subject's request. Each personal value is replaced by its keyed pseudonym, so that
//! the same person is still one person in counts and indexes, and no one without the key can
//! tell who. What is personal is said by the definitions (`x-personal` in the input schema and
//! the adapters' output schemas, business keys always, a step's input whole, an event's data
//! whole); what civicflow wrote in prose (a refusal, an error, an operator's reason) has every
//! personal value the case holds, and every long number, replaced where it appears.

use serde_json::Value;

use super::pseudonym::{PREFIX, PseudonymKey};
use crate::case::masking::{Personal, map_numbers};
use crate::case::{Case, Event, EventKind};
use crate::store::Notification;
use crate::workflow::definition::Workflow;

/// The shortest personal value looked for inside prose: shorter ones (a sex, an initial) would
/// replace parts of unrelated words.
const MIN_IN_PROSE: usize = 5;

/// Replaces personal values with their pseudonyms, and remembers each one it met so that the
/// same values are found again in the case's prose and history.
pub struct Eraser<'a> {
    key: &'a PseudonymKey,
    /// (value, pseudonym) of the personal values met, longest first once sealed.
    known: Vec<(String, String)>,
}

impl<'a> Eraser<'a> {
    pub fn new(key: &'a PseudonymKey) -> Eraser<'a> {
        Eraser {
            key,
            known: Vec::new(),
        }
    }

    /// The pseudonym of `value`; a pseudonym already is its own.
    pub fn pseudonym(&self, value: &str) -> String {
        if is_pseudonym(value) {
            value.to_owned()
        } else {
            self.key.pseudonym(value)
        }
    }

    /// A personal value replaced, and remembered.
    pub fn value(&mut self, value: &str) -> String {
        let p = self.pseudonym(value);
        if value != p && !self.known.iter().any(|(v, _)| v == value) {
            self.known.push((value.to_owned(), p.clone()));
        }
        p
    }

    /// The parts of `value` that `personal` marks, replaced (a string or a number by the
    /// pseudonym of its text; `true`, `false` and `null` say nothing of whom and stay).
    pub fn structured(&mut self, personal: &Personal, value: &mut Value) {
        personal.for_each_personal(value, &mut |leaf| match leaf {
            Value::String(s) => *s = self.value(s),
            Value::Number(n) => *leaf = Value::String(self.value(&n.to_string())),
            _ => {}
        });
    }

    /// Every string in `value` as [`Eraser::prose`] makes it.
    pub fn text(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                let erased = self.prose(s);
                if erased != *s {
                    *s = erased;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.text(v)),
            Value::Object(fields) => fields.values_mut().for_each(|v| self.text(v)),
            _ => {}
        }
    }

    /// `s` with each personal value met replaced: the whole string when it is one, inside it
    /// when it is prose (it has a space) and the value is long enough to be told from a word;
    /// in prose, any number of nine digits or more too (an ID quoted in an agency's message).
    pub fn prose(&self, s: &str) -> String {
        if let Some((_, p)) = self.known.iter().find(|(v, _)| v == s) {
            return p.clone();
        }
        if !s.contains(' ') {
            return s.to_owned();
        }
        let mut out = s.to_owned();
        let mut longest_first: Vec<&(String, String)> = self
            .known
            .iter()
            .filter(|(v, _)| v.chars().count() >= MIN_IN_PROSE)
            .collect();
        longest_first.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for (v, p) in longest_first {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), p);
            }
        }
        map_numbers(&out, |run| self.pseudonym(run))
    }
}

/// Erases `case` as its workflow says what is personal: the input, the business keys, each
/// step's input (whole) and output, the data of the events it received and the values its
/// waiting steps expect of one, and the prose it holds.
/// The eraser it gives back knows the values it met, for the case's history and notifications.
pub fn erase_case<'k>(key: &'k PseudonymKey, wf: &Workflow, case: &mut Case) -> Eraser<'k> {
    let mut eraser = Eraser::new(key);
    eraser.structured(wf.input.personal(), &mut case.input);
    for value in case.business_keys.values_mut() {
        *value = eraser.value(value);
    }
    let whole = Personal::everything();
    for (id, step) in case.steps.iter_mut() {
        if let Some(input) = &mut step.input {
            eraser.structured(&whole, input);
        }
        if let Some(output) = &mut step.output {
            eraser.structured(output_personal(wf, id), output);
        }
    }
    let events = case
        .inbox
        .kept
        .iter_mut()
        .map(|k| &mut k.event)
        .chain(case.inbox.taken.values_mut().map(|t| &mut t.event));
    for event in events {
        if let Some(data) = &mut event.data {
            eraser.structured(&whole, data);
        }
    }
    // What a waiting step expects of an event is a value of the input (a deceased's ID).
    for expect in case.inbox.expects.values_mut() {
        expect.value = eraser.value(&expect.value);
    }
    for step in case.steps.values_mut() {
        for t in [&mut step.error, &mut step.note].into_iter().flatten() {
            *t = eraser.prose(t);
        }
        if let Some(r) = &mut step.rejection {
            r.message = eraser.prose(&r.message);
        }
    }
    for incident in &mut case.incidents {
        incident.message = eraser.prose(&incident.message);
    }
    if let Some(reason) = &mut case.reason {
        *reason = eraser.prose(reason);
    }
    if let Some(extension) = &mut case.deadlines.extension {
        extension.reason = eraser.prose(&extension.reason);
    }
    for request in &mut case.deadlines.supplements {
        for missing in &mut request.missing {
            missing.reason = eraser.prose(&missing.reason);
        }
    }
    eraser
}

/// What the adapter of step `id` marks personal in its output; everything if the step is not
/// in the workflow (a case of a version whose steps changed).
fn output_personal<'w>(wf: &'w Workflow, id: &str) -> &'w Personal {
    static EVERYTHING: std::sync::LazyLock<Personal> =
        std::sync::LazyLock::new(Personal::everything);
    wf.step(id)
        .map_or(&*EVERYTHING, |s| s.adapter.output.personal())
}

impl Eraser<'_> {
    /// A case's history erased: each step's output as its adapter marks it, then every string
    /// of every event as prose (an operator's corrected input, a refusal's message).
    pub fn history(&mut self, wf: &Workflow, events: &[Event]) -> Result<Vec<Event>, String> {
        let mut erased: Vec<Event> = events.to_vec();
        for event in &mut erased {
            if let EventKind::StepSucceeded { step, output } = &mut event.kind {
                self.structured(output_personal(wf, step), output);
            }
        }
        erased
            .into_iter()
            .map(|event| {
                let mut value = serde_json::to_value(&event).map_err(|e| e.to_string())?;
                self.text(&mut value);
                serde_json::from_value(value)
                    .map_err(|e| format!("event {} does not read once erased: {e}", event.seq))
            })
            .collect()
    }

    /// A notification on the webhook feed erased: its data as prose, a step's output as its
    /// adapter marks it.
    pub fn notification(&mut self, wf: &Workflow, n: &Notification) -> Notification {
        let mut n = n.clone();
        if let Some(step) = &n.step
            && n.status == "succeeded"
        {
            self.structured(output_personal(wf, step), &mut n.data);
        }
        self.text(&mut n.data);
        n
    }
}

/// Whether `s` is a pseudonym this module makes.
pub fn is_pseudonym(s: &str) -> bool {
    s.len() == PREFIX.len() + 32
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> PseudonymKey {
        PseudonymKey::from_bytes([3; 32])
    }

    #[test]
    fn personal_parts_become_pseudonyms_and_are_found_again_in_prose() {
        let key = key();
        let mut eraser = Eraser::new(&key);
        let personal = Personal::of_schema(&json!({
            "type": "object",
            "properties": {
                "requester": {"type": "string", "x-personal": true},
                "child": {"type": "object", "x-personal": true},
                "commune": {"type": "string"},
            }
        }));
        let mut input = json!({
            "requester": "001190123456",
            "child": {"full_name": "Trần Minh An", "weight_g": 3200, "twin": false},
            "commune": "00004",
        });
        eraser.structured(&personal, &mut input);
        assert_eq!(input["requester"], key.pseudonym("001190123456"));
        assert_eq!(input["child"]["full_name"], key.pseudonym("Trần Minh An"));
        assert_eq!(input["child"]["weight_g"], key.pseudonym("3200"));
        assert_eq!(input["child"]["twin"], false);
        assert_eq!(input["commune"], "00004");

        let said = "the household head 001190123456 refused Trần Minh An (ref 0012345678901)";
        let erased = eraser.prose(said);
        assert!(!erased.contains("001190123456") && !erased.contains("Trần Minh An"));
        assert!(!erased.contains("0012345678901"), "{erased}");
        assert!(erased.starts_with("the household head ps_"), "{erased}");
        // A code alone is not prose: only a value met is replaced there.
        assert_eq!(eraser.prose("TLKS-00004"), "TLKS-00004");
        assert_eq!(eraser.prose("001190123456"), key.pseudonym("001190123456"));
    }

    #[test]
    fn erasing_twice_changes_nothing_more() {
        let key = key();
        let mut eraser = Eraser::new(&key);
        let once = eraser.value("001190123456");
        assert_eq!(eraser.value(&once), once);
        assert!(is_pseudonym(&once));
        let mut text = json!({"m": format!("asked {once} again")});
        eraser.text(&mut text);
        assert_eq!(text["m"], format!("asked {once} again"));
    }
}
