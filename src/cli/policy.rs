//! `vigil policy`: a kind's heartbeat policy, changed for its agents now and for later
//! registrations (admin operation `set_policy`; `PUT /api/v1/policies/{kind}`). On a cluster
//! every node takes the change and the store keeps it.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cli::call::AdminArgs;
use crate::cli::render::{render_flat, text};

/// `vigil policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Where and how to connect, and how to print.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The operation.
    #[command(subcommand)]
    pub cmd: PolicyCmd,
}

/// What the agents of a kind do when their connection closes, for `--on-disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDisconnectArg {
    /// The agent keeps its status; its deadlines run on.
    Keep,
    /// The agent goes offline at once.
    Offline,
}

/// The subcommands of `vigil policy`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum PolicyCmd {
    /// Changes the given fields of a kind's policy; the others keep their values. Prints the
    /// whole policy as it is now.
    Set {
        /// The agent kind.
        kind: String,
        /// The expected time between beats (e.g. `5s`).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        heartbeat_interval: Option<Duration>,
        /// Missed intervals before online becomes degraded.
        #[arg(long, value_name = "N")]
        degraded_after: Option<u32>,
        /// Missed intervals before an agent is offline.
        #[arg(long, value_name = "N")]
        offline_after: Option<u32>,
        /// Healthy beats in a row to come back online.
        #[arg(long, value_name = "N")]
        recovery: Option<u32>,
        /// Extra slack before a beat counts as missed (e.g. `500ms`).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        grace: Option<Duration>,
        /// What a closed connection does to its agents.
        #[arg(long, value_enum)]
        on_disconnect: Option<OnDisconnectArg>,
        /// How long agents have to come back after a restart of the runtime.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        restart_grace: Option<Duration>,
    },
}

impl PolicyCmd {
    /// The admin operation and its arguments (durations in milliseconds, as on the wire).
    pub fn request(&self) -> (&'static str, Value) {
        let PolicyCmd::Set {
            kind,
            heartbeat_interval,
            degraded_after,
            offline_after,
            recovery,
            grace,
            on_disconnect,
            restart_grace,
        } = self;
        let mut args = Map::new();
        args.insert("kind".into(), json!(kind));
        let ms = |d: &Option<Duration>| d.map(|d| json!(d.as_millis() as u64));
        let fields = [
            ("heartbeat_interval", ms(heartbeat_interval)),
            ("degraded_after", degraded_after.map(|n| json!(n))),
            ("offline_after", offline_after.map(|n| json!(n))),
            ("recovery", recovery.map(|n| json!(n))),
            ("grace", ms(grace)),
            (
                "on_disconnect",
                on_disconnect.map(|o| match o {
                    OnDisconnectArg::Keep => json!("keep"),
                    OnDisconnectArg::Offline => json!("offline"),
                }),
            ),
            ("restart_grace", ms(restart_grace)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                args.insert(k.into(), v);
            }
        }
        ("set_policy", Value::Object(args))
    }
}

/// The command: one operation, its answer printed.
pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    let (op, op_args) = args.cmd.request();
    args.admin.run("vigil-policy", op, op_args, render)
}

/// The kind's policy as it is now: `kind: worker` then `policy.*` lines (durations in ms).
pub fn render(data: &Value) -> String {
    format!(
        "policy of kind {} (durations in ms):\n{}",
        text(&data["kind"]),
        render_flat(&data["policy"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    fn request(args: &[&str]) -> Result<(&'static str, Value), clap::Error> {
        let mut argv = vec!["policy"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.policy.cmd.request())
    }

    #[test]
    fn set_sends_only_the_fields_given_with_durations_in_ms() {
        assert_eq!(
            request(&["set", "worker"]).unwrap(),
            ("set_policy", json!({"kind":"worker"}))
        );
        assert_eq!(
            request(&[
                "set",
                "gpu",
                "--heartbeat-interval",
                "5s",
                "--grace",
                "250ms",
                "--offline-after",
                "2",
                "--on-disconnect",
                "offline",
                "--restart-grace",
                "1m"
            ])
            .unwrap(),
            (
                "set_policy",
                json!({"kind":"gpu","heartbeat_interval":5000,"grace":250,"offline_after":2,
                    "on_disconnect":"offline","restart_grace":60000})
            )
        );
        assert!(request(&["set", "gpu", "--heartbeat-interval", "soon"]).is_err());
        assert!(request(&["set", "gpu", "--on-disconnect", "maybe"]).is_err());
        assert!(request(&["set"]).is_err(), "a kind is required");
    }

    #[test]
    fn the_answer_is_the_whole_policy() {
        let data = json!({"kind":"gpu","policy":{"heartbeat_interval":5000,"degraded_after":1,
            "offline_after":2,"recovery":2,"grace":0,"on_disconnect":"keep","restart_grace":null}});
        let t = render(&data);
        assert!(t.starts_with("policy of kind gpu"), "{t}");
        assert!(t.contains("heartbeat_interval: 5000"), "{t}");
        assert!(t.contains("on_disconnect:      keep"), "{t}");
    }
}
