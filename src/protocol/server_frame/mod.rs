//! The frames the server sends (`docs/protocol.md`), one type for the TCP listener, the
//! WebSocket and the monitor streams.
//!
//! A frame is written as one JSON object with its keys in alphabetical order, `type` and `ref`
//! among them: it becomes a [`Value`] first (whose map keeps its keys sorted), then text. The
//! golden tests pin the bytes of every frame.

use serde::Serialize;
use serde_json::Value;
use vigil_actors::{AgentRecord, Status};

use super::ErrorCode;

/// What the server calls itself in `welcome`.
pub const SERVER_NAME: &str = concat!("vigil/", env!("CARGO_PKG_VERSION"));

/// A frame from the server.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutgoingFrame<'a> {
    /// The answer to `hello`. The TCP listener also names the session and the heartbeat
    /// interval; the WebSocket's leaves them out.
    Welcome {
        /// The protocol version the server speaks.
        protocol: u64,
        /// The session's id; `None` on the WebSocket.
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// The server's name and version ([`SERVER_NAME`]).
        server: &'static str,
        /// The default heartbeat interval, in ms; `None` on the WebSocket.
        #[serde(skip_serializing_if = "Option::is_none")]
        heartbeat_interval_ms: Option<u64>,
        /// The server's clock (RFC 3339, UTC, milliseconds).
        time: String,
    },
    /// The answer to `ping`.
    Pong {
        /// The server's clock (RFC 3339, UTC, milliseconds).
        time: String,
    },
    /// A frame with a `ref` was taken.
    Ack,
    /// An admin operation's answer.
    Result {
        /// Whether the operation succeeded.
        ok: bool,
        /// The operation's answer.
        data: Value,
    },
    /// An agent is registered (sent once its registration is durable).
    Registered {
        /// The agent's id.
        id: String,
        /// The agent's status now.
        status: Status,
        /// The heartbeat interval the server holds the agent to, in ms.
        heartbeat_interval_ms: u64,
        /// The registration's number: 1 the first time, one more at each registration since.
        incarnation: u64,
    },
    /// An agent left at its connection's request.
    Deregistered {
        /// The agent's id.
        id: String,
    },
    /// The connection lost an agent.
    Evicted {
        /// The agent's id.
        id: String,
        /// Why the connection lost it.
        reason: EvictedReason,
    },
    /// A frame was refused, or something went wrong.
    Error {
        /// What kind of error.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
    /// The fleet as a subscription starts: every agent, the unfinished jobs (with the `jobs`
    /// topic) and the latest counts.
    Snapshot {
        /// The fleet is as of this event's seq; the events after it follow.
        seq: u64,
        /// Every agent the subscription's filter selects.
        agents: &'a [AgentRecord],
        /// The unfinished jobs of those agents (with the `jobs` topic or no topics; else empty).
        jobs: Vec<Value>,
        /// The latest counts.
        stats: Value,
    },
    /// The subscriber fell behind; its subscription ended after `last_seq`.
    Lagged {
        /// The seq of the last event the subscriber was sent; resume with `since` = this.
        last_seq: u64,
    },
    /// The events after the subscriber's seq are gone; it starts again from a snapshot.
    ResyncRequired {
        /// The oldest seq still retained.
        oldest: u64,
    },
}

/// Why a connection lost an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictedReason {
    /// Another connection registered it with `takeover`.
    TakenOver,
    /// An operator evicted it.
    Evicted,
}

impl OutgoingFrame<'_> {
    /// The frame as a JSON object, with the `ref` of the frame it answers.
    pub fn to_value(&self, reference: Option<&Value>) -> Value {
        // Every field is a string, a number, a bool or a map with string keys: nothing here
        // can fail to become a `Value`.
        let mut v = serde_json::to_value(self).expect("a server frame is plain JSON");
        if let Some(r) = reference {
            v["ref"] = r.clone();
        }
        v
    }

    /// The frame as text, without a line ending (a WebSocket message, an SSE event's data).
    pub fn text(&self, reference: Option<&Value>) -> String {
        self.to_value(reference).to_string()
    }

    /// The frame as one line (with its line ending).
    pub fn line(&self, reference: Option<&Value>) -> String {
        let mut s = self.text(reference);
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod golden {
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

    fn pin(frame: OutgoingFrame, reference: Option<Value>, json: Value, golden: &str) {
        let line = frame.line(reference.as_ref());
        assert_eq!(line, golden);
        assert_eq!(json_line(json, reference.as_ref()), golden);
        assert_eq!(
            frame.text(reference.as_ref()),
            golden.trim_end_matches('\n')
        );
    }

    #[test]
    fn welcome_on_tcp_and_on_websocket() {
        let tcp = OutgoingFrame::Welcome {
            protocol: 1,
            session: Some(format!("{:016x}", 0xabu64)),
            server: SERVER_NAME,
            heartbeat_interval_ms: Some(5000),
            time: T.into(),
        };
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
        let ws = OutgoingFrame::Welcome {
            protocol: 1,
            session: None,
            server: SERVER_NAME,
            heartbeat_interval_ms: None,
            time: T.into(),
        };
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
            OutgoingFrame::Pong { time: T.into() },
            Some(json!("x")),
            json!({"type": "pong", "time": T}),
            "{\"ref\":\"x\",\"time\":\"2026-11-23T10:00:31.002Z\",\"type\":\"pong\"}\n",
        );
        pin(
            OutgoingFrame::Ack,
            Some(json!(7)),
            json!({"type": "ack"}),
            "{\"ref\":7,\"type\":\"ack\"}\n",
        );
        let data = json!({"b": 1, "a": [1, {"z": null, "y": "s"}]});
        pin(
            OutgoingFrame::Result {
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
            OutgoingFrame::Registered {
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
            OutgoingFrame::Deregistered { id: "a1".into() },
            Some(json!(4)),
            json!({"type": "deregistered", "id": "a1"}),
            "{\"id\":\"a1\",\"ref\":4,\"type\":\"deregistered\"}\n",
        );
        pin(
            OutgoingFrame::Evicted {
                id: "a1".into(),
                reason: EvictedReason::TakenOver,
            },
            None,
            json!({"type": "evicted", "id": "a1", "reason": "taken_over"}),
            "{\"id\":\"a1\",\"reason\":\"taken_over\",\"type\":\"evicted\"}\n",
        );
        pin(
            OutgoingFrame::Evicted {
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
            OutgoingFrame::Error {
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
            OutgoingFrame::Error {
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
            OutgoingFrame::Snapshot {
                seq: 12,
                agents: &[],
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
            OutgoingFrame::Lagged { last_seq: 41 },
            None,
            json!({"type": "lagged", "last_seq": 41u64}),
            "{\"last_seq\":41,\"type\":\"lagged\"}\n",
        );
        pin(
            OutgoingFrame::ResyncRequired { oldest: 7 },
            None,
            json!({"type": "resync_required", "oldest": 7u64}),
            "{\"oldest\":7,\"type\":\"resync_required\"}\n",
        );
    }
}
