//! `vigil sinks`: the outbound channels (webhooks, logs) as an operator sees them, their dead
//! letters, and a replay of those (admin operations `sinks`, `dead_letters`, `replay`; the
//! REST routes under `/api/v1/sinks`).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::cli::call::AdminArgs;
use crate::cli::render::{age, table, text};

/// `vigil sinks`.
#[derive(Debug, Clone, clap::Args)]
pub struct SinksArgs {
    /// Where and how to connect, and how to print.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The operation (default: `list`).
    #[command(subcommand)]
    pub cmd: Option<SinksCmd>,
}

/// The subcommands of `vigil sinks`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum SinksCmd {
    /// Every sink: its state, how far it has delivered, its lag, failures and dead letters.
    List,
    /// A sink's dead letters: the batches it gave up on, with the last error.
    DeadLetters {
        /// The sink's name.
        name: String,
    },
    /// Delivers a sink's dead letters again (all, or one), in seq order; those delivered are
    /// dropped, the others stay.
    Replay {
        /// The sink's name.
        name: String,
        /// Only the dead letter with this id.
        #[arg(long)]
        id: Option<u64>,
    },
}

impl SinksCmd {
    /// The admin operation and its arguments (`Null`: none).
    pub fn request(&self) -> (&'static str, Value) {
        match self {
            SinksCmd::List => ("sinks", Value::Null),
            SinksCmd::DeadLetters { name } => ("dead_letters", json!({ "sink": name })),
            SinksCmd::Replay { name, id: None } => ("replay", json!({ "sink": name })),
            SinksCmd::Replay { name, id: Some(id) } => {
                ("replay", json!({ "sink": name, "id": id }))
            }
        }
    }

    /// The answer as text for an operator.
    pub fn render(&self, data: &Value, now: DateTime<Utc>) -> String {
        match self {
            SinksCmd::List => render_sinks(data, now),
            SinksCmd::DeadLetters { name } => render_dead_letters(name, data, now),
            SinksCmd::Replay { .. } => format!(
                "sink {}: {} delivered, {} still held",
                text(&data["sink"]),
                text(&data["delivered"]),
                text(&data["held"])
            ),
        }
    }
}

/// The command: one operation, its answer printed.
pub fn run(args: SinksArgs) -> anyhow::Result<()> {
    let cmd = args.cmd.unwrap_or(SinksCmd::List);
    let (op, op_args) = cmd.request();
    args.admin.run("vigil-sinks", op, op_args, |data| {
        cmd.render(data, Utc::now())
    })
}

/// The sinks as a table.
pub fn render_sinks(data: &Value, now: DateTime<Utc>) -> String {
    let sinks = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if sinks.is_empty() {
        return "no sinks (add [[sinks]] to the configuration)".into();
    }
    let rows: Vec<Vec<String>> = sinks
        .iter()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["type"]),
                text(&s["state"]),
                text(&s["delivered_seq"]),
                text(&s["lag"]),
                text(&s["consecutive_failures"]),
                text(&s["dead_letters"]),
                age(&s["last_delivery_at"], now),
                text(&s["last_error"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TYPE",
            "STATE",
            "DELIVERED SEQ",
            "LAG",
            "FAILURES",
            "DEAD LETTERS",
            "LAST DELIVERY",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// A sink's dead letters as a table: id, seqs, events, attempts, when, the error.
pub fn render_dead_letters(sink: &str, data: &Value, now: DateTime<Utc>) -> String {
    let letters = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if letters.is_empty() {
        return format!("sink {sink}: no dead letters");
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            let (first, last) = (text(&d["first_seq"]), text(&d["last_seq"]));
            vec![
                text(&d["id"]),
                if first == last {
                    first
                } else {
                    format!("{first}-{last}")
                },
                d["events"].as_array().map_or(0, Vec::len).to_string(),
                text(&d["attempts"]),
                age(&d["at"], now),
                text(&d["error"]),
            ]
        })
        .collect();
    table(
        &["ID", "SEQS", "EVENTS", "ATTEMPTS", "FAILED", "ERROR"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sinks: SinksArgs,
    }

    fn cmd(args: &[&str]) -> SinksCmd {
        let mut argv = vec!["sinks"];
        argv.extend_from_slice(args);
        let a = Cli::try_parse_from(argv).expect("parses").sinks;
        a.cmd.unwrap_or(SinksCmd::List)
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T10:01:00.000Z".parse().unwrap()
    }

    #[test]
    fn each_subcommand_is_the_protocols_admin_operation() {
        assert_eq!(cmd(&[]).request(), ("sinks", Value::Null));
        assert_eq!(cmd(&["list"]).request(), ("sinks", Value::Null));
        assert_eq!(
            cmd(&["dead-letters", "ops"]).request(),
            ("dead_letters", json!({"sink":"ops"}))
        );
        assert_eq!(
            cmd(&["replay", "ops"]).request(),
            ("replay", json!({"sink":"ops"}))
        );
        assert_eq!(
            cmd(&["replay", "ops", "--id", "7"]).request(),
            ("replay", json!({"sink":"ops","id":7}))
        );
        assert!(Cli::try_parse_from(["sinks", "replay"]).is_err());
        assert!(Cli::try_parse_from(["sinks", "replay", "ops", "--id", "x"]).is_err());
    }

    #[test]
    fn sinks_and_dead_letters_are_tables() {
        let sinks = json!([{"name":"ops","type":"webhook","state":"retrying","delivered_seq":41,
            "lag":3,"delivered":40,"consecutive_failures":2,"last_error":"HTTP 503",
            "last_error_at":"2026-11-23T10:00:58.000Z","last_delivery_at":"2026-11-23T10:00:00.000Z",
            "dead_letters":1,"dead_letters_dropped":0}]);
        let t = render_sinks(&sinks, now());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("NAME  TYPE"), "{t}");
        for cell in ["ops", "webhook", "retrying", "41", "1m ago", "HTTP 503"] {
            assert!(lines[1].contains(cell), "{cell}: {t}");
        }
        assert!(render_sinks(&json!([]), now()).starts_with("no sinks"));

        let dead = json!([{"id":1,"first_seq":5,"last_seq":9,"events":[{},{}],"error":"HTTP 400",
            "attempts":1,"at":"2026-11-23T10:00:30.000Z"},
            {"id":2,"first_seq":12,"last_seq":12,"events":[],"error":"HTTP 404","attempts":3,
            "at":"2026-11-23T09:00:00.000Z"}]);
        let t = render_dead_letters("ops", &dead, now());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].contains("5-9") && lines[1].contains("30s ago"),
            "{t}"
        );
        assert!(
            lines[2].contains(" 12 ") && lines[2].contains("HTTP 404"),
            "{t}"
        );
        assert_eq!(
            render_dead_letters("ops", &json!([]), now()),
            "sink ops: no dead letters"
        );
        let replay = cmd(&["replay", "ops"]);
        assert_eq!(
            replay.render(&json!({"sink":"ops","delivered":2,"held":0}), now()),
            "sink ops: 2 delivered, 0 still held"
        );
    }
}
