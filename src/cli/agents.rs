//! `vigil agents`: the operator's command line over protocol v1 (role `admin`).
//!
//! Each subcommand is one admin operation: connect, `hello` as admin, one
//! `{"type":"admin","op":...,"args":{...},"ref":1}` frame, and its `result` (or `error`). The
//! answer's `data` is read as JSON, not as the core's Rust types, so that the command works
//! against a server a version ahead or behind and shows fields it does not know yet.
//!
//! [`AdminArgs`] is the request (shared with `vigil sinks` and `vigil policy`); the `render_*`
//! functions turn an answer into the text an operator reads (pure, unit-tested); [`run`] is
//! the command. With `--json` the answer's `data` is printed as it came, for scripts.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use vigil_actors::Status;

use crate::cli::call::AdminArgs;
use crate::cli::conn::parse_status;
use crate::cli::render::{
    render_events, render_flat, render_health, render_list, render_record, text,
};

/// `vigil agents`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentsArgs {
    /// Where and how to connect, and how to print.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The operation.
    #[command(subcommand)]
    pub cmd: AgentsCmd,
}

/// `on` or `off`, for `vigil agents maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Into maintenance.
    On,
    /// Out of maintenance.
    Off,
}

/// The subcommands of `vigil agents`, one admin operation each.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentsCmd {
    /// The agents, by id.
    List {
        /// Only agents of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only agents with this status.
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        /// At most this many agents.
        #[arg(long)]
        limit: Option<usize>,
        /// Only ids after this one (to page through a large fleet).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
    },
    /// One agent's record.
    Get {
        /// The agent's id.
        id: String,
    },
    /// The event log (of one agent, or of all).
    Events {
        /// Only this agent's events.
        id: Option<String>,
        /// Only events after this seq.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// At most this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Evicts an agent: it leaves (reason `evicted`) and its connection is told.
    Evict {
        /// The agent's id.
        id: String,
        /// Why, for the event log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sets an agent's status by hand (reason `admin`).
    Status {
        /// The agent's id.
        id: String,
        /// The new status.
        #[arg(value_parser = parse_status)]
        status: Status,
        /// Why, for the event log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Puts an agent in maintenance (its deadlines stop) or takes it out.
    Maintenance {
        /// The agent's id.
        id: String,
        /// `on` to start maintenance, `off` to end it.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// The fleet's health report: counts by status and the agents with an issue.
    Health,
    /// The runtime's counters.
    Stats,
}

impl AgentsCmd {
    /// The admin operation and its arguments (`Null`: none).
    pub fn request(&self) -> (&'static str, Value) {
        fn put(args: &mut Map<String, Value>, key: &str, v: Option<Value>) {
            if let Some(v) = v {
                args.insert(key.into(), v);
            }
        }
        let mut args = Map::new();
        let op = match self {
            AgentsCmd::List {
                kind,
                status,
                limit,
                after,
            } => {
                put(&mut args, "kind", kind.as_ref().map(|k| json!(k)));
                put(&mut args, "status", status.map(|s| json!(s.as_str())));
                put(&mut args, "limit", limit.map(|n| json!(n)));
                put(&mut args, "after", after.as_ref().map(|a| json!(a)));
                "list"
            }
            AgentsCmd::Get { id } => {
                args.insert("id".into(), json!(id));
                "get"
            }
            AgentsCmd::Events { id, since, limit } => {
                put(&mut args, "id", id.as_ref().map(|i| json!(i)));
                put(&mut args, "since", since.map(|s| json!(s)));
                put(&mut args, "limit", limit.map(|n| json!(n)));
                "events"
            }
            AgentsCmd::Evict { id, reason } => {
                args.insert("id".into(), json!(id));
                put(&mut args, "reason", reason.as_ref().map(|r| json!(r)));
                "evict"
            }
            AgentsCmd::Status { id, status, reason } => {
                args.insert("id".into(), json!(id));
                args.insert("status".into(), json!(status.as_str()));
                put(&mut args, "reason", reason.as_ref().map(|r| json!(r)));
                "set_status"
            }
            AgentsCmd::Maintenance { id, state } => {
                args.insert("id".into(), json!(id));
                args.insert("on".into(), json!(*state == OnOff::On));
                "maintenance"
            }
            AgentsCmd::Health => return ("health_report", Value::Null),
            AgentsCmd::Stats => return ("stats", Value::Null),
        };
        (op, Value::Object(args))
    }
}

/// The command: one operation, its answer printed.
pub fn run(args: AgentsArgs) -> anyhow::Result<()> {
    let (op, op_args) = args.cmd.request();
    args.admin.run("vigil-agents", op, op_args, |data| {
        render(&args.cmd, data, Utc::now())
    })
}

/// The answer to `cmd` as text for an operator.
pub fn render(cmd: &AgentsCmd, data: &Value, now: DateTime<Utc>) -> String {
    match cmd {
        AgentsCmd::List { .. } => render_list(data, now),
        AgentsCmd::Get { .. } => render_record(data, now),
        AgentsCmd::Events { .. } => render_events(data),
        AgentsCmd::Evict { .. } | AgentsCmd::Status { .. } | AgentsCmd::Maintenance { .. } => {
            render_changed(cmd, data)
        }
        AgentsCmd::Health => render_health(data),
        AgentsCmd::Stats => render_flat(data),
    }
}

/// The result of a change: what the agent's status is now, and whether anything changed.
pub fn render_changed(cmd: &AgentsCmd, data: &Value) -> String {
    let id = text(&data["id"]);
    let status = text(&data["status"]);
    let changed = data["changed"].as_bool().unwrap_or(true);
    match (cmd, changed) {
        (AgentsCmd::Evict { .. }, true) => format!("evicted {id}: now {status}"),
        (_, true) => format!("{id}: now {status}"),
        (_, false) => format!("{id}: already {status}; nothing changed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::render::{age, render_flat, render_health, render_list, render_record};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agents: AgentsArgs,
    }

    fn parse(args: &[&str]) -> AgentsArgs {
        let mut argv = vec!["agents"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").agents
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T10:01:00.000Z".parse().unwrap()
    }

    fn record() -> Value {
        json!({"id":"a1","name":"a1","kind":"worker","status":"online","activity":"working",
            "reported":"healthy","metadata":{"zone":"eu"},"capabilities":["gpu","tts"],
            "metrics":{},"last_seen":"2026-11-23T10:00:55.000Z","connected":true,
            "incarnation":2,"registered_at":"2026-11-23T09:00:00.000Z",
            "updated_at":"2026-11-23T10:00:55.000Z","future_field":7})
    }

    #[test]
    fn each_subcommand_is_the_protocols_admin_operation() {
        let cases: [(&[&str], &str, Value); 9] = [
            (&["list"], "list", json!({})),
            (
                &[
                    "list", "--kind", "worker", "--status", "offline", "--limit", "5",
                ],
                "list",
                json!({"kind":"worker","status":"offline","limit":5}),
            ),
            (&["get", "a1"], "get", json!({"id":"a1"})),
            (
                &["events", "a1", "--since", "3", "--limit", "10"],
                "events",
                json!({"id":"a1","since":3,"limit":10}),
            ),
            (
                &["evict", "a1", "--reason", "decommissioned"],
                "evict",
                json!({"id":"a1","reason":"decommissioned"}),
            ),
            (
                &["status", "a1", "degraded"],
                "set_status",
                json!({"id":"a1","status":"degraded"}),
            ),
            (
                &["maintenance", "a1", "on"],
                "maintenance",
                json!({"id":"a1","on":true}),
            ),
            (&["health"], "health_report", Value::Null),
            (&["stats"], "stats", Value::Null),
        ];
        for (argv, op, args) in cases {
            let a = parse(argv);
            assert_eq!(a.cmd.request(), (op, args), "{argv:?}");
        }
        let a = parse(&["maintenance", "a1", "off", "--json", "--addr", "h:1"]);
        assert_eq!(a.cmd.request().1["on"], false);
        assert!(a.admin.json);
        assert_eq!(a.admin.conn.addr, "h:1");
        assert!(Cli::try_parse_from(["agents", "status", "a1", "sleepy"]).is_err());
        assert!(Cli::try_parse_from(["agents", "maintenance", "a1", "maybe"]).is_err());
    }

    #[test]
    fn the_list_is_an_aligned_table_with_ages() {
        let mut b = record();
        b["id"] = json!("b-long-name");
        b["status"] = json!("offline");
        b["connected"] = json!(false);
        b["last_seen"] = Value::Null;
        b["activity"] = Value::Null;
        let t = render_list(&json!([record(), b]), now());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID           NAME"), "{t}");
        assert!(
            lines[1].contains("online") && lines[1].contains("5s ago"),
            "{t}"
        );
        assert!(lines[1].contains("yes"), "{t}");
        assert!(lines[2].contains("never") && lines[2].contains("no"), "{t}");
        // Aligned: the status column starts at the same place on every line.
        let col = lines[0].find("STATUS").unwrap();
        assert_eq!(&lines[1][col..col + 6], "online");
        assert_eq!(&lines[2][col..col + 7], "offline");
        assert_eq!(render_list(&json!([]), now()), "no agents");
    }

    #[test]
    fn ages_are_relative() {
        let at = |s: &str| json!(s);
        assert_eq!(age(&at("2026-11-23T10:00:59.500Z"), now()), "0s ago");
        assert_eq!(age(&at("2026-11-23T09:58:00.000Z"), now()), "3m ago");
        assert_eq!(age(&at("2026-11-23T07:00:00.000Z"), now()), "3h ago");
        assert_eq!(age(&at("2026-11-20T10:01:00.000Z"), now()), "3d ago");
        assert_eq!(age(&Value::Null, now()), "never");
    }

    #[test]
    fn a_record_is_key_value_lines_with_unknown_fields_kept() {
        let t = render_record(&record(), now());
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("id:") && lines[0].ends_with(" a1"),
            "{t}"
        );
        assert!(t.contains("metadata:"), "{t}");
        assert!(t.contains("zone=eu"), "{t}");
        assert!(t.contains("gpu, tts"), "{t}");
        assert!(t.contains("connected:"), "{t}");
        assert!(t.contains("(5s ago)"), "{t}");
        assert!(lines.last().unwrap().starts_with("future_field:"), "{t}");
    }

    #[test]
    fn changes_health_and_stats_read_well() {
        let evict = parse(&["evict", "a1"]).cmd;
        let data = json!({"id":"a1","status":"left","changed":true});
        assert_eq!(render_changed(&evict, &data), "evicted a1: now left");
        let m = parse(&["maintenance", "a1", "on"]).cmd;
        let data = json!({"id":"a1","status":"maintenance","changed":false});
        assert_eq!(
            render_changed(&m, &data),
            "a1: already maintenance; nothing changed"
        );

        let h = json!({"at":"2026-11-23T10:00:00.000Z",
            "summary":{"total":3,"online":1,"degraded":1,"offline":1,"maintenance":0,"unknown":0,"left":2},
            "agents":[{"id":"a2","kind":"worker","issue":"offline","severity":"high","detail":"not seen for 2m"}]});
        let t = render_health(&h);
        assert!(
            t.starts_with("health at 2026-11-23T10:00:00.000Z: total 3, online 1, degraded 1, offline 1, maintenance 0, unknown 0, left 2"),
            "{t}"
        );
        assert!(t.contains("SEVERITY"), "{t}");
        assert!(t.contains("not seen for 2m"), "{t}");
        let h = json!({"at":"x","summary":{"total":0},"agents":[]});
        assert!(render_health(&h).ends_with("no findings\n"));

        let s = json!({"registry":{"agents":{"online":2},"last_seq":9},"lag_ms":0});
        let t = render_flat(&s);
        assert!(t.contains("registry.agents.online: 2"), "{t}");
        assert!(t.contains("registry.last_seq:"), "{t}");
        assert!(t.contains("lag_ms:"), "{t}");
    }
}
