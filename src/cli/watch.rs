//! `vigil watch`: a terminal monitor over protocol v1 (role `monitor`).
//!
//! [`watch`] connects, subscribes (topics and filters; a snapshot first, or a replay `since` a
//! seq) and hands every line worth showing to a callback as a [`WatchLine`]. It remembers the
//! last seq it handed on ([`Cursor`]); when the connection drops it reconnects with backoff and
//! subscribes again with `since: last_seq`, so across any number of reconnections each event is
//! shown once, in order, and none is missed while the server keeps it. `lagged` resumes the
//! same way on the same connection; `resync_required` (the history is gone) subscribes again
//! with a snapshot and says so.
//!
//! The resume rules are the pure [`Cursor`] (no IO, unit-tested); [`watch`] is the socket
//! loop around it; [`render`] turns a line into text (or the raw frame for `--json`); [`run`]
//! is the command, and the only part that prints.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::Instant;
use vigil_actors::Status;

use crate::cli::agents::{parse_status, ConnArgs};
use crate::client::{ClientConfig, ClientError, Connection};
use crate::protocol::Role;

/// The topics a monitor may subscribe to.
pub const TOPICS: [&str; 4] = ["agents", "jobs", "alerts", "stats"];

/// `vigil watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// A topic to follow (repeatable): agents, jobs, alerts, stats.
    #[arg(
        long = "topic",
        value_name = "TOPIC",
        default_values = ["agents", "alerts"],
        value_parser = clap::builder::PossibleValuesParser::new(TOPICS),
        value_delimiter = ','
    )]
    pub topics: Vec<String>,
    /// Only agents of this kind (repeatable).
    #[arg(long = "kind", value_name = "KIND", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Only this agent (repeatable).
    #[arg(long = "id", value_name = "ID", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Only events into or out of this status (repeatable).
    #[arg(long = "status", value_name = "STATUS", value_delimiter = ',', value_parser = parse_status)]
    pub statuses: Vec<Status>,
    /// Replay every retained event after this seq first (instead of a snapshot).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Print the server's frames as they are, one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// No colours (also when NO_COLOR is set or stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
}

/// What [`watch`] subscribes to, and where.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Address, token, TLS and the reconnection backoff.
    pub client: ClientConfig,
    pub topics: Vec<String>,
    pub kinds: Vec<String>,
    pub ids: Vec<String>,
    pub statuses: Vec<Status>,
    /// Start with a replay after this seq instead of a snapshot.
    pub since: Option<u64>,
    /// A ping when the connection has been quiet this long; silence for three of these
    /// means the connection is dead (a half-open socket never reports an error).
    pub ping_interval: Duration,
}

impl WatchOptions {
    /// Topics `agents` and `alerts`, no filter, a snapshot first.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            topics: vec!["agents".into(), "alerts".into()],
            kinds: Vec::new(),
            ids: Vec::new(),
            statuses: Vec::new(),
            since: None,
            ping_interval: Duration::from_secs(15),
        }
    }

    fn subscribe_frame(&self, start: Start, reference: u64) -> Value {
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let mut f = json!({
            "type": "subscribe",
            "topics": self.topics,
            "filter": {"kinds": self.kinds, "ids": self.ids, "statuses": statuses},
            "ref": reference,
        });
        match start {
            Start::Snapshot => f["snapshot"] = json!(true),
            Start::Since(seq) => f["since"] = json!(seq),
        }
        f
    }
}

/// How a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The state first, then the events after it.
    Snapshot,
    /// Every retained event after this seq, then live.
    Since(u64),
}

/// What [`watch`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchLine {
    /// Connected and said hello.
    Connected { addr: String, session: String },
    /// The server accepted a subscription.
    Subscribed { start: Start },
    /// The `snapshot` frame.
    Snapshot(Value),
    /// An `event` frame not shown before.
    Event { seq: u64, frame: Value },
    /// A `stats` frame.
    Stats(Value),
    /// The server dropped the subscription because the watcher fell behind; it resumes after
    /// `resume_after` on the same connection.
    Lagged {
        frame: Value,
        resume_after: Option<u64>,
    },
    /// The events after `last_seq` are no longer retained (the oldest kept is `oldest`); the
    /// watcher subscribes again with a snapshot, and what happened in between is not shown.
    Resync {
        frame: Value,
        oldest: u64,
        last_seq: Option<u64>,
    },
    /// An `error` frame the server sent on its own (e.g. `rate_limited`).
    Notice(Value),
    /// The connection was lost (or could not be made); the watcher retries after `retry_in`.
    Disconnected { error: String, retry_in: Duration },
}

impl WatchLine {
    /// The server's frame this line stands for, if any (what `--json` prints).
    pub fn frame(&self) -> Option<&Value> {
        match self {
            WatchLine::Snapshot(f)
            | WatchLine::Event { frame: f, .. }
            | WatchLine::Stats(f)
            | WatchLine::Lagged { frame: f, .. }
            | WatchLine::Resync { frame: f, .. }
            | WatchLine::Notice(f) => Some(f),
            WatchLine::Connected { .. }
            | WatchLine::Subscribed { .. }
            | WatchLine::Disconnected { .. } => None,
        }
    }
}

/// Why [`watch`] gave up: the server refused something that retrying will not fix.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the server refused the connection: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the server refused the subscription: {code}: {message}")]
    Subscribe { code: String, message: String },
}

/// The resume rules: the last seq shown, and what each subscription frame means for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    last_seq: Option<u64>,
}

impl Cursor {
    /// Starting after `since`, or (`None`) with a snapshot.
    pub fn new(since: Option<u64>) -> Self {
        Self { last_seq: since }
    }

    /// The seq of the last event shown (or of the snapshot, or the `since` asked for).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// How to subscribe now: after the last seq shown, or with a snapshot when there is none.
    pub fn start(&self) -> Start {
        match self.last_seq {
            Some(seq) => Start::Since(seq),
            None => Start::Snapshot,
        }
    }

    /// Takes one frame of a subscription: the line to show (if any), and how to subscribe
    /// again when the subscription ended.
    pub fn on_frame(&mut self, frame: Value) -> (Option<WatchLine>, Option<Start>) {
        match frame["type"].as_str() {
            Some("snapshot") => {
                if let Some(seq) = frame["seq"].as_u64() {
                    self.last_seq = Some(seq);
                }
                (Some(WatchLine::Snapshot(frame)), None)
            }
            Some("event") => {
                let Some(seq) = frame["seq"].as_u64() else {
                    return (None, None); // not a persisted event: nothing to place it by
                };
                if self.last_seq.is_some_and(|last| seq <= last) {
                    return (None, None); // shown already
                }
                self.last_seq = Some(seq);
                (Some(WatchLine::Event { seq, frame }), None)
            }
            Some("stats") => (Some(WatchLine::Stats(frame)), None),
            Some("lagged") => {
                let resume_after = self.last_seq.or(frame["last_seq"].as_u64());
                self.last_seq = resume_after;
                let again = self.start();
                (
                    Some(WatchLine::Lagged {
                        frame,
                        resume_after,
                    }),
                    Some(again),
                )
            }
            Some("resync_required") => {
                let oldest = frame["oldest"].as_u64().unwrap_or(0);
                let last_seq = self.last_seq.take();
                (
                    Some(WatchLine::Resync {
                        frame,
                        oldest,
                        last_seq,
                    }),
                    Some(Start::Snapshot),
                )
            }
            _ => (None, None),
        }
    }
}

/// How one connection ended.
enum End {
    /// The callback asked to stop.
    Stopped,
    /// Worth another try.
    Retry(String),
    Fatal(WatchError),
}

/// Watches until `out` returns `Break` (then `Ok`), or the server refuses for good (a wrong
/// token, a bad filter). Connection losses are retried for ever, with backoff between
/// `client.backoff_min` and `client.backoff_max`.
pub async fn watch(
    opts: &WatchOptions,
    mut out: impl FnMut(WatchLine) -> ControlFlow<()>,
) -> Result<(), WatchError> {
    let mut cursor = Cursor::new(opts.since);
    let mut backoff = opts.client.backoff_min;
    loop {
        let error = match session(opts, &mut cursor, &mut backoff, &mut out).await {
            End::Stopped => return Ok(()),
            End::Fatal(e) => return Err(e),
            End::Retry(error) => error,
        };
        // Half fixed, half random: never a tight loop, and many watchers do not return at
        // the same instant.
        let half = backoff.as_secs_f64() / 2.0;
        let wait = Duration::from_secs_f64(half + rand::rng().random_range(0.0..=half));
        backoff = (backoff * 2).min(opts.client.backoff_max);
        if out(WatchLine::Disconnected {
            error,
            retry_in: wait,
        })
        .is_break()
        {
            return Ok(());
        }
        tokio::time::sleep(wait).await;
    }
}

/// Codes that another try would only get again.
fn fatal(code: &str) -> bool {
    matches!(
        code,
        "unauthorized" | "unsupported_protocol" | "forbidden" | "invalid_field" | "missing_field"
    )
}

async fn session(
    opts: &WatchOptions,
    cursor: &mut Cursor,
    backoff: &mut Duration,
    out: &mut impl FnMut(WatchLine) -> ControlFlow<()>,
) -> End {
    let conn = match Connection::connect(&opts.client, Role::Monitor).await {
        Ok(c) => c,
        Err(ClientError::Refused { code, message }) if fatal(&code) => {
            return End::Fatal(WatchError::Refused { code, message })
        }
        Err(e) => return End::Retry(e.to_string()),
    };
    let connected = WatchLine::Connected {
        addr: opts.client.addr.clone(),
        session: conn.welcome.session.clone(),
    };
    if out(connected).is_break() {
        return End::Stopped;
    }
    let (mut reader, mut writer) = conn.split();
    let mut reference = 1u64;
    let mut start = cursor.start();
    if let Err(e) = writer.send(&opts.subscribe_frame(start, reference)).await {
        return End::Retry(e.to_string());
    }
    let mut ping = tokio::time::interval(opts.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            frame = reader.recv_value() => {
                let frame = match frame {
                    Ok(Some(f)) => f,
                    Ok(None) => return End::Retry("the server closed the connection".into()),
                    Err(e) => return End::Retry(e.to_string()),
                };
                heard = Instant::now();
                let ours = frame["ref"].as_u64() == Some(reference);
                let line = match frame["type"].as_str() {
                    Some("ack") if ours => {
                        *backoff = opts.client.backoff_min;
                        Some(WatchLine::Subscribed { start })
                    }
                    Some("error") => {
                        let code = frame["code"].as_str().unwrap_or("").to_string();
                        let message = frame["message"].as_str().unwrap_or("").to_string();
                        if ours && fatal(&code) {
                            return End::Fatal(WatchError::Subscribe { code, message });
                        }
                        if ours {
                            return End::Retry(format!("subscribe refused: {code}: {message}"));
                        }
                        Some(WatchLine::Notice(frame))
                    }
                    _ => {
                        let (line, again) = cursor.on_frame(frame);
                        if let Some(again) = again {
                            reference += 1;
                            start = again;
                            if let Err(e) = writer.send(&opts.subscribe_frame(start, reference)).await {
                                return End::Retry(e.to_string());
                            }
                        }
                        line
                    }
                };
                if let Some(line) = line {
                    if out(line).is_break() {
                        return End::Stopped;
                    }
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() >= opts.ping_interval * 3 {
                    return End::Retry("the server stopped answering".into());
                }
                if heard.elapsed() >= opts.ping_interval {
                    if let Err(e) = writer.send(&json!({"type": "ping"})).await {
                        return End::Retry(e.to_string());
                    }
                }
            }
        }
    }
}

/// Where a rendered line goes: data on stdout, the watcher's own news on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A line as text: the raw frame with `json`, otherwise a human line (coloured with
/// `color`). `None` when there is nothing to show.
pub fn render(line: &WatchLine, json: bool, color: bool) -> Option<(Stream, String)> {
    if json {
        if let Some(f) = line.frame() {
            return Some((Stream::Out, f.to_string()));
        }
    }
    let text = match line {
        WatchLine::Connected { addr, session } => {
            return Some((Stream::Err, format!("watching {addr} (session {session})")))
        }
        WatchLine::Subscribed {
            start: Start::Since(seq),
        } => return Some((Stream::Err, format!("following events after seq {seq}"))),
        WatchLine::Subscribed { .. } => return None,
        WatchLine::Snapshot(f) => snapshot_summary(f),
        WatchLine::Event { frame, .. } => format_event(frame, color),
        WatchLine::Stats(f) => format_stats(f),
        WatchLine::Lagged { resume_after, .. } => {
            let after = resume_after.map_or("the start".to_string(), |s| format!("seq {s}"));
            return Some((
                Stream::Err,
                format!("fell behind the server (lagged); resuming after {after}"),
            ));
        }
        WatchLine::Resync {
            oldest, last_seq, ..
        } => {
            let last = last_seq.map_or("-".to_string(), |s| s.to_string());
            return Some((
                Stream::Err,
                format!(
                    "the server no longer keeps the events after seq {last} (oldest {oldest}): \
                     resubscribing with a snapshot; the events in between are not shown"
                ),
            ));
        }
        WatchLine::Notice(f) => {
            let code = f["code"].as_str().unwrap_or("error");
            let message = f["message"].as_str().unwrap_or("");
            return Some((Stream::Err, format!("server: {code}: {message}")));
        }
        WatchLine::Disconnected { error, retry_in } => {
            return Some((
                Stream::Err,
                format!(
                    "disconnected: {error}; reconnecting in {:.1}s",
                    retry_in.as_secs_f64()
                ),
            ))
        }
    };
    Some((Stream::Out, text))
}

/// `snapshot at seq 12: 5 agents (online 3, degraded 1, offline 1)`.
pub fn snapshot_summary(frame: &Value) -> String {
    let seq = frame["seq"].as_u64().unwrap_or(0);
    let agents = frame["agents"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if agents.is_empty() {
        return format!("snapshot at seq {seq}: no agents");
    }
    let counts: Vec<String> = Status::ALL
        .iter()
        .filter_map(|s| {
            let n = agents
                .iter()
                .filter(|a| a["status"].as_str() == Some(s.as_str()))
                .count();
            (n > 0).then(|| format!("{s} {n}"))
        })
        .collect();
    let noun = if agents.len() == 1 { "agent" } else { "agents" };
    format!(
        "snapshot at seq {seq}: {} {noun} ({})",
        agents.len(),
        counts.join(", ")
    )
}

fn format_stats(frame: &Value) -> String {
    let counts = |v: &Value| -> String {
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    format!(
        "stats: agents: {}; jobs: {}; connections {}, subscribers {}",
        counts(&frame["agents"]),
        counts(&frame["jobs"]),
        text(&frame["connections"]),
        text(&frame["subscribers"]),
    )
}

/// A JSON value as plain text: strings without quotes, `-` for null or absent.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The colour of a status: online green, degraded yellow, offline red, maintenance blue,
/// left and unknown dim.
pub fn status_style(status: &str) -> Style {
    let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match status {
        "online" => fg(AnsiColor::Green),
        "degraded" => fg(AnsiColor::Yellow),
        "offline" => fg(AnsiColor::Red),
        "maintenance" => fg(AnsiColor::Blue),
        "left" | "unknown" => Style::new().dimmed(),
        _ => Style::new(),
    }
}

/// One event as one line: time (UTC), seq, agent, kind, event, `from -> to`, reason. With
/// `color`, the line takes the colour of the status the agent is in after it; the status
/// word is always there as text.
pub fn format_event(frame: &Value, color: bool) -> String {
    let at = frame["at"].as_str().unwrap_or("-");
    let time = at
        .parse::<DateTime<Utc>>()
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|_| at.to_string());
    let event = frame["event"].as_str().unwrap_or("?");
    let or_dash = |v: &Value| v.as_str().map_or("-".to_string(), str::to_string);
    let (change, why, after) = match event {
        "registered" => {
            let from = frame["from"].as_str().unwrap_or("new");
            let to = or_dash(&frame["status"]);
            let why = format!("registered, incarnation {}", text(&frame["incarnation"]));
            (format!("{from} -> {to}"), why, Some(to))
        }
        "transition" => {
            let to = or_dash(&frame["to"]);
            let mut why = or_dash(&frame["reason"]);
            if let Some(m) = frame["missed"].as_u64() {
                why.push_str(&format!(" (missed {m})"));
            }
            let change = format!("{} -> {to}", or_dash(&frame["from"]));
            (change, why, Some(to))
        }
        "deregistered" => {
            let change = format!("{} -> left", or_dash(&frame["from"]));
            (change, or_dash(&frame["reason"]), Some("left".to_string()))
        }
        "activity" => {
            let change = format!("{} -> {}", or_dash(&frame["from"]), or_dash(&frame["to"]));
            let why = frame["detail"].as_str().unwrap_or("").to_string();
            (change, why, None)
        }
        "job" => {
            let change = format!(
                "{}: {} -> {}",
                or_dash(&frame["job"]),
                or_dash(&frame["from"]),
                or_dash(&frame["to"])
            );
            let mut why = Vec::new();
            if let Some(p) = frame["progress"].as_f64() {
                why.push(format!("{:.0}%", p * 100.0));
            }
            if let Some(e) = frame["error"].as_str() {
                why.push(e.to_string());
            }
            (change, why.join(" "), None)
        }
        "alert" => {
            let change = format!(
                "[{}] {}",
                or_dash(&frame["severity"]),
                or_dash(&frame["issue"])
            );
            (change, or_dash(&frame["detail"]), None)
        }
        _ => (String::new(), String::new(), None),
    };
    let line = format!(
        "{time}  {seq:>6}  {agent:<20}  {kind:<10}  {event:<12}  {change}  {why}",
        seq = text(&frame["seq"]),
        agent = or_dash(&frame["agent"]),
        kind = or_dash(&frame["kind"]),
    );
    let line = line.trim_end().to_string();
    if !color {
        return line;
    }
    let style = match (event, &after) {
        ("alert", _) => match frame["severity"].as_str() {
            Some("high") => status_style("offline"),
            Some("warning") => status_style("degraded"),
            _ => Style::new(),
        },
        (_, Some(status)) => status_style(status),
        _ => Style::new(),
    };
    format!("{style}{line}{style:#}")
}

/// Whether to colour: not asked not to (`--no-color`, `NO_COLOR`), and stdout is a terminal.
pub fn use_color(no_color: bool) -> bool {
    !no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// The command: watches until Ctrl-C, printing each line.
pub fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = args.conn.client_config("vigil-watch")?;
    // An operator watching wants to be back soon after the server is.
    client.backoff_max = Duration::from_secs(5);
    let mut opts = WatchOptions::new(client);
    opts.topics = args.topics;
    opts.kinds = args.kinds;
    opts.ids = args.ids;
    opts.statuses = args.statuses;
    opts.since = args.since;
    let color = !args.json && use_color(args.no_color);
    let json = args.json;
    let printer = move |line: WatchLine| -> ControlFlow<()> {
        let Some((stream, text)) = render(&line, json, color) else {
            return ControlFlow::Continue(());
        };
        let written = match stream {
            Stream::Out => {
                let mut o = std::io::stdout().lock();
                writeln!(o, "{text}").and_then(|()| o.flush())
            }
            Stream::Err => writeln!(std::io::stderr(), "vigil watch: {text}"),
        };
        // A closed stdout (`vigil watch | head`) ends the watch.
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        tokio::select! {
            r = watch(&opts, printer) => Ok(r?),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Value {
        json!({"type":"event","seq":seq,"at":"2026-11-23T10:00:31.002Z","event":"transition",
               "agent":"a1","kind":"worker","from":"online","to":"degraded",
               "reason":"heartbeat_missed","missed":1})
    }

    #[test]
    fn the_cursor_shows_each_seq_once_and_resumes_after_the_last_shown() {
        let mut c = Cursor::new(None);
        assert_eq!(c.start(), Start::Snapshot);
        let (line, again) = c.on_frame(json!({"type":"snapshot","seq":10,"agents":[]}));
        assert!(matches!(line, Some(WatchLine::Snapshot(_))));
        assert_eq!(again, None);
        assert_eq!(c.start(), Start::Since(10));
        // An event at or before the snapshot is not shown.
        assert_eq!(c.on_frame(event(10)), (None, None));
        let (line, _) = c.on_frame(event(11));
        assert!(matches!(line, Some(WatchLine::Event { seq: 11, .. })));
        assert_eq!(c.on_frame(event(11)), (None, None), "never twice");
        assert_eq!(c.on_frame(event(9)), (None, None));
        let (line, _) = c.on_frame(event(14)); // a filter may skip seqs
        assert!(line.is_some());
        assert_eq!(c.start(), Start::Since(14));

        // lagged: resume after the last seq shown (not the server's idea of it).
        let (line, again) = c.on_frame(json!({"type":"lagged","last_seq":20}));
        assert_eq!(
            line.and_then(|l| match l {
                WatchLine::Lagged { resume_after, .. } => resume_after,
                _ => None,
            }),
            Some(14)
        );
        assert_eq!(again, Some(Start::Since(14)));

        // resync_required: a snapshot, and the cursor forgets what it cannot vouch for.
        let (line, again) = c.on_frame(json!({"type":"resync_required","oldest":100}));
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
        let (line, _) = c.on_frame(event(12));
        assert!(line.is_some(), "with no cursor, an event is shown");
    }

    #[test]
    fn a_watch_started_since_a_seq_resumes_from_it_and_lagged_without_events_keeps_it() {
        let mut c = Cursor::new(Some(5));
        assert_eq!(c.start(), Start::Since(5));
        assert_eq!(c.on_frame(event(5)), (None, None));
        let (_, again) = c.on_frame(json!({"type":"lagged","last_seq":5}));
        assert_eq!(again, Some(Start::Since(5)));
        // Lagged before anything was shown or snapshotted: the server's last seq.
        let mut c = Cursor::new(None);
        let (_, again) = c.on_frame(json!({"type":"lagged","last_seq":7}));
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
}
