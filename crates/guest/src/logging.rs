//! A small `tracing` subscriber for the `tether-guest` binary: stderr and syslog.
//!
//! The library never installs it; `main` does. Each event becomes one line, the message
//! followed by its fields as `key=value`. The line goes to stderr and, as an RFC 3164 message
//! (facility daemon, ident `Guest-Client`, UTC time stamp), to the `/dev/log` datagram socket
//! when it exists. Sending never blocks: a line the syslog daemon cannot take now is dropped.
//! Spans are not tracked (the binary runs one daemon).

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// The syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// The syslog ident, as the reference daemon logs.
pub const IDENT: &str = "Guest-Client";
/// Longest syslog line sent.
const MAX_LINE: usize = 1024;
/// Facility `daemon`.
const FACILITY_DAEMON: u8 = 3;

/// Writes events to stderr and syslog.
#[derive(Debug)]
pub struct Logger {
    max: Level,
    stderr: bool,
    syslog: Option<Mutex<UnixDatagram>>,
    pid: u32,
}

impl Logger {
    /// A logger for events up to `max`, to stderr if `stderr` and to syslog at `socket` if
    /// it can be reached.
    pub fn new(max: Level, stderr: bool, socket: &Path) -> Logger {
        Logger {
            max,
            stderr,
            syslog: connect(socket).map(Mutex::new),
            pid: std::process::id(),
        }
    }

    /// Whether lines go to syslog.
    pub fn has_syslog(&self) -> bool {
        self.syslog.is_some()
    }

    /// Sends lines to stderr only if `stderr`.
    pub fn with_stderr(mut self, stderr: bool) -> Logger {
        self.stderr = stderr;
        self
    }

    fn syslog_line(&self, level: Level, text: &str) {
        let Some(socket) = &self.syslog else { return };
        let mut line = format!(
            "<{}>{} {IDENT}[{}]: ",
            priority(level),
            timestamp(SystemTime::now()),
            self.pid
        );
        line.push_str(text);
        truncate(&mut line, MAX_LINE);
        if let Ok(socket) = socket.lock() {
            // Dropped if syslog cannot take it now: logging must never block the daemon.
            if socket.send(line.as_bytes()).is_err() {
                let _ = socket
                    .connect(SYSLOG_SOCKET)
                    .and_then(|()| socket.send(line.as_bytes()));
            }
        }
    }
}

fn connect(path: &Path) -> Option<UnixDatagram> {
    let socket = UnixDatagram::unbound().ok()?;
    socket.connect(path).ok()?;
    socket.set_nonblocking(true).ok()?;
    Some(socket)
}

impl Subscriber for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let level = *event.metadata().level();
        let text = format_event(event);
        if self.stderr {
            let line = format!("{level:>5} {text}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        self.syslog_line(level, &text);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The message of an event followed by its other fields.
pub fn format_event(event: &Event<'_>) -> String {
    let mut visitor = LineVisitor::default();
    event.record(&mut visitor);
    let mut text = visitor.message;
    text.push_str(&visitor.fields);
    text.replace(['\n', '\r'], " ")
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if value.is_empty() || value.contains([' ', '"', '=']) {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        // A count of left-out messages is only worth showing when something was left out.
        if !(field.name() == "left_out" && value == 0) {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

fn priority(level: Level) -> u8 {
    let severity = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    };
    FACILITY_DAEMON * 8 + severity
}

/// `Mmm dd hh:mm:ss` in UTC (RFC 3164; no time zone data is read).
pub fn timestamp(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (month, day) = month_day(days);
    let (h, m, s) = (rest / 3600, rest / 60 % 60, rest % 60);
    let name = MONTHS
        .get(month.saturating_sub(1) as usize)
        .unwrap_or(&"Jan");
    format!("{name} {day:>2} {h:02}:{m:02}:{s:02}")
}

/// Month (1–12) and day of the civil date `days` after 1970-01-01.
fn month_day(days: u64) -> (u64, u64) {
    // Days since 0000-03-01 in 400-year eras (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (month, day)
}

fn truncate(line: &mut String, max: usize) {
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3164_in_utc() {
        let at = |secs| timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "Jan  1 00:00:00");
        assert_eq!(at(951_782_400), "Feb 29 00:00:00"); // 2000-02-29
        assert_eq!(at(1_709_251_199), "Feb 29 23:59:59"); // 2024-02-29
        assert_eq!(at(1_735_689_599), "Dec 31 23:59:59"); // 2024-12-31
        assert_eq!(at(1_700_000_000), "Nov 14 22:13:20");
    }

    #[test]
    fn priorities_use_facility_daemon() {
        assert_eq!(priority(Level::ERROR), 27);
        assert_eq!(priority(Level::WARN), 28);
        assert_eq!(priority(Level::INFO), 30);
        assert_eq!(priority(Level::DEBUG), 31);
    }

    #[test]
    fn lines_reach_a_syslog_socket() {
        let dir = tether_testkit::temp_dir();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let logger = Logger::new(Level::INFO, false, &path);
        assert!(logger.has_syslog());
        tracing::subscriber::with_default(logger, || {
            tracing::info!(
                from = "enabling",
                to = "enabled",
                left_out = 0u64,
                "state\nchange"
            );
            tracing::debug!("not at this level");
            tracing::warn!(reason = "two words", "careful");
        });
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(line.starts_with("<30>"), "{line}");
        let pid = std::process::id();
        assert!(
            line.ends_with(&format!(
                " Guest-Client[{pid}]: state change from=enabling to=enabled"
            )),
            "{line}"
        );
        let n = server.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            line.starts_with("<28>") && line.ends_with("careful reason=\"two words\""),
            "{line}"
        );
    }

    #[test]
    fn a_missing_syslog_socket_is_skipped() {
        let logger = Logger::new(Level::INFO, false, Path::new("/nonexistent/log"));
        assert!(!logger.has_syslog());
        tracing::subscriber::with_default(logger, || tracing::error!("nowhere to go"));
    }
}
