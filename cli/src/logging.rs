//! Logs: to stderr for people, and to the `--log` file the way runc writes it for containerd.
//!
//! containerd's runc shim passes `--log <bundle>/log.json --log-format json` and, when a verb fails,
//! reads that file's JSON lines and reports the last one whose `level` is `error` (its `msg` field).
//! So every error moat reports also goes there, as `{"level":"error","msg":"...","time":"..."}`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::args::LogFormat;

/// Where log lines go. Created once in `main`.
#[derive(Debug)]
pub struct LogFile {
    file: Mutex<File>,
    format: LogFormat,
}

impl LogFile {
    /// Opens (appends to) the log file.
    pub fn open(path: &Path, format: LogFormat) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            format,
        })
    }

    /// Appends one line.
    pub fn write(&self, level: &str, msg: &str) {
        let line = format_line(self.format, level, msg, SystemTime::now());
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A log line that cannot be written must not turn into a second error.
        let _ = f.write_all(line.as_bytes());
    }
}

/// One log line, newline included.
pub fn format_line(format: LogFormat, level: &str, msg: &str, at: SystemTime) -> String {
    let time = rfc3339(at);
    match format {
        LogFormat::Json => {
            let v = serde_json::json!({ "level": level, "msg": msg, "time": time });
            format!("{v}\n")
        }
        LogFormat::Text => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
    }
}

/// Sets up tracing: stderr (warnings, or everything with `--debug`/`RUST_LOG`) and the log file.
pub fn init(debug: bool, file: Option<std::sync::Arc<LogFile>>) {
    let default = if debug { "debug" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(filter);
    let file_level = if debug { Level::DEBUG } else { Level::INFO };
    let file_layer = file.map(|f| FileLayer {
        file: f,
        max: file_level,
    });
    // Another subscriber already set (tests calling in) is fine: keep it.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
}

struct FileLayer {
    file: std::sync::Arc<LogFile>,
    max: Level,
}

impl<S: Subscriber> Layer<S> for FileLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut v = MsgVisitor::default();
        event.record(&mut v);
        self.file
            .write(&level.as_str().to_ascii_lowercase(), v.msg.trim_end());
    }
}

#[derive(Default)]
struct MsgVisitor {
    msg: String,
}

impl Visit for MsgVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?} ");
        } else {
            let _ = write!(self.msg, "{}={value:?} ", field.name());
        }
    }
}

/// `2024-05-01T12:34:56.789Z` from a system time (UTC).
pub fn rfc3339(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_200 + 3661, 5); // 2024-03-01 (leap year)
        assert_eq!(rfc3339(t), "2024-03-01T01:01:01.000000005Z");
    }

    #[test]
    fn json_lines_are_what_containerd_reads() {
        let line = format_line(LogFormat::Json, "error", "no \"x\"", UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "no \"x\"");
        assert!(line.ends_with('\n'));
    }
}
