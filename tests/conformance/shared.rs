//! What nodes sharing a store rely on: due timers claimed under a lease and fenced, the
//! configuration's version, published definitions, counters and agencies' circuits.

use super::*;

pub(super) fn published(kind: Kind, id: &str, version: u32) -> Published {
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
pub(super) const LONG: std::time::Duration = std::time::Duration::from_secs(600);

pub(super) const SHORT: std::time::Duration = std::time::Duration::from_millis(200);

pub(super) async fn lapse() {
    tokio::time::sleep(SHORT + std::time::Duration::from_millis(100)).await;
}

/// A case with a retry timer and a poll timer, both due by `at(100)`.
pub(super) async fn case_with_two_due_timers<S: Store>(store: &S) -> (Case, Vec<Timer>) {
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

pub(super) fn circuit(agency: &str, version: u64, state: CircuitState) -> Circuit {
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

fn consent(subject: &str, agreement: &str, id: &str) -> civicflow::personal_data::ConsentRecord {
    civicflow::personal_data::ConsentRecord {
        id: id.into(),
        agreement: agreement.into(),
        subject: subject.into(),
        given_as: civicflow::workflow::spec::GivenAs::Guardian,
        given_at: jiff::Timestamp::UNIX_EPOCH,
        recorded_at: jiff::Timestamp::UNIX_EPOCH,
        recorded_by: "portal".into(),
        evidence: Some("VNeID-1".into()),
        withdrawn_at: None,
        withdrawal_reason: None,
    }
}

/// Issue 37: a person's consent records, one per agreement, each written over the last.
pub async fn keeps_one_consent_record_per_person_and_agreement<S: Store>(store: &S) {
    let put = |records: Vec<civicflow::personal_data::ConsentRecord>| Transaction {
        put_consents: records,
        ..Transaction::default()
    };
    assert_eq!(store.consents_of("ps_a").await.unwrap(), vec![]);
    let (a1, b1) = (consent("ps_a", "one", "c1"), consent("ps_a", "two", "c2"));
    let other = consent("ps_ab", "one", "c3");
    store
        .commit(&put(vec![b1.clone(), a1.clone(), other.clone()]))
        .await
        .unwrap();
    assert_eq!(
        store.consents_of("ps_a").await.unwrap(),
        vec![a1.clone(), b1.clone()],
        "in agreement order, and only the person's own (not a longer pseudonym's)"
    );
    let mut withdrawn = a1.clone();
    withdrawn.withdrawn_at = Some(jiff::Timestamp::UNIX_EPOCH);
    withdrawn.withdrawal_reason = Some("changed my mind".into());
    store.commit(&put(vec![withdrawn.clone()])).await.unwrap();
    assert_eq!(
        store.consents_of("ps_a").await.unwrap(),
        vec![withdrawn, b1]
    );
    assert_eq!(store.consents_of("ps_ab").await.unwrap(), vec![other]);
}
