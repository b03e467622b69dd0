//! A case's state as the store keeps it: a compact binary record (postcard's wire format), not
//! JSON. The engine writes a case at every change (about seven times per birth case), and the
//! JSON form cost more than the change itself: every field name, every timestamp formatted as
//! RFC 3339 (about 800 instructions each, some eighteen per record) and the whole text then
//! compressed. Here fields are in a fixed order, timestamps are integers, and the citizen's data
//! (the case's input, each step's input and output) is carried as tagged values rather than
//! text, so nothing is formatted, escaped or parsed.
//!
//! What the law's time limits made of a case ([`crate::case::Deadlines`]: a life event's tier,
//! an extension, escalations), where it came from ([`crate::case::Origin`]) and the CloudEvents
//! it received ([`crate::case::Inbox`]) and the consents its exchanges need
//! ([`crate::case::CaseConsents`]) follow the record as one JSON object, only when there is
//! any: it is small, changed seldom, and records written before it existed read as they are
//! (the deadlines' fields are the object's own, as they were written before the others).
//!
//! The layout is the order of the fields below and the order of the variants of the enums they
//! hold (postcard numbers a variant by its position): changing either changes the store's
//! format, and `FORMAT_VERSION` must move with it. The test `the_layout_is_pinned` holds one
//! record's bytes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::de::{self, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::case::{
    Case, CaseId, CaseStatus, Incident, IncidentReason, Rejection, StepState, StepStatus,
};

/// `case` as its record's bytes (without the revision, which the store keeps beside it).
pub(crate) fn encode(case: &Case) -> Vec<u8> {
    // Room for a finished birth case's record from the start, rather than five or six
    // doublings and copies on the way there.
    let out = Vec::with_capacity(RECORD_CAPACITY);
    let mut out =
        postcard::to_extend(&CaseOut::of(case), out).expect("a case always serializes to postcard");
    if !case.deadlines.is_empty()
        || case.origin.is_some()
        || !case.inbox.is_empty()
        || !case.consents.is_empty()
        || !case.retention.is_empty()
    {
        let trailer = TrailerOut {
            deadlines: &case.deadlines,
            origin: case.origin.as_ref(),
            inbox: &case.inbox,
            consents: &case.consents,
            retention: &case.retention,
        };
        serde_json::to_writer(&mut out, &trailer).expect("the trailer serializes to JSON");
    }
    out
}

/// What follows the binary record, as JSON.
#[derive(Serialize)]
struct TrailerOut<'a> {
    #[serde(flatten)]
    deadlines: &'a crate::case::Deadlines,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a crate::case::Origin>,
    #[serde(skip_serializing_if = "crate::case::Inbox::is_empty")]
    inbox: &'a crate::case::Inbox,
    #[serde(skip_serializing_if = "crate::case::CaseConsents::is_empty")]
    consents: &'a crate::case::CaseConsents,
    #[serde(skip_serializing_if = "crate::case::Retention::is_empty")]
    retention: &'a crate::case::Retention,
}

#[derive(Deserialize)]
struct TrailerIn {
    #[serde(flatten)]
    deadlines: crate::case::Deadlines,
    #[serde(default)]
    origin: Option<crate::case::Origin>,
    #[serde(default)]
    inbox: crate::case::Inbox,
    #[serde(default)]
    consents: crate::case::CaseConsents,
    #[serde(default)]
    retention: crate::case::Retention,
}

/// What an encoded record's buffer starts with: a finished birth case's record is a few
/// kilobytes.
const RECORD_CAPACITY: usize = 4096;

/// The case a record holds, with revision 0 (the store sets it); why the bytes are not one.
pub(crate) fn decode(bytes: &[u8]) -> Result<Case, String> {
    let (record, rest): (CaseIn, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| format!("{e}"))?;
    let mut case = record.into_case()?;
    if !rest.is_empty() {
        let trailer: TrailerIn = serde_json::from_slice(rest)
            .map_err(|e| format!("the trailer after the record does not read: {e}"))?;
        case.deadlines = trailer.deadlines;
        case.origin = trailer.origin;
        case.inbox = trailer.inbox;
        case.consents = trailer.consents;
        case.retention = trailer.retention;
    }
    Ok(case)
}

/// A timestamp as seconds and nanoseconds since the epoch.
type Moment = (i64, i32);

fn moment(at: Timestamp) -> Moment {
    (at.as_second(), at.subsec_nanosecond())
}

fn timestamp((second, nanosecond): Moment) -> Result<Timestamp, String> {
    Timestamp::new(second, nanosecond).map_err(|e| format!("a time out of range: {e}"))
}

fn timestamps(at: Option<Moment>) -> Result<Option<Timestamp>, String> {
    at.map(timestamp).transpose()
}

#[derive(Serialize)]
struct CaseOut<'a> {
    id: &'a [u8; 16],
    workflow: &'a str,
    version: u32,
    status: CaseStatus,
    input: Json<'a>,
    business_keys: &'a BTreeMap<String, String>,
    started_at: Moment,
    started_on: (i16, i8, i8),
    due_at: Option<Moment>,
    finished_at: Option<Moment>,
    reason: &'a Option<String>,
    steps: Vec<(&'a str, StepOut<'a>)>,
    incidents: Vec<IncidentOut<'a>>,
    timers: Vec<(&'a str, Moment)>,
    next_seq: u64,
    traceparent: &'a Option<String>,
    tallies: &'a [String],
}

#[derive(Deserialize)]
struct CaseIn {
    id: [u8; 16],
    workflow: String,
    version: u32,
    status: CaseStatus,
    input: JsonIn,
    business_keys: BTreeMap<String, String>,
    started_at: Moment,
    started_on: (i16, i8, i8),
    due_at: Option<Moment>,
    finished_at: Option<Moment>,
    reason: Option<String>,
    steps: Vec<(String, StepIn)>,
    incidents: Vec<IncidentIn>,
    timers: Vec<(String, Moment)>,
    next_seq: u64,
    traceparent: Option<String>,
    tallies: Vec<String>,
}

#[derive(Serialize)]
struct StepOut<'a> {
    status: StepStatus,
    adapter: &'a str,
    agency: &'a str,
    revision: u32,
    attempt: u32,
    budget_from: u32,
    first_attempt_at: Option<Moment>,
    held_since: Option<Moment>,
    started_at: Option<Moment>,
    finished_at: Option<Moment>,
    due_at: Option<Moment>,
    input: Option<Json<'a>>,
    output: Option<Json<'a>>,
    rejection: &'a Option<Rejection>,
    error: &'a Option<String>,
    callback_token: &'a Option<String>,
    poll_url: &'a Option<String>,
    note: &'a Option<String>,
}

#[derive(Deserialize)]
struct StepIn {
    status: StepStatus,
    adapter: String,
    agency: String,
    revision: u32,
    attempt: u32,
    budget_from: u32,
    first_attempt_at: Option<Moment>,
    held_since: Option<Moment>,
    started_at: Option<Moment>,
    finished_at: Option<Moment>,
    due_at: Option<Moment>,
    input: Option<JsonIn>,
    output: Option<JsonIn>,
    rejection: Option<Rejection>,
    error: Option<String>,
    callback_token: Option<String>,
    poll_url: Option<String>,
    note: Option<String>,
}

#[derive(Serialize)]
struct IncidentOut<'a> {
    step: &'a Option<String>,
    reason: IncidentReason,
    message: &'a str,
    opened_at: Moment,
}

#[derive(Deserialize)]
struct IncidentIn {
    step: Option<String>,
    reason: IncidentReason,
    message: String,
    opened_at: Moment,
}

impl<'a> CaseOut<'a> {
    fn of(case: &'a Case) -> CaseOut<'a> {
        let started_on = case.started_on;
        CaseOut {
            id: case.id.as_bytes(),
            workflow: &case.workflow,
            version: case.version,
            status: case.status,
            input: Json(&case.input),
            business_keys: &case.business_keys,
            started_at: moment(case.started_at),
            started_on: (started_on.year(), started_on.month(), started_on.day()),
            due_at: case.due_at.map(moment),
            finished_at: case.finished_at.map(moment),
            reason: &case.reason,
            steps: case
                .steps
                .iter()
                .map(|(id, s)| (id.as_str(), StepOut::of(s)))
                .collect(),
            incidents: case
                .incidents
                .iter()
                .map(|i| IncidentOut {
                    step: &i.step,
                    reason: i.reason,
                    message: &i.message,
                    opened_at: moment(i.opened_at),
                })
                .collect(),
            timers: case
                .timers
                .iter()
                .map(|(id, at)| (id.as_str(), moment(*at)))
                .collect(),
            next_seq: case.next_seq,
            traceparent: &case.traceparent,
            tallies: &case.tallies,
        }
    }
}

impl<'a> StepOut<'a> {
    fn of(s: &'a StepState) -> StepOut<'a> {
        StepOut {
            status: s.status,
            adapter: &s.adapter,
            agency: &s.agency,
            revision: s.revision,
            attempt: s.attempt,
            budget_from: s.budget_from,
            first_attempt_at: s.first_attempt_at.map(moment),
            held_since: s.held_since.map(moment),
            started_at: s.started_at.map(moment),
            finished_at: s.finished_at.map(moment),
            due_at: s.due_at.map(moment),
            input: s.input.as_ref().map(Json),
            output: s.output.as_ref().map(Json),
            rejection: &s.rejection,
            error: &s.error,
            callback_token: &s.callback_token,
            poll_url: &s.poll_url,
            note: &s.note,
        }
    }
}

impl CaseIn {
    fn into_case(self) -> Result<Case, String> {
        let (year, month, day) = self.started_on;
        let steps = self
            .steps
            .into_iter()
            .map(|(id, s)| Ok((id, s.into_step()?)))
            .collect::<Result<_, String>>()?;
        let incidents = self
            .incidents
            .into_iter()
            .map(|i| {
                Ok(Incident {
                    step: i.step,
                    reason: i.reason,
                    message: i.message,
                    opened_at: timestamp(i.opened_at)?,
                })
            })
            .collect::<Result<_, String>>()?;
        let timers = self
            .timers
            .into_iter()
            .map(|(id, at)| Ok((id, timestamp(at)?)))
            .collect::<Result<_, String>>()?;
        Ok(Case {
            id: CaseId::from_bytes(self.id),
            workflow: self.workflow,
            version: self.version,
            status: self.status,
            input: self.input.0,
            business_keys: self.business_keys,
            started_at: timestamp(self.started_at)?,
            started_on: Date::new(year, month, day)
                .map_err(|e| format!("a start date out of range: {e}"))?,
            due_at: timestamps(self.due_at)?,
            finished_at: timestamps(self.finished_at)?,
            reason: self.reason,
            steps,
            incidents,
            timers,
            next_seq: self.next_seq,
            traceparent: self.traceparent,
            tallies: self.tallies,
            deadlines: Default::default(),
            origin: None,
            inbox: Default::default(),
            consents: Default::default(),
            retention: Default::default(),
            rev: 0,
        })
    }
}

impl StepIn {
    fn into_step(self) -> Result<StepState, String> {
        Ok(StepState {
            status: self.status,
            adapter: self.adapter,
            agency: self.agency,
            revision: self.revision,
            attempt: self.attempt,
            budget_from: self.budget_from,
            first_attempt_at: timestamps(self.first_attempt_at)?,
            held_since: timestamps(self.held_since)?,
            started_at: timestamps(self.started_at)?,
            finished_at: timestamps(self.finished_at)?,
            due_at: timestamps(self.due_at)?,
            input: self.input.map(|j| j.0),
            output: self.output.map(|j| j.0),
            rejection: self.rejection,
            error: self.error,
            callback_token: self.callback_token,
            poll_url: self.poll_url,
            note: self.note,
        })
    }
}

/// The kinds of JSON value, by the number postcard writes for each.
const NULL: u32 = 0;
const FALSE: u32 = 1;
const TRUE: u32 = 2;
const UNSIGNED: u32 = 3;
const SIGNED: u32 = 4;
const FLOAT: u32 = 5;
const TEXT: u32 = 6;
const ARRAY: u32 = 7;
const OBJECT: u32 = 8;
const KINDS: &[&str] = &[
    "null", "false", "true", "unsigned", "signed", "float", "text", "array", "object",
];

/// A JSON value written as a tagged union: its kind, then its content (a number as a varint or
/// eight bytes, text as length and bytes, an array's or object's length then its members).
struct Json<'a>(&'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const NAME: &str = "Json";
        match self.0 {
            Value::Null => s.serialize_unit_variant(NAME, NULL, KINDS[NULL as usize]),
            Value::Bool(false) => s.serialize_unit_variant(NAME, FALSE, KINDS[FALSE as usize]),
            Value::Bool(true) => s.serialize_unit_variant(NAME, TRUE, KINDS[TRUE as usize]),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    s.serialize_newtype_variant(NAME, UNSIGNED, KINDS[UNSIGNED as usize], &u)
                } else if let Some(i) = n.as_i64() {
                    s.serialize_newtype_variant(NAME, SIGNED, KINDS[SIGNED as usize], &i)
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    s.serialize_newtype_variant(NAME, FLOAT, KINDS[FLOAT as usize], &f)
                }
            }
            Value::String(t) => s.serialize_newtype_variant(NAME, TEXT, KINDS[TEXT as usize], t),
            Value::Array(items) => {
                s.serialize_newtype_variant(NAME, ARRAY, KINDS[ARRAY as usize], &Items(items))
            }
            Value::Object(members) => {
                s.serialize_newtype_variant(NAME, OBJECT, KINDS[OBJECT as usize], &Members(members))
            }
        }
    }
}

struct Items<'a>(&'a [Value]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Json))
    }
}

struct Members<'a>(&'a Map<String, Value>);

impl Serialize for Members<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, v)| (k, Json(v))))
    }
}

/// A JSON value read back from [`Json`]'s form.
struct JsonIn(Value);

impl<'de> Deserialize<'de> for JsonIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JsonIn, D::Error> {
        d.deserialize_enum("Json", KINDS, JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = JsonIn;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<JsonIn, A::Error> {
        let (kind, content): (u32, _) = data.variant()?;
        let value = match kind {
            NULL => content.unit_variant().map(|()| Value::Null)?,
            FALSE => content.unit_variant().map(|()| Value::Bool(false))?,
            TRUE => content.unit_variant().map(|()| Value::Bool(true))?,
            UNSIGNED => Value::Number(content.newtype_variant::<u64>()?.into()),
            SIGNED => Value::Number(content.newtype_variant::<i64>()?.into()),
            FLOAT => Number::from_f64(content.newtype_variant::<f64>()?)
                .map_or(Value::Null, Value::Number),
            TEXT => Value::String(content.newtype_variant()?),
            ARRAY => Value::Array(
                content
                    .newtype_variant::<Vec<JsonIn>>()?
                    .into_iter()
                    .map(|j| j.0)
                    .collect(),
            ),
            OBJECT => Value::Object(
                content
                    .newtype_variant::<Vec<(String, JsonIn)>>()?
                    .into_iter()
                    .map(|(k, j)| (k, j.0))
                    .collect(),
            ),
            other => {
                return Err(de::Error::invalid_value(
                    de::Unexpected::Unsigned(u64::from(other)),
                    &"a kind of JSON value (0 to 8)",
                ));
            }
        };
        Ok(JsonIn(value))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn case() -> Case {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut step = StepState::new("police/residence-registration@2", "police");
        step.status = StepStatus::Failed;
        step.attempt = 3;
        step.budget_from = 1;
        step.first_attempt_at = Some(at("2026-11-30T01:02:03.456789123Z"));
        step.started_at = Some(at("2026-11-30T01:02:03Z"));
        step.due_at = Some(at("2026-12-07T17:00:00Z"));
        step.input = Some(
            json!({"child": {"name": "Nguyễn Văn \"An\"", "born": "2026-11-01"},
            "flags": [true, false, null], "n": -3, "big": 18446744073709551615u64, "x": 1.5}),
        );
        step.rejection = Some(Rejection {
            reason_code: "E12".into(),
            message: "no such address".into(),
        });
        step.error = Some("HTTP 503".into());
        step.callback_token = Some("tok".into());
        let mut done = StepState::new("civil-status/birth-registration@1", "civil-status");
        done.status = StepStatus::Succeeded;
        done.output = Some(json!({"birth_certificate_no": "KS-1", "empty": {}, "list": []}));
        done.finished_at = Some(at("2026-11-30T01:00:00Z"));
        Case {
            id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap(),
            workflow: "birth".into(),
            version: 3,
            status: CaseStatus::Running,
            input: json!({"mother": {"personal_id": "001234567890"}}),
            business_keys: BTreeMap::from([("personal_id".into(), "001234567890".into())]),
            started_at: at("2026-11-30T00:59:59.999Z"),
            started_on: Date::new(2026, 11, 30).unwrap(),
            due_at: Some(at("2026-12-10T17:00:00Z")),
            finished_at: None,
            reason: None,
            steps: BTreeMap::from([("birth".into(), done), ("residence".into(), step)]),
            incidents: vec![Incident {
                step: Some("residence".into()),
                reason: IncidentReason::RetriesExhausted,
                message: "gave up after 3 attempts".into(),
                opened_at: at("2026-11-30T02:00:00Z"),
            }],
            timers: BTreeMap::from([("deadline".into(), at("2026-12-10T17:00:00Z"))]),
            next_seq: 17,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tallies: vec!["birth/open".into()],
            deadlines: Default::default(),
            origin: None,
            inbox: Default::default(),
            consents: Default::default(),
            retention: Default::default(),
            rev: 0,
        }
    }

    #[test]
    fn a_case_reads_back_as_written() {
        let case = case();
        assert_eq!(decode(&encode(&case)).unwrap(), case);
        let mut bare = case.clone();
        bare.steps.clear();
        bare.incidents.clear();
        bare.timers.clear();
        bare.traceparent = None;
        bare.input = Value::Null;
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
    }

    #[test]
    fn deadlines_follow_the_record_and_a_record_without_them_reads_as_before() {
        use crate::case::{Extension, LifeEvent, Tier};
        let mut case = case();
        let plain = encode(&case);
        case.deadlines.life_event = Some(LifeEvent {
            date: Date::new(2026, 9, 1).unwrap(),
            limit: Date::new(2026, 10, 31).unwrap(),
            tier: Tier::Late,
        });
        case.deadlines.extension = Some(Extension {
            step: Some("residence".into()),
            reason_code: "verification".into(),
            reason: "the address is being verified".into(),
            by: "supervisor:Lan".into(),
            at: "2026-12-01T02:00:00Z".parse().unwrap(),
            previous_due: "2026-12-02T17:00:00Z".parse().unwrap(),
            due: "2026-12-07T17:00:00Z".parse().unwrap(),
            case_due_before: None,
        });
        case.deadlines
            .escalated
            .insert("residence".into(), "agency:police".into());
        let bytes = encode(&case);
        assert!(bytes.starts_with(&plain));
        assert_eq!(decode(&bytes).unwrap(), case);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn an_origin_and_an_inbox_follow_the_record_beside_the_deadlines() {
        use crate::case::inbox::{Cause, Expect, Kept};
        use crate::case::{CloudEvent, Origin};
        let mut case = case();
        let plain = encode(&case);
        case.deadlines
            .escalated
            .insert("residence".into(), "supervisor".into());
        let deadlines_only = encode(&case);
        case.origin = Some(Origin {
            cause: Cause::Event {
                source: "urn:vn:moh:hospital:bach-mai".into(),
                id: "c-1".into(),
                event_type: "vn.gov.moh.death.certified.v1".into(),
            },
            correlation_id: "c-1".into(),
            causation_id: "c-1".into(),
            depth: 0,
        });
        let event = CloudEvent::from_json(serde_json::json!({
            "specversion": "1.0", "id": "c-2", "source": "urn:x", "type": "a.b",
            "data": {"n": 1}, "correlationid": "k"
        }))
        .unwrap();
        case.inbox.kept.push(Kept {
            event,
            received_at: "2026-12-01T02:00:00Z".parse().unwrap(),
            expires_at: "2026-12-15T02:00:00Z".parse().unwrap(),
        });
        case.inbox.expects.insert(
            "register".into(),
            Expect {
                event_type: "a.b".into(),
                value: "001".into(),
            },
        );
        let bytes = encode(&case);
        assert!(bytes.starts_with(&plain));
        assert_eq!(decode(&bytes).unwrap(), case);
        // A record written with deadlines alone, before origins and inboxes, reads as it was.
        let mut before = case.clone();
        before.origin = None;
        before.inbox = Default::default();
        assert_eq!(decode(&deadlines_only).unwrap(), before);
    }

    #[test]
    fn it_is_far_smaller_than_the_json() {
        let case = case();
        let json = serde_json::to_vec(&case).unwrap();
        let record = encode(&case);
        assert!(
            record.len() * 10 < json.len() * 7,
            "{} bytes against {} of JSON",
            record.len(),
            json.len()
        );
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&case());
        for cut in [0, 1, 16, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_kind = bytes.clone();
        // The input's kind follows the id, the workflow's name, the version and the status.
        let at = 16 + 1 + "birth".len() + 1 + 1;
        assert_eq!(wrong_kind[at], OBJECT as u8);
        wrong_kind[at] = 9;
        assert!(decode(&wrong_kind).is_err());
    }

    /// The bytes of a small record, held here: a change to the layout (a field moved, a
    /// variant reordered) fails this test, and must bump the store's format version.
    #[test]
    fn the_layout_is_pinned() {
        let mut case = case();
        case.steps.clear();
        case.incidents.clear();
        case.traceparent = None;
        case.tallies.clear();
        let bytes = encode(&case);
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b05626972746803000801066d6f7468657208010b7065",
                "72736f6e616c5f6964060c303031323334353637383930010b706572736f6e616c5f69640c30",
                "3031323334353637383930",
                "9eaae6b00d809fdcb807d41f0b1e01a0ead6b10d00000000000108646561646c696e65a0ead6",
                "b10d00110000"
            )
        );
    }
}
