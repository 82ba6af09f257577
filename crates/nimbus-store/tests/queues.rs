//! The store's queues: receive makes messages invisible and counts receives, only the latest
//! receipt deletes, redrive moves messages after too many receives, FIFO groups are locked while
//! a message is in flight, deduplication, counts, retention and purge.

use std::collections::BTreeMap;

use nimbus_store::{
    Dedup, HandleOutcome, NewMessage, QueueMessage, QueueOp, QueueOpResult, QueueRecord, Redrive,
    SqliteStore, Store, StoreError,
};

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nimbus.db")).unwrap();
    (dir, store)
}

async fn queue(store: &SqliteStore, name: &str) {
    store
        .create_queue(QueueRecord {
            name: name.into(),
            attributes: "{}".into(),
            tags: BTreeMap::new(),
            created_ms: 1,
            modified_ms: 1,
        })
        .await
        .unwrap();
}

fn msg(body: &str, sent_ms: i64) -> NewMessage {
    NewMessage {
        message_id: format!("id-{body}"),
        body: body.into(),
        attributes: None,
        system_attributes: None,
        md5_body: "md5".into(),
        md5_attributes: None,
        sent_ms,
        visible_ms: sent_ms,
        expires_ms: sent_ms + 1_000_000,
        group_id: None,
        dedup: None,
    }
}

async fn one(store: &SqliteStore, op: QueueOp) -> Result<QueueOpResult, StoreError> {
    let mut out = store.queue_ops(vec![op]).await.unwrap();
    out.pop().unwrap()
}

async fn send(store: &SqliteStore, queue: &str, messages: Vec<NewMessage>) {
    one(
        store,
        QueueOp::Send {
            queue: queue.into(),
            messages,
        },
    )
    .await
    .unwrap();
}

async fn receive_with(
    store: &SqliteStore,
    queue: &str,
    max: usize,
    now_ms: i64,
    fifo: bool,
    redrive: Option<Redrive>,
) -> (Vec<QueueMessage>, u32, Option<i64>) {
    match one(
        store,
        QueueOp::Receive {
            queue: queue.into(),
            max,
            now_ms,
            visible_until_ms: now_ms + 100,
            fifo,
            redrive,
            receipt: now_ms * 7 + 3,
        },
    )
    .await
    .unwrap()
    {
        QueueOpResult::Received {
            messages,
            moved,
            next_visible_ms,
        } => (messages, moved, next_visible_ms),
        other => panic!("unexpected {other:?}"),
    }
}

async fn receive(store: &SqliteStore, queue: &str, max: usize, now_ms: i64) -> Vec<QueueMessage> {
    receive_with(store, queue, max, now_ms, false, None).await.0
}

fn bodies(ms: &[QueueMessage]) -> Vec<&str> {
    ms.iter().map(|m| m.body.as_str()).collect()
}

async fn handles(store: &SqliteStore, op: QueueOp) -> Vec<HandleOutcome> {
    match one(store, op).await.unwrap() {
        QueueOpResult::Handles(h) => h,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn receive_hides_messages_until_their_visibility_ends_and_counts_receives() {
    let (_d, store) = open();
    queue(&store, "q").await;
    send(&store, "q", vec![msg("a", 10), msg("b", 20), msg("c", 30)]).await;
    let first = receive(&store, "q", 2, 1000).await;
    assert_eq!(bodies(&first), ["a", "b"]);
    assert_eq!(first[0].receive_count, 1);
    assert_eq!(first[0].first_receive_ms, Some(1000));
    // a and b are in flight until 1100; c is still there.
    assert_eq!(bodies(&receive(&store, "q", 10, 1050).await), ["c"]);
    let counts = store.queue_counts("q", 1060).await.unwrap();
    assert_eq!(
        (counts.visible, counts.in_flight, counts.delayed),
        (0, 3, 0)
    );
    // Nothing visible: the receive says when the next message is.
    let (none, _, next) = receive_with(&store, "q", 10, 1060, false, None).await;
    assert!(none.is_empty());
    assert_eq!(next, Some(1100));
    // After the visibility timeout a and b come back, received twice, with a new receipt.
    let again = receive(&store, "q", 10, 1100).await;
    assert_eq!(bodies(&again), ["a", "b"]);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].first_receive_ms, Some(1000));
    assert_ne!(again[0].receipt, first[0].receipt);
}

#[tokio::test]
async fn only_the_latest_receipt_deletes_or_changes_visibility() {
    let (_d, store) = open();
    queue(&store, "q").await;
    send(&store, "q", vec![msg("a", 10)]).await;
    let old = receive(&store, "q", 1, 1000).await.remove(0);
    let new = receive(&store, "q", 1, 1200).await.remove(0);
    let out = handles(
        &store,
        QueueOp::Delete {
            queue: "q".into(),
            handles: vec![(old.seq, old.receipt)],
        },
    )
    .await;
    assert_eq!(out, [HandleOutcome::Stale]);
    // Visibility: the latest receipt moves it; once visible it is no longer in flight.
    let out = handles(
        &store,
        QueueOp::ChangeVisibility {
            queue: "q".into(),
            now_ms: 1210,
            entries: vec![(new.seq, new.receipt, 1210), (old.seq, old.receipt, 5000)],
        },
    )
    .await;
    assert_eq!(out, [HandleOutcome::Done, HandleOutcome::Stale]);
    let out = handles(
        &store,
        QueueOp::ChangeVisibility {
            queue: "q".into(),
            now_ms: 1220,
            entries: vec![(new.seq, new.receipt, 9000)],
        },
    )
    .await;
    assert_eq!(out, [HandleOutcome::NotInFlight]);
    let out = handles(
        &store,
        QueueOp::Delete {
            queue: "q".into(),
            handles: vec![(new.seq, new.receipt), (new.seq, new.receipt)],
        },
    )
    .await;
    assert_eq!(out, [HandleOutcome::Done, HandleOutcome::Gone]);
    assert!(receive(&store, "q", 10, 99_999).await.is_empty());
}

#[tokio::test]
async fn redrive_moves_a_message_received_too_often_keeping_its_id() {
    let (_d, store) = open();
    queue(&store, "src").await;
    queue(&store, "dlq").await;
    send(&store, "src", vec![msg("poison", 10)]).await;
    let redrive = Some(Redrive {
        dead_letter_queue: "dlq".into(),
        max_receive_count: 2,
        retention_ms: 50_000,
    });
    for now in [1000, 2000] {
        let (got, moved, _) = receive_with(&store, "src", 1, now, false, redrive.clone()).await;
        assert_eq!(bodies(&got), ["poison"]);
        assert_eq!(moved, 0);
    }
    send(&store, "src", vec![msg("fine", 2500)]).await;
    // The third receive moves it and hands out the next message instead.
    let (got, moved, _) = receive_with(&store, "src", 1, 3000, false, redrive).await;
    assert_eq!(bodies(&got), ["fine"]);
    assert_eq!(moved, 1);
    let dead = receive(&store, "dlq", 10, 3001).await;
    assert_eq!(bodies(&dead), ["poison"]);
    assert_eq!(dead[0].message_id, "id-poison");
    assert_eq!(dead[0].receive_count, 1);
    // The dead-letter queue's retention counts from the original send.
    assert_eq!(store.expire_queue_messages(50_010).await.unwrap(), 1);
}

#[tokio::test]
async fn fifo_groups_are_locked_while_a_message_is_in_flight_and_duplicates_are_dropped() {
    let (_d, store) = open();
    queue(&store, "f.fifo").await;
    let fifo_msg = |body: &str, group: &str, dedup: &str| NewMessage {
        group_id: Some(group.into()),
        dedup: Some(Dedup {
            key: dedup.into(),
            id: dedup.into(),
            until_ms: 500,
        }),
        ..msg(body, 10)
    };
    let out = one(
        &store,
        QueueOp::Send {
            queue: "f.fifo".into(),
            messages: vec![
                fifo_msg("g1-a", "g1", "d1"),
                fifo_msg("g2-a", "g2", "d2"),
                fifo_msg("g1-b", "g1", "d3"),
                fifo_msg("dup", "g1", "d1"),
            ],
        },
    )
    .await
    .unwrap();
    let QueueOpResult::Sent(sent) = out else {
        panic!("{out:?}")
    };
    assert!(sent[3].duplicate);
    assert_eq!(sent[3].message_id, "id-g1-a");
    assert_eq!(sent[3].seq, sent[0].seq);
    let (got, _, _) = receive_with(&store, "f.fifo", 1, 100, true, None).await;
    assert_eq!(bodies(&got), ["g1-a"]);
    // g1 is locked while g1-a is in flight: only g2 is served.
    let (got, _, _) = receive_with(&store, "f.fifo", 10, 110, true, None).await;
    assert_eq!(bodies(&got), ["g2-a"]);
    let (got, _, next) = receive_with(&store, "f.fifo", 10, 120, true, None).await;
    assert!(got.is_empty());
    // g1-b is visible but held back by its group: the next change is g1-a's visibility ending.
    assert_eq!(next, Some(200));
    // When the visibility ends, everything comes back in send order (g1-a before g1-b).
    let (got, _, _) = receive_with(&store, "f.fifo", 10, 300, true, None).await;
    assert_eq!(bodies(&got), ["g1-a", "g2-a", "g1-b"]);
    // After the deduplication window the same id is a new message.
    let out = one(
        &store,
        QueueOp::Send {
            queue: "f.fifo".into(),
            messages: vec![NewMessage {
                sent_ms: 600,
                ..fifo_msg("late", "g3", "d1")
            }],
        },
    )
    .await
    .unwrap();
    assert!(matches!(out, QueueOpResult::Sent(ref s) if !s[0].duplicate));
}

#[tokio::test]
async fn delays_counts_purge_unknown_queues_and_retention() {
    let (_d, store) = open();
    queue(&store, "q").await;
    let delayed = NewMessage {
        visible_ms: 5000,
        ..msg("later", 10)
    };
    let short = NewMessage {
        expires_ms: 2000,
        ..msg("short", 10)
    };
    send(&store, "q", vec![delayed, short, msg("now", 10)]).await;
    let c = store.queue_counts("q", 100).await.unwrap();
    assert_eq!((c.visible, c.in_flight, c.delayed), (2, 0, 1));
    // Past its retention a message is neither received nor counted, and expiry deletes it.
    assert_eq!(bodies(&receive(&store, "q", 10, 3000).await), ["now"]);
    assert_eq!(store.expire_queue_messages(3000).await.unwrap(), 1);
    // "now" is visible again (since 3100) before "later" (5000).
    assert_eq!(
        bodies(&receive(&store, "q", 10, 5000).await),
        ["now", "later"]
    );
    // One op on an unknown queue fails alone; the others in the batch apply.
    let out = store
        .queue_ops(vec![
            QueueOp::Send {
                queue: "missing".into(),
                messages: vec![msg("x", 1)],
            },
            QueueOp::Purge { queue: "q".into() },
        ])
        .await
        .unwrap();
    assert!(matches!(out[0], Err(StoreError::NotFound(_))));
    assert_eq!(out[1].as_ref().unwrap(), &QueueOpResult::Purged(2));
    assert!(matches!(
        store.queue_counts("missing", 1).await,
        Err(StoreError::NotFound(_))
    ));
    // Names are unique; deleting removes the queue and its messages.
    assert!(matches!(
        store
            .create_queue(QueueRecord {
                name: "q".into(),
                attributes: "{}".into(),
                tags: BTreeMap::new(),
                created_ms: 1,
                modified_ms: 1,
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    store.delete_queue("q").await.unwrap();
    assert!(store.list_queues("").await.unwrap().is_empty());
}

#[tokio::test]
async fn ops_run_now_on_the_callers_thread_commit_like_the_async_path() {
    let (_dir, store) = open();
    queue(&store, "q").await;
    let op = QueueOp::Send {
        queue: "q".into(),
        messages: vec![msg("a", 10)],
    };
    // The connection is free: the op runs here and now.
    let mut out = store.queue_ops_now(&[op]).unwrap().unwrap();
    assert!(matches!(out.pop(), Some(Ok(QueueOpResult::Sent(s))) if s.len() == 1));
    // An unknown queue is that op's own error, as through `queue_ops`.
    let unknown = QueueOp::Delete {
        queue: "nope".into(),
        handles: vec![(1, 1)],
    };
    let mut out = store.queue_ops_now(&[unknown]).unwrap().unwrap();
    assert!(matches!(out.pop(), Some(Err(StoreError::NotFound(_)))));
    assert_eq!(bodies(&receive(&store, "q", 10, 20).await), ["a"]);
}

#[tokio::test]
async fn the_checkpointer_copies_the_wal_into_the_database_file() {
    let (dir, store) = open();
    queue(&store, "q").await;
    let db = dir.path().join("nimbus.db");
    let before = std::fs::metadata(&db).unwrap().len();
    for i in 0..200 {
        let body = format!("{i:0>2000}");
        send(&store, "q", vec![msg(&body, 10)]).await;
    }
    // Automatic checkpoints are off; only the checkpoint thread (every 250 ms) grows the file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = before;
    while after < before + 200 * 2000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = std::fs::metadata(&db).unwrap().len();
    }
    assert!(
        after >= before + 200 * 2000,
        "database file {before} → {after} bytes: the WAL was not checkpointed"
    );
}
