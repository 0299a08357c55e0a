use super::*;
use crate::cli::render::format_event;

/// A frame as the watcher takes it: read as a client reads it, kept as it came.
fn on(c: &mut Cursor, value: Value) -> (Option<WatchLine>, Option<Start>) {
    let received = crate::client::Received::from_value(value.clone()).expect("a server frame");
    c.on_frame(&received.frame, value)
}

fn event(seq: u64) -> Value {
    json!({"type":"event","seq":seq,"at":"2026-11-23T10:00:31.002Z","event":"transition",
               "agent":"a1","kind":"worker","from":"online","to":"degraded",
               "reason":"heartbeat_missed","missed":1})
}

#[test]
fn the_cursor_shows_each_seq_once_and_resumes_after_the_last_shown() {
    let mut c = Cursor::new(None);
    assert_eq!(c.start(), Start::Snapshot);
    let (line, again) = on(
        &mut c,
        json!({"type":"snapshot","seq":10,"agents":[],"jobs":[],"stats":{}}),
    );
    assert!(matches!(line, Some(WatchLine::Snapshot(_))));
    assert_eq!(again, None);
    assert_eq!(c.start(), Start::Since(10));
    // An event at or before the snapshot is not shown.
    assert_eq!(on(&mut c, event(10)), (None, None));
    let (line, _) = on(&mut c, event(11));
    assert!(matches!(line, Some(WatchLine::Event { seq: 11, .. })));
    assert_eq!(on(&mut c, event(11)), (None, None), "never twice");
    assert_eq!(on(&mut c, event(9)), (None, None));
    let (line, _) = on(&mut c, event(14)); // a filter may skip seqs
    assert!(line.is_some());
    assert_eq!(c.start(), Start::Since(14));

    // lagged: resume after the last seq shown (not the server's idea of it).
    let (line, again) = on(&mut c, json!({"type":"lagged","last_seq":20}));
    assert_eq!(
        line.and_then(|l| match l {
            WatchLine::Lagged { resume_after, .. } => resume_after,
            _ => None,
        }),
        Some(14)
    );
    assert_eq!(again, Some(Start::Since(14)));

    // resync_required: a snapshot, and the cursor forgets what it cannot vouch for.
    let (line, again) = on(&mut c, json!({"type":"resync_required","oldest":100}));
    assert!(matches!(
        line,
        Some(WatchLine::Resync {
            oldest: 100,
            last_seq: Some(14),
            ..
        })
    ));
    assert_eq!(again, Some(Start::Snapshot));
    assert_eq!(c.last_seq(), None);
    let (line, _) = on(&mut c, event(12));
    assert!(line.is_some(), "with no cursor, an event is shown");
}

#[test]
fn a_watch_started_since_a_seq_resumes_from_it_and_lagged_without_events_keeps_it() {
    let mut c = Cursor::new(Some(5));
    assert_eq!(c.start(), Start::Since(5));
    assert_eq!(on(&mut c, event(5)), (None, None));
    let (_, again) = on(&mut c, json!({"type":"lagged","last_seq":5}));
    assert_eq!(again, Some(Start::Since(5)));
    // Lagged before anything was shown or snapshotted: the server's last seq.
    let mut c = Cursor::new(None);
    let (_, again) = on(&mut c, json!({"type":"lagged","last_seq":7}));
    assert_eq!(again, Some(Start::Since(7)));
}

#[test]
fn the_subscribe_frame_carries_topics_filter_and_start() {
    let mut o = WatchOptions::new(ClientConfig::new("x:1"));
    o.kinds = vec!["worker".into()];
    o.statuses = vec![Status::Offline];
    let f = o.subscribe_frame(Start::Snapshot, 3);
    assert_eq!(
        f,
        json!({"type":"subscribe","topics":["agents","alerts"],
                   "filter":{"kinds":["worker"],"ids":[],"statuses":["offline"]},
                   "snapshot":true,"ref":3})
    );
    let f = o.subscribe_frame(Start::Since(42), 4);
    assert_eq!(f["since"], 42);
    assert!(f.get("snapshot").is_none());
}

#[test]
fn events_print_as_one_line_with_the_status_as_text_and_colour_only_when_asked() {
    let plain = format_event(&event(1235), false);
    assert_eq!(
        plain,
        "10:00:31.002    1235  a1                    worker      transition    \
             online -> degraded  heartbeat_missed (missed 1)"
    );
    assert!(!plain.contains('\u{1b}'));
    let coloured = format_event(&event(1235), true);
    assert!(coloured.starts_with("\u{1b}[33m"), "{coloured:?}"); // yellow
    assert!(coloured.contains("online -> degraded"));
    let gone = json!({"type":"event","seq":3,"at":"2026-11-23T10:00:31.002Z",
            "event":"deregistered","agent":"a1","kind":"w","from":"offline","reason":"evicted"});
    let line = format_event(&gone, false);
    assert!(line.contains("offline -> left  evicted"), "{line}");
    let reg = json!({"type":"event","seq":1,"at":"2026-11-23T10:00:31.002Z",
            "event":"registered","agent":"a1","kind":"w","from":null,"status":"online",
            "incarnation":1});
    assert!(format_event(&reg, false).contains("new -> online  registered, incarnation 1"));
    assert!(format_event(&reg, true).starts_with("\u{1b}[32m")); // green
}

#[test]
fn a_snapshot_is_summed_up_by_status() {
    let f = json!({"type":"snapshot","seq":12,"agents":[
            {"id":"a","status":"online"},{"id":"b","status":"offline"},{"id":"c","status":"online"}]});
    assert_eq!(
        snapshot_summary(&f),
        "snapshot at seq 12: 3 agents (online 2, offline 1)"
    );
    assert_eq!(
        snapshot_summary(&json!({"type":"snapshot","seq":0,"agents":[]})),
        "snapshot at seq 0: no agents"
    );
}

#[test]
fn json_mode_prints_frames_and_keeps_the_watchers_news_on_stderr() {
    let e = WatchLine::Event {
        seq: 1,
        frame: event(1),
    };
    let (s, t) = render(&e, true, false).unwrap();
    assert_eq!(s, Stream::Out);
    assert_eq!(serde_json::from_str::<Value>(&t).unwrap(), event(1));
    let d = WatchLine::Disconnected {
        error: "x".into(),
        retry_in: Duration::from_millis(500),
    };
    assert_eq!(render(&d, true, false).unwrap().0, Stream::Err);
    assert_eq!(render(&d, false, false).unwrap().0, Stream::Err);
}
