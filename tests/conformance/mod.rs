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

fn at(ms: i64) -> Timestamp {
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

pub fn notification(step: &str) -> Notification {
    Notification {
        kind: "step.finished".into(),
        case_id: CaseId::now_v7(),
        workflow: "birth-registration".into(),
        version: 1,
        at: at(0),
        step: Some(step.into()),
        status: "succeeded".into(),
        data: json!({"n": step}),
    }
}

/// Registers a webhook, so that notifications are written.
pub async fn subscribe<S: Store>(store: &S) {
    let tx = Transaction {
        put_webhooks: vec![webhook("subscriber")],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
}

pub async fn appends_notifications_in_commit_order_and_trims_them<S: Store>(store: &S) {
    subscribe(store).await;
    let start = store.feed_end().await.unwrap();
    for batch in [vec!["a", "b"], vec!["c"]] {
        let tx = Transaction {
            notify: batch.into_iter().map(notification).collect(),
            ..Transaction::default()
        };
        store.commit(&tx).await.unwrap();
    }
    let feed = store.feed(start, 10).await.unwrap();
    let steps: Vec<&str> = feed
        .iter()
        .map(|(_, n)| n.step.as_deref().unwrap())
        .collect();
    assert_eq!(steps, ["a", "b", "c"]);
    let seqs: Vec<u64> = feed.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(store.feed_end().await.unwrap(), seqs[2]);
    assert_eq!(store.feed(seqs[0], 1).await.unwrap()[0].0, seqs[1]);
    store.trim_feed(seqs[1]).await.unwrap();
    let left = store.feed(start, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, seqs[2]);
}

/// A webhook that has delivered nothing yet.
pub fn webhook(id: &str) -> Webhook {
    Webhook {
        id: id.into(),
        url: "http://127.0.0.1:9/x".into(),
        secret: "s".into(),
        created_at: at(0),
        created_by: "test".into(),
        cursor: 0,
        failures: 0,
        last_error: None,
        last_delivered_at: None,
    }
}

pub async fn a_webhook_update_never_brings_back_a_deleted_webhook<S: Store>(store: &S) {
    let hook = webhook("h1");
    let put = Transaction {
        put_webhooks: vec![hook.clone()],
        ..Transaction::default()
    };
    store.commit(&put).await.unwrap();
    let mut moved = hook.clone();
    moved.cursor = 7;
    let update = Transaction {
        update_webhooks: vec![moved.clone()],
        ..Transaction::default()
    };
    store.commit(&update).await.unwrap();
    assert_eq!(store.webhooks().await.unwrap(), vec![moved]);
    let delete = Transaction {
        delete_webhooks: vec!["h1".into()],
        ..Transaction::default()
    };
    store.commit(&delete).await.unwrap();
    store.commit(&update).await.unwrap();
    assert!(store.webhooks().await.unwrap().is_empty());
}

fn published(kind: Kind, id: &str, version: u32) -> Published {
    Published {
        kind,
        id: id.into(),
        version,
        text: format!("# {id}@{version}"),
        published_at: at(version as i64),
        published_by: "agency:police".into(),
        deprecated: None,
    }
}

pub async fn keeps_published_definitions_and_their_audit_trail<S: Store>(store: &S) {
    let defs = [
        published(Kind::Workflow, "birth-registration", 2),
        published(Kind::Adapter, "police/residence-registration", 10),
        published(Kind::Adapter, "police/residence-registration", 2),
    ];
    let changes: Vec<Change> = defs
        .iter()
        .map(|d| Change {
            at: d.published_at,
            by: d.published_by.clone(),
            action: "published".into(),
            kind: d.kind,
            id: d.id.clone(),
            version: d.version,
            note: String::new(),
        })
        .collect();
    for (def, change) in defs.iter().zip(&changes) {
        let tx = Transaction {
            put_definitions: vec![def.clone()],
            registry_changes: vec![change.clone()],
            ..Transaction::default()
        };
        store.commit(&tx).await.unwrap();
    }
    let listed = store.definitions().await.unwrap();
    let order: Vec<(Kind, &str, u32)> = listed
        .iter()
        .map(|d| (d.kind, d.id.as_str(), d.version))
        .collect();
    assert_eq!(
        order,
        [
            (Kind::Adapter, "police/residence-registration", 2),
            (Kind::Adapter, "police/residence-registration", 10),
            (Kind::Workflow, "birth-registration", 2),
        ]
    );
    let mut old = defs[2].clone();
    old.deprecated = Some(Deprecation {
        at: at(20),
        by: "admin".into(),
        replacement: Some(10),
        reason: "the address format changed".into(),
    });
    let tx = Transaction {
        put_definitions: vec![old.clone()],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(store.definitions().await.unwrap()[0], old);
    assert_eq!(store.registry_changes().await.unwrap(), changes);
}

/// A lease long enough never to lapse during a test, and one short enough to wait out.
const LONG: std::time::Duration = std::time::Duration::from_secs(600);
const SHORT: std::time::Duration = std::time::Duration::from_millis(200);

async fn lapse() {
    tokio::time::sleep(SHORT + std::time::Duration::from_millis(100)).await;
}

/// A case with a retry timer and a poll timer, both due by `at(100)`.
async fn case_with_two_due_timers<S: Store>(store: &S) -> (Case, Vec<Timer>) {
    let c = case("birth-registration", "001190123456");
    let timers = vec![
        Timer {
            case_id: c.id,
            due_at: at(10),
            kind: TimerKind::Retry {
                step: "birth".into(),
            },
        },
        Timer {
            case_id: c.id,
            due_at: at(20),
            kind: TimerKind::Poll {
                step: "birth".into(),
            },
        },
    ];
    let mut tx = create(&c);
    tx.set_timers = timers.clone();
    store.commit(&tx).await.unwrap();
    let mut c = c;
    c.rev = 1;
    (c, timers)
}

pub async fn a_due_timer_is_claimed_by_one_claimant_while_its_lease_holds<S: Store>(store: &S) {
    let (_, timers) = case_with_two_due_timers(store).await;
    assert!(
        store
            .claim_timers("a", at(5), LONG, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing is due yet"
    );
    let first = store.claim_timers("a", at(100), SHORT, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].timer, timers[0],
        "earliest first, at most the limit"
    );
    let second = store.claim_timers("b", at(100), SHORT, 10).await.unwrap();
    assert_eq!(second.len(), 1, "only what no one holds");
    assert_eq!(second[0].timer, timers[1]);
    assert!(
        store
            .claim_timers("c", at(100), LONG, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing while the leases hold, not even to the holder"
    );
    lapse().await;
    let again = store.claim_timers("c", at(100), LONG, 10).await.unwrap();
    let timers_again: Vec<Timer> = again.iter().map(|c| c.timer.clone()).collect();
    assert_eq!(timers_again, timers, "everything once the leases lapsed");
    let earlier = first[0].epoch.max(second[0].epoch);
    assert!(
        again.iter().all(|c| c.epoch > earlier),
        "a new claim has a larger epoch: {again:?} after {earlier}"
    );
    // The due timers are still there to read, claimed or not.
    assert_eq!(store.due_timers(at(100), 10).await.unwrap(), timers);
}

pub async fn a_commit_under_a_stale_claim_is_refused_and_writes_nothing<S: Store>(store: &S) {
    let (c, timers) = case_with_two_due_timers(store).await;
    let old = store.claim_timers("a", at(100), SHORT, 1).await.unwrap();
    lapse().await;
    let new = store.claim_timers("b", at(100), LONG, 1).await.unwrap();
    assert_eq!(old[0].timer, new[0].timer);
    // What "a" decided under its lapsed claim: the case moved on and the timer cleared.
    let fired = |claim: &civicflow::store::Claimed, status: CaseStatus| {
        let mut moved = c.clone();
        moved.status = status;
        let mut tx = update(&moved);
        tx.clear_timers = vec![claim.timer.clone()];
        tx.fences = vec![claim.fence()];
        tx
    };
    let err = store
        .commit(&fired(&old[0], CaseStatus::Cancelled))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let stored = store.case(c.id).await.unwrap().unwrap();
    assert_eq!(
        stored.status,
        CaseStatus::Running,
        "nothing of it was written"
    );
    assert_eq!(store.due_timers(at(100), 10).await.unwrap(), timers);
    // The current holder commits; after that, the claim is gone with its timer.
    store
        .commit(&fired(&new[0], CaseStatus::Completed))
        .await
        .unwrap();
    assert_eq!(store.due_timers(at(100), 10).await.unwrap(), timers[1..]);
    let mut stale = fired(&new[0], CaseStatus::Rejected);
    stale.cases[0].expected_rev = Some(2);
    let err = store.commit(&stale).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { .. }),
        "a claim on a cleared timer fences nothing more: {err}"
    );
}

pub async fn a_webhook_delivery_is_held_by_one_node_and_renewed_by_it<S: Store>(store: &S) {
    let hook = webhook("h1");
    let put = Transaction {
        put_webhooks: vec![hook.clone()],
        ..Transaction::default()
    };
    store.commit(&put).await.unwrap();
    let a = store
        .claim_webhook("a", "h1", SHORT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.claim_webhook("b", "h1", LONG).await.unwrap(), None);
    assert_eq!(
        store.claim_webhook("a", "h1", SHORT).await.unwrap(),
        Some(a),
        "the holder renews under the same epoch"
    );
    lapse().await;
    let b = store.claim_webhook("b", "h1", LONG).await.unwrap().unwrap();
    assert!(b > a, "taken over under a larger epoch");
    assert_eq!(store.claim_webhook("a", "h1", LONG).await.unwrap(), None);
    let moved = |cursor: u64, epoch: u64| {
        let mut h = hook.clone();
        h.cursor = cursor;
        Transaction {
            update_webhooks: vec![h],
            fences: vec![Fence {
                work: Work::Webhook("h1".into()),
                epoch,
            }],
            ..Transaction::default()
        }
    };
    let err = store.commit(&moved(9, a)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    store.commit(&moved(4, b)).await.unwrap();
    assert_eq!(store.webhooks().await.unwrap()[0].cursor, 4);
}

pub async fn a_feed_reader_never_skips_a_position_under_concurrent_commits<S: Store + Clone>(
    store: &S,
) {
    const WRITERS: usize = 16;
    const EACH: usize = 25;
    subscribe(store).await;
    let start = store.feed_end().await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            for i in 0..EACH {
                let tx = Transaction {
                    notify: vec![notification(&format!("{w}-{i}"))],
                    ..Transaction::default()
                };
                store.commit(&tx).await.unwrap();
            }
        });
    }
    // A reader moving its cursor over whatever it reads, as a webhook's deliverer does.
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut cursor = start;
            let mut seen = Vec::new();
            while seen.len() < WRITERS * EACH {
                let page = store.feed(cursor, 7).await.unwrap();
                for (seq, n) in page {
                    assert!(seq > cursor, "positions only grow: {seq} after {cursor}");
                    cursor = seq;
                    seen.push(n.step.unwrap());
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    writers.join_all().await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the reader saw every notification")
        .unwrap();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), WRITERS * EACH, "each once, none skipped");
    for w in 0..WRITERS {
        let mine: Vec<&String> = seen
            .iter()
            .filter(|s| s.starts_with(&format!("{w}-")))
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{w}-{i}")).collect();
        assert_eq!(
            mine,
            expected.iter().collect::<Vec<_>>(),
            "one writer's notifications in its commit order"
        );
    }
}

pub async fn configuration_changes_move_a_version_every_reader_sees<S: Store + Clone>(store: &S) {
    let other = store.clone();
    let v0 = store.config_version().await.unwrap();
    let hook = webhook("h1");
    let tx = Transaction {
        put_webhooks: vec![hook.clone()],
        expect_config: Some(v0),
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(other.config_version().await.unwrap(), v0 + 1);
    assert_eq!(other.webhooks().await.unwrap(), vec![hook.clone()]);
    // Checked against a version that has moved on: refused, and nothing written.
    let (token, _) = ApiToken::issue(Role::Operator, "alice", "test", at(0));
    let stale = Transaction {
        put_api_tokens: vec![token.clone()],
        expect_config: Some(v0),
        ..Transaction::default()
    };
    let err = store.commit(&stale).await.unwrap_err();
    assert!(matches!(err, StoreError::ConfigChanged { .. }), "{err}");
    assert!(other.api_tokens().await.unwrap().is_empty());
    assert_eq!(other.config_version().await.unwrap(), v0 + 1);
    // Each kind of configuration change moves the version; a delivery's progress and an API
    // token (read from the store at every request) do not.
    let changes = [
        Transaction {
            put_definitions: vec![published(Kind::Adapter, "police/x", 1)],
            ..Transaction::default()
        },
        Transaction {
            delete_webhooks: vec!["h1".into()],
            ..Transaction::default()
        },
    ];
    for (i, tx) in changes.iter().enumerate() {
        store.commit(tx).await.unwrap();
        assert_eq!(other.config_version().await.unwrap(), v0 + 2 + i as u64);
    }
    let progress = Transaction {
        update_webhooks: vec![hook],
        ..Transaction::default()
    };
    store.commit(&progress).await.unwrap();
    let c = case("birth-registration", "001190123456");
    store.commit(&create(&c)).await.unwrap();
    let token = Transaction {
        put_api_tokens: vec![token],
        ..Transaction::default()
    };
    store.commit(&token).await.unwrap();
    assert_eq!(other.config_version().await.unwrap(), v0 + 3);
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

pub async fn counts_the_notifications_after_a_position<S: Store>(store: &S) {
    subscribe(store).await;
    let start = store.feed_end().await.unwrap();
    assert_eq!(store.feed_count(start).await.unwrap(), 0);
    let tx = Transaction {
        notify: ["a", "b", "c"].into_iter().map(notification).collect(),
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    let feed = store.feed(start, 10).await.unwrap();
    assert_eq!(store.feed_count(start).await.unwrap(), 3);
    assert_eq!(store.feed_count(feed[0].0).await.unwrap(), 2);
    assert_eq!(store.feed_count(feed[2].0).await.unwrap(), 0);
    store.trim_feed(feed[1].0).await.unwrap();
    assert_eq!(store.feed_count(start).await.unwrap(), 1);
}

pub async fn notifications_are_written_only_while_a_webhook_is_registered<S: Store>(store: &S) {
    let notify = |step: &str| Transaction {
        notify: vec![notification(step)],
        ..Transaction::default()
    };
    let start = store.feed_end().await.unwrap();
    store.commit(&notify("before")).await.unwrap();
    assert_eq!(store.feed(start, 10).await.unwrap(), vec![]);
    assert_eq!(store.feed_count(start).await.unwrap(), 0);
    // Registered: the next commit's notifications are written, whoever commits them.
    subscribe(store).await;
    store.commit(&notify("during")).await.unwrap();
    let feed = store.feed(start, 10).await.unwrap();
    let steps: Vec<&str> = feed
        .iter()
        .map(|(_, n)| n.step.as_deref().unwrap())
        .collect();
    assert_eq!(steps, ["during"]);
    // Deleted: nobody would take them.
    let unsubscribe = Transaction {
        delete_webhooks: vec!["subscriber".into()],
        ..Transaction::default()
    };
    store.commit(&unsubscribe).await.unwrap();
    let end = store.feed_end().await.unwrap();
    store.commit(&notify("after")).await.unwrap();
    assert_eq!(store.feed_count(end).await.unwrap(), 0);
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

pub async fn counters_add_up_and_a_refused_commit_adds_nothing<S: Store + Clone>(store: &S) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100_i64 {
        let store = store.clone();
        tasks.spawn(async move {
            let c = case("birth-registration", &format!("{i:012}"));
            let mut tx = create(&c);
            tx.counts = vec![
                ("kpi/a".to_owned(), 1),
                (format!("kpi/b/{}", i % 2), 2),
                ("kpi/c".to_owned(), if i % 2 == 0 { 1 } else { -1 }),
            ];
            store.commit(&tx).await.unwrap();
            c
        });
    }
    let made = tasks.join_all().await;
    // A commit refused by its revision check adds nothing.
    let mut stale = create(&made[0]);
    stale.counts = vec![("kpi/a".to_owned(), 1000)];
    let err = store.commit(&stale).await.unwrap_err();
    assert!(matches!(err, StoreError::Exists { .. }), "{err}");
    // A commit with counts alone, and counters outside the range read.
    let tx = Transaction {
        counts: vec![("kpi/d".to_owned(), 7), ("other".to_owned(), 5)],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();

    let counts = store.counts("kpi/", "kpi0").await.unwrap();
    assert_eq!(
        counts,
        vec![
            ("kpi/a".to_owned(), 100),
            ("kpi/b/0".to_owned(), 100),
            ("kpi/b/1".to_owned(), 100),
            ("kpi/d".to_owned(), 7),
        ],
        "kpi/c sums to 0 and may be left out; `other` is outside the range"
    );
    assert_eq!(
        store.counts("kpi/b/", "kpi/b0").await.unwrap().len(),
        2,
        "a range reads only its own names"
    );
    // Every durable commit is counted, in groups of one or more.
    let g = store.groups();
    assert!(
        g.commits >= 101 && (1..=g.commits).contains(&g.groups),
        "{g:?}"
    );
}

fn circuit(agency: &str, version: u64, state: CircuitState) -> Circuit {
    Circuit {
        agency: agency.into(),
        version,
        state,
        since: at(version as i64),
        opened_by: None,
        reason: None,
        last_error: Some("503".into()),
        failed_probes: 0,
        probe_at: None,
        changes: Vec::new(),
    }
}

pub async fn circuits_are_written_by_version_and_two_writers_cannot_both_win<S: Store>(store: &S) {
    let put = |c: Circuit| Transaction {
        put_circuits: vec![c],
        ..Transaction::default()
    };
    assert_eq!(store.circuits().await.unwrap(), vec![]);
    store
        .commit(&put(circuit("police", 1, CircuitState::Open)))
        .await
        .unwrap();
    store
        .commit(&put(circuit("civil-status", 1, CircuitState::Closed)))
        .await
        .unwrap();
    // A second first write, a skipped version and a stale one are refused, and write nothing.
    for stale in [
        circuit("police", 1, CircuitState::Closed),
        circuit("police", 3, CircuitState::Closed),
        circuit("social-security", 2, CircuitState::Open),
    ] {
        let mut tx = put(stale);
        let c = case("birth-registration", "001190123456");
        tx.cases.push(CaseWrite {
            case: c.clone(),
            expected_rev: None,
        });
        let err = store.commit(&tx).await.unwrap_err();
        assert!(matches!(err, StoreError::CircuitChanged { .. }), "{err}");
        assert_eq!(store.case(c.id).await.unwrap(), None);
    }
    store
        .commit(&put(circuit("police", 2, CircuitState::Closed)))
        .await
        .unwrap();
    assert_eq!(
        store.circuits().await.unwrap(),
        vec![
            circuit("civil-status", 1, CircuitState::Closed),
            circuit("police", 2, CircuitState::Closed),
        ]
    );
    // Writers racing from the same version: exactly one wins.
    let racing: Vec<Transaction> = (0..8)
        .map(|_| put(circuit("police", 3, CircuitState::Open)))
        .collect();
    let results = futures_util::future::join_all(racing.iter().map(|tx| store.commit(tx))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
}

/// Commits one notification per step in `steps`, one commit each.
pub async fn notify_each<S: Store>(store: &S, steps: &[&str]) {
    for step in steps {
        let tx = Transaction {
            notify: vec![notification(step)],
            ..Transaction::default()
        };
        store.commit(&tx).await.unwrap();
    }
}

/// What a deliverer does once its receiver took everything after `cursor`: the webhook's
/// cursor moves there and the feed is trimmed below it.
pub async fn delivered_up_to<S: Store>(store: &S, hook: &str, cursor: u64) {
    let mut moved = store
        .webhooks()
        .await
        .unwrap()
        .into_iter()
        .find(|h| h.id == hook)
        .unwrap();
    moved.cursor = cursor;
    let tx = Transaction {
        update_webhooks: vec![moved],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    store.trim_feed(cursor).await.unwrap();
}

pub fn steps_of(feed: &[(u64, Notification)]) -> Vec<&str> {
    feed.iter()
        .map(|(_, n)| n.step.as_deref().unwrap())
        .collect()
}

/// Issue 33: an idle system trims its feed empty; a restart must not number from 1 again while
/// the webhook's cursor stays where it was, or the webhook is never fed again.
pub async fn feed_positions_never_decrease_across_a_restart_after_a_trim<S: Store>(
    store: S,
    reopen: impl AsyncFn(S) -> S,
) {
    subscribe(&store).await;
    let start = store.feed_end().await.unwrap();
    notify_each(&store, &["a", "b", "c"]).await;
    let feed = store.feed(start, 10).await.unwrap();
    assert_eq!(steps_of(&feed), ["a", "b", "c"]);
    let last = feed[2].0;
    delivered_up_to(&store, "subscriber", last).await;
    assert_eq!(store.feed(last, 10).await.unwrap(), vec![]);
    let store = reopen(store).await;
    assert!(
        store.feed_end().await.unwrap() >= last,
        "the feed's end moved back"
    );
    notify_each(&store, &["d"]).await;
    let after = store.feed(last, 10).await.unwrap();
    assert_eq!(
        steps_of(&after),
        ["d"],
        "the webhook is fed after the restart"
    );
    assert!(after[0].0 > last, "{} after {last}", after[0].0);
    // Twice over: a second restart on a trimmed feed goes on from there too.
    delivered_up_to(&store, "subscriber", after[0].0).await;
    let store = reopen(store).await;
    notify_each(&store, &["e"]).await;
    let again = store.feed(after[0].0, 10).await.unwrap();
    assert_eq!(steps_of(&again), ["e"]);
}

/// A notification's position is its delivery id (`Civicflow-Event-Id`), by which receivers drop
/// repeats: a position once handed out is never handed out again, even after every webhook was
/// deleted, the feed trimmed and the store restarted.
pub async fn feed_positions_are_never_reused_once_every_webhook_is_gone<S: Store>(
    store: S,
    reopen: impl AsyncFn(S) -> S,
) {
    subscribe(&store).await;
    let start = store.feed_end().await.unwrap();
    notify_each(&store, &["a", "b"]).await;
    let used = store.feed(start, 10).await.unwrap()[1].0;
    let unsubscribe = Transaction {
        delete_webhooks: vec!["subscriber".into()],
        ..Transaction::default()
    };
    store.commit(&unsubscribe).await.unwrap();
    // What the deliverer trims with no webhook left.
    let end = store.feed_end().await.unwrap();
    store.trim_feed(end).await.unwrap();
    let store = reopen(store).await;
    subscribe(&store).await;
    let from = store.feed_end().await.unwrap();
    notify_each(&store, &["c"]).await;
    let feed = store.feed(from, 10).await.unwrap();
    assert_eq!(steps_of(&feed), ["c"]);
    assert!(feed[0].0 > used, "position {} handed out again", feed[0].0);
}

/// Issue 33: a registration written in the same group as notifying commits must not leave the
/// store believing no webhook is registered: every notification committed after the
/// registration was answered is in the feed.
pub async fn a_webhook_registered_among_notifying_commits_gets_every_later_notification<
    S: Store + Clone,
>(
    store: &S,
) {
    for round in 0..20 {
        let hook = format!("h{round}");
        let start = store.feed_end().await.unwrap();
        let mut commits = tokio::task::JoinSet::new();
        let busy = |commits: &mut tokio::task::JoinSet<()>, i: usize| {
            let store = store.clone();
            commits.spawn(async move { notify_each(&store, &[&format!("busy-{i}")]).await });
        };
        // Notifying commits waiting before the registration and after it, in one group if the
        // store groups them.
        for i in 0..8 {
            busy(&mut commits, i);
        }
        tokio::task::yield_now().await;
        for i in 8..16 {
            busy(&mut commits, i);
        }
        let register = Transaction {
            put_webhooks: vec![webhook(&hook)],
            ..Transaction::default()
        };
        let registered = store.commit(&register);
        let (registered, ()) = tokio::join!(registered, async {
            commits.join_all().await;
        });
        registered.unwrap();
        let after = format!("after-{round}");
        notify_each(store, &[&after]).await;
        let feed = store.feed(start, 100).await.unwrap();
        assert!(
            steps_of(&feed).contains(&after.as_str()),
            "round {round}: a notification committed after the registration is missing"
        );
        let unsubscribe = Transaction {
            delete_webhooks: vec![hook],
            ..Transaction::default()
        };
        store.commit(&unsubscribe).await.unwrap();
    }
}

/// Issue 33: a delivery's cursor update checked in the same group as the webhook's delete, after
/// it, must not write the deleted webhook back.
pub async fn a_cursor_update_racing_a_delete_never_brings_the_webhook_back<S: Store + Clone>(
    store: &S,
) {
    for round in 0..30 {
        let hook = webhook(&format!("h{round}"));
        let put = Transaction {
            put_webhooks: vec![hook.clone()],
            ..Transaction::default()
        };
        store.commit(&put).await.unwrap();
        // Commits that keep the store busy, so that the next two wait together.
        let mut busy = tokio::task::JoinSet::new();
        for i in 0..8 {
            let store = store.clone();
            busy.spawn(async move {
                let c = case("birth-registration", &format!("00119{round:03}{i:04}"));
                store.commit(&create(&c)).await.unwrap();
            });
        }
        let delete = Transaction {
            delete_webhooks: vec![hook.id.clone()],
            ..Transaction::default()
        };
        let mut moved = hook.clone();
        moved.cursor = 7;
        let update = Transaction {
            update_webhooks: vec![moved],
            ..Transaction::default()
        };
        let (deleted, updated) = tokio::join!(store.commit(&delete), store.commit(&update));
        deleted.unwrap();
        updated.unwrap();
        busy.join_all().await;
        assert!(
            store
                .webhooks()
                .await
                .unwrap()
                .iter()
                .all(|h| h.id != hook.id),
            "round {round}: the deleted webhook came back"
        );
    }
}
