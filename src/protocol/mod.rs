//! The wire protocol, version 1 (`docs/protocol.md`): line framing, and client lines decoded
//! into typed frames or a protocol error with its code.
//!
//! Decoding is in three steps, each with its own error: the line (too long → `frame_too_large`,
//! see [`framing`]), the JSON object (`bad_frame`), then the frame of its `type`
//! (`unknown_type`, `missing_field`, `invalid_field`). Unknown fields are ignored. A frame that
//! fails to decode is answered and changes nothing.

pub mod framing;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_actors::{AgentId, Filter, Metrics, Reported};

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// Error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    FrameTooLarge,
    UnknownType,
    MissingField,
    InvalidField,
    HelloRequired,
    UnsupportedProtocol,
    Unauthorized,
    Forbidden,
    NotRegistered,
    NotOwner,
    Conflict,
    UnknownAgent,
    RateLimited,
    Overloaded,
    Internal,
}

/// A frame that could not be decoded: the error to answer with (echoing `ref` when the frame
/// had a readable one).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<Value>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>, reference: Option<Value>) -> Self {
        Self {
            code,
            message: message.into(),
            reference,
        }
    }
}

/// A connection's role, chosen in `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Monitor,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Hello {
    pub protocol: u64,
    pub role: Role,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Register {
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    #[serde(default)]
    pub takeover: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Heartbeat {
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    #[serde(default)]
    pub status: Reported,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub activity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Activity {
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    pub activity: String,
    #[serde(default)]
    pub detail: Option<String>,
}

pub use vigil_actors::JobState;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Job {
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    pub job: String,
    pub state: JobState,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Deregister {
    #[serde(deserialize_with = "agent_id")]
    pub id: AgentId,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Subscribe {
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub snapshot: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Admin {
    pub op: String,
    #[serde(default)]
    pub args: Value,
}

/// A decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Hello(Hello),
    Register(Register),
    Heartbeat(Heartbeat),
    Activity(Activity),
    Job(Job),
    Deregister(Deregister),
    Ping,
    Subscribe(Subscribe),
    Unsubscribe,
    Admin(Admin),
}

impl ClientFrame {
    /// The roles that may send this frame (`None`: any role, after the handshake).
    pub fn role(&self) -> Option<Role> {
        match self {
            ClientFrame::Hello(_) | ClientFrame::Ping => None,
            ClientFrame::Register(_)
            | ClientFrame::Heartbeat(_)
            | ClientFrame::Activity(_)
            | ClientFrame::Job(_)
            | ClientFrame::Deregister(_) => Some(Role::Agent),
            ClientFrame::Subscribe(_) | ClientFrame::Unsubscribe => Some(Role::Monitor),
            ClientFrame::Admin(_) => Some(Role::Admin),
        }
    }
}

/// A decoded frame with its `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub reference: Option<Value>,
    pub body: ClientFrame,
}

fn agent_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AgentId, D::Error> {
    let s = String::deserialize(d)?;
    AgentId::new(&s)
        .map_err(|_| serde::de::Error::custom("id must be 1-128 characters of A-Z a-z 0-9 . _ : -"))
}

/// The fields every frame has; a first pass over the line reads only these (the others are
/// skipped, not built), then the frame of that type is read straight from the bytes.
#[derive(Deserialize)]
struct Head {
    /// Present-but-null is kept apart from absent (it is `invalid_field`, not `missing_field`).
    #[serde(rename = "type", default, deserialize_with = "present")]
    ty: Option<Value>,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn typed<T: DeserializeOwned>(
    ty: &str,
    line: &[u8],
    reference: &Option<Value>,
) -> Result<T, FrameError> {
    serde_json::from_slice(line).map_err(|e| {
        let msg = e.to_string();
        let code = if msg.starts_with("missing field") {
            ErrorCode::MissingField
        } else {
            ErrorCode::InvalidField
        };
        FrameError::new(code, format!("{ty}: {msg}"), reference.clone())
    })
}

/// Decodes one line. An empty (or all-whitespace) line is `Ok(None)`: it is ignored.
pub fn decode(line: &[u8]) -> Result<Option<Frame>, FrameError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // Checked first: serde would also read a struct from an array.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(FrameError::new(
            ErrorCode::BadFrame,
            "a frame must be a JSON object",
            None,
        ));
    }
    let head: Head = serde_json::from_slice(line).map_err(|e| {
        FrameError::new(ErrorCode::BadFrame, format!("not a JSON object: {e}"), None)
    })?;
    let reference = match head.reference {
        None => None,
        Some(r @ (Value::String(_) | Value::Number(_))) => Some(r),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::InvalidField,
                "ref must be a string or a number",
                None,
            ))
        }
    };
    let ty = match head.ty {
        Some(Value::String(t)) => t,
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::InvalidField,
                "type must be a string",
                reference,
            ))
        }
        None => {
            return Err(FrameError::new(
                ErrorCode::MissingField,
                "every frame needs a type",
                reference,
            ))
        }
    };
    let body = match ty.as_str() {
        "hello" => ClientFrame::Hello(typed(&ty, line, &reference)?),
        "register" => ClientFrame::Register(typed(&ty, line, &reference)?),
        "heartbeat" => ClientFrame::Heartbeat(typed(&ty, line, &reference)?),
        "activity" => ClientFrame::Activity(typed(&ty, line, &reference)?),
        "job" => ClientFrame::Job(typed(&ty, line, &reference)?),
        "deregister" => ClientFrame::Deregister(typed(&ty, line, &reference)?),
        "ping" => ClientFrame::Ping,
        "subscribe" => ClientFrame::Subscribe(typed(&ty, line, &reference)?),
        "unsubscribe" => ClientFrame::Unsubscribe,
        "admin" => ClientFrame::Admin(typed(&ty, line, &reference)?),
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type {shown:?}"),
                reference,
            ));
        }
    };
    Ok(Some(Frame { reference, body }))
}

/// A server frame as one line, with the `ref` of the frame it answers.
pub fn line(mut frame: Value, reference: Option<&Value>) -> String {
    if let Some(r) = reference {
        frame["ref"] = r.clone();
    }
    let mut s = frame.to_string();
    s.push('\n');
    s
}

/// An admin frame's `op` and `args` as the core's request, or the protocol's error. `args`
/// may be left out, or given as an empty object (as a generic client sends it) for an op that
/// takes none.
pub fn admin_request(
    op: &str,
    args: Value,
) -> Result<vigil_actors::AdminRequest, (ErrorCode, String)> {
    let parse = |args: Option<Value>| {
        let mut req = serde_json::Map::new();
        req.insert("op".into(), Value::String(op.into()));
        if let Some(args) = args.filter(|a| !a.is_null()) {
            req.insert("args".into(), args);
        }
        serde_json::from_value::<vigil_actors::AdminRequest>(Value::Object(req))
    };
    let empty = args.as_object().is_some_and(|m| m.is_empty());
    match parse(Some(args)) {
        Ok(req) => Ok(req),
        Err(e) => match empty.then(|| parse(None)) {
            Some(Ok(req)) => Ok(req),
            _ => {
                let msg = e.to_string();
                let code = match msg.starts_with("missing field") {
                    true => ErrorCode::MissingField,
                    false => ErrorCode::InvalidField,
                };
                Err((code, format!("admin {op}: {msg}")))
            }
        },
    }
}

/// The `error` frame for a decoding failure (or any protocol error), as one line.
pub fn error_line(code: ErrorCode, message: &str, reference: Option<&Value>) -> String {
    line(
        serde_json::json!({ "type": "error", "code": code, "message": message }),
        reference,
    )
}

#[cfg(test)]
mod tests {
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
    use proptest::prelude::*;
    use serde_json::Map;

    fn code(line: &str) -> ErrorCode {
        decode(line.as_bytes()).expect_err(line).code
    }

    #[test]
    fn every_client_frame_of_the_protocol_decodes() {
        let f =
            decode(br#"{"type":"hello","protocol":1,"role":"agent","token":"t","client":"x/1"}"#)
                .unwrap()
                .unwrap();
        assert_eq!(
            f.body,
            ClientFrame::Hello(Hello {
                protocol: 1,
                role: Role::Agent,
                token: Some("t".into()),
                client: Some("x/1".into())
            })
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
        let f = decode(br#"{"type":"heartbeat","id":"a1","status":"degraded","metrics":{"load":0.5},"ref":"x"}"#)
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
}
