//! `/logz`: the controller's most recent log lines, for operators (docs/operations.md). A
//! [`LogzLayer`] beside the stderr logger copies every event that passes the log filter into
//! a [`LogRing`] of `log.logz_lines` lines; the CSM and the CCM answer `GET /logz` from it
//! ([`render`]), newest first, as text, JSON or an HTML page (escaped), filtered by level.
//!
//! Secrets and payloads are never logged in the first place; client-supplied text in events
//! is escaped where it is logged (`iot_proto::log::Escaped`), and once more here for HTML.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The longest line kept, in bytes (a longer one is cut, with `…`).
pub const MAX_LINE_BYTES: usize = 4096;
/// The most lines `log.logz_lines` may ask for.
pub const MAX_LINES: usize = 100_000;
/// Lines in one answer when the query names no `limit`, and the most it may name.
pub const MAX_ANSWER_LINES: usize = 1000;

/// One log event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// Unix seconds.
    pub time: f64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    pub message: String,
    /// The event's other fields, `name=value` in the order they were given.
    pub fields: Vec<(String, String)>,
    #[serde(skip)]
    severity: u8,
}

fn severity(l: &Level) -> u8 {
    match *l {
        Level::ERROR => 5,
        Level::WARN => 4,
        Level::INFO => 3,
        Level::DEBUG => 2,
        Level::TRACE => 1,
    }
}

/// Reads `error`, `warn`, `info`, `debug`, `trace` (any case).
pub fn parse_level(s: &str) -> Option<Level> {
    s.parse().ok()
}

/// The last lines, oldest dropped first. Shared by the logger and the HTTP servers.
#[derive(Debug)]
pub struct LogRing {
    capacity: usize,
    /// Shared lines: an answer clones pointers under the lock, not text.
    lines: Mutex<VecDeque<Arc<LogLine>>>,
}

impl LogRing {
    /// Keeps the last `capacity` lines (at most [`MAX_LINES`]; 0 keeps none).
    pub fn new(capacity: usize) -> Arc<LogRing> {
        let capacity = capacity.min(MAX_LINES);
        Arc::new(LogRing {
            capacity,
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        })
    }

    pub fn push(&self, line: LogLine) {
        if self.capacity == 0 {
            return;
        }
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(Arc::new(line));
    }

    /// Whether it keeps any line (`log.logz_lines` > 0).
    pub fn keeps_lines(&self) -> bool {
        self.capacity > 0
    }

    /// Newest first, at least as severe as `min` (all when `None`), at most `limit`.
    pub fn newest(&self, min: Option<Level>, limit: usize) -> Vec<Arc<LogLine>> {
        let floor = min.as_ref().map_or(0, severity);
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .filter(|l| l.severity >= floor)
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Copies events into a [`LogRing`]; add it beside the stderr layer, under the same filter.
#[derive(Debug, Clone)]
pub struct LogzLayer(pub Arc<LogRing>);

/// Collects an event's message and fields, [`MAX_LINE_BYTES`] of them in all (names
/// included); what does not fit is cut, marked with `…`.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
    bytes: usize,
    cut: bool,
}

/// Writes at most `room` bytes (whole characters), then refuses: formatting a huge value
/// stops there instead of building it whole.
struct Bounded {
    text: String,
    room: usize,
    full: bool,
}

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if s.len() <= self.room {
            self.text.push_str(s);
            self.room -= s.len();
            return Ok(());
        }
        let mut end = self.room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(&s[..end]);
        self.room = 0;
        self.full = true;
        Err(std::fmt::Error)
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        let is_message = name == "message";
        let used = self.bytes + if is_message { 0 } else { name.len() + 2 };
        if self.cut || used >= MAX_LINE_BYTES {
            self.cut = true;
            return;
        }
        let mut w = Bounded {
            text: String::new(),
            room: MAX_LINE_BYTES - used,
            full: false,
        };
        let _ = write!(w, "{value:?}");
        let mut text = w.text;
        if w.full {
            text.push('…');
            self.cut = true;
        }
        self.bytes = used + text.len();
        if is_message {
            self.message = text;
        } else {
            self.fields.push((name.to_owned(), text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

impl<S: Subscriber> Layer<S> for LogzLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !self.0.keeps_lines() {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if f.cut {
            f.fields.push(("…".into(), "cut".into()));
        }
        let meta = event.metadata();
        self.0.push(LogLine {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            level: meta.level().as_str(),
            target: meta.target().to_owned(),
            message: f.message,
            fields: f.fields,
            severity: severity(meta.level()),
        });
    }
}

/// How `/logz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Html,
}

impl Format {
    /// `text` (or nothing), `json`, `html`.
    pub fn parse(s: Option<&str>) -> Option<Format> {
        match s {
            None | Some("text") => Some(Format::Text),
            Some("json") => Some(Format::Json),
            Some("html") => Some(Format::Html),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Json => "application/json",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

/// `2026-12-03T16:40:01.123Z`.
fn time_text(unix: f64) -> String {
    chrono::DateTime::from_timestamp_millis((unix * 1000.0) as i64).map_or_else(
        || "?".to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

/// One line as text: `time LEVEL target: message name=value ...`.
pub fn line_text(l: &LogLine) -> String {
    let mut out = format!(
        "{} {:>5} {}: {}",
        time_text(l.time),
        l.level,
        l.target,
        l.message
    );
    for (k, v) in &l.fields {
        let _ = write!(out, " {k}={v}");
    }
    out
}

/// `s` safe inside HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The body of a `/logz` answer for `lines` (newest first).
pub fn render(lines: &[Arc<LogLine>], format: Format) -> String {
    match format {
        Format::Text => lines.iter().map(|l| line_text(l) + "\n").collect(),
        Format::Json => {
            let v: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| {
                    let fields: serde_json::Map<String, serde_json::Value> = l
                        .fields
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                        .collect();
                    serde_json::json!({"time": l.time, "level": l.level, "target": l.target,
                                       "message": l.message, "fields": fields})
                })
                .collect();
            serde_json::Value::Array(v).to_string()
        }
        Format::Html => {
            let mut out = String::from(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>logz</title></head>\
                 <body><h1>Recent log lines, newest first</h1>\n<pre>\n",
            );
            for l in lines {
                out.push_str(&html_escape(&line_text(l)));
                out.push('\n');
            }
            out.push_str("</pre></body></html>\n");
            out
        }
    }
}

/// The query of `GET /logz`: `format` (`text`, `json`, `html`), `level` (that and more
/// severe), `limit` (the newest N, at most [`MAX_ANSWER_LINES`], which is also the default).
#[derive(Debug, Default, serde::Deserialize)]
pub struct LogzQuery {
    pub format: Option<String>,
    pub level: Option<String>,
    pub limit: Option<usize>,
}

/// The headers every `/logz` answer carries besides its content type: never cached, never
/// sniffed, and the HTML page may load or run nothing.
pub const HEADERS: [(&str, &str); 3] = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", "default-src 'none'"),
];

impl LogzQuery {
    /// The content type and body of the answer from `ring`, or why the query is refused.
    pub fn answer(&self, ring: &LogRing) -> Result<(&'static str, String), String> {
        let format =
            Format::parse(self.format.as_deref()).ok_or("`format` is one of text, json, html")?;
        let level = match self.level.as_deref() {
            None => None,
            Some(l) => {
                Some(parse_level(l).ok_or("`level` is one of error, warn, info, debug, trace")?)
            }
        };
        let limit = self.limit.unwrap_or(MAX_ANSWER_LINES);
        if !(1..=MAX_ANSWER_LINES).contains(&limit) {
            return Err(format!("`limit` is 1 to {MAX_ANSWER_LINES}"));
        }
        let lines = ring.newest(level, limit);
        Ok((format.content_type(), render(&lines, format)))
    }
}

#[cfg(test)]
#[path = "logz_tests.rs"]
mod tests;
