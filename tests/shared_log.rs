//! The log a cluster's nodes share, on a real SurrealDB server: writers appending at once
//! get one gapless sequence, each batch whole and in its order, each exactly once, and a
//! retried batch lands once.

mod surreal;

use std::collections::BTreeMap;
use std::sync::Arc;

use surreal::{alert as event, SurrealServer};
use vigil::core::store::{BatchId, SurrealOptions, SurrealStore};
use vigil::core::{Event, EventBody};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_at_once_share_one_gapless_log_and_a_retry_lands_once() {
    let surreal = tokio::task::spawn_blocking(SurrealServer::start)
        .await
        .expect("server");
    let url = surreal.url();
    const WRITERS: usize = 3;
    const BATCHES: u64 = 40;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("n{w}");
            let store = SurrealStore::open(&url, SurrealOptions::default())
                .await
                .expect("open");
            let mut next = 1;
            let mut conflicts = 0;
            let mut placed = Vec::new();
            for b in 0..BATCHES {
                let size = 1 + (b + w as u64) % 4;
                let events: Vec<_> = (next..next + size).map(|n| event(&node, n)).collect();
                let id = BatchId {
                    node: node.clone(),
                    first: next,
                };
                let done = store
                    .append_shared(&id, &events, false)
                    .await
                    .expect("append");
                conflicts += done.conflicts;
                placed.push((id, events, done.events));
                next += size;
            }
            (store, conflicts, placed)
        }));
    }
    let mut all = Vec::new();
    let mut conflicts = 0;
    let mut stores = Vec::new();
    for t in tasks {
        let (store, c, placed) = t.await.expect("writer");
        conflicts += c;
        stores.push(store);
        all.extend(placed);
    }
    // The writers did meet (a test of serialization must have had something to serialize).
    eprintln!("{conflicts} appends lost the head to another writer and numbered again");

    let reader = &stores[0];
    let total: u64 = all.iter().map(|(_, e, _)| e.len() as u64).sum();
    assert_eq!(reader.shared_head().await.expect("head"), total);
    let log = reader.read_shared(1, usize::MAX).await.expect("read");
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "gapless, each seq once"
    );
    // Each batch whole, in its order, at the seqs its append returned.
    let by_seq: BTreeMap<u64, &Event> = log.iter().map(|e| (e.seq, e)).collect();
    for (id, sent, stored) in &all {
        assert_eq!(sent.len(), stored.len());
        for (w, (s, st)) in sent.iter().zip(stored).enumerate() {
            if w > 0 {
                assert_eq!(st.seq, stored[w - 1].seq + 1, "batch {id:?} split");
            }
            assert_eq!(by_seq[&st.seq].body, s.body, "batch {id:?} at {}", st.seq);
        }
    }
    // Every writer's events appear in the writer's order.
    for w in 0..WRITERS {
        let node = format!("n{w}");
        let mine: Vec<String> = log
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Alert { issue, detail, .. } if *issue == node => Some(detail.clone()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (1..=mine.len() as u64).map(|n| n.to_string()).collect();
        assert_eq!(mine, expected, "writer {node}");
    }

    // A batch appended again (as after an unknown outcome) keeps its place and adds nothing.
    let (id, sent, stored) = &all[all.len() / 2];
    let again = stores[1]
        .append_shared(id, sent, true)
        .await
        .expect("append again");
    let head = reader.shared_head().await.expect("head");
    let stored_seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
    let again_seqs: Vec<u64> = again.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        (head, again_seqs),
        (total, stored_seqs),
        "a retried batch lands once"
    );
}

/// A tail started before the writers yields every event once, in seq order, as they commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_sees_every_writers_events_once_in_order() {
    use vigil::core::store::LogTail;

    let surreal = tokio::task::spawn_blocking(SurrealServer::start)
        .await
        .expect("server");
    let url = surreal.url();
    let reader = SurrealStore::open(&url, SurrealOptions::default())
        .await
        .expect("open");
    let mut tail = LogTail::new(reader.clone(), 0, std::time::Duration::from_millis(5));
    const WRITERS: usize = 2;
    const BATCHES: u64 = 30;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let node = format!("n{w}");
            let store = SurrealStore::open(&url, SurrealOptions::default())
                .await
                .expect("open");
            let mut stored = Vec::new();
            for b in 0..BATCHES {
                let events = vec![event(&node, 2 * b + 1), event(&node, 2 * b + 2)];
                let id = BatchId {
                    node: node.clone(),
                    first: 2 * b + 1,
                };
                let done = store
                    .append_shared(&id, &events, false)
                    .await
                    .expect("append");
                stored.extend(done.events);
            }
            stored
        }));
    }
    let total = WRITERS as u64 * BATCHES * 2;
    let mut seen: Vec<Event> = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while (seen.len() as u64) < total {
            seen.extend(tail.next_batch(1000).await.expect("tail"));
        }
    })
    .await
    .expect("the tail saw every event within 60 s");
    let mut stored: Vec<Arc<Event>> = Vec::new();
    for w in writers {
        stored.extend(w.await.expect("writer"));
    }
    stored.sort_by_key(|e| e.seq);
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "each seq once, in order"
    );
    // Compared as written (times are kept to the millisecond).
    let text = |e: &Event| serde_json::to_string(e).expect("an event is JSON");
    for (s, st) in seen.iter().zip(&stored) {
        assert_eq!(text(s), text(st), "the tail yields what was stored");
    }
    assert_eq!(tail.next_seq(), total + 1);
}
