//! The storage conformance suite: what every backend of `civicflow::store::Store` must do.
//! A backend's test file calls `conformance_suite!(expr)`, where `expr` is an async block that
//! gives a fresh, empty store.

use std::collections::BTreeMap;

use civicflow::auth::{ApiToken, Role, digest};
use civicflow::case::{
    CallbackTarget, Case, CaseId, CaseStatus, Event, EventKind, IdempotencyRecord, Incident,
    IncidentReason, StepState, StepStatus, Timer, TimerKind, due_value, incident_values, index,
};
use civicflow::registry::{Change, Deprecation, Kind, Published};
use civicflow::store::{
    CaseWrite, Circuit, CircuitState, Fence, IndexRange, Order, Store, StoreError, Transaction,
    Work,
};
use civicflow::webhooks::{Notification, Webhook};
use jiff::Timestamp;
use serde_json::json;

mod audit;
mod feed;
mod shared;

pub use audit::*;
pub use feed::*;
pub use shared::*;

#[macro_export]
macro_rules! conformance_suite {
    ($fresh:expr) => {
        $crate::conformance_suite!(@tests $fresh;
            creates_and_reads_a_case,
            refuses_a_second_case_with_the_same_id,
            refuses_a_stale_write_and_writes_nothing_of_its_transaction,
            appends_and_reads_history_in_order,
            sets_replaces_and_clears_timers,
            keeps_indexes_in_step_with_the_case,
            pages_through_an_index_both_ways,
            ranges_over_due_times,
            stores_tokens_and_idempotency_records,
            stores_issues_and_revokes_api_tokens,
            appends_notifications_in_commit_order_and_trims_them,
            a_webhook_update_never_brings_back_a_deleted_webhook,
            keeps_published_definitions_and_their_audit_trail,
            idempotency_records_are_insert_only,
            many_concurrent_commits_all_land,
            a_due_timer_is_claimed_by_one_claimant_while_its_lease_holds,
            a_commit_under_a_stale_claim_is_refused_and_writes_nothing,
            a_webhook_delivery_is_held_by_one_node_and_renewed_by_it,
            a_feed_reader_never_skips_a_position_under_concurrent_commits,
            configuration_changes_move_a_version_every_reader_sees,
            concurrent_writers_of_one_case_each_win_once_or_are_told_to_retry,
            counts_the_notifications_after_a_position,
            notifications_are_written_only_while_a_webhook_is_registered,
            concurrent_commits_with_one_key_are_all_answered_and_one_wins,
            counters_add_up_and_a_refused_commit_adds_nothing,
            circuits_are_written_by_version_and_two_writers_cannot_both_win,
            a_webhook_registered_among_notifying_commits_gets_every_later_notification,
            a_cursor_update_racing_a_delete_never_brings_the_webhook_back,
            keeps_one_consent_record_per_person_and_agreement,
            the_audit_log_numbers_and_chains_records_in_commit_order,
            concurrent_commits_log_every_record_once_in_one_chain,
            tree_heads_are_kept_by_size_and_never_replaced,
        );
    };
    (@tests $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $fresh.await;
                conformance::$name(&store).await;
            }
        )*
    };
}

/// The promises a store keeps across a restart: `$fresh` is an async block that gives a fresh
/// store and an async closure that closes a store and opens it again on the same data.
#[macro_export]
macro_rules! restart_suite {
    ($fresh:expr) => {
        $crate::restart_suite!(@tests $fresh;
            feed_positions_never_decrease_across_a_restart_after_a_trim,
            feed_positions_are_never_reused_once_every_webhook_is_gone,
            the_audit_log_chains_on_across_a_restart,
        );
    };
    (@tests $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, reopen) = $fresh.await;
                conformance::$name(store, reopen).await;
            }
        )*
    };
}

pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(1_790_000_000_000 + ms).unwrap()
}

pub fn case(workflow: &str, requester: &str) -> Case {
    let mut steps = BTreeMap::new();
    steps.insert(
        "birth".to_owned(),
        StepState::new("civil-status/birth-registration@1", "civil-status"),
    );
    Case {
        id: CaseId::now_v7(),
        workflow: workflow.to_owned(),
        version: 1,
        status: CaseStatus::Running,
        input: json!({"requester_personal_id": requester}),
        business_keys: BTreeMap::from([("requester".to_owned(), requester.to_owned())]),
        started_at: at(0),
        started_on: "2026-11-23".parse().unwrap(),
        due_at: None,
        finished_at: None,
        reason: None,
        steps,
        incidents: Vec::new(),
        timers: BTreeMap::new(),
        next_seq: 0,
        tallies: Vec::new(),
        deadlines: Default::default(),
        origin: None,
        inbox: Default::default(),
        consents: Default::default(),
        retention: Default::default(),
        traceparent: None,
        rev: 0,
    }
}

/// The transaction that writes a new case.
pub fn create(case: &Case) -> Transaction {
    Transaction {
        cases: vec![CaseWrite {
            case: case.clone(),
            expected_rev: None,
        }],
        ..Transaction::default()
    }
}

fn update(case: &Case) -> Transaction {
    Transaction {
        cases: vec![CaseWrite {
            case: case.clone(),
            expected_rev: Some(case.rev),
        }],
        ..Transaction::default()
    }
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: at(seq as i64),
        kind,
    }
}

/// Events `seqs` of a case, each a callback of step `s<seq>`.
fn callbacks(case: CaseId, seqs: std::ops::Range<u64>) -> Vec<(CaseId, Event)> {
    seqs.map(|seq| {
        let step = format!("s{seq}");
        (
            case,
            event(seq, EventKind::CallbackReceived { step, result: None }),
        )
    })
    .collect()
}

async fn ids<S: Store>(store: &S, name: &str, value: &str) -> Vec<CaseId> {
    store
        .cases_by(name, value, None, Order::Ascending, 1000)
        .await
        .unwrap()
        .ids
}

pub async fn creates_and_reads_a_case<S: Store>(store: &S) {
    store.writable().await.expect("a new store takes writes");
    let c = case("birth-registration", "001190123456");
    store.commit(&create(&c)).await.unwrap();
    let read = store.case(c.id).await.unwrap().unwrap();
    assert_eq!(read.rev, 1);
    assert_eq!(Case { rev: 0, ..read }, c);
    assert_eq!(store.case(CaseId::now_v7()).await.unwrap(), None);
}

pub async fn refuses_a_second_case_with_the_same_id<S: Store>(store: &S) {
    let c = case("birth-registration", "001190123456");
    store.commit(&create(&c)).await.unwrap();
    let err = store.commit(&create(&c)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Exists { case_id } if case_id == c.id),
        "{err}"
    );
}

pub async fn refuses_a_stale_write_and_writes_nothing_of_its_transaction<S: Store>(store: &S) {
    let c = case("birth-registration", "001190123456");
    store.commit(&create(&c)).await.unwrap();
    let mut first = store.case(c.id).await.unwrap().unwrap();
    let mut second = first.clone();
    first.status = CaseStatus::Cancelled;
    store.commit(&update(&first)).await.unwrap();

    second.status = CaseStatus::Completed;
    let mut tx = update(&second);
    tx.events.push((
        c.id,
        event(
            0,
            EventKind::CaseStarted {
                workflow: "x".into(),
                version: 1,
            },
        ),
    ));
    tx.set_timers.push(Timer {
        case_id: c.id,
        due_at: at(5),
        kind: TimerKind::CaseDeadline,
    });
    let err = store.commit(&tx).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected: 1, .. }),
        "{err}"
    );

    let now = store.case(c.id).await.unwrap().unwrap();
    assert_eq!((now.status, now.rev), (CaseStatus::Cancelled, 2));
    assert!(store.history(c.id, 0, 10).await.unwrap().is_empty());
    assert!(store.due_timers(at(100), 10).await.unwrap().is_empty());
    assert!(ids(store, index::STATUS, "completed").await.is_empty());
}

pub async fn appends_and_reads_history_in_order<S: Store>(store: &S) {
    let c = case("birth-registration", "001190123456");
    let other = case("birth-registration", "001089654321");
    let mut tx = create(&c);
    tx.cases.push(CaseWrite {
        case: other.clone(),
        expected_rev: None,
    });
    tx.events.extend(callbacks(c.id, 0..5));
    tx.events.push((
        other.id,
        event(
            0,
            EventKind::CallbackReceived {
                step: "o".into(),
                result: None,
            },
        ),
    ));
    store.commit(&tx).await.unwrap();
    let all = store.history(c.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let tail = store.history(c.id, 3, 100).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(store.history(c.id, 1, 2).await.unwrap().len(), 2);
    assert_eq!(store.history(other.id, 0, 100).await.unwrap().len(), 1);

    // A later commit appends; reads start anywhere and run across commits.
    let now = store.case(c.id).await.unwrap().unwrap();
    let mut tx = update(&now);
    tx.events.extend(callbacks(c.id, 5..8));
    store.commit(&tx).await.unwrap();
    let seqs = |events: Vec<Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.history(c.id, 0, 100).await.unwrap()),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(store.history(c.id, 3, 4).await.unwrap()),
        vec![3, 4, 5, 6]
    );
    assert_eq!(seqs(store.history(c.id, 6, 1).await.unwrap()), vec![6]);
    assert!(store.history(c.id, 8, 10).await.unwrap().is_empty());
    assert!(store.history(c.id, 0, 0).await.unwrap().is_empty());
    let last = store.history(c.id, 7, 10).await.unwrap();
    assert_eq!(
        last[0].kind,
        EventKind::CallbackReceived {
            step: "s7".into(),
            result: None,
        }
    );
    assert_eq!(store.history(other.id, 0, 100).await.unwrap().len(), 1);
}

pub async fn sets_replaces_and_clears_timers<S: Store>(store: &S) {
    let c = case("birth-registration", "001190123456");
    let d = case("birth-registration", "001089654321");
    let retry = TimerKind::Retry {
        step: "birth".into(),
    };
    let poll = TimerKind::Poll {
        step: "birth".into(),
    };
    let mut tx = create(&c);
    tx.cases.push(CaseWrite {
        case: d.clone(),
        expected_rev: None,
    });
    tx.set_timers = vec![
        Timer {
            case_id: c.id,
            due_at: at(30),
            kind: retry.clone(),
        },
        Timer {
            case_id: c.id,
            due_at: at(10),
            kind: poll.clone(),
        },
        Timer {
            case_id: d.id,
            due_at: at(20),
            kind: retry.clone(),
        },
    ];
    store.commit(&tx).await.unwrap();
    let due: Vec<i64> = store
        .due_timers(at(25), 10)
        .await
        .unwrap()
        .iter()
        .map(|t| t.due_at.as_millisecond() - at(0).as_millisecond())
        .collect();
    assert_eq!(due, vec![10, 20]);

    // A timer moves by clearing it as it was set and setting it anew, in one commit.
    let timer = |case: &Case, due: i64, kind: &TimerKind| Timer {
        case_id: case.id,
        due_at: at(due),
        kind: kind.clone(),
    };
    let tx = Transaction {
        set_timers: vec![timer(&c, 5, &retry)],
        clear_timers: vec![timer(&c, 30, &retry), timer(&d, 20, &retry)],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    let all = store.due_timers(at(1000), 10).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|t| (t.case_id, t.kind.clone()))
            .collect::<Vec<_>>(),
        vec![(c.id, retry.clone()), (c.id, poll.clone())]
    );
    assert_eq!(store.due_timers(at(1000), 1).await.unwrap().len(), 1);
    // Clearing a timer at a key that holds none changes nothing.
    let tx = Transaction {
        clear_timers: vec![timer(&c, 7, &TimerKind::CaseDeadline)],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(store.due_timers(at(1000), 10).await.unwrap().len(), 2);
    // Cleared and set again at the same time in one commit: the timer stays.
    let tx = Transaction {
        clear_timers: vec![timer(&c, 10, &poll)],
        set_timers: vec![timer(&c, 10, &poll)],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(store.due_timers(at(1000), 10).await.unwrap().len(), 2);
    let tx = Transaction {
        clear_timers: vec![timer(&c, 5, &retry), timer(&c, 10, &poll)],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert!(store.due_timers(at(1000), 10).await.unwrap().is_empty());
}

pub async fn keeps_indexes_in_step_with_the_case<S: Store>(store: &S) {
    let mut c = case("birth-registration", "001190123456");
    store.commit(&create(&c)).await.unwrap();
    assert_eq!(ids(store, index::STATUS, "running").await, vec![c.id]);
    assert_eq!(
        ids(store, index::WORKFLOW, "birth-registration").await,
        vec![c.id]
    );
    assert_eq!(
        ids(store, index::KEY, "requester=001190123456").await,
        vec![c.id]
    );
    let held = format!("civil-status/{}/birth", due_value(at(40)));
    assert!(ids(store, index::HELD, &held).await.is_empty());

    c.rev = 1;
    let step = c.steps.get_mut("birth").unwrap();
    step.status = StepStatus::WaitingForAgency;
    step.held_since = Some(at(40));
    c.incidents.push(Incident {
        step: Some("birth".into()),
        reason: IncidentReason::RetriesExhausted,
        message: "503 ten times".into(),
        opened_at: at(1),
    });
    store.commit(&update(&c)).await.unwrap();
    assert_eq!(ids(store, index::HELD, &held).await, vec![c.id]);
    let incident = c.incidents[0].clone();
    let values = incident_values("birth-registration", Some("civil-status"), &incident);
    assert_eq!(values.len(), 5, "{values:?}");
    for value in &values {
        assert_eq!(ids(store, index::INCIDENT, value).await, vec![c.id]);
    }

    c.rev = 2;
    c.status = CaseStatus::Completed;
    c.incidents.clear();
    c.steps.get_mut("birth").unwrap().status = StepStatus::Succeeded;
    store.commit(&update(&c)).await.unwrap();
    assert!(ids(store, index::STATUS, "running").await.is_empty());
    assert_eq!(ids(store, index::STATUS, "completed").await, vec![c.id]);
    assert!(ids(store, index::HELD, &held).await.is_empty());
    for value in &values {
        assert!(ids(store, index::INCIDENT, value).await.is_empty());
    }
    assert_eq!(
        ids(store, index::KEY, "requester=001190123456").await,
        vec![c.id]
    );
}

pub async fn pages_through_an_index_both_ways<S: Store>(store: &S) {
    let mut made = Vec::new();
    for _ in 0..7 {
        let c = case("death-registration", "001045333444");
        store.commit(&create(&c)).await.unwrap();
        made.push(c.id);
    }
    made.sort();
    for order in [Order::Ascending, Order::Descending] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .cases_by(index::WORKFLOW, "death-registration", cursor, order, 3)
                .await
                .unwrap();
            seen.extend(page.ids);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let mut expected = made.clone();
        if order == Order::Descending {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order:?}");
    }
    // A value is matched exactly, never as a prefix of a longer one.
    assert!(ids(store, index::WORKFLOW, "death").await.is_empty());
}

pub async fn ranges_over_due_times<S: Store>(store: &S) {
    let held = |ms| format!("civil-status/{}", due_value(at(ms)));
    let mut cases = Vec::new();
    for due in [300, 100, 200] {
        let mut c = case("birth-registration", "001190123456");
        // Held for its agency since `due`: the `held` index orders by that time.
        let step = c.steps.get_mut("birth").unwrap();
        step.status = StepStatus::WaitingForAgency;
        step.held_since = Some(at(due));
        store.commit(&create(&c)).await.unwrap();
        cases.push((due, c.id));
    }
    let mut range = IndexRange {
        from: held(0),
        to: held(250),
        after: None,
        order: Order::Ascending,
        limit: 10,
    };
    let found = store.index_range(index::HELD, &range).await.unwrap();
    let early = (format!("{}/birth", held(100)), cases[1].1);
    let late = (format!("{}/birth", held(200)), cases[2].1);
    assert_eq!(found, vec![early.clone(), late.clone()]);
    // Paged one entry at a time, each way, from where the last page ended.
    range.limit = 1;
    range.after = Some(early.clone());
    assert_eq!(
        store.index_range(index::HELD, &range).await.unwrap(),
        vec![late.clone()]
    );
    range.after = Some(late.clone());
    assert!(
        store
            .index_range(index::HELD, &range)
            .await
            .unwrap()
            .is_empty()
    );
    range.order = Order::Descending;
    assert_eq!(
        store.index_range(index::HELD, &range).await.unwrap(),
        vec![early.clone()]
    );
    range.after = None;
    assert_eq!(
        store.index_range(index::HELD, &range).await.unwrap(),
        vec![late]
    );
}

pub async fn stores_issues_and_revokes_api_tokens<S: Store>(store: &S) {
    let (token, secret) = ApiToken::issue(Role::Operator, "alice", "test", at(0));
    let tx = Transaction {
        put_api_tokens: vec![token.clone()],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(
        store.api_token(&digest(&secret)).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.api_token(&digest("cf_other")).await.unwrap(), None);
    let mut revoked = token.clone();
    revoked.revoked_at = Some(at(5));
    revoked.revoked_by = Some("admin".into());
    let tx = Transaction {
        put_api_tokens: vec![revoked.clone()],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(
        store.api_token(&token.digest).await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(store.api_tokens().await.unwrap(), vec![revoked]);
    // Forgotten (a session long ended).
    let tx = Transaction {
        delete_api_tokens: vec![token.digest.clone()],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(store.api_token(&token.digest).await.unwrap(), None);
    assert!(store.api_tokens().await.unwrap().is_empty());
}

pub async fn stores_tokens_and_idempotency_records<S: Store>(store: &S) {
    let c = case("birth-registration", "001190123456");
    let target = CallbackTarget {
        case_id: c.id,
        step: "residence".into(),
        revision: 1,
    };
    let record = IdempotencyRecord::case("abc".into(), c.id);
    let mut tx = create(&c);
    tx.put_tokens.push(("tok".into(), target.clone()));
    tx.put_idempotency
        .push(("portal:key-1".into(), record.clone()));
    store.commit(&tx).await.unwrap();
    assert_eq!(store.token("tok").await.unwrap(), Some(target));
    assert_eq!(store.token("other").await.unwrap(), None);
    assert_eq!(
        store.idempotency("portal:key-1").await.unwrap(),
        Some(record)
    );
    assert_eq!(store.idempotency("portal:key-2").await.unwrap(), None);
    let tx = Transaction {
        delete_tokens: vec!["tok".into()],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(store.token("tok").await.unwrap(), None);
}

pub async fn many_concurrent_commits_all_land<S: Store + Clone>(store: &S) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            let c = case("birth-registration", &format!("{i:012}"));
            store.commit(&create(&c)).await.unwrap();
            c.id
        });
    }
    let mut made = tasks.join_all().await;
    made.sort();
    assert_eq!(
        ids(store, index::WORKFLOW, "birth-registration").await,
        made
    );
}

pub async fn idempotency_records_are_insert_only<S: Store>(store: &S) {
    let first = case("birth-registration", "001190123456");
    let second = case("birth-registration", "001190123456");
    let record = |c: &Case| IdempotencyRecord::case("f".into(), c.id);
    let mut tx = create(&first);
    tx.put_idempotency.push(("start:k".into(), record(&first)));
    store.commit(&tx).await.unwrap();
    let mut tx = create(&second);
    tx.put_idempotency.push(("start:k".into(), record(&second)));
    let err = store.commit(&tx).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyTaken { .. }), "{err}");
    // The losing transaction wrote nothing: not its case, not its record.
    assert_eq!(store.case(second.id).await.unwrap(), None);
    assert_eq!(
        store.idempotency("start:k").await.unwrap(),
        Some(record(&first))
    );
}

pub async fn concurrent_writers_of_one_case_each_win_once_or_are_told_to_retry<S: Store + Clone>(
    store: &S,
) {
    const WRITERS: u64 = 12;
    let c = case("birth-registration", "001190123456");
    store.commit(&create(&c)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut lost = 0;
            loop {
                let mut case = store.case(c.id).await.unwrap().unwrap();
                let seq = case.next_seq;
                case.next_seq += 1;
                let mut tx = update(&case);
                tx.events = callbacks(case.id, seq..seq + 1);
                tx.events[0].1.kind = EventKind::CallbackReceived {
                    step: format!("writer-{w}"),
                    result: None,
                };
                match store.commit(&tx).await {
                    Ok(()) => return lost,
                    Err(StoreError::Conflict { .. }) => lost += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    tasks.join_all().await;
    let stored = store.case(c.id).await.unwrap().unwrap();
    assert_eq!(stored.rev, 1 + WRITERS, "every writer won exactly once");
    let history = store.history(c.id, 0, 100).await.unwrap();
    let mut writers: Vec<String> = history
        .iter()
        .map(|e| match &e.kind {
            EventKind::CallbackReceived { step, .. } => step.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    writers.sort();
    writers.dedup();
    assert_eq!(
        writers.len() as u64,
        WRITERS,
        "and its event is the one kept"
    );
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..WRITERS).collect::<Vec<_>>(), "gapless history");
}

pub async fn concurrent_commits_with_one_key_are_all_answered_and_one_wins<S: Store + Clone>(
    store: &S,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.spawn(async move {
            let c = case("birth-registration", "001190123456");
            let mut tx = create(&c);
            tx.put_idempotency.push((
                "start:race".into(),
                IdempotencyRecord::case("f".into(), c.id),
            ));
            store.commit(&tx).await
        });
    }
    let outcomes = tokio::time::timeout(std::time::Duration::from_secs(30), tasks.join_all())
        .await
        .expect("every commit is answered, none waits for a later one");
    let won = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(won, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(()) | Err(StoreError::KeyTaken { .. }))),
        "{outcomes:?}"
    );
}
