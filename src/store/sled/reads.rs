//! The contract's operations on sled: a commit goes to the writer; reads go to the tree.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use sled::IVec;
use tokio::sync::oneshot;

use super::SledStore;
use super::claim_table::work_key;
use super::commit::Prepared;
use super::counters;
use super::encoding::CaseHead;
use super::keys::{
    API_TOKENS, AUDIT_CASES, CASES, CIRCUITS, COUNTERS, DEFINITIONS, FEED, FEED_FLOOR, IDEMPOTENCY,
    INDEX, REGISTRY_CHANGES, TIMERS, TOKENS, TREE_HEADS, WEBHOOKS, audit_index, audit_key,
    case_id_at_end, consent_key, event_key, feed_seq, index_prefix, keyed, timer_from,
};
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, Timer};
use crate::personal_data::ConsentRecord;
use crate::store::{
    ApiToken, Circuit, Claimed, Copied, Groups, IndexRange, NodeId, Notification, Order, Page,
    Position, Published, RegistryChange, Store, StoreError, Transaction, Webhook, Work,
};

/// Case `id` from its stored record.
pub(super) fn case_from(id: CaseId, bytes: &[u8]) -> Result<Case, StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        case_id: id,
        table: "cases",
        detail,
    };
    let (head, record) =
        CaseHead::split(bytes).ok_or_else(|| damaged("its head is cut short".to_owned()))?;
    let mut case = crate::store::decode_case(record).map_err(damaged)?;
    case.rev = head.rev;
    Ok(case)
}

impl SledStore {
    /// The stored timers due at or before `until`, earliest first.
    fn due(
        &self,
        until: Timestamp,
    ) -> Result<impl Iterator<Item = Result<(IVec, IVec), StoreError>> + '_, StoreError> {
        let start = [TIMERS];
        let end = keyed(
            TIMERS,
            &(until.as_millisecond().max(0) as u64 + 1).to_be_bytes(),
        );
        Ok(self
            .data()?
            .range(start.as_slice()..end.as_slice())
            .map(|r| r.map_err(|e| self.err(e))))
    }

    fn timer(&self, key: &[u8], value: &[u8]) -> Result<Timer, StoreError> {
        timer_from(key, value).ok_or_else(|| {
            self.corrupt(format!(
                "the timer under key {} cannot be read",
                hex::encode(key)
            ))
        })
    }
}

impl Store for SledStore {
    async fn commit(&self, tx: &Transaction) -> Result<(), StoreError> {
        if tx.is_empty() {
            return Ok(());
        }
        let closed = || StoreError::Io {
            path: self.inner.path.display().to_string(),
            detail: "the store is shutting down".to_owned(),
        };
        let (answer, outcome) = oneshot::channel();
        self.inner
            .writer
            .as_ref()
            .ok_or_else(closed)?
            .send((Prepared::new(tx), answer))
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    async fn case(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        let Some(bytes) = self.get(&keyed(CASES, id.as_bytes()))? else {
            return Ok(None);
        };
        case_from(id, &bytes).map(Some)
    }

    async fn history(&self, id: CaseId, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        // The run holding event `from` may start before it: begin at the last run starting at
        // or before `from`.
        let before = self
            .data()?
            .range(event_key(id, 0)..=event_key(id, from))
            .next_back()
            .transpose()
            .map_err(|e| self.err(e))?;
        let start = before.map_or_else(|| event_key(id, from), |(k, _)| k.to_vec());
        let mut events = Vec::new();
        for entry in self.data()?.range(start..=event_key(id, u64::MAX)) {
            if events.len() >= limit {
                break;
            }
            let (_, v) = entry.map_err(|e| self.err(e))?;
            let run: Vec<Event> = serde_json::from_slice(&v).map_err(|e| StoreError::Damaged {
                case_id: id,
                table: "events",
                detail: e.to_string(),
            })?;
            let wanted = limit - events.len();
            events.extend(run.into_iter().filter(|e| e.seq >= from).take(wanted));
        }
        Ok(events)
    }

    async fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        self.due(until)?
            .take(limit)
            .map(|r| {
                let (k, v) = r?;
                self.timer(&k, &v)
            })
            .collect()
    }

    async fn claim_timers(
        &self,
        node: &NodeId,
        until: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        // The scan skips the due timers held under a live lease: a few hundred at most, as
        // the timer loop claims no more at a time.
        let claimed = self.inner.claims.claim_free(
            node,
            lease,
            limit,
            self.due(until)?
                .map(|r| r.map(|(k, v)| (k.clone(), (k, v)))),
        )?;
        claimed
            .into_iter()
            .map(|((k, v), epoch)| {
                Ok(Claimed {
                    timer: self.timer(&k, &v)?,
                    epoch,
                })
            })
            .collect()
    }

    async fn claim_webhook(
        &self,
        node: &NodeId,
        id: &str,
        lease: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let key = work_key(&Work::Webhook(id.to_owned()));
        Ok(self.inner.claims.claim_or_renew(&key, node, lease))
    }

    /// A sync of everything written so far: a group written but not yet synced may be what a
    /// read showed. On a database whose writes failed the sync fails too.
    async fn settle(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| StoreError::Io {
                path: self.inner.path.display().to_string(),
                detail: format!("the sync of what was read: {e}"),
            })?
    }

    async fn writable(&self) -> Result<(), StoreError> {
        self.inner.writes.check()?;
        self.data().map(drop)
    }

    async fn config_version(&self) -> Result<u64, StoreError> {
        Ok(self.inner.durable.config.load(Ordering::SeqCst))
    }

    fn groups(&self) -> Groups {
        let durable = &self.inner.durable;
        Groups {
            commits: durable.commits.load(Ordering::Relaxed),
            groups: durable.groups.load(Ordering::Relaxed),
        }
    }

    async fn counts(&self, from: &str, to: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let low = keyed(COUNTERS, from.as_bytes());
        let high = keyed(COUNTERS, to.as_bytes());
        let live = self.live()?;
        let sums = counters::read(&live.pending, &low, &high, || {
            let mut sums = BTreeMap::new();
            for r in live.data.range(low.as_slice()..high.as_slice()) {
                let (k, v) = r.map_err(|e| self.err(e))?;
                let n = <[u8; 8]>::try_from(v.as_ref()).map_err(|_| {
                    self.corrupt(format!(
                        "counter {} is damaged",
                        String::from_utf8_lossy(&k[1..])
                    ))
                })?;
                sums.insert(k.to_vec(), i64::from_be_bytes(n));
            }
            Ok::<_, StoreError>(sums)
        })?;
        Ok(sums
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(k, n)| (String::from_utf8_lossy(&k[1..]).into_owned(), n))
            .collect())
    }

    async fn cases_by(
        &self,
        name: &str,
        value: &str,
        cursor: Option<CaseId>,
        order: Order,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let prefix = index_prefix(name, value);
        let mut low = prefix.clone();
        let mut high = prefix.clone();
        high.extend_from_slice(&[0xff; 17]);
        if let Some(c) = cursor {
            match order {
                Order::Ascending => {
                    low.extend_from_slice(c.as_bytes());
                    low.push(0);
                }
                Order::Descending => {
                    high = prefix.clone();
                    high.extend_from_slice(c.as_bytes());
                }
            }
        }
        let range = self.data()?.range(low..high);
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::Ascending => Box::new(range),
            Order::Descending => Box::new(range.rev()),
        };
        let mut ids = Vec::new();
        for r in keys.take(limit) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            ids.extend(case_id_at_end(&k));
        }
        let next = if ids.len() == limit {
            ids.last().copied()
        } else {
            None
        };
        Ok(Page { ids, next })
    }

    async fn index_range(
        &self,
        name: &str,
        range: &IndexRange,
    ) -> Result<Vec<Position>, StoreError> {
        let mut low = keyed(INDEX, name.as_bytes());
        low.push(0);
        let mut high = low.clone();
        low.extend_from_slice(range.from.as_bytes());
        high.extend_from_slice(range.to.as_bytes());
        if let Some((value, case)) = &range.after {
            let mut at = index_prefix(name, value);
            at.extend_from_slice(case.as_bytes());
            match range.order {
                Order::Ascending => {
                    at.push(0);
                    low = low.max(at);
                }
                Order::Descending => high = high.min(at),
            }
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let skip = name.len() + 2;
        let entries = self.data()?.range(low..high);
        let entries: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = match range.order {
            Order::Ascending => Box::new(entries),
            Order::Descending => Box::new(entries.rev()),
        };
        let mut out = Vec::new();
        for r in entries.take(range.limit) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            let Some(id) = case_id_at_end(&k) else {
                continue;
            };
            let value = &k[skip..k.len() - 17];
            out.push((String::from_utf8_lossy(value).into_owned(), id));
        }
        Ok(out)
    }

    async fn token(&self, token: &str) -> Result<Option<CallbackTarget>, StoreError> {
        match self.get(&keyed(TOKENS, token.as_bytes()))? {
            Some(v) => Ok(Some(self.decode("a callback token", &v)?)),
            None => Ok(None),
        }
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(v) = self.get(&keyed(IDEMPOTENCY, key.as_bytes()))? else {
            return Ok(None);
        };
        let record = self.decode("an idempotency record", &v)?;
        self.settle().await?;
        Ok(Some(record))
    }

    async fn api_token(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        match self.get(&keyed(API_TOKENS, digest.as_bytes()))? {
            Some(v) => Ok(Some(self.decode("an API token", &v)?)),
            None => Ok(None),
        }
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<(u64, Notification)>, StoreError> {
        let durable = self.inner.durable.feed.load(Ordering::SeqCst);
        if after >= durable {
            return Ok(Vec::new());
        }
        let low = keyed(FEED, &(after + 1).to_be_bytes());
        let high = keyed(FEED, &(durable + 1).to_be_bytes());
        self.data()?
            .range(low..high)
            .take(limit)
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err(e))?;
                let seq = feed_seq(&k).ok_or_else(|| self.corrupt("a damaged feed key".into()))?;
                Ok((seq, self.decode("a notification", &v)?))
            })
            .collect()
    }

    async fn feed_count(&self, after: u64) -> Result<u64, StoreError> {
        // Positions are consecutive here, and only those trimmed are gone.
        let durable = self.inner.durable.feed.load(Ordering::SeqCst);
        let low = keyed(FEED, &(after + 1).to_be_bytes());
        let high = keyed(FEED, &(durable + 1).to_be_bytes());
        let mut n = 0;
        for r in self.data()?.range(low..high) {
            r.map_err(|e| self.err(e))?;
            n += 1;
        }
        Ok(n)
    }

    async fn feed_end(&self) -> Result<u64, StoreError> {
        Ok(self.inner.durable.feed.load(Ordering::SeqCst))
    }

    async fn trim_feed(&self, upto: u64) -> Result<(), StoreError> {
        let high = keyed(FEED, &(upto.saturating_add(1)).to_be_bytes());
        // Neither atomic nor synced on its own: an entry that comes back after a crash is
        // trimmed again, and one left while the store cannot write is trimmed by a later call.
        if self.inner.writes.is_down() {
            return Ok(());
        }
        let data = self.data()?;
        // The floor first: sled recovers a prefix of its log, so no removal below survives a
        // crash without it, and the writer never numbers again from below what was trimmed.
        data.fetch_and_update(FEED_FLOOR, |old| {
            let old = old
                .and_then(|v| v.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            Some(old.max(upto).to_be_bytes().to_vec())
        })
        .map_err(|e| self.err(e))?;
        for r in data.range([FEED].as_slice()..high.as_slice()) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            data.remove(k).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.all(WEBHOOKS, "a webhook")
    }

    async fn definitions(&self) -> Result<Vec<Published>, StoreError> {
        self.all(DEFINITIONS, "a published definition")
    }

    async fn circuits(&self) -> Result<Vec<Circuit>, StoreError> {
        self.all(CIRCUITS, "an agency's circuit")
    }

    async fn consents_of(&self, subject: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        let prefix = consent_key(subject, "");
        self.data()?
            .scan_prefix(prefix)
            .map(|r| {
                let (_, v) = r.map_err(|e| self.err(e))?;
                self.decode("a consent record", &v)
            })
            .collect()
    }

    async fn audit_size(&self) -> Result<u64, StoreError> {
        Ok(self.inner.durable.audit.load(Ordering::SeqCst))
    }

    async fn audit_entries(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let durable = self.inner.durable.audit.load(Ordering::SeqCst);
        if from >= durable {
            return Ok(Vec::new());
        }
        self.data()?
            .range(audit_key(from)..audit_key(durable))
            .take(limit)
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err(e))?;
                let index =
                    audit_index(&k).ok_or_else(|| self.corrupt("a damaged audit key".into()))?;
                Ok((index, v.to_vec()))
            })
            .collect()
    }

    async fn audit_of_case(&self, id: CaseId) -> Result<Vec<u64>, StoreError> {
        let durable = self.inner.durable.audit.load(Ordering::SeqCst);
        let prefix = keyed(AUDIT_CASES, id.as_bytes());
        let mut found = Vec::new();
        for r in self.data()?.scan_prefix(&prefix) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            let index = k
                .get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| self.corrupt("a damaged audit case key".into()))?;
            if index < durable {
                found.push(index);
            }
        }
        Ok(found)
    }

    async fn tree_heads(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::TreeHead>, StoreError> {
        self.data()?
            .range(keyed(TREE_HEADS, &from.to_be_bytes())..[TREE_HEADS + 1].to_vec())
            .take(limit)
            .map(|r| {
                let (_, v) = r.map_err(|e| self.err(e))?;
                self.decode("a tree head", &v)
            })
            .collect()
    }

    async fn latest_tree_head(&self) -> Result<Option<crate::audit::TreeHead>, StoreError> {
        match self.data()?.scan_prefix([TREE_HEADS]).next_back() {
            Some(r) => {
                let (_, v) = r.map_err(|e| self.err(e))?;
                Ok(Some(self.decode("a tree head", &v)?))
            }
            None => Ok(None),
        }
    }

    fn backup_to(&self, out: &mut dyn std::io::Write) -> Option<Result<Copied, StoreError>> {
        Some(self.copy_to(out))
    }

    async fn registry_changes(&self) -> Result<Vec<RegistryChange>, StoreError> {
        self.all(REGISTRY_CHANGES, "a registry change")
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.all(API_TOKENS, "an API token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 33: while the database is being opened again after writes failed, what a reader
    /// saw before may not be on disk: `settle` says so instead of answering that all is durable.
    #[tokio::test]
    async fn settle_fails_while_the_database_is_opened_again() {
        let dir = std::env::temp_dir().join(format!("civicflow-settle-{}", uuid::Uuid::new_v4()));
        let store = SledStore::open(&dir, 1 << 20).unwrap();
        store.settle().await.unwrap();
        let live = store.inner.live.write().unwrap().take();
        let err = store.settle().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        *store.inner.live.write().unwrap() = live;
        store.settle().await.unwrap();
    }
}
