use super::*;

#[test]
fn an_op_without_arguments_takes_an_empty_object_and_others_still_need_theirs() {
    use serde_json::json;
    use vigil_actors::AdminRequest;
    assert_eq!(admin_request("stats", json!({})), Ok(AdminRequest::Stats));
    assert_eq!(admin_request("stats", Value::Null), Ok(AdminRequest::Stats));
    let (code, msg) = admin_request("evict", json!({})).unwrap_err();
    assert_eq!(code, ErrorCode::MissingField, "{msg}");
    assert!(msg.contains("id"), "{msg}");
    let (code, _) = admin_request("stats", json!({"x": 1})).unwrap_err();
    assert_eq!(code, ErrorCode::InvalidField);
}

#[test]
fn a_roles_name_is_the_one_on_the_wire() {
    for role in [Role::Agent, Role::Monitor, Role::Admin] {
        assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
    }
}

use proptest::prelude::*;
use serde_json::Map;

fn code(line: &str) -> ErrorCode {
    decode(line.as_bytes()).expect_err(line).code
}

#[test]
fn every_client_frame_of_the_protocol_decodes() {
    let f = decode(br#"{"type":"hello","protocol":1,"role":"agent","token":"t","client":"x/1"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(
        f.body,
        ClientFrame::Hello(Hello {
            protocol: 1,
            role: Role::Agent,
            token: Some("t".into()),
            client: Some("x/1".into()),
            features: vec![],
        })
    );
    let f = decode(br#"{"type":"hello","protocol":1,"role":"agent","features":["beats","x"]}"#)
        .unwrap()
        .unwrap();
    match f.body {
        ClientFrame::Hello(h) => assert_eq!(h.features, vec!["beats", "x"]),
        other => panic!("{other:?}"),
    }
    let f = decode(br#"{"type":"beats","ids":["a1","b.2"],"ref":3}"#)
        .unwrap()
        .unwrap();
    match &f.body {
        ClientFrame::Beats(b) => {
            let ids: Vec<&str> = b.ids.iter().collect();
            assert_eq!(ids, vec!["a1", "b.2"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.body.role(), Some(Role::Agent));
    let bad = decode(br#"{"type":"beats","ids":["ok","not ok"]}"#).unwrap_err();
    assert_eq!(
        bad.code,
        crate::protocol::ErrorCode::InvalidField,
        "{bad:?}"
    );
    let f = decode(
            br#"{"type":"register","id":"a1","kind":"worker","metadata":{"zone":"eu"},"capabilities":["gpu"],"heartbeat_interval_ms":5000,"takeover":true,"ref":7,"future":1}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(f.reference, Some(serde_json::json!(7)));
    match f.body {
        ClientFrame::Register(r) => {
            assert_eq!(r.id.as_str(), "a1");
            assert_eq!(r.kind.as_deref(), Some("worker"));
            assert_eq!(r.metadata["zone"], "eu");
            assert_eq!(r.capabilities, vec!["gpu"]);
            assert_eq!(r.heartbeat_interval_ms, Some(5000));
            assert!(r.takeover);
        }
        other => panic!("{other:?}"),
    }
    let f = decode(
        br#"{"type":"heartbeat","id":"a1","status":"degraded","metrics":{"load":0.5},"ref":"x"}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(f.reference, Some(serde_json::json!("x")));
    match f.body {
        ClientFrame::Heartbeat(h) => {
            assert_eq!(h.status, Reported::Degraded);
            assert_eq!(h.metrics.unwrap()["load"], 0.5);
        }
        other => panic!("{other:?}"),
    }
    for (line, role) in [
        (
            r#"{"type":"activity","id":"a","activity":"working","detail":"d"}"#,
            Some(Role::Agent),
        ),
        (
            r#"{"type":"job","id":"a","job":"j1","state":"running","progress":0.5}"#,
            Some(Role::Agent),
        ),
        (
            r#"{"type":"deregister","id":"a","reason":"bye"}"#,
            Some(Role::Agent),
        ),
        (r#"{"type":"ping"}"#, None),
        (
            r#"{"type":"subscribe","topics":["agents"],"filter":{"kinds":["w"],"statuses":["offline"]},"since":3,"snapshot":true}"#,
            Some(Role::Monitor),
        ),
        (r#"{"type":"unsubscribe"}"#, Some(Role::Monitor)),
        (
            r#"{"type":"admin","op":"evict","args":{"id":"a1"}}"#,
            Some(Role::Admin),
        ),
    ] {
        let f = decode(line.as_bytes()).unwrap().unwrap();
        assert_eq!(f.body.role(), role, "{line}");
    }
    assert_eq!(decode(b"  \r").unwrap(), None, "blank lines are ignored");
}

#[test]
fn each_decoding_error_has_its_code() {
    assert_eq!(code("{not json"), ErrorCode::BadFrame);
    assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
    assert_eq!(code(r#"{"id":"a"}"#), ErrorCode::MissingField);
    assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidField);
    assert_eq!(code(r#"{"type":"launch"}"#), ErrorCode::UnknownType);
    assert_eq!(code(r#"{"type":"register"}"#), ErrorCode::MissingField);
    assert_eq!(
        code(r#"{"type":"register","id":"bad id!"}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(r#"{"type":"register","id":""}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(&format!(
            r#"{{"type":"register","id":"{}"}}"#,
            "a".repeat(129)
        )),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(r#"{"type":"heartbeat","id":"a","status":"great"}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(r#"{"type":"heartbeat","id":"a","metrics":{"x":"y"}}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(r#"{"type":"job","id":"a","job":"j","state":"lost"}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(r#"{"type":"hello","protocol":1,"role":"root"}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(r#"{"type":"ping","ref":[1]}"#),
        ErrorCode::InvalidField
    );
    // The ref is echoed when it could be read.
    let e = decode(br#"{"type":"nope","ref":"r1"}"#).unwrap_err();
    assert_eq!(e.reference, Some(serde_json::json!("r1")));
    let line = error_line(e.code, &e.message, e.reference.as_ref());
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["code"], "unknown_type");
    assert_eq!(v["ref"], "r1");
    assert!(line.ends_with('\n'));
}

proptest! {
    /// Arbitrary bytes, and arbitrary JSON objects with a known type, never panic: each
    /// decodes to a frame, to nothing (blank), or to an error with a code.
    #[test]
    fn decoding_arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn decoding_near_valid_frames_never_panics(
        ty in prop_oneof![Just("hello".to_string()), Just("register".to_string()), Just("heartbeat".to_string()), Just("job".to_string()), Just("admin".to_string()), Just("subscribe".to_string()), ".{0,8}"],
        key in prop_oneof![Just("id".to_string()), Just("status".to_string()), Just("metrics".to_string()), Just("protocol".to_string()), Just("ref".to_string()), Just("state".to_string()), ".{0,6}"],
        val in prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), any::<f64>().prop_map(Value::from), ".{0,12}".prop_map(Value::from), Just(serde_json::json!({"a":[1]}))],
    ) {
        let mut obj = Map::new();
        obj.insert("type".into(), Value::from(ty));
        obj.insert(key, val);
        let line = Value::Object(obj).to_string();
        match decode(line.as_bytes()) {
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => prop_assert!(false, "a non-blank line decoded to nothing"),
        }
    }
}
