//! The webhook feed's promises: notifications in commit order, positions that never move back
//! (across restarts and trims too), webhooks fed from their registration on and never brought
//! back once deleted, their deliveries claimed by one node.

use super::*;

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
        event_seq: None,
        correlation_id: None,
        causation_id: None,
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
        format: Default::default(),
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
