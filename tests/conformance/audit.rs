//! Issue 38: the audit log. Records are numbered and chained by the store in commit order, one
//! chain whichever writer commits; a refused commit logs nothing; a case's entries are found
//! by its id; signed tree heads are kept by size and never replaced; the chain goes on across
//! a restart.

use civicflow::audit::verify::{StoreSource, verify};
use civicflow::audit::{Entry, HeadSigner, Record, Tail, TrustedKeys};

use super::*;

fn action(case_id: CaseId, n: usize) -> Record {
    Record::Action {
        case_id,
        step: Some(format!("step-{n}")),
        action: "retry".into(),
        by: "alice".into(),
        reason_hash: "00".repeat(32),
    }
}

fn token(n: usize) -> Record {
    Record::Token {
        action: "issued".into(),
        token: format!("cf_{n}"),
        role: "operator".into(),
        by: "admin".into(),
    }
}

fn logging(records: Vec<Record>) -> Transaction {
    Transaction {
        audit: records,
        ..Transaction::default()
    }
}

/// Signs the log as it is with a fresh key and verifies it whole: every entry in its place and
/// chained, the head's root theirs.
async fn signed_and_verified<S: Store + Clone>(store: &S) -> u64 {
    let key = HeadSigner::from_seed([9; 32]);
    let log = std::sync::Arc::new(civicflow::audit::Log::new(store.clone()));
    let (size, root) = log.head().await.unwrap();
    store
        .commit(&Transaction {
            put_tree_heads: vec![key.sign(size, &root, Timestamp::now())],
            ..Transaction::default()
        })
        .await
        .unwrap();
    let verified = verify(&StoreSource(store.clone()), &TrustedKeys::of(&key), None)
        .await
        .unwrap();
    assert_eq!(verified.entries, size);
    size
}

pub async fn the_audit_log_numbers_and_chains_records_in_commit_order<S: Store + Clone>(store: &S) {
    assert_eq!(store.audit_size().await.unwrap(), 0);
    let (a, b) = (CaseId::now_v7(), CaseId::now_v7());
    store
        .commit(&logging(vec![action(a, 0), token(1)]))
        .await
        .unwrap();
    let mut new = case("birth-registration", "001");
    new.id = b;
    let with_case = Transaction {
        cases: vec![CaseWrite {
            case: new.clone(),
            expected_rev: None,
        }],
        audit: vec![action(b, 2)],
        ..Transaction::default()
    };
    store.commit(&with_case).await.unwrap();
    let refused = store.commit(&with_case).await;
    assert!(
        matches!(refused, Err(StoreError::Exists { .. })),
        "{refused:?}"
    );
    store
        .commit(&logging(vec![action(a, 3), action(b, 4)]))
        .await
        .unwrap();
    assert_eq!(
        store.audit_size().await.unwrap(),
        5,
        "a refused commit logs nothing"
    );
    let entries = store.audit_entries(0, 100).await.unwrap();
    let mut tail = Tail::default();
    for (i, (index, bytes)) in entries.iter().enumerate() {
        let entry = Entry::decode(bytes).unwrap();
        assert_eq!((*index, entry.index), (i as u64, i as u64));
        assert_eq!(
            entry.prev,
            hex::encode(tail.last_leaf),
            "entry {i} chains to the one before"
        );
        assert!(entry.logged_at >= tail.last_at);
        tail = Tail::after(*index, bytes);
    }
    let steps: Vec<String> = entries
        .iter()
        .map(|(_, bytes)| match Entry::decode(bytes).unwrap().record {
            Record::Action { step, .. } => step.unwrap(),
            Record::Token { token, .. } => token,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(steps, ["step-0", "cf_1", "step-2", "step-3", "step-4"]);
    assert_eq!(store.audit_of_case(a).await.unwrap(), vec![0, 3]);
    assert_eq!(store.audit_of_case(b).await.unwrap(), vec![2, 4]);
    let page = store.audit_entries(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(signed_and_verified(store).await, 5);
}

pub async fn concurrent_commits_log_every_record_once_in_one_chain<S: Store + Clone>(store: &S) {
    let commits = (0..40).map(|n| {
        let store = store.clone();
        async move {
            store
                .commit(&logging(vec![token(2 * n), token(2 * n + 1)]))
                .await
        }
    });
    for result in futures_util::future::join_all(commits).await {
        result.unwrap();
    }
    assert_eq!(signed_and_verified(store).await, 80);
    let mut seen: Vec<String> = store
        .audit_entries(0, 100)
        .await
        .unwrap()
        .iter()
        .map(|(_, bytes)| match Entry::decode(bytes).unwrap().record {
            Record::Token { token, .. } => token,
            other => panic!("{other:?}"),
        })
        .collect();
    let pairs_together = seen.chunks(2).all(|p| {
        p[0].trim_start_matches("cf_").parse::<usize>().unwrap() + 1
            == p[1].trim_start_matches("cf_").parse::<usize>().unwrap()
    });
    assert!(
        pairs_together,
        "a commit's records are logged together, in order: {seen:?}"
    );
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 80, "every record once");
}

pub async fn tree_heads_are_kept_by_size_and_never_replaced<S: Store>(store: &S) {
    let key = HeadSigner::from_seed([3; 32]);
    let head = |size: u64, root: u8| key.sign(size, &[root; 32], at(size as i64));
    let put = |heads| Transaction {
        put_tree_heads: heads,
        ..Transaction::default()
    };
    assert_eq!(store.latest_tree_head().await.unwrap(), None);
    store
        .commit(&put(vec![head(7, 1), head(3, 1)]))
        .await
        .unwrap();
    store.commit(&put(vec![head(3, 2)])).await.unwrap();
    let heads = store.tree_heads(0, 10).await.unwrap();
    assert_eq!(
        heads,
        vec![head(3, 1), head(7, 1)],
        "in size order, the first of a size kept"
    );
    assert_eq!(store.tree_heads(4, 10).await.unwrap(), vec![head(7, 1)]);
    assert_eq!(store.tree_heads(0, 1).await.unwrap(), vec![head(3, 1)]);
    assert_eq!(store.latest_tree_head().await.unwrap(), Some(head(7, 1)));
}

pub async fn the_audit_log_chains_on_across_a_restart<S: Store + Clone>(
    store: S,
    reopen: impl AsyncFn(S) -> S,
) {
    store
        .commit(&logging(vec![token(0), token(1)]))
        .await
        .unwrap();
    let store = reopen(store).await;
    assert_eq!(store.audit_size().await.unwrap(), 2);
    store.commit(&logging(vec![token(2)])).await.unwrap();
    assert_eq!(signed_and_verified(&store).await, 3);
}
