//! Running one sandboxed command to its end with a time limit, timing it, and keeping what it
//! printed; and reading a process tree's memory. Every metric module goes through here.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished command left.
#[derive(Clone, Debug)]
pub struct Finished {
    /// Spawn to exit.
    pub elapsed: Duration,
    /// Its standard output.
    pub stdout: String,
}

/// Runs `cmd` (stdin `/dev/null`) to its end; `Err` says why it failed (its stderr's tail, or the
/// time limit), in words fit for the report.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Finished, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((out, start.elapsed()));
    });
    let (out, elapsed) = match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => {
            kill_tree(pid);
            let _ = rx.recv_timeout(Duration::from_secs(10));
            return Err(format!("did not finish within {} s", limit.as_secs()));
        }
    };
    let out = out.map_err(|e| format!("waiting for it: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "exited with {}: {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), &stdout)
        ));
    }
    Ok(Finished { elapsed, stdout })
}

/// The last meaningful line of a failed run's stderr (else stdout), shortened.
pub fn tail(stderr: &str, stdout: &str) -> String {
    let pick = |s: &str| {
        s.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
    };
    let line = pick(stderr)
        .or_else(|| pick(stdout))
        .unwrap_or_else(|| "no output".into());
    shorten(&line, 300)
}

/// `s` cut to at most `max` characters.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// A sandbox kept running in the background (memory and density rows): started with its stdin a
/// pipe, so that closing it lets `moat-bench-probe idle` end.
pub struct Running {
    child: Child,
    started: Instant,
}

impl Running {
    /// Spawns `cmd`; its stdout is read by [`Running::wait_ready`].
    pub fn spawn(cmd: &mut Command) -> Result<Running, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        Ok(Running { child, started })
    }

    /// The runtime process's pid (root of the sandbox's host process tree).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Blocks until the sandbox prints `ready`; returns the time since spawn. A thread keeps
    /// draining its stdout afterwards so it never blocks on a full pipe.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<Duration, String> {
        let Some(mut out) = self.child.stdout.take() else {
            return Err("its stdout is gone".into());
        };
        let (tx, rx) = mpsc::channel();
        let started = self.started;
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            let mut sent = false;
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.extend_from_slice(&buf[..n]);
                        if !sent && String::from_utf8_lossy(&seen).lines().any(|l| l == "ready") {
                            let _ = tx.send(started.elapsed());
                            sent = true;
                            seen.clear();
                        }
                    }
                }
            }
        });
        let left = limit.saturating_sub(self.started.elapsed());
        match rx.recv_timeout(left) {
            Ok(t) => Ok(t),
            Err(e) => {
                // Disconnected: its stdout closed, so it is ending: give it a moment to be reaped
                // and report how it ended rather than a time-out.
                if e == mpsc::RecvTimeoutError::Disconnected {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        if let Ok(Some(_)) = self.child.try_wait() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                let why = match self.child.try_wait() {
                    Ok(Some(status)) => {
                        let mut err = String::new();
                        if let Some(mut e) = self.child.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        format!(
                            "exited with {status} before it was ready: {}",
                            tail(&err, "")
                        )
                    }
                    _ => format!("not ready within {} s", limit.as_secs()),
                };
                Err(why)
            }
        }
    }

    /// Ends the sandbox: closes its stdin (the probe exits), waits up to `grace`, then kills its
    /// whole host process tree.
    pub fn stop(mut self, grace: Duration) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_tree(self.child.id());
        // Bounded: a process stuck in the kernel may outlive even SIGKILL for a while.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!("pid {} did not end after SIGKILL", self.child.id());
    }
}

/// Host memory of a process tree, MiB.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    /// Sum of RSS.
    pub rss_mib: f64,
    /// Sum of PSS.
    pub pss_mib: f64,
}

/// The pids of `root` and all its descendants (from each process's parent in `/proc/*/stat`).
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The comm field may hold spaces and parentheses: the ppid follows the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// RSS and PSS summed over `pids` (from `smaps_rollup`; processes gone meanwhile count 0).
pub fn memory(pids: &[u32]) -> Memory {
    let mut m = Memory::default();
    for pid in pids {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        m.rss_mib += field_kib(&s, "Rss:") / 1024.0;
        m.pss_mib += field_kib(&s, "Pss:") / 1024.0;
    }
    m
}

/// The kB value of the first line starting with `key`.
pub fn field_kib(s: &str, key: &str) -> f64 {
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// SIGKILLs `root` and its descendants, leaves first.
pub fn kill_tree(root: u32) {
    for pid in tree(root).into_iter().rev() {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill takes no pointers; the pids are of processes we started (or their
            // descendants), read just now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_says_why() {
        let e = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .expect_err("fails");
        assert!(e.contains("oops") && e.contains('3'), "{e}");
        let ok = run(Command::new("echo").arg("hi"), Duration::from_secs(10)).expect("runs");
        assert_eq!(ok.stdout, "hi\n");
    }

    #[test]
    fn a_command_past_its_limit_is_killed() {
        let e = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).expect_err("late");
        assert!(e.contains("within"), "{e}");
    }

    #[test]
    fn our_own_tree_has_memory() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(memory(&[me]).rss_mib > 0.0);
    }
}
