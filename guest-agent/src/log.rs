//! A minimal `tracing` subscriber that prints one line per event on the console.
//!
//! The guest has only the serial console, no clock worth printing (the kernel's own log carries
//! timestamps if asked) and no spans worth keeping, so this is all the agent needs: a few dozen lines
//! instead of `tracing-subscriber` and its dependencies in a binary every VM boots.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// The level of the installed [`Console`] (0 = ERROR .. 4 = TRACE), changeable once the command
/// line has been read.
static LEVEL: AtomicU8 = AtomicU8::new(2);

const LEVELS: [Level; 5] = [
    Level::ERROR,
    Level::WARN,
    Level::INFO,
    Level::DEBUG,
    Level::TRACE,
];

fn current() -> Level {
    LEVELS[usize::from(LEVEL.load(Ordering::Relaxed)).min(4)]
}

/// Prints events at the current level or more severe to stderr as
/// `moat-agent: LEVEL message key=value...`.
#[derive(Debug, Default)]
pub struct Console;

impl Console {
    /// Installs the subscriber for the whole process at level `max`; later calls only set the level.
    pub fn install(max: Level) {
        set_level(max);
        let _ = tracing::subscriber::set_global_default(Self);
    }
}

/// Changes the installed [`Console`]'s level.
pub fn set_level(max: Level) {
    let index = LEVELS.iter().position(|l| *l == max).unwrap_or(2);
    LEVEL.store(index as u8, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
}

/// Formats one event's fields: the message first, then `key=value` pairs.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// Renders an event as the console line [`Console`] prints (without the newline).
pub fn render(level: &Level, fields: &dyn Fn(&mut dyn Visit)) -> String {
    let mut line = Line::default();
    fields(&mut line);
    format!("moat-agent: {level} {}{}", line.message, line.fields)
}

impl Subscriber for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= current()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(current().into())
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = render(event.metadata().level(), &|v| event.record(v));
        text.push('\n');
        // One write per line, so that lines of different threads do not interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_changes_at_run_time() {
        set_level(Level::DEBUG);
        assert_eq!(current(), Level::DEBUG);
        set_level(Level::WARN);
        assert_eq!(current(), Level::WARN);
        set_level(Level::INFO);
        assert_eq!(current(), Level::INFO);
    }

    #[test]
    fn line_format() {
        struct Capture(std::sync::Mutex<Vec<String>>);
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, e: &Event<'_>) {
                let line = render(e.metadata().level(), &|v| e.record(v));
                self.0.lock().unwrap().push(line);
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let cap = std::sync::Arc::new(Capture(Default::default()));
        tracing::subscriber::with_default(cap.clone(), || {
            tracing::warn!(path = "/x", code = 3, "mount failed");
        });
        assert_eq!(
            cap.0.lock().unwrap().as_slice(),
            ["moat-agent: WARN mount failed path=/x code=3"]
        );
    }
}
