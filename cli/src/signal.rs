//! Signal names and numbers as `kill` takes them: `9`, `KILL`, `SIGKILL`, `sigterm`, `RTMIN+3`.

/// Signal names by number (Linux x86_64).
const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal; the error lists what is accepted.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let max = libc::SIGRTMAX();
    if let Ok(n) = s.parse::<i32>() {
        if (1..=max).contains(&n) {
            return Ok(n);
        }
        return Err(format!("signal {n} is out of range: use 1 to {max}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: i32, off: &str, sign: i32| -> Option<i32> {
        let o: i32 = if off.is_empty() { 0 } else { off.parse().ok()? };
        let n = base + sign * o;
        (libc::SIGRTMIN()..=max).contains(&n).then_some(n)
    };
    let parsed = if let Some(rest) = name.strip_prefix("RTMIN") {
        match rest.strip_prefix('+') {
            Some(off) => rt(libc::SIGRTMIN(), off, 1),
            None if rest.is_empty() => rt(libc::SIGRTMIN(), "", 1),
            None => None,
        }
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        match rest.strip_prefix('-') {
            Some(off) => rt(max, off, -1),
            None if rest.is_empty() => rt(max, "", 1),
            None => None,
        }
    } else {
        None
    };
    parsed.ok_or_else(|| {
        format!(
            "unknown signal {s:?}: use a number (e.g. 9) or a name such as TERM, SIGKILL, RTMIN+1"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("sigusr1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("RTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert_eq!(parse_signal("SIGRTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        for bad in ["0", "65", "FOO", "RTMIN+99", "-1", ""] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
