//! The idempotency ledger of one agency: the original reply of every `Idempotency-Key` it has seen,
//! and how many effects each key and each (case, procedure) caused. Tests read these counters to
//! prove that civicflow caused every effect exactly once.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::reply::Reply;

#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<String, Entry>,
    by_case: BTreeMap<(String, &'static str), u32>,
}

#[derive(Debug)]
struct Entry {
    procedure: &'static str,
    fingerprint: u64,
    case_id: Option<String>,
    reply: Reply,
    replays: u32,
}

pub enum Seen {
    /// First time: run the procedure.
    New,
    /// The same request again: here is the original reply.
    Replay(Reply),
    /// The same key with another procedure or body: the client has a bug.
    Conflict,
}

#[derive(Debug, Serialize)]
pub struct KeyEffects {
    pub idempotency_key: String,
    pub procedure: &'static str,
    pub case_id: Option<String>,
    pub effects: u32,
    pub replays: u32,
    pub status: u16,
}

#[derive(Debug, Serialize)]
pub struct CaseEffects {
    pub case_id: String,
    pub procedure: &'static str,
    pub effects: u32,
}

impl Ledger {
    pub fn check(&mut self, key: &str, procedure: &'static str, fingerprint: u64) -> Seen {
        match self.entries.get_mut(key) {
            None => Seen::New,
            Some(e) if e.procedure == procedure && e.fingerprint == fingerprint => {
                e.replays += 1;
                Seen::Replay(e.reply.clone())
            }
            Some(_) => Seen::Conflict,
        }
    }

    pub fn record(
        &mut self,
        key: &str,
        procedure: &'static str,
        fingerprint: u64,
        case_id: Option<&str>,
        reply: &Reply,
    ) {
        if reply.effect
            && let Some(case) = case_id
        {
            *self
                .by_case
                .entry((case.to_owned(), procedure))
                .or_default() += 1;
        }
        self.entries.insert(
            key.to_owned(),
            Entry {
                procedure,
                fingerprint,
                case_id: case_id.map(str::to_owned),
                reply: reply.clone(),
                replays: 0,
            },
        );
    }

    pub fn keys(&self) -> Vec<KeyEffects> {
        let mut keys: Vec<KeyEffects> = self
            .entries
            .iter()
            .map(|(key, e)| KeyEffects {
                idempotency_key: key.clone(),
                procedure: e.procedure,
                case_id: e.case_id.clone(),
                effects: u32::from(e.reply.effect),
                replays: e.replays,
                status: e.reply.status.as_u16(),
            })
            .collect();
        keys.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
        keys
    }

    pub fn cases(&self) -> Vec<CaseEffects> {
        self.by_case
            .iter()
            .map(|((case_id, procedure), effects)| CaseEffects {
                case_id: case_id.clone(),
                procedure,
                effects: *effects,
            })
            .collect()
    }
}
