//! Answers and frames as text for an operator: the tables and records of `vigil agents`,
//! the event lines and summaries of `vigil watch` (pure, unit-tested through their commands).

use std::io::IsTerminal;

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use serde_json::Value;
use vigil_actors::Status;

/// Columns padded to their widest cell, two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `t` (RFC 3339) was: `12s ago`, `5m ago`, `3h ago`, `2d ago`; `never` for null.
pub fn age(t: &Value, now: DateTime<Utc>) -> String {
    let Some(s) = t.as_str() else {
        return "never".into();
    };
    let Ok(at) = s.parse::<DateTime<Utc>>() else {
        return s.to_string();
    };
    let secs = (now - at).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

/// The agents as a table: id, name, kind, status, activity, last seen, connected,
/// incarnation.
pub fn render_list(data: &Value, now: DateTime<Utc>) -> String {
    let agents = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if agents.is_empty() {
        return "no agents".into();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                text(&a["id"]),
                text(&a["name"]),
                text(&a["kind"]),
                text(&a["status"]),
                text(&a["activity"]),
                age(&a["last_seen"], now),
                yes_no(&a["connected"]),
                text(&a["incarnation"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "KIND",
            "STATUS",
            "ACTIVITY",
            "LAST SEEN",
            "CONNECTED",
            "INCARNATION",
        ],
        &rows,
    )
}

/// `key=value, ...` for an object; items joined for an array; text otherwise.
pub(crate) fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "-".into(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) | Value::Array(_) => format!("{k}={v}"),
                other => format!("{k}={}", text(other)),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => text(other),
    }
}

/// One agent's record as `key: value` lines, the usual fields first.
pub fn render_record(data: &Value, now: DateTime<Utc>) -> String {
    const ORDER: [&str; 15] = [
        "id",
        "name",
        "kind",
        "status",
        "activity",
        "reported",
        "connected",
        "incarnation",
        "last_seen",
        "registered_at",
        "updated_at",
        "heartbeat_interval_ms",
        "metadata",
        "capabilities",
        "metrics",
    ];
    let Some(obj) = data.as_object() else {
        return text(data);
    };
    let keys = ORDER
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .chain(
            obj.keys()
                .map(String::as_str)
                .filter(|k| !ORDER.contains(k)),
        );
    let mut rows = Vec::new();
    for k in keys {
        let v = &obj[k];
        let shown = match k {
            "connected" => yes_no(v),
            "last_seen" if v.is_null() => "never".into(),
            "last_seen" => format!("{} ({})", text(v), age(v, now)),
            _ => inline(v),
        };
        rows.push((k, shown));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
}

/// One line per event.
pub fn render_events(data: &Value) -> String {
    let events = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if events.is_empty() {
        return "no events".into();
    }
    events
        .iter()
        .map(|e| format_event(e, false) + "\n")
        .collect()
}

/// The health report: one line of counts, then a table of the agents with an issue.
pub fn render_health(data: &Value) -> String {
    const FIRST: [&str; 6] = [
        "total",
        "online",
        "degraded",
        "offline",
        "maintenance",
        "unknown",
    ];
    let summary = data["summary"].as_object();
    let counts: Vec<String> = match summary {
        Some(m) => FIRST
            .iter()
            .copied()
            .filter(|k| m.contains_key(*k))
            .chain(m.keys().map(String::as_str).filter(|k| !FIRST.contains(k)))
            .map(|k| format!("{k} {}", inline(&m[k])))
            .collect(),
        None => Vec::new(),
    };
    let mut out = format!("health at {}: {}\n", text(&data["at"]), counts.join(", "));
    let findings = data["agents"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if findings.is_empty() {
        out.push_str("no findings\n");
        return out;
    }
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| {
            vec![
                text(&f["id"]),
                text(&f["kind"]),
                text(&f["severity"]),
                text(&f["issue"]),
                text(&f["detail"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "KIND", "SEVERITY", "ISSUE", "DETAIL"],
        &rows,
    ));
    out
}

/// Nested objects as `a.b.c: value` lines.
pub fn render_flat(data: &Value) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = match prefix {
                        "" => k.clone(),
                        p => format!("{p}.{k}"),
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), inline(other))),
        }
    }
    let mut lines = Vec::new();
    walk("", data, &mut lines);
    let w = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
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

pub(crate) fn format_stats(frame: &Value) -> String {
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
