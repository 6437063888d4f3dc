//! The agent's settings, read from the kernel command line (`moat.*` keys, see `moat_abi::cmdline`).
//!
//! The VMM is the only party that writes the command line, so the values are trusted as to intent,
//! but not as to form: a malformed value is reported and ignored, never fatal, so that a typo in a
//! launcher cannot keep a guest from becoming ready.

use moat_abi::cmdline as keys;
use tracing::Level;

/// The hostname used when the command line gives none (or an invalid one).
pub const DEFAULT_HOSTNAME: &str = "moat";

/// A self-test the agent runs after readiness (`moat.selftest=`), before powering off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// Print the guest kernel's release on the console (`moat_abi::selftest::UNAME`).
    Uname,
}

/// Wall-clock time to set at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// What the command line asks of the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The guest's hostname.
    pub hostname: String,
    /// The wall-clock time to set, if given.
    pub clock: Option<Clock>,
    /// The most verbose log level to print.
    pub log_level: Level,
    /// A self-test to run after readiness.
    pub selftest: Option<SelfTest>,
    /// Problems found while parsing, to be logged once logging is set up.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hostname: DEFAULT_HOSTNAME.to_string(),
            clock: None,
            log_level: Level::INFO,
            selftest: None,
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a kernel command line (the contents of `/proc/cmdline`).
    pub fn parse(cmdline: &str) -> Self {
        let mut cfg = Self::default();
        for (key, value) in split(cmdline) {
            let Some(value) = value else { continue };
            match key {
                k if k == keys::HOSTNAME => match valid_hostname(value) {
                    Ok(()) => cfg.hostname = value.to_string(),
                    Err(why) => cfg.warn(format!("ignoring {k}={value:?}: {why}")),
                },
                k if k == keys::CLOCK => match parse_clock(value) {
                    Some(c) => cfg.clock = Some(c),
                    None => cfg.warn(format!(
                        "ignoring {k}={value:?}: expected seconds since the epoch, e.g. 1700000000.25"
                    )),
                },
                k if k == keys::LOG => match value.parse::<Level>() {
                    Ok(l) => cfg.log_level = l,
                    Err(_) => cfg.warn(format!(
                        "ignoring {k}={value:?}: expected error, warn, info, debug or trace"
                    )),
                },
                k if k == keys::SELFTEST => match value {
                    v if v == moat_abi::selftest::UNAME => cfg.selftest = Some(SelfTest::Uname),
                    _ => cfg.warn(format!(
                        "ignoring {k}={value:?}: the only self-test is {:?}",
                        moat_abi::selftest::UNAME
                    )),
                },
                _ => {}
            }
        }
        cfg
    }

    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }
}

/// Splits a command line into `key[=value]` words; double quotes group spaces, as the kernel does.
fn split(cmdline: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut words = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (i, c) in cmdline.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    words.push(&cmdline[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        words.push(&cmdline[s..]);
    }
    words.into_iter().map(|w| match w.split_once('=') {
        Some((k, v)) => (k, Some(v.trim_matches('"'))),
        None => (w, None),
    })
}

/// RFC 1123 host name: 1 to 64 bytes of letters, digits, `-` and `.`, not starting with `-` or `.`.
fn valid_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("a hostname has 1 to 64 characters");
    }
    if name.starts_with(['-', '.']) {
        return Err("a hostname starts with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("a hostname has only letters, digits, '-' and '.'");
    }
    Ok(())
}

/// `SECS` or `SECS.FRACTION` (up to nanoseconds).
fn parse_clock(v: &str) -> Option<Clock> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    Some(Clock { secs, nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_key() {
        let c = Config::parse(
            "console=ttyS0 moat.hostname=pod-1 moat.clock=1700000000.25 moat.log=debug \
             moat.selftest=uname quiet\n",
        );
        assert_eq!(c.hostname, "pod-1");
        assert_eq!(
            c.clock,
            Some(Clock {
                secs: 1_700_000_000,
                nanos: 250_000_000
            })
        );
        assert_eq!(c.log_level, Level::DEBUG);
        assert_eq!(c.selftest, Some(SelfTest::Uname));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn defaults_without_keys() {
        let c = Config::parse("console=ttyS0 reboot=k panic=-1");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn bad_values_are_reported_and_ignored() {
        let c = Config::parse(
            "moat.hostname=-bad moat.clock=12x moat.log=loud moat.selftest=fly moat.clock=1.1234567890",
        );
        assert_eq!(c.hostname, DEFAULT_HOSTNAME);
        assert_eq!(c.clock, None);
        assert_eq!(c.log_level, Level::INFO);
        assert_eq!(c.selftest, None);
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("moat.hostname"), "{:?}", c.warnings);
    }

    #[test]
    fn quotes_group_words() {
        let words: Vec<_> = split(r#"a="x y" moat.hostname=h "b c""#).collect();
        assert_eq!(
            words,
            vec![
                ("a", Some("x y")),
                ("moat.hostname", Some("h")),
                (r#""b c""#, None)
            ]
        );
    }

    #[test]
    fn hostname_rules() {
        assert!(valid_hostname("a.b-c1").is_ok());
        assert!(valid_hostname("").is_err());
        assert!(valid_hostname(&"a".repeat(65)).is_err());
        assert!(valid_hostname("a b").is_err());
        assert!(valid_hostname("a/b").is_err());
    }
}
