//! The exact bytes of every server frame, and frames read back as a client reads them.

use serde_json::json;

use super::*;

const T: &str = "2026-11-23T10:00:31.002Z";

/// How the frames were written before they had a type: a `json!` object with `ref`
/// added, as text. Each golden line is checked against it too.
fn json_line(mut frame: Value, reference: Option<&Value>) -> String {
    if let Some(r) = reference {
        frame["ref"] = r.clone();
    }
    let mut s = frame.to_string();
    s.push('\n');
    s
}

/// The frame writes exactly `golden` (as the `json!` object did before), and a client
/// reading `golden` gets the frame and its `ref` back.
fn pin(frame: ServerFrame, reference: Option<Value>, json: Value, golden: &str) {
    let line = frame.line(reference.as_ref());
    assert_eq!(line, golden);
    assert_eq!(json_line(json, reference.as_ref()), golden);
    assert_eq!(
        frame.text(reference.as_ref()),
        golden.trim_end_matches('\n')
    );
    assert_eq!(read(golden), (frame, reference));
}

/// A line as a client reads it.
fn read(line: &str) -> (ServerFrame<'static>, Option<Value>) {
    let r = Received::from_value(serde_json::from_str(line).expect("JSON")).expect("a frame");
    (r.frame, r.reference)
}

#[test]
fn welcome_on_tcp_and_on_websocket() {
    let tcp = ServerFrame::Welcome(Welcome {
        protocol: 1,
        session: Some(format!("{:016x}", 0xabu64)),
        server: SERVER_NAME.into(),
        heartbeat_interval_ms: Some(5000),
        time: T.into(),
        features: Vec::new(),
    });
    pin(
        tcp,
        Some(json!(1)),
        json!({
            "type": "welcome",
            "protocol": 1,
            "session": format!("{:016x}", 0xabu64),
            "server": concat!("vigil/", env!("CARGO_PKG_VERSION")),
            "heartbeat_interval_ms": 5000u64,
            "time": T,
        }),
        concat!(
            r#"{"heartbeat_interval_ms":5000,"protocol":1,"ref":1,"server":"vigil/"#,
            env!("CARGO_PKG_VERSION"),
            r#"","session":"00000000000000ab","time":"2026-11-23T10:00:31.002Z","type":"welcome"}"#,
            "\n"
        ),
    );
    let ws = ServerFrame::Welcome(Welcome {
        protocol: 1,
        session: None,
        server: SERVER_NAME.into(),
        heartbeat_interval_ms: None,
        time: T.into(),
        features: Vec::new(),
    });
    pin(
        ws,
        None,
        json!({
            "type": "welcome", "protocol": 1,
            "server": concat!("vigil/", env!("CARGO_PKG_VERSION")), "time": T,
        }),
        concat!(
            r#"{"protocol":1,"server":"vigil/"#,
            env!("CARGO_PKG_VERSION"),
            r#"","time":"2026-11-23T10:00:31.002Z","type":"welcome"}"#,
            "\n"
        ),
    );
}

#[test]
fn pong_ack_and_result() {
    pin(
        ServerFrame::Pong { time: T.into() },
        Some(json!("x")),
        json!({"type": "pong", "time": T}),
        "{\"ref\":\"x\",\"time\":\"2026-11-23T10:00:31.002Z\",\"type\":\"pong\"}\n",
    );
    pin(
        ServerFrame::Ack,
        Some(json!(7)),
        json!({"type": "ack"}),
        "{\"ref\":7,\"type\":\"ack\"}\n",
    );
    let data = json!({"b": 1, "a": [1, {"z": null, "y": "s"}]});
    pin(
        ServerFrame::Result {
            ok: true,
            data: data.clone(),
        },
        Some(json!({"k": 1})),
        json!({"type": "result", "ok": true, "data": data}),
        "{\"data\":{\"a\":[1,{\"y\":\"s\",\"z\":null}],\"b\":1},\"ok\":true,\"ref\":{\"k\":1},\
         \"type\":\"result\"}\n",
    );
}

#[test]
fn registered_deregistered_and_evicted() {
    pin(
        ServerFrame::Registered {
            id: "a1".into(),
            status: Status::Online,
            heartbeat_interval_ms: 5000,
            incarnation: 2,
        },
        Some(json!(3)),
        json!({
            "type": "registered",
            "id": "a1",
            "status": "online",
            "heartbeat_interval_ms": 5000u64,
            "incarnation": 2u64,
        }),
        "{\"heartbeat_interval_ms\":5000,\"id\":\"a1\",\"incarnation\":2,\"ref\":3,\
         \"status\":\"online\",\"type\":\"registered\"}\n",
    );
    pin(
        ServerFrame::Deregistered { id: "a1".into() },
        Some(json!(4)),
        json!({"type": "deregistered", "id": "a1"}),
        "{\"id\":\"a1\",\"ref\":4,\"type\":\"deregistered\"}\n",
    );
    pin(
        ServerFrame::Evicted {
            id: "a1".into(),
            reason: EvictedReason::TakenOver,
        },
        None,
        json!({"type": "evicted", "id": "a1", "reason": "taken_over"}),
        "{\"id\":\"a1\",\"reason\":\"taken_over\",\"type\":\"evicted\"}\n",
    );
    pin(
        ServerFrame::Evicted {
            id: "a1".into(),
            reason: EvictedReason::Evicted,
        },
        None,
        json!({"type": "evicted", "id": "a1", "reason": "evicted"}),
        "{\"id\":\"a1\",\"reason\":\"evicted\",\"type\":\"evicted\"}\n",
    );
}

#[test]
fn errors() {
    let code = ErrorCode::NotOwner;
    let message = "another connection owns this agent";
    let golden = "{\"code\":\"not_owner\",\"message\":\"another connection owns this agent\",\
                  \"ref\":{\"k\":1},\"type\":\"error\"}\n";
    pin(
        ServerFrame::Error {
            code,
            message: message.into(),
        },
        Some(json!({"k": 1})),
        json!({ "type": "error", "code": code, "message": message }),
        golden,
    );
    assert_eq!(
        crate::protocol::error_line(code, message, Some(&json!({"k": 1}))),
        golden
    );
    pin(
        ServerFrame::Error {
            code: ErrorCode::FrameTooLarge,
            message: "m".into(),
        },
        None,
        json!({ "type": "error", "code": ErrorCode::FrameTooLarge, "message": "m" }),
        "{\"code\":\"frame_too_large\",\"message\":\"m\",\"type\":\"error\"}\n",
    );
}

#[test]
fn snapshot_lagged_and_resync_required() {
    let jobs = vec![json!({"agent": "a1", "job": "j", "state": "running", "progress": 0.5})];
    let stats = json!({"agents": 1, "at": T, "jobs": 0});
    pin(
        ServerFrame::Snapshot {
            seq: 12,
            agents: Cow::Borrowed(&[]),
            jobs: jobs.clone(),
            stats: stats.clone(),
        },
        None,
        json!({
            "type": "snapshot",
            "seq": 12u64,
            "agents": Vec::<AgentRecord>::new(),
            "jobs": jobs,
            "stats": stats,
        }),
        "{\"agents\":[],\"jobs\":[{\"agent\":\"a1\",\"job\":\"j\",\"progress\":0.5,\
         \"state\":\"running\"}],\"seq\":12,\"stats\":{\"agents\":1,\
         \"at\":\"2026-11-23T10:00:31.002Z\",\"jobs\":0},\"type\":\"snapshot\"}\n",
    );
    pin(
        ServerFrame::Lagged { last_seq: 41 },
        None,
        json!({"type": "lagged", "last_seq": 41u64}),
        "{\"last_seq\":41,\"type\":\"lagged\"}\n",
    );
    pin(
        ServerFrame::ResyncRequired { oldest: 7 },
        None,
        json!({"type": "resync_required", "oldest": 7u64}),
        "{\"oldest\":7,\"type\":\"resync_required\"}\n",
    );
}

#[test]
fn events_and_stats() {
    // The example in docs/protocol.md as the server writes it: `type` first, then the
    // event's fields in their declared order (the body's, with `event`, after `kind`).
    let golden = r#"{"type":"event","seq":1235,"at":"2026-11-23T10:00:31.002Z","agent":"a1","kind":"worker","event":"transition","from":"online","to":"degraded","reason":"heartbeat_missed","missed":1}"#;
    let (frame, reference) = read(golden);
    assert_eq!(reference, None);
    let ServerFrame::Event(event) = &frame else {
        panic!("{frame:?}")
    };
    assert_eq!(event.seq, 1235);
    assert_eq!(ServerFrame::event_text(event).unwrap(), golden);
    // On a cluster, the node that decided it follows the kind.
    let on_node = r#"{"type":"event","seq":1235,"at":"2026-11-23T10:00:31.002Z","agent":"a1","kind":"worker","node":"n1","event":"transition","from":"online","to":"degraded","reason":"heartbeat_missed","missed":1}"#;
    let (frame, _) = read(on_node);
    let ServerFrame::Event(event) = &frame else {
        panic!("{frame:?}")
    };
    assert_eq!(event.node.as_deref(), Some("n1"));
    assert_eq!(ServerFrame::event_text(event).unwrap(), on_node);

    let counts = json!({"agents": {"online": 3}, "at": T, "jobs": {}});
    let stats = ServerFrame::Stats(counts.clone());
    let mut old = counts;
    old["type"] = json!("stats");
    pin(
        stats,
        None,
        old,
        "{\"agents\":{\"online\":3},\"at\":\"2026-11-23T10:00:31.002Z\",\"jobs\":{},\
         \"type\":\"stats\"}\n",
    );
}

#[test]
fn a_client_reads_what_a_later_version_adds_without_failing() {
    assert_eq!(
        read(r#"{"type":"command","id":"a1","ref":null}"#),
        (ServerFrame::Other, None)
    );
    assert_eq!(
        read(r#"{"type":"error","code":"too_new","message":"m","ref":2}"#),
        (
            ServerFrame::Error {
                code: ErrorCode::Other,
                message: "m".into()
            },
            Some(json!(2))
        )
    );
    assert_eq!(
        read(r#"{"type":"evicted","id":"a1","reason":"moved","extra":1}"#).0,
        ServerFrame::Evicted {
            id: "a1".into(),
            reason: EvictedReason::Other
        }
    );
    // What the protocol requires is still required.
    let missing = serde_json::from_str(r#"{"type":"registered","id":"a1"}"#).unwrap();
    assert!(Received::from_value(missing).is_err());
}
