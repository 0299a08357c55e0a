use std::sync::atomic::Ordering;

use super::agents::agent_row;
use super::*;

/// Events 1.. for agent "a", each online → degraded.
fn degradations(seqs: std::ops::RangeInclusive<u64>) -> Vec<Arc<Event>> {
    seqs.map(|i| {
        crate::store::conformance::event(
            i,
            "a",
            crate::model::Status::Online,
            crate::model::Status::Degraded,
        )
    })
    .collect()
}

#[test]
fn an_embedded_url_gets_sync_every_unless_it_names_a_mode() {
    assert_eq!(
        with_sync("surrealkv://data/vigil"),
        ("surrealkv://data/vigil?sync=every".to_string(), None)
    );
    assert_eq!(
        with_sync("surrealkv://d?versioned=true"),
        ("surrealkv://d?versioned=true&sync=every".to_string(), None)
    );
    assert_eq!(
        with_sync("surrealkv://d?sync=every"),
        ("surrealkv://d?sync=every".to_string(), None)
    );
    assert_eq!(
        with_sync("surrealkv://d?sync=never"),
        (
            "surrealkv://d?sync=never".to_string(),
            Some("never".to_string())
        )
    );
    assert_eq!(with_sync("mem://"), ("mem://".to_string(), None));
    assert_eq!(with_sync("ws://h:1"), ("ws://h:1".to_string(), None));
}

#[tokio::test]
async fn a_weaker_sync_mode_is_reported() {
    let (dir, small) = kv_dir("sync");
    let url = format!("surrealkv://{}/never?sync=never", dir.display());
    let s = SurrealStore::open(&url, small.clone()).await.expect("open");
    let warning = s.durability_warning().expect("a warning");
    assert!(warning.contains("never"), "{warning}");
    s.close().await;
    let url = format!("surrealkv://{}/every", dir.display());
    let s = SurrealStore::open(&url, small).await.expect("open");
    assert_eq!(s.durability_warning(), None);
    assert!(s.url.ends_with("?sync=every"), "{}", s.url);
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn surreal_mem_store_passes_the_conformance_suite() {
    crate::store::conformance::run_all(|| async {
        SurrealStore::open("mem://", SurrealOptions::default())
            .await
            .expect("open mem://")
    })
    .await;
}

#[tokio::test]
async fn a_segment_written_as_an_array_of_events_is_still_read() {
    let s = SurrealStore::open("mem://", SurrealOptions::default())
        .await
        .expect("open mem://");
    let ev = degradations(1..=3);
    s.write(
        "CREATE type::record('segment', $k) CONTENT $segment RETURN NONE",
        json!({ "k": 3, "segment": { "first_seq": 1, "last_seq": 3, "events": ev } }),
    )
    .await
    .expect("write an array segment");
    let read = s.segment(3).await.expect("read it back");
    assert_eq!(
        read.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(read[0], *ev[0]);
    s.close().await;
}

#[tokio::test]
async fn a_checkpoint_in_the_agent_table_is_read_and_the_next_one_is_full() {
    let s = SurrealStore::open("mem://", SurrealOptions::default())
        .await
        .expect("open mem://");
    let rec = crate::store::conformance::record("old", crate::model::Status::Offline);
    let mut row = agent_row(&rec).expect("row");
    row["id"] = Value::String("old".into());
    s.write(
        "INSERT INTO agent $rows RETURN NONE; UPSERT meta:checkpoint SET seq = 7 RETURN NONE;",
        json!({ "rows": [row] }),
    )
    .await
    .expect("write the old layout");
    // What an open of that store reads.
    s.init(s.conn.read().await.as_ref().expect("open"))
        .await
        .expect("init");
    let l = s.load().await.expect("load");
    assert_eq!(l.checkpoint_seq, 7);
    assert_eq!(l.agents, vec![rec.clone()]);
    assert_eq!(l.checkpoint_rows, None, "the next checkpoint must be full");
    assert!(s.checkpoint(&[], 7, false).await.is_err());
    let new = crate::store::conformance::record("new", crate::model::Status::Online);
    s.checkpoint(&[rec.clone(), new.clone()], 8, true)
        .await
        .expect("full checkpoint");
    let mut agents = s.load().await.expect("load").agents;
    agents.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(agents, vec![new, rec]);
    s.close().await;
}

#[tokio::test]
async fn surrealkv_store_passes_the_conformance_suite_and_survives_a_reopen() {
    let dir = std::env::temp_dir().join(format!("vigil-skv-{}", std::process::id()));
    let n = std::sync::atomic::AtomicUsize::new(0);
    let small = SurrealOptions {
        block_cache_bytes: 8 << 20,
        memtable_bytes: 8 << 20,
        ..SurrealOptions::default()
    };
    crate::store::conformance::run_all(|| async {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let url = format!("surrealkv://{}/c{i}", dir.display());
        SurrealStore::open(&url, small.clone()).await.expect("open")
    })
    .await;

    // Write, close, reopen: everything is there and the log continues.
    let url = format!("surrealkv://{}/reopen", dir.display());
    let s = SurrealStore::open(&url, small.clone()).await.expect("open");
    let ev = degradations(1..=5);
    s.append(&ev[..2]).await.expect("append");
    s.append(&ev[2..]).await.expect("append");
    s.checkpoint(
        &[crate::store::conformance::record(
            "a:1",
            crate::model::Status::Degraded,
        )],
        2,
        true,
    )
    .await
    .expect("checkpoint");
    s.close().await;
    drop(s);
    let s = SurrealStore::open(&url, small.clone())
        .await
        .expect("reopen");
    let l = s.load().await.expect("load");
    assert_eq!(l.last_seq, 5);
    assert_eq!(l.checkpoint_seq, 2);
    assert_eq!(
        l.events_after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(l.agents.len(), 1);
    assert_eq!(l.agents[0].id.as_str(), "a:1");
    assert_eq!(l.events_after[0], *ev[2]);
    assert!(!l.mirror_clean, "nothing was mirrored");

    // The mirror: a queryable row per agent, and a mark that survives a clean close.
    s.mirror(&l.agents, Some(2)).await.expect("mirror");
    let mut r = s
        .read(
            "SELECT VALUE agent_id FROM agent WHERE status = $s",
            json!({ "s": "degraded" }),
        )
        .await
        .expect("query the mirror");
    let ids: Vec<Value> = r.take(0).expect("ids");
    assert_eq!(ids, vec![json!("a:1")]);
    s.close().await;
    drop(s);
    let s = SurrealStore::open(&url, small.clone())
        .await
        .expect("reopen");
    let l = s.load().await.expect("load");
    assert!(l.mirror_clean, "the mirror was marked complete");
    assert_eq!(l.agents.len(), 1, "restore does not read the mirror");
    s.close().await;
    drop(s);
    // Opened and closed without a new mark: the mirror can no longer be trusted.
    let s = SurrealStore::open(&url, small).await.expect("reopen");
    assert!(!s.load().await.expect("load").mirror_clean);
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `registered` event of agent `id`, decided by `node`.
fn registration(id: &str, node: &str) -> Arc<Event> {
    Arc::new(Event {
        seq: 0,
        at: Utc::now(),
        agent: AgentId::new(id).ok(),
        kind: Some(Arc::from("worker")),
        node: Some(Arc::from(node)),
        body: crate::model::EventBody::Registered {
            from: None,
            status: crate::model::Status::Online,
            name: id.into(),
            metadata: Default::default(),
            capabilities: vec![],
            incarnation: 1,
            heartbeat_interval_ms: None,
        },
    })
}

#[tokio::test]
async fn a_node_writes_nothing_about_an_agent_another_node_claimed() {
    let s = SurrealStore::open("mem://", SurrealOptions::default())
        .await
        .expect("open");
    let batch = |node: &str, first: u64| BatchId {
        node: node.into(),
        first,
    };
    let x = AgentId::new("x").unwrap();
    // Node a claims x by registering it; its transitions of x are written.
    let mut first = vec![registration("x", "a")];
    first.extend(degradations(1..=1).into_iter().map(|e| {
        let mut e = Event::clone(&e);
        e.agent = Some(x.clone());
        Arc::new(e)
    }));
    let r = s
        .append_owned(&batch("a", 1), &first, false, "a")
        .await
        .unwrap();
    assert_eq!((r.events.len(), r.disowned.len()), (2, 0));
    // Node b's transition of x is left out: a owns it.
    let theirs: Vec<Arc<Event>> = first[1..].to_vec();
    let r = s
        .append_owned(&batch("b", 1), &theirs, false, "b")
        .await
        .unwrap();
    assert_eq!((r.events.len(), r.disowned.clone()), (0, vec![x.clone()]));
    // b takes x over; then a's late transition of x is left out, its alert is not.
    let r = s
        .append_owned(&batch("b", 2), &[registration("x", "b")], false, "b")
        .await
        .unwrap();
    assert_eq!(r.events[0].seq, 3);
    let mut late = first[1..].to_vec();
    late.push(Arc::new(Event::alert(
        0,
        Utc::now(),
        crate::model::Severity::Info,
        "a",
        "kept",
    )));
    let r = s
        .append_owned(&batch("a", 3), &late, false, "a")
        .await
        .unwrap();
    assert_eq!(r.disowned, vec![x.clone()]);
    assert_eq!(r.events.len(), 1);
    assert!(
        r.events[0].agent.is_none(),
        "only the alert: {:?}",
        r.events
    );
    assert_eq!(s.shared_head().await.unwrap(), 4);
    assert_eq!(
        s.owners().await.unwrap(),
        vec![("x".to_string(), "b".to_string())]
    );
    // Read back, and backwards.
    let all = s.read_shared(1, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let back = s.read_shared_back(4, 10).await.unwrap();
    let seqs: Vec<Vec<u64>> = back
        .iter()
        .map(|seg| seg.iter().map(|e| e.seq).collect())
        .collect();
    assert_eq!(seqs, vec![vec![3], vec![1, 2]]);
    assert_eq!(s.shared_oldest().await.unwrap(), Some(1));
}

#[tokio::test]
async fn one_adoption_moves_a_dead_nodes_agents_and_takes_its_hold() {
    let s = SurrealStore::open("mem://", SurrealOptions::default())
        .await
        .expect("open");
    s.write(
        "CREATE hold:⟨node-n1⟩ CONTENT { epoch: 3, holder: 'n1', released: false, writes: 0 };
         CREATE hold_beat:⟨node-n1⟩ CONTENT { epoch: 3, beat: 7 };",
        serde_json::json!({}),
    )
    .await
    .expect("n1's hold");
    let batch = |node: &str, first: u64| BatchId {
        node: node.into(),
        first,
    };
    s.append_owned(&batch("n1", 1), &[registration("x", "n1")], false, "n1")
        .await
        .unwrap();
    let leases = s.node_leases().await.unwrap();
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.node.as_str(), l.epoch, l.beat))
            .collect::<Vec<_>>(),
        vec![("n1", 3, 7)]
    );
    let adoption = |by: &str| Adoption {
        node: "n1".into(),
        epoch: 3,
        beat: 7,
        by: by.into(),
    };
    let alert = |by: &str| {
        let mut e = Event::alert(
            0,
            Utc::now(),
            crate::model::Severity::High,
            "node_adopted",
            "",
        );
        e.node = Some(Arc::from(by));
        Arc::new(e)
    };
    s.adopt(&batch("n2", 1), alert("n2"), "n2", &adoption("n2"))
        .await
        .expect("n2 adopts n1");
    assert_eq!(
        s.owners().await.unwrap(),
        vec![("x".to_string(), "n2".to_string())]
    );
    assert_eq!(s.node_leases().await.unwrap()[0].epoch, 4, "n1 is fenced");
    match s
        .adopt(&batch("n3", 1), alert("n3"), "n3", &adoption("n3"))
        .await
    {
        Err(StoreError::Held(_)) => {}
        other => panic!("a second adoption must be refused: {other:?}"),
    }
    assert_eq!(s.shared_head().await.unwrap(), 2, "one adoption in the log");
}

/// A fresh SurrealKV directory for one test, small caches.
fn kv_dir(name: &str) -> (std::path::PathBuf, SurrealOptions) {
    let dir = std::env::temp_dir().join(format!("vigil-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let small = SurrealOptions {
        block_cache_bytes: 8 << 20,
        memtable_bytes: 8 << 20,
        ..SurrealOptions::default()
    };
    (dir, small)
}

#[tokio::test]
async fn a_store_written_by_a_newer_schema_is_refused() {
    let (dir, opts) = kv_dir("newer-schema");
    let url = format!("surrealkv://{}", dir.display());
    let s = SurrealStore::open(&url, opts.clone()).await.expect("open");
    s.write(
        "UPSERT meta:schema SET version = $v RETURN NONE",
        json!({ "v": SCHEMA_VERSION + 1 }),
    )
    .await
    .expect("write a newer version");
    s.close().await;
    match SurrealStore::open(&url, opts).await {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("newer vigil"), "{msg}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(s) => {
            s.close().await;
            panic!("a store of a newer schema was opened");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An embedded store keeps no index on its segments and writes no `meta:log` per commit
/// (two thirds of a commit's CPU): after a restart the log goes on from its last seq, whether that
/// is a segment's or, with every segment dropped, the checkpoint's; the index an earlier
/// version kept is removed at open.
#[tokio::test]
async fn an_embedded_log_goes_on_after_a_restart_without_its_index() {
    use crate::store::conformance::record;
    let (dir, opts) = kv_dir("no-index");
    let url = format!("surrealkv://{}", dir.display());
    let s = SurrealStore::open(&url, opts.clone()).await.expect("open");
    s.write(
        "DEFINE INDEX IF NOT EXISTS segment_last ON segment FIELDS last_seq",
        json!({}),
    )
    .await
    .expect("the index an earlier version defined");
    let ev = degradations(1..=9);
    s.append(&ev[0..4]).await.expect("append 1-4");
    s.append(&ev[4..8]).await.expect("append 5-8");
    s.close().await;

    let s = SurrealStore::open(&url, opts.clone())
        .await
        .expect("reopen");
    let mut r = s
        .read("INFO FOR TABLE segment", json!({}))
        .await
        .expect("info");
    let info: Option<Value> = r.take(0).expect("info row");
    let indexes = info.expect("table info")["indexes"].clone();
    assert_eq!(indexes, json!({}), "the segment index is removed");
    assert_eq!(s.load().await.expect("load").last_seq, 8);
    match s.append(&ev[4..5]).await {
        Err(StoreError::OutOfOrder {
            expected: 9,
            got: 5,
        }) => {}
        other => panic!("an old seq must be refused, got {other:?}"),
    }
    s.checkpoint(&[record("a", crate::model::Status::Degraded)], 8, true)
        .await
        .expect("checkpoint");
    let drop_all = Retention {
        max_events: Some(0),
        max_age: None,
    };
    assert_eq!(s.retain(&drop_all).await.expect("retain"), None);
    s.close().await;

    let s = SurrealStore::open(&url, opts)
        .await
        .expect("reopen after retention");
    let loaded = s.load().await.expect("load");
    assert_eq!((loaded.last_seq, loaded.events_after.len()), (8, 0));
    s.append(&ev[8..9]).await.expect("the log goes on at 9");
    assert_eq!(
        s.read_events(0, 10).await.expect("read")[0].seq,
        9,
        "only the new segment is left"
    );
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
