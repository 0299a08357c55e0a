//! `[log]`: how vigil writes its own log (to stderr): lines for a person, or one JSON object
//! per line for a log collector.

use serde::Deserialize;

/// `[log]`: the shape of vigil's own log. Which events are written is `RUST_LOG`'s business.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `"text"` (the default) or `"json"`; the flag `--log-format` of `vigil serve` wins.
    pub format: LogFormat,
}

/// The shape of a log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for a person: time, level, target, message, `key=value` fields
    /// (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`),
    /// and the spans the event happened in (`span`, `spans`).
    Json,
}
